import math

import pytest
import torch
from device_params import DEVICES
from torch_geometric.data import HeteroData

from mde_pyg.models import build_model
from mde_pyg.models.mostpop import MostPop
from mde_pyg.train import Trainer


@pytest.fixture
def data():
    # Popularity of items 0..4 is 4, 3, 2, 1, 0.
    train = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2),
             (2, 0), (2, 1), (3, 0)]
    data = HeteroData()
    data["user"].num_nodes = 4
    data["item"].num_nodes = 5
    store = data["user", "rates", "item"]
    store.edge_index = torch.tensor(train).t()
    store.val_edge_index = torch.tensor([[3, 2], [2, 4]])
    store.test_edge_index = torch.tensor([[0], [4]])
    return data


def test_scores_are_popularity(data):
    model = build_model("mostpop", data)
    assert isinstance(model, MostPop)
    assert model.popularity.tolist() == [4, 3, 2, 1, 0]
    assert list(model.parameters()) == []
    # ranking scores: positions in the popularity order (I = 5 first)
    scores = model.scorer()(torch.tensor([0, 3]))
    assert scores.tolist() == [[5, 4, 3, 2, 1]] * 2
    scores[0, 0] = -1  # a fresh tensor: masking must not alter the model
    assert model.rank_score[0] == 5 and model.popularity[0] == 4
    assert model(torch.tensor([1]), torch.tensor([2])).tolist() == [2.0]
    assert model.recommend(torch.tensor([3]), k=2).tolist() == [[0, 1]]
    assert str(model) == "MostPop(4 users, 5 items)"
    with pytest.raises(TypeError, match="no hyper-parameters"):
        build_model("mostpop", data, dim=3)


@pytest.mark.parametrize("device", DEVICES)
def test_popularity_on_any_device(device):
    model = MostPop(2, 6, torch.tensor([2, 3, 2, 3, 0, 3], device=device))
    assert model.rank_score.device.type == device
    assert model.rank_score.tolist() == [3, 6, 2, 5, 1, 4]


def test_ties_rank_the_smaller_item_id_first():
    # popularity 2, 3, 2, 3, 0, 3: order 1, 3, 5 (3 each), 0, 2, then 4
    model = MostPop(2, 6, torch.tensor([2, 3, 2, 3, 0, 3]))
    assert model.rank_score.tolist() == [3, 6, 2, 5, 1, 4]
    assert model.recommend(torch.tensor([0, 1]), k=4).tolist() == \
        [[1, 3, 5, 0]] * 2
    # masked items leave the rest in the same order
    exclude = torch.tensor([[0, 1], [3, 1]])
    assert model.recommend(torch.tensor([0, 1]), k=3,
                           exclude=exclude).tolist() == [[1, 5, 0],
                                                         [3, 5, 0]]
    # a derived buffer: checkpoints hold the counts only
    assert list(model.state_dict()) == ["popularity"]


def test_trainer_evaluates_once(data, tmp_path):
    seen = []
    result = Trainer(MostPop.from_data(data), data, ks=(1, 2, 3),
                     eval_metric="recall@3", progress=False,
                     output_dir=tmp_path,
                     callbacks=[lambda t, e: seen.append(dict(e))]).fit()
    assert result["best_epoch"] == 0 and len(result["history"]) == 1
    # one epoch-0 entry, as a trained model's, given to the callbacks too
    entry = result["history"][0]
    assert {k: entry[k] for k in ("epoch", "loss", "parts")} == \
        {"epoch": 0, "loss": None, "parts": {}}
    assert seen == [entry]
    # valid: user 3 ranks [1, 2, 3] (target 2), user 2 ranks [2, 3, 4]
    # (target 4).
    valid = result["valid"]
    assert valid["recall@1"] == 0.0
    assert valid["recall@2"] == 0.5
    assert valid["recall@3"] == 1.0
    assert valid["ndcg@3"] == pytest.approx((1 / math.log2(3) + 0.5) / 2)
    # test: user 0 has only item 4 left.
    assert result["test"]["recall@1"] == 1.0
    assert (tmp_path / "best.pt").exists()
