import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mde_pyg.cli import load_data
from mde_pyg.runs import load_run
from mde_pyg.train import Evaluator

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_amazon_baby_example_on_another_folder(lfm2k_path, tmp_path):
    # The example's run is one that load_run (and mde-pyg recommend)
    # reloads: its weights give the metrics the example reported.
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, "examples", "amazon_baby.py"),
         "--data", lfm2k_path, "--modality", "text=all-MiniLM-L6-v2.npy",
         "--modality", "audio=vggish.npy", "--max-epochs", "1",
         "--output", str(out)],
        capture_output=True, text=True, check=True)
    result = json.loads((out / "results.json").read_text())
    assert f"{result['test']['recall@20']:.4f}" in done.stdout
    model, data = load_run(out)
    assert Evaluator(data, "test")(model) == result["test"]
    # run again into the same folder: refused before the data is read,
    # in one line; --overwrite trains it again
    again = subprocess.run(
        [sys.executable, osp.join(ROOT, "examples", "amazon_baby.py"),
         "--data", lfm2k_path, "--output", str(out)],
        capture_output=True, text=True)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert f"--output '{out}' already holds a run (results.json, last.pt" \
        in again.stderr and "--overwrite to train it again" in again.stderr


def load_example(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_model_example_beats_its_baselines():
    # The example's model, built from the package's layers and losses,
    # uses the planted per-modality taste of the synthetic data: on
    # validation it beats LightGCN (IDs only) and MostPop.
    example = load_example("custom_model")
    data = load_data(dataset="synthetic", feature_norm="standardize")
    results = example.compare(data, max_epochs=20)
    valid = {name: r["valid"]["recall@20"] for name, r in results.items()}
    assert valid["custom"] > 1.2 * valid["lightgcn"]
    assert valid["lightgcn"] > valid["mostpop"]
    parts = results["custom"]["history"][0]["parts"]
    assert set(parts) == {"bpr", "mda", "msa", "reg"}
    assert 0 < parts["mda"] < 0.01 and 0 < parts["msa"]  # lambda_1 = 0.01


def test_swap_losses_example_only_adds_the_losses():
    # With both weights at zero the "mde" variant is exactly "content"
    # (same seed, batches and negatives); with MDE's weights it differs.
    import argparse

    example = load_example("swap_losses")
    args = argparse.Namespace(
        data=None, modality=[], epochs=4, patience=20, eval_every=2,
        batch_size=2048,
        dim=16, layers=2, lr=1e-2, reg=1e-4, lambda_1=0.0, lambda_2=0.0,
        tau=0.2, device="cpu", seed=0)
    data = example.load(args)
    content = example.run("content", data, args)
    assert example.run("mde", data, args) == content
    args.lambda_1 = args.lambda_2 = 0.5
    assert example.run("mde", data, args) != content
    assert 0 < content["recall@20"] <= 1
    # --seed seeds the training, not the data: seeds compare on one dataset
    args.seed = 1
    other = example.load(args)
    for key in data.node_types + data.edge_types:
        for name, value in data[key].items():
            same = (torch.equal(other[key][name], value)
                    if torch.is_tensor(value) else other[key][name] == value)
            assert same, (key, name)


def test_swap_losses_example_stops_early():
    # evaluated every 2 epochs (1, 3, 5, ...), it stops at the first
    # evaluation 4 epochs past the best one, far before the 200 allowed
    import argparse

    example = load_example("swap_losses")
    args = argparse.Namespace(
        data=None, modality=[], epochs=200, patience=4, eval_every=2,
        batch_size=2048, dim=16, layers=2, lr=1e-2, reg=1e-4, lambda_1=0.01,
        lambda_2=0.01, tau=0.2, device="cpu", seed=0)
    result = example.run("lightgcn", example.load(args), args)
    assert result["epoch"] % 2 == 1
    assert result["epochs_run"] == result["epoch"] + 4 + 1 < 200


# Bad input: one line on stderr, exit status 2, as mde-pyg


def example_error(capsys, monkeypatch, name, *argv):
    """Run the example's ``main`` on ``argv``; return its one-line error."""
    example = load_example(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    with pytest.raises(SystemExit) as info:
        example.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["swap_losses", "custom_model"])
def test_examples_reject_a_modality_without_its_file(
        name, tiny_folder, capsys, monkeypatch):
    # 'text' alone names no file: rejected as mde-pyg rejects it.
    err = example_error(capsys, monkeypatch, name, "--data",
                        str(tiny_folder), "--modality", "text")
    assert err == (f"{name}.py: error: --modality expects KEY=VALUE, got "
                   f"'text'")
    # The synthetic data has its own modalities: --modality needs --data.
    err = example_error(capsys, monkeypatch, name, "--modality",
                        "text=text.npy")
    assert err == (f"{name}.py: error: --modality needs --data FOLDER (the "
                   f"synthetic data has its own modalities)")


@pytest.mark.parametrize("name", ["swap_losses", "custom_model"])
def test_examples_name_a_missing_feature_file(name, tiny_folder, capsys,
                                              monkeypatch):
    err = example_error(capsys, monkeypatch, name, "--data",
                        str(tiny_folder), "--modality", "text=missing.npy")
    assert err.startswith(f"{name}.py: error: cannot read '{tiny_folder}': ")
    assert f"'{tiny_folder / 'missing.npy'}' does not exist" in err


def test_amazon_baby_example_asks_for_features(tiny_folder, tmp_path, capsys,
                                               monkeypatch):
    # a folder without MMRec's feature files (as shared/data/baby_graph) is
    # refused before anything is read or written, naming --modality
    output = tmp_path / "run"
    err = example_error(capsys, monkeypatch, "amazon_baby", "--data",
                        str(tiny_folder), "--output", str(output))
    assert err.startswith(
        f"amazon_baby.py: error: '{tiny_folder}' holds none of MMRec's "
        f"feature files (image_feat.npy, text_feat.npy); name each "
        f"modality's .npy with --modality NAME=FILE")
    assert not output.exists()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--device", "mps"], "--device is 'mps', but mde-pyg is built and "
                          "tested for cpu and cuda only"),
])
def test_swap_losses_refuses_bad_epochs_and_devices(argv, message, capsys,
                                                    monkeypatch):
    err = example_error(capsys, monkeypatch, "swap_losses", *argv)
    assert err.startswith(f"swap_losses.py: error: {message}")


def test_custom_model_exits_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, "examples", "custom_model.py"),
         "--data", str(tmp_path / "nowhere")],
        capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"custom_model.py: error: data folder '{tmp_path / 'nowhere'}' does "
        f"not exist")
