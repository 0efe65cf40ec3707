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
    # a user without held-out items gets NaN in every metric, and the
    # average of ranking_metrics leaves that user out
    out = per_user_metrics(top, [targets[0], targets[1], []], ks=(1,))
    assert all(math.isnan(v[2]) for v in out.values())
    assert out["precision@1"][:2].tolist() == [0.0, 1.0]
    assert ranking_metrics(top, [targets[0], targets[1], []],
                           ks=(1,))["precision@1"] == 0.5


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


def test_repeated_ranked_items_are_an_error():
    message = ("'top_items' row 0 lists item 1 more than once .*each row of "
               "the ranking must list distinct item ids; -1 pads")
    with pytest.raises(ValueError, match=message):
        ranking_metrics(torch.tensor([[1, 1, 1]]), [torch.tensor([1, 2])],
                        ks=(3,))
    # the first offending row is named, also through RankingMetrics
    top = torch.tensor([[0, 1, 2, -1], [4, 3, 0, 3], [2, 2, 1, 0]])
    metric = RankingMetrics(ks=(2,))
    with pytest.raises(ValueError, match=r"row 1 lists item 3 .*2 such row"):
        metric.update(top, [torch.tensor([0])] * 3)
    assert metric.num_users == 0
    # -1 padding may repeat
    out = ranking_metrics(torch.tensor([[3, -1, -1]]), [torch.tensor([3])],
                          ks=(3,))
    assert out["recall@3"] == 1.0
    assert out["precision@3"] == pytest.approx(1 / 3)


def test_targets_as_sequences_of_ints(example):
    top, targets = example
    base = ranking_metrics(top, targets, ks=(2, 4))
    as_lists = [t.tolist() for t in targets]
    assert ranking_metrics(top, as_lists, ks=(2, 4)) == base
    assert ranking_metrics(top, tuple(as_lists), ks=(2, 4)) == base
    # an empty list is a user without held-out items
    top4 = torch.cat([top, torch.tensor([[0, 1, 2, 3]])])
    assert ranking_metrics(top4, [*as_lists, []], ks=(2, 4)) == base
    assert ranking_metrics(top[:1], [[1]], ks=(1,))["recall@1"] == 0.0


def test_float_targets_are_refused(example):
    top, targets = example
    floats = [targets[0], targets[1].float(), targets[2]]
    with pytest.raises(TypeError, match=r"'targets\[1\]' must hold integer "
                                        r"item ids, got torch.float32"):
        ranking_metrics(top, floats, ks=(2,))
    with pytest.raises(TypeError, match="integer item ids"):
        ranking_metrics(top[:1], [[1.5]], ks=(2,))
    with pytest.raises(TypeError, match="torch.bool"):
        ranking_metrics(top[:1], [torch.tensor([True])], ks=(2,))


def test_rank_top_k_orders_by_score_then_id():
    from mde_pyg.metrics import rank_top_k

    scores = torch.tensor([[1.0, 3.0, 1.0, 3.0, 2.0, 1.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    # by hand: (score desc, id asc)
    full = [[1, 3, 4, 0, 2, 5], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]
    for k in range(1, 7):
        values, indices = rank_top_k(scores, k)
        assert indices.tolist() == [row[:k] for row in full]
        assert torch.equal(values, scores.gather(1, indices))
    # ties among the chosen but none at the cut: only that row is reordered
    scores = torch.tensor([[3.0, 1.0, 3.0, 0.0, 5.0],
                           [9.0, 8.0, 7.0, 6.0, 5.0]])
    values, indices = rank_top_k(scores, 3)
    assert indices.tolist() == [[4, 0, 2], [0, 1, 2]]
    # NaN ranks first and counts as above a tied cut
    nan = torch.tensor([[float("nan"), 5.0, 3.0, 3.0, 3.0]])
    assert rank_top_k(nan, 3)[1].tolist() == [[0, 1, 2]]
    for bad in (0, 6):
        with pytest.raises(ValueError, match=rf"1 <= k <= N, got shape "
                           rf"\(1, 5\) and k={bad}"):
            rank_top_k(nan, bad)
    assert values.tolist() == [[5.0, 3.0, 3.0], [9.0, 8.0, 7.0]]


def test_model_recommend_ranks_ties_by_item_id(synthetic_graphs):
    # all-zero embeddings score every item 0: the smallest ids come first,
    # and an excluded item gives its place to the next id
    from mde_pyg.models import build_model

    model = build_model("lightgcn", synthetic_graphs)
    torch.nn.init.zeros_(model.embedding.weight)
    user = torch.tensor([0, 5])
    assert model.recommend(user, k=4).tolist() == [[0, 1, 2, 3]] * 2
    exclude = torch.tensor([[1], [2]])  # user 5 (position 1), item 2
    assert model.recommend(user, k=4, exclude=exclude).tolist() == \
        [[0, 1, 2, 3], [0, 1, 3, 4]]


def test_check_ks_sorts_drops_repeats_and_takes_integer_types():
    import numpy as np

    from mde_pyg.metrics import check_ks, metric_keys

    assert check_ks([20, 10, 20]) == (10, 20)
    assert check_ks((np.int64(5), torch.tensor(1))) == (1, 5)
    assert check_ks(range(3, 0, -1)) == (1, 2, 3)
    assert metric_keys([10, 5]) == ["recall@5", "recall@10", "precision@5",
                                    "precision@10", "map@5", "map@10",
                                    "ndcg@5", "ndcg@10"]
    for bad, match in ((10.0, "sequence"), ("10", "sequence"),
                       ([10.0], "integers, got 10.0"),
                       ([torch.tensor(2.5)], "integers"), ([], "at least one"),
                       ([3, -1], ">= 1, got -1")):
        with pytest.raises(ValueError, match=match):
            check_ks(bad)
    with pytest.raises(ValueError, match="Cut-off 20 exceeds the 10 ranked"):
        check_ks([5, 20], max_k=10)
