"""Graph tables and the Markdown writer: hand-built graphs with known counts, no NaN shown."""

import numpy as np
import pandas as pd
import pytest

from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup
from n2ngraph.tables import block_table, group_table, markdown_table, write_table


def test_block_table_counts_and_no_nan_for_weightless_blocks(residual_graph, tmp_path):
    t = block_table(residual_graph)
    assert list(t["block"]) == ["a", "y", "res", "total"]
    assert list(t["kept_weights"]) == [11, 0, 0, 11]
    assert list(t["dense_weights"]) == [36, 36, 0, 72]
    assert list(t["edges"]) == [2, 0, 2, 4]  # channel pairs: x0-a0, x1-a1; a0-y0, a1-y1
    assert t["density"][0] == pytest.approx(11 / 36) and t["density"][1] == 0
    assert t["density"][3] == pytest.approx(11 / 72)
    assert pd.isna(t["density"][2])  # a residual block has no weights: no density
    paths = write_table(t, tmp_path / "blocks")
    md = paths[1].read_text(encoding="utf-8")
    assert "nan" not in md.lower()
    res = next(line for line in md.splitlines() if line.startswith("| res "))
    assert [c.strip() for c in res.strip("|").split("|")][7] == "-"  # the density cell
    back = pd.read_csv(paths[0])
    assert list(back.columns) == list(t.columns) and pd.isna(back["density"][2])


def test_group_table_degrees(residual_graph):
    t = group_table(residual_graph)
    # degrees: x0, x1 -> 1 (one edge each); a0, a1 -> 2 (from x and to y); y0, y1 -> 1
    assert list(t["degree_mean"]) == [1.0, 2.0, 1.0] and list(t["nodes"]) == [2, 2, 2]


def test_markdown_table_is_aligned_and_escapes_pipes():
    frame = pd.DataFrame({"name": ["a|b", "long name"], "value": [0.5, np.nan], "n": [1, None]})
    lines = markdown_table(frame).splitlines()
    assert len({len(line) for line in lines}) == 1  # padded: reads as a table in a terminal
    assert lines[2] == "| a\\|b      | 0.5   | 1 |"
    assert lines[3] == "| long name | -     | - |"


def test_write_table_keeps_every_column_in_csv_and_the_short_view_in_markdown(tmp_path):
    full = pd.DataFrame({"a": [1, 2], "b": [0.25, 0.5], "c": ["x", "y"]})
    csv, md = write_table(full, tmp_path / "t", title="Title line.", markdown=full[["a"]],
                          notes="A note.")
    assert list(pd.read_csv(csv).columns) == ["a", "b", "c"]
    assert md.read_text(encoding="utf-8") == ("Title line.\n\n| a |\n|---|\n| 1 |\n| 2 |\n\n"
                                              "A note.\n")
    # a document made elsewhere is written as it is; the CSV still holds the whole table
    csv, md = write_table(full, tmp_path / "u", markdown="# made elsewhere\n")
    assert md.read_text(encoding="utf-8") == "# made elsewhere\n" and len(pd.read_csv(csv).columns) == 3
    with pytest.raises(ValueError, match="ready Markdown document"):
        write_table(full, tmp_path / "v", markdown="# made elsewhere\n", title="lost")


def test_block_table_counts_a_channel_slice():
    """s = x[:, 2:4] joins x2 -> s0 and x3 -> s1 (a residual block of offset -2): 2 edges."""
    g = NetworkGraph((NodeGroup("x", 0, 4), NodeGroup("s", 4, 2), NodeGroup("y", 6, 1)),
                     (EdgeBlock("slice", "x", "s", "residual", offset=-2),
                      EdgeBlock("fc", "s", "y", "sequential", np.ones((1, 2), bool))))
    t = block_table(g)
    assert list(t["edges"]) == [2, 2, 4] and pd.isna(t["density"][0])
    degrees = group_table(g)
    assert list(degrees["degree_min"]) == [0, 2, 2] and list(degrees["degree_max"]) == [1, 2, 2]


def test_layer_table_kept_fractions_by_hand(small_graph, residual_graph):
    from n2ngraph.tables import layer_table

    t = layer_table(small_graph)
    assert t["layer"].tolist() == ["h", "out", "skip", "total"]
    assert t["kind"].tolist() == ["sequential", "sequential", "n2nskip", ""]
    assert t["shape"].tolist() == ["2x3", "1x2", "1x3", ""]
    assert t["kept"].tolist() == [3, 2, 1, 6]
    assert t["weights"].tolist() == [6, 2, 3, 8]  # total: the dense reference (sequential only)
    assert t["kept_fraction"].tolist() == pytest.approx([0.5, 1.0, 1 / 3, 6 / 8])
    r = layer_table(residual_graph)  # the residual block has no weights: no row
    assert r["layer"].tolist() == ["a", "y", "total"] and r["kept"].tolist() == [11, 0, 11]
