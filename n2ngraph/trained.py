"""Trained connectivity: heat diffusion on the weighted adjacency of trained networks.

The N2NSkip paper's Table 3 (Subramaniam & Sharma 2020, arXiv:2208.03662, "Connectivity
analysis") measures the connectivity distance ``F`` not on the binary masks at initialization but
on the **weighted adjacency of trained networks**: a trained sparse network (plain pruned or with
N2NSkip connections) against the trained dense reference of the same seed. This module is that
measurement:

1. :func:`trained_reference` traces the trained dense reference once
   (:func:`n2ngraph.trace.to_graph`), takes its weighted adjacency ``W`` (``W_ij`` = the sum over
   weight layers of ``|w|`` over the kept taps joining channels/neurons ``i`` and ``j``; a
   residual edge weighs 1), its Laplacian ``L = D - W``, its algebraic connectivity ``lambda_2``
   and its heat signature ``S_ref(t) = exp(-t L) A`` (``A``: unit heat on the input nodes) at
   ``t = c / lambda_2`` for each ``c`` in ``times_l2`` and at ``t = inf``.
2. :func:`trained_connectivity` re-traces a trained variant (a model built by
   :func:`n2ngraph.bridge.to_model` and trained; its N2NSkip modules report their trained pair
   weights ``|w|``) on the same node set and returns ``F(t) = ||S_ref(t) - S(t)||_2`` at those
   times and at ``inf``, its ``lambda_2`` and ``lambda_2 / lambda_2(reference)``.

Columns are named as ``n2ngraph.compare`` names its (binary or initial-weight) columns, with
``trained`` in front: ``trained F(t=1/l2)``, ``trained F(t=3/l2)``, ``trained F(t=100/l2)``,
``trained F(t=inf)``, ``trained lambda_2``, ``trained lambda_2/ref`` and ``trained
lambda_2_ref``. Here ``l2`` is ``lambda_2`` of the *trained* dense reference's weighted
Laplacian, so the times differ from the untrained columns' (both are in the reference dict and
in a sweep's config file).

The reference dict holds plain values (sparse adjacency, arrays, numbers, labels) and pickles
with the standard pickler: a sweep builds it once per seed on the client and ships it to every
cell of that seed (the signature keeps its exact saturated and decaying parts through pickling,
see :class:`n2ngraph.diffusion.HeatSignature`).

Examples
--------
>>> import torch
>>> from n2ngraph.models import mlp
>>> dense = mlp([16, 8, 4, 3])
>>> ref = trained_reference(dense, times_l2=(1, 3))
>>> ref["time_labels"]
('1/l2', '3/l2')
>>> row = trained_connectivity(dense, ref)
>>> sorted(row)[:3]
['trained F(t=1/l2)', 'trained F(t=3/l2)', 'trained F(t=inf)']
>>> row["trained F(t=inf)"], row["trained lambda_2/ref"]
(0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["PREFIX", "trained_columns", "trained_connectivity", "trained_reference"]

#: What every trained-connectivity column name starts with.
PREFIX = "trained"


def trained_columns(labels: Sequence[str]) -> list[str]:
    """The columns :func:`trained_connectivity` returns for time labels ``labels`` (as
    :func:`n2ngraph.compare.time_labels` writes them), in order."""
    return [*(f"{PREFIX} F(t={lab})" for lab in labels), f"{PREFIX} F(t=inf)",
            f"{PREFIX} lambda_2", f"{PREFIX} lambda_2/ref", f"{PREFIX} lambda_2_ref"]


def _example_input(model, example_input, shape: tuple[int, ...] | None = None):
    """``example_input``, else zeros of one sample of ``shape`` (the reference's traced input
    shape; :func:`n2ngraph.models.example_input`), else None (the tracer's default)."""
    if example_input is not None or shape is None:
        return example_input
    from n2ngraph.models import example_input as zeros_input

    return zeros_input(model, input_shape=shape)


def _graph(model, example_input, name: str | None = None):
    from n2ngraph.trace import to_graph

    return to_graph(model, example_input=example_input, name=name)


def trained_reference(model, times_l2: Sequence[float] = (1, 3, 100), *, example_input=None) -> dict:
    """Trace the trained dense reference and compute what every trained variant is compared to.

    Parameters
    ----------
    model : nn.Module
        The trained dense reference (not modified; traced in eval mode under ``no_grad``).
    times_l2 : sequence of float
        Diffusion times in units of ``1 / lambda_2`` of this reference's weighted Laplacian
        (positive, distinct). ``t = c / lambda_2`` rounded to 6 significant digits, as
        :func:`n2ngraph.compare.stated_times` does.
    example_input : Tensor, optional
        One input batch for the trace; default :func:`n2ngraph.models.example_input`
        (zeros shaped for the first weight layer; 32 x 32 images for a conv net).

    Returns
    -------
    dict
        ``adjacency`` (the weighted adjacency ``W``, scipy CSR ``(n, n)``, nodes in the traced
        graph's order), ``sources`` (``A``: 1 on the input nodes, shape ``(n,)``),
        ``signature`` (``heat_signature(W, [*times, inf], sources=A)``, shape ``(T + 1, n)``),
        ``lambda_2`` (float), ``times`` (absolute, tuple), ``time_labels`` (``"3/l2"``, ...),
        ``t_lambda2`` (``times_l2`` as floats), ``group_sizes`` (node count of each group, in
        order) and ``input_shape`` (the traced per-sample input shape, used to trace the
        variants alike). Plain values only: it pickles with the standard pickler.

    Raises
    ------
    ValueError
        Bad ``times_l2``, or a disconnected reference (``lambda_2 = 0``: times in units of
        ``1/lambda_2`` are undefined).
    """
    from n2ngraph.compare import _check_times, stated_times, time_labels
    from n2ngraph.diffusion import heat_signature

    if isinstance(times_l2, (str, bytes)) or not isinstance(times_l2, Sequence):
        raise ValueError(f"times_l2 must be a sequence of numbers, got {times_l2!r}")
    t_lambda2 = _check_times(tuple(times_l2), "times_l2 (times in units of 1/lambda_2)")
    graph = _graph(model, example_input)
    try:
        times, lam2 = stated_times(graph, None, t_lambda2, weighted=True)
    except ValueError:
        raise ValueError("the trained dense reference's weighted graph is disconnected (lambda_2 = 0), "
                         "so times in units of 1/lambda_2 are undefined") from None
    W = graph.adjacency(weighted=True)
    sources = np.zeros(graph.num_nodes)
    sources[graph.input_nodes] = 1.0
    grid = np.array([*times, np.inf])
    return {
        "adjacency": W,
        "sources": sources,
        "signature": heat_signature(W, grid, sources=sources),
        "lambda_2": float(lam2),
        "times": tuple(times),
        "time_labels": time_labels(times, t_lambda2),
        "t_lambda2": t_lambda2,
        "group_sizes": tuple(g.size for g in graph.groups),
        "input_shape": tuple(graph.groups[0].shape),
    }


def trained_connectivity(model, reference: dict, *, example_input=None) -> dict:
    """Connectivity of a trained variant against the trained dense reference.

    Parameters
    ----------
    model : nn.Module
        The trained variant, e.g. :func:`n2ngraph.bridge.to_model`'s masked model (with N2NSkip
        modules) after :func:`n2ngraph.training.train`; not modified. It must trace to the
        reference's node set (same groups).
    reference : dict
        :func:`trained_reference` of the trained dense model of the same seed.
    example_input : Tensor, optional
        One input batch for the trace; default zeros of the reference's traced input shape.

    Returns
    -------
    dict
        ``trained F(t=<label>)`` for each reference time, ``trained F(t=inf)`` (0 for a connected
        variant; the heat trapped by disconnection otherwise), ``trained lambda_2`` (of the
        variant's weighted Laplacian), ``trained lambda_2/ref`` (over the reference's; NaN if
        that is 0) and ``trained lambda_2_ref`` (floats; :func:`trained_columns` order).

    Raises
    ------
    ValueError
        The variant's graph does not have the reference's node set.
    """
    from n2ngraph.diffusion import algebraic_connectivity, connectivity_distance

    graph = _graph(model, _example_input(model, example_input, reference.get("input_shape")))
    sizes, ref_sizes = [g.size for g in graph.groups], list(reference["group_sizes"])
    if sizes != ref_sizes:
        raise ValueError(f"the trained variant traces to node groups of sizes {sizes}, the reference "
                         f"to {ref_sizes}; compare a variant of the reference's model, traced on the "
                         "same input shape")
    grid = np.array([*reference["times"], np.inf])
    W = graph.adjacency(weighted=True)
    distance = np.asarray(connectivity_distance(reference["adjacency"], W, grid,
                                                sources=reference["sources"],
                                                reference_signature=reference["signature"]))
    lam2 = float(algebraic_connectivity(W))
    lam2_ref = float(reference["lambda_2"])
    values = [*(float(f) for f in distance), lam2, lam2 / lam2_ref if lam2_ref > 0 else float("nan"),
              lam2_ref]
    return dict(zip(trained_columns(reference["time_labels"]), values))
