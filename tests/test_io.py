"""save_graph / load_graph: byte-identical round trip, no pickle, clear errors, atomic writes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from n2ngraph import models
from n2ngraph.io import FileFormatError, atomic_write, load_graph, save_graph
from n2ngraph.trace import to_graph


def _rewrite_header(path, change):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays["header"].tobytes())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


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
    _rewrite_header(path, lambda header: header.update(format_version=99))
    with pytest.raises(ValueError, match="version 99"):
        load_graph(path)


def test_files_written_before_the_typed_spec_still_load(tmp_path):
    """Older files name a block's conv groups ``groups`` and the spec's op ``type``."""
    g = to_graph(models.resnet18())
    path = save_graph(g, tmp_path / "old.npz")

    def to_old(header):
        for b in header["blocks"]:
            b["groups"] = b.pop("conv_groups")
            if "op" in b["spec"]:
                b["spec"]["type"] = b["spec"].pop("op")

    _rewrite_header(path, to_old)
    loaded = load_graph(path)
    assert loaded == g and [b.spec for b in loaded.blocks] == [b.spec for b in g.blocks]
    assert [b.conv_groups for b in loaded.blocks] == [b.conv_groups for b in g.blocks]


@pytest.mark.parametrize("change, match", [
    (lambda b: b.update(groups=1), "both 'conv_groups' and its former name 'groups'"),
    (lambda b: b["spec"].update(type="Conv2d"), "both 'op' and its former name 'type'"),
    (lambda b: b["spec"].update(colour="red"), r"unknown layer spec keys \['colour'\]"),
    (lambda b: b["spec"].update(stride="2"), "stride must be an int or a sequence of ints"),
])
def test_a_bad_block_spec_is_a_file_format_error(tmp_path, change, match):
    path = save_graph(to_graph(models.lenet300()), tmp_path / "g.npz")
    _rewrite_header(path, lambda header: change(header["blocks"][0]))
    with pytest.raises(FileFormatError, match=f"g.npz.*{match}"):
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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_files_follow_the_umask(tmp_path, umask):
    """A file written atomically gets the mode of any newly created file, 0o666 & ~umask (the
    temporary file of tempfile.mkstemp would be 0600 whatever the umask)."""
    old = os.umask(umask)
    try:
        written = [atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x")),
                   save_graph(to_graph(models.mlp([3, 2])), tmp_path / "g.npz")]
    finally:
        os.umask(old)
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, (path, oct(umask))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "g.npz"]  # no temporary left


def test_graph_digest_is_topology(tmp_path, small_graph):
    from n2ngraph.io import graph_digest

    loaded = load_graph(save_graph(small_graph, tmp_path / "g.npz"))
    assert graph_digest(loaded) == graph_digest(small_graph)
    reweighted = small_graph.replace(provenance={"model": "other"}, blocks=[
        b.with_mask(b.mask, None if b.mask is None else np.ones(b.pair_mask().shape, np.float32))
        if b.mask is not None else b for b in small_graph.blocks])
    assert graph_digest(reweighted) == graph_digest(small_graph)  # pair weights and provenance left out
    first = small_graph.blocks[0]
    flipped = first.mask.copy()
    flipped.flat[0] = not flipped.flat[0]
    changed = small_graph.replace(blocks=[first.with_mask(flipped), *small_graph.blocks[1:]])
    assert graph_digest(changed) != graph_digest(small_graph)


def test_load_reads_only_the_members_it_needs(tmp_path, small_graph, monkeypatch):
    """An extra member is never opened; a short packed mask is refused, not zero-padded."""
    import zipfile

    path = save_graph(small_graph, tmp_path / "g.npz")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("junk.npy", b"not an array at all")
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    assert load_graph(path) == small_graph
    assert "junk.npy" not in opened and "header.npy" in opened


def _routing_graph(perm):
    """x(6) -> a(4, Linear); s = x[:, 2:5] (channel range, offset -2); p = a shuffled by ``perm``;
    out(3) reads s and p."""
    from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup

    groups = [NodeGroup("x", 0, 6), NodeGroup("a", 6, 4), NodeGroup("s", 10, 3), NodeGroup("p", 13, 4),
              NodeGroup("out", 17, 3)]
    ones = np.ones
    blocks = [EdgeBlock("a", "x", "a", "sequential", ones((4, 6), bool)),
              EdgeBlock("s.slice", "x", "s", "residual", offset=-2),
              EdgeBlock("p.shuffle", "a", "p", "residual", index=np.asarray(perm)),
              EdgeBlock("out", "s", "out", "sequential", ones((3, 3), bool)),
              EdgeBlock("out.p", "p", "out", "n2nskip", ones((3, 4), bool))]
    return NetworkGraph(tuple(groups), tuple(blocks))


def test_channel_ranges_and_shuffles_survive_a_round_trip(tmp_path):
    from n2ngraph.io import graph_digest

    graph = _routing_graph([2, 0, 3, 1])
    loaded = load_graph(save_graph(graph, tmp_path / "r.npz"))
    assert loaded == graph
    assert loaded.blocks[1].offset == -2 and loaded.blocks[2].index.tolist() == [2, 0, 3, 1]
    assert (loaded.adjacency() != graph.adjacency()).nnz == 0
    # by hand: x node 2+i joins s node i; a node i joins p node perm[i]
    A = loaded.adjacency().toarray()
    assert [A[2 + i, 10 + i] for i in range(3)] == [1, 1, 1] and A[0:2, 10:13].sum() == 0
    assert [A[6 + i, 13 + j] for i, j in enumerate([2, 0, 3, 1])] == [1, 1, 1, 1]
    assert graph_digest(loaded) == graph_digest(graph)
    assert graph_digest(_routing_graph([0, 1, 2, 3])) != graph_digest(graph)


@pytest.mark.parametrize("change, match", [
    (lambda h: h["blocks"][3].update(offset=-1), "offset"),              # sequential: never negative
    (lambda h: h["blocks"][2].update(has_index="yes"), "has_index"),
    (lambda h: h["blocks"][0].update(has_index=True), "index_0"),         # no such member
])
def test_bad_node_maps_are_file_format_errors(tmp_path, change, match):
    path = save_graph(_routing_graph([2, 0, 3, 1]), tmp_path / "r.npz")
    _rewrite_header(path, change)
    with pytest.raises(FileFormatError, match=match):
        load_graph(path)


def test_an_index_out_of_the_destination_is_a_file_format_error(tmp_path):
    path = save_graph(_routing_graph([2, 0, 3, 1]), tmp_path / "r.npz")
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    members["index_2"] = np.array([2, 0, 3, 9], dtype="<i8")
    np.savez_compressed(path, **members)
    with pytest.raises(FileFormatError, match="index"):
        load_graph(path)
