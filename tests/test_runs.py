import csv
import json
import shutil

import pytest
import torch
from data_helpers import swap_with_train
from device_params import DEVICES

from mde_pyg.cli import load_data, main
from mde_pyg.models import available_models
from mde_pyg.runs import load_run
from mde_pyg.train import Evaluator
from mde_pyg.train.evaluator import split_edges
from mde_pyg.train.recommend import iter_recommend, recommend

#: Score differences below which two items count as tied.
GAP = 1e-5
SYNTHETIC = ["--dataset", "synthetic", "--max-epochs", "2", "--no-progress"]


def train(out, model="mde", *extra):
    assert main(["train", "--model", model, *SYNTHETIC, "--output", str(out),
                 *extra]) == 0
    return json.loads((out / "results.json").read_text())


def evaluate(model, data, split, ks):
    return Evaluator(data, split, ks)(model)


@pytest.fixture(scope="module")
def mde_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mde"
    # on the CPU: module fixtures come before cpu_unless_marked_cuda
    return out, train(out, "mde", "--set", "lambda_1=0.1", "--device", "cpu")


def test_load_run_gives_the_recorded_best_epoch(mde_run):
    out, result = mde_run
    model, data = load_run(out)
    assert not model.training and model.lambda_1 == 0.1
    ks = result["config"]["ks"]
    # The reloaded weights give exactly the metrics recorded at the best
    # validation epoch.
    assert evaluate(model, data, "valid", ks) == result["valid"]
    assert evaluate(model, data, "test", ks) == result["test"]


def test_load_run_of_a_grid_rebuilds_the_selected_run(tmp_path):
    out = tmp_path / "grid"
    result = train(out, "lightgcn", "--grid", "num_layers=1,3")
    selected = result["params"]["num_layers"]
    assert result["checkpoint"] == (
        f"run_{[1, 3].index(selected):03d}/best.pt")
    model, data = load_run(out)
    assert model.num_layers == selected
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        result["valid"]
    # each point of the grid loads as itself, with the data recorded for
    # the grid, and scores its own row of grid.csv
    rows = list(csv.DictReader(open(out / "grid.csv")))
    for index, layers in enumerate([1, 3]):
        point, point_data = load_run(out / f"run_{index:03d}")
        assert point.num_layers == layers
        assert evaluate(point, point_data, "valid", [20])["recall@20"] == \
            pytest.approx(float(rows[index]["valid_recall@20"]), abs=1e-12)
    # results.json written before it named the checkpoint: grid.csv does.
    old = {k: v for k, v in result.items() if k != "checkpoint"}
    (out / "results.json").write_text(json.dumps(old))
    model, data = load_run(out, data=data)
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        result["valid"]


def test_a_grid_written_before_model_hparams_reloads_its_selection(tmp_path):
    # no config.model_hparams: the fixed arguments (config.hparams) and
    # the selected grid values (params) rebuild the model; neither number
    # of layers is LightGCN's default 3
    out = tmp_path / "grid"
    result = train(out, "lightgcn", "--set", "embedding_dim=16", "--grid",
                   "num_layers=1,2")
    del result["config"]["model_hparams"], result["checkpoint"]
    (out / "results.json").write_text(json.dumps(result))
    model, data = load_run(out)
    assert (model.num_layers, model.embedding_dim) == (
        result["params"]["num_layers"], 16)
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        result["valid"]


def test_load_run_refuses_other_data(mde_run, synthetic_graphs):
    out, _ = mde_run
    with pytest.raises(ValueError, match=r"users 300 -> 60; items 200 -> 40"):
        load_run(out, data=synthetic_graphs)
    # the sizes it was trained on, but one test pair moved into train and
    # the train pair it replaced into test
    data = swap_with_train(load_run(out)[1], "test_edge_index")
    with pytest.raises(ValueError, match=r"has the sizes '.*' was trained on "
                       r"but other interactions \(checksum [0-9a-f]{8}, the "
                       r"run recorded [0-9a-f]{8}\)"):
        load_run(out, data=data)
    with pytest.raises(FileNotFoundError, match="holds no results.json"):
        load_run(out.parent)
    # a dataset run has no folder to look for elsewhere
    with pytest.raises(ValueError, match=r"^'data_folder' was given, but the "
                       r"run read the 'synthetic' dataset, not a folder$"):
        load_run(out, data_folder=out.parent)
    other = out.parent / "other"
    other.mkdir()
    for text, message in (("[1, 2]", "has no config.data"),
                          ('{"config": {}}', "has no config.data"),
                          ("{", "is not JSON")):
        (other / "results.json").write_text(text)
        with pytest.raises(ValueError, match=message):
            load_run(other)


def test_load_run_refuses_larger_data(tiny_folder, tmp_path,
                                      synthetic_graphs):
    # more users and items than the run was trained on, not only fewer
    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--data", str(tiny_folder),
                 "--modality", "text=text.npy", "--k-item", "2", "--ks", "1,2",
                 "--eval-metric", "recall@2", "--no-progress",
                 "--output", str(out)]) == 0
    with pytest.raises(ValueError, match=r"differs from what '.*run' was "
                       r"trained on \(users 4 -> 60; items 5 -> 40; train "):
        load_run(out, data=synthetic_graphs)


def test_load_run_looks_for_a_datasets_default_root_where_it_started(
        tmp_path, monkeypatch):
    from mde_pyg.runs import _resolve_paths

    # `mde-pyg train --dataset baby` (no --root) read data/baby relative
    # to where it started
    started = tmp_path / "started"
    (started / "data" / "baby").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = _resolve_paths({"dataset": "baby", "cwd": str(started)})
    assert source["root"] == str(started / "data" / "baby")
    # found here, it stays relative; the synthetic dataset has no root
    (elsewhere / "data" / "baby").mkdir(parents=True)
    assert _resolve_paths({"dataset": "baby", "cwd": str(started)})[
        "root"] == "data/baby"
    assert _resolve_paths({"dataset": "synthetic", "cwd": str(started)}) \
        == {"dataset": "synthetic", "cwd": str(started)}


def test_recommend_against_a_brute_force_ranking(mde_run):
    out, _ = mde_run
    model, data = load_run(out)
    user = torch.tensor([0, 5, 7, 299])
    item, score = recommend(model, data, user, k=10, batch_size=3)
    with torch.no_grad():
        full = model.scorer()(user)
    train_u, train_i = split_edges(data, "train")
    # Batched (3 users) and full scoring may round differently (BLAS
    # blocking depends on the shape), which can swap near-tied items: the
    # scores must agree, the items wherever the ranking is decided, i.e.
    # the score of a position is more than GAP from its neighbours'
    # (the 11th, first left out, included).
    decided = 0
    for row, u in enumerate(user.tolist()):
        seen = train_i[train_u == u]
        expected = full[row].clone()
        expected[seen] = float("-inf")
        top, index = expected.topk(11)
        assert torch.allclose(score[row], top[:10], rtol=1e-5, atol=1e-6)
        gap = top[:-1] - top[1:]  # gap[j]: position j to position j + 1
        for j in range(10):
            if gap[j] > GAP and (j == 0 or gap[j - 1] > GAP):
                assert item[row, j] == index[j], (u, j)
                decided += 1
    # not a vacuous check: measured, 36 of the 40 positions are decided
    # (users 0 and 7 have adjacent scores 3.9e-6 and 1.9e-7 apart)
    assert decided >= 30
    # exclude every split: no recommended item is one the user has seen
    item, _ = recommend(model, data, user, k=10,
                        exclude=("train", "valid", "test"))
    for row, u in enumerate(user.tolist()):
        seen = set()
        for split in ("train", "valid", "test"):
            us, it = split_edges(data, split)
            seen |= set(it[us == u].tolist())
        assert not seen & set(item[row].tolist())


def test_iter_recommend_leaves_the_caller_its_modes(mde_run):
    out, _ = mde_run
    model, data = load_run(out)
    model.train()
    batches = iter_recommend(model, data, k=5, batch_size=100)
    first = next(batches)
    # Between two batches the caller trains as before:
    assert torch.is_grad_enabled() and model.training
    rest = list(batches)
    assert model.training
    item, _ = recommend(model.eval(), data, k=5)
    assert torch.equal(torch.cat([first[1]] + [b[1] for b in rest]), item)


def test_iter_recommend_defaults_are_recommends(mde_run):
    out, _ = mde_run
    model, data = load_run(out)
    # every user, in one batch of at most 4096 users, 20 items each
    batches = list(iter_recommend(model, data))
    assert len(batches) == 1
    user, item, score = batches[0]
    assert torch.equal(user, torch.arange(300))
    assert item.shape == score.shape == (300, 20)
    assert torch.equal(item, recommend(model, data)[0])


def test_recommended_scores_carry_no_gradients(synthetic_graphs):
    # VBPR scores with its parameters themselves (not embeddings computed
    # without gradients): each batch's ranking records no autograd graph
    from mde_pyg.models import build_model

    model = build_model("vbpr", synthetic_graphs)
    item, score = recommend(model, synthetic_graphs, torch.arange(5), k=3)
    assert item.shape == (5, 3) and not score.requires_grad
    _, _, top = next(iter_recommend(model, synthetic_graphs, k=3))
    assert not top.requires_grad and torch.is_grad_enabled()


def test_recommend_pads_users_with_fewer_items_left(tiny_folder):
    from mde_pyg.models import build_model

    data = load_data(tiny_folder, modalities={"text": "text.npy"},
                     k_user=2, k_item=2)
    # MostPop scores the popularity order: items 0..4 score 5, 4, ..., 1.
    model = build_model("mostpop", data)
    # user 0 saw items 0-3 in train, 4 in test; user 3 saw item 0 only.
    item, score = recommend(model, data, torch.tensor([0, 3]), k=3)
    assert item.tolist() == [[4, -1, -1], [1, 2, 3]]
    assert score[0, 1:].tolist() == [float("-inf")] * 2
    assert score[0, 0] == 1.0 and score[1].tolist() == [4.0, 3.0, 2.0]
    item, _ = recommend(model, data, torch.tensor([0]), k=3, exclude=())
    assert item.tolist() == [[0, 1, 2]]
    # train + valid: user 3's valid item 2 goes too, its test item stays
    item, _ = recommend(model, data, torch.tensor([3, 2]), k=3,
                        exclude=("train", "valid"))
    assert item.tolist() == [[1, 3, 4], [2, 3, -1]]
    # the defaults: every user, in id order, and k = 20 (more than 5 items)
    everyone, _ = recommend(model, data, k=2)
    assert torch.equal(everyone, recommend(model, data, torch.arange(4),
                                           k=2)[0])
    assert everyone.tolist() == [[4, -1], [3, 4], [2, 3], [1, 2]]
    with pytest.raises(ValueError, match=r"\[1, 5\] .*, got 20"):
        recommend(model, data)
    with pytest.raises(ValueError, match=r"'user' has ids outside \[0, 4\) "
                       r"\(the number of users\): \[4\]"):
        recommend(model, data, torch.tensor([4]), k=2)
    assert recommend(model, data, torch.tensor([3]), k=torch.tensor(2))[0] \
        .tolist() == [[1, 2]]  # a PyTorch (or NumPy) integer is a k
    for k in (3.0, 0, 6, True):
        with pytest.raises(ValueError, match=r"'k' must be an integer in "
                           r"\[1, 5\] \(the number of items\), got"):
            recommend(model, data, torch.tensor([0]), k=k)
        with pytest.raises(ValueError, match=r"'k' must be an integer in"):
            model.recommend(torch.tensor([0]), k=k)

    class NotAModule:  # scorer and sizes, but no train()/eval()
        num_users, num_items = model.num_users, model.num_items
        scorer = model.scorer

    with pytest.raises(TypeError, match=r"NotAModule is not a "
                       r"torch.nn.Module: ranking switches the model to "
                       r"evaluation mode and back"):
        recommend(NotAModule(), data, k=2)
    with pytest.raises(TypeError, match=r"\('train',\)"):
        recommend(model, data, k=2, exclude="train")
    with pytest.raises(ValueError, match="unknown splits"):
        recommend(model, data, k=2, exclude=("seen",))
    with pytest.raises(ValueError, match=r"^'batch_size' must be >= 1, got "
                       r"0$"):
        recommend(model, data, k=2, batch_size=0)
    # no users: [0, k] integer items and float scores
    item, score = recommend(model, data, torch.tensor([], dtype=torch.long),
                            k=3)
    assert item.shape == score.shape == (0, 3)
    assert item.dtype == torch.long and score.dtype == torch.float32
    # the CLI's --exclude all is every split here, and the hint says so
    with pytest.raises(TypeError, match=r"such as \('train', 'valid', "
                       r"'test'\), not the string 'all'"):
        recommend(model, data, k=2, exclude="all")
    # the model's own recommend takes pairs, and points here for splits
    with pytest.raises(TypeError, match=r"\[2, E\] integer tensor, got "
                       r"tuple; .*mde_pyg.train.recommend\(model, data"):
        model.recommend(torch.tensor([0]), k=2, exclude=("train",))


def read_tsv(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "userID\trank\titemID\tscore"
    return [line.split("\t") for line in lines[1:]]


def test_recommend_refuses_data_of_other_sizes(tiny_folder,
                                               synthetic_graphs):
    from mde_pyg.models import build_model

    data = load_data(tiny_folder, modalities={"text": "text.npy"},
                     k_user=2, k_item=2)
    model = build_model("mostpop", data)
    with pytest.raises(ValueError, match=r"^The model ranks 4 users x 5 "
                       r"items, the data has 60 x 40; give the data it was "
                       r"trained on$"):
        recommend(model, synthetic_graphs, k=2)


def test_recommend_command(mde_run, capsys):
    out, _ = mde_run
    assert main(["recommend", str(out), "--k", "4", "--users", "3,1"]) == 0
    rows = read_tsv(out / "recommendations.tsv")
    model, data = load_run(out)
    item, score = recommend(model, data, torch.tensor([3, 1]), k=4)
    assert [(int(u), int(r), int(i)) for u, r, i, _ in rows] == [
        (u, r + 1, item[n, r].item()) for n, u in enumerate([3, 1])
        for r in range(4)]
    assert [float(s) for *_, s in rows] == pytest.approx(
        score.view(-1).tolist(), rel=1e-5)
    assert "top-4 items of 2 users" in capsys.readouterr().out
    assert not list(out.glob(".*tmp*"))
    assert main(["recommend", str(out), "--k", "2", "--users", "3",
                 "--output", str(out / "one.tsv")]) == 0
    assert "top-2 items of 1 user (" in capsys.readouterr().out
    # a repeated id counts once, in the order first given
    assert main(["recommend", str(out), "--k", "2", "--users", "3,1,3",
                 "--output", str(out / "two.tsv")]) == 0
    assert "top-2 items of 2 users" in capsys.readouterr().out
    assert [int(u) for u, *_ in read_tsv(out / "two.tsv")] == [3, 3, 1, 1]


def test_recommend_command_writes_no_padding_rows(tiny_folder, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--data", str(tiny_folder),
                 "--modality", "text=text.npy", "--k-item", "2", "--ks", "1,2",
                 "--eval-metric",
                 "recall@2", "--no-progress", "--output", str(out)]) == 0
    assert main(["recommend", str(out), "--k", "3", "--exclude",
                 "train+valid"]) == 0
    rows = [(int(u), int(r), int(i))
            for u, r, i, _ in read_tsv(out / "recommendations.tsv")]
    # MostPop's order 0..4; user 0 has only item 4 left (no -1 rows), user
    # 2's valid item 4 and user 3's valid item 2 are left out
    assert rows == [(0, 1, 4), (1, 1, 3), (1, 2, 4), (2, 1, 2), (2, 2, 3),
                    (3, 1, 1), (3, 2, 3), (3, 3, 4)]


def test_recommend_command_errors(tiny_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "mostpop", "--data", str(tiny_folder),
                 "--modality", "text=text.npy", "--k-item", "2", "--ks", "1,2",
                 "--eval-metric",
                 "recall@2",
                 "--no-progress", "--output", str(out)]) == 0
    for args, message in [
        (["--users", "1,x"], "--users must be user ids"),
        (["--users", "9", "--k", "2"],
         "--users has ids outside [0, 4) (the number of users): [9]"),
        (["--k", "9"], "--k must be in [1, 5]"),
    ]:
        with pytest.raises(SystemExit):
            main(["recommend", str(out), *args])
        assert message in capsys.readouterr().err
        assert not (out / "recommendations.tsv").exists()
    # The data folder moved: the error says so, --data says where it is.
    moved = tmp_path / "moved"
    shutil.move(tiny_folder, moved)
    with pytest.raises(SystemExit):
        main(["recommend", str(out)])
    assert "is not there" in capsys.readouterr().err
    assert main(["recommend", str(out), "--data", str(moved), "--k", "2",
                 "--exclude", "none"]) == 0
    rows = read_tsv(out / "recommendations.tsv")
    assert [(u, i) for u, _, i, _ in rows] == [
        (str(u), str(i)) for u in range(4) for i in (0, 1)]


@pytest.mark.parametrize("name", available_models())
def test_every_model_reloads_to_its_recorded_metrics(name, tmp_path):
    # Buffers that change during training (FREEDOM's pruned graph, ...)
    # and every constructor argument come back with the weights.
    result = train(tmp_path / name, name)
    model, data = load_run(tmp_path / name)
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        result["valid"]


@pytest.mark.parametrize("device", DEVICES)
def test_recommend_on_each_device(mde_run, device):
    out, result = mde_run
    model, data = load_run(out, device=device)
    assert next(model.parameters()).device.type == device
    # On CUDA, other summation orders may swap near-tied items:
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        pytest.approx(result["valid"], abs=1e-6 if device == "cpu" else 0.01)
    item, score = recommend(model, data, k=10, batch_size=128)
    cpu_model, _ = load_run(out, data=data)
    cpu_item, cpu_score = recommend(cpu_model, data, k=10)
    assert torch.allclose(score, cpu_score, atol=1e-4)
    # Ties aside (scores within 1e-4), the same items in the same order:
    assert (item == cpu_item).float().mean() > 0.99


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["lightgcn", "freedom", "mde"])
def test_cli_trains_on_cuda_when_a_gpu_is_present(name, tmp_path):
    result = train(tmp_path / name, name)  # no --device
    assert result["config"]["device"] == "cuda"
    assert "gpu" in result["environment"]
    model, data = load_run(tmp_path / name)  # on the CPU
    # the CUDA-trained weights score on the CPU as recorded, up to the
    # near-ties that other summation orders may swap
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        pytest.approx(result["valid"], abs=0.01)


def test_load_run_finds_a_relative_data_folder_from_where_it_started(
        tiny_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_folder.parent)
    assert main(["train", "--model", "mostpop", "--data", "tiny",
                 "--modality", "text=text.npy", "--k-item", "2", "--ks", "1,2",
                 "--eval-metric", "recall@2", "--no-progress",
                 "--output", "run"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, data = load_run(tiny_folder.parent / "run")  # 'tiny' is not here
    assert data["item"].num_nodes == 5
    result = json.loads((tiny_folder.parent / "run" / "results.json")
                        .read_text())
    assert evaluate(model, data, "test", [1, 2]) == result["test"]


def test_runs_of_an_earlier_version_reload(tmp_path, capsys):
    # A SAND run trained before the CLUB estimator was shared records no
    # 'shared_estimator'; SAND.legacy_hparams rebuilds its estimators.
    out = tmp_path / "sand"
    result = train(out, "sand", "--set", "shared_estimator=false")
    del result["config"]["model_hparams"]["shared_estimator"]
    (out / "results.json").write_text(json.dumps(result))
    model, data = load_run(out)
    assert model.sand.shared_estimator is False
    assert evaluate(model, data, "valid", result["config"]["ks"]) == \
        result["valid"]
    # weights that fit no model of today are a ValueError naming the file
    result["config"]["model_hparams"]["shared_estimator"] = True
    (out / "results.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match="do not fit the SAND rebuilt"):
        load_run(out, data=data)
    with pytest.raises(SystemExit):  # one line, not a traceback
        main(["recommend", str(out)])
    assert "do not fit the SAND" in capsys.readouterr().err


def test_a_fitted_model_ranks_as_it_was_evaluated(synthetic_graphs):
    # FREEDOM scores a pruned, re-sampled graph in training mode and the
    # full one in evaluation: fit leaves it in evaluation mode, and its
    # own recommend scores in evaluation mode whatever the caller's mode.
    from mde_pyg.models import build_model
    from mde_pyg.train import Trainer

    data = synthetic_graphs
    model = build_model("freedom", data)
    result = Trainer(model, data, max_epochs=1, ks=(5, 20),
                     progress=False).fit()
    assert result["model"] is model and not model.training
    user = torch.arange(40)
    item, _ = recommend(model, data, user, k=5, exclude=())
    assert torch.equal(model.recommend(user, k=5), item)
    model.train()
    with torch.no_grad():
        pruned = model.scorer()(user)
    assert not torch.allclose(pruned, model.eval().scorer()(user))
    model.train()
    assert torch.equal(model.recommend(user, k=5), item)
    assert model.training  # restored
    # ids are checked as mde_pyg.train.recommend checks them
    with pytest.raises(ValueError, match=rf"'user' has ids outside \[0, "
                       rf"{model.num_users}\) \(the number of users\): "
                       rf"\[-1, {model.num_users}\]"):
        model.recommend(torch.tensor([0, -1, model.num_users]), k=5)
    with pytest.raises(ValueError, match=r"outside .*: \[-1, -2, -3, -4, -5\] "
                       r"\.\.\.$"):
        recommend(model, data, -torch.arange(1, 8), k=5)
    with pytest.raises(TypeError, match=r"one user: torch.tensor\(\[u\]\)"):
        model.recommend(torch.tensor(0), k=5)


def test_load_run_of_a_trainer_output_dir(synthetic_graphs, tmp_path):
    # Trainer(output_dir=...) from Python writes best.pt, no results.json:
    # load_run rebuilds the model from best.pt's config for the data given
    from mde_pyg.models import build_model
    from mde_pyg.train import Trainer

    data = synthetic_graphs
    model = build_model("lightgcn", data, num_layers=1)
    out = tmp_path / "py_run"
    result = Trainer(model, data, max_epochs=2, ks=(5, 20), progress=False,
                     output_dir=out).fit()
    assert not (out / "results.json").exists()
    assert result["config"]["model_path"] == \
        "mde_pyg.models.lightgcn:LightGCN"
    with pytest.raises(ValueError, match=r"written by a Trainer from Python "
                       r".*load_run\('.*py_run', data=data\)"):
        load_run(out)
    loaded, same = load_run(out, data=data)
    assert same is data and loaded.num_layers == 1 and not loaded.training
    assert evaluate(loaded, data, "test", (5, 20)) == result["test"]
    user = torch.arange(30)
    assert torch.equal(loaded.recommend(user, k=5), model.recommend(user, 5))
    # a checkpoint of an earlier version (no model_path) names the manual
    # route; other data is refused as for a CLI run
    state = torch.load(out / "best.pt", weights_only=False)
    hparams = state["config"].pop("model_hparams")
    torch.save(state, out / "best.pt")
    with pytest.raises(ValueError, match=r"records no model_hparams \(a "
                       r"model not built by from_data\), so the model cannot "
                       r"be rebuilt"):
        load_run(out, data=data)
    state["config"]["model_hparams"] = hparams
    del state["config"]["model_path"]
    torch.save(state, out / "best.pt")
    with pytest.raises(ValueError, match=r"records no model_path .*"
                       r"model.load_state_dict\(torch.load\("):
        load_run(out, data=data)


def test_load_run_of_a_grid_search_output_dir(synthetic_graphs, tmp_path):
    # grid_search(output_dir=...) from Python writes grid.csv and run_<i>,
    # no results.json: the grid loads its selected configuration and each
    # run_<i> its own, for the data given
    from mde_pyg.train import grid_search

    data, out = synthetic_graphs, tmp_path / "py_grid"
    result = grid_search("lightgcn", data, {"num_layers": [1, 2]},
                         output_dir=out, max_epochs=2, ks=(5, 20),
                         progress=False)
    with pytest.raises(ValueError, match=r"'.*py_grid' was written by "
                       r"grid_search from Python .*load_run\('.*py_grid', "
                       r"data=data\)"):
        load_run(out)
    loaded, same = load_run(out, data=data)
    assert same is data and loaded.num_layers == result["params"][
        "num_layers"]
    assert evaluate(loaded, data, "test", (5, 20)) == result["test"]
    for row in result["runs"]:
        point, _ = load_run(out / f"run_{row['run']:03d}", data=data)
        assert point.num_layers == row["num_layers"]
        assert evaluate(point, data, "valid", (20,))["recall@20"] == \
            row["valid_recall@20"]
    # a configuration that has not finished (no row yet) says to resume
    shutil.copytree(out / "run_001", out / "run_002")
    with pytest.raises(FileNotFoundError, match=r"'.*run_002' has not "
                       r"finished training \('.*grid.csv' has no row for run "
                       r"2\); resume the grid"):
        load_run(out / "run_002", data=data)


def test_load_run_of_an_unfinished_cli_grid_says_to_resume(tmp_path):
    out = tmp_path / "grid"
    train(out, "lightgcn", "--grid", "num_layers=1,2")
    (out / "results.json").unlink()  # as if killed before the end
    with pytest.raises(FileNotFoundError, match=r"'.*grid' is an unfinished "
                       r"'mde-pyg train' grid .* --resume, or load one "
                       r"finished configuration, load_run\('.*run_00[01]'\)"):
        load_run(out)
    model, _ = load_run(out / "run_001")  # a finished configuration loads
    assert model.num_layers == 2


def test_load_run_of_an_unfinished_cli_run_says_to_resume(tmp_path):
    out = tmp_path / "run"
    train(out, "lightgcn")
    (out / "results.json").unlink()  # as if killed before the end
    with pytest.raises(FileNotFoundError, match=r"is an unfinished 'mde-pyg "
                       r"train' run .* with the same 'mde-pyg train' command "
                       r"and --resume"):
        load_run(out)


def test_training_again_removes_recommendations_of_earlier_weights(
        tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "lightgcn")
    assert main(["recommend", str(out), "--k", "3"]) == 0
    tsv = out / "recommendations.tsv"
    assert tsv.is_file()
    capsys.readouterr()
    # resumed to more epochs, the run's best weights may change: the file
    # made from the earlier ones goes, and the output says how to remake it
    assert main(["train", "--model", "lightgcn", *SYNTHETIC[:-3],
                 "--max-epochs", "3", "--no-progress", "--output", str(out),
                 "--resume"]) == 0
    assert not tsv.exists()
    assert f"removed {tsv}, made from the run's earlier weights; 'mde-pyg " \
           f"recommend {out}' makes it again" in capsys.readouterr().out
    # a recommendations file elsewhere (--output FILE) is the user's own
    mine = tmp_path / "mine.tsv"
    assert main(["recommend", str(out), "--k", "3", "--output",
                 str(mine)]) == 0
    # the curve of the earlier epochs goes too, whether or not --plot
    # draws a new one
    curve = out / "curve.png"
    curve.write_bytes(b"earlier")
    capsys.readouterr()
    train(out, "lightgcn", "--overwrite")
    assert mine.is_file()
    assert not curve.exists()
    assert f"removed {curve}, made from the run's earlier epochs; --plot " \
           f"makes it again" in capsys.readouterr().out


def test_training_a_grid_again_removes_its_configurations_recommendations(
        tmp_path, capsys):
    out = tmp_path / "grid"
    train(out, "lightgcn", "--grid", "num_layers=1,2")
    assert main(["recommend", str(out / "run_001"), "--k", "3"]) == 0
    tsv = out / "run_001" / "recommendations.tsv"
    assert tsv.is_file()
    capsys.readouterr()
    train(out, "lightgcn", "--grid", "num_layers=1,2", "--overwrite")
    assert not tsv.exists()
    assert f"removed {tsv}, made from the run's earlier weights; 'mde-pyg " \
           f"recommend {out / 'run_001'}' makes it again" in \
           capsys.readouterr().out
