"""A convolution whose weight is stored by its kept channel pairs, computed as a sparse matrix
product over im2col columns (CPU).

With ``K`` kept channel pairs of an ``f x f`` kernel, the weight is the CSR matrix
``W`` of shape ``(C_dst, C_src f^2)`` holding ``K f^2`` entries (row ``d``, columns
``s f^2 .. s f^2 + f^2 - 1`` for a pair ``(d, s)``), and

    Y = W @ X,    X = im2col(x): (C_src f^2, N L),    Y: (C_dst, N L)

(``L`` output positions per image). The backward pass needs the same two kinds of product:

    dX = W^T @ dY                    (then col2im)        K f^2 N L multiply-adds
    dW = (dY @ X^T) at W's entries   (sampled product)    K f^2 N L multiply-adds

The products run image by image when an image has at least :data:`PER_IMAGE_FROM` output
positions, as one product over the batch below that. Time grows with the kept weights times the
output positions, plus the im2col / col2im copies (``C_src f^2 N L`` entries); torch runs the
sparse products with MKL sparse BLAS on CPU. On a 2-core CPU (``benchmarks/skip_modes.py``) this
is 1.5-2.4x faster than one dense convolution for forward + backward when 10% of the channel pairs
are kept (VGG19's paper-recipe skips), and 1.9-5x faster than the gathered depthwise convolution
of :class:`n2ngraph.skip_modules.N2NSkip` on strided skips or where each source channel feeds
many pairs; ``N2NSkip`` chooses between the three ways (its ``mode``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ColumnStructure", "PER_IMAGE_FROM", "column_structure", "column_conv2d", "conv_output_size"]


class ColumnStructure(NamedTuple):
    """Index arrays (int64) of the CSR weight ``W (C_dst, C_src f^2)`` and of its transpose.

    ``crow, col``: CSR of ``W`` with entries in the order of the stored kept weights
    (pairs sorted by ``(dst, src)``, taps in raster order); ``t_crow, t_col``: CSR of ``W^T``;
    ``t_order``: the position in ``W``'s entries of each entry of ``W^T``; ``shape``:
    ``(C_dst, C_src f^2)``.
    """

    crow: torch.Tensor
    col: torch.Tensor
    t_crow: torch.Tensor
    t_col: torch.Tensor
    t_order: torch.Tensor
    shape: tuple[int, int]


def column_structure(dst: np.ndarray, src: np.ndarray, shape: tuple[int, int, int, int]) -> ColumnStructure:
    """The :class:`ColumnStructure` of kept pairs ``(dst[k], src[k])``, sorted by ``(dst, src)``,
    of a conv weight of ``shape = (C_dst, C_src, fh, fw)``."""
    dst, src = np.asarray(dst, dtype=np.int64), np.asarray(src, dtype=np.int64)
    if len(dst) > 1 and np.any(np.diff(dst * shape[1] + src) <= 0):
        raise ValueError("kept pairs must be sorted by (dst, src) without repeats")
    taps = int(shape[2] * shape[3])
    crow = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=shape[0]) * taps)])
    col = (src[:, None] * taps + np.arange(taps)).ravel()
    row = np.repeat(dst, taps)
    t_order = np.lexsort((row, col))
    t_crow = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=shape[1] * taps))])

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return ColumnStructure(tensor(crow), tensor(col), tensor(t_crow), tensor(row[t_order]),
                           tensor(t_order), (int(shape[0]), int(shape[1]) * taps))


def conv_output_size(size, kernel, stride, padding, dilation) -> list[int]:
    """Spatial output size of ``conv2d`` on a map of ``size`` (one entry per spatial dimension)."""
    return [(n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(size, kernel, stride, padding, dilation)]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """A CSR tensor from trusted index arrays (torch's "beta state" notice silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


#: Output positions per image from which the products run image by image (no transposed copy
#: of the columns; MKL is faster on the per-image blocks there); below it, one product over
#: the whole batch (fewer calls). Measured on CPU, one thread: 25% faster forward + backward
#: at 256 positions, 8% at 64, 30% slower at 16.
PER_IMAGE_FROM = 64


class _ColumnConv(torch.autograd.Function):
    """``conv2d(x, W)`` for the CSR weight ``W`` (values ``values``, index arrays as in
    :class:`ColumnStructure`)."""

    @staticmethod
    def forward(ctx, x, values, crow, col, t_crow, t_col, t_order, shape, kernel, stride, padding,
                dilation):
        n = x.shape[0]
        cols = F.unfold(x, kernel, dilation, padding, stride)  # (N, C_src f^2, L)
        positions = cols.shape[-1]
        weight = _csr(crow, col, values, shape)
        out_size = conv_output_size(x.shape[2:], kernel, stride, padding, dilation)
        y = x.new_empty(n, shape[0], *out_size)  # returned as is: not a view of a temporary
        per_image = positions >= PER_IMAGE_FROM
        if per_image:
            rows = y.view(n, shape[0], positions)
            for i in range(n):
                torch.mm(weight, cols[i], out=rows[i])
        else:
            cols = cols.transpose(0, 1).reshape(shape[1], n * positions)
            y.copy_(torch.mm(weight, cols).view(shape[0], n, *out_size).transpose(0, 1))
        ctx.save_for_backward(values, crow, col, t_crow, t_col, t_order, cols)
        ctx.geometry = (shape, n, positions, per_image, tuple(x.shape[2:]), kernel, stride,
                        padding, dilation)
        return y

    @staticmethod
    def backward(ctx, grad):
        values, crow, col, t_crow, t_col, t_order, cols = ctx.saved_tensors
        shape, n, positions, per_image, size, kernel, stride, padding, dilation = ctx.geometry
        grad_values = grad_x = None
        if per_image:
            grad = grad.reshape(n, shape[0], positions)
        else:
            grad = grad.reshape(n, shape[0], positions).transpose(0, 1).reshape(shape[0], n * positions)
        if ctx.needs_input_grad[1]:
            pattern = _csr(crow, col, torch.zeros_like(values), shape)
            if per_image:
                grad_values = torch.zeros_like(values)
                for i in range(n):
                    grad_values += torch.sparse.sampled_addmm(pattern, grad[i], cols[i].t(), beta=0.0).values()
            else:
                grad_values = torch.sparse.sampled_addmm(pattern, grad, cols.t(), beta=0.0).values()
        if ctx.needs_input_grad[0]:
            weight_t = _csr(t_crow, t_col, values[t_order], (shape[1], shape[0]))
            if per_image:
                grad_cols = grad.new_empty(n, shape[1], positions)
                for i in range(n):
                    torch.mm(weight_t, grad[i], out=grad_cols[i])
            else:
                grad_cols = torch.mm(weight_t, grad).view(shape[1], n, positions).transpose(0, 1)
            grad_x = F.fold(grad_cols, size, kernel, dilation, padding, stride)
        return grad_x, grad_values, *[None] * 10


def column_conv2d(x: torch.Tensor, values: torch.Tensor, structure: ColumnStructure,
                  kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                  dilation: tuple[int, int]) -> torch.Tensor:
    """``conv2d(x, W, stride, padding, dilation)`` for the CSR weight ``W`` of ``structure``.

    ``x``: ``(N, C_src, H, W)`` on the CPU; ``values``: the ``K f^2`` kept weights in
    ``structure``'s order (a kept pair's ``f x f`` kernel flattened, pairs by ``(dst, src)``),
    same dtype as ``x`` (float32 or float64). Differentiable in ``x`` and ``values``.
    """
    return _ColumnConv.apply(x, values, *structure, tuple(kernel),
                             tuple(stride), tuple(padding), tuple(dilation))
