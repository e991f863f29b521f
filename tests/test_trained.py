"""Trained connectivity (n2ngraph.trained) against dense references built by hand: the weighted
adjacency written out from the trained weights, ``scipy.linalg.expm`` for the signatures and
``numpy.linalg.eigvalsh`` for lambda_2."""

import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.nn.utils import prune

from n2ngraph.trained import trained_columns, trained_connectivity, trained_reference


def _mlp(seed: int, sizes=(3, 4, 2)) -> nn.Sequential:
    """A 'trained' MLP: weights drawn from ``seed`` (nothing about them is special)."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
    return model


def _adjacency(layers, sizes) -> np.ndarray:
    """Symmetric weighted adjacency of a chain of layers, written out entry by entry:
    ``W[in_i, out_j] = |w[j, i]|`` (effective, masked weights); nodes group by group."""
    starts = np.cumsum([0, *sizes])
    W = np.zeros((starts[-1], starts[-1]))
    for k, w in enumerate(layers):
        for j in range(w.shape[0]):
            for i in range(w.shape[1]):
                a, b = starts[k] + i, starts[k + 1] + j
                W[a, b] += abs(float(w[j, i]))
                W[b, a] = W[a, b]
    return W


def _laplacian(W):
    return np.diag(W.sum(1)) - W


def _signature(W, times, n_in):
    L = _laplacian(W)
    A = np.zeros(len(W))
    A[:n_in] = 1.0
    return np.array([scipy.linalg.expm(-t * L) @ A for t in times])


def _saturated(W, n_in):
    """S(inf) by hand: in each connected component, the component's share of the input heat
    spread evenly over its nodes."""
    n = len(W)
    label = -np.ones(n, dtype=int)
    for s in range(n):
        if label[s] >= 0:
            continue
        stack, label[s] = [s], s
        while stack:
            u = stack.pop()
            for v in np.nonzero(W[u])[0]:
                if label[v] < 0:
                    label[v] = s
                    stack.append(v)
    A = np.zeros(n)
    A[:n_in] = 1.0
    return np.array([A[label == label[i]].sum() / (label == label[i]).sum() for i in range(n)])


def _lambda2(W):
    return np.linalg.eigvalsh(_laplacian(W))[1]


def test_against_dense_expm_with_pruned_variant():
    ref_model, var_model = _mlp(0), _mlp(1)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    prune.custom_from_mask(var_model[0], "weight", mask)
    ref = trained_reference(ref_model, times_l2=(1, 3, 100))
    row = trained_connectivity(var_model, ref)

    sizes = (3, 4, 2)
    W_ref = _adjacency([ref_model[0].weight.detach(), ref_model[2].weight.detach()], sizes)
    W_var = _adjacency([var_model[0].weight.detach(), var_model[2].weight.detach()], sizes)
    assert (W_var[:3, 3:7] == 0).sum() == 6  # the mask took out 6 of 12 input pairs
    lam_ref = _lambda2(W_ref)
    assert ref["lambda_2"] == pytest.approx(lam_ref, rel=1e-9)
    times = [float(f"{c / lam_ref:.6g}") for c in (1, 3, 100)]
    assert ref["times"] == pytest.approx(times, rel=1e-12)
    F = np.linalg.norm(_signature(W_ref, times, 3) - _signature(W_var, times, 3), axis=1)
    labels = ("1/l2", "3/l2", "100/l2")
    assert list(row) == trained_columns(labels)
    for lab, f in zip(labels, F):
        assert row[f"trained F(t={lab})"] == pytest.approx(f, rel=1e-6, abs=1e-12)
    assert row["trained F(t=inf)"] == 0.0  # both connected
    assert row["trained lambda_2"] == pytest.approx(_lambda2(W_var), rel=1e-9)
    assert row["trained lambda_2/ref"] == pytest.approx(_lambda2(W_var) / lam_ref, rel=1e-9)
    assert row["trained lambda_2_ref"] == pytest.approx(lam_ref, rel=1e-9)
    assert F[0] > F[1] > 0  # the numbers are not trivially equal


def test_disconnected_variant_saturated_distance():
    ref_model, var_model = _mlp(2), _mlp(3)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1] = False  # output unit 1 loses every input: a component of its own
    prune.custom_from_mask(var_model[2], "weight", mask)
    ref = trained_reference(ref_model, times_l2=(2,))
    row = trained_connectivity(var_model, ref)
    sizes = (3, 4, 2)
    W_ref = _adjacency([ref_model[0].weight.detach(), ref_model[2].weight.detach()], sizes)
    W_var = _adjacency([var_model[0].weight.detach(), var_model[2].weight.detach()], sizes)
    expected = np.linalg.norm(_saturated(W_ref, 3) - _saturated(W_var, 3))
    assert expected > 0.1
    assert row["trained F(t=inf)"] == pytest.approx(expected, rel=1e-9)
    assert row["trained lambda_2"] == 0.0
    t = ref["times"][0]
    F = np.linalg.norm(_signature(W_ref, [t], 3) - _signature(W_var, [t], 3))
    assert row["trained F(t=2/l2)"] == pytest.approx(F, rel=1e-6)


def test_n2nskip_pair_weights_are_the_trained_skip_weights():
    """A to_model N2NSkip model whose weights (layers and skips) are moved as training would
    move them: the trained graph's adjacency is the sum of |w| of the layers and the skips."""
    from n2ngraph.bridge import to_model
    from n2ngraph.models import mlp
    from n2ngraph.pipeline import variant

    torch.manual_seed(0)
    sizes = (6, 5, 4, 3)
    dense = mlp(list(sizes))
    graph = variant(dense, "random", 0.5, recipe="all-pairs", skips=True, seed=0)
    model = to_model(graph, dense)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    starts = dict(zip((g.name for g in graph.groups), np.cumsum([0, *sizes])[:-1]))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    W = _adjacency([m.weight.detach() for m in linears], sizes)  # masked, via the parametrization
    skips = list(model.n2nskips)
    added = [b for b in graph.blocks if b.spec.added_by]
    assert len(skips) == len(added) > 0
    for module, block in zip(skips, added):
        for d, s, w in zip(module.dst_index.tolist(), module.src_index.tolist(), module.weight.detach()):
            a, b = starts[block.src] + s, starts[block.dst] + d
            W[a, b] += abs(float(w))
            W[b, a] = W[a, b]
    W_ref = _adjacency([m.weight.detach() for m in dense.modules() if isinstance(m, nn.Linear)], sizes)
    ref = trained_reference(dense, times_l2=(1, 3))
    row = trained_connectivity(model, ref)
    times = ref["times"]
    F = np.linalg.norm(_signature(W_ref, times, sizes[0]) - _signature(W, times, sizes[0]), axis=1)
    assert row["trained F(t=1/l2)"] == pytest.approx(F[0], rel=1e-6)
    assert row["trained F(t=3/l2)"] == pytest.approx(F[1], rel=1e-6)
    assert row["trained lambda_2"] == pytest.approx(_lambda2(W), rel=1e-9)


def test_reference_pickles_and_identical_model_is_at_distance_zero():
    model = _mlp(4)
    ref = pickle.loads(pickle.dumps(trained_reference(model)))
    assert ref["time_labels"] == ("1/l2", "3/l2", "100/l2")
    assert ref["input_shape"] == (3,)
    row = trained_connectivity(model, ref)
    assert all(row[f"trained F(t={lab})"] == pytest.approx(0.0, abs=1e-12) for lab in ref["time_labels"])
    assert row["trained lambda_2/ref"] == pytest.approx(1.0)


def test_bad_inputs():
    model = _mlp(5)
    with pytest.raises(ValueError, match="times_l2"):
        trained_reference(model, times_l2=(1, -3))
    with pytest.raises(ValueError, match="times_l2"):
        trained_reference(model, times_l2="1,3")
    ref = trained_reference(model, times_l2=(1,))
    with pytest.raises(ValueError, match="node groups of sizes"):
        trained_connectivity(_mlp(6, sizes=(3, 5, 2)), ref)
    dead = _mlp(7)
    with torch.no_grad():
        dead[2].weight.zero_()
    with pytest.raises(ValueError, match="disconnected"):
        trained_reference(dead)
