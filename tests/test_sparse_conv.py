"""The CSR convolution over im2col columns against ``F.conv2d`` with the dense weight that is
zero off the kept pairs: forward and both gradients, for strides, paddings, dilations, partial
and empty rows."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from n2ngraph import sparse_conv  # noqa: E402
from n2ngraph.sparse_conv import column_conv2d, column_structure  # noqa: E402


def _kept_pairs(shape, density, seed):
    rng = np.random.default_rng(seed)
    pairs = rng.random(shape[:2]) < density
    pairs[0] = False  # a destination channel without kept pairs (an empty CSR row)
    return np.nonzero(pairs)


@pytest.mark.parametrize(("shape", "hw", "stride", "padding", "dilation"), [
    ((6, 4, 3, 3), (7, 7), (1, 1), (1, 1), (1, 1)),
    ((5, 3, 3, 3), (8, 6), (2, 2), (1, 1), (1, 1)),
    ((4, 5, 3, 1), (6, 5), (1, 2), (1, 0), (1, 1)),
    ((3, 4, 3, 3), (9, 9), (1, 1), (2, 2), (2, 2)),
    ((7, 2, 1, 1), (5, 5), (1, 1), (0, 0), (1, 1)),
])
@pytest.mark.parametrize("per_image_from", [1, 10**9])  # image by image / one product per batch
def test_column_conv2d_matches_conv2d_with_the_dense_masked_weight(shape, hw, stride, padding, dilation,
                                                                  per_image_from, monkeypatch):
    monkeypatch.setattr(sparse_conv, "PER_IMAGE_FROM", per_image_from)
    dst, src = _kept_pairs(shape, 0.5, seed=sum(shape))
    gen = torch.Generator().manual_seed(3)
    kept = torch.randn(len(dst), *shape[2:], generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, shape[1], *hw, generator=gen, dtype=torch.float64, requires_grad=True)
    out = column_conv2d(x, kept.reshape(-1), column_structure(dst, src, shape), shape[2:], stride,
                        padding, dilation)

    dense = torch.zeros(shape, dtype=torch.float64).index_put((torch.from_numpy(dst), torch.from_numpy(src)), kept)
    ref = F.conv2d(x, dense, None, stride, padding, dilation)
    torch.testing.assert_close(out, ref)
    up = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad((out * up).sum(), (x, kept))
    exp = torch.autograd.grad((ref * up).sum(), (x, kept))
    torch.testing.assert_close(got[0], exp[0])
    torch.testing.assert_close(got[1], exp[1])


@pytest.mark.parametrize("per_image_from", [1, 10**9])
def test_column_conv2d_gradcheck(per_image_from, monkeypatch):
    monkeypatch.setattr(sparse_conv, "PER_IMAGE_FROM", per_image_from)
    shape = (3, 2, 3, 3)
    dst, src = _kept_pairs(shape, 0.7, seed=1)
    gen = torch.Generator().manual_seed(0)
    kept = torch.randn(len(dst) * 9, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 2, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    structure = column_structure(dst, src, shape)
    assert torch.autograd.gradcheck(
        lambda x, w: column_conv2d(x, w, structure, (3, 3), (2, 2), (1, 1), (1, 1)), (x, kept))


def test_column_structure_refuses_unsorted_or_repeated_pairs():
    with pytest.raises(ValueError, match="sorted by"):
        column_structure(np.array([1, 0]), np.array([0, 0]), (2, 2, 3, 3))
    with pytest.raises(ValueError, match="sorted by"):
        column_structure(np.array([0, 0]), np.array([1, 1]), (2, 2, 3, 3))
