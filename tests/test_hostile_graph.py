"""Hostile graph files: truncated and byte-flipped archives, rewritten headers (huge mask shapes,
millions of groups, wrong types, deep nesting), tampered members (short, long or padded masks,
non-finite or negative pair weights, wrong dtypes and shapes), zip bombs in used and unused
members, other compression methods, duplicate members. Each load runs in a forked child
(tests/test_hostile_support.py): a one-line ``FileFormatError`` naming the file or a correct
load, never a crash, within a memory bound."""

from __future__ import annotations

import io
import json
import os
import zipfile
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_support import check_outcome, isolated, zip_members, zip_of
from torch import nn

from n2ngraph.io import FileFormatError, graph_digest, load_graph, save_graph
from n2ngraph.trace import to_graph

HYPOTHESIS = settings(max_examples=int(os.environ.get("N2NGRAPH_HOSTILE_EXAMPLES", 25)), deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _tiny_cnn() -> nn.Module:
    """Two convs, a pool, a flatten and a Linear on 3 x 8 x 8: 4-D masks, fold, pair weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10))


@lru_cache(maxsize=1)
def _base() -> tuple[bytes, str]:
    """A tiny CNN traced with its weights (pair weights present), saved: bytes and digest."""
    import tempfile
    from pathlib import Path

    with torch.random.fork_rng():
        graph = to_graph(_tiny_cnn(), example_input=torch.zeros(1, 3, 8, 8))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_graph(graph, Path(tmp) / "g.npz")
        return path.read_bytes(), graph_digest(graph)


@lru_cache(maxsize=4)
def _members_cached(blob: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple(zip_members(blob).items())


def _members(blob: bytes) -> dict[str, bytes]:
    return dict(_members_cached(blob))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def _array(raw: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def _header(members) -> dict:
    return json.loads(_array(members["header.npy"]).tobytes())


def _with_header(members, header) -> dict:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return {**members, "header.npy": _npy(np.frombuffer(text, dtype=np.uint8))}


def _load(path):
    g = load_graph(path)
    weights_ok = all(b.pair_weight is None or bool(np.isfinite(b.pair_weight).all() and (b.pair_weight >= 0).all())
                     for b in g.blocks)
    return {"digest": graph_digest(g), "weights_ok": weights_ok, "nodes": g.num_nodes}


def _same_graph(value) -> bool:
    return value["digest"] == _base()[1] and value["weights_ok"]


def _run(tmp_path, blob: bytes, attack: str, ok=_same_graph, name="g.npz", **kw):
    path = tmp_path / name
    path.write_bytes(blob)
    out = isolated(_load, path)
    check_outcome(out, attack, path, ok=ok, **kw)
    return out


def test_base_graph_round_trips(tmp_path):
    out = _run(tmp_path, _base()[0], "graph: valid file")
    assert out.kind == "ok"


# --------------------------------------------------------------------------- mutations (hypothesis)
@HYPOTHESIS
@given(cut=st.integers(0, 10**9))
def test_truncated_graphs(tmp_path_factory, cut):
    blob = _base()[0]
    _run(tmp_path_factory.mktemp("t"), blob[:cut % len(blob)], "graph: truncated")


@HYPOTHESIS
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=6),
       tail=st.booleans())
def test_byte_flipped_graphs(tmp_path_factory, flips, tail):
    blob = bytearray(_base()[0])
    for pos, x in flips:
        # half the examples aim at the zip directory and member headers at the end of the file
        i = len(blob) - 1 - pos % 2000 if tail else pos % len(blob)
        blob[i] ^= x
    _run(tmp_path_factory.mktemp("f"), bytes(blob), "graph: byte flips")


HOSTILE_VALUES = st.sampled_from([2**40, 2**63, -1, 0, 1.5, "7", None, True, [], {}, [2**31] * 3, [[1]], "x" * 10])


@HYPOTHESIS
@given(where=st.sampled_from(["group", "block"]), index=st.integers(0, 10), key=st.sampled_from(
    ["name", "start", "size", "shape", "src", "dst", "kind", "mask_shape", "conv_groups", "groups", "fold", "offset", "spec",
     "has_pair_weight"]), value=HOSTILE_VALUES)
def test_rewritten_header_fields(tmp_path_factory, where, index, key, value):
    members = _members(_base()[0])
    header = _header(members)
    items = header["groups" if where == "group" else "blocks"]
    items[index % len(items)][key] = value
    _run(tmp_path_factory.mktemp("h"), zip_of(_with_header(members, header)), "graph: rewritten header field",
         ok=lambda v: v["weights_ok"])


@HYPOTHESIS
@given(key=st.sampled_from(["format", "format_version", "groups", "blocks", "provenance"]), value=HOSTILE_VALUES)
def test_rewritten_header_top_level(tmp_path_factory, key, value):
    members = _members(_base()[0])
    header = _header(members)
    header[key] = value
    _run(tmp_path_factory.mktemp("h"), zip_of(_with_header(members, header)), "graph: rewritten header field",
         ok=lambda v: v["weights_ok"])


# --------------------------------------------------------------------------- crafted members
def _tampered(change) -> bytes:
    members = _members(_base()[0])
    change(members)
    return zip_of(members)


def _mask(members, i=0):
    return _array(members[f"mask_{i}.npy"])


def _set(members, name, array):
    members[name] = _npy(array)


MEMBER_ATTACKS = {
    # the old loader zero-padded a short packed mask and loaded it
    "short packed mask": lambda m: _set(m, "mask_0.npy", _mask(m)[:-1]),
    "long packed mask": lambda m: _set(m, "mask_0.npy", np.append(_mask(m), np.uint8(0))),
    "int8 packed mask": lambda m: _set(m, "mask_0.npy", _mask(m).view(np.int8)),
    "2-d packed mask": lambda m: _set(m, "mask_0.npy", _mask(m).reshape(1, -1)),
    "mask missing": lambda m: m.pop("mask_1.npy"),
    # pair weights: the old loader accepted all of these; diffusion then failed or went negative
    "pair weight NaN": lambda m: _set(m, "pair_weight_0.npy", np.full_like(_array(m["pair_weight_0.npy"]), np.nan)),
    "pair weight inf": lambda m: _set(m, "pair_weight_1.npy", np.full_like(_array(m["pair_weight_1.npy"]), np.inf)),
    "pair weight negative": lambda m: _set(m, "pair_weight_2.npy", -_array(m["pair_weight_2.npy"])),
    "pair weight float64": lambda m: _set(m, "pair_weight_0.npy", _array(m["pair_weight_0.npy"]).astype(np.float64)),
    "pair weight transposed": lambda m: _set(m, "pair_weight_0.npy", _array(m["pair_weight_0.npy"]).T.copy()),
    "pair weight object": lambda m: m.__setitem__("pair_weight_0.npy", _npy_object()),
    "pair weight missing": lambda m: m.pop("pair_weight_0.npy"),
    "header int64": lambda m: _set(m, "header.npy", _array(m["header.npy"]).astype(np.int64)),
    "header object array": lambda m: m.__setitem__("header.npy", _npy_object()),
    "header not utf-8": lambda m: _set(m, "header.npy", np.frombuffer(b"\xff\xfe{", np.uint8)),
    "header not json": lambda m: _set(m, "header.npy", np.frombuffer(b"{'a': 1}", np.uint8)),
    "header a list": lambda m: _set(m, "header.npy", np.frombuffer(b"[1, 2]", np.uint8)),
    "header missing": lambda m: m.pop("header.npy"),
    "indptr float": lambda m: _set(m, "adjacency_indptr.npy", _array(m["adjacency_indptr.npy"]).astype(float)),
    "indptr shifted": lambda m: _set(m, "adjacency_indptr.npy", _array(m["adjacency_indptr.npy"]) + 1),
    "indices short": lambda m: _set(m, "adjacency_indices.npy", _array(m["adjacency_indices.npy"])[:-2]),
    "indices missing": lambda m: m.pop("adjacency_indices.npy"),
    "npy header huge": lambda m: m.__setitem__("mask_0.npy", b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little")),
    "npy header garbage": lambda m: m.__setitem__("mask_0.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': os.system}"),
    "npy version 9": lambda m: m.__setitem__("mask_0.npy", b"\x93NUMPY\x09\x00" + m["mask_0.npy"][8:]),
    "npy fortran 2-d": lambda m: _set(m, "pair_weight_0.npy", np.asfortranarray(_array(m["pair_weight_0.npy"]))),
}


def _npy_object() -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("attack", sorted(MEMBER_ATTACKS))
def test_tampered_members(tmp_path, attack):
    out = _run(tmp_path, _tampered(MEMBER_ATTACKS[attack]), f"graph: {attack}")
    if attack != "pair weight float64":
        assert out.kind == "error", attack


def test_big_endian_pair_weights_load_correctly(tmp_path):
    blob = _tampered(lambda m: _set(m, "pair_weight_0.npy", _array(m["pair_weight_0.npy"]).astype(">f4")))
    assert _run(tmp_path, blob, "graph: big-endian pair weights").kind == "ok"


def test_padding_bits_of_a_packed_mask_must_be_zero(tmp_path):
    # a 3 x 3 mask: 9 bits in 2 bytes, 7 padding bits
    from n2ngraph.graph import EdgeBlock, NetworkGraph, NodeGroup

    g = NetworkGraph((NodeGroup("a", 0, 3), NodeGroup("b", 3, 3)),
                     (EdgeBlock("l", "a", "b", "sequential", np.eye(3, dtype=bool)),))
    path = save_graph(g, tmp_path / "small.npz")
    members = _members(path.read_bytes())
    packed = _array(members["mask_0.npy"]).copy()
    packed[-1] |= 0x01
    members["mask_0.npy"] = _npy(packed)
    path.write_bytes(zip_of(members))
    out = isolated(_load, path)
    check_outcome(out, "graph: padding bits set", path)
    assert "padding bits" in out.message


def test_stored_and_deflated_archives_both_load(tmp_path):
    stored = zip_of(_members(_base()[0]), zipfile.ZIP_STORED)
    assert _run(tmp_path, stored, "graph: valid file (stored)").kind == "ok"


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compression_methods_are_refused(tmp_path, method):
    out = _run(tmp_path, zip_of(_members(_base()[0]), method), "graph: other compression method")
    assert out.kind == "error" and "compression method" in out.message


def test_duplicate_members_are_refused(tmp_path):
    members = _members(_base()[0])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
        with pytest.warns(UserWarning, match="Duplicate"):
            zf.writestr("mask_0.npy", _npy(np.zeros(3, np.uint8)))
    out = _run(tmp_path, buf.getvalue(), "graph: duplicate member")
    assert out.kind == "error" and "appears twice" in out.message


# --------------------------------------------------------------------------- size attacks
def _huge_mask_shape(m):
    header = _header(m)
    header["blocks"][0]["mask_shape"] = [300, 784 * 100_000]
    m.update(_with_header(m, header))


def _huge_groups_consistent(m):
    """Groups and mask shapes rewritten together so the header is self-consistent: 2**20 x 784
    (822M weights, 103 MB of packed bits) declared, a few KB present."""
    header = _header(m)
    big = 2**20
    header["groups"][1]["size"] = big
    for g in header["groups"][2:]:
        g["start"] += big - 300
    header["blocks"][0]["mask_shape"] = [big, 784]
    header["blocks"][1]["mask_shape"] = [100, big]
    m.update(_with_header(m, header))


def _million_groups(n):
    def change(m):
        header = _header(m)
        header["groups"] = [{"name": f"g{i}", "start": i, "size": 1, "shape": [1]} for i in range(n)]
        header["blocks"] = []
        m.update(_with_header(m, header))
    return change


def _header_bytes(text: bytes):
    def change(m):
        m["header.npy"] = _npy(np.frombuffer(text, dtype=np.uint8))
    return change


def _deep_spec(m):
    header = _header(m)
    text = json.dumps(header).replace('"spec": {', '"spec": {"deep": ' + "[" * 50_000 + "]" * 50_000 + ", ", 1)
    m.update(_with_header(m, text.encode()))


SIZE_ATTACKS = {
    "huge mask_shape": _huge_mask_shape,
    "huge groups, consistent header": _huge_groups_consistent,
    "2M groups (10 MB header)": _header_bytes(b'{"groups": [' + b'{"name":"g","size":1},' * 460_000 + b"1]}"),
    "60k groups (under the byte limit)": _million_groups(60_000),
    "400k tiny objects (under the byte limit)": _header_bytes(b"[" + b"{}," * 400_000 + b"1]"),
    "1M tiny strings (under the byte limit)": _header_bytes(b"[" + b'"",' * 1_000_000 + b"1]"),
    "50k-deep spec": _deep_spec,
}


@pytest.mark.parametrize("attack", sorted(SIZE_ATTACKS))
def test_declared_sizes_are_checked_before_allocating(tmp_path, attack):
    out = _run(tmp_path, _tampered(SIZE_ATTACKS[attack]), f"graph: {attack}")
    assert out.kind == "error" and out.extra_mb < 100, (out.message, out.extra_mb)


def test_max_weights_is_enforced_before_reading_masks(tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(_base()[0])
    with pytest.raises(FileFormatError, match="max_weights=1000"):
        load_graph(path, max_weights=1000)


BOMB_MB = 300


@lru_cache(maxsize=4)
def _zip_with_bomb(bomb_name: str) -> bytes:
    """The base graph's members, plus ``bomb_name`` holding 300 MB of zeros (a .npy of uint8),
    deflated (fast, level 1) to about 1.4 MB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, raw in _members(_base()[0]).items():
            if name != bomb_name:
                zf.writestr(name, raw)
        head = io.BytesIO()
        np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False,
                                                    "shape": (BOMB_MB << 20,)})
        with zf.open(bomb_name, "w", force_zip64=True) as fh:
            fh.write(head.getvalue())
            chunk = bytes(4 << 20)
            for _ in range(BOMB_MB // 4):
                fh.write(chunk)
    return buf.getvalue()


@pytest.mark.parametrize("bomb", ["unused_member.npy", "mask_0.npy"])
def test_zip_bombs_are_never_inflated(tmp_path, bomb):
    blob = _zip_with_bomb(bomb)
    assert len(blob) < 3 << 19  # 1.5 MB
    out = _run(tmp_path, blob, f"graph: zip bomb in {'an unused' if bomb.startswith('unused') else 'a used'} member")
    assert out.kind == ("ok" if bomb.startswith("unused") else "error")
    assert out.extra_mb < 100
