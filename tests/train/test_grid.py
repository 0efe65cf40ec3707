import csv
import gc
import re
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import HeteroData

import mde_pyg.train.grid as grid_module
from mde_pyg.models.base import Recommender
from mde_pyg.train import grid_search
from mde_pyg.train.grid import split_params


class MF(Recommender):
    def __init__(self, num_users, num_items, dim=4):
        super().__init__(num_users, num_items)
        self.dim = dim
        self.user_emb = nn.Parameter(0.1 * torch.randn(num_users, dim))
        self.item_emb = nn.Parameter(0.1 * torch.randn(num_items, dim))

    @classmethod
    def from_data(cls, data, **hparams):
        return cls(data["user"].num_nodes, data["item"].num_nodes, **hparams)

    def get_embedding(self):
        return self.user_emb, self.item_emb

    def loss(self, user, pos, neg):
        u, i = self.user_emb[user], self.item_emb
        bpr = -F.logsigmoid((u * (i[pos] - i[neg])).sum(-1)).mean()
        return bpr, {"bpr": bpr.detach()}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    pairs = {0: [], 1: [], 2: []}
    for u in range(20):
        items = torch.randperm(25, generator=gen)[:8].tolist()
        for j, i in enumerate(items):
            pairs[0 if j < 5 else (1 if j < 7 else 2)].append((u, i))
    data = HeteroData()
    data["user"].num_nodes = 20
    data["item"].num_nodes = 25
    store = data["user", "rates", "item"]
    store.edge_index = torch.tensor(pairs[0]).t()
    store.val_edge_index = torch.tensor(pairs[1]).t()
    store.test_edge_index = torch.tensor(pairs[2]).t()
    return data


def test_split_params():
    model, trainer = split_params({"dim": 4, "lr": 0.1, "batch_size": 8})
    assert model == {"dim": 4}
    assert trainer == {"lr": 0.1, "batch_size": 8}


def test_grid_runs_every_config(data, tmp_path):
    kwargs = dict(max_epochs=2, batch_size=32, ks=(5, 20), progress=False)
    result = grid_search(MF, data, {"dim": [2, 8], "lr": [0.01, 0.1]},
                         output_dir=tmp_path, **kwargs)
    with open(tmp_path / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len(result["runs"]) == 4
    assert list(rows[0])[:4] == ["run", "dim", "lr", "best_epoch"]
    assert {"valid_recall@20", "test_ndcg@5", "selected"} <= set(rows[0])
    valid = [float(r["valid_recall@20"]) for r in rows]
    winner = valid.index(max(valid))
    assert result["index"] == winner
    assert [r["selected"] for r in rows] == [
        str(i == winner) for i in range(4)]
    assert result["params"] == {"dim": [2, 8][winner // 2],
                                "lr": [0.01, 0.1][winner % 2]}
    assert result["model"].dim == result["params"]["dim"]
    assert result["config"]["lr"] == result["params"]["lr"]
    assert float(rows[winner]["test_recall@20"]) == result["test"]["recall@20"]
    assert (tmp_path / "run_003" / "best.pt").exists()

    # Resuming a finished grid reloads every run and gives the same winner.
    again = grid_search(MF, data, {"dim": [2, 8], "lr": [0.01, 0.1]},
                        output_dir=tmp_path, resume=True, **kwargs)
    assert again["index"] == winner and again["test"] == result["test"]


def test_selects_on_valid_never_on_test(data, monkeypatch):
    valid = iter([0.1, 0.3, 0.2])
    test = iter([0.9, 0.1, 0.5])

    def fake_fit(self, resume=False, overwrite=False):
        return {"model": self.model, "best_epoch": 0, "config": {},
                "history": [], "valid": {"recall@20": next(valid)},
                "test": {"recall@20": next(test)}}

    monkeypatch.setattr(grid_module.Trainer, "fit", fake_fit)
    result = grid_search(MF, data, {"dim": [1, 2, 3]}, ks=(5, 20),
                         progress=False)
    assert result["index"] == 1 and result["params"] == {"dim": 2}
    assert result["test"] == {"recall@20": 0.1}
    assert [r["selected"] for r in result["runs"]] == [False, True, False]


def test_only_the_selected_model_is_kept_alive(data, monkeypatch):
    # a run passed over frees its model (on a GPU, its buffers), so a grid
    # holds at most two models at a time, not one per configuration
    valid = iter([0.1, 0.3, 0.2, 0.3])
    alive = []

    def fake_fit(self, resume=False, overwrite=False):
        alive.append(weakref.ref(self.model))
        gc.collect()
        alive_now = sum(ref() is not None for ref in alive)
        assert alive_now <= 2, f"{alive_now} models alive during a grid"
        return {"model": self.model, "best_epoch": 0, "config": {},
                "history": [], "valid": {"recall@20": next(valid)},
                "test": {"recall@20": 0.0}}

    monkeypatch.setattr(grid_module.Trainer, "fit", fake_fit)
    result = grid_search(MF, data, {"dim": [1, 2, 3, 4]}, ks=(5, 20),
                         progress=False)
    gc.collect()
    assert [ref() is not None for ref in alive] == [False, True, False,
                                                    False]
    assert result["index"] == 1 and result["model"] is alive[1]()
    assert result["model"].dim == 2


def test_errors(data):
    with pytest.raises(ValueError, match="Unknown Trainer arguments"):
        grid_search(MF, data, {"dim": [2]}, learning_rate=0.1)
    with pytest.raises(ValueError, match=re.escape(
            "grid_search takes replace=True (not overwrite=True) to train a "
            "grid again over an earlier one")):
        grid_search(MF, data, {"dim": [2]}, overwrite=True)
    with pytest.raises(ValueError, match="empty"):
        grid_search(MF, data, [])


def test_eval_metric_and_ks_are_checked_before_any_run(data, tmp_path):
    out = tmp_path / "grid"
    with pytest.raises(ValueError, match=r"'eval_metric' varies across the "
                       r"grid \(\['ndcg@5', 'recall@5'\]\), but the runs are "
                       r"compared by one validation metric"):
        grid_search(MF, data, {"eval_metric": ["recall@5", "ndcg@5"]},
                    output_dir=out, ks=(5,), max_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"grid configuration 1 \{'ks': "
                       r"\(5,\)\}: Unknown 'eval_metric' 'recall@20'"):
        grid_search(MF, data, {"ks": [(20,), (5,)]}, output_dir=out,
                    max_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"cut-offs in 'ks' must be integers"):
        grid_search(MF, data, {"dim": [2]}, ks=(2.5,), output_dir=out)
    with pytest.raises(ValueError, match=r"Every entry of 'callbacks'"):
        grid_search(MF, data, {"dim": [2]}, callbacks=[None], output_dir=out)
    assert not out.exists()  # nothing trained, nothing written


def test_callbacks_see_every_epoch_of_every_run(data, tmp_path):
    seen = []
    result = grid_search(
        MF, data, {"dim": [2, 3]}, output_dir=tmp_path, max_epochs=2,
        patience=5, ks=(5,), eval_metric="recall@5", progress=False,
        callbacks=iter([lambda t, e: seen.append(
            (t.output_dir.name, e["epoch"], e["valid"]["recall@5"]))]))
    runs = [("run_000", 0), ("run_000", 1), ("run_001", 0), ("run_001", 1)]
    assert [s[:2] for s in seen] == runs
    # the entries are the runs' history entries: the best epoch's valid
    for run, row in enumerate(result["runs"]):
        assert seen[2 * run + row["best_epoch"]][2] == row["valid_recall@5"]


def test_a_grid_does_not_replace_an_earlier_one_unless_asked(data,
                                                             tmp_path):
    from mde_pyg.train import RunExistsError

    kwargs = dict(output_dir=tmp_path, max_epochs=1, ks=(5,),
                  eval_metric="recall@5", progress=False)
    first = grid_search(MF, data, {"dim": [2, 3]}, **kwargs)
    before = (tmp_path / "grid.csv").read_bytes()
    with pytest.raises(RunExistsError, match=r"already holds a grid "
                       r"\(grid\.csv, run_000/last\.pt, run_000/best\.pt, "
                       r"\.\.\.\); resume=True continues it, replace=True"):
        grid_search(MF, data, {"dim": [2, 3]}, **kwargs)
    assert (tmp_path / "grid.csv").read_bytes() == before
    again = grid_search(MF, data, {"dim": [2, 3]}, replace=True, **kwargs)
    assert again["runs"] == first["runs"]


def test_best_index_takes_the_first_of_equal_valid_scores():
    from mde_pyg.train import best_index

    def result(valid, test):
        return {"valid": {"recall@20": valid}, "test": {"recall@20": test}}

    runs = [result(0.2, 0.9), result(0.3, 0.1), result(0.3, 0.5)]
    assert best_index(runs) == 1  # valid only; the first of the tie
    assert best_index(runs[:1]) == 0
    with pytest.raises(ValueError, match="at least one result"):
        best_index([])


def test_a_bad_value_in_a_later_configuration_fails_before_any_run(data,
                                                                   tmp_path):
    out = tmp_path / "grid"
    with pytest.raises(ValueError, match=r"grid configuration 1 \{'lr': -1"):
        grid_search(MF, data, {"lr": [0.1, -1.0]}, output_dir=out,
                    max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="grid configuration 1 .*'dim'"):
        grid_search(MF, data, {"dim": [2, -3]}, output_dir=out,
                    max_epochs=1, progress=False)
    assert not out.exists()  # nothing trained, nothing written


def test_check_grid_builds_each_distinct_model_once(data):
    from mde_pyg.train import GridConfigError, check_grid

    built = []

    def factory(data, **hparams):
        built.append(hparams)
        return MF.from_data(data, **hparams)

    configs = check_grid(factory, data, {"dim": [2, 3], "lr": [0.1, 0.2]})
    assert len(configs) == 4  # lr varies the trainer only
    assert sorted(b["dim"] for b in built) == [2, 3]
    with pytest.raises(GridConfigError, match="Unknown Trainer arguments"):
        check_grid(factory, data, {"dim": [2]}, learning_rate=0.1)


def test_held_run_files_names_a_run_and_a_grid_in_one_order(tmp_path):
    from mde_pyg.train.grid import held_run_files

    assert held_run_files(tmp_path / "missing") == []
    assert held_run_files(tmp_path) == []
    for name in ("history.json", "last.pt", "notes.txt", "grid.csv"):
        (tmp_path / name).write_text("x")
    for run, names in (("run_001", ["best.pt"]),
                       ("run_000", ["history.json", "last.pt"]),
                       ("run_7", ["last.pt"]),  # not a grid's name
                       ("run_002", ["notes.txt"])):  # no run files
        (tmp_path / run).mkdir()
        for name in names:
            (tmp_path / run / name).write_text("x")
    (tmp_path / "run_003").symlink_to(tmp_path / "run_000")
    (tmp_path / "run_000.old").mkdir()  # a copy, not named as a grid's run
    (tmp_path / "run_000.old" / "last.pt").write_text("x")
    assert held_run_files(tmp_path) == [
        "last.pt", "history.json", "grid.csv", "run_000/last.pt",
        "run_000/history.json", "run_001/best.pt"]
    assert held_run_files(tmp_path / "grid.csv") == []  # a file, no folder


def test_grid_run_index_needs_the_grids_name_and_its_grid_csv(tmp_path):
    from mde_pyg.train.grid import grid_run_index

    assert grid_run_index(tmp_path / "run_001") is None  # no grid.csv
    (tmp_path / "grid.csv").write_text("run\n")
    assert grid_run_index(tmp_path / "run_001") == 1
    assert grid_run_index(tmp_path / "run_1234") == 1234
    for name in ("run_7", "run_01", "run_001.old", "grid.csv"):
        assert grid_run_index(tmp_path / name) is None, name


def test_replacing_a_grid_removes_only_its_later_runs(data, tmp_path):
    out = tmp_path / "grid"
    kwargs = dict(output_dir=out, max_epochs=1, ks=(5,),
                  eval_metric="recall@5", progress=False)
    grid_search(MF, data, {"dim": [2, 3, 4]}, **kwargs)
    # beside the earlier grid's runs: a folder named as a run that holds
    # none, a link to a run elsewhere, run files under another name
    (out / "run_005").mkdir()
    (out / "run_005" / "notes.txt").write_text("mine")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_text("x")
    (out / "run_006").symlink_to(elsewhere)
    (out / "run_7").mkdir()
    (out / "run_7" / "last.pt").write_text("x")
    grid_search(MF, data, {"dim": [2]}, replace=True, **kwargs)
    assert sorted(p.name for p in out.iterdir()) == [
        "grid.csv", "run_000", "run_005", "run_006", "run_7"]
    assert (out / "run_005" / "notes.txt").read_text() == "mine"
    assert (elsewhere / "last.pt").read_text() == "x"
    assert (out / "run_7" / "last.pt").read_text() == "x"


def test_a_grid_is_not_written_over_a_single_run(data, tmp_path):
    # a Trainer's run in the folder (best.pt and history.json only, as a
    # finished run without last.pt) is refused like a grid's runs
    from mde_pyg.train import RunExistsError

    for name in ("best.pt", "history.json"):
        (tmp_path / name).write_text("x")
    with pytest.raises(RunExistsError, match=r"already holds a run "
                       r"\(best\.pt, history\.json\); resume=True"):
        grid_search(MF, data, {"dim": [2]}, output_dir=tmp_path,
                    max_epochs=1, ks=(5,), eval_metric="recall@5",
                    progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt",
                                                          "history.json"]
    # three files are named in full, without ', ...'
    (tmp_path / "last.pt").write_text("x")
    with pytest.raises(RunExistsError, match=r"already holds a run "
                       r"\(last\.pt, best\.pt, history\.json\); resume"):
        grid_search(MF, data, {"dim": [2]}, output_dir=tmp_path,
                    max_epochs=1, ks=(5,), eval_metric="recall@5",
                    progress=False)


def test_a_grid_interrupted_in_its_first_run_is_named_a_grid(data, tmp_path):
    # run_000's files, no grid.csv yet
    from mde_pyg.train import RunExistsError

    (tmp_path / "run_000").mkdir()
    (tmp_path / "run_000" / "last.pt").write_text("x")
    with pytest.raises(RunExistsError, match=r"already holds a grid "
                       r"\(run_000/last\.pt\); resume=True continues it"):
        grid_search(MF, data, {"dim": [2]}, output_dir=tmp_path,
                    max_epochs=1, ks=(5,), eval_metric="recall@5",
                    progress=False)
    assert (tmp_path / "run_000" / "last.pt").read_text() == "x"


def test_progress_names_each_configuration_before_its_lines(data, tmp_path,
                                                            capsys):
    grid_search(MF, data, {"dim": [2, 4]}, output_dir=tmp_path, max_epochs=1,
                batch_size=32, ks=(5, 20))
    err = capsys.readouterr().err
    first = err.index("grid configuration 1 of 2 (run_000): dim=2\n")
    second = err.index("grid configuration 2 of 2 (run_001): dim=4\n")
    assert first < err.index("MF epoch 0", first) < second  # lines follow
    grid_search(MF, data, {"dim": [2]}, max_epochs=1, batch_size=32,
                ks=(5, 20), progress=False)
    assert "grid configuration" not in capsys.readouterr().err
