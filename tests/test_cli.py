"""The n2ngraph command: graph subcommand outputs, clear one-line errors with exit code 2."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from n2ngraph.cli import main


def test_graph_command_writes_tables_figure_and_graph(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["graph", "lenet300", "--out", str(out), "--bins", "200"]) == 0
    for name in ("groups.csv", "groups.md", "blocks.csv", "adjacency.png", "adjacency.pdf",
                 "graph.npz", "config.json"):
        assert (out / name).stat().st_size > 0, name
    blocks = pd.read_csv(out / "blocks.csv")
    assert blocks["kept_weights"].iloc[-1] == 784 * 300 + 300 * 100 + 100 * 10
    printed = capsys.readouterr().out
    assert "1194 nodes" in printed
    wrote = printed.strip().splitlines()[-1].split()
    assert wrote[:2] == ["wrote", f"{out}/"]
    assert sorted(wrote[2:]) == sorted(p.name for p in out.iterdir())  # every file it wrote


def test_unknown_model_lists_valid_names(tmp_path, capsys):
    assert main(["graph", "alexnet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "paper_mlp" in err[0] and "vgg19" in err[0]
    assert not (tmp_path / "x").exists()


def test_user_factory_that_raises(tmp_path, capsys, monkeypatch):
    (tmp_path / "userfac.py").write_text("def build():\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["graph", "userfac:build", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "boom" in err and err.count("\n") == 1
    assert not (tmp_path / "y").exists()


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "n2ngraph", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "graph" in result.stdout


def test_graph_command_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["graph", "lenet300", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0]


def test_compare_help_names_recipe_times_and_workers():
    result = subprocess.run([sys.executable, "-m", "n2ngraph", "compare", "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0
    for flag in ("--recipe", "--t-lambda2", "--times", "--workers", "--threads", "--scheduler",
                 "--model-arg", "--weighted"):
        assert flag in result.stdout, flag


def test_every_subcommand_module_imports_and_a_missing_one_raises(monkeypatch):
    """No subcommand is dropped silently: each module exists with add_arguments and run, and a
    missing module is an error (an installation bug, not a user error), not a vanished command."""
    import importlib

    from n2ngraph import cli

    for module, _ in cli.SUBCOMMANDS.values():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.run), module
    monkeypatch.setitem(cli.SUBCOMMANDS, "ghost", ("n2ngraph.no_such_cli_module", "gone"))
    with pytest.raises(ModuleNotFoundError, match="no_such_cli_module"):
        main(["ghost"])


def test_errors_and_interrupts_are_reported_in_one_place(monkeypatch, capsys):
    """Subcommands raise; cli.main turns errors into one line + code 2 and Ctrl-C into code 130
    with the subcommand's hint (train: how to continue)."""
    from n2ngraph import cli_train

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "run", interrupted)
    argv = ["train", "--graph", "g.npz", "--model", "paper_mlp", "--data", "digits", "--out", "runs/x"]
    assert main(argv) == 130
    assert capsys.readouterr().err == "n2ngraph train: interrupted; continue with --resume (checkpoint in runs/x)\n"
    with pytest.raises(SystemExit) as exc:  # a bad argument is one line too, on every subcommand
        main([*argv, "--epochs", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("n2ngraph train: error:") and "--epochs" in err[0]


def test_version_is_the_installed_package_metadata():
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import n2ngraph

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert n2ngraph.__version__ == importlib.metadata.version("n2ngraph") == pyproject["project"]["version"]


def test_version_option_prints_the_package_version(capsys):
    import n2ngraph

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"n2ngraph {n2ngraph.__version__}"


def test_train_writes_a_plain_cli_record_and_speaks_cli_words(tmp_path, capsys):
    """cli.json holds the command's arguments only (no parser internals such as the function
    that runs it); a second run into the same folder names --resume and --out, not the
    library's resume=True / out_dir; files follow the umask."""
    import json
    import os

    from n2ngraph.io import save_graph
    from n2ngraph.models import build_model
    from n2ngraph.trace import to_graph

    graph = save_graph(to_graph(build_model("paper_mlp", seed=0, num_classes=3, in_features=16)),
                       tmp_path / "g.npz")
    out = tmp_path / "run"
    argv = ["train", "--graph", str(graph), "--model", "paper_mlp", "--out", str(out),
            "--data", "synthetic:n=32,classes=3,shape=1x4x4", "--epochs", "1", "--device", "cpu",
            "--no-progress", "--batch-size", "16"]
    old = os.umask(0o022)
    try:
        assert main(argv) == 0
    finally:
        os.umask(old)
    record = json.loads((out / "cli.json").read_text())
    assert record["graph"] == str(graph) and record["epochs"] == 1
    assert not any(k.startswith("_") for k in record)
    assert "<function" not in (out / "cli.json").read_text()
    for name in ("cli.json", "config.json", "log.csv", "checkpoint.pt"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    wrote = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert wrote[:2] == ["wrote", f"{out}/"]
    assert sorted(wrote[2:]) == sorted(p.name for p in out.iterdir())  # every file it wrote
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --resume" in err and "--out" in err
    assert "resume=True" not in err and "out_dir" not in err


SYNTH = "synthetic:n=48,classes=4,shape=1x4x4"


def test_graph_variant_then_train_on_it(tmp_path, capsys):
    """`graph --method --density --n2nskip` writes the variant and prints its kept fractions;
    `train` on its output rebuilds the model the graph records and writes its curve."""
    import json

    from n2ngraph.io import load_graph

    out = tmp_path / "g"
    assert main(["graph", "lenet300", "--method", "expander", "--density", "0.05", "--n2nskip",
                 "--data", SYNTH, "--seed", "1", "--out", str(out), "--bins", "50"]) == 0
    printed = capsys.readouterr().out
    layers = pd.read_csv(out / "layers.csv")
    dense = 16 * 300 + 300 * 100 + 100 * 4  # lenet300 fitted to the data: 16 inputs, 4 classes
    total = layers.iloc[-1]
    assert total["layer"] == "total" and total["weights"] == dense
    body = layers.iloc[:-1]
    assert body["kept"].sum() == total["kept"]
    assert total["kept_fraction"] == pytest.approx(total["kept"] / dense)
    assert abs(total["kept"] - 0.05 * dense) <= 1  # the budget, rounded
    assert list(body["kind"].unique()) == ["sequential", "n2nskip"]
    np.testing.assert_allclose(body["kept_fraction"], body["kept"] / body["weights"], rtol=1e-5)
    seq = body[body["kind"] == "sequential"]
    assert seq["weights"].tolist() == [300 * 16, 100 * 300, 4 * 100]
    assert "kept %" in printed and f"{total['kept']:,} of {dense:,} weights kept" in printed
    graph = load_graph(out / "graph.npz")
    assert graph.provenance["model"] == "lenet300" and graph.provenance["data"] == SYNTH
    assert graph.provenance["variant"] == "n2nskip" and graph.provenance["seed"] == 1
    assert (out / "layers.md").read_text().startswith("model lenet300, N2NSkip-expander at density 0.05")

    run = tmp_path / "run"
    assert main(["train", "--graph", str(out / "graph.npz"), "--data", SYNTH, "--out", str(run),
                 "--epochs", "1", "--device", "cpu", "--no-progress", "--batch-size", "16"]) == 0
    for name in ("log.csv", "curve.png", "curve.pdf", "checkpoint.pt"):
        assert (run / name).stat().st_size > 0, name
    assert len(pd.read_csv(run / "log.csv")) == 1
    record = json.loads((run / "cli.json").read_text())
    assert record["model"] == "lenet300" and record["model_kwargs"] == {}
    wrote = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert sorted(wrote[2:]) == sorted(p.name for p in run.iterdir())


def test_graph_option_errors_are_one_line(tmp_path, capsys):
    cases = [(["--density", "0.1"], "need --method"),
             (["--n2nskip"], "need --method"),
             (["--method", "expander"], "needs --density"),
             (["--method", "nope", "--density", "0.1"], "unknown pruning method 'nope'"),
             (["--method", "snip", "--density", "0.1"], "give --data"),
             (["--method", "expander", "--density", "1.5"], "1.5"),
             (["--input-shape", "1,a"], "input shape '1,a'")]
    for extra, words in cases:
        assert main(["graph", "lenet300", "--out", str(tmp_path / "x"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, (extra, err)
        assert not (tmp_path / "x").exists()


_CONV = """from torch import nn
def build(num_classes=10, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
def flat(num_classes=10, in_features=16):
    return nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, num_classes))
"""


def test_shapes_of_graph_model_and_data_are_checked_before_training(tmp_path, capsys, monkeypatch):
    """A user's factory in the current directory; a conv graph traced at 32 x 32 refused for 6 x 6
    data in one line naming both shapes (nothing written); traced at the data's shape it trains;
    --input-shape feeds samples to a model without a flatten layer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a2_user_nets.py").write_text(_CONV)
    data = "synthetic:n=32,classes=3,shape=1x6x6"
    assert main(["graph", "a2_user_nets:build", "--method", "expander", "--density", "0.5", "--n2nskip",
                 "--recipe", "all-pairs", "--model-kwargs", '{"in_channels": 1, "num_classes": 3}',
                 "--out", "g32", "--bins", "20"]) == 0
    assert "traced on inputs 1x32x32" in capsys.readouterr().out
    train = ["train", "--data", data, "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main([*train, "--graph", "g32/graph.npz", "--out", "r32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(1, 32, 32)" in err and "(1, 6, 6)" in err
    assert "--input-shape 1,6,6" in err and not (tmp_path / "r32").exists()
    assert main(["graph", "a2_user_nets:build", "--method", "expander", "--density", "0.5", "--n2nskip",
                 "--recipe", "all-pairs", "--data", data, "--out", "g6", "--bins", "20"]) == 0
    assert "traced on inputs 1x6x6" in capsys.readouterr().out
    assert main([*train, "--graph", "g6/graph.npz", "--out", "r6"]) == 0
    assert (tmp_path / "r6" / "curve.png").is_file()

    assert main(["graph", "a2_user_nets:flat", "--data", data, "--out", "gf", "--bins", "20"]) == 0
    assert main([*train, "--graph", "gf/graph.npz", "--out", "rf"]) == 2
    assert "does not accept inputs of shape (1, 6, 6)" in capsys.readouterr().err
    assert main([*train, "--graph", "gf/graph.npz", "--out", "rf", "--input-shape", "36"]) == 0
    assert main([*train, "--graph", "gf/graph.npz", "--out", "rf2", "--input-shape", "35"]) == 2
    assert "35 values" in capsys.readouterr().err


def test_graph_input_shape_fits_and_traces_the_model(tmp_path, capsys):
    """--input-shape without --data: the model's inputs follow it (in_features of an MLP, traced
    flat: one input node per value), a conv net is traced at it; an N2NSkip MLP made so trains
    on images of that shape."""
    from n2ngraph.io import load_graph

    out = tmp_path / "g"
    assert main(["graph", "lenet300", "--input-shape", "1,4,4", "--method", "expander", "--density", "0.2",
                 "--n2nskip", "--out", str(out), "--bins", "20"]) == 0
    assert "traced on inputs 16" in capsys.readouterr().out
    graph = load_graph(out / "graph.npz")
    assert graph.groups[0].shape == (16,) and graph.provenance["input_shape"] == [16]
    assert graph.blocks[0].mask.shape == (300, 16)
    assert main(["train", "--graph", str(out / "graph.npz"), "--data", "synthetic:n=16,classes=10,shape=1x4x4",
                 "--epochs", "1", "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]) == 0
    conv = tmp_path / "c"
    assert main(["graph", "resnet18", "--input-shape", "1,8,8", "--out", str(conv), "--bins", "20"]) == 0
    assert "traced on inputs 1x8x8" in capsys.readouterr().out
    assert load_graph(conv / "graph.npz").groups[0].shape == (1, 8, 8)
