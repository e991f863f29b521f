"""save_graph / load_graph: byte-identical round trip, no pickle, clear errors, atomic writes."""

import json
import os

import numpy as np
import pytest

from n2ngraph import models
from n2ngraph.io import atomic_write, load_graph, save_graph
from n2ngraph.trace import to_graph


def test_round_trip_is_byte_identical(tmp_path, small_graph):
    path = save_graph(small_graph, tmp_path / "g")
    assert path.name == "g.npz"
    loaded = load_graph(path)
    assert loaded == small_graph
    for a, b in zip(small_graph.blocks, loaded.blocks):
        np.testing.assert_array_equal(a.mask, b.mask)
    for weighted in (False,):
        x, y = small_graph.adjacency(weighted=weighted), loaded.adjacency(weighted=weighted)
        assert x.indptr.tobytes() == y.indptr.tobytes()
        assert x.indices.tobytes() == y.indices.tobytes()
        assert x.data.tobytes() == y.data.tobytes()
    assert loaded.provenance["model"] == "hand"


def test_round_trip_of_a_traced_resnet_keeps_weights_and_specs(tmp_path):
    g = to_graph(models.resnet18())
    loaded = load_graph(save_graph(g, tmp_path / "r.npz"))
    assert loaded == g
    assert loaded.adjacency(weighted=True).data.tobytes() == g.adjacency(weighted=True).data.tobytes()
    assert loaded.block("conv1").spec == g.block("conv1").spec
    assert [x.shape for x in loaded.groups] == [x.shape for x in g.groups]


def test_load_refuses_pickles_and_foreign_files(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, header=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"evil.npz.*member 'header' has dtype \|O"):
        load_graph(evil)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        load_graph(tmp_path / "text.npz")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="no n2ngraph header"):
        load_graph(other)
    with pytest.raises(FileNotFoundError):
        load_graph(tmp_path / "missing.npz")


def test_load_rejects_future_format(tmp_path, small_graph):
    path = save_graph(small_graph, tmp_path / "g.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays["header"].tobytes())
    header["format_version"] = 99
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="version 99"):
        load_graph(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def broken(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_graph(to_graph(models.lenet300()), tmp_path / "no" / "such" / "dir.npz")
