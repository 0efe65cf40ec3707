import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from mde_pyg.cli import main, parse_grid, parse_value
from mde_pyg.models import available_models

L3 = 1.0 / math.log2(3)


def tiny_args(tiny_folder, out, *extra):
    return ["train", "--model", "mostpop", "--data", str(tiny_folder),
            "--modality", "text=text.npy", "--modality", "image=image.npy",
            "--ks", "1,2,3", "--eval-metric", "recall@3", "--k-user", "2",
            "--k-item", "2", "--no-progress", "--output", str(out), *extra]


def test_parse_value():
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("1e-3") == 1e-3
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("none") is None
    assert parse_value("concat") == "concat"
    assert parse_value('{"text": 0.8, "image": 0.2}') == {"text": 0.8,
                                                          "image": 0.2}
    assert parse_value("[0.8, 0.2]") == [0.8, 0.2]
    with pytest.raises(ValueError, match="starts like a JSON list or object"):
        parse_value("{text: 0.8}")
    # a JSON list is a grid's list of values, which may be lists
    assert parse_grid({"global_preference": "[[0.8, 0.2], [0.2, 0.8]]"}) \
        == {"global_preference": [[0.8, 0.2], [0.2, 0.8]]}
    assert parse_grid({"lr": "1e-3,1e-4", "tau": [0.2]}) == {
        "lr": [1e-3, 1e-4], "tau": [0.2]}


def test_models(capsys):
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    # every registered model, one per line, in the registry's order
    assert names == available_models()
    assert "mostpop" in names and "mde" in names


def test_train_mostpop_on_folder(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out, "--plot")) == 0
    result = json.loads((out / "results.json").read_text())
    assert set(result) == {"model", "best_epoch", "valid", "test", "config",
                           "history", "checkpoint", "environment"}
    assert result["checkpoint"] == "best.pt"
    assert result["environment"]["torch"] == torch.__version__
    assert result["model"] == "mostpop" and result["best_epoch"] == 0
    # valid: user 3 ranks [1, 2, 3] (target 2); user 2 ranks [2, 3, 4]
    # (target 4).
    assert result["valid"]["recall@1"] == 0.0
    assert result["valid"]["recall@2"] == 0.5
    assert result["valid"]["recall@3"] == 1.0
    assert result["valid"]["ndcg@3"] == pytest.approx((L3 + 0.5) / 2)
    assert result["test"]["recall@1"] == 1.0  # user 0: item 4 ranks first
    assert result["config"]["data"]["modality"] == {
        "text": "text.npy", "image": "image.npy"}
    assert result["config"]["ks"] == [1, 2, 3]
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*tmp*"))  # written through a renamed file
    assert "recall" in capsys.readouterr().out


def test_grid_and_config(tiny_folder, tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text(
        'model = "mostpop"\nseed = 7\nbatch-size = 16\n'
        '[grid]\nlr = [0.1, 0.01]\n'
    )
    out = tmp_path / "grid"
    args = tiny_args(tiny_folder, out, "--config", str(config),
                     "--batch-size", "32")
    args[args.index("--model") + 1] = "MostPop"  # names are case-insensitive
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["seed"] == 7  # from the file
    assert result["config"]["batch_size"] == 32  # the command line wins
    assert result["config"]["grid"] == {"lr": [0.1, 0.01]}
    assert result["params"] == {"lr": 0.1}  # tie: the first run wins
    lines = (out / "grid.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("run,lr,best_epoch,")
    printed = capsys.readouterr().out
    assert (f"selected on valid recall@3: lr=0.1 (run_000; every "
            f"configuration in {out / 'grid.csv'})") in printed
    assert "best epoch 0 (counted from 0)" in printed


@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_config_formats(tiny_folder, tmp_path, suffix):
    config = tmp_path / f"c.{suffix}"
    content = {"model": "mostpop", "data": str(tiny_folder), "ks": "1,2",
               "eval_metric": "recall@2", "k_user": 2, "k_item": 2,
               "modality": {"text": "text.npy"}, "progress": False}
    config.write_text(json.dumps(content))  # JSON is valid YAML
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["valid"]["recall@2"] == 0.5


def test_yaml_config_reads_exponent_numbers_and_dashed_keys(tiny_folder,
                                                            tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as a string: it is the number it is in
    # TOML, JSON and on the command line; [set] / [grid] keys may be dashed
    from mde_pyg.cli import UsageError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: lightgcn\ndata: {tiny_folder}\nks: 1,2\n"
        f"eval-metric: recall@2\nk-user: 2\nk-item: 2\nmax-epochs: 1\n"
        f"modality: {{text: text.npy}}\nprogress: false\nlr: 1e-3\n"
        f"set: {{reg-weight: 1E-4, name: 1e-3x}}\n"
        f"grid: {{num-layers: [1, 2], embedding_dim: [8]}}\n")
    loaded = load_config(config)
    assert loaded["lr"] == 1e-3 and isinstance(loaded["lr"], float)
    assert loaded["set"] == {"reg_weight": 1e-4, "name": "1e-3x"}
    assert loaded["grid"] == {"num_layers": [1, 2], "embedding_dim": [8]}
    del loaded["set"]["name"]
    config.write_text(config.read_text().replace(", name: 1e-3x", ""))
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--output", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["lr"] == 1e-3
    assert result["config"]["model_hparams"]["reg_weight"] == 1e-4
    assert result["params"]["num_layers"] in (1, 2)
    twice = tmp_path / "twice.toml"
    twice.write_text("[set]\nreg-weight = 0.1\nreg_weight = 0.2\n")
    with pytest.raises(UsageError, match=r"'set' in '.*twice.toml' sets "
                       r"'reg_weight' twice"):
        load_config(twice)


@pytest.mark.parametrize("extra, message", [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--modality", "text"], "--modality expects KEY=VALUE, got 'text'"),
    (["--set", "dim=3"], "model 'mostpop' has no argument(s) ['dim']"),
    (["--eval-metric", "recall@7"], "--eval-metric must be NAME@K"),
    (["--ks", "5,100"], "fewer than the largest cut-off 100"),
    (["--dataset", "synthetic"], "exactly one of --data FOLDER or --dataset"),
    (["--config", "missing.toml"], "config file 'missing.toml' does not"),
    (["--max-epochs", "0"], "--max-epochs: 'max_epochs' must be an integer"),
    (["--lr", "-0.1"], "--lr: 'lr' must be > 0, got -0.1"),
    (["--weight-decay", "-1"], "--weight-decay: 'weight_decay' must be >= 0"),
    (["--k-item", "0"], "--k-item must be an integer >= 1, got 0"),
    (["--set", "lr=0"], "cannot train 'mostpop': 'lr' must be > 0, got 0"),
])
def test_user_errors(tiny_folder, tmp_path, capsys, extra, message):
    args = tiny_args(tiny_folder, tmp_path / "x")
    if extra[0] == "--model":
        args[args.index("--model") + 1] = extra[1]
        extra = []
    if extra and extra[0] == "--ks":
        args[args.index("--ks") + 1] = extra[1]
        args[args.index("--eval-metric") + 1] = "recall@5"
        extra = []
    with pytest.raises(SystemExit) as info:
        main(args + extra)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("mde-pyg train: error:")
    assert err.startswith("usage: mde-pyg train ")  # the command's usage


@pytest.mark.parametrize("extra, message", [
    (["--set", "embedding_dim=0"], "'embedding_dim' must be >= 1, got 0"),
    (["--set", "num_layers=-1"], "'num_layers' must be >= 0, got -1"),
    (["--grid", "lr=0.1,-1"], "grid configuration 1 {'lr': -1}: 'lr' must"),
    (["--grid", "reg_weight=0,-1"], "grid configuration 1 {'reg_weight': -1}"),
])
def test_bad_model_values_fail_before_anything_is_written(tiny_folder, tmp_path,
                                                          capsys, extra,
                                                          message):
    out = tmp_path / "out"
    args = tiny_args(tiny_folder, out, *extra)
    args[args.index("--model") + 1] = "lightgcn"
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert "cannot train 'lightgcn'" in err
    assert not out.exists()  # no tiny_folder, no run_000 of a half-done grid


def test_a_split_without_interactions_is_a_usage_error(tiny_folder, tmp_path,
                                                       capsys):
    inter = tiny_folder / "tiny.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(r for r in lines if not r.endswith("\t2"))
                     + "\n")  # no test rows left
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(tiny_args(tiny_folder, out))
    err = capsys.readouterr().err
    assert f"the test split of '{tiny_folder}' has no interaction" in err
    assert "rows with x_label 2" in err and not out.exists()


def test_resume_under_other_settings_is_a_usage_error(tiny_folder, tmp_path,
                                                      capsys):
    out = tmp_path / "out"
    args = tiny_args(tiny_folder, out, "--max-epochs", "1")
    args[args.index("--model") + 1] = "lightgcn"
    assert main(args) == 0
    with pytest.raises(SystemExit):
        main(args + ["--resume", "--set", "num_layers=1", "--lr", "0.01"])
    err = capsys.readouterr().err
    assert "cannot --resume:" in err and "Traceback" not in err
    assert "lr 0.001 -> 0.01; model_hparams.num_layers 3 -> 1" in err


def test_resume_under_other_data_settings_is_a_usage_error(
        tiny_folder, tmp_path, capsys, monkeypatch):
    # the run's graphs and features are those it started with: other
    # --k-user / --feature-norm / feature files are refused before training,
    # in one line (they went into results.json only, after training)
    import numpy as np

    out = tmp_path / "out"
    args = tiny_args(tiny_folder, out, "--max-epochs", "1")
    args[args.index("--model") + 1] = "vbpr"
    assert main(args) == 0
    saved = (out / "last.pt").read_bytes()
    more = ["--resume", "--max-epochs", "2"]
    for extra, change in [
            (["--k-user", "1"], "data.k_user 2 -> 1"),
            (["--feature-norm", "l2"],
             "data.feature_norm 'standardize' -> 'l2'")]:
        with pytest.raises(SystemExit):
            main(args + more + extra)
        err = capsys.readouterr().err
        assert "cannot --resume:" in err and change in err
        assert "Traceback" not in err
    # the same file name holding another width: the weights do not fit
    np.save(tiny_folder / "text.npy", np.ones((5, 6), dtype=np.float32))
    with pytest.raises(SystemExit):
        main(args + more)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot --resume:" in err and "does not fit this model" in err
    assert "size mismatch" in err and "another feature file?" in err
    assert (out / "last.pt").read_bytes() == saved  # nothing trained
    # the same settings from another working directory: the run continues
    np.save(tiny_folder / "text.npy", np.random.default_rng(0).normal(
        size=(5, 4)).astype(np.float32))  # the fixture's features again
    # (the folder spelled relative to it: the same folder is read)
    monkeypatch.chdir(tmp_path)
    relative = list(args)
    relative[relative.index("--data") + 1] = tiny_folder.name
    assert main(relative + more) == 0
    result = json.loads((out / "results.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert result["config"]["data"]["cwd"] == str(tmp_path)
    assert result["config"]["data"]["folder"] == str(tiny_folder.resolve())
    # another folder of the same shape is another run
    other = tmp_path / "copy"
    shutil.copytree(tiny_folder, other)
    moved = list(args)
    moved[moved.index("--data") + 1] = str(other)
    with pytest.raises(SystemExit):
        main(moved + ["--resume", "--max-epochs", "3"])
    assert "data.folder" in capsys.readouterr().err


def test_overwriting_a_grid_removes_the_runs_of_the_old_one(tmp_path, capsys):
    out = tmp_path / "grid"
    common = ["train", "--model", "lightgcn", "--dataset", "synthetic",
              "--max-epochs", "1", "--no-progress", "--output", str(out)]
    assert main(common + ["--grid", "num_layers=1,2,3"]) == 0
    (out / "run_7").mkdir()  # not a run of the grid: left alone
    (out / "run_7" / "notes.txt").write_text("mine")
    assert main(common + ["--grid", "num_layers=1,2", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("run_*")) == ["run_000",
                                                         "run_001", "run_7"]
    # an unfinished grid (grid.csv, no results.json) is a run to resume or
    # overwrite, not a free folder
    (out / "results.json").unlink()
    with pytest.raises(SystemExit):
        main(common + ["--grid", "num_layers=1"])
    # a grid interrupted in its first run (run_000/last.pt, no grid.csv
    # yet) is not a free folder either
    other = tmp_path / "other"
    (other / "run_005").mkdir(parents=True)
    (other / "run_005" / "last.pt").write_text("x")
    with pytest.raises(SystemExit):
        main(common[:-1] + [str(other), "--grid", "num_layers=1"])
    assert "already holds a run (run_005/last.pt); pass --resume" in \
        capsys.readouterr().err
    # overwritten, a folder that holds no grid.csv loses nothing: run_NNN
    # beside no grid.csv are not known to be a grid's
    assert main(common[:-1] + [str(other), "--grid", "num_layers=1",
                               "--overwrite"]) == 0
    assert (other / "run_005" / "last.pt").read_text() == "x"


def test_interrupt_then_resume(tiny_folder, tmp_path, capsys, monkeypatch):
    from mde_pyg.train import Trainer

    out = tmp_path / "out"
    args = tiny_args(tiny_folder, out, "--max-epochs", "3")
    args[args.index("--model") + 1] = "lightgcn"
    run_epoch = Trainer._run_epoch

    def interrupted(self, bar):
        if self.epoch == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        run_epoch(self, bar)

    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    assert main(args) == 130
    assert "rerun the same command with --resume" in capsys.readouterr().err
    assert (out / "last.pt").exists() and not (out / "results.json").exists()
    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)
    assert main(args + ["--resume"]) == 0
    history = json.loads((out / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]


def test_missing_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "mostpop", "--data", str(tmp_path / "no"),
              "--output", str(tmp_path / "o")])
    assert "data folder" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "mde_pyg", "models"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == available_models()


def test_command_line_set_and_grid_win_over_the_config(tiny_folder,
                                                       tmp_path):
    # resolve_settings: "the command line (which wins)", for the mapping
    # options too, merged key by key
    from mde_pyg.cli import build_parser, resolve_settings

    config = tmp_path / "c.toml"
    config.write_text("[set]\nreg_weight = 0.1\nnum_layers = 2\n"
                      "[grid]\nlr = [0.2, 0.3]\nembedding_dim = [8]\n")
    args = build_parser().parse_args([
        "train", "--model", "lightgcn", "--data", str(tiny_folder),
        "--modality", "text=text.npy", "--config", str(config),
        "--set", "reg_weight=0.5", "--grid", "lr=0.01,0.02",
        "--output", str(tmp_path / "out")])
    settings = resolve_settings(args)
    assert settings["hparams"] == {"reg_weight": 0.5, "num_layers": 2}
    assert settings["grid"] == {"lr": [0.01, 0.02], "embedding_dim": [8]}


def test_yaml_lists_read_exponent_numbers(tmp_path):
    # PyYAML reads 1e-3 as a string; inside a list (a grid's values) too
    from mde_pyg.cli import load_config, parse_grid

    config = tmp_path / "c.yaml"
    config.write_text("grid: {lr: [1e-3, 1e-4], reg-weight: [1E-5]}\n")
    grid = parse_grid(load_config(config)["grid"])
    assert grid == {"lr": [1e-3, 1e-4], "reg_weight": [1e-5]}
    assert all(isinstance(v, float) for vs in grid.values() for v in vs)


def test_assignments_and_grid_values_are_normalised(tiny_folder, tmp_path):
    # empty grid entries dropped, --set keys with dashes, the config's
    # 'modalities' alias, --ks sorted and without repeats
    from mde_pyg.cli import (
        build_parser,
        load_config,
        parse_assignments,
        parse_grid,
        resolve_settings,
    )

    assert parse_grid({"lr": "0.1, 0.2,"}) == {"lr": [0.1, 0.2]}
    assert parse_assignments(["reg-weight=0.1"], "--set") == {
        "reg_weight": "0.1"}
    assert parse_assignments(["my-text=t.npy"], "--modality") == {
        "my-text": "t.npy"}
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"modalities": {"text": "text.npy"}}))
    assert load_config(config)["modality"] == {"text": "text.npy"}
    args = build_parser().parse_args([
        "train", "--model", "mostpop", "--data", str(tiny_folder),
        "--modality", "text=text.npy", "--ks", "3,1,3",
        "--eval-metric", "recall@3", "--output", str(tmp_path / "out")])
    assert resolve_settings(args)["ks"] == (1, 3)


def test_interrupt_before_the_first_epoch_says_nothing_was_written(
        tiny_folder, tmp_path, capsys, monkeypatch):
    from mde_pyg.train import Trainer

    out = tmp_path / "out"

    def interrupted(self, bar):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    args = tiny_args(tiny_folder, out, "--max-epochs", "3")
    args[args.index("--model") + 1] = "lightgcn"
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == (
        "mde-pyg: interrupted; no epoch had finished, so nothing was "
        "written: rerun the same command")
    assert not (out / "last.pt").exists()
    # --overwrite: the earlier run's checkpoints, still there, are not
    # this run's, and --resume with --overwrite is refused
    monkeypatch.undo()
    assert main(args) == 0
    monkeypatch.setattr(Trainer, "_run_epoch", interrupted)
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 130
    assert capsys.readouterr().err.strip().endswith(
        "nothing was written: rerun the same command")


def test_resume_refuses_a_folder_of_another_kind_or_model(tiny_folder,
                                                         tmp_path, capsys):
    def refused(argv, message):
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err

    single, grid = tmp_path / "single", tmp_path / "grid"
    assert main(tiny_args(tiny_folder, single, "--max-epochs", "1")) == 0
    assert main(tiny_args(tiny_folder, grid, "--max-epochs", "1",
                          "--model", "lightgcn", "--grid",
                          "num_layers=1,2")) == 0
    before = (single / "results.json").read_text()
    refused(tiny_args(tiny_folder, grid, "--model", "lightgcn", "--resume"),
            "holds a grid (grid.csv, run_<i>/): --resume continues it with "
            "its --grid")
    refused(tiny_args(tiny_folder, single, "--resume", "--grid",
                      "num_layers=1,2"),
            "holds a single run (results.json, best.pt, history.json): "
            "--resume continues it "
            "without --grid")  # MostPop writes no last.pt
    refused(tiny_args(tiny_folder, single, "--model", "lightgcn",
                      "--resume"),
            "holds a run of --model 'mostpop': --resume continues it with "
            "that model; give --model mostpop")
    refused(tiny_args(tiny_folder, single, "--resume", "--overwrite"),
            "give --resume (continue the run in --output) or --overwrite")
    assert (single / "results.json").read_text() == before
    # the same kind and model resume (a finished run is only reloaded)
    assert main(tiny_args(tiny_folder, single, "--resume")) == 0


def test_set_and_grid_may_not_give_the_same_argument(tiny_folder, tmp_path,
                                                     capsys, monkeypatch):
    import mde_pyg.cli as cli

    def not_loaded(*args, **kwargs):
        raise AssertionError("the data was read before the settings failed")

    monkeypatch.setattr(cli, "load_data_source", not_loaded)
    for extra, message in (
            (["--set", "num_layers=1", "--grid", "num_layers=1,2"],
             "--set and --grid both give ['num_layers']: a value is either "
             "fixed or searched"),
            (["--set", "num_layer=1"], "has no argument(s) ['num_layer']"),
            (["--grid", "num_layer=1,2"], "has no argument(s) ['num_layer']")):
        args = tiny_args(tiny_folder, tmp_path / "o", *extra)
        args[args.index("--model") + 1] = "lightgcn"
        with pytest.raises(SystemExit):
            main(args)
        assert message in capsys.readouterr().err


def test_a_command_line_grid_replaces_the_files_fixed_value(tmp_path):
    from mde_pyg.cli import build_parser, resolve_settings

    config = tmp_path / "c.toml"
    config.write_text("[set]\nnum_layers = 2\nreg_weight = 0.1\n")
    settings = resolve_settings(build_parser().parse_args([
        "train", "--model", "lightgcn", "--dataset", "synthetic",
        "--config", str(config), "--grid", "num_layers=1,3",
        "--output", str(tmp_path / "o")]))
    assert settings["hparams"] == {"reg_weight": 0.1}
    assert settings["grid"] == {"num_layers": [1, 3]}


def test_resume_into_a_folder_without_a_run_says_it_starts_one(
        tiny_folder, tmp_path, capsys):
    # a typo in --output would otherwise start a new run without a word
    out = tmp_path / "new"
    assert main(tiny_args(tiny_folder, out, "--resume")) == 0
    assert capsys.readouterr().err.startswith(
        f"--resume: '{out}' holds no run to continue; training a new one "
        f"there\n")
    assert (out / "results.json").is_file()
    assert main(tiny_args(tiny_folder, out, "--resume")) == 0
    assert "holds no run" not in capsys.readouterr().err
