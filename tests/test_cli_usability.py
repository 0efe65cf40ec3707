"""What a first-time user of ``mde-pyg`` meets: repeated options, a moved
data folder, the help, a model's arguments, feature files of another
size, a folder without interactions, resumed runs and their curve."""

import importlib.util
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from cli_helpers import usage_error as cli_usage_error

from mde_pyg.cli import describe_model, docstring_args, main, parse_assignments
from mde_pyg.models import available_models, build_model, get_model_class


def tiny_args(tiny_folder, out, model="mostpop", *extra):
    return ["train", "--model", model, "--data", str(tiny_folder),
            "--modality", "text=text.npy", "--modality", "image=image.npy",
            "--ks", "1,2", "--eval-metric", "recall@2", "--k-user", "2",
            "--k-item", "2", "--no-progress", "--output", str(out), *extra]


def usage_error(capsys, argv):
    """The one-line error of ``main(argv)``, without its prefix."""
    return cli_usage_error(capsys, argv)[len(f"mde-pyg {argv[0]}: error: "):]


# 1. A repeated KEY=VALUE ####################################################


def test_a_key_given_twice_is_refused_with_both_values(tiny_folder, tmp_path,
                                                       capsys):
    out = tmp_path / "o"
    base = tiny_args(tiny_folder, out, "lightgcn")
    for extra, message in [
            (["--modality", "text=image.npy"],
             "--modality gives 'text' twice ('text.npy' and 'image.npy'); "
             "give each name once"),
            (["--grid", "num_layers=1,2", "--grid", "num_layers=3"],
             "--grid gives 'num_layers' twice ('1,2' and '3'); give each "
             "key once (a grid key takes all its values: num_layers=V1,V2)"),
            # dashes and underscores name the same key
            (["--set", "reg-weight=0.1", "--set", "reg_weight=0.2"],
             "--set gives 'reg_weight' twice ('0.1' and '0.2'); give each "
             "key once")]:
        assert usage_error(capsys, base + extra) == message
    assert not out.exists()
    # the examples' parser: one of each is as before, and a value repeated
    # (a wrapper script adding its flags again) is taken once
    assert parse_assignments(["a=1", "b=2"], "--set") == {"a": "1", "b": "2"}
    assert parse_assignments(["a=1", "b=2", "a=1"], "--set") == {"a": "1",
                                                                 "b": "2"}


def test_a_config_file_giving_a_key_twice_is_refused(tiny_folder, tmp_path,
                                                     capsys):
    config = tmp_path / "c.json"
    config.write_text('{"grid": {"tau": [0.2, 0.3], "tau": [0.5]}}')
    argv = tiny_args(tiny_folder, tmp_path / "o", "mde", "--config",
                     str(config))
    assert usage_error(capsys, argv) == (
        f"config file '{config}' gives 'tau' twice ([0.2, 0.3] and [0.5]); "
        f"keep one")
    pytest.importorskip("yaml")
    config = tmp_path / "c.yaml"
    config.write_text("max_epochs: 2\nset:\n  tau: 0.2\n  tau: 0.5\n")
    argv[argv.index("--config") + 1] = str(config)
    assert usage_error(capsys, argv) == (
        f"config file '{config}' gives 'tau' twice (line 3, column 8 and "
        f"line 4, column 8); keep one")
    config.write_text("set: {tau: 0.2, tau: 0.5}\n")
    assert usage_error(capsys, argv) == (
        f"config file '{config}' gives 'tau' twice (line 1, column 12 and "
        f"line 1, column 22); keep one")
    # a merged mapping's key may still be overridden
    config.write_text("base: &b {tau: 0.2}\nset:\n  <<: *b\n  tau: 0.5\n")
    import yaml

    from mde_pyg.cli import _unique_key_loader

    assert yaml.load(config.read_text(), Loader=_unique_key_loader(
        yaml, config))["set"] == {"tau": 0.5}


# 2. recommend --data of another folder ######################################


def test_recommend_of_a_wrong_folder_names_what_the_run_needs(
        tiny_folder, tmp_path, capsys):
    from mde_pyg.runs import load_run

    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out)) == 0
    needs = (f"the run was trained on '{tiny_folder}' with text=text.npy, "
             f"image=image.npy; 'data_folder' (mde-pyg recommend --data) "
             f"must be a folder holding tiny.inter and those files")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert usage_error(capsys, ["recommend", str(out), "--data",
                                str(empty)]) == (
        f"cannot load the run '{out}': '{empty}' has no tiny.inter, "
        f"text.npy, image.npy: {needs}")
    inter_only = tmp_path / "inter_only"
    inter_only.mkdir()
    shutil.copy(tiny_folder / "tiny.inter", inter_only)
    with pytest.raises(FileNotFoundError) as info:
        load_run(out, data_folder=inter_only)
    assert str(info.value) == (f"'{inter_only}' has no text.npy, image.npy: "
                               f"{needs}")
    # the folder it was trained on, lacking a file: restore it or move on
    (tiny_folder / "image.npy").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_run(out)
    assert str(info.value) == (
        f"'{tiny_folder}' has no image.npy: the run was trained on "
        f"'{tiny_folder}' with text=text.npy, image=image.npy; restore them, "
        f"or give as 'data_folder' (mde-pyg recommend --data) a folder "
        f"holding tiny.inter and those files")


def test_a_run_without_features_needs_its_interactions_alone(tiny_folder,
                                                             tmp_path):
    from mde_pyg.runs import load_run

    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--data", str(tiny_folder),
                 "--no-features", "--ks", "1,2", "--eval-metric", "recall@2",
                 "--k-user", "2", "--no-progress", "--output", str(out)]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_run(out, data_folder=empty)
    assert str(info.value) == (
        f"'{empty}' has no tiny.inter: the run was trained on "
        f"'{tiny_folder}' with no feature file (--no-features); "
        f"'data_folder' (mde-pyg recommend --data) must be a folder holding "
        f"tiny.inter")


def test_recommend_reads_the_runs_inter_file_among_several(tiny_folder,
                                                           tmp_path):
    from mde_pyg.runs import load_run

    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out)) == 0
    copy = tmp_path / "copy"
    shutil.copytree(tiny_folder, copy)
    (copy / "other.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    model, data = load_run(out, data_folder=copy)  # tiny.inter, as trained
    assert data["item"].num_nodes == 5 and data["user"].num_nodes == 4
    # a folder with one .inter file is read whatever its name, while the
    # folder it was trained on holds tiny.inter or after it is gone
    renamed = tmp_path / "renamed"
    shutil.copytree(tiny_folder, renamed)
    (renamed / "tiny.inter").rename(renamed / "copy.inter")
    _, again = load_run(out, data_folder=renamed)
    assert torch.equal(again["user", "rates", "item"].edge_index,
                       data["user", "rates", "item"].edge_index)
    shutil.rmtree(tiny_folder)
    _, again = load_run(out, data_folder=renamed)
    assert torch.equal(again["user", "rates", "item"].edge_index,
                       data["user", "rates", "item"].edge_index)
    # a file given as the folder
    with pytest.raises(FileNotFoundError, match=(
            f"'{renamed / 'copy.inter'}' is not a folder: the run was "
            f"trained on")):
        load_run(out, data_folder=renamed / "copy.inter")


def test_an_unreadable_data_folder_is_one_line(tiny_folder, tmp_path, capsys,
                                               monkeypatch):
    # (root reads any folder: the refusal is simulated)
    import os

    listdir = os.listdir

    def refuse(path):
        if str(path) == str(tiny_folder):
            raise PermissionError(13, "Permission denied", str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refuse)
    err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "o"))
    assert err == (f"cannot read '{tiny_folder}': [Errno 13] Permission "
                   f"denied: '{tiny_folder}'")


# 3. train --help ############################################################


def test_train_help_says_output_and_model_are_required(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--output DIR output folder (required)" in help_text
    assert "of your own Recommender (required)" in help_text


# 4. models NAME #############################################################


def test_models_name_prints_each_argument_default_and_description(capsys):
    assert main(["models", "mde"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("mde (mde_pyg.models.mde.MDE): the model arguments of "
                        "--set and --grid")
    assert lines[1].split() == ["argument", "default", "description"]
    rows = {line.split()[0]: line for line in lines[2:-2]}
    assert list(rows) == list(get_model_class("mde").default_hparams())
    assert rows["lambda_1"].split() == ["lambda_1", "0.01", "MDA", "weight"]
    assert rows["tau"].split() == ["tau", "0.2", "MSA", "temperature"]
    assert rows["fusion"].split() == ["fusion", "concat", "[choice]",
                                      '"concat"', "or", '"sum",', "see",
                                      "PreferenceFusion"]
    # the columns line up
    assert len({line.index("0.01") for line in lines
                if line.startswith(("lambda_1", "lambda_2"))}) == 1
    assert lines[-2:] == [
        "e.g. --set embedding_dim=VALUE; --grid embedding_dim=V1,V2 selects "
        "on validation; --set and --grid also take the trainer's lr, "
        "batch_size, weight_decay, ... (see mde-pyg train --help)",
        "every argument in full: python -m pydoc mde_pyg.models.mde.MDE"]
    # the "Args:" text on one line, continuation lines joined
    text = docstring_args(get_model_class("mde"))
    assert text["lambda_1"] == "MDA weight. (default: :obj:`0.01`)"
    assert text["num_layers"] == "User-item hops :math:`L`. (default: :obj:`2`)"
    assert "data" in text and "self" not in text


def test_models_name_of_every_model_and_of_none(capsys):
    for name in available_models():
        table = describe_model(name)
        for argument in get_model_class(name).default_hparams():
            assert f"\n{argument} " in table
    assert describe_model("mostpop") == (
        "mostpop (mde_pyg.models.mostpop.MostPop) takes no model argument; "
        "--set and --grid also take the trainer's lr, batch_size, "
        "weight_decay, ... (see mde-pyg train --help)")
    assert usage_error(capsys, ["models", "nope"]).startswith(
        "unknown model 'nope'; choose from ['mostpop', ")
    assert main(["models"]) == 0  # without NAME: the names, as before
    assert capsys.readouterr().out.split() == available_models()


# 5. feature files of another number of rows #################################


def test_feature_rows_beyond_or_short_of_the_items_say_what_to_do(
        tiny_folder, tmp_path, capsys):
    from mde_pyg.data import read_mmrec

    path = tiny_folder / "text.npy"
    np.save(path, np.ones((7, 4), dtype=np.float32))
    with pytest.raises(ValueError) as info:
        read_mmrec(str(tiny_folder), modalities={"text": "text.npy"})
    assert str(info.value) == (
        f"{path} has 7 rows but the interactions name 5 items (itemIDs "
        f"0..4); row n must hold the features of itemID n, and items after "
        f"the largest itemID of the interactions are not supported: save "
        f"its first 5 rows to a new file and name that one")
    np.save(path, np.ones((3, 4), dtype=np.float32))
    err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "o"))
    assert err == (
        f"cannot read '{tiny_folder}': {path} has 3 rows but the "
        f"interactions name 5 items (itemIDs 0..4); row n must hold the "
        f"features of itemID n, so itemIDs 3..4 have none: add their rows, "
        f"or give the feature file of these interactions")
    np.save(path, np.ones((4, 4), dtype=np.float32))  # one row short
    with pytest.raises(ValueError, match="so itemID 4 has none: add"):
        read_mmrec(str(tiny_folder), modalities={"text": "text.npy"})


# 6. a folder without a .inter file ##########################################


def test_a_folder_without_interactions_names_the_subfolders_that_hold_them(
        tiny_folder, tmp_path, capsys):
    argv = ["train", "--model", "mostpop", "--data", str(tmp_path),
            "--output", str(tmp_path / "o")]
    # tmp_path holds tiny/ (tiny.inter) and no feature file: no word of
    # --no-features, which would not help
    assert usage_error(capsys, argv) == (
        f"cannot read '{tmp_path}': Expected exactly one '*.inter' file in "
        f"'{tmp_path}', found no '*.inter' file; did you mean "
        f"'{tiny_folder}'?")
    shutil.copytree(tiny_folder, tmp_path / "other")
    assert usage_error(capsys, argv).endswith(
        f"found no '*.inter' file; did you mean one of "
        f"{[str(tmp_path / 'other'), str(tiny_folder)]}?")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv[argv.index("--data") + 1] = str(empty)
    assert usage_error(capsys, argv) == (
        f"cannot read '{empty}': Expected exactly one '*.inter' file in "
        f"'{empty}', found no '*.inter' file; give the folder that holds "
        f"'<name>.inter' and the modality '.npy' files")
    # several stay a choice for --inter-file
    (tiny_folder / "b.inter").write_text("userID\titemID\tx_label\n")
    argv[argv.index("--data") + 1] = str(tiny_folder)
    assert usage_error(capsys, argv).endswith(
        "found several: ['b.inter', 'tiny.inter']; pass 'inter_file' "
        "(--inter-file) to choose one")


# 7. resume mismatch of settings recorded only when set ######################


def test_a_resume_mismatch_shows_the_default_of_an_unrecorded_setting(
        tiny_folder, tmp_path, capsys):
    out = tmp_path / "o"
    args = tiny_args(tiny_folder, out, "vbpr", "--max-epochs", "1")
    assert main(args) == 0
    err = usage_error(capsys, args + ["--resume", "--feature-min-std",
                                      "1e-4", "--knn-include-self"])
    assert "(data.feature_min_std 0.0 -> 0.0001; data.knn_include_self " \
           "False -> True)" in err
    other = tmp_path / "other"
    args = tiny_args(tiny_folder, other, "vbpr", "--max-epochs", "1",
                     "--knn-include-self")
    assert main(args) == 0
    err = usage_error(capsys, args[:-1] + ["--resume"])
    assert "(data.knn_include_self True -> False)" in err


# 8. --resume keeps the curve of a run trained with --plot ###################


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="--plot needs matplotlib")
def test_resume_redraws_the_curve_of_a_run_trained_with_plot(
        tiny_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    args = tiny_args(tiny_folder, out, "lightgcn")
    assert main(args + ["--max-epochs", "1", "--plot"]) == 0
    curve = out / "curve.png"
    first = curve.read_bytes()
    capsys.readouterr()
    from mde_pyg import cli

    drawn = []
    plot_curve = cli.plot_curve

    def recorded(history, path, metric="recall@20"):
        drawn.append(([h["epoch"] for h in history], path))
        plot_curve(history, path, metric)

    monkeypatch.setattr(cli, "plot_curve", recorded)
    assert main(args + ["--max-epochs", "3", "--resume"]) == 0  # no --plot
    assert "removed" not in capsys.readouterr().out
    assert drawn == [([0, 1, 2], curve)]  # every epoch, the resumed too
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.read_bytes() != first
    # without matplotlib it cannot be redrawn: it goes, as before
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name == "matplotlib" else find_spec(name, *a))
    assert main(args + ["--max-epochs", "4", "--resume"]) == 0
    assert not curve.exists()
    assert (f"removed {curve}, made from the run's earlier epochs; --plot "
            f"makes it again") in capsys.readouterr().out
    assert len(drawn) == 1


# 9. a model of the interactions alone, given feature files ##################


def test_a_model_without_features_notes_no_features(tiny_folder, tmp_path,
                                                    capsys):
    note = ("note: lightgcn reads no item features; --no-features (with no "
            "--modality) skips reading them")
    assert main(tiny_args(tiny_folder, tmp_path / "a", "lightgcn",
                          "--max-epochs", "1")) == 0
    assert note in capsys.readouterr().err.splitlines()
    # not for a resumed run (the advice is for a new one), nor without a
    # --data folder
    assert main(tiny_args(tiny_folder, tmp_path / "a", "lightgcn",
                          "--max-epochs", "2", "--resume")) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["train", "--model", "lightgcn", "--dataset", "synthetic",
                 "--max-epochs", "1", "--no-progress", "--output",
                 str(tmp_path / "s")]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(tiny_args(tiny_folder, tmp_path / "b", "vbpr",
                          "--max-epochs", "1")) == 0
    assert "note:" not in capsys.readouterr().err
    bare = ["train", "--model", "mostpop", "--data", str(tiny_folder),
            "--no-features", "--ks", "1,2", "--eval-metric", "recall@2",
            "--k-user", "2", "--no-progress", "--output", str(tmp_path / "c")]
    assert main(bare) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("name", available_models())
def test_reads_features_says_whether_a_model_builds_without_them(
        name, tiny_folder):
    from mde_pyg.data import read_mmrec
    from mde_pyg.transforms import MultiModalGraphs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = MultiModalGraphs(k_user=2, k_item=2)(
            read_mmrec(str(tiny_folder), modalities={}))
    if get_model_class(name).reads_features:
        with pytest.raises(ValueError, match="no item features"):
            build_model(name, data)
    else:
        build_model(name, data)


# 10. config.hparams beside config.model_hparams #############################


def test_results_record_the_set_values_and_every_model_argument(
        tiny_folder, tmp_path):
    out = tmp_path / "o"
    assert main(tiny_args(tiny_folder, out, "lightgcn", "--max-epochs", "1",
                          "--set", "num_layers=1")) == 0
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["hparams"] == {"num_layers": 1}  # as given to --set
    assert config["model_hparams"] == {  # every constructor argument
        "embedding_dim": 64, "num_layers": 1, "reg_weight": 1e-4,
        "fused": True}


# 11. the error of a command under one usage line ############################


def test_an_error_after_parsing_is_under_one_usage_line(tiny_folder,
                                                        tmp_path, capsys):
    args = tiny_args(tiny_folder, tmp_path / "o", "lightgcn",
                     "--set", "num_layers=-1")
    assert cli_usage_error(capsys, args) == (
        "mde-pyg train: error: cannot train 'lightgcn': 'num_layers' must "
        "be >= 0, got -1")
    with pytest.raises(SystemExit):
        main(args)
    assert capsys.readouterr().err.splitlines()[0] == (
        "usage: mde-pyg train [options]  (all of them: mde-pyg train "
        "--help)")
    assert not (tmp_path / "o").exists()


def test_an_unknown_option_names_its_command_and_the_closest_one(
        tiny_folder, tmp_path, capsys):
    args = tiny_args(tiny_folder, tmp_path / "o")
    assert cli_usage_error(capsys, args + ["--epochs", "5", "--sed=1"]) == (
        "mde-pyg train: error: unrecognized arguments: --epochs 5 --sed=1 "
        "(--epochs: did you mean --max-epochs?; --sed: did you mean "
        "--seed?)")
    assert cli_usage_error(capsys, ["models", "mde", "extra"]) == (
        "mde-pyg models: error: unrecognized arguments: extra")
    assert not (tmp_path / "o").exists()
