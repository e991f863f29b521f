"""Tests of n2ngraph.training (the loop, masks, resume) and n2ngraph.cli_train."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from n2ngraph import cli_train
from n2ngraph.cli import main
from n2ngraph.data import load_dataset
from n2ngraph.training import (
    AMP_MODES,
    CHECKPOINT_NAME,
    LOG_COLUMNS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
    evaluate,
    load_checkpoint,
    resolve_device,
    train,
)

CPU = {"device": "cpu", "progress": False, "amp": "off"}
SYNTH = "synthetic:n=160,classes=4,shape=1x4x4,noise=0.5"


def _mlp(seed=0, dropout=0.0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(dropout), nn.Linear(12, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def _masks(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {1: torch.rand(12, 16, generator=g) < 0.3, 4: torch.rand(4, 12, generator=g) < 0.5}


def _pruned_mlp(seed=0, dropout=0.0):
    model = _mlp(seed, dropout)
    for idx, mask in _masks(seed).items():
        prune.custom_from_mask(model[idx], "weight", mask)
    return model


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def _effective(module):
    """The weight the next forward pass uses (prune's ``.weight`` is refreshed only in forward)."""
    if hasattr(module, "weight_orig"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _parametrized_mlp(seed=0):
    model = _mlp(seed)
    for idx, mask in _masks(seed).items():
        parametrize.register_parametrization(model[idx], "weight", _Mask(mask.float()))
    return model


# --------------------------------------------------------------------------- masks survive training
@pytest.mark.parametrize("build", [_pruned_mlp, _parametrized_mlp], ids=["prune", "parametrize"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("clip", [None, 0.1])
def test_masked_weights_stay_exactly_zero(tmp_path, build, optimizer, clip):
    """20 steps (160 samples / batch 8) with weight decay; kept weights move, pruned stay 0."""
    model = build()
    masks = _masks()
    before = {i: _effective(model[i]).clone() for i in masks}
    params_before = [id(p) for p in model.parameters()]
    train_set = load_dataset(SYNTH, train=True)
    config = TrainConfig(epochs=1, batch_size=8, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.01,
                         weight_decay=5e-2, grad_clip=clip, **CPU)
    log = train(model, train_set, None, config, out_dir=tmp_path)
    assert len(log) == 1
    assert [id(p) for p in model.parameters()] == params_before  # same parameter objects
    for i, mask in masks.items():
        w = _effective(model[i])
        assert torch.count_nonzero(w[~mask]) == 0
        assert (w[mask] != before[i][mask]).all()  # every kept weight was trained
    # the checkpoint carries the masks and loads into a fresh masked model
    fresh = build(seed=5)  # other weights and other masks
    fresh.load_state_dict(load_checkpoint(tmp_path / CHECKPOINT_NAME)["model"])
    for i in masks:
        assert torch.equal(_effective(fresh[i]), _effective(model[i]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_masks_survive_amp_on_cuda(tmp_path, amp):
    model = _pruned_mlp()
    config = TrainConfig(epochs=1, batch_size=8, amp=amp, device="cuda", progress=False, grad_clip=1.0)
    log = train(model, load_dataset(SYNTH, train=True), None, config, out_dir=tmp_path)
    assert np.isfinite(log["train_loss"]).all()
    for i, mask in _masks().items():
        assert torch.count_nonzero(_effective(model[i]).cpu()[~mask]) == 0


# --------------------------------------------------------------------------- resume bit for bit
class _Interrupt(Exception):
    pass


class _KillAfter(nn.Module):
    """Wraps a model and raises after ``calls`` forward passes (a simulated kill)."""

    def __init__(self, inner, calls):
        super().__init__()
        self.inner = inner
        self.calls = calls

    def forward(self, x):
        if self.calls == 0:
            raise _Interrupt
        self.calls -= 1
        return self.inner(x)


def _resume_setup():
    spec = "synthetic:n=160,classes=4,shape=1x6x6,noise=0.5"
    train_set = load_dataset(spec, train=True, augment=True)  # crop + flip, seeded
    test_set = load_dataset(spec, train=False)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, lr_step=1, grad_clip=5.0, **CPU)

    def model(seed=0):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Flatten(), nn.Linear(36, 20), nn.ReLU(), nn.Dropout(0.3), nn.Linear(20, 4))
        prune.custom_from_mask(m[1], "weight", torch.rand(20, 36, generator=torch.Generator().manual_seed(1)) < 0.4)
        return m

    return train_set, test_set, config, model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, optimizer):
    train_set, test_set, config, model = _resume_setup()
    config.optimizer = optimizer
    full = model()
    log_full = train(full, train_set, test_set, config, out_dir=tmp_path / "full", seed=7)

    # killed in the middle of epoch 2 (10 batches per epoch, train + test passes count)
    killed = _KillAfter(model(), calls=10 + 1 + 4)
    with pytest.raises(_Interrupt):
        train(killed, train_set, test_set, config, out_dir=tmp_path / "cut", seed=7)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["epoch"] == 1
    assert len(pd.read_csv(tmp_path / "cut" / "log.csv")) == 1

    resumed = _KillAfter(model(seed=99), calls=-1)  # a fresh, differently initialised model
    log_resumed = train(resumed, train_set, test_set, config, out_dir=tmp_path / "cut", resume=True, seed=7)

    for (name, a), (name_b, b) in zip(full.state_dict().items(), resumed.inner.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
    cols = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]
    pd.testing.assert_frame_equal(log_full[cols], log_resumed[cols], check_exact=True)
    assert log_full["lr"].tolist() == [0.05, 0.025, 0.0125]
    # the optimizer state matches too (momentum / Adam moments)
    opt_a = load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)["optimizer"]["state"]
    opt_b = load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["optimizer"]["state"]
    for k in opt_a:
        for key, value in opt_a[k].items():
            assert torch.equal(value, opt_b[k][key])


def test_seeds_reproduce_and_differ_and_leave_global_rng_alone(tmp_path):
    train_set, test_set, config, model = _resume_setup()
    config.epochs = 1
    state = torch.get_rng_state()
    a, b, c = model(), model(), model()
    torch.set_rng_state(state)
    train(a, train_set, test_set, config, out_dir=tmp_path / "a", seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # no global seeding side effects
    train(b, train_set, test_set, config, out_dir=tmp_path / "b", seed=1)
    train(c, train_set, test_set, config, out_dir=tmp_path / "c", seed=2)
    assert torch.equal(_effective(a[1]), _effective(b[1]))
    assert not torch.equal(_effective(a[1]), _effective(c[1]))


def test_resume_refuses_changed_settings_and_extends_epochs(tmp_path):
    train_set, test_set, config, model = _resume_setup()
    config.epochs = 1
    m = model()
    train(m, train_set, test_set, config, out_dir=tmp_path, seed=0)
    with pytest.raises(ValueError, match="exists; pass resume=True to continue that run, or choose another out_dir"):
        train(model(), train_set, test_set, config, out_dir=tmp_path, seed=0)
    with pytest.raises(ValueError, match="lr: checkpoint 0.05 vs now 0.1"):
        train(model(), train_set, test_set, TrainConfig(**{**config.__dict__, "lr": 0.1}), out_dir=tmp_path,
              resume=True)
    with pytest.raises(ValueError, match="seed"):
        train(model(), train_set, test_set, config, out_dir=tmp_path, resume=True, seed=3)
    # a finished run resumed with the same epochs trains nothing; more epochs continue it
    again = model()
    log = train(again, train_set, test_set, config, out_dir=tmp_path, resume=True)
    assert len(log) == 1 and torch.equal(_effective(again[1]), _effective(m[1]))
    config.epochs = 2
    log = train(again, train_set, test_set, config, out_dir=tmp_path, resume=True)
    assert log["epoch"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="masks, model differ"):
        train(_mlp(), train_set, test_set, TrainConfig(**{**config.__dict__, "epochs": 3}), out_dir=tmp_path,
              resume=True)


def test_resume_without_checkpoint_starts_afresh(tmp_path):
    train_set, test_set, config, model = _resume_setup()
    config.epochs = 1
    a, b = model(), model()
    train(a, train_set, test_set, config, out_dir=tmp_path / "a", resume=True)
    train(b, train_set, test_set, config, out_dir=tmp_path / "b")
    assert torch.equal(_effective(a[1]), _effective(b[1]))


# --------------------------------------------------------------------------- what the loop computes
def test_log_csv_checkpoint_and_config_files(tmp_path):
    train_set, test_set, config, model = _resume_setup()
    config.epochs = 2
    m = model()
    log = train(m, train_set, test_set, config, out_dir=tmp_path, seed=0)
    assert tuple(log.columns) == LOG_COLUMNS
    on_disk = pd.read_csv(tmp_path / "log.csv")
    pd.testing.assert_frame_equal(on_disk, log, check_dtype=False)
    assert (log["images_per_s"] > 0).all() and (log["seconds"] > 0).all()
    assert log[["train_acc", "test_acc"]].apply(lambda s: s.between(0, 1)).all().all()
    # the test columns are what evaluate() gives for the final model
    final = evaluate(m, test_set, device="cpu")
    assert final["loss"] == pytest.approx(log["test_loss"].iloc[-1], rel=1e-6)
    assert final["acc"] == log["test_acc"].iloc[-1]
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)  # no unpickling needed
    assert ckpt["epoch"] == 2 and ckpt["rng"]["torch"].dtype == torch.uint8
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 0.05
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_training_learns_digits(tmp_path):
    train_set, test_set = load_dataset("digits", train=True), load_dataset("digits", train=False)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    config = TrainConfig(epochs=3, batch_size=64, lr=0.05, **CPU)
    before = evaluate(model, test_set, device="cpu")["acc"]
    log = train(model, train_set, test_set, config, out_dir=tmp_path, seed=0)
    assert before < 0.3 and log["test_acc"].iloc[-1] > 0.9
    assert log["train_loss"].is_monotonic_decreasing


def test_grad_clip_bounds_the_step(tmp_path):
    """One plain SGD step (no momentum/decay): ||delta w|| == lr * clip when the gradient is larger."""
    train_set = load_dataset("synthetic:n=32,classes=4,shape=1x4x4", train=True)
    model = _mlp()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    config = TrainConfig(epochs=1, batch_size=32, lr=0.5, momentum=0.0, weight_decay=0.0, grad_clip=1e-3, **CPU)
    train(model, train_set, None, config, out_dir=tmp_path)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.5 * 1e-3, rel=1e-4)


def test_step_schedule_halves_every_lr_step(tmp_path):
    train_set = load_dataset("synthetic:n=8,classes=2,shape=1x4x4", train=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    log = train(model, train_set, None, TrainConfig(epochs=5, lr_step=2, **CPU), out_dir=tmp_path)
    assert log["lr"].tolist() == [0.05, 0.05, 0.025, 0.025, 0.0125]
    assert log["test_acc"].isna().all()


def test_generic_dataset_goes_through_dataloader(tmp_path):
    base = load_dataset("synthetic:n=40,classes=4,shape=1x4x4", train=True)

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            return base.images[i], base.labels[i]

    a, b = _mlp(), _mlp()
    config = TrainConfig(epochs=2, batch_size=8, **CPU)
    train(a, Plain(), Plain(), config, out_dir=tmp_path / "a", seed=3)
    train(b, Plain(), Plain(), config, out_dir=tmp_path / "b", seed=3)
    assert torch.equal(a[1].weight, b[1].weight)


def test_config_validation_lists_valid_names():
    with pytest.raises(ValueError, match="adamw"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="cosine"):
        TrainConfig(schedule="poly")
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig(amp="int8")
    with pytest.raises(ValueError):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError):
        TrainConfig(grad_clip=0.0)
    with pytest.raises(TypeError):
        TrainConfig(epochs=1.5)
    c = TrainConfig()
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs, c.lr_step, c.lr_gamma) == (
        "sgd", 0.05, 0.9, 5e-4, 128, 300, 30, 0.5)


def test_resolve_device(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="needs a CUDA"):
            train(_mlp(), load_dataset("synthetic:n=8", train=True), None,
                  TrainConfig(epochs=1, amp="fp16", device="cpu", progress=False), out_dir=tmp_path / "unused")
        assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------- CLI
def _parse(argv):
    return cli_train.add_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_cli_reads_defaults_and_choices_from_train_config():
    """One home for the hyperparameters: the parser's defaults are TrainConfig's, its choices the
    registries' (nothing retyped), and every option maps onto the field of the same name."""
    args = _parse(["--graph", "g.npz", "--model", "vgg19", "--data", "digits", "--out", "o"])
    assert cli_train._train_config(args) == TrainConfig()
    parser = cli_train.add_arguments(argparse.ArgumentParser())
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices["optimizer"] == tuple(sorted(OPTIMIZERS))
    assert choices["schedule"] == tuple(sorted(SCHEDULES))
    assert choices["amp"] == AMP_MODES
    changed = _parse(["--graph", "g", "--model", "m", "--data", "d", "--out", "o", "--epochs", "3", "--lr", "0.1",
                      "--optimizer", "adam", "--momentum", "0.5", "--weight-decay", "0", "--schedule", "cosine",
                      "--lr-step", "7", "--lr-gamma", "0.2", "--grad-clip", "1.5", "--amp", "off", "--device",
                      "cpu", "--batch-size", "16", "--compile", "--no-progress"])
    assert cli_train._train_config(changed) == TrainConfig(
        epochs=3, lr=0.1, optimizer="adam", momentum=0.5, weight_decay=0.0, schedule="cosine", lr_step=7,
        lr_gamma=0.2, grad_clip=1.5, amp="off", device="cpu", batch_size=16, compile=True, progress=False)


def test_cli_parses_the_documented_command():
    args = _parse(["--graph", "g.npz", "--model", "vgg19", "--data", "cifar10:/x", "--epochs", "3",
                   "--out", "o", "--resume", "--init", "sparse", "--device", "cpu", "--batch-size", "64",
                   "--lr", "0.1", "--seed", "2"])
    assert (args.graph, args.model, args.epochs, args.resume, args.init, args.batch_size, args.lr, args.seed) == (
        "g.npz", "vgg19", 3, True, "sparse", 64, 0.1, 2)


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--data", "imagenet:/x"], "unknown dataset 'imagenet'"),
    (["--graph", "missing.npz"], "does not exist"),
    (["--model", "os.path:nothing_here"], "cannot import model factory"),
    (["--model-kwargs", "{bad"], "not valid JSON"),
])
def test_cli_user_errors_give_one_line_and_code_2(tmp_path, capsys, argv, message):
    graph = tmp_path / "g.npz"
    graph.write_bytes(b"")
    base = {"--graph": str(graph), "--model": "paper_mlp", "--data": "digits", "--out": str(tmp_path / "o")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    assert main(["train", *[x for kv in base.items() for x in kv], "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("n2ngraph train: error:")


def test_cli_trains_a_graph_variant_end_to_end(tmp_path, capsys):
    """digits + paper_mlp(64 inputs) pruned at random to 20%, traced, saved, trained 2 epochs."""
    pytest.importorskip("n2ngraph.bridge")
    from n2ngraph.io import save_graph
    from n2ngraph.models import build_model
    from n2ngraph.trace import to_graph

    reference = build_model("paper_mlp", seed=0, num_classes=10, in_features=64)
    g = torch.Generator().manual_seed(0)
    masks = {name: torch.rand(m.weight.shape, generator=g) < 0.2
             for name, m in [(f"{n}.weight", m) for n, m in reference.named_modules() if isinstance(m, nn.Linear)]}
    save_graph(to_graph(reference, masks), tmp_path / "g.npz")
    argv = ["--graph", str(tmp_path / "g.npz"), "--model", "paper_mlp", "--data", "digits", "--epochs", "1",
            "--out", str(tmp_path / "run"), "--device", "cpu", "--batch-size", "64", "--no-progress",
            "--init", "sparse"]
    assert main(["train", *argv]) == 0, capsys.readouterr().err
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert len(log) == 1 and log["test_acc"].iloc[-1] > 0.3
    state = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["model"]
    assert json.loads((tmp_path / "run" / "cli.json").read_text())["init"] == "sparse"
    # the trained weights load into a fresh to_model of the graph and keep its masks
    from n2ngraph.bridge import to_model
    from n2ngraph.io import load_graph
    from n2ngraph.masks import masks_of, prunable_weights

    fresh = to_model(load_graph(tmp_path / "g.npz"), build_model("paper_mlp", seed=0, in_features=64))
    fresh.load_state_dict(state)
    fresh(torch.zeros(1, 1, 8, 8))  # refresh weights that prune computes in a forward pre-hook
    found = masks_of(fresh)
    assert set(masks) <= set(found)
    for name, mask in found.items():
        weight = prunable_weights(fresh)[name].weight.detach()
        assert torch.count_nonzero(weight[~mask]) == 0 and torch.count_nonzero(weight[mask]) > 0
    for name, mask in masks.items():
        assert torch.equal(found[name], mask)
    # resuming a finished run with more epochs continues it
    argv[argv.index("--epochs") + 1] = "2"
    assert main(["train", *argv, "--resume"]) == 0
    assert pd.read_csv(tmp_path / "run" / "log.csv")["epoch"].tolist() == [1, 2]
    assert main(["train", *argv]) == 2  # an existing run without --resume is refused
    assert "exists; pass --resume" in capsys.readouterr().err  # the command's words


def test_resume_refuses_other_data_masks_or_identity_and_writes_nothing(tmp_path):
    train_set, test_set, config, model = _resume_setup()
    config.epochs = 1
    train(model(), train_set, test_set, config, out_dir=tmp_path, seed=0, identity={"graph": "abc"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    config.epochs = 2
    other = load_dataset("synthetic:n=160,classes=4,shape=1x6x6,noise=0.5,seed=1", train=True, augment=True)
    with pytest.raises(ValueError, match=r"checkpoint.pt: this run's data differ"):
        train(model(), other, test_set, config, out_dir=tmp_path, resume=True, identity={"graph": "abc"})
    plain = load_dataset("synthetic:n=160,classes=4,shape=1x6x6,noise=0.5", train=True, augment=False)
    with pytest.raises(ValueError, match="data differ"):  # augmentation on/off changes the run
        train(model(), plain, test_set, config, out_dir=tmp_path, resume=True, identity={"graph": "abc"})
    flipped = model()
    with torch.no_grad():
        flipped[1].weight_mask[0, 0] = 1 - flipped[1].weight_mask[0, 0]
    with pytest.raises(ValueError, match="masks differ"):
        train(flipped, train_set, test_set, config, out_dir=tmp_path, resume=True, identity={"graph": "abc"})
    for identity in (None, {"graph": "abd"}, {"graph": "abc", "factory": {"init": "sparse"}}):
        with pytest.raises(ValueError, match="differ from the checkpoint's"):
            train(model(), train_set, test_set, config, out_dir=tmp_path, resume=True, identity=identity)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    log = train(model(), train_set, test_set, config, out_dir=tmp_path, resume=True, identity={"graph": "abc"})
    assert log["epoch"].tolist() == [1, 2]
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert set(state["identity"]) == {"model", "masks", "data", "graph"}


def test_load_checkpoint_errors_name_the_file(tmp_path):
    from n2ngraph.io import FileFormatError

    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(FileFormatError, match="bad.pt"):
        load_checkpoint(bad)


def test_checkpoint_log_mismatch_names_the_count_in_plain_words(tmp_path):
    """A checkpoint whose log does not match its epoch count is refused; one finished epoch is
    'epoch', not 'epochs'."""
    from n2ngraph.io import FileFormatError
    from n2ngraph.training import CHECKPOINT_NAME

    train_set, test_set, config, model = _resume_setup()
    config.epochs = 1
    train(model(), train_set, test_set, config, out_dir=tmp_path, seed=0)
    path = tmp_path / CHECKPOINT_NAME
    state = torch.load(path, weights_only=True)
    state["log"] = state["log"] * 2
    torch.save(state, path)
    with pytest.raises(FileFormatError, match=r"log has 2 rows for 1 finished epoch\b(?!s)"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- shape checks
def test_check_input_fits_names_graph_model_and_data_shapes():
    """A graph traced at 32 x 32 and 28 x 28 data disagree in one line naming both shapes and
    the fix; a flat graph input fits images of as many values; classes are checked too."""
    from n2ngraph.models import resolve_model
    from n2ngraph.trace import to_graph
    from n2ngraph.training import check_input_fits

    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 4))
    graph32 = to_graph(conv, example_input=torch.zeros(1, 1, 32, 32))
    data28 = load_dataset("synthetic:n=8,classes=4,shape=1x28x28", train=True)
    check_input_fits(conv, data28)  # the model alone accepts any size
    check_input_fits(conv, (1, 32, 32), graph=graph32)
    with pytest.raises(ValueError) as info:
        check_input_fits(conv, data28, graph=graph32)
    message = str(info.value)
    assert "\n" not in message and "(1, 32, 32)" in message and "(1, 28, 28)" in message
    assert "synthetic/train" in message and "--input-shape 1,28,28" in message
    with pytest.raises(ValueError, match=r"4 outputs but the data synthetic/train has 3 classes"):
        check_input_fits(conv, load_dataset("synthetic:n=8,classes=3,shape=1x32x32", train=True),
                         graph=graph32)
    mlp = resolve_model("lenet300", num_classes=4, in_features=784)
    flat = to_graph(mlp)  # traced on (784,): fits 1 x 28 x 28 images
    check_input_fits(mlp, data28, graph=flat)
    check_input_fits(mlp, "1,28,28", graph=flat)
    check_input_fits(mlp, "synthetic:classes=4,shape=1x28x28", graph=flat)  # a spec, not loaded
    with pytest.raises(ValueError, match=r"model lenet300 does not accept inputs of shape "
                                         r"\(1, 32, 32\)"):
        check_input_fits(mlp, (1, 32, 32), name="lenet300")
    with pytest.raises(ValueError, match=r"outputs 4 logits but the data synthetic/train has 3"):
        check_input_fits(mlp, load_dataset("synthetic:n=8,classes=3,shape=1x28x28", train=True))
    with pytest.raises(ValueError, match=r"not to logits"):
        check_input_fits(nn.Flatten(0), (4,))
    mlp.train()
    check_input_fits(mlp, data28)
    assert mlp.training  # the mode is restored
