"""Hostile checkpoints and mismatched resumes.

Files: truncated and byte-flipped checkpoints, code payloads (``os.system``, ``eval``), the legacy
pickle format, compressed members and zip bombs, tensors viewing outside their storage or with
stride 0 and a huge shape, declared storage sizes beyond the file, malformed structure. Each load
runs in a forked child (tests/test_hostile_support.py): a one-line ``FileFormatError`` naming the
file and never advising ``weights_only=False``, or a correct load; never a crash; bounded memory.

Resumes: ``n2ngraph train --resume`` with another graph, the dense graph, other data, another
model factory argument or initialisation is refused with one line naming what differs, exit code
2, and nothing in the output folder (log, cli.json, checkpoint) changes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_hostile_support import check_outcome, isolated, zip_members, zip_of
from torch import nn
from torch.nn.utils import prune

from n2ngraph.data import load_dataset
from n2ngraph.training import CHECKPOINT_NAME, TrainConfig, check_resume, train

HYPOTHESIS = settings(max_examples=int(os.environ.get("N2NGRAPH_HOSTILE_EXAMPLES", 25)), deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SPEC = "synthetic:n=48,classes=3,shape=1x4x4,noise=0.5"
CONFIG = dict(epochs=1, batch_size=16, device="cpu", progress=False, amp="off")


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    prune.custom_from_mask(m[1], "weight", torch.rand(8, 16, generator=torch.Generator().manual_seed(1)) < 0.5)
    return m


@lru_cache(maxsize=1)
def _datasets():
    return load_dataset(SPEC, train=True), load_dataset(SPEC, train=False)


@lru_cache(maxsize=1)
def _base() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        train(_model(), *_datasets(), TrainConfig(**CONFIG), out_dir=tmp, seed=0)
        return (Path(tmp) / CHECKPOINT_NAME).read_bytes()


def _resumable(folder):
    """Load the checkpoint in ``folder`` and check it against the model and data it was made
    from: 'resumable' (JSON) when it passes."""
    state = check_resume(_model(), *_datasets(), TrainConfig(**CONFIG), out_dir=folder, resume=True, seed=0)
    return "resumable" if state is not None else "fresh"


def _write(tmp_path, blob: bytes) -> Path:
    folder = tmp_path / "run"
    folder.mkdir(exist_ok=True)
    (folder / CHECKPOINT_NAME).write_bytes(blob)
    return folder


def _check(tmp_path, blob, attack, ok=lambda v: v == "resumable"):
    folder = _write(tmp_path, blob)
    out = isolated(_resumable, folder)
    # a refusal is a FileFormatError (unreadable or malformed) or the resume check's ValueError
    # (the file is readable but made from another run): one line naming the file either way
    check_outcome(out, attack, folder / CHECKPOINT_NAME, ok=ok, error_types=("FileFormatError", "ValueError"))
    return out


def test_base_checkpoint_is_resumable(tmp_path):
    assert _check(tmp_path, _base(), "checkpoint: valid file").kind == "ok"


# --------------------------------------------------------------------------- mutations (hypothesis)
@HYPOTHESIS
@given(cut=st.integers(0, 10**9))
def test_truncated_checkpoints(tmp_path_factory, cut):
    blob = _base()
    _check(tmp_path_factory.mktemp("t"), blob[:cut % len(blob)], "checkpoint: truncated")


@HYPOTHESIS
@given(flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=6))
def test_byte_flipped_checkpoints(tmp_path_factory, flips):
    blob = bytearray(_base())
    for pos, x in flips:
        blob[pos % len(blob)] ^= x
    # a flip inside a tensor's bytes changes a weight: the file still loads (a correct load of
    # what it holds), which is the documented limit of a checkpoint without checksums
    _check(tmp_path_factory.mktemp("f"), bytes(blob), "checkpoint: byte flips")


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _state():
    return torch.load(io.BytesIO(_base()), weights_only=True)


HOSTILE = st.sampled_from([None, -1, 2**70, 1.5, float("nan"), "x", [], {}, [1] * 5, {"a": torch.zeros(3)},
                           torch.zeros(10**6).expand(10**9, 10**6)[0], torch.zeros(2, 2), (1, 2), True])


@HYPOTHESIS
@given(key=st.sampled_from(["format", "format_version", "epoch", "seed", "config", "identity", "model",
                            "optimizer", "scheduler", "scaler", "rng", "log", "extra"]), value=HOSTILE)
@example(key="format_version", value=torch.zeros(2, 2))  # found by hypothesis: a tensor in a comparison
@example(key="config", value={"lr": torch.zeros(2, 2)})
def test_rewritten_checkpoint_entries(tmp_path_factory, key, value):
    state = _state()
    original = state.get(key)
    state[key] = value
    same = key != "extra" and type(value) is type(original) and repr(value) == repr(original)
    _check(tmp_path_factory.mktemp("r"), _saved(state), "checkpoint: rewritten entry",
           ok=lambda v: v == "resumable" and (same or key == "extra"))


@HYPOTHESIS
@given(path=st.sampled_from([("config", "lr"), ("identity", "data"), ("model", "1.weight_orig"),
                             ("model", "1.weight_mask"), ("optimizer", "param_groups"), ("optimizer", "state"),
                             ("scheduler", "base_lrs"), ("scheduler", "last_epoch"), ("rng", "torch"),
                             ("log", 0)]), value=HOSTILE)
def test_rewritten_nested_entries(tmp_path_factory, path, value):
    state = _state()
    state[path[0]][path[1]] = value
    _check(tmp_path_factory.mktemp("n"), _saved(state), "checkpoint: rewritten nested entry", ok=lambda v: False)


# --------------------------------------------------------------------------- crafted files
class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payload(tmp_path, func, arg):
    state = _state()
    state["config"] = _Reduce(func, (arg,))
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.mark.parametrize("func", [os.system, eval, exec, getattr, open], ids=lambda f: f.__name__)
def test_code_payloads_never_run_and_the_message_gives_no_unsafe_advice(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')" if func in (eval, exec) \
        else str(marker)
    out = _check(tmp_path, _payload(tmp_path, func, arg), "checkpoint: code global")
    assert out.kind == "error" and "refused" in out.message
    assert "weights_only" not in out.message.lower()
    assert not marker.exists() or func is open  # open(marker) in read mode creates nothing


def test_plain_pickle_and_legacy_torch_format_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Reduce(os.system, (f"touch {marker}",)))
    out = _check(tmp_path, blob, "checkpoint: plain pickle")
    assert out.kind == "error" and "not a readable zip" in out.message
    buf = io.BytesIO()
    torch.save(_state(), buf, _use_new_zipfile_serialization=False)
    out = _check(tmp_path, buf.getvalue(), "checkpoint: legacy torch format")
    assert out.kind == "error" and not marker.exists()


def test_compressed_members_and_zip_bombs_are_refused_before_reading(tmp_path):
    members = zip_members(_base())
    out = _check(tmp_path, zip_of(members, zipfile.ZIP_DEFLATED), "checkpoint: compressed members")
    assert out.kind == "error" and "compressed" in out.message
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_STORED) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
        info = zipfile.ZipInfo("archive/bomb")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = bytes(4 << 20)
            for _ in range(75):  # 300 MB of zeros in ~0.3 MB
                fh.write(chunk)
    out = _check(tmp_path, bomb.getvalue(), "checkpoint: zip bomb member")
    assert out.kind == "error" and out.extra_mb < 100


class _Storage:
    pass


_STORAGE = _Storage()


class _TensorView:
    def __init__(self, offset, size, stride):
        self.args = (offset, size, stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_STORAGE, *self.args, False, collections.OrderedDict()))


def _crafted_view(offset, size, stride, numel=4) -> bytes:
    """A torch archive holding ``{"model": {"1.weight_orig": view}}`` where the view of a 4-float
    storage has the ``offset``, ``size`` and ``stride`` the file chooses (and the storage
    declares ``numel`` elements)."""
    members = zip_members(_saved({"x": torch.arange(4.0)}))
    prefix = next(iter(members)).split("/")[0]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if obj is _STORAGE else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"model": {"1.weight_orig": _TensorView(offset, size, stride)}})
    members[f"{prefix}/data.pkl"] = buf.getvalue()
    return zip_of(members)


@pytest.mark.parametrize("attack, args", [
    ("negative storage offset", (-(1 << 20), (8, 16), (16, 1))),
    ("offset past the storage", (1 << 40, (8, 16), (16, 1))),
    ("strides past the storage", (0, (8, 16), (1 << 30, 1))),
    ("negative strides", (3, (4,), (-1,))),
    ("stride 0, huge shape", (0, (10**6, 10**6), (0, 0))),
    ("declared storage beyond the file", (0, (8, 16), (16, 1), 10**12)),
])
def test_tensor_views_chosen_by_the_file(tmp_path, attack, args):
    out = _check(tmp_path, _crafted_view(*args), f"checkpoint: tensor view, {attack}")
    assert out.kind == "error" and out.extra_mb < 100


@pytest.mark.parametrize("shape", [(8, 16), (10**6, 10**6)])
def test_stride_0_tensors_in_a_real_checkpoint(tmp_path, shape):
    """A weight saved as a stride-0 view: the model's shape loads (all its entries are one
    value, as the file says); any other shape is refused without materialising it."""
    state = _state()
    state["model"]["1.weight_orig"] = torch.zeros(1).expand(*shape)
    out = _check(tmp_path, _saved(state), "checkpoint: stride-0 weight")
    assert (out.kind == "ok") == (shape == (8, 16)) and out.extra_mb < 100


def test_old_checkpoints_without_identity_are_refused(tmp_path):
    state = _state()
    for key in ("format", "format_version", "identity"):
        del state[key]
    out = _check(tmp_path, _saved(state), "checkpoint: no identity record (older format)")
    assert out.kind == "error" and "older n2ngraph" in out.message


def test_deep_and_shared_nesting_is_bounded(tmp_path):
    import sys

    state = _state()
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    state["config"] = {"deep": deep}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch.save pickles by recursion
    try:
        blob = _saved(state)
    finally:
        sys.setrecursionlimit(limit)
    _check(tmp_path, blob, "checkpoint: deep nesting", ok=lambda v: False)
    level: list = [0.5]
    for _ in range(10):
        level = [level] * 30
    state["config"] = {"shared": level}
    _check(tmp_path, _saved(state), "checkpoint: shared-reference explosion", ok=lambda v: False)


# --------------------------------------------------------------------------- resumes through the CLI
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """Graphs A and B (random masks, seeds 0 and 1) and the dense graph of paper_mlp(16 -> 3), and
    a one-epoch ``n2ngraph train`` run on A."""
    from n2ngraph import cli
    from n2ngraph.io import save_graph
    from n2ngraph.models import build_model
    from n2ngraph.trace import to_graph

    root = tmp_path_factory.mktemp("cli")
    reference = build_model("paper_mlp", seed=0, num_classes=3, in_features=16)
    graphs = {}
    for name, seed in (("a", 0), ("b", 1), ("dense", None)):
        masks = None
        if seed is not None:
            g = torch.Generator().manual_seed(seed)
            masks = {f"{n}.weight": torch.rand(m.weight.shape, generator=g) < 0.3
                     for n, m in reference.named_modules() if isinstance(m, nn.Linear)}
        graphs[name] = save_graph(to_graph(reference, masks), root / f"{name}.npz")
    out = root / "run"
    argv = _argv(graphs["a"], out)
    assert cli.main(argv) == 0
    return graphs, out, argv


def _argv(graph, out, *extra):
    return ["train", "--graph", str(graph), "--model", "paper_mlp", "--data", SPEC, "--epochs", "1", "--out", str(out),
            "--device", "cpu", "--no-progress", "--batch-size", "16", *extra]


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _replace(argv, flag, value):
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


@pytest.mark.parametrize("case, change, words", [
    ("another graph", lambda a, g: _replace(a, "--graph", str(g["b"])), ["graph", "masks"]),
    ("the dense graph", lambda a, g: _replace(a, "--graph", str(g["dense"])), ["graph", "masks"]),
    ("other data", lambda a, g: _replace(a, "--data", SPEC + ",seed=1"), ["data"]),
    ("other data, same size", lambda a, g: _replace(a, "--data", SPEC.replace("noise=0.5", "noise=0.6")), ["data"]),
    ("sparse init", lambda a, g: a + ["--init", "sparse"], ["factory"]),
    ("model kwargs", lambda a, g: a + ["--model-kwargs", '{"in_features": 16}'], ["factory"]),
    ("another learning rate", lambda a, g: a + ["--lr", "0.1"], ["lr: checkpoint 0.05 vs now 0.1"]),
    ("another seed", lambda a, g: a + ["--seed", "3"], ["seed"]),
])
def test_resume_refuses_a_different_run_and_writes_nothing(cli_run, capsys, case, change, words):
    from n2ngraph import cli

    graphs, out, argv = cli_run
    before = _files(out)
    new = change(_replace(argv, "--epochs", "2"), graphs) + ["--resume"]
    capsys.readouterr()
    code = cli.main(new)
    err = capsys.readouterr().err.strip()
    assert code == 2, (case, err)
    assert len(err.splitlines()) == 1 and err.startswith("n2ngraph train: error:"), err
    for word in words:
        assert word in err, (case, err)
    assert _files(out) == before, f"{case}: the output folder changed"
    from test_hostile_support import Tally

    Tally.add(f"resume: {case}", "clear error")


def test_resume_with_the_same_inputs_continues(cli_run, tmp_path, capsys):
    import shutil

    import pandas as pd

    from n2ngraph import cli

    graphs, out, argv = cli_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert cli.main(_replace(_replace(argv, "--epochs", "2"), "--out", str(copy)) + ["--resume"]) == 0
    assert pd.read_csv(copy / "log.csv")["epoch"].tolist() == [1, 2]
    # the same graph saved again (another file, same topology) is the same graph
    again = tmp_path / "again.npz"
    again.write_bytes(Path(graphs["a"]).read_bytes())
    assert cli.main(_replace(_replace(_replace(argv, "--epochs", "3"), "--out", str(copy)), "--graph", str(again))
                    + ["--resume"]) == 0


@pytest.mark.parametrize("what", ["checkpoint", "graph"])
def test_cli_reports_bad_files_in_one_line(cli_run, tmp_path, capsys, what):
    import shutil

    from n2ngraph import cli

    graphs, out, argv = cli_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = _replace(argv, "--out", str(copy)) + ["--resume"]
    if what == "checkpoint":
        bad = copy / CHECKPOINT_NAME
        bad.write_bytes(bad.read_bytes()[:1000])
    else:
        bad = tmp_path / "bad.npz"
        bad.write_bytes(Path(graphs["a"]).read_bytes()[:-50])
        argv = _replace(argv, "--graph", str(bad))
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err, err
    assert "Traceback" not in err


def test_cli_reports_a_bad_dataset_file_in_one_line(tmp_path, capsys, monkeypatch):
    from n2ngraph import cli
    from n2ngraph import data as data_module
    from n2ngraph.io import save_graph
    from n2ngraph.models import build_model
    from n2ngraph.trace import to_graph

    monkeypatch.setattr(data_module, "_CIFAR_RECORDS", {"cifar10": {"train": 2, "test": 2},
                                                         "cifar100": {"train": 2, "test": 2}})
    graph = save_graph(to_graph(build_model("paper_mlp", seed=0)), tmp_path / "g.npz")
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": torch.zeros(2, 3072, dtype=torch.uint8).numpy(),
                                                  b"labels": [0.7, 1]}, protocol=2))
    argv = ["train", "--graph", str(graph), "--model", "paper_mlp", "--data", f"cifar10:{folder}", "--epochs", "1",
            "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data_batch_1" in err and "0.7" in err, err
    assert not (tmp_path / "o").exists()
