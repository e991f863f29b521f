"""The modules a :func:`n2ngraph.bridge.to_model` result is built from: the mask that holds
(:class:`MaskParametrization`) and the skip modules (:class:`N2NSkip`, :class:`ResSkip`).

Where these modules are placed in a model, and the forward rule they implement, is
:mod:`n2ngraph.bridge`'s docstring.

Cost of a skip
--------------
An :class:`N2NSkip` stores only its kept weights (per kept channel pair an ``f x f`` kernel, plus a
per-tap mask when a pair keeps only some taps) and computes over the kept pairs: time and memory
grow with the kept weights, not with the dense ``C_dst x C_src x f x f``. A conv skip computes by
a gathered depthwise conv or by a CSR product over im2col columns (:mod:`n2ngraph.sparse_conv`),
whichever a cost model measured on CPU rates cheaper (:func:`auto_mode`); where a block keeps so
many pairs that one dense call is cheaper still, the dense kernel is assembled from the kept
weights for the call. Nothing dense is stored.

Masks that hold
---------------
Sequential layers are masked by :class:`MaskParametrization`, ``where(mask, w, 0)``: pruned
entries are exactly zero whatever the stored values are (NaN and inf included) and get exactly zero
gradient. Loading a ``state_dict`` whose masks or skip positions differ from the module's raises
:class:`MaskError` before anything is copied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from n2ngraph.graph import EdgeBlock
from n2ngraph.recipes import SKIP_ORDERS  # orders of the ops inside an N2NSkip module (spec.order)
from n2ngraph.sparse_conv import ColumnStructure, column_conv2d, column_structure, conv_output_size

__all__ = ["N2NSkip", "ResSkip", "MaskParametrization", "MaskError", "SKIP_MODES", "DENSE_ABOVE",
           "CONV_COST_NS", "auto_mode"]


_ACTIVATIONS = {
    "identity": lambda x, _: x,
    "relu": lambda x, _: F.relu(x),
    "relu6": lambda x, _: F.relu6(x),
    "leaky_relu": lambda x, p: F.leaky_relu(x, p),
    "elu": lambda x, p: F.elu(x, p),
    "gelu": lambda x, _: F.gelu(x),
    "silu": lambda x, _: F.silu(x),
    "mish": lambda x, _: F.mish(x),
    "hardswish": lambda x, _: F.hardswish(x),
    "tanh": lambda x, _: torch.tanh(x),
    "sigmoid": lambda x, _: torch.sigmoid(x),
}
_ACT_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu",
                nn.GELU: "gelu", nn.SiLU: "silu", nn.Mish: "mish", nn.Hardswish: "hardswish",
                nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ACT_FUNCTIONS = {F.relu: "relu", F.relu_: "relu", torch.relu: "relu", torch.relu_: "relu",
                  F.relu6: "relu6", F.leaky_relu: "leaky_relu", F.elu: "elu", F.gelu: "gelu",
                  F.silu: "silu", F.mish: "mish", F.hardswish: "hardswish", torch.tanh: "tanh",
                  F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh",
                "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}



class MaskError(ValueError):
    """A ``state_dict`` whose masks differ from the module's (loading it could revive weights)."""


def _layer_name(prefix: str) -> str:
    """``"features.0"`` from a parametrization's state_dict prefix ``"features.0.parametrizations.weight.0."``."""
    name = prefix.split(".parametrizations.")[0] if ".parametrizations." in prefix else prefix.rstrip(".")
    return name or "<root>"


class _RefusesOtherMasks:
    """Mixin for modules that hold a mask: ``load_state_dict`` raises :class:`MaskError` before
    anything is copied when ``self.mask_mismatch(state_dict, prefix)`` names a difference."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        why = self.mask_mismatch(state_dict, prefix)
        if why:
            raise MaskError(why)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class MaskParametrization(_RefusesOtherMasks, nn.Module):
    """``weight = where(mask, original, 0)`` (a ``torch.nn.utils.parametrize`` parametrization).

    The mask is a bool buffer (saved in the ``state_dict``, moved by ``.to()``). Pruned entries
    are selected away, not multiplied by zero, so whatever ``original`` holds there (even NaN or
    inf, e.g. after an fp16 optimizer step) the effective weight is exactly zero and their
    gradient is exactly zero. They are also zeroed when the mask is put on, so momentum,
    Adam moments and weight decay leave them at zero: pruned weights never come back.

    Loading a ``state_dict`` whose mask differs from this one raises :class:`MaskError`
    (a ``ValueError``) naming the layer: a model cannot be given another topology, or revived
    pruned weights, by loading a checkpoint.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.as_tensor(mask, dtype=torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, weight, 0)

    def mask_mismatch(self, state_dict: Mapping[str, torch.Tensor], prefix: str) -> str | None:
        """Why ``state_dict`` (at ``prefix``) cannot be loaded here, or None."""
        key = prefix + "mask"
        if key not in state_dict:
            return None
        other = state_dict[key]
        same = isinstance(other, torch.Tensor) and tuple(other.shape) == tuple(self.mask.shape) \
            and torch.equal(other.to(self.mask.device) != 0, self.mask)
        if same:
            return None
        return (f"refusing to load a state_dict into layer {_layer_name(prefix)!r}: its mask "
                f"({key!r}) differs from the model's; build the model from the graph the "
                "checkpoint was trained with (loading it would change the pruned topology)")




class _Skip(nn.Module):
    """Common attributes of the skip modules (see the module docstring's tracing contract)."""

    n2ngraph_kind = ""

    def __init__(self, block: EdgeBlock) -> None:
        super().__init__()
        self.n2ngraph_block_name = block.name
        self.n2ngraph_src = block.src
        self.n2ngraph_dst = block.dst
        self.n2ngraph_offset = int(block.offset)
        self.n2ngraph_spec = block.spec
        self.output_size = block.spec.output_size
        #: Tensor axis of the channels in ``a`` and ``z`` (1, or -1 for channels-last activations
        #: and tokens ``(batch, tokens, features)``); the skip computes channels first.
        self.src_axis = 1
        self.dst_axis = 1

    def _pool(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x`` (channels first) averaged onto the positions of ``z``: globally for neurons,
        adaptively to the target's spatial size, positions in raster order onto the target's
        tokens; neurons into positions are broadcast."""
        if x.dim() > 2 and z.dim() == 2:  # channels (or tokens) -> neurons: global average
            return x.flatten(2).mean(dim=2)
        if x.dim() == 4 and z.dim() == 4 and self.output_size is not None \
                and tuple(x.shape[-2:]) != self.output_size:
            return F.adaptive_avg_pool2d(x, self.output_size)
        if z.dim() == 3 and x.dim() >= 3:  # onto tokens
            x = x.flatten(2)
            return x if x.shape[2] == z.shape[2] else F.adaptive_avg_pool1d(x, z.shape[2])
        if x.dim() == 2 and z.dim() > 2:
            return x.reshape(*x.shape, *[1] * (z.dim() - 2))
        return x

    def _channels_first(self, a: torch.Tensor, z: torch.Tensor, fn) -> torch.Tensor:
        """``fn(a, z)`` on channels-first views of ``a`` and ``z``, the result in ``z``'s layout."""
        a = a.movedim(-1, 1) if self.src_axis != 1 else a
        if self.dst_axis == 1:
            return fn(a, z)
        return fn(a, z.movedim(-1, 1)).movedim(1, -1)

    def extra_repr(self) -> str:
        return f"{self.n2ngraph_src!r} -> {self.n2ngraph_dst!r}"


#: Kept fraction (of channel pairs for a conv skip, of weights for a Linear skip) above which
#: the gathered depthwise conv / gathered Linear of ``N2NSkip(mode="sparse")`` costs more than one
#: dense ``conv2d`` / ``linear`` with the kernel assembled from the kept weights: the crossover
#: measured on CPU (one thread, batch 16-128). ``mode="auto"`` chooses by it between those two
#: (:func:`auto_mode`).
DENSE_ABOVE = {"Conv2d": 0.07, "Conv2d-1x1": 0.03, "Linear": 0.02}
#: CPU time (ns, one thread) per output position of a conv skip with an ``f x f > 1`` kernel,
#: forward + backward, by mode: ``"sparse"`` per kept channel pair and per input position under
#: one output position (the depthwise conv costs the same at stride 2 as at stride 1); ``"csr"``
#: per kept pair plus per source channel (the im2col copies); ``"dense"`` per channel pair of
#: the dense shape.
#: Fitted to 17 blocks (64-512 channels, 4x4 to 32x32 maps, 2-35% of the pairs kept, strides 1
#: and 2, batch 16) on a 2-core AMD EPYC; ``benchmarks/skip_modes.py`` re-times 12 of them.
#: ``mode="auto"`` takes the CSR product where this model rates it cheaper, and otherwise keeps
#: the :data:`DENSE_ABOVE` choice.
CONV_COST_NS = {"sparse": 13.0, "csr": (4.5, 146.0), "dense": 1.5}
SKIP_MODES = ("auto", "sparse", "csr", "dense")


def auto_mode(mask_shape: tuple[int, ...], kept_pairs: int, stride: tuple[int, int] = (1, 1)) -> str:
    """The mode ``N2NSkip(mode="auto")`` takes for a block of weight shape ``mask_shape``
    (``(out, in)`` or ``(C_dst, C_src, fh, fw)``) keeping ``kept_pairs`` channel pairs (weights
    for a Linear) with conv ``stride``: ``"dense"`` above :data:`DENSE_ABOVE` of the pairs, else
    ``"sparse"``; for conv kernels larger than 1x1, ``"csr"`` instead where
    :data:`CONV_COST_NS` rates it cheaper than that choice."""
    mode = _gathered_or_dense(mask_shape, kept_pairs)
    if len(mask_shape) == 4 and math.prod(mask_shape[2:]) > 1:
        c_dst, c_src = mask_shape[0], mask_shape[1]
        per_pair, per_source = CONV_COST_NS["csr"]
        cost = {"sparse": CONV_COST_NS["sparse"] * kept_pairs * math.prod(stride),
                "dense": CONV_COST_NS["dense"] * c_dst * c_src}
        if per_pair * kept_pairs + per_source * c_src < cost[mode]:
            return "csr"
    return mode


def _gathered_or_dense(mask_shape: tuple[int, ...], kept_pairs: int) -> str:
    """``"dense"`` above :data:`DENSE_ABOVE` of the pairs kept, else ``"sparse"``."""
    kept = kept_pairs / max(1, mask_shape[0] * mask_shape[1])
    kind = "Linear" if len(mask_shape) == 2 else "Conv2d" if math.prod(mask_shape[2:]) > 1 else "Conv2d-1x1"
    return "dense" if kept > DENSE_ABOVE[kind] else "sparse"


def _max_pool_to(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``adaptive_max_pool2d(y, size)``; as ``max_pool2d`` with kernel = stride = the size ratio
    when the sizes divide (the same windows, the same values and gradients, a cheaper kernel)."""
    (h, w), (oh, ow) = y.shape[-2:], size
    if h % oh == 0 and w % ow == 0:
        return F.max_pool2d(y, (h // oh, w // ow))
    return F.adaptive_max_pool2d(y, size)


def _pair(v, default: int) -> tuple[int, int]:
    if v is None:
        return (default, default)
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


class N2NSkip(_RefusesOtherMasks, _Skip):
    """A sparse learnable skip ``z_dst <- z_dst + g(skip(a_src))`` (arXiv:2208.03662, Eq. 2).

    ``skip`` is a sparse Linear ``(dst, src)`` or a sparse convolution ``(C_dst, C_src, f, f)``
    (no bias) stored by its *kept channel pairs* only: pair ``k`` maps source channel
    ``src_index[k]`` to destination channel ``dst_index[k]`` with the ``f x f`` kernel
    ``weight[k, 0]`` (a Linear pair: the scalar ``weight[k]``); a pair that keeps only some taps
    has the bool buffer ``tap_mask[k, 0]`` (``None`` when every pair keeps its whole kernel).
    ``mode`` says how the map is computed; results and gradients are the same in every mode:

    - ``"sparse"``: the convolution gathers the source channel of every kept pair, runs one
      depthwise (``groups = K``) convolution over the ``K`` pairs and ``index_add``s the results
      into their destination channels; a Linear gathers, scales and ``index_add``s. Time and
      memory ``O(K f^2 N H W)`` and ``O(K N H W)``.
    - ``"csr"`` (conv only): the CSR matrix of the kept weights times the im2col columns of the
      source (:mod:`n2ngraph.sparse_conv`): time ``O(K f^2 N H W)`` plus the ``O(C_src f^2 N H
      W)`` im2col copies, which it keeps for the backward pass. Runs on float32/float64 CPU
      tensors outside autocast and ``torch.compile``; elsewhere the call computes as ``"auto"``
      would without it (``"dense"`` above :data:`DENSE_ABOVE`, else ``"sparse"``).
    - ``"dense"``: assembles the dense kernel from the kept weights at each call (a temporary;
      the parameter stays the kept weights) and makes one dense call.
    - ``"auto"`` (default): :func:`auto_mode`, the cheapest of the three on CPU by measured
      crossovers (:data:`DENSE_ABOVE`, :data:`CONV_COST_NS`).

    Nothing of the dense shape is stored.

    Orders (``spec.order``):

    - ``"pool-conv-act"``: adaptive average pooling of ``a_src`` to the target's spatial size
      (global for a neuron target), the stride-1 ``f x f`` map with padding ``f // 2``, then g;
    - ``"conv-bn-act-pool"`` (the paper's conv nets): the map at the source's resolution,
      ``BatchNorm2d(C_dst)`` (``spec.norm == "batch"``), g, then adaptive max-pooling to the
      target's size when the sizes differ. A conv source into a neuron target is pooled globally
      first and has no BatchNorm.

    A conv skip with ``spec.stride`` other than 1 (``skip_downsample="stride"``, a skip into a
    ResNet block that strides) reaches the target's size by its stride: no pooling under either
    order.

    ``g`` is the target's non-linearity, the identity at the output group.
    """

    n2ngraph_kind = "n2nskip"

    def __init__(self, block: EdgeBlock, activation: str = "relu", activation_param: float = 0.0,
                 mode: str = "auto") -> None:
        super().__init__(block)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {sorted(_ACTIVATIONS)}")
        if mode not in SKIP_MODES:
            raise ValueError(f"mode {mode!r} is not one of {SKIP_MODES}")
        spec = block.spec
        self.order = spec.order or "pool-conv-act"
        if self.order not in SKIP_ORDERS:
            raise ValueError(f"skip {block.name!r}: order {self.order!r} is not one of {SKIP_ORDERS}")
        mask = np.asarray(block.mask, dtype=bool)
        self.mask_shape = tuple(int(s) for s in mask.shape)
        self.is_conv = mask.ndim == 4
        pairs = mask.reshape(mask.shape[0], mask.shape[1], -1).any(axis=2)
        dst, src = np.nonzero(pairs)
        self.register_buffer("dst_index", torch.from_numpy(dst.astype(np.int64)))
        self.register_buffer("src_index", torch.from_numpy(src.astype(np.int64)))
        k = len(dst)
        if self.is_conv:
            taps = mask[dst, src]  # (K, f, f)
            self.register_buffer("tap_mask", None if taps.all() else torch.from_numpy(taps[:, None].copy()))
            self.weight = nn.Parameter(torch.zeros(k, 1, *mask.shape[2:]))
            f = mask.shape[-1]
            self.stride = _pair(spec.stride, 1)
            self.padding = _pair(spec.padding, f // 2)
            self.dilation = _pair(spec.dilation, 1)
        else:
            self.register_buffer("tap_mask", None)
            self.weight = nn.Parameter(torch.zeros(k))
        norm = spec.norm
        if norm not in (None, "batch"):
            raise ValueError(f"skip {block.name!r}: norm {norm!r} is not None or 'batch'")
        self.norm = nn.BatchNorm2d(mask.shape[0]) if norm == "batch" and self.is_conv else None
        self.activation = activation
        self.activation_param = float(activation_param)
        if mode == "auto":
            mode = auto_mode(mask.shape, k, self.stride if self.is_conv else (1, 1))
        if mode == "csr" and not self.is_conv:
            raise ValueError(f"skip {block.name!r}: mode 'csr' is for conv skips; a Linear skip "
                             f"takes one of {[m for m in SKIP_MODES if m != 'csr']}")
        self.mode = mode
        if mode == "csr":  # index arrays of the CSR weight: rebuilt from the pairs, not saved
            structure = column_structure(dst, src, mask.shape)
            for name, index in zip(ColumnStructure._fields, structure[:5]):
                self.register_buffer(f"_csr_{name}", index, persistent=False)
            self._csr_shape = structure.shape
            #: Where the CSR product does not run (off the CPU, other dtypes, autocast,
            #: torch.compile), the path ``auto`` takes without it; same results.
            self._csr_fallback = _gathered_or_dense(mask.shape, k)

    # -------------------------------------------------------------- the sparse map
    def kernel(self) -> torch.Tensor:
        """The kept weights as used: ``weight`` with pruned taps selected away (exact zeros)."""
        if self.tap_mask is None:
            return self.weight
        return torch.where(self.tap_mask, self.weight, 0)

    def _path(self, x: torch.Tensor, w: torch.Tensor) -> str:
        """How this call computes: ``self.mode``, except that ``"csr"`` runs only for float32 /
        float64 CPU tensors of the weight's dtype, outside autocast and ``torch.compile``."""
        if self.mode != "csr":
            return self.mode
        usable = (x.device.type == "cpu" and x.dtype == w.dtype and x.dtype in (torch.float32, torch.float64)
                  and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())
        return "csr" if usable else self._csr_fallback

    def sparse_map(self, x: torch.Tensor, into: torch.Tensor | None = None) -> torch.Tensor:
        """``into + skip(x)`` (``into`` defaults to zeros): the masked Linear / conv of the
        block, computed over the kept pairs only."""
        w = self.kernel()
        k = w.shape[0]
        path = self._path(x, w)
        if k and path in ("csr", "dense"):  # every destination channel at once
            y = self._csr_map(x, w) if path == "csr" else self._dense_map(x, w)
            return y if into is None else into + y.to(into.dtype)
        if self.is_conv:
            if k == 0:
                size = conv_output_size(x.shape[2:], w.shape[2:], self.stride, self.padding, self.dilation)
                y = x.new_zeros((x.shape[0], 0, *size))
            else:
                xg = x.index_select(1, self.src_index)
                if w.shape[-2:] == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0):
                    y = xg * w.reshape(1, k, 1, 1)
                else:
                    y = F.conv2d(xg, w, None, self.stride, self.padding, self.dilation, groups=k)
        else:
            y = x.index_select(1, self.src_index) * w.reshape(k, *[1] * (x.dim() - 2))
        if into is None:  # a fresh tensor: add in place (one allocation, not two)
            out = y.new_zeros((y.shape[0], self.mask_shape[0], *y.shape[2:]))
            return out.index_add_(1, self.dst_index, y) if k else out
        return into.index_add(1, self.dst_index, y.to(into.dtype)) if k else into

    def _csr_map(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The conv as the CSR matrix of the kept weights times the im2col columns of ``x``."""
        index = [getattr(self, f"_csr_{name}") for name in ColumnStructure._fields[:5]]
        return column_conv2d(x, w.reshape(-1), ColumnStructure(*index, self._csr_shape),
                             self.mask_shape[2:], self.stride, self.padding, self.dilation)

    def _dense_map(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The map with the dense kernel assembled from the kept weights for this call."""
        dense = w.new_zeros((self.mask_shape[0] * self.mask_shape[1], *self.mask_shape[2:]))
        dense = dense.index_put((self.dst_index * self.mask_shape[1] + self.src_index,),
                                w.reshape(w.shape[0], *self.mask_shape[2:])).reshape(self.mask_shape)
        if self.is_conv:
            return F.conv2d(x, dense, None, self.stride, self.padding, self.dilation)
        return F.linear(x.movedim(1, -1), dense).movedim(-1, 1)  # channels on axis 1 (neurons, or token features)

    def _g(self, y: torch.Tensor) -> torch.Tensor:
        """g on a fresh tensor no backward needs (the map's or BatchNorm's output): ReLU in place."""
        if self.activation == "relu":
            return F.relu_(y)
        return _ACTIVATIONS[self.activation](y, self.activation_param)

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._channels_first(a, z, self._forward)

    def _forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.order == "conv-bn-act-pool" and not (a.dim() == 4 and z.dim() == 2):
            if not self.is_conv:  # a Linear skip: onto the target's positions, map, g
                return z + self._g(self.sparse_map(self._pool(a, z)))
            y = self.sparse_map(a)
            if self.norm is not None:
                y = self.norm(y)
            y = self._g(y)
            if y.dim() == 4 and self.output_size is not None and tuple(y.shape[-2:]) != self.output_size:
                y = _max_pool_to(y, self.output_size)
            return z + y
        strided = self.is_conv and self.stride != (1, 1)  # reaches the target's size itself
        x = a if strided else self._pool(a, z)
        if self.activation == "identity" and x.shape[2:] == z.shape[2:]:
            return self.sparse_map(x, into=z)
        return z + self._g(self.sparse_map(x))

    # -------------------------------------------------------- graph read-back
    def n2ngraph_mask(self) -> np.ndarray:
        """The block's dense weight-shaped bool mask, rebuilt from the kept pairs (tracing only)."""
        mask = np.zeros(self.mask_shape, dtype=bool)
        dst, src = self.dst_index.cpu().numpy(), self.src_index.cpu().numpy()
        mask[dst, src] = True if self.tap_mask is None else self.tap_mask[:, 0].cpu().numpy()
        return mask

    def n2ngraph_pair_weight(self) -> np.ndarray:
        """``sum |w|`` over the kept taps of every channel pair, float32 ``(out, in)``."""
        pair = np.zeros(self.mask_shape[:2], dtype=np.float32)
        w = self.kernel().detach().abs()
        vals = w.reshape(w.shape[0], -1).sum(dim=1, dtype=torch.float32) if w.dim() > 1 else w.float()
        pair[self.dst_index.cpu().numpy(), self.src_index.cpu().numpy()] = vals.cpu().numpy()
        return pair

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense weight ``(out, in[, f, f])`` with zeros outside the mask. For
        inspection and tests only: it costs the dense shape, which the forward never builds."""
        w = self.kernel()
        dense = w.new_zeros(self.mask_shape)
        return dense.index_put((self.dst_index, self.src_index), w.reshape(w.shape[0], *self.mask_shape[2:]))

    def set_dense_weight(self, dense: torch.Tensor | np.ndarray) -> None:
        """Set the kept weights from a weight-shaped array (entries outside the mask ignored)."""
        dense = torch.as_tensor(np.asarray(dense) if not isinstance(dense, torch.Tensor) else dense)
        if tuple(dense.shape) != self.mask_shape:
            raise ValueError(f"skip {self.n2ngraph_block_name!r}: weight shape {tuple(dense.shape)} "
                             f"!= mask shape {self.mask_shape}")
        kept = dense[self.dst_index.cpu(), self.src_index.cpu()]
        with torch.no_grad():
            self.weight.copy_(kept.reshape(self.weight.shape).to(self.weight.dtype))
            if self.tap_mask is not None:
                self.weight.masked_fill_(~self.tap_mask, 0)

    def mask_mismatch(self, state_dict: Mapping[str, torch.Tensor], prefix: str) -> str | None:
        """Why ``state_dict`` (at ``prefix``) cannot be loaded here (other kept positions), or None."""
        problems = []
        for name in ("dst_index", "src_index"):
            other = state_dict.get(prefix + name)
            mine = getattr(self, name)
            if other is not None and not (isinstance(other, torch.Tensor) and other.shape == mine.shape
                                          and torch.equal(other.to(mine.device), mine)):
                problems.append(name)
        if prefix + "tap_mask" in state_dict or (self.tap_mask is not None and prefix + "dst_index" in state_dict):
            other = state_dict.get(prefix + "tap_mask")
            full = torch.ones(self.weight.shape, dtype=torch.bool)
            mine = full if self.tap_mask is None else self.tap_mask.cpu()
            theirs = full if other is None else other
            if not (isinstance(theirs, torch.Tensor) and theirs.shape == mine.shape
                    and torch.equal(theirs.cpu() != 0, mine)):
                problems.append("tap_mask")
        if prefix + "mask" in state_dict:  # a dense mask from an older format
            other = state_dict[prefix + "mask"]
            if not (isinstance(other, torch.Tensor) and tuple(other.shape) == self.mask_shape
                    and np.array_equal(other.cpu().numpy() != 0, self.n2ngraph_mask())):
                problems.append("mask")
        if not problems:
            return None
        return (f"refusing to load a state_dict into skip {self.n2ngraph_block_name!r} "
                f"({prefix.rstrip('.') or '<root>'}): its kept positions ({', '.join(problems)}) "
                "differ from the model's; build the model from the graph the checkpoint was "
                "trained with")



class ResSkip(_Skip):
    """A parameter-free residual skip ``z_dst <- z_dst + P(a_src)``: ``P`` pools to the target's
    spatial size (global for a neuron target) and zero-pads the channels (He et al. 2016,
    option A), source channel ``i`` landing on target channel ``i + offset``."""

    n2ngraph_kind = "residual"

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._channels_first(a, z, self._forward)

    def _forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = self._pool(a, z)
        before = self.n2ngraph_offset
        after = z.shape[1] - x.shape[1] - before
        if before or after:
            x = F.pad(x, [0, 0] * (x.dim() - 2) + [before, after])
        return z + x
