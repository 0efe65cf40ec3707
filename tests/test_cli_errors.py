"""Bad input to ``mde-pyg``: one line on stderr that
names the file, row or option and the fix; exit status 2; nothing
written."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import usage_error

from mde_pyg.cli import main


def tiny_args(tiny_folder, out, model="mostpop", *extra):
    return ["train", "--model", model, "--data", str(tiny_folder),
            "--modality", "text=text.npy", "--ks", "1,2", "--eval-metric",
            "recall@2", "--k-user", "2", "--k-item", "2", "--no-progress",
            "--output", str(out), *extra]


def test_a_bad_row_of_an_amazon_dataset_names_dataset_file_and_row(
        tmp_path, capsys):
    raw = tmp_path / "baby" / "raw"
    raw.mkdir(parents=True)
    (raw / "baby.inter").write_text(
        "userID\titemID\tx_label\n0\t0\t0\n1\t1\t1\n0\tseven\t2\n")
    for name in ("image_feat.npy", "text_feat.npy"):
        np.save(raw / name, np.zeros((2, 3), dtype=np.float32))
    out = tmp_path / "out"
    err = usage_error(capsys, [
        "train", "--model", "mostpop", "--dataset", "baby", "--root",
        str(tmp_path / "baby"), "--no-progress", "--output", str(out)])
    assert err.startswith(f"mde-pyg train: error: cannot load the 'baby' "
                          f"dataset from '{tmp_path / 'baby'}': ")
    # the reader's own message names the file, the row and the value
    assert f"{raw / 'baby.inter'}, line 4" in err and "'seven'" in err
    assert not out.exists()
    # and no empty processed/ folder is left beside raw/
    assert sorted(p.name for p in (tmp_path / "baby").iterdir()) == ["raw"]


def test_train_output_that_is_a_file_fails_before_training(
        tiny_folder, tmp_path, capsys, monkeypatch):
    from mde_pyg import cli

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before --output was "
                             "checked")

    monkeypatch.setattr(cli, "load_data_source", no_data)
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    err = usage_error(capsys, tiny_args(tiny_folder, taken))
    assert err == (f"mde-pyg train: error: --output '{taken}' is an existing "
                   f"file, not a folder; give a new folder (or the folder "
                   f"of the run to --resume)")
    err = usage_error(capsys, tiny_args(tiny_folder, taken / "a" / "b"))
    assert err == (f"mde-pyg train: error: --output "
                   f"'{taken / 'a' / 'b'}' cannot be made: '{taken}' is a "
                   f"file, not a folder; give another --output")
    assert taken.read_text() == "mine\n"
    # a folder where nothing can be created (read-only, /proc, ...), found
    # by creating and removing a probe folder there (root may write where
    # the mode says no, so the refusal is staged)
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "a" / "b"))
    assert err == (f"mde-pyg train: error: --output '{tmp_path / 'a' / 'b'}' "
                   f"cannot be made: nothing can be created in '{tmp_path}' "
                   f"(Permission denied); give another --output")
    monkeypatch.undo()
    before = sorted(p.name for p in tmp_path.iterdir())
    cli.check_output_folder(tmp_path / "a")  # the probe leaves nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "a").exists()


def test_recommend_output_that_is_a_folder_fails_before_loading(
        tmp_path, capsys):
    # The run does not exist: the --output check comes first.
    folder = tmp_path / "recs"
    folder.mkdir()
    err = usage_error(capsys, ["recommend", str(tmp_path / "no_run"),
                               "--output", str(folder)])
    assert err == (f"mde-pyg recommend: error: --output '{folder}' is a "
                   f"folder; give a file name, e.g. --output "
                   f"{folder / 'recommendations.tsv'}")
    (tmp_path / "file").write_text("")
    err = usage_error(capsys, ["recommend", str(tmp_path / "no_run"),
                               "--output", str(tmp_path / "file" / "r.tsv")])
    assert f"'{tmp_path / 'file'}' is a file, not a folder" in err
    assert list(folder.iterdir()) == []


def test_resume_from_a_truncated_last_checkpoint(tiny_folder, tmp_path,
                                                 capsys):
    out = tmp_path / "run"
    args = tiny_args(tiny_folder, out, "lightgcn", "--max-epochs", "1")
    assert main(args) == 0
    last = out / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    results = (out / "results.json").read_text()
    err = usage_error(capsys, args + ["--max-epochs", "2", "--resume"])
    assert err.startswith(f"mde-pyg train: error: cannot --resume: '{last}' is "
                          f"truncated or not a mde-pyg checkpoint (")
    assert err.endswith("; delete it, or train without resume (mde-pyg "
                        "train without --resume) to start the run again")
    assert (out / "results.json").read_text() == results  # not rewritten


def test_recommend_with_a_bad_run(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out)) == 0
    best = out / "best.pt"
    raw = best.read_bytes()
    best.write_bytes(raw[:len(raw) // 2])
    err = usage_error(capsys, ["recommend", str(out)])
    assert err.startswith(f"mde-pyg recommend: error: cannot load the run "
                          f"'{out}': '{best}' is truncated or not a mde-pyg "
                          f"checkpoint (")
    assert err.endswith("; train the run again (or restore the file from a "
                        "copy)")
    assert not (out / "recommendations.tsv").exists()
    best.write_bytes(raw)
    summary = json.loads((out / "results.json").read_text())
    del summary["model"]
    (out / "results.json").write_text(json.dumps(summary))
    err = usage_error(capsys, ["recommend", str(out)])
    assert f"'{out / 'results.json'}' has no \"model\"" in err
    assert err.endswith("train the run again")


def test_a_bad_device_names_the_valid_forms(tiny_folder, tmp_path, capsys):
    err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "o",
                                        "mostpop", "--device", "gpu"))
    assert err == ("mde-pyg train: error: --device must be cpu, cuda or "
                   "cuda:N (the index of a GPU), or a torch.device; got "
                   "'gpu'")


def test_devices_other_than_cpu_and_cuda_are_refused():
    from mde_pyg.train.trainer import parse_device

    for device in ("mps", "meta", torch.device("meta")):
        with pytest.raises(ValueError, match=r"'device' is .*(meta|mps).*, but "
                           r"mde-pyg is built and tested for cpu and cuda "
                           r"only"):
            parse_device(device)
    assert parse_device("cpu") == torch.device("cpu")


def test_recommend_of_a_file_names_the_run(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out)) == 0
    results = out / "results.json"
    err = usage_error(capsys, ["recommend", str(results)])
    assert err == (f"mde-pyg recommend: error: RUN '{results}' is a file; "
                   f"give the --output folder of an 'mde-pyg train' run")


def test_a_python_run_is_refused_before_the_data_is_read(tmp_path, capsys):
    # a Trainer(output_dir=...) run from Python: best.pt and history.json,
    # no results.json nor last.pt; the data folder is not even looked at
    out = tmp_path / "run"
    out.mkdir()
    for name in ("best.pt", "history.json"):
        (out / name).write_text("x")
    err = usage_error(capsys, tiny_args(tmp_path / "no-such-data", out))
    assert err == (f"mde-pyg train: error: --output '{out}' already holds "
                   f"a run (best.pt, history.json); pass --resume to "
                   f"continue it, --overwrite to train it again from "
                   f"scratch, or give another --output")


def test_a_finished_run_is_not_trained_over(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out)) == 0
    before = (out / "results.json").read_text()
    err = usage_error(capsys, tiny_args(tiny_folder, out))
    assert err == (f"mde-pyg train: error: --output '{out}' already holds "
                   f"a run (results.json, best.pt, history.json); pass "
                   f"--resume to continue it, --overwrite to train it "
                   f"again from scratch, or give another --output")
    assert (out / "results.json").read_text() == before
    # --overwrite trains again, into the same files
    assert main(tiny_args(tiny_folder, out, "mostpop", "--overwrite")) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["test"] == json.loads(before)["test"]  # same seed, same run


def test_feature_min_std_zeroes_a_noise_column_and_is_recorded(
        tiny_folder, tmp_path, capsys):
    from mde_pyg.runs import load_run

    text = np.load(tiny_folder / "text.npy")
    text[:, 1] = [1e-8, -1e-8, 1e-8, -1e-8, 1e-8]  # a column of noise
    np.save(tiny_folder / "text.npy", text)
    runs = {}
    for min_std in ("0", "1e-4"):
        out = tmp_path / f"o{min_std}"
        assert main(tiny_args(tiny_folder, out, "vbpr", "--max-epochs", "1",
                              "--feature-min-std", min_std)) == 0
        summary = json.loads((out / "results.json").read_text())
        runs[min_std] = (summary["config"]["data"], load_run(out)[1])
    # recorded only when used, so earlier runs compare equal on resume
    assert "feature_min_std" not in runs["0"][0]
    assert runs["1e-4"][0]["feature_min_std"] == 1e-4
    # the reloaded data as trained: the noise column standardised to unit
    # variance (rows then unit), or zeroed
    kept, zeroed = (runs[m][1]["item"].x_text for m in ("0", "1e-4"))
    assert kept[:, 1].abs().min() > 0.1
    assert zeroed[:, 1].tolist() == [0.0] * 5
    for extra, message in (
            (("--feature-min-std", "1.5"),
             "--feature-min-std must be a number in [0, 1), got 1.5"),
            (("--feature-norm", "l2", "--feature-min-std", "0.1"),
             "--feature-min-std applies to --feature-norm standardize only")):
        err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "bad",
                                            "vbpr", *extra))
        assert err.endswith(message)


def test_knn_include_self_builds_mmrecs_item_graph_and_is_recorded(
        tiny_folder, tmp_path, capsys):
    from mde_pyg.runs import load_run

    graphs = {}
    for extra in ((), ("--knn-include-self",)):
        out = tmp_path / f"o{len(extra)}"
        assert main(tiny_args(tiny_folder, out, "vbpr", "--max-epochs", "1",
                              *extra)) == 0
        config = json.loads((out / "results.json").read_text())["config"]
        edge_index = load_run(out)[1]["item", "similar_text",
                                      "item"].edge_index
        graphs[bool(extra)] = (config["data"], edge_index)
    # recorded only when used, so earlier runs compare equal on resume
    assert "knn_include_self" not in graphs[False][0]
    assert graphs[True][0]["knn_include_self"] is True
    # --k-item 2: each item's two nearest other items, or itself and the
    # nearest other (MMRec's top-k over the whole similarity row)
    text = torch.from_numpy(np.load(tiny_folder / "text.npy"))
    cos = torch.nn.functional.normalize(text, dim=1)
    cos = cos @ cos.t()
    for include_self, (_, edge_index) in graphs.items():
        for item in range(5):
            nbrs = set(edge_index[0, edge_index[1] == item].tolist())
            if include_self:
                expected = set(cos[item].topk(2).indices.tolist())
                assert item in expected
            else:
                expected = set(cos[item].index_fill(0, torch.tensor(item),
                                                    -2).topk(2).indices.tolist())
            assert nbrs == expected
    config = tmp_path / "bad.toml"
    config.write_text('knn_include_self = "yes"\n')
    err = usage_error(capsys, tiny_args(tiny_folder, tmp_path / "bad", "vbpr",
                                        "--config", str(config)))
    assert err.endswith(f"--knn-include-self ('knn_include_self' in "
                        f"'{config}') must be true or false, got 'yes'")


def test_paths_of_the_wrong_kind_are_named(tiny_folder, tmp_path, capsys):
    inter = tiny_folder / "tiny.inter"
    err = usage_error(capsys, ["train", "--model", "mostpop", "--data",
                               str(inter), "--output", str(tmp_path / "o")])
    assert err.endswith(f"data folder '{inter}' is a file; give the folder "
                        f"that holds it (and --inter-file tiny.inter if it "
                        f"is the .inter file)")
    missing = tmp_path / "typo"
    err = usage_error(capsys, ["recommend", str(missing)])
    assert err.endswith(f"'{missing}' does not exist; give the --output "
                        f"folder of a finished 'mde-pyg train' run")


def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    pytest.importorskip("yaml")
    config = tmp_path / "tab.yaml"
    config.write_text("model: mde\n\tlr: 0.1\n")
    err = usage_error(capsys, ["train", "--config", str(config)])
    assert err.startswith(f"mde-pyg train: error: cannot parse '{config}': ")
    assert "<unicode string>" not in err and "line 2" in err


def test_no_features_trains_an_interaction_model_on_a_bare_folder(
        tiny_folder, tmp_path, capsys):
    from mde_pyg.runs import load_run

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tiny.inter").write_text((tiny_folder / "tiny.inter").read_text())
    out = tmp_path / "o"
    argv = ["train", "--model", "lightgcn", "--data", str(bare),
            "--no-features", "--ks", "1,2", "--eval-metric", "recall@2",
            "--k-user", "2", "--max-epochs", "1", "--no-progress",
            "--output", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["config"]["data"]["no_features"] is True
    model, data = load_run(out)  # reloaded without features as well
    assert [k for k in data["item"].keys() if k.startswith("x_")] == []
    # a model that reads features says so; --no-features needs --data alone
    err = usage_error(capsys, [*argv[:2], "vbpr", *argv[3:-1],
                               str(tmp_path / "v")])
    assert err.endswith("cannot train 'vbpr': The data has no item features "
                        "'x_<modality>', which this model reads; load them "
                        "with the interactions (read_mmrec's 'modalities', "
                        "mde-pyg train --modality NAME=FILE, not "
                        "--no-features)")
    # without --no-features, a bare folder names that flag for such models
    err = usage_error(capsys, [a for a in argv[:-1] if a != "--no-features"]
                      + [str(tmp_path / "f")])
    assert err.endswith("does not exist; pass an existing file as "
                        "'modalities={name: file}' (--modality NAME=FILE); "
                        "or, for a model without features (mostpop, "
                        "lightgcn), --no-features reads the interactions "
                        "alone")
    err = usage_error(capsys, [*argv[:-1], str(tmp_path / "m"),
                               "--modality", "text=text.npy"])
    assert err.endswith("--no-features reads a --data folder's interactions "
                        "alone; give --data and no --modality")


def test_a_bad_value_in_a_config_file_names_the_file(tiny_folder, tmp_path,
                                                     capsys):
    config = tmp_path / "run.toml"
    config.write_text('max_epochs = "2"\n')
    argv = tiny_args(tiny_folder, tmp_path / "o", "mostpop", "--config",
                     str(config))
    err = usage_error(capsys, argv)
    assert err.endswith(f"--max-epochs ('max_epochs' in '{config}'): "
                        f"'max_epochs' must be a number, got '2'")
    # the command line's value wins over the file's
    assert main(argv + ["--max-epochs", "1"]) == 0
