"""Hostile CIFAR files: crafted pickles (ndarray offsets and strides, stride-0 arrays, code
payloads, huge declared sizes, deep or shared nesting), mutated valid files, wrong sizes and
labels. Each load runs in a forked child (tests/test_hostile_support.py): it must end in a
one-line ``FileFormatError`` naming the file or in a correct load, never in a crash, and it must
stay within a memory bound."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_support import MEMORY_BOUND_MB, check_outcome, isolated

from n2ngraph import data as data_module
from n2ngraph.data import load_dataset, restricted_load

N = 2  # images per fake file (the official files hold 10,000; the tests shrink the expectation)
HYPOTHESIS = settings(max_examples=int(os.environ.get("N2NGRAPH_HOSTILE_EXAMPLES", 25)), deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _small_cifar(monkeypatch):
    counts = {"cifar10": {"train": N, "test": N}, "cifar100": {"train": N, "test": N}}
    monkeypatch.setattr(data_module, "_CIFAR_RECORDS", counts, raising=False)


def _valid_batch(seed=0, n=N, protocol=2) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"training batch 1 of 5",
                         b"labels": [int(v) for v in rng.integers(0, 10, n)],
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [b"img_%d.png" % i for i in range(n)]}, protocol=protocol)


def _py_folder(tmp_path, first: bytes):
    """A CIFAR-10 python folder whose data_batch_1 is ``first`` and the rest valid."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    (folder / "data_batch_1").write_bytes(first)
    for i in range(2, 6):
        (folder / f"data_batch_{i}").write_bytes(_valid_batch(i))
    (folder / "test_batch").write_bytes(_valid_batch(9))
    return folder, folder / "data_batch_1"


def _summary(spec: str, train: bool = True):
    ds = load_dataset(spec, train=train)
    return {"n": len(ds), "labels": ds.labels.tolist(), "shape": list(ds.images.shape),
            "finite": bool(torch.isfinite(ds.images).all()), "classes": ds.num_classes}


def _well_formed(n: int, classes: int = 10):
    def ok(v):
        return (v["n"] == n and v["shape"] == [n, 3, 32, 32] and v["finite"] and len(v["labels"]) == n
                and all(0 <= y < classes for y in v["labels"]))
    return ok


# --------------------------------------------------------------------------- crafted objects
class _Reduce:
    """Pickles as ``func(*args)`` (optionally with a BUILD ``state``), whatever func is."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _reconstruct_fn():
    return np.ndarray((0,), np.uint8).__reduce__()[0]


def _ndarray_ctor(shape, buffer, offset, strides):
    """numpy.ndarray(shape, dtype, buffer, offset, strides): a view of arbitrary memory."""
    return _Reduce(np.ndarray, (shape, np.dtype(np.uint8), buffer, offset, strides))


def _reconstruct_state(shape, raw, dtype="u1", fortran=False):
    return _Reduce(_reconstruct_fn(), (np.ndarray, (0,), b"b"), (1, shape, np.dtype(dtype), fortran, raw))


def _frombuffer(raw, shape, dtype="u1", order="C"):
    fb = np.zeros(1, np.uint8).__reduce_ex__(5)[0]
    return _Reduce(fb, (bytearray(raw), np.dtype(dtype), shape, order))


def _batch(data, labels=None, protocol=2, **extra) -> bytes:
    obj = {b"data": data, b"labels": [0] * N if labels is None else labels, **extra}
    return pickle.dumps(obj, protocol=protocol)


def _pad(blob: bytes, size: int = N * 3072 + 64) -> bytes:
    """Append unused bytes after the pickle's STOP so the file passes the size check and the
    payload itself is what the reader meets."""
    return blob + b"\0" * max(0, size - len(blob))


NDARRAY_PAYLOADS = {
    # the old reader's critical defect: a caller-chosen buffer offset reads the heap
    "ndarray negative offset": _ndarray_ctor((N, 3072), b"\x01" * 64, -(1 << 40), None),
    "ndarray huge offset": _ndarray_ctor((N, 3072), b"\x01" * 64, 1 << 40, None),
    "ndarray strides past buffer": _ndarray_ctor((N, 3072), b"\x01" * 64, 0, (1 << 30, 1 << 20)),
    "ndarray negative strides": _ndarray_ctor((N, 3072), b"\x01" * 7000, 6999, (-3072, -1)),
    # stride 0: 60,000 images from 3072 bytes (the old reader materialised them)
    "ndarray stride-0": _ndarray_ctor((60000, 3072), bytes(range(256)) * 12, 0, (0, 1)),
    "ndarray stride-0 official count": _ndarray_ctor((N, 3072), bytes(range(256)) * 12, 0, (0, 1)),
    # the same with 60,000 matching labels (120 KB): a 300 KB file that was worth 0.9 GB
    "ndarray stride-0 with labels": (_ndarray_ctor((60000, 3072), bytes(range(256)) * 12, 0, (0, 1)), [0] * 60000),
    "reconstruct short state": _reconstruct_state((60000, 3072), b"\x00" * 3072),
    "reconstruct long state": _reconstruct_state((N, 3072), b"\x00" * (N * 3072 + 5)),
    "reconstruct float dtype": _reconstruct_state((N, 768), b"\x00" * (N * 3072), "f4"),
    "reconstruct object data": _reconstruct_state((N, 3072), [None] * (N * 3072)),
    "reconstruct fortran": _reconstruct_state((N, 3072), b"\x00" * (N * 3072), "u1", True),
    "reconstruct 3-d": _reconstruct_state((N, 3072, 1), b"\x00" * (N * 3072)),
    "reconstruct negative dim": _reconstruct_state((-N, -3072), b"\x00" * (N * 3072)),
    "frombuffer huge shape": _frombuffer(b"\x00" * 3072, (1 << 40, 3072)),
    "frombuffer short": _frombuffer(b"\x00" * 3072, (N, 3072)),
    "frombuffer int16 data": _frombuffer(b"\x00" * (N * 3072 * 2), (N, 3072), "i2"),
}


@pytest.mark.parametrize("attack", sorted(NDARRAY_PAYLOADS))
def test_crafted_arrays_are_refused_without_reading_or_allocating(tmp_path, attack):
    payload = NDARRAY_PAYLOADS[attack]
    payload, labels = payload if isinstance(payload, tuple) else (payload, None)
    blob = _pad(_batch(payload, labels))
    folder, target = _py_folder(tmp_path, blob)
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, f"pickle: {attack}", target)
    assert out.kind == "error"
    # restricted_load on its own refuses them too
    out = isolated(restricted_load, target)
    check_outcome(out, f"pickle: {attack}", target)


def _touch(path):
    with open(path, "w") as fh:
        fh.write("pwned")


CODE_GLOBALS = [os.system, eval, exec, getattr, __import__, open, _touch, pickle.loads,
                np.load, np.frombuffer, np.lib.stride_tricks.as_strided, torch.load]


@pytest.mark.parametrize("func", CODE_GLOBALS, ids=lambda f: getattr(f, "__name__", str(f)))
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_code_payloads_never_run(tmp_path, func, protocol):
    marker = tmp_path / "pwned"
    arg = {os.system: f"touch {marker}", eval: f"open({str(marker)!r}, 'w')", exec: f"open({str(marker)!r}, 'w')",
           _touch: str(marker), open: str(marker)}.get(func, "x")
    blob = _pad(_batch(_Reduce(func, (arg,)), protocol=protocol))
    folder, target = _py_folder(tmp_path, blob)
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, "pickle: code global", target)
    assert "refusing to load global" in out.message
    assert not marker.exists()


@pytest.mark.parametrize("glob", ["numpy._core.multiarray\n_reconstruct", "numpy\nndarray", "numpy\ndtype",
                                  "_codecs\nencode", "numpy.core.numeric\n_frombuffer"])
@pytest.mark.parametrize("state", [b"}X\x08\x00\x00\x00__call__K\x01s", b"N}X\x04\x00\x00\x00attrK\x01s\x86"])
def test_allowed_globals_cannot_be_modified_by_build(tmp_path, glob, state):
    """BUILD on an allowed global (a dict state, or a slot state setting attributes) is refused
    and leaves the reader intact for the next file."""
    path = tmp_path / "p"
    path.write_bytes(b"\x80\x02c" + glob.encode() + b"\n" + state + b"b.")
    out = isolated(_build_then_valid, path, tmp_path / "valid")
    check_outcome(out, "pickle: BUILD on allowed global", path)
    (tmp_path / "valid").write_bytes(_valid_batch())
    _build_then_valid(tmp_path / "valid", None)  # in this process too: nothing was modified


def _build_then_valid(path, valid):
    if valid is None:
        assert len(restricted_load(path)[b"labels"]) == N
        return None
    try:
        restricted_load(path)
    finally:  # whatever happened, a valid file must still load in this process
        valid.write_bytes(_valid_batch())
        assert len(restricted_load(valid)[b"labels"]) == N


LABEL_ATTACKS = {
    "label 0.7": [0.7] + [0] * (N - 1),
    "label 2**70": [2**70] + [0] * (N - 1),
    "label -1": [-1] + [0] * (N - 1),
    "label 10": [10] + [0] * (N - 1),
    "label True": [True] + [0] * (N - 1),
    "label str": ["3"] + [0] * (N - 1),
    "label None": [None] + [0] * (N - 1),
    "too few labels": [0] * (N - 1),
    "too many labels": [0] * (N + 1),
    "labels as float array": np.zeros(N, np.float64),
    "labels as bytes": b"\x00" * N,
}


@pytest.mark.parametrize("attack", sorted(LABEL_ATTACKS))
def test_labels_are_refused_not_coerced(tmp_path, attack):
    data = np.zeros((N, 3072), np.uint8)
    try:
        blob = _batch(data, LABEL_ATTACKS[attack], protocol=4)
    except pickle.PicklingError:
        pytest.skip("cannot pickle")
    folder, target = _py_folder(tmp_path, _pad(blob))
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, f"labels: {attack}", target)
    assert out.kind == "error"


def test_cifar100_coarse_and_fine_labels_checked(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.zeros((N, 3072), np.uint8)
    for fine, coarse, ok in (([99, 0], [19, 0], True), ([100, 0], [0, 0], False), ([0, 0], [20, 0], False)):
        for name in ("train", "test"):
            (folder / name).write_bytes(pickle.dumps({b"data": data, b"fine_labels": fine,
                                                      b"coarse_labels": coarse}, protocol=2))
        out = isolated(_summary, f"cifar100:{folder}")
        check_outcome(out, "labels: cifar100 range", folder / "train", ok=_well_formed(N, 100))
        assert (out.kind == "ok") == ok


def test_deep_and_shared_nesting_is_bounded(tmp_path):
    path = tmp_path / "p"
    # 200,000 nested lists (a walk by recursion would overflow the stack)
    path.write_bytes(b"\x80\x02" + b"]" * 200000 + b"a" * 199999 + b".")
    check_outcome(isolated(restricted_load, path), "pickle: deep nesting", path)
    # shared references: 12 levels of 40 references to the level below = 40**12 nodes in 1 KB
    level = [b"x" * 10]
    for _ in range(12):
        level = [level] * 40
    path.write_bytes(pickle.dumps({b"data": level, b"labels": [0]}, protocol=2))
    out = isolated(restricted_load, path)
    check_outcome(out, "pickle: shared-reference explosion", path)
    assert out.kind == "error"


def _opcode_bomb(opcode: bytes, length_fmt: str, length: int) -> bytes:
    return b"\x80\x04" + opcode + struct.pack(length_fmt, length) + b"tiny"


@pytest.mark.parametrize("name, blob", [
    ("BINBYTES8 2**62", _opcode_bomb(b"\x8e", "<Q", 1 << 62)),
    ("BINUNICODE8 2**62", _opcode_bomb(b"\x8d", "<Q", 1 << 62)),
    ("BYTEARRAY8 2**62", b"\x80\x05" + b"\x96" + struct.pack("<Q", 1 << 62) + b"tiny"),
    ("BINBYTES 2**31", _opcode_bomb(b"B", "<I", (1 << 32) - 1)),
    ("LONG4 2**31", _opcode_bomb(b"\x8b", "<i", (1 << 31) - 1)),
    ("FRAME 2**62", b"\x80\x04\x95" + struct.pack("<Q", 1 << 62) + b"N."),
    ("huge memo index", b"\x80\x02" + b"j" + struct.pack("<I", (1 << 32) - 1) + b"."),
])
def test_declared_lengths_beyond_the_file_allocate_nothing(tmp_path, name, blob):
    path = tmp_path / "p"
    path.write_bytes(blob)
    out = isolated(restricted_load, path)
    check_outcome(out, "pickle: huge declared length", path)
    assert out.kind == "error" and out.extra_mb < 50


# --------------------------------------------------------------------------- mutations (hypothesis)
VALID = _valid_batch(1)


@HYPOTHESIS
@given(cut=st.integers(0, len(VALID) - 1))
def test_truncated_pickles(tmp_path_factory, cut):
    folder, target = _py_folder(tmp_path_factory.mktemp("t"), _pad(VALID[:cut]))
    check_outcome(isolated(_summary, f"cifar10:{folder}"), "pickle: truncated", target, ok=_well_formed(5 * N))


@HYPOTHESIS
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_byte_flipped_pickles(tmp_path_factory, flips):
    blob = bytearray(VALID)
    for pos, x in flips:
        blob[pos] ^= x
    folder, target = _py_folder(tmp_path_factory.mktemp("f"), bytes(blob))
    check_outcome(isolated(_summary, f"cifar10:{folder}"), "pickle: byte flips", target, ok=_well_formed(5 * N))


@HYPOTHESIS
@given(protocol=st.integers(0, 5), n=st.integers(0, 4), dtype=st.sampled_from(["u1", "i1", "u2", ">u2", "i8", "f4"]),
       width=st.sampled_from([3072, 3071, 1024, 0]), labels=st.lists(st.integers(-3, 12), max_size=5))
def test_structurally_varied_batches(tmp_path_factory, protocol, n, dtype, width, labels):
    data = np.zeros((n, width), dtype=dtype)
    blob = pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol)
    folder, target = _py_folder(tmp_path_factory.mktemp("v"), _pad(blob))
    valid = n == N and dtype == "u1" and width == 3072 and len(labels) == N and all(0 <= y < 10 for y in labels)
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, "pickle: varied structure", target, ok=_well_formed(5 * N))
    assert (out.kind == "ok") == valid


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_valid_batches_load_exactly_in_every_protocol(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    data = rng.integers(0, 256, (N, 3072), dtype=np.uint8)
    labels = [3, 9]
    folder, target = _py_folder(tmp_path, pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol))
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, "pickle: valid file", target, ok=_well_formed(5 * N))
    assert out.value["labels"][:N] == labels
    loaded = load_dataset(f"cifar10:{folder}", train=True)
    x = loaded.images[:N] * torch.tensor(loaded.std).view(1, 3, 1, 1) + torch.tensor(loaded.mean).view(1, 3, 1, 1)
    np.testing.assert_allclose(x.numpy() * 255, data.reshape(N, 3, 32, 32), atol=1e-3)


def test_python_file_sizes_are_bounded_by_the_record_count(tmp_path):
    # a file far larger than N images can need is refused before it is read
    folder, target = _py_folder(tmp_path, _valid_batch() + b"\0" * (N * 4096 + (2 << 20)))
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, "pickle: oversized file", target)
    assert "not a CIFAR python file" in out.message
    # and a file too small to hold N images
    folder, target = _py_folder(tmp_path, _valid_batch(n=1))
    check_outcome(isolated(_summary, f"cifar10:{folder}"), "pickle: undersized file", target)


# --------------------------------------------------------------------------- binary format
def _bin_folder(tmp_path, first: bytes, name="cifar10"):
    folder = tmp_path / ("bin10" if name == "cifar10" else "bin100")
    folder.mkdir(exist_ok=True)
    record = 3073 if name == "cifar10" else 3074
    names = ([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"] if name == "cifar10"
             else ["train.bin", "test.bin"])
    for f in names:
        (folder / f).write_bytes(b"\0" * (record * N))
    (folder / names[0]).write_bytes(first)
    return folder, folder / names[0]


@HYPOTHESIS
@given(size=st.integers(0, 4 * 3074), label=st.integers(0, 255), coarse=st.integers(0, 255),
       name=st.sampled_from(["cifar10", "cifar100"]))
def test_binary_files_need_the_exact_size_and_labels_in_range(tmp_path_factory, size, label, coarse, name):
    record = 3073 if name == "cifar10" else 3074
    raw = bytearray(size)
    if size:
        raw[record - 3073] = label
        if name == "cifar100":
            raw[0] = coarse
    folder, target = _bin_folder(tmp_path_factory.mktemp("b"), bytes(raw), name)
    classes = 10 if name == "cifar10" else 100
    valid = size == N * record and label < classes and (name == "cifar10" or coarse < 20)
    out = isolated(_summary, f"{name}:{folder}")
    check_outcome(out, "binary: size and labels", target, ok=_well_formed(5 * N if name == "cifar10" else N, classes))
    assert (out.kind == "ok") == valid


def test_memory_bound_is_generous_for_valid_files(tmp_path):
    folder, target = _py_folder(tmp_path, _valid_batch())
    out = isolated(_summary, f"cifar10:{folder}")
    check_outcome(out, "pickle: valid file", target, ok=_well_formed(5 * N))
    assert out.extra_mb < MEMORY_BOUND_MB
