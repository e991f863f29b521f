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
    group_labels,
    paired_delta,
    plot_accuracy,
    plot_accuracy_vs_distance,
    plot_adjacency,
    plot_compare,
    plot_delta_f,
    plot_methods,
    plot_scree,
    plot_train_curve,
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
        adjacency_image(graph, "bogus")


def test_a_gate_is_its_own_display_kind():
    """x * s (squeeze-and-excitation): a parameter-free join with spec.op 'mul', drawn and named
    apart from residual shortcuts."""
    groups = (NodeGroup("input", 0, 2), NodeGroup("x", 2, 2), NodeGroup("prod", 4, 2))
    blocks = (EdgeBlock("x", "input", "x", "sequential", np.ones((2, 2), bool)),
              EdgeBlock("prod.in0", "x", "prod", "residual", offset=0, spec=LayerSpec(op="mul")))
    graph = NetworkGraph(groups, blocks, {"model": "hand"})
    assert [display_kind(b) for b in graph.blocks] == ["sequential", "gate"]
    assert adjacency_image(graph, "gate").sum() == 2 * 2 and adjacency_image(graph, "residual").sum() == 0
    assert _legend_texts(plot_adjacency(graph)) == ["weight layer", "gate (x * s)"]


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
    assert len(fig.axes[0].get_lines()) == 2 * 2  # one boundary per stage, on each axis


def _mlp_graph(names):
    """A bare nn.Sequential's traced naming: groups named by index, one Linear block each."""
    sizes = [4, 3, 3, 2]
    groups, start = [], 0
    for name, size in zip(["input", *names], sizes):
        groups.append(NodeGroup(name, start, size, (size,)))
        start += size
    blocks = [EdgeBlock(b.name, a.name, b.name, "sequential", np.ones((b.size, a.size), bool),
                        spec=LayerSpec(op="Linear")) for a, b in zip(groups, groups[1:])]
    return NetworkGraph(tuple(groups), tuple(blocks), {"model": "mlp"})


def test_index_named_layers_are_shown_by_type_and_rank():
    assert group_labels(_mlp_graph(["1", "3", "5"])) == {
        "input": "input", "1": "Linear 1", "3": "Linear 2", "5": "Linear 3"}
    assert group_labels(_mlp_graph(["fc1", "fc2", "0.5"]))["fc2"] == "fc2"  # real names stay
    fig = plot_adjacency(_mlp_graph(["1", "3", "5"]))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["input", "Linear 1", "Linear 2",
                                                                      "Linear 3"]


def test_a_squeeze_inside_a_stage_does_not_split_it():
    """8x8, 1x1 (an SE squeeze), 8x8, 4x4: two stages, not four."""
    spec = [("input", 2, 8), *[(f"s1.{i}", 2, 8) for i in range(8)], ("s1.se", 1, 1),
            *[(f"s1.x{i}", 2, 8) for i in range(4)], *[(f"s2.{i}", 4, 4) for i in range(8)]]
    groups, start = [], 0
    for name, size, side in spec:
        groups.append(NodeGroup(name, start, size, (size, side, side)))
        start += size
    blocks = [EdgeBlock(f"l{i}", a.name, b.name, "sequential", np.ones((b.size, a.size, 1, 1), bool))
              for i, (a, b) in enumerate(zip(groups, groups[1:]))]
    fig = plot_adjacency(NetworkGraph(tuple(groups), tuple(blocks), {"model": "se"}))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["s1 (8x8)", "s2 (4x4)"]


def test_stage_is_named_by_its_main_module():
    """Groups of a ResNet-like net: a stage is labelled by the top-level module holding most of
    its nodes, not by the name of whichever layer happens to open it."""
    spec = [("input", 2, 8), ("conv1", 2, 8), *[(f"layer1.{i}", 2, 8) for i in range(8)],
            ("layer2.0.conv1", 2, 8), *[(f"layer2.{i}", 4, 4) for i in range(1, 9)], ("fc", 3, 0)]
    groups, start = [], 0
    for name, size, side in spec:
        groups.append(NodeGroup(name, start, size, (size, side, side) if side else (size,)))
        start += size
    blocks = [EdgeBlock(f"l{i}", a.name, b.name, "sequential",
                        np.ones((b.size, a.size, 1, 1) if b.shape[1:] else (b.size, a.size), bool))
              for i, (a, b) in enumerate(zip(groups, groups[1:]))]
    fig = plot_adjacency(NetworkGraph(tuple(groups), tuple(blocks), {"model": "deep"}))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["layer1 (8x8)", "layer2 (4x4)", "fc (neurons)"]


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
    texts = _legend_texts(fig)  # no lines are drawn: the legend names the markers
    assert any("circle" in t for t in texts) and not any("dashed" in t for t in texts)
    assert fig.axes[0].get_title() == "F(t=1/λ2)"


def _summary(table):
    out = table.groupby(["model", "recipe", "method", "variant", "density"], as_index=False)[
        ["F(t=1/l2)", "n_components"]].agg(["mean", "std"])
    out.columns = [a if b in ("", "mean") else f"{a}_{b}" for a, b in out.columns]
    out["collapsed_layers"] = 0.0
    out["collapsed_layers_std"] = 0.0
    out["seeds"] = 3
    return out


def test_constant_metric_gets_no_panel_and_the_title_says_its_value():
    summary = _summary(_sweep_table())
    fig = plot_compare(summary, columns=["F(t=1/l2)", "n_components", "collapsed_layers"])
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ["F(t=1/λ2)", "connected components"]
    heading = fig._suptitle.get_text()
    assert "collapsed layers = 0" in heading and "paper_mlp" in heading and "3 seeds" in heading


def test_methods_figure_is_a_metric_by_method_grid(tmp_path):
    summary = _summary(_sweep_table())
    summary.attrs = {"config": {"dataset": "digits"}, "lambda_2_reference": 0.25}
    fig = plot_methods(summary, ["F(t=1/l2)", "n_components", "collapsed_layers"],
                       path=tmp_path / "methods")
    assert _is_png(tmp_path / "methods.png")
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 2 * 2  # 2 metrics (collapsed_layers is constant) x 2 methods
    assert [a.get_title() for a in visible[:2]] == ["expander", "snip"]
    assert all(len(a.get_lines()) >= 2 for a in visible)  # plain and N2NSkip in every panel
    heading = fig._suptitle.get_text()
    assert "calibration data digits (snip)" in heading and "λ2(reference) = 0.25" in heading
    single = plot_methods(summary[summary["density"] == 0.1], ["F(t=1/l2)", "n_components"])
    assert [t.get_text() for t in single.axes[0].get_xticklabels()] == ["expander", "snip"]


def test_short_log_range_has_several_tick_labels():
    summary = _summary(_sweep_table())
    summary["n_components"] = np.where(summary["density"] == 0.1, 2.0, 30.0)
    fig = plot_compare(summary, columns=["n_components"])
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    lo, hi = fig.axes[0].get_ylim()
    shown = [float(x) for x in labels]
    assert len([v for v in shown if lo <= v <= hi]) >= 3, labels


def test_importing_plotting_leaves_the_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import n2ngraph.plotting; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_accuracy_figure_names_methods_by_the_papers_label_and_keeps_the_title():
    summary = pd.DataFrame({
        "method": ["expander", "expander", "none"], "variant": ["plain", "n2nskip", "dense"],
        "density": [0.1, 0.1, 1.0], "label": ["RP", "N2NSkip-RP", "dense"],
        "test_acc_mean": [80.0, 85.0, 97.0], "test_acc_std": [1.0, 2.0, float("nan")]})
    fig = plot_accuracy(summary, title="dataset digits, 3 epochs", ylabel="test accuracy (%)")
    assert fig._suptitle.get_text() == "dataset digits, 3 epochs"  # not a panel's title
    assert [a.get_title() for a in fig.axes] == ["RP (expander)"]
    assert fig.axes[0].get_ylabel() == "test accuracy (%)"


def test_scree_figure_keeps_its_title_and_plain_k_ticks():
    curves = pd.DataFrame({"graph": ["ref"] * 4 + ["RP"] * 4, "t": [0.1, 0.1, 1.0, 1.0] * 2,
                           "K_percent": [1.0, 100.0] * 4, "alpha": [0.2, 1.0, 0.5, 1.0, 0.1, 1.0, 0.3, 1.0]})
    fig = plot_scree(curves, title="model m, RP at density 0.1")
    assert fig._suptitle.get_text() == "model m, RP at density 0.1"
    assert [a.get_title() for a in fig.axes] == ["t = 0.1", "t = 1"]
    fig.canvas.draw()
    assert {"1", "10", "100"} <= {t.get_text() for t in fig.axes[0].get_xticklabels()}


def test_deep_mlp_is_labelled_by_layer():
    """20 Linear layers of one size: no spatial stages to gather them in, so every layer is
    bounded and named (Linear 1 .. Linear 20), not one stage named after its largest layer."""
    groups = tuple(NodeGroup("input" if i == 0 else str(2 * i - 1), 10 * i, 10, (10,)) for i in range(21))
    blocks = tuple(EdgeBlock(b.name, a.name, b.name, "sequential", np.ones((10, 10), bool),
                             spec=LayerSpec(op="Linear")) for a, b in zip(groups, groups[1:]))
    fig = plot_adjacency(NetworkGraph(groups, blocks, {"model": "deep mlp"}))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "input" and labels[-1] == "Linear 20" and len(labels) == 21
    assert len(fig.axes[0].get_lines()) == 2 * 20


def test_channel_slices_and_shuffles_are_drawn_as_routing():
    """x[:, 2:4] of a 4-channel group (a residual block with a negative offset, spec.op 'slice')
    and a shuffle (an index): both drawn, as channel routing, with their hand-computed edges."""
    groups = (NodeGroup("input", 0, 2), NodeGroup("x", 2, 4), NodeGroup("half", 6, 2),
              NodeGroup("mixed", 8, 4))
    blocks = (
        EdgeBlock("x", "input", "x", "sequential", np.ones((4, 2), bool)),
        EdgeBlock("half.slice", "x", "half", "residual", offset=-2, spec=LayerSpec(op="slice")),
        EdgeBlock("mixed.shuffle", "x", "mixed", "residual", spec=LayerSpec(op="shuffle"),
                  index=np.array([0, 2, 1, 3])),
    )
    graph = NetworkGraph(groups, blocks, {"model": "hand"})
    assert [display_kind(b) for b in graph.blocks] == ["sequential", "routing", "routing"]
    image = adjacency_image(graph, "routing", bins=100)
    # slice: x channels 2, 3 (nodes 4, 5) -> half 0, 1 (nodes 6, 7); shuffle: x i -> mixed index[i]
    expected = {(6, 4), (7, 5), (8, 2), (10, 3), (9, 4), (11, 5)}
    assert {(int(r), int(c)) for r, c in zip(*np.nonzero(image)) if r > c} == expected
    assert _legend_texts(plot_adjacency(graph)) == ["weight layer", "channel slice / shuffle"]


def _points(ax):
    """(x, y) of every errorbar/line point drawn on ``ax``, as a set of rounded pairs."""
    pts = set()
    for line in ax.get_lines():
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            pts.add((round(float(x), 6), round(float(y), 6)))
    return pts


def test_plot_train_curve(tmp_path):
    log = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.0, 0.5], "train_acc": [0.3, 0.6, 0.8],
                        "test_loss": [2.1, 1.2, 0.9], "test_acc": [0.25, 0.75, 0.7],
                        "lr": [0.05, 0.05, 0.025]})
    fig = plot_train_curve(log, title="run", path=tmp_path / "curve")
    assert _is_png(tmp_path / "curve.png") and (tmp_path / "curve.pdf").stat().st_size > 0
    acc, loss = fig.axes[:2]
    assert {(2.0, 75.0), (3.0, 80.0)} <= _points(acc)  # in %
    assert {(1.0, 2.0), (3.0, 0.9)} <= _points(loss)
    labels = [t.get_text() for t in acc.get_legend().get_texts()]
    assert "best test 75.00% (epoch 2)" in labels  # the best epoch, not the last
    assert any(abs(line.get_xdata()[0] - 2.5) < 1e-9 for line in acc.get_lines()
               if len(line.get_xdata()) == 2 and line.get_xdata()[0] == line.get_xdata()[1])
    no_test = log.assign(test_acc=np.nan, test_loss=np.nan)
    drawn = plot_train_curve(no_test).axes[0].get_legend().get_texts()
    assert [t.get_text() for t in drawn] == ["train"]  # no test curve, no best mark
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['test_acc'\]"):
        plot_train_curve(log.drop(columns="test_acc"))
    with pytest.raises(ValueError, match="no epochs"):
        plot_train_curve(log.iloc[:0])


def test_plot_accuracy_vs_distance_averages_seeds(tmp_path):
    rows = []
    for method in ("expander", "snip"):
        for variant, shift in (("plain", 0.0), ("n2nskip", -0.1)):
            for density in (0.1, 0.02):
                for seed, noise in ((0, -0.01), (1, 0.01)):
                    rows.append({"method": method, "variant": variant, "density": density,
                                 "seed": seed, "init": "dense",
                                 "final_test_acc": 0.8 + noise + (0.05 if variant == "n2nskip" else 0),
                                 "trained F(t=inf)": 1.0 + shift + density + noise})
    rows.append({"method": "dense", "variant": "dense", "density": 1.0, "seed": 0, "init": "dense",
                 "final_test_acc": 0.9, "trained F(t=inf)": 0.0})
    table = pd.DataFrame(rows)
    fig = plot_accuracy_vs_distance(table, path=tmp_path / "avd")
    assert _is_png(tmp_path / "avd.png")
    ax = fig.axes[0]
    pts = _points(ax)
    # means over the two seeds, accuracy in %
    assert (1.1, 80.0) in pts and (0.92, 85.0) in pts and (1.02, 80.0) in pts
    assert any(np.allclose(line.get_ydata(), 90.0) for line in ax.get_lines())  # dense line
    texts = {t.get_text() for t in ax.texts}
    assert texts == {"0.1", "0.02"}
    assert "trained F(t=inf)" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    two = plot_accuracy_vs_distance(pd.concat([table, table.assign(init="sparse")]))
    assert [a.get_title() for a in two.axes[:2]] == ["dense init", "sparse init"]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['F\(t=1/l2\)'\]"):
        plot_accuracy_vs_distance(table, distance="F(t=1/l2)")
    with pytest.raises(ValueError, match="no pruned cell"):
        plot_accuracy_vs_distance(table.assign(**{"trained F(t=inf)": np.nan}))
