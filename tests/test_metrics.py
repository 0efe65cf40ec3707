import math

import pytest
import torch

from mde_pyg.metrics import RankingMetrics, per_user_metrics, ranking_metrics

L3 = 1.0 / math.log2(3)
L5 = 1.0 / math.log2(5)


@pytest.fixture
def example():
    # user 0: one target, hit at rank 2 (fewer targets than K)
    # user 1: three targets, hits at ranks 1, 2, 4
    # user 2: one target, never ranked (item 4)
    top = torch.tensor([[3, 1, 0, 2], [2, 0, 1, 3], [0, 1, 2, 3]])
    targets = [torch.tensor([1]), torch.tensor([0, 2, 3]), torch.tensor([4])]
    return top, targets


def test_hand_computed(example):
    top, targets = example
    out = ranking_metrics(top, targets, ks=(2, 4))
    expected = {
        "recall@2": (1 + 2 / 3 + 0) / 3,
        "recall@4": (1 + 1 + 0) / 3,
        "precision@2": (1 / 2 + 2 / 2 + 0) / 3,
        "precision@4": (1 / 4 + 3 / 4 + 0) / 3,
        # MAP@K: sum_k P(k) rel(k) / min(|T_u|, K)
        "map@2": ((1 / 2) / 1 + (1 / 1 + 2 / 2) / 2 + 0) / 3,
        "map@4": ((1 / 2) / 1 + (1 / 1 + 2 / 2 + 3 / 4) / 3 + 0) / 3,
        # NDCG@K: IDCG over min(|T_u|, K) positions
        "ndcg@2": (L3 / 1 + (1 + L3) / (1 + L3) + 0) / 3,
        "ndcg@4": (L3 / 1 + (1 + L3 + L5) / (1 + L3 + 0.5) + 0) / 3,
    }
    assert list(out) == [
        "recall@2", "recall@4", "precision@2", "precision@4",
        "map@2", "map@4", "ndcg@2", "ndcg@4",
    ]
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


def test_per_user_values(example):
    top, targets = example
    out = per_user_metrics(top, targets, ks=(1,))
    assert out["recall@1"].tolist() == [0.0, 1 / 3, 0.0]
    assert out["precision@1"].tolist() == [0.0, 1.0, 0.0]
    assert out["map@1"].tolist() == [0.0, 1.0, 0.0]
    assert out["ndcg@1"].tolist() == [0.0, 1.0, 0.0]


def test_perfect_ranking_scores_one():
    top = torch.tensor([[4, 2, 0, 1], [3, 1, 2, 0]])
    out = ranking_metrics(top, [torch.tensor([2, 4]), torch.tensor([3])],
                          ks=(1, 2))
    assert out["ndcg@1"] == out["ndcg@2"] == 1.0
    assert out["map@1"] == out["map@2"] == 1.0
    assert out["recall@2"] == 1.0
    assert out["precision@2"] == pytest.approx(0.75)


def test_empty_and_duplicate_targets(example):
    top, targets = example
    base = ranking_metrics(top, targets, ks=(2, 4))
    # A user without held-out items is left out of the average:
    top4 = torch.cat([top, torch.tensor([[0, 1, 2, 3]])])
    assert ranking_metrics(top4, [*targets, torch.tensor([], dtype=torch.long)],
                           ks=(2, 4)) == pytest.approx(base)
    # Repeated targets count once:
    dup = [torch.tensor([1, 1]), torch.tensor([0, 2, 3, 3]), targets[2]]
    assert ranking_metrics(top, dup, ks=(2, 4)) == pytest.approx(base)


def test_accumulated_equals_single_call():
    gen = torch.Generator().manual_seed(0)
    top = torch.stack([torch.randperm(30, generator=gen)[:10]
                       for _ in range(17)])
    targets = [torch.randint(30, (int(n),), generator=gen)
               for n in torch.randint(1, 6, (17,), generator=gen)]
    metric = RankingMetrics(ks=(3, 10))
    for start in range(0, 17, 5):
        metric.update(top[start:start + 5], targets[start:start + 5])
    assert metric.num_users == 17
    assert metric.compute() == pytest.approx(
        ranking_metrics(top, targets, ks=(3, 10)), abs=1e-12)
    metric.reset()
    with pytest.raises(ValueError, match="No user"):
        metric.compute()
    assert str(metric) == "RankingMetrics(ks=[3, 10])"


def test_errors(example):
    top, targets = example
    with pytest.raises(ValueError, match=">= 1"):
        ranking_metrics(top, targets, ks=(0, 2))
    with pytest.raises(ValueError, match="exceeds the 4 ranked items"):
        ranking_metrics(top, targets, ks=(5,))
    with pytest.raises(ValueError, match="3 users but 'targets' holds 2"):
        ranking_metrics(top, targets[:2], ks=(2,))
    with pytest.raises(ValueError, match="shape"):
        ranking_metrics(top[0], targets, ks=(2,))
    with pytest.raises(ValueError, match="at least one"):
        RankingMetrics(ks=())


def test_empty_positions_never_hit():
    # -1 marks a position with no item (fewer rankable items than K)
    top = torch.tensor([[3, -1, -1], [2, 0, -1]])
    out = ranking_metrics(top, [torch.tensor([3, 0]), torch.tensor([0])],
                          ks=(3,))
    assert out["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="non-negative"):
        ranking_metrics(torch.tensor([[-2, 0]]), [torch.tensor([0])],
                        ks=(2,))
