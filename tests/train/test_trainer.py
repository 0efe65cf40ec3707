import copy
import json
import os
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_helpers import swap_with_train
from device_params import DEVICES
from torch import nn
from torch_geometric.data import HeteroData

from mde_pyg.models.base import Recommender
from mde_pyg.train import Evaluator, Trainer, seed_everything
from mde_pyg.train.evaluator import RATES


def random_data(num_users=30, num_items=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    split = {0: [], 1: [], 2: []}
    for u in range(num_users):
        items = torch.randperm(num_items, generator=gen)[:10].tolist()
        # the first items are "liked" more often: a learnable signal
        items = sorted(items, key=lambda i: (i % 7, i))
        for j, i in enumerate(items):
            split[0 if j < 6 else (1 if j < 8 else 2)].append((u, i))
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    store = data[RATES]
    store.edge_index = torch.tensor(split[0]).t()
    store.val_edge_index = torch.tensor(split[1]).t()
    store.test_edge_index = torch.tensor(split[2]).t()
    return data


class MF(Recommender):
    """BPR matrix factorisation with item dropout and per-epoch noise."""

    def __init__(self, num_users, num_items, dim=8, dropout=0.1):
        super().__init__(num_users, num_items)
        self.user_emb = nn.Embedding(num_users, dim)
        self.item_emb = nn.Embedding(num_items, dim)
        self.dropout = dropout
        self.scale = 1.0
        self.epochs_seen = []
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    @classmethod
    def from_data(cls, data, **hparams):
        return cls(data["user"].num_nodes, data["item"].num_nodes, **hparams)

    def on_epoch_start(self, epoch):
        # Uses NumPy's and Python's RNGs, so resuming must restore both.
        self.epochs_seen.append(epoch)
        self.scale = 1.0 + 0.1 * np.random.rand() + 0.1 * random.random()

    def get_embedding(self):
        item = F.dropout(self.item_emb.weight, self.dropout, self.training)
        return self.user_emb.weight, item

    def loss(self, user, pos, neg):
        u, i = self.get_embedding()
        diff = (u[user] * (i[pos] - i[neg])).sum(-1) * self.scale
        bpr = -F.logsigmoid(diff).mean()
        reg = 1e-4 * (u[user].pow(2).sum() + i[pos].pow(2).sum()) / len(user)
        return bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()}


def train(data, tmp=None, seed=0, **kwargs):
    seed_everything(seed)
    model = MF.from_data(data)
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("lr", 0.05)
    kwargs.setdefault("ks", (5, 10, 20))
    trainer = Trainer(model, data, seed=seed, output_dir=tmp,
                      progress=False, **kwargs)
    return trainer


def strip_seconds(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history]


@pytest.fixture(scope="module")
def data():
    return random_data()


def test_fit_result_and_files(data, tmp_path):
    trainer = train(data, tmp_path, max_epochs=4, patience=10)
    result = trainer.fit()
    assert set(result) == {"model", "best_epoch", "valid", "test", "config",
                           "history"}
    assert [e["epoch"] for e in result["history"]] == [0, 1, 2, 3]
    assert result["model"].epochs_seen == [0, 1, 2, 3]
    assert set(result["history"][0]["parts"]) == {"bpr", "reg"}
    assert result["config"]["lr"] == 0.05
    best = result["best_epoch"]
    scores = [e["valid"]["recall@20"] for e in result["history"]]
    assert best == scores.index(max(scores))
    assert result["valid"] == result["history"][best]["valid"]

    # Files: history.json, best.pt with the best weights, last.pt.
    assert json.loads((tmp_path / "history.json").read_text()) == \
        result["history"]
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["epoch"] == best and ckpt["test"] == result["test"]
    model = result["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt["model"][key], value)
    # The returned model carries the best weights: re-evaluating it gives
    # the reported numbers.
    assert Evaluator(data, "test", ks=(5, 10, 20))(model) == result["test"]
    assert Evaluator(data, "valid", ks=(5, 10, 20))(model) == result["valid"]
    assert (tmp_path / "last.pt").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_same_seed_identical(data):
    a = train(data, max_epochs=3).fit()
    b = train(data, max_epochs=3).fit()
    assert strip_seconds(a["history"]) == strip_seconds(b["history"])
    assert a["test"] == b["test"]
    c = train(data, seed=1, max_epochs=3).fit()
    assert strip_seconds(c["history"]) != strip_seconds(a["history"])


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("how", ["max_epochs", "interrupt"])
def test_resume_equals_uninterrupted(data, tmp_path, how):
    full = train(data, tmp_path / "full", max_epochs=6, patience=50).fit()

    run = tmp_path / "run"
    if how == "max_epochs":
        train(data, run, max_epochs=3, patience=50).fit()
    else:
        def stop(trainer, entry):
            if entry["epoch"] == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(data, run, max_epochs=6, patience=50,
                  callbacks=[stop]).fit()
    # A fresh process state: different global seeds and initial weights.
    resumed_trainer = train(data, run, seed=0, max_epochs=6, patience=50)
    seed_everything(1234)
    resumed = resumed_trainer.fit(resume=True)

    assert resumed["model"].epochs_seen == [3, 4, 5]
    assert strip_seconds(resumed["history"]) == strip_seconds(full["history"])
    assert resumed["best_epoch"] == full["best_epoch"]
    assert resumed["valid"] == full["valid"]
    assert resumed["test"] == full["test"]
    for key, value in full["model"].state_dict().items():
        assert torch.equal(resumed["model"].state_dict()[key], value)
    last = torch.load(run / "last.pt", weights_only=True)
    full_last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    for key, value in full_last["model"].items():
        assert torch.equal(last["model"][key], value)


def test_early_stopping(data):
    # Scripted validation scores: best at epoch 1, then 2 epochs without a
    # strict improvement (a tie does not count) -> stop after epoch 3.
    scores = iter([0.1, 0.3, 0.2, 0.3, 0.9, 0.9])
    trainer = train(data, max_epochs=10, patience=2)
    keys = trainer.valid_evaluator.metric.keys

    def scripted(model):
        value = next(scores)
        return {key: value for key in keys}

    calls = []

    def counting(model):
        calls.append(1)
        return {key: 0.0 for key in keys}

    trainer.valid_evaluator = scripted
    trainer.test_evaluator = counting
    result = trainer.fit()
    assert [e["epoch"] for e in result["history"]] == [0, 1, 2, 3]
    assert result["best_epoch"] == 1
    assert result["valid"]["recall@20"] == 0.3
    assert len(calls) == 2  # test evaluated only when valid improved
    # A finished run stays finished when resumed (no output_dir here):
    with pytest.raises(ValueError, match="output_dir"):
        trainer.fit(resume=True)


def test_a_new_run_does_not_replace_an_earlier_one_unless_asked(data,
                                                                 tmp_path):
    from mde_pyg.train import RunExistsError

    first = train(data, tmp_path, max_epochs=2).fit()
    before = (tmp_path / "history.json").read_bytes()
    for trainer in (train(data, tmp_path, seed=3, max_epochs=1),
                    train(data, tmp_path, max_epochs=2)):
        with pytest.raises(RunExistsError, match=r"already holds a run "
                           r"\(last\.pt, best\.pt, history\.json\); "
                           r"fit\(resume=True\) continues it, "
                           r"fit\(overwrite=True\) starts a new run there"):
            trainer.fit()
    assert (tmp_path / "history.json").read_bytes() == before  # untouched
    again = train(data, tmp_path, max_epochs=2).fit(overwrite=True)
    assert strip_seconds(again["history"]) == strip_seconds(first["history"])


def test_crashed_write_keeps_previous_checkpoint(data, tmp_path,
                                                  monkeypatch):
    train(data, tmp_path, max_epochs=2).fit()
    best_before = (tmp_path / "best.pt").read_bytes()
    last_before = (tmp_path / "last.pt").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(data, tmp_path, seed=5, max_epochs=2).fit(overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / "best.pt").read_bytes() == best_before
    assert (tmp_path / "last.pt").read_bytes() == last_before
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] >= 0
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


class NoNegatives(MF):
    uses_negatives = False

    def loss(self, user, pos, neg):
        assert torch.equal(neg, pos)
        return super().loss(user, pos, torch.randint_like(pos, 40))


class WithEstimator(MF):
    """The estimator parameter ``w`` is fitted to 3 by its own optimiser;
    the main loss pushes ``w`` down, which must have no effect on it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = []

    def estimator_parameters(self):
        return [self.w]

    def estimator_step(self, user, pos, neg):
        self.calls.append("estimator")
        loss = (self.w - 3).pow(2).sum()
        return {"loss": loss, "w": self.w.detach().sum()}

    def loss(self, user, pos, neg):
        self.calls.append("main")
        total, parts = super().loss(user, pos, neg)
        return total + 100 * self.w.sum(), parts


def test_negatives_skipped(data):
    seed_everything(0)
    model = NoNegatives.from_data(data)
    result = Trainer(model, data, batch_size=64, max_epochs=1,
                     ks=(5,), eval_metric="recall@5", progress=False).fit()
    assert len(result["history"]) == 1


def test_estimator_optimiser(data):
    seed_everything(0)
    model = WithEstimator.from_data(data)
    trainer = Trainer(model, data, lr=0.1, batch_size=64, max_epochs=2,
                      ks=(5,), eval_metric="recall@5", progress=False)
    assert all(p is not model.w for p in trainer.main_parameters)
    result = trainer.fit()
    assert model.calls[:4] == ["estimator", "main", "estimator", "main"]
    assert {"estimator_loss", "estimator_w"} <= set(
        result["history"][0]["parts"])
    # 180 train pairs in batches of 64 over 2 epochs: 6 estimator steps,
    # exactly those of Adam at lr on (w - 3)^2 alone (the main loss, which
    # pushes w down, and its weight decay never reach w)
    assert model.calls.count("estimator") == 6
    w = nn.Parameter(torch.zeros(1))
    adam = torch.optim.Adam([w], lr=0.1)
    for _ in range(6):
        adam.zero_grad()
        (w - 3).pow(2).sum().backward()
        adam.step()
    torch.testing.assert_close(model.w.detach(), w.detach())


class Projected(MF):
    """MF whose item embeddings pass through a linear layer: a matmul that
    CPU autocast runs in bfloat16 (MF's elementwise products alone are
    not autocast, so bf16 would change nothing). Records the dtype of the
    projected embeddings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.proj = nn.Linear(self.item_emb.embedding_dim,
                              self.item_emb.embedding_dim)
        self.dtypes = set()

    def get_embedding(self):
        user, item = super().get_embedding()
        item = self.proj(item)
        self.dtypes.add(item.dtype)
        return user, item


def test_bf16_and_nan(data):
    runs = {}
    for precision in ("bf16", "fp32"):
        seed_everything(0)
        model = Projected.from_data(data)
        result = Trainer(model, data, seed=0, batch_size=64, lr=0.05,
                         ks=(5, 10, 20), max_epochs=1, progress=False,
                         precision=precision).fit()
        runs[precision] = (result["history"][0], model.dtypes)
    (bf16, bf16_dtypes), (fp32, fp32_dtypes) = runs["bf16"], runs["fp32"]
    # bf16 reached the loss (evaluation stays in fp32), fp32 never did
    assert torch.bfloat16 in bf16_dtypes
    assert fp32_dtypes == {torch.float32}
    # Same seed, one epoch: measured relative gap of the epoch losses
    # 2.9e-6 (0.695081 vs 0.695083); over seeds 0-4 at most 2.9e-4.
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=2e-3)
    # Measured: identical valid metrics at this seed. One item moving
    # into or out of one user's top-k changes recall by 1/60 (30 users, 2
    # valid items each); seeds 0-4 differ by at most 1/60 in any metric.
    assert bf16["valid"].keys() == fp32["valid"].keys()
    assert bf16["valid"] == pytest.approx(fp32["valid"], abs=0.05)
    trainer = train(data, max_epochs=1)
    trainer.model.loss = lambda u, p, n: (torch.tensor(float("nan"),
                                                       requires_grad=True), {})
    with pytest.raises(FloatingPointError, match="epoch 0"):
        trainer.fit()
    with pytest.raises(ValueError, match="precision"):
        train(data, precision="fp16")
    with pytest.raises(ValueError, match="eval_metric"):
        train(data, eval_metric="recall@50")


@pytest.mark.parametrize("device", DEVICES)
def test_adam_is_fused_and_follows_the_adam_update(device):
    from mde_pyg.train.trainer import _adam

    torch.manual_seed(0)
    start = torch.randn(50, 8, device=device)
    a = torch.nn.Parameter(start.clone())
    b = torch.nn.Parameter(start.clone())
    fused = _adam([a], lr=1e-2, weight_decay=1e-3)
    reference = torch.optim.Adam([b], lr=1e-2, weight_decay=1e-3,
                                 foreach=False)
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grad = torch.randn(50, 8, device=device)
        a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        reference.step()
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, start)


class Recording(MF):
    """MF that records the value of each batch's loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses = []

    def loss(self, user, pos, neg):
        total, parts = super().loss(user, pos, neg)
        self.losses.append(float(total.detach()))
        return total, parts


def test_train_epoch_max_batches_runs_the_first_batches(data):
    def trainer():
        seed_everything(0)
        model = Recording.from_data(data)
        return Trainer(model, data, batch_size=64, seed=0, ks=(5,),
                       eval_metric="recall@5", progress=False)

    whole = trainer()
    whole.train_epoch()
    part = trainer()
    mean, _ = part.train_epoch(max_batches=2)
    # 180 train edges in batches of 64: the whole epoch has 3 batches, the
    # partial one the same first 2 (same shuffle, same negatives).
    assert len(whole.model.losses) == 3
    assert part.model.losses == whole.model.losses[:2]
    assert mean == pytest.approx(sum(whole.model.losses[:2]) / 2)
    state = part.optimizer.state[part.model.user_emb.weight]
    assert int(state["step"]) == 2
    with pytest.raises(ValueError, match="'max_batches'"):
        part.train_epoch(max_batches=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "'lr' must be > 0, got 0.0"),
    ({"lr": float("nan")}, "'lr' must be > 0, got nan"),
    ({"weight_decay": -1e-4}, "'weight_decay' must be >= 0"),
    ({"batch_size": 0}, "'batch_size' must be an integer >= 1, got 0"),
    ({"max_epochs": 2.5}, "'max_epochs' must be an integer >= 1, got 2.5"),
    ({"patience": "3"}, "'patience' must be a number, got '3'"),
    ({"precision": "fp16"}, "'precision' must be one of"),
    ({"ks": (10.5,)}, r"The cut-offs in 'ks' must be integers, got 10.5"),
    ({"ks": (5, True)}, r"must be integers, got True in \[5, True\]"),
    ({"ks": 20}, r"'ks' must be a sequence of cut-offs such as \(10, 20\), "
                 r"got 20"),
    ({"ks": (0, 5)}, r"Every cut-off in 'ks' must be >= 1, got 0"),
    ({"ks": (5, 10), "eval_metric": "recall@20"},
     r"Unknown 'eval_metric' 'recall@20'; choose one of \['recall@5', "
     r"'recall@10', 'precision@5', .*\(the metrics at 'ks' = \[5, 10\]\)"),
    ({"eval_metric": "hr@20"}, r"Unknown 'eval_metric' 'hr@20'.*'ks' = "
                               r"\[5, 10, 20(, 50)?\]"),  # train: ks given
    ({"callbacks": print}, r"'callbacks' must be a list of functions "
                           r"callback\(trainer, entry\), got <built-in"),
    ({"callbacks": [print, "log"]}, r"Every entry of 'callbacks' must be a "
                                    r"function .*, got 'log'"),
])
def test_trainer_arguments_are_checked_before_training(data, kwargs, message):
    from mde_pyg.train import check_trainer_args

    with pytest.raises(ValueError, match=message):
        check_trainer_args(**kwargs)
    with pytest.raises(ValueError, match=message):
        train(data, **kwargs)
    check_trainer_args(lr=1e-3, weight_decay=0, batch_size=np.int64(8),
                       max_epochs=1, patience=1, ks=[np.int64(3), 1],
                       eval_metric="ndcg@3",
                       callbacks=(print,))  # valid values pass


def test_callbacks_may_be_a_generator(data):
    seen = []
    callbacks = (f for f in [lambda t, e: seen.append(e["epoch"])])
    train(data, max_epochs=2, patience=5, callbacks=callbacks).fit()
    assert seen == [0, 1]


def test_resume_refuses_other_settings(data, tmp_path):
    from mde_pyg.train import ResumeMismatchError

    run = tmp_path / "run"
    train(data, run, max_epochs=1).fit()
    saved = (run / "last.pt").read_bytes()
    with pytest.raises(ResumeMismatchError, match=r"\(lr 0.05 -> 0.1\)"):
        train(data, run, max_epochs=2, lr=0.1).fit(resume=True)
    assert (run / "last.pt").read_bytes() == saved  # nothing trained
    fewer = data.clone()
    store = fewer["user", "rates", "item"]
    store.edge_index = store.edge_index[:, 1:]
    num = store.edge_index.size(1)
    with pytest.raises(ResumeMismatchError,
                       match=rf"\(data_sizes.train {num + 1} -> {num}; "
                             rf"interactions_crc32 '[0-9a-f]{{8}}' -> "
                             rf"'[0-9a-f]{{8}}'\)"):
        train(fewer, run, max_epochs=2).fit(resume=True)
    # the same sizes, one valid pair swapped with a train pair of its user
    swapped = swap_with_train(data, "val_edge_index")
    with pytest.raises(ResumeMismatchError, match=r"\(interactions_crc32 "
                       r"'[0-9a-f]{8}' -> '[0-9a-f]{8}'\)"):
        train(swapped, run, max_epochs=2).fit(resume=True)
    # max_epochs (and device) may change: the run continues
    resumed = train(data, run, max_epochs=2).fit(resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1]


def test_a_resume_mismatch_lists_its_changes(data, tmp_path):
    import pickle

    from mde_pyg.train import ResumeMismatchError

    run = tmp_path / "run"
    train(data, run, max_epochs=1, extra_config={"data": {"j": 1}}).fit()
    with pytest.raises(ResumeMismatchError) as info:
        train(data, run, max_epochs=2, lr=0.1, weight_decay=0.5,
              extra_config={"data": {"j": 1, "k": 3}}).fit(resume=True)
    error = info.value
    assert error.path == run / "last.pt"
    assert error.changes == [("lr", 0.05, 0.1), ("weight_decay", 0.0, 0.5),
                             ("data.k", None, 3)]
    assert str(error) == (
        f"'{run / 'last.pt'}' was written under other settings (lr 0.05 -> "
        f"0.1; weight_decay 0.0 -> 0.5; data.k None -> 3); resume with the "
        f"settings it was started with, or train into another output "
        f"folder")
    # a caller that knows the default of an unrecorded setting shows it
    assert "data.k 7 -> 3)" in error.describe({"data.k": 7, "lr": 1.0})
    assert "(lr 0.05 -> 0.1;" in error.describe({"lr": 1.0})  # not None
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.changes, str(copy)) == (
        error.path, error.changes, str(error))
    with pytest.raises(ValueError, match="needs a 'message' or 'changes'"):
        ResumeMismatchError()


def test_resume_refuses_other_model_hparams(synthetic_graphs, tmp_path):
    from mde_pyg.models import build_model
    from mde_pyg.train import ResumeMismatchError

    def trainer(**hparams):
        model = build_model("lightgcn", synthetic_graphs, **hparams)
        return Trainer(model, synthetic_graphs, max_epochs=2, progress=False,
                       ks=(5,), eval_metric="recall@5",
                       output_dir=tmp_path)

    trainer().fit()
    with pytest.raises(ResumeMismatchError,
                       match="model_hparams.num_layers 3 -> 2"):
        trainer(num_layers=2).fit(resume=True)
    # the default given explicitly is the same run
    assert trainer(num_layers=3).fit(resume=True)["config"][
        "model_hparams"]["num_layers"] == 3
    # a model built directly has no recorded hparams: nothing to compare
    from mde_pyg.models import LightGCN

    direct = Trainer(LightGCN(synthetic_graphs), synthetic_graphs,
                     max_epochs=3, progress=False, ks=(5,),
                     eval_metric="recall@5", output_dir=tmp_path)
    assert [h["epoch"] for h in direct.fit(resume=True)["history"]] == [0, 1,
                                                                         2]


class FakeTerminal:
    """A stderr that claims to be a terminal and keeps what is written."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_lines_when_stderr_is_not_a_terminal(data, capsys):
    # pytest's captured stderr is not a terminal: one line per epoch with
    # the epoch's values from the history, then the early stop's line.
    trainer = train(data, max_epochs=50, patience=2)
    trainer.progress = True
    result = trainer.fit()
    lines = capsys.readouterr().err.splitlines()
    history = result["history"]
    assert len(lines) == len(history) + 1
    best_score, best_epoch = -1.0, -1
    for line, entry in zip(lines, history):
        score = entry["valid"]["recall@20"]
        if score > best_score:
            best_score, best_epoch = score, entry["epoch"]
        assert line.startswith(f"MF epoch {entry['epoch']} ("
                               f"{entry['epoch'] + 1} of at most 50): loss "
                               f"{entry['loss']:.4f}, valid recall@20 "
                               f"{score:.4f}, best {best_score:.4f} at "
                               f"epoch {best_epoch}, ")
    assert best_epoch == result["best_epoch"]
    assert lines[-1] == (f"MF stopped early: no better valid recall@20 in 2 "
                         f"epochs; best {best_score:.4f} at epoch "
                         f"{best_epoch}")


def test_progress_bar_on_a_terminal_and_none_when_off(data, capsys,
                                                      monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    trainer = train(data, max_epochs=3)
    trainer.progress = True
    trainer.fit()
    assert "3/3" in terminal.text and "epoch 0/" not in terminal.text
    # the epochs since the best one, against the patience that stops it
    # (the bar counts to max_epochs)
    waits = [0]
    for entry in trainer.history[1:]:
        best = max(h["valid"]["recall@20"] for h in trainer.history
                   if h["epoch"] < entry["epoch"])
        waits.append(0 if entry["valid"]["recall@20"] > best
                     else waits[-1] + 1)
    assert f"no gain={waits[-1]}/{trainer.patience}" in terminal.text
    monkeypatch.undo()
    train(data, max_epochs=3).fit()  # progress=False
    assert capsys.readouterr().err == ""


def test_resume_accepts_the_class_imported_from_elsewhere(synthetic_graphs,
                                                          tmp_path):
    # a notebook's class (module __main__) resumed from the module that
    # now holds it: the import path may change, its name may not
    from mde_pyg.models import build_model
    from mde_pyg.train import ResumeMismatchError

    def trainer(max_epochs):
        model = build_model("lightgcn", synthetic_graphs)
        return Trainer(model, synthetic_graphs, max_epochs=max_epochs,
                       progress=False, ks=(5,), eval_metric="recall@5",
                       output_dir=tmp_path)

    trainer(1).fit()
    last = tmp_path / "last.pt"
    state = torch.load(last, weights_only=False)
    state["config"]["model_path"] = "__main__:LightGCN"
    torch.save(state, last)
    resumed = trainer(2).fit(resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1]
    assert resumed["config"]["model_path"] == \
        "mde_pyg.models.lightgcn:LightGCN"
    state = torch.load(last, weights_only=False)
    state["config"]["model_class"] = "MyLightGCN"
    torch.save(state, last)
    with pytest.raises(ResumeMismatchError,
                       match="model_class 'MyLightGCN' -> 'LightGCN'"):
        trainer(3).fit(resume=True)


def test_extra_config_is_recorded_and_compared(synthetic_graphs, tmp_path):
    from mde_pyg.models import build_model
    from mde_pyg.train import ResumeMismatchError

    def trainer(max_epochs, **extra):
        model = build_model("lightgcn", synthetic_graphs)
        return Trainer(model, synthetic_graphs, max_epochs=max_epochs,
                       progress=False, ks=(5,), eval_metric="recall@5",
                       output_dir=tmp_path, extra_config=extra)

    result = trainer(1, data={"k_user": 5, "cwd": "/a"}).fit()
    assert result["config"]["data"] == {"k_user": 5, "cwd": "/a"}
    assert torch.load(tmp_path / "best.pt", weights_only=False)[
        "config"]["data"]["k_user"] == 5
    with pytest.raises(ResumeMismatchError, match=r"data.k_user 5 -> 6\)"):
        trainer(2, data={"k_user": 6, "cwd": "/a"}).fit(resume=True)
    # data.cwd (where relative paths start) may change
    resumed = trainer(2, data={"k_user": 5, "cwd": "/b"}).fit(resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1]
    with pytest.raises(ValueError, match=r"may not redefine the trainer's "
                       r"own settings \['lr'\]"):
        trainer(1, lr=0.5)
    # stored as plain values: a path or a NumPy number reads back
    import numpy as np

    trainer(3, data={"k_user": np.int64(5), "cwd": tmp_path}).fit(
        resume=True)
    config = torch.load(tmp_path / "last.pt", weights_only=True)["config"]
    assert config["data"] == {"k_user": 5, "cwd": str(tmp_path)}


def test_each_epoch_hands_every_train_pair_once_with_a_true_negative():
    # METHOD.md §4, through the Trainer: each train (user, item) once per
    # epoch, with a negative that is never a train item of that user
    data = random_data()
    seen = []

    class Recorded(MF):
        def loss(self, user, pos, neg):
            seen.append((user.clone(), pos.clone(), neg.clone()))
            return super().loss(user, pos, neg)

    seed_everything(0)
    trainer = Trainer(Recorded.from_data(data), data, batch_size=64, seed=0,
                      ks=(5,), eval_metric="recall@5", progress=False)
    trainer.train_epoch()
    train_pairs = set(map(tuple, data[RATES].edge_index.t().tolist()))
    user, pos, neg = (torch.cat(x).tolist() for x in zip(*seen))
    assert sorted(zip(user, pos)) == sorted(train_pairs)
    assert not [(u, n) for u, n in zip(user, neg) if (u, n) in train_pairs]


def test_weight_decay_reaches_adam():
    data = random_data()

    def trainer(**kwargs):
        seed_everything(0)
        return Trainer(MF.from_data(data), data, batch_size=64, seed=0,
                       ks=(5,), eval_metric="recall@5", progress=False,
                       lr=0.05, **kwargs)

    decayed, plain = trainer(weight_decay=0.1), trainer()
    assert [g["weight_decay"] for g in decayed.optimizer.param_groups] == \
        [0.1]
    decayed.train_epoch(max_batches=1)
    plain.train_epoch(max_batches=1)
    assert not torch.equal(decayed.model.user_emb.weight,
                           plain.model.user_emb.weight)


def test_python_defaults_are_the_protocols():
    # the README's Python snippets rely on these, as the CLI's own
    import inspect

    from mde_pyg.transforms import MultiModalGraphs

    params = inspect.signature(Trainer).parameters
    assert {k: params[k].default for k in
            ("lr", "batch_size", "max_epochs", "patience", "eval_metric",
             "ks")} == {"lr": 1e-3, "batch_size": 2048, "max_epochs": 1000,
                        "patience": 20, "eval_metric": "recall@20",
                        "ks": (5, 10, 20, 50)}
    graphs = inspect.signature(MultiModalGraphs).parameters
    assert (graphs["k_user"].default, graphs["k_item"].default) == (40, 10)


def test_a_loss_may_return_the_bare_total_and_nothing_else(data):
    # a bare scalar trains as (total, {}): the same weights, no parts logged
    class BareMF(MF):
        def loss(self, user, pos, neg):
            return super().loss(user, pos, neg)[0]

    seed_everything(0)
    bare = BareMF.from_data(data)
    seed_everything(0)
    pair = MF.from_data(data)
    for model in (bare, pair):
        Trainer(model, data, batch_size=64, lr=0.05, ks=(5,),
                eval_metric="recall@5", max_epochs=2, progress=False).fit()
    assert torch.equal(bare.user_emb.weight, pair.user_emb.weight)
    trainer = Trainer(BareMF.from_data(data), data, batch_size=64, ks=(5,),
                      eval_metric="recall@5", max_epochs=1, progress=False)
    assert trainer.fit()["history"][0]["parts"] == {}

    # anything else is named, with what to return
    class Wrong(MF):
        def loss(self, user, pos, neg):
            return self.out

    for out, got in [((torch.tensor(1.0),), "tuple"),
                     (torch.ones(3), "a tensor of shape (3,)"),
                     ({"bpr": torch.tensor(1.0)}, "dict")]:
        model = Wrong.from_data(data)
        model.out = out
        trainer = Trainer(model, data, max_epochs=1, ks=(5,),
                          eval_metric="recall@5", progress=False)
        with pytest.raises(TypeError, match=re.escape(
                f"Wrong.loss returned {got}; return the scalar loss and a "
                f"dict of its logged parts, (total, {{name: part}}) (e.g. "
                f"return self.sum_parts({{'bpr': bpr, 'reg': reg}})), or the "
                f"scalar loss alone")):
            trainer.fit()


def test_resuming_a_run_that_had_ended_says_so(data, tmp_path, capsys):
    # the run is reloaded and nothing trains; the progress output says why
    run = tmp_path / "run"
    first = train(data, run, max_epochs=2).fit()
    capsys.readouterr()
    resumed = train(data, run, max_epochs=2)
    resumed.progress = True
    again = resumed.fit(resume=True)
    assert strip_seconds(again["history"]) == strip_seconds(first["history"])
    assert capsys.readouterr().err == (
        f"MF: the run in '{run}' had already ended (2 epochs run, "
        f"max_epochs is 2); nothing more to train\n")
    # stopped early: scripted scores, best at epoch 0, patience 1
    stopped = train(data, tmp_path / "stopped", max_epochs=10, patience=1)
    keys = stopped.valid_evaluator.metric.keys
    scores = iter([0.3, 0.1])
    stopped.valid_evaluator = lambda model: dict.fromkeys(keys, next(scores))
    assert stopped.fit()["best_epoch"] == 0
    capsys.readouterr()
    resumed = train(data, tmp_path / "stopped", max_epochs=10, patience=1)
    resumed.progress = True
    resumed.fit(resume=True)
    assert "had already ended (it stopped early, best epoch 0); nothing " \
        "more to train\n" in capsys.readouterr().err


def test_an_epoch_is_one_adam_step_per_batch_it_hands_the_model():
    # replayed by hand: zero_grad, the batch's loss, backward, one step of
    # torch.optim.Adam (with the weight decay) per batch, in order
    data = random_data()

    class Recorded(MF):
        def loss(self, user, pos, neg):
            self.batches.append((user.clone(), pos.clone(), neg.clone()))
            return super().loss(user, pos, neg)

    seed_everything(0)
    model = Recorded.from_data(data, dropout=0.0)
    model.batches = []
    reference = copy.deepcopy(model)
    trainer = Trainer(model, data, lr=0.05, weight_decay=1e-3, batch_size=64,
                      seed=0, ks=(5,), eval_metric="recall@5", progress=False)
    trainer.train_epoch()
    assert len(model.batches) == 3  # 180 pairs in batches of 64
    adam = torch.optim.Adam(reference.parameters(), lr=0.05,
                            weight_decay=1e-3, foreach=False)
    for user, pos, neg in model.batches:
        adam.zero_grad()
        MF.loss(reference, user, pos, neg)[0].backward()
        adam.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
