import math

import pytest
import torch
from torch_geometric.data import HeteroData

from mde_pyg.metrics import ranking_metrics
from mde_pyg.models.base import Recommender
from mde_pyg.train import Evaluator

L3 = 1.0 / math.log2(3)


class FixedScores(Recommender):
    def __init__(self, scores):
        super().__init__(*scores.shape)
        self.register_buffer("scores", scores.float())

    def scorer(self):
        return lambda user: self.scores[user].clone()


def make_data(train, valid, test, num_users, num_items):
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    store = data["user", "rates", "item"]
    store.edge_index = torch.tensor(train).t()
    store.val_edge_index = torch.tensor(valid).t()
    store.test_edge_index = torch.tensor(test).t()
    data["item", "rated_by", "user"].edge_index = store.edge_index.flip(0)
    return data


@pytest.fixture
def tiny():
    data = make_data(
        train=[(0, 0), (0, 1), (1, 2), (2, 0)],
        valid=[(0, 2), (1, 3)],
        test=[(0, 3), (2, 5)],
        num_users=3, num_items=6,
    )
    # Train items score highest; they must never be recommended.
    model = FixedScores(torch.tensor([
        [10, 10, 4, 5, 3, 2],
        [1, 2, 10, 5, 3, 6],
        [10, 1, 2, 3, 4, 5],
    ]))
    return data, model


def test_hand_computed(tiny):
    data, model = tiny
    valid = Evaluator(data, "valid", ks=(1, 2))
    assert valid.users.tolist() == [0, 1]
    # u0 ranks [3, 2, ...] (target 2), u1 ranks [5, 3, ...] (target 3).
    assert valid(model) == pytest.approx({
        "recall@1": 0.0, "recall@2": 1.0,
        "precision@1": 0.0, "precision@2": 0.5,
        "map@1": 0.0, "map@2": 0.5,
        "ndcg@1": 0.0, "ndcg@2": L3,
    })
    test = Evaluator(data, "test", ks=(1, 2), batch_size=1)
    assert test.users.tolist() == [0, 2]
    out = test(model)
    assert out["recall@1"] == out["ndcg@1"] == 1.0
    assert str(test) == "Evaluator(split='test', 2 users, ks=[1, 2])"


def test_masks_train_but_not_valid_items(tiny):
    data, model = tiny
    user = torch.tensor([0, 1, 2])
    top = Evaluator(data, "test", ks=(4,)).top_items(model, user)
    assert top.tolist() == [[3, 2, 4, 5], [5, 3, 4, 1], [5, 4, 3, 2]]
    # The validation item 2 of user 0 stays rankable when testing.
    assert 2 in top[0].tolist()


def random_pairs(num_users, num_items, count, gen):
    # count distinct (user, item) pairs, [count, 2]
    key = torch.randperm(num_users * num_items, generator=gen)[:count]
    return torch.stack([key // num_items, key % num_items], dim=1)


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_random_mask_property(batch_size):
    gen = torch.Generator().manual_seed(batch_size)
    num_users, num_items = 20, 30
    pairs = random_pairs(num_users, num_items, 200, gen)
    train, valid, test = pairs[:120], pairs[120:160], pairs[160:]
    data = make_data(train.tolist(), valid.tolist(), test.tolist(),
                     num_users, num_items)
    is_train = torch.zeros(num_users, num_items)
    is_train[train[:, 0], train[:, 1]] = 1
    model = FixedScores(100 * is_train + torch.rand(num_users, num_items,
                                                    generator=gen))
    evaluator = Evaluator(data, "valid", ks=(5, 10), batch_size=batch_size)
    top = evaluator.top_items(model, torch.arange(num_users))
    assert is_train.gather(1, top).sum() == 0
    # Each evaluated user has a valid item; the rest are skipped.
    assert evaluator.users.tolist() == sorted(set(valid[:, 0].tolist()))
    # Brute force: each evaluated user's scores with its train items at
    # -inf, sorted by hand (no ties: the scores are distinct random
    # floats); the metrics of that ranking against its valid items.
    users = evaluator.users.tolist()
    brute, targets = [], []
    for u in users:
        row = [float("-inf") if is_train[u, i] else model.scores[u, i].item()
               for i in range(num_items)]
        brute.append(sorted(range(num_items), key=row.__getitem__,
                            reverse=True)[:10])
        targets.append(torch.tensor(sorted(
            i for v, i in valid.tolist() if v == u)))
    brute = torch.tensor(brute)
    assert top[users].tolist() == brute.tolist()
    assert evaluator(model) == pytest.approx(
        ranking_metrics(brute, targets, ks=(5, 10)), rel=1e-12)


def test_errors(tiny):
    data, _ = tiny
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        Evaluator(data, "train")
    with pytest.raises(ValueError, match="exceeds the number of items"):
        Evaluator(data, "valid", ks=(10,))


def test_hand_built_data_and_scores_of_the_wrong_shape_are_refused(tiny):
    data, model = tiny
    evaluator = Evaluator(data, "valid", ks=(1, 2))
    narrow = FixedScores(model.scores[:, :5])  # forgot the last item
    with pytest.raises(ValueError, match=r"The scorer returned scores of "
                       r"shape \(2, 5\) for 2 users; expected \[2, 6\]"):
        evaluator(narrow)
    # held-out ids are checked where the evaluator takes the data
    data["user", "rates", "item"].val_edge_index = torch.tensor([[0, 1],
                                                                 [2, 9]])
    with pytest.raises(ValueError, match=r"val_edge_index names the item id 9 "
                       r"\(row 1, edge 1\), but data\['item'\].num_nodes is 6"):
        Evaluator(data, "valid", ks=(1, 2))
    del data["user", "rates", "item"].val_edge_index
    with pytest.raises(ValueError, match=r"has no 'val_edge_index' \(the valid "
                       r"interactions\); set it to a \[2, E\] tensor of "
                       r"\(user, item\) ids"):
        Evaluator(data, "valid", ks=(1, 2))


def test_metrics_take_top_items_of_any_memory_layout():
    top = torch.tensor([[0, 2, 3], [3, 1, 2], [0, 1, 2]])
    targets = [[2, 4], [1], [0, 1, 2, 3]]
    column_major = top.t().contiguous().t()
    assert not column_major.is_contiguous()
    # recall@3: 1/2, 1, 3/4
    assert ranking_metrics(column_major, targets, ks=(3,)) == \
        ranking_metrics(top, targets, ks=(3,)) == pytest.approx(
            {"recall@3": 0.75, "precision@3": (1 / 3 + 1 / 3 + 1) / 3,
             "map@3": (0.5 * (1 / 2) + (1 / 2) + (1 + 1 + 1) / 3) / 3,
             "ndcg@3": ((1 / math.log2(3)) / (1 + 1 / math.log2(3))
                        + (1 / math.log2(3)) / 1
                        + (1 + 1 / math.log2(3) + 0.5)
                        / (1 + 1 / math.log2(3) + 0.5)) / 3})


def test_user_with_fewer_unseen_items_than_k():
    # User 0 has 2 unseen items (4, 5) of 6; its test item 0 is also a
    # train item, so no ranking can hit it. The masked items must not fill
    # the positions past the unseen ones.
    data = make_data(train=[(0, 0), (0, 1), (0, 2), (0, 3)], valid=[(0, 5)],
                     test=[(0, 0), (0, 4)], num_users=1, num_items=6)
    model = FixedScores(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    with pytest.warns(UserWarning, match="1 of the 2 test"):
        evaluator = Evaluator(data, "test", ks=(5,))
    top = evaluator.top_items(model, torch.tensor([0]))
    assert top.tolist() == [[5, 4, -1, -1, -1]]
    # one hit (item 4, rank 2) of two targets; IDCG over min(2, 5) ranks
    assert evaluator(model) == pytest.approx({
        "recall@5": 0.5, "precision@5": 0.2, "map@5": 0.25,
        "ndcg@5": L3 / (1 + L3)})
    # the padding is out of place: a scorer with gradients still backprops
    weight = torch.ones(1, 6, requires_grad=True)
    values, _ = evaluator.seen.top_k(lambda u: weight * model.scores[u],
                                     torch.tensor([0]), 5,
                                     torch.device("cpu"))
    values[:, :2].sum().backward()
    assert weight.grad.tolist() == [[0, 0, 0, 0, 5, 6]]


def test_nan_scores_are_an_error(tiny):
    data, model = tiny
    model.scores[1, 4] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN for 1 of 2 users"):
        Evaluator(data, "valid", ks=(2,))(model)


def test_a_model_without_a_scorer_is_named(synthetic_graphs):
    from torch_geometric.nn.models import LightGCN

    from mde_pyg.train import recommend

    data = synthetic_graphs
    plain = LightGCN(data["user"].num_nodes + data["item"].num_nodes, 8, 2)
    message = (r"LightGCN lacks \['scorer', 'num_users', 'num_items'\]: "
               r"ranking needs a scorer\(\) method")
    with pytest.raises(TypeError, match=message):
        Evaluator(data, "valid", ks=(5,))(plain)
    with pytest.raises(TypeError, match=message):
        recommend(plain, data, k=5)


def brute_top(scores, seen, k):
    # (score desc, id asc) over the unseen items, by a plain Python sort
    out = []
    for u, row in enumerate(scores.tolist()):
        unseen = [i for i in range(len(row)) if i not in seen[u]]
        ranked = sorted(unseen, key=lambda i: (-row[i], i))[:k]
        out.append(ranked + [-1] * (k - len(ranked)))
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_integer_scores_rank_ties_by_item_id(batch_size):
    gen = torch.Generator().manual_seed(batch_size)
    num_users, num_items = 25, 60
    pairs = random_pairs(num_users, num_items, 400, gen)
    train, valid = pairs[:300], pairs[300:]
    data = make_data(train.tolist(), valid.tolist(), valid[:1].tolist(),
                     num_users, num_items)
    # few distinct values: ties at every cut-off
    model = FixedScores(torch.randint(0, 4, (num_users, num_items),
                                      generator=gen))
    seen = [set() for _ in range(num_users)]
    for u, i in train.tolist():
        seen[u].add(i)

    evaluator = Evaluator(data, "valid", ks=(5, 10, 20, 50),
                          batch_size=batch_size)
    users = evaluator.users
    expected = brute_top(model.scores[users], [seen[u] for u in users], 50)
    top = evaluator.top_items(model, users)
    assert top.tolist() == expected
    # the first j items do not depend on how many are asked for
    for k in (1, 5, 13):
        assert Evaluator(data, "valid", ks=(k,)).top_items(
            model, users).tolist() == [row[:k] for row in expected]

    full = evaluator(model)
    alone = Evaluator(data, "valid", ks=(5,), batch_size=batch_size)(model)
    assert alone == {key: full[key] for key in alone}
    assert full == pytest.approx(ranking_metrics(
        torch.tensor(expected), evaluator.targets, ks=(5, 10, 20, 50)),
        rel=1e-12)


def test_ties_straddling_the_cut_take_the_smaller_ids():
    # item 0 is seen; item 2 is best; items 1, 3, 4, 5 tie at 2.0
    data = make_data(train=[(0, 0), (1, 0)], valid=[(0, 1), (1, 1)],
                     test=[(0, 2)], num_users=2, num_items=7)
    scores = torch.tensor([[9.0, 2, 5, 2, 2, 2, 1],
                           [9.0, 2, 2, 2, 3, 3, 3]])
    seen = Evaluator(data, "valid", ks=(1,)).seen
    cpu = torch.device("cpu")
    for k, expected in [(1, [[2], [4]]), (2, [[2, 1], [4, 5]]),
                        (3, [[2, 1, 3], [4, 5, 6]]),
                        (4, [[2, 1, 3, 4], [4, 5, 6, 1]]),
                        (6, [[2, 1, 3, 4, 5, 6], [4, 5, 6, 1, 2, 3]])]:
        values, items = seen.top_k(lambda u: scores[u].clone(),
                                   torch.tensor([0, 1]), k, cpu)
        assert items.tolist() == expected
        assert values.tolist() == scores.gather(1, items).tolist()
    # a user with fewer unseen items than k: ties among them still by id
    values, items = seen.top_k(lambda u: scores[u].clone(),
                               torch.tensor([0]), 7, cpu)
    assert items.tolist() == [[2, 1, 3, 4, 5, 6, -1]]
    assert values[0, -1] == float("-inf")


def test_recommend_ranks_ties_by_item_id():
    from mde_pyg.train import recommend

    data = make_data(train=[(0, 0), (1, 3)], valid=[(0, 1)], test=[(1, 2)],
                     num_users=2, num_items=6)
    model = FixedScores(torch.tensor([[5, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 7, 1, 0]]))
    items, scores = recommend(model, data, k=3)
    assert items.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert scores.tolist() == [[1, 1, 1], [1, 1, 1]]


def test_users_without_train_interactions_are_not_evaluated():
    # user 2 has valid and test items but no train interaction (METHOD.md
    # section 4: the users of a split that are also in train)
    data = make_data(train=[(0, 0), (1, 1)], valid=[(0, 1), (1, 2), (2, 3)],
                     test=[(2, 0), (0, 2)], num_users=3, num_items=4)
    model = FixedScores(torch.tensor([[0, 3, 2, 1],
                                      [0, 0, 1, 3],
                                      [0, 0, 0, 9]]))
    valid = Evaluator(data, "valid", ks=(1,))
    assert valid.users.tolist() == [0, 1]
    assert [t.tolist() for t in valid.targets] == [[1], [2]]
    # u0 ranks item 1 first (a hit), u1 ranks item 3 first (a miss)
    assert valid(model)["recall@1"] == 0.5
    test = Evaluator(data, "test", ks=(1,))
    assert test.users.tolist() == [0]
    assert str(test) == "Evaluator(split='test', 1 users, ks=[1])"

    only_new = make_data(train=[(0, 0)], valid=[(1, 1)], test=[(1, 2)],
                         num_users=2, num_items=4)
    with pytest.raises(ValueError, match="both the valid split and the "
                                         "training split"):
        Evaluator(only_new, "valid", ks=(1,))


def test_held_out_pairs_that_are_train_pairs_are_named(tiny):
    data, model = tiny
    # user 1's valid item 3 also in train: masked, it can never be a hit
    store = data["user", "rates", "item"]
    store.edge_index = torch.cat([store.edge_index, torch.tensor([[1], [3]])],
                                 dim=1)
    with pytest.warns(UserWarning, match=r"1 of the 2 valid \(user, item\) "
                      r"pairs are train pairs too \(e\.g\. user 1, item 3\); "
                      r"train items are never ranked"):
        valid = Evaluator(data, "valid", ks=(1, 2))
    # u0 ranks [3, 2] (target 2); u1's only target 3 is masked: recall 0
    assert valid(model)["recall@2"] == pytest.approx((1.0 + 0.0) / 2)


def test_evaluator_takes_int32_ids_and_repeated_held_out_pairs(tiny):
    data, model = tiny
    expected = Evaluator(data, "valid", ks=(1, 2))(model)
    store = data["user", "rates", "item"]
    store.edge_index = store.edge_index.int()
    store.val_edge_index = torch.cat([store.val_edge_index,
                                      store.val_edge_index[:, :1]], dim=1)
    # what it ranks is all it checks: repeats count once, as before
    assert Evaluator(data, "valid", ks=(1, 2))(model) == expected


def test_repeated_train_pairs_count_once():
    # SeenItems: repeated pairs count once. User 0 saw items 0-3 of 6, the
    # pair (0, 1) listed three times: 2 unseen items (4, 5), not 0, so the
    # ranking is [5, 4, -1, -1, -1] and both valid items are hits.
    data = make_data(train=[(0, 0), (0, 1), (0, 1), (0, 2), (0, 3), (0, 1)],
                     valid=[(0, 4), (0, 5)], test=[(0, 5)], num_users=1,
                     num_items=6)
    model = FixedScores(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    evaluator = Evaluator(data, "valid", ks=(5,))
    assert evaluator.seen.pairs(torch.tensor([0])).tolist() == \
        [[0, 0, 0, 0], [0, 1, 2, 3]]
    assert evaluator.top_items(model, torch.tensor([0])).tolist() == \
        [[5, 4, -1, -1, -1]]
    # two hits of two targets at ranks 1 and 2
    assert evaluator(model) == pytest.approx({
        "recall@5": 1.0, "precision@5": 0.4, "map@5": 1.0, "ndcg@5": 1.0})


class ModeScores(FixedScores):
    # scores item 2 highest in training mode only, as a dropout would move
    # the scores; records the modes it was scored in
    def scorer(self):
        self.seen_modes = (self.training, torch.is_grad_enabled())
        boost = torch.tensor([0, 0, 100.0, 0, 0, 0]) * self.training
        return lambda user: self.scores[user] + boost


def test_scored_in_evaluation_mode_without_gradients(tiny):
    data, scores = tiny
    model = ModeScores(scores.scores)
    model.train()
    valid = Evaluator(data, "valid", ks=(1, 2))
    # as test_hand_computed: u0 ranks [3, 2], u1 [5, 3]; in training mode
    # u0 would rank its valid item 2 first (u1 has it masked as a train
    # item), and recall@1 would be 1/2
    assert valid(model)["recall@1"] == 0.0
    assert model.seen_modes == (False, False)
    assert model.training  # the caller's mode is restored
    assert valid.top_items(model, torch.tensor([0])).tolist() == [[3, 2]]
    assert model.seen_modes == (False, False) and model.training
    model.eval()
    valid(model)
    assert not model.training


def test_scored_outside_the_callers_autocast():
    # a caller's bf16 autocast would round the scores of a product to 8
    # bits and tie items that float32 tells apart; the evaluator and
    # recommend score in the model's own precision
    from mde_pyg.train.recommend import recommend

    class Product(Recommender):
        def __init__(self):
            super().__init__(2, 3)
            self.user = torch.nn.Parameter(torch.tensor([[1.0], [1.0]]))
            self.item = torch.nn.Parameter(torch.tensor([[1.0], [1.001],
                                                         [0.0]]))

        def get_embedding(self):
            return self.user, self.item

    data = make_data(train=[(0, 2), (1, 2)], valid=[(0, 1), (1, 1)],
                     test=[(0, 0), (1, 0)], num_users=2, num_items=3)
    model = Product()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # 1.001 and 1.0 are one bf16 value: under autocast, item 0 would
        # win the tie by its smaller id
        assert (torch.nn.functional.linear(model.user, model.item)
                .dtype == torch.bfloat16)
        metrics = Evaluator(data, "valid", ks=(1,))(model)
        items, scores = recommend(model, data, k=1, exclude=())
        ids = model.recommend(torch.tensor([0, 1]), k=1)
    assert metrics["recall@1"] == 1.0  # item 1 first
    assert items.tolist() == [[1], [1]] and scores.dtype == torch.float32
    assert ids.tolist() == [[1], [1]]
