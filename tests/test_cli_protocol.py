"""The CLI's evaluation protocol: its defaults, what it prints, the order in
which it builds graphs and rescales features, and resumed runs."""

import json

import numpy as np
import pytest
import torch

from mde_pyg.cli import load_data, main
from mde_pyg.data import read_mmrec
from mde_pyg.transforms import ItemKNNGraph, similar_edge_type


def tiny_args(tiny_folder, out, model, *extra):
    return ["train", "--model", model, "--data", str(tiny_folder),
            "--modality", "text=text.npy", "--modality", "image=image.npy",
            "--ks", "1,2,3", "--eval-metric", "recall@3", "--k-user", "2",
            "--k-item", "2", "--no-progress", "--output", str(out), *extra]


def printed_table(out: str) -> dict[str, dict[str, float]]:
    """Parse the metric table ``format_metrics`` printed into
    ``{label: {"recall@k": value, ...}}``."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines)
                if line.split()[:1] == ["K"])
    names = lines[start].split()[1:]
    table: dict[str, dict[str, float]] = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) != len(names) + 2 or not cells[1].isdigit():
            break
        label, k = cells[0], cells[1]
        for name, value in zip(names, cells[2:]):
            table.setdefault(label, {})[f"{name}@{k}"] = float(value)
    return table


def test_printed_table_is_the_results_file(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_args(tiny_folder, out, "mostpop")) == 0
    table = printed_table(capsys.readouterr().out)
    result = json.loads((out / "results.json").read_text())
    assert set(table) == {"valid", "test"}
    for split in ("valid", "test"):
        assert len(table[split]) == 12  # 4 metrics x K in {1, 2, 3}
        for key, value in table[split].items():
            assert value == pytest.approx(result[split][key], abs=5e-5)
    # MostPop's valid ranking by hand (see test_cli.py): recall@1..3
    assert [table["valid"][f"recall@{k}"] for k in (1, 2, 3)] == [0.0, 0.5,
                                                                  1.0]


def test_defaults_are_the_papers_protocol(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--dataset", "synthetic",
                 "--no-progress", "--output", str(out)]) == 0
    config = json.loads((out / "results.json").read_text())["config"]
    # METHOD.md section 4 and MDE's training setup
    assert config["patience"] == 20 and config["max_epochs"] == 1000
    assert config["batch_size"] == 2048 and config["lr"] == 1e-3
    assert config["eval_metric"] == "recall@20"
    assert config["ks"] == [5, 10, 20, 50]
    assert config["data"]["feature_norm"] == "standardize"
    assert config["data"]["k_user"] == 40 and config["data"]["k_item"] == 10


def test_set_reaches_the_model(tiny_folder, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(tiny_folder, out, "lightgcn", "--max-epochs", "1",
                     "--set", "num_layers=1", "--set", "reg_weight=0.01")
    assert main(args) == 0
    config = json.loads((out / "results.json").read_text())["config"]
    assert config["model_hparams"]["num_layers"] == 1
    assert config["model_hparams"]["reg_weight"] == 0.01


def test_graphs_come_from_raw_features(tmp_path):
    # column 0 of the text features is 1000x the others: the raw cosine
    # neighbours follow it, the standardised features do not
    rows = [(u, i, 0) for u in range(4) for i in range(6) if (u + i) % 3]
    rows += [(0, 0, 1), (1, 2, 1), (0, 3, 2), (2, 1, 2)]  # not in train
    folder = tmp_path / "scaled"
    folder.mkdir()
    lines = ["userID\titemID\tx_label"] + [f"{u}\t{i}\t{s}" for u, i, s in rows]
    (folder / "scaled.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(3)
    text = rng.normal(size=(6, 5))
    text[:, 0] = 1000.0 * (1.0 + rng.random(6))
    np.save(folder / "text.npy", text.astype(np.float32))
    np.save(folder / "image.npy",
            rng.normal(size=(6, 3)).astype(np.float32))
    modalities = {"text": "text.npy", "image": "image.npy"}

    data = load_data(folder, modalities=modalities, k_user=2, k_item=2,
                     feature_norm="standardize")
    raw = ItemKNNGraph(k=2)(read_mmrec(str(folder), modalities=modalities))
    edge_type = similar_edge_type("text")
    assert torch.equal(data[edge_type].edge_index, raw[edge_type].edge_index)

    # the model inputs: per-column z-scores (the population std, as
    # NormalizeFeatures; the unit rows that follow cancel any common
    # factor), then unit rows
    x = text.astype(np.float32).astype(np.float64)
    z = (x - x.mean(0)) / x.std(0)
    expected = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert torch.allclose(data["item"].x_text.double(),
                          torch.from_numpy(expected), atol=1e-5)

    # and kNN over the rescaled features would have given another graph
    rescaled = read_mmrec(str(folder), modalities=modalities)
    rescaled["item"].x_text = data["item"].x_text
    other = ItemKNNGraph(k=2)(rescaled)[edge_type].edge_index
    assert not torch.equal(other, raw[edge_type].edge_index)


def test_resumed_run_equals_uninterrupted(tiny_folder, tmp_path, monkeypatch):
    from mde_pyg.train import Trainer

    def run(out, interrupt_at=None):
        args = tiny_args(tiny_folder, out, "lightgcn", "--max-epochs", "3")
        run_epoch = Trainer._run_epoch

        def interrupted(self, bar):
            if self.epoch == interrupt_at:
                raise KeyboardInterrupt
            run_epoch(self, bar)

        if interrupt_at is not None:
            with monkeypatch.context() as patch:
                patch.setattr(Trainer, "_run_epoch", interrupted)
                assert main(args) == 130
            args = args + ["--resume"]
        assert main(args) == 0
        return json.loads((out / "results.json").read_text())

    whole = run(tmp_path / "whole")
    resumed = run(tmp_path / "resumed", interrupt_at=1)

    def strip(history):
        return [{k: v for k, v in h.items() if "seconds" not in k}
                for h in history]

    assert strip(resumed["history"]) == strip(whole["history"])
    assert resumed["best_epoch"] == whole["best_epoch"]
    assert resumed["valid"] == whole["valid"]
    assert resumed["test"] == whole["test"]
