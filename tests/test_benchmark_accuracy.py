"""``benchmarks/accuracy.py``: grid points as separate runs, selected on
valid exactly as ``mde-pyg train --grid`` selects, then the other seeds."""

import csv
import json
import os.path as osp
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, "benchmarks", "accuracy.py")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 40 users x 60 items in MMRec's layout (the evaluation's largest
    # cut-off is 50): 6 interactions per user, the last two valid and test.
    # Planted groups, so that training makes a difference: user u picks
    # among the 15 items of group u % 4 only.
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "small"
    path.mkdir()
    lines = ["userID\titemID\tx_label"]
    for user in range(40):
        items = 15 * (user % 4) + rng.choice(15, size=6, replace=False)
        labels = [0, 0, 0, 0, 1, 2]
        lines += [f"{user}\t{i}\t{s}" for i, s in zip(items, labels)]
    (path / "small.inter").write_text("\n".join(lines) + "\n")
    np.save(path / "text.npy", rng.normal(size=(60, 6)).astype(np.float32))
    np.save(path / "image.npy", rng.normal(size=(60, 5)).astype(np.float32))
    return path


#: The lightgcn grid of these tests: 3 Adam steps at 1e-4 barely move
#: the initial weights, at 1e-1 they learn the planted groups.
LRS = [1e-4, 1e-1]
COMMON = ["--modality", "text=text.npy", "--modality", "image=image.npy",
          "--max-epochs", "3", "--patience", "3", "--feature-norm",
          "standardize", "--device", "cpu"]


def import_accuracy():
    sys.path.insert(0, osp.join(ROOT, "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.pop(0)
    return accuracy


def run_accuracy(monkeypatch, *args):
    sys.path.insert(0, osp.join(ROOT, "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.pop(0)
    # a grid whose points differ after 3 epochs (lr goes to the trainer)
    monkeypatch.setitem(accuracy.GRIDS, "lightgcn", {"lr": LRS})
    monkeypatch.setattr(sys, "argv", [SCRIPT, *args])
    monkeypatch.chdir(ROOT)
    accuracy.main()


def test_grid_points_select_as_the_cli_grid(folder, tmp_path, monkeypatch):
    work, table = tmp_path / "work", tmp_path / "table.md"
    run_accuracy(monkeypatch, "--data", str(folder), "--models", "lightgcn",
                 "--seeds", "0", "1", "--jobs", "2", "--threads", "1",
                 "--work", str(work), "--output", str(table), *COMMON[:-2])
    # the same grid in one `mde-pyg train --grid` process
    grid_dir = tmp_path / "cli_grid"
    subprocess.run([sys.executable, "-m", "mde_pyg", "train", "--model",
                    "lightgcn", "--data", str(folder), "--seed", "0",
                    "--grid", f"lr={LRS[0]},{LRS[1]}", "--no-progress",
                    "--output", str(grid_dir), *COMMON], check=True,
                   capture_output=True, cwd=ROOT)
    with open(grid_dir / "grid.csv") as f:
        rows = list(csv.DictReader(f))

    points = [json.loads((work / "lightgcn" / "grid" / f"run_{i:03d}" /
                          "results.json").read_text()) for i in range(2)]
    # each point trains exactly as in the CLI's grid loop
    for row, point in zip(rows, points):
        assert float(row["valid_recall@20"]) == point["valid"]["recall@20"]
        assert float(row["test_recall@20"]) == point["test"]["recall@20"]
    valid = [p["valid"]["recall@20"] for p in points]
    # recall@20 moves in steps of 1/40 (one valid item per user); measured
    # 0.45 (lr 1e-4) and 1.0 (lr 1e-1), 22 users apart, so the selection
    # is decided by far, not by a one-user tie-break
    assert valid[1] - valid[0] >= 10 / 40
    best = valid.index(max(valid))
    assert best == 1
    assert [r["selected"] for r in rows] == [str(i == best) for i in range(2)]

    # seed 1 re-trains the selected point; the row averages both seeds
    seed1 = json.loads((work / "lightgcn" / "seed1" /
                        "results.json").read_text())
    lr = LRS[best]
    assert seed1["config"]["lr"] == lr
    line = next(x for x in table.read_text().splitlines()
                if x.startswith("| lightgcn |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    recall = [points[best]["test"]["recall@20"], seed1["test"]["recall@20"]]
    assert cells[2] == \
        f"{np.mean(recall):.4f} ± {statistics.stdev(recall):.4f}"
    assert cells[-1] == json.dumps({"lr": lr})
    assert ("Hyper-parameters selected on VALID recall@20 with seed 0 "
            "(small grids in `benchmarks/accuracy.py`), then re-trained "
            "with seeds [1]") in table.read_text()


def test_a_failed_row_fails_the_run(tmp_path, monkeypatch, capsys):
    # 5 items: fewer than the evaluation's largest cut-off
    path = tmp_path / "tiny"
    path.mkdir()
    lines = ["userID\titemID\tx_label"] + [
        f"{u}\t{i}\t{s}" for u, i, s in [(0, 0, 0), (0, 1, 1), (0, 2, 2),
                                         (1, 3, 0), (1, 4, 1), (1, 0, 2)]]
    (path / "tiny.inter").write_text("\n".join(lines) + "\n")
    for name, dim in (("text", 3), ("image", 2)):
        np.save(path / f"{name}.npy", np.ones((5, dim), np.float32))
    with pytest.raises(SystemExit, match="1 of 1 rows failed \\(lightgcn\\)"):
        run_accuracy(monkeypatch, "--data", str(path), "--models",
                     "lightgcn", "--work", str(tmp_path / "work"),
                     "--output", str(tmp_path / "t.md"), *COMMON[:4])
    assert "fewer than the largest cut-off 50" in capsys.readouterr().out
    assert not (tmp_path / "t.md").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "found no '*.inter' file"),
])
def test_bad_data_or_models_fail_before_any_run(tmp_path, monkeypatch, capsys,
                                                make, message):
    data = tmp_path / "data"
    make(data)
    with pytest.raises(SystemExit):
        run_accuracy(monkeypatch, "--data", str(data), "--work",
                     str(tmp_path / "work"))
    err = capsys.readouterr().err
    assert "accuracy.py: error: --data: " in err and message in err
    with pytest.raises(SystemExit):
        run_accuracy(monkeypatch, "--data", str(data), "--models", "nope")
    assert "unknown model(s) ['nope']" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_cached_runs_are_reused_only_for_the_same_run(folder, tmp_path,
                                                      monkeypatch, capsys):
    work = tmp_path / "work"

    def run(*extra):
        run_accuracy(monkeypatch, "--data", str(folder), "--models",
                     "lightgcn", "--seeds", "0", "1", "1", "--work",
                     str(work), "--output", str(tmp_path / "t.md"),
                     *COMMON, *extra)
        return json.loads((work / "lightgcn" / "seed1" /
                           "results.json").read_text())

    first = run()
    assert "re-training" not in capsys.readouterr().out
    # the repeated seed trains once: 2 grid points + seed 1
    assert len(list(work.rglob("results.json"))) == 3
    assert run() == first  # the same request reuses every run
    assert "re-training" not in capsys.readouterr().out
    # a different budget must not be answered from the cache
    second = run("--max-epochs", "2")
    out = capsys.readouterr().out
    assert out.count("re-training") == 3
    assert "has max epochs 3, not 2" in out
    assert second["config"]["max_epochs"] == 2
    assert len(second["history"]) == 2
    # without a grid the table says the defaults ran, not a selection
    run("--no-grid", "--max-epochs", "2")
    text = (tmp_path / "t.md").read_text()
    assert "Every model with its defaults (--no-grid: no search), seed 0 " \
        "and seeds [1" in text and "selected on VALID" not in text


def test_stale_compares_every_model_argument(tmp_path):
    import argparse

    sys.path.insert(0, osp.join(ROOT, "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.pop(0)
    from mde_pyg.models.bm3 import BM3

    args = argparse.Namespace(
        data=str(tmp_path), modality=["text=t.npy"], feature_norm="none",
        feature_min_std=0.0, precision=None, max_epochs=5, patience=3,
        device="cpu")
    hparams = {**BM3.default_hparams(), "reg_weight": 0.01}
    cached = {"model": "bm3", "config": {
        "seed": 1, "precision": "fp32", "max_epochs": 5, "patience": 3,
        "device": "cpu",
        "lr": 0.01, "model_hparams": hparams,
        "data": {"data": osp.basename(tmp_path), "cwd": str(tmp_path.parent),
                 "modality": {"text": "t.npy"}, "feature_norm": "none"}}}
    params = {"reg_weight": 0.01, "lr": 0.01}
    assert accuracy.stale(cached, args, "bm3", 1, params) is None
    assert accuracy.stale(cached, args, "bm3", 1, {**params, "lr": 0.1}) \
        == "has lr 0.01, not 0.1"
    # the data as loaded: its feature norm and its modalities
    args.feature_norm = "l2"
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "has feature norm 'none', not 'l2'"
    args.feature_norm = "none"
    args.modality = ["text=t.npy", "image=i.npy"]
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "has modalities {'text': 't.npy'}, not {'text': 't.npy', " \
        "'image': 'i.npy'}"
    args.modality = ["text=t.npy"]
    # runs record feature_min_std only when used
    args.feature_min_std = 1e-4
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "has feature min std 0.0, not 0.0001"
    args.feature_min_std = 0.0
    # s / epoch is the device's: a CPU run does not answer for a GPU table,
    # though any GPU's run answers for another's
    args.device = "cuda"
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "has device 'cpu', not 'cuda'"
    cached["config"]["device"] = "cuda:1"
    assert accuracy.stale(cached, args, "bm3", 1, params) is None
    cached["config"]["device"] = args.device = "cpu"
    # a default that changed since (or an argument added) is another run
    hparams["reg_scope"] = "batch"
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "has reg_scope 'batch', not 'all'"
    del hparams["reg_scope"]
    assert accuracy.stale(cached, args, "bm3", 1, params) == \
        "records no model argument 'reg_scope'"
    cached["config"]["model_hparams"] = None
    assert "records no model argument" in accuracy.stale(
        cached, args, "bm3", 1, params)
    # DualGNN records the k_user it took from the graph (default None):
    # the recorded value answers for the default, a given one is compared
    from mde_pyg.models.dualgnn import DualGNN

    cached["model"] = "dualgnn"
    cached["config"]["model_hparams"] = {**DualGNN.default_hparams(),
                                         "k_user": 40, "reg_weight": 0.01}
    dual = {"reg_weight": 0.01, "lr": 0.01}
    assert accuracy.stale(cached, args, "dualgnn", 1, dual) is None
    assert accuracy.stale(cached, args, "dualgnn", 1,
                          {**dual, "k_user": 10}) == \
        "has k_user 40, not 10"


@pytest.mark.parametrize("flag, value", [("--precision", "fp16"),
                                         ("--feature-norm", "zscore")])
def test_bad_choices_fail_before_any_run(folder, tmp_path, flag, value):
    done = subprocess.run([sys.executable, SCRIPT, "--data", str(folder),
                           "--work", str(tmp_path / "work"), flag, value],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert f"argument {flag}: invalid choice: '{value}'" in done.stderr
    assert not (tmp_path / "work").exists()


def test_train_reuses_a_cached_run_unless_rerun(tmp_path, monkeypatch):
    import argparse

    accuracy = import_accuracy()
    from mde_pyg.models.bm3 import BM3

    args = argparse.Namespace(
        data=str(tmp_path), modality=["text=t.npy"], feature_norm="none",
        feature_min_std=0.0, precision=None, max_epochs=5, patience=3,
        device="cpu", rerun=False, threads=1)
    cached = {"model": "bm3", "config": {
        "seed": 1, "precision": "fp32", "max_epochs": 5, "patience": 3,
        "device": "cpu", "lr": 0.01,
        "model_hparams": {**BM3.default_hparams(), "reg_weight": 0.01},
        "data": {"data": str(tmp_path), "modality": {"text": "t.npy"},
                 "feature_norm": "none"}}}
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(cached))
    calls = []

    def fake_run(cmd, **kwargs):  # mde-pyg train, which would rewrite it
        calls.append((cmd, kwargs["env"]["OMP_NUM_THREADS"]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(accuracy.subprocess, "run", fake_run)
    params = {"reg_weight": 0.01, "lr": 0.01}
    assert accuracy.train(args, "bm3", str(out), 1, params) == cached
    assert calls == []  # the same run: its results.json answers
    # --rerun trains it again, with every setting on the command line
    args.rerun = True
    assert accuracy.train(args, "bm3", str(out), 1, params) == cached
    assert calls == [([
        sys.executable, "-m", "mde_pyg", "train", "--model", "bm3",
        "--data", str(tmp_path), "--seed", "1", "--output", str(out),
        "--no-progress", "--overwrite", "--feature-norm", "none",
        "--max-epochs", "5", "--patience", "3", "--device", "cpu",
        "--modality", "text=t.npy", "--set", "reg_weight=0.01", "--set",
        "lr=0.01"], "1")]
    # another setting: trained again, the setting passed on
    args.rerun, args.feature_min_std = False, 1e-4
    accuracy.train(args, "bm3", str(out), 1, params)
    assert len(calls) == 2
    cmd = calls[1][0]
    assert cmd[cmd.index("--feature-min-std") + 1] == "0.0001"


def test_variant_a_rows_and_row_folders():
    accuracy = import_accuracy()
    rows = accuracy.variant_a_rows(["text", "image", "audio"])
    assert list(rows) == [f"mde variant A (text {w})"
                          for w in (0.2, 0.4, 0.5, 0.6, 0.8)]
    # the other modalities share 1 - w
    assert rows["mde variant A (text 0.4)"] == ("mde", {
        "tradeoff": "global",
        "global_preference": {"text": 0.4, "image": 0.3, "audio": 0.3}}, {})
    assert [accuracy.slug(label) for label in (
        "mde w/o MDA", "mde variant B (learned trade-off)",
        "mde variant A (text 0.2)", "grcn, MMRec routing (num_routing=0)")
    ] == ["mde_wo_MDA", "mde_variant_B_learned_trade-off",
          "mde_variant_A_text_02", "grcn_MMRec_routing_num_routing_0"]


def test_seed_jobs_retrain_the_point_selected_on_valid(tmp_path):
    import argparse

    accuracy = import_accuracy()
    args = argparse.Namespace(work=str(tmp_path), seeds=[0, 1, 2])
    row = accuracy.ModelRuns(args, "mde w/o MDA", "mde", {"use_mda": False},
                             {"lambda_1": [0.1, 0.2, 0.3]})
    base = osp.join(str(tmp_path), "mde_wo_MDA")
    assert [(call[2], call[3], call[4]) for _, call in row.grid_jobs()] == [
        (osp.join(base, "grid", f"run_{i:03d}"), 0,
         {"use_mda": False, "lambda_1": v})
        for i, v in enumerate([0.1, 0.2, 0.3])]
    # the best valid recall@20, the first of a tie (not the last point)
    grid = [{"valid": {"recall@20": v}, "test": {"recall@20": t}}
            for v, t in ((0.2, 0.9), (0.5, 0.1), (0.5, 0.3))]
    seeds = row.seed_jobs(grid)
    assert row.params == {"use_mda": False, "lambda_1": 0.2}
    assert row.results == [grid[1]]
    assert [(call[2], call[3], call[4]) for _, call in seeds] == [
        (osp.join(base, f"seed{s}"), s, row.params) for s in (1, 2)]


def test_table_rows_average_each_runs_epochs(tmp_path):
    import argparse

    accuracy = import_accuracy()

    def result(value, seconds, best_epoch):
        return {"test": {k: value for k in accuracy.METRICS},
                "history": [{"seconds": s} for s in seconds],
                "best_epoch": best_epoch}

    runs = [result(0.1, [1.0, 3.0], 1), result(0.3, [6.0], 4)]
    summary = accuracy.summarise(runs)
    assert summary["recall@20"] == pytest.approx(
        (0.2, statistics.stdev([0.1, 0.3])))
    assert summary["seconds"] == 4.0  # each run's s / epoch: 2 and 6
    assert summary["epochs"] == 2.5
    args = argparse.Namespace(
        data="/x/lfm2k/", device="cpu", code="abc", threads=1, jobs=2,
        feature_min_std=0.0, no_grid=True, grids="small", seeds=[0, 1],
        modality=None, feature_norm="standardize", precision=None,
        patience=20, max_epochs=1000, output=str(tmp_path / "t.md"))
    accuracy.write_table(args, [("mostpop", {}, runs),
                                ("lightgcn", {"lr": 0.1}, runs[:1])])
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert lines[0] == "# Test accuracy on lfm2k (2 seeds, mean ± std)"
    cells = " | ".join(["0.2000 ± 0.1414"] * 8)
    assert f"| mostpop | {cells} | 4.0 | 2 | defaults |" in lines
    cells = " | ".join(["0.1000"] * 8)  # one run: no spread
    assert f'| lightgcn | {cells} | 2.0 | 1 | {{"lr": 0.1}} |' in lines
    assert "Every model with its defaults (--no-grid: no search), seed 0 " \
        "and seeds [1]; test metrics" in lines[8]
    # one seed: said so, with no "seeds []"
    args.seeds, args.no_grid = [0], False
    accuracy.write_table(args, [("mostpop", {}, runs[:1])])
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert lines[0] == "# Test accuracy on lfm2k (1 seed)"
    assert "with seed 0 (small grids in `benchmarks/accuracy.py`); test " \
        "metrics" in lines[8]


def test_the_rows_asked_for(folder, tmp_path, monkeypatch, capsys):
    # which rows main() runs, and with which grid (none trained here)
    accuracy = import_accuracy()
    planned = []

    class Planned:
        def __init__(self, args, label, model, fixed, grid):
            planned.append((label, model, fixed, grid, args.seeds))

        def grid_jobs(self):
            return []

    monkeypatch.setattr(accuracy, "ModelRuns", Planned)

    def plan(*args):
        planned.clear()
        run_accuracy(monkeypatch, "--data", str(folder), "--work",
                     str(tmp_path / "work"), "--device", "cpu", *args)
        return planned

    assert plan("--models", "mde", "lightgcn", "--grids", "paper",
                "--seeds", "2", "1", "2") == [
        ("mde", "mde", {}, accuracy.PAPER_GRIDS["mde"], [0, 2, 1]),
        ("lightgcn", "lightgcn", {}, {"lr": LRS}, [0, 2, 1])]
    assert plan("--models", "mde")[0][3] == accuracy.GRIDS["mde"]
    # --variants alone: every variant, after the models; the variant A
    # rows weigh the first modality given
    variant_a = [f"mde variant A (text {w})"
                 for w in accuracy.VARIANT_A_WEIGHTS]
    assert [p[0] for p in plan("--models", "mostpop", "--variants",
                               "--modality", "text=text.npy")] == [
        "mostpop", *accuracy.VARIANTS, *variant_a]
    assert [p[0] for p in plan("--models", "mostpop", "--variants",
                               "grcn")] == [
        "mostpop", "grcn, MMRec routing (num_routing=0)"]
    # --rows searches the labels
    assert [p[0] for p in plan("--models", "mde", "--variants", "--rows",
                               "w/o")] == [
        "mde w/o MDA", "mde w/o MSA", "mde w/o NLT"]
    with pytest.raises(SystemExit):
        plan("--models", "mde", "--rows", "nothing")
    assert "--rows 'nothing' matches no row" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
