"""Figures: adjacency binned from sparse coordinates, sweep figures that show the claim, no
global matplotlib state."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from n2ngraph.graph import EdgeBlock, LayerSpec, NetworkGraph, NodeGroup
from n2ngraph.plotting import (
    adjacency_image,
    display_kind,
    paired_delta,
    plot_adjacency,
    plot_compare,
    plot_delta_f,
)


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_adjacency_image_matches_dense_counts(small_graph):
    image = adjacency_image(small_graph, bins=100)  # bins > n: one pixel per node
    np.testing.assert_array_equal(image, small_graph.adjacency().toarray())
    skip_only = adjacency_image(small_graph, "n2nskip")
    assert skip_only.sum() == 2 and skip_only[5, 0] == 1


def test_adjacency_image_bins_preserve_edge_count(small_graph):
    image = adjacency_image(small_graph, bins=2)
    assert image.shape == (2, 2)
    assert image.sum() == 2 * small_graph.num_edges


def test_plot_adjacency_writes_png_and_pdf(tmp_path, small_graph):
    plot_adjacency([small_graph, small_graph], ["a", "b"], path=tmp_path / "fig")
    png, pdf = tmp_path / "fig.png", tmp_path / "fig.pdf"
    assert _is_png(png)
    assert pdf.read_bytes()[:4] == b"%PDF"


def _concat_graph():
    """a(2) and b(1) concatenated into c(3), then a layer c -> out(1)."""
    groups = (NodeGroup("input", 0, 2), NodeGroup("b", 2, 1), NodeGroup("cat", 3, 3),
              NodeGroup("out", 6, 1))
    blocks = (
        EdgeBlock("b", "input", "b", "sequential", np.ones((1, 2), bool)),
        EdgeBlock("cat.in0", "input", "cat", "residual", offset=0, spec=LayerSpec(op="concat")),
        EdgeBlock("cat.in1", "b", "cat", "residual", offset=2, spec=LayerSpec(op="concat")),
        EdgeBlock("out", "cat", "out", "sequential", np.ones((1, 3), bool)),
    )
    return NetworkGraph(groups, blocks, {"model": "hand"})


def test_concatenation_is_its_own_display_kind():
    graph = _concat_graph()
    assert [display_kind(b) for b in graph.blocks] == ["sequential", "concat", "concat", "sequential"]
    assert adjacency_image(graph, "residual").sum() == 0
    assert adjacency_image(graph, "concat").sum() == 2 * 3
    with pytest.raises(ValueError, match="not one of"):
        adjacency_image(graph, "gate")


def _legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_adjacency_legend_lists_only_present_kinds_and_axes_name_layers(small_graph):
    fig = plot_adjacency(_concat_graph())
    assert _legend_texts(fig) == ["weight layer", "concatenation"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input", "b", "cat", "out"]
    assert ax.get_xlabel() and ax.get_ylabel()
    fig = plot_adjacency(small_graph)
    assert _legend_texts(fig) == ["weight layer", "N2NSkip"]


def test_deep_graph_is_labelled_by_stage():
    sizes = [(f"g{i}", 2, (2, 8 // (1 + i // 10), 8 // (1 + i // 10))) for i in range(30)]
    groups, start = [], 0
    for name, size, shape in sizes:
        groups.append(NodeGroup(name, start, size, shape))
        start += size
    blocks = [EdgeBlock(f"l{i}", groups[i].name, groups[i + 1].name, "sequential",
                        np.ones((2, 2, 3, 3), bool)) for i in range(29)]
    fig = plot_adjacency(NetworkGraph(tuple(groups), tuple(blocks), {"model": "deep"}))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 3 and labels[0].startswith("g0 (8x8)") and labels[1].startswith("g10 (4x4)")


def _sweep_table():
    rows = []
    rng = np.random.default_rng(0)
    for method in ("expander", "snip"):
        for density in (0.1, 0.02):
            for seed in range(3):
                for variant, base in (("plain", 2.0), ("n2nskip", 1.0)):
                    rows.append({"model": "paper_mlp", "recipe": "paper", "method": method,
                                 "variant": variant, "density": density, "seed": seed,
                                 "F(t=1/l2)": base / density + rng.normal(0, 0.01),
                                 "n_components": 1.0 + seed})
    return pd.DataFrame(rows)


def test_paired_delta_against_hand_computation():
    table = pd.DataFrame({
        "method": ["m"] * 4, "variant": ["plain", "n2nskip"] * 2, "density": [0.1] * 4,
        "seed": [0, 0, 1, 1], "F": [3.0, 1.0, 5.0, 2.0],
    })
    (record,) = paired_delta(table, "F")
    # deltas 2 and 3: mean 2.5, sd 0.7071, t_{0.975, 1} = 12.706
    assert record["mean"] == 2.5 and record["n"] == 2
    assert record["high"] - record["mean"] == pytest.approx(12.7062 * 0.70711 / np.sqrt(2), rel=1e-4)
    one = paired_delta(table[table["seed"] == 0], "F")[0]
    assert one["mean"] == 2.0 and np.isnan(one["low"])


def test_delta_f_and_compare_figures(tmp_path):
    table = _sweep_table()
    fig = plot_delta_f(table, path=tmp_path / "delta_F")
    assert _is_png(tmp_path / "delta_F.png") and (tmp_path / "delta_F.pdf").exists()
    ax = fig.axes[0]
    assert any(np.allclose(line.get_ydata(), 0) for line in ax.get_lines())  # the zero line
    assert "paper_mlp" in fig._suptitle.get_text() and "95%" in fig._suptitle.get_text()
    summary = table.groupby(["method", "variant", "density"], as_index=False)[
        ["F(t=1/l2)", "n_components"]].mean()
    fig = plot_compare(summary, path=tmp_path / "compare")
    assert _is_png(tmp_path / "compare.png")
    texts = _legend_texts(fig)
    assert "expander" in texts and "snip" in texts and any("dashed" in t for t in texts)
    assert all(a.get_ylabel() for a in fig.axes if a.get_visible())
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert not any("times" in t or "^" in t for t in ticks)


def test_single_density_compare_is_drawn_per_method():
    summary = _sweep_table().query("density == 0.1").groupby(
        ["method", "variant", "density"], as_index=False)[["F(t=1/l2)"]].mean()
    fig = plot_compare(summary, columns=["F(t=1/l2)"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["expander", "snip"]


def test_importing_plotting_leaves_the_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import n2ngraph.plotting; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"
