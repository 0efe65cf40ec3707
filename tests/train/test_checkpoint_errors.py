"""Bad checkpoints, bad run files and bad devices: errors that name the file
or the argument and say what to do."""

import json
import re

import pytest
import torch

from mde_pyg.cli import load_data, main
from mde_pyg.models import build_model
from mde_pyg.runs import load_run
from mde_pyg.train import Trainer
from mde_pyg.train.trainer import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    CheckpointError,
    load_checkpoint,
)


@pytest.fixture
def tiny_data(tiny_folder):
    return load_data(data=tiny_folder, modalities={"text": "text.npy"},
                     k_user=2, k_item=2)


def trainer(data, out=None, max_epochs=1, **kwargs):
    torch.manual_seed(0)
    model = build_model("lightgcn", data, embedding_dim=4, num_layers=1)
    return Trainer(model, data, max_epochs=max_epochs, batch_size=8,
                   ks=(1, 2), eval_metric="recall@2", progress=False,
                   output_dir=out, **kwargs)


def truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


@pytest.mark.parametrize("device", ["gpu", "cuda:x", 3.5])
def test_a_bad_device_names_the_argument_and_its_forms(tiny_data, device):
    with pytest.raises(ValueError) as info:
        trainer(tiny_data, device=device)
    message = str(info.value)
    assert message == (f"'device' must be cpu, cuda or cuda:N (the index "
                       f"of a GPU), or a torch.device; got {device!r}")


def test_good_devices_are_accepted(tiny_data):
    assert trainer(tiny_data, device="cpu").device == torch.device("cpu")
    assert trainer(tiny_data, device=torch.device("cpu")).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_cuda_without_cuda_says_so(tiny_data):
    with pytest.raises(ValueError, match="'device' is 'cuda:0' but CUDA is "
                                         "not available; use cpu"):
        trainer(tiny_data, device="cuda:0")


@pytest.mark.parametrize("damage, message", [
    (truncate, "is truncated or not a mde-pyg checkpoint \\(."),
    (lambda p: p.write_bytes(b""), "is truncated or not a mde-pyg"),
    (lambda p: p.write_text("not a checkpoint"), "is truncated or not a"),
    (lambda p: torch.save([1, 2], p), "holds a list, not the dict of a "
                                      "mde-pyg checkpoint"),
    (lambda p: torch.save({k: v for k, v in torch.load(p).items()
                           if k != "model"}, p),
     "has no 'model' entry: it is not a complete mde-pyg checkpoint"),
    (lambda p: torch.save({"epoch": 1}, p),
     "has no 'model', 'sampler', 'rng', 'history', 'best', 'best_state', "
     "'optimizer' entries"),
])
def test_resume_from_a_bad_last_checkpoint(tiny_data, tmp_path, damage,
                                           message):
    out = tmp_path / "run"
    trainer(tiny_data, out).fit()
    last = out / LAST_CHECKPOINT
    damage(last)
    before = last.read_bytes()
    with pytest.raises(CheckpointError) as info:
        trainer(tiny_data, out, max_epochs=2).fit(resume=True)
    text = str(info.value)
    assert text.startswith(f"'{last}' ")
    assert re.search(message, text)
    assert text.endswith("delete it, or train without resume (mde-pyg train "
                         "without --resume) to start the run again")
    assert last.read_bytes() == before  # nothing trained or written


def test_load_checkpoint_keeps_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(IsADirectoryError):
        load_checkpoint(tmp_path)
    torch.save({"model": {}}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt", ["model"]) == {"model": {}}
    with pytest.raises(CheckpointError, match="; restore it$"):
        load_checkpoint(tmp_path / "ok.pt", ["model", "epoch"], "restore it")


@pytest.fixture
def mostpop_run(tiny_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--data", str(tiny_folder),
                 "--modality", "text=text.npy", "--ks", "1,2",
                 "--eval-metric", "recall@2", "--k-user", "2", "--k-item",
                 "2", "--no-progress", "--output", str(out)]) == 0
    return out


def edit_results(run, edit):
    path = run / "results.json"
    summary = json.loads(path.read_text())
    edit(summary)
    path.write_text(json.dumps(summary))


def test_load_run_with_a_bad_best_checkpoint(mostpop_run):
    best = mostpop_run / BEST_CHECKPOINT
    load_run(mostpop_run)  # intact: loads
    truncate(best)
    with pytest.raises(CheckpointError, match=(
            f"^'{best}' is truncated or not a mde-pyg checkpoint .*; train "
            f"the run again \\(or restore the file from a copy\\)$")):
        load_run(mostpop_run)
    torch.save({"epoch": 0}, best)
    with pytest.raises(CheckpointError, match=f"^'{best}' has no 'model' "
                                              f"entry"):
        load_run(mostpop_run)
    torch.save({"model": None}, best)
    with pytest.raises(CheckpointError, match="has a \"model\" of type "
                                              "NoneType, not the model's"):
        load_run(mostpop_run)


def test_load_run_with_an_incomplete_results_file(mostpop_run):
    path = mostpop_run / "results.json"
    edit_results(mostpop_run, lambda s: s.update(checkpoint=None))
    with pytest.raises(ValueError, match=(
            f"^'{path}' has a \"checkpoint\" of None, not the path of the "
            f"run's best weights .*remove the key to use best.pt")):
        load_run(mostpop_run)
    edit_results(mostpop_run, lambda s: s.pop("checkpoint"))
    model, _ = load_run(mostpop_run)  # an older file: best.pt
    assert type(model).__name__ == "MostPop"
    edit_results(mostpop_run, lambda s: s.pop("model"))
    with pytest.raises(ValueError, match=(
            f"^'{path}' has no \"model\" \\(the registered model name, a "
            f"string\\); .*train the run again$")):
        load_run(mostpop_run)


def test_load_run_names_a_bad_model_entry_and_missing_weights(mostpop_run):
    path = mostpop_run / "results.json"
    # a "model" that is not a name is refused as a missing one
    edit_results(mostpop_run, lambda s: s.update(model=["mostpop"]))
    with pytest.raises(ValueError, match=(
            f"^'{path}' has no \"model\" \\(the registered model name, a "
            f"string\\); .*train the run again$")):
        load_run(mostpop_run)
    edit_results(mostpop_run, lambda s: s.update(model="mostpop"))
    best = mostpop_run / BEST_CHECKPOINT
    best.unlink()
    with pytest.raises(FileNotFoundError, match=(
            f"^'{best}', the run's best weights, is missing; train the run "
            f"again \\(or restore the file\\)$")):
        load_run(mostpop_run)


def test_a_gpu_index_beyond_the_machine_is_named(tiny_data, monkeypatch):
    # as on a machine with 2 GPUs (nothing is moved: the check comes first)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"'device' is 'cuda:2' but this "
                       r"machine has 2 GPU\(s\): cuda:0 to cuda:1"):
        trainer(tiny_data, device="cuda:2")


def test_a_checkpoint_of_foreign_objects_is_not_called_truncated(tmp_path):
    import argparse

    from mde_pyg.train import CheckpointError, load_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"model": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match=r"holds objects a mde-pyg "
                       r"checkpoint never holds \(.*Unsupported global.*"
                       r"Namespace.*\); it was not written by mde-pyg"):
        load_checkpoint(path, ["model"])
    assert path.exists()
