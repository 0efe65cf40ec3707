import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_fused_matches_edge_index, train
from torch_geometric.data import HeteroData
from torch_geometric.utils import to_dense_adj

from mde_pyg.models.dualgnn import DualGNN
from mde_pyg.nn.sparse import user_item_edges
from mde_pyg.transforms import (
    CO_OCCURS,
    NormalizeUserItem,
    UserCoOccurrenceGraph,
)

NU, NI = 100, 80


def dense(edge_index, weight, num):
    """Row n sums the weighted sources of the edges into n."""
    return to_dense_adj(edge_index, edge_attr=weight,
                        max_num_nodes=num)[0].t()


def user_graph(model):
    """The user graph in use, ``s[u, v]`` (rows sum the neighbours)."""
    adj, weight = model.graphs.get("user_user")
    if weight is None:  # fused: a CSR adj_t
        return adj.to_dense()
    return dense(adj, weight, model.num_users)


def tiny_data():
    """6 users, 5 items; co-occurrence counts: u0-u1 2, u0-u2 1, u0-u3 1,
    u1-u2 1, u3-u4 1; u5 shares no item."""
    items = {0: [0, 1, 2], 1: [0, 1], 2: [0], 3: [2, 3], 4: [3], 5: [4]}
    user = [u for u, its in items.items() for _ in its]
    item = [i for its in items.values() for i in its]
    data = HeteroData()
    data["user"].num_nodes = 6
    data["item"].num_nodes = 5
    gen = torch.Generator().manual_seed(0)
    data["item"].x_image = torch.randn(5, 4, generator=gen)
    data["item"].x_text = torch.randn(5, 3, generator=gen)
    data["user", "rates", "item"].edge_index = torch.tensor([user, item])
    return UserCoOccurrenceGraph(k=40)(NormalizeUserItem()(data))


@pytest.mark.parametrize("construction,num_layers", [
    ("weighted_sum", 1), ("weighted_sum", 2), ("mean", 2), ("max", 2),
    ("cat", 2)])
def test_embedding_by_hand(data, construction, num_layers):
    torch.manual_seed(0)
    model = DualGNN(data, embedding_dim=8, num_layers=num_layers,
                    construction=construction, k_user=10)
    assert model.num_padding_draws == 0  # every user has 10 neighbours
    adj = dense(*user_item_edges(data), NU + NI)
    users, items = [], []
    for m in ("image", "text"):
        x = model.encoder.projection[m](data["item"][f"x_{m}"])
        x = F.normalize(torch.cat([model.encoder.user[m], x]), dim=-1)
        x_hat = x + adj @ x + (adj @ adj @ x if num_layers == 2 else 0)
        users.append(x_hat[:NU])
        items.append(x_hat[NU:])
    w = model.modality_weight
    if construction == "weighted_sum":
        user = w[:, :1] * users[0] + w[:, 1:] * users[1]
    elif construction == "mean":
        user = (users[0] + users[1]) / 2
    elif construction == "max":
        user = torch.maximum(w[:, :1] * users[0], w[:, 1:] * users[1])
    else:
        user = model.user_mlp(torch.cat([w[:, :1] * users[0],
                                         w[:, 1:] * users[1]], -1))
    # The default graph is the data's co-occurrence graph itself.
    store = data[CO_OCCURS]
    user = user + dense(store.edge_index, store.edge_weight, NU) @ user
    got_user, got_item = model.get_embedding()
    assert got_user.shape == (NU, 8) and got_item.shape == (NI, 8)
    assert torch.allclose(got_user, user, atol=1e-5)
    assert torch.allclose(got_item, items[0] + items[1], atol=1e-5)


@pytest.mark.parametrize("construction", ["weighted_sum", "cat"])
def test_fused_equals_edge_index_path(data, construction):
    torch.manual_seed(0)
    fused = DualGNN(data, embedding_dim=8, construction=construction)
    plain = DualGNN(data, embedding_dim=8, construction=construction,
                    fused=False)
    assert not any("user_edge" in k or "adj" in k
                   for k in fused.state_dict())
    for model in (fused, plain):  # the same padding draw on both
        model.sample_user_graph(torch.Generator().manual_seed(1))
    batch = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    assert_fused_matches_edge_index(fused, plain, batch)


@pytest.mark.parametrize("construction", ["weighted_sum", "mean", "cat"])
def test_loss_parts_by_hand(data, construction):
    torch.manual_seed(0)
    model = DualGNN(data, embedding_dim=8, construction=construction,
                    reg_weight=0.5)
    u, p, n = torch.tensor([0, 3, 3]), torch.tensor([1, 2, 7]), \
        torch.tensor([5, 6, 0])
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    # MMRec: reg_weight * sum of (t ** 2).mean()
    reg = sum((model.encoder.user[m][u] ** 2).mean()
              for m in ("image", "text"))
    if construction == "weighted_sum":
        reg = reg + (model.modality_weight ** 2).mean()
    elif construction == "cat":
        reg = reg + (model.user_mlp.weight ** 2).mean()
    else:
        assert model.modality_weight is None
    assert parts["reg"].item() == pytest.approx(0.5 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())
    assert torch.allclose(model(u, p), (user[u] * item[p]).sum(-1))


def test_modality_weights_start_as_softmax(data):
    torch.manual_seed(0)
    w = DualGNN(data, embedding_dim=8).modality_weight
    assert torch.allclose(w.sum(-1), torch.ones(NU))
    assert (w > 0).all() and w.std() > 0.01


def test_user_graph_top_k_of_the_counts(data):
    """k_user below the data's k keeps each user's k heaviest co-occurring
    users and re-normalises the softmax of their counts."""
    model = DualGNN(data, embedding_dim=8, k_user=5, pad_neighbors=False)
    user, item = data["user", "rates", "item"].edge_index
    r = torch.zeros(NU, NI)
    r[user, item] = 1.0
    counts = r @ r.t()
    counts.fill_diagonal_(-1.0)
    expected = torch.zeros(NU, NU)
    for u in range(NU):
        # top-5 by count, ties towards the smaller id
        order = sorted(range(NU), key=lambda v: (-counts[u, v].item(), v))
        top = torch.tensor(order[:5])
        expected[u, top] = counts[u, top].softmax(0)
    assert torch.allclose(user_graph(model), expected, atol=1e-6)
    mean = DualGNN(data, embedding_dim=8, k_user=5, user_aggr="mean",
                   pad_neighbors=False)
    assert torch.allclose(user_graph(mean), (expected > 0) / 5.0)


def test_user_graph_padding_by_hand():
    """Short lists are padded to k with random copies, re-drawn per epoch,
    and the weights are softmax(counts) times the copies."""
    data = tiny_data()
    e = math.e
    exact = DualGNN(data, embedding_dim=4, k_user=3, pad_neighbors=False)
    s = user_graph(exact)
    assert exact.num_padding_draws == 0
    assert torch.allclose(s[0, [1, 2, 3]],
                          torch.tensor([e * e, e, e]) / (e * e + 2 * e))
    assert torch.allclose(s[1, [0, 2]], torch.tensor([e, 1]) / (e + 1))
    assert s[4, 3] == 1 and (s[5] == 0).all()
    assert torch.allclose(s.sum(1), torch.tensor([1.0] * 5 + [0.0]))

    torch.manual_seed(0)
    model = DualGNN(data, embedding_dim=4, k_user=3)
    mean = DualGNN(data, embedding_dim=4, k_user=3, user_aggr="mean")
    # users 1, 2, 3 lack one neighbour, user 4 two, user 5 has none
    assert model.num_padding_draws == 5
    seen = set()
    for seed in range(20):
        model.sample_user_graph(torch.Generator().manual_seed(seed))
        mean.sample_user_graph(torch.Generator().manual_seed(seed))
        copies = 3 * user_graph(mean)  # mean weights are copies / k
        assert torch.allclose(copies, copies.round(), atol=1e-5)
        assert torch.allclose(copies.sum(1),
                              torch.tensor([3.0] * 5 + [0.0]))
        assert torch.equal(copies[0] > 0, s[0] > 0)  # full list: no copies
        # the same draw under softmax: copies * exp(count), normalised
        base = copies * s
        expected = base / base.sum(1, keepdim=True).clamp(min=1e-12)
        got = user_graph(model)
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.allclose(got[0], s[0]) and got[4, 3] == 1
        seen.add(tuple(copies[1:4].flatten().tolist()))
        x = torch.randn(6, 4)
        assert torch.allclose(model.user_propagation(
            x, *model.graphs.get("user_user")), x + got @ x, atol=1e-6)
    assert len(seen) > 1  # the padding changes between draws
    # Averaged over draws, the padded mean weights are 1 / |N(u)|.
    total = sum(mean.user_graph_weights() for _ in range(2000)) / 2000
    expected = dense(mean.user_edge_index, total, 6)
    assert torch.allclose(expected[1:4].sum(1), torch.ones(3))
    assert torch.allclose(expected[1, [0, 2]], torch.tensor([0.5, 0.5]),
                          atol=0.03)


def test_on_epoch_start_redraws_the_padding(data):
    torch.manual_seed(0)
    # k_user 40 > the data's 10 neighbours (a run of an earlier version,
    # whose default was 40): every user is padded with 30 copies, warned
    with pytest.warns(UserWarning, match="k_user=40, but the data's "
                      "co-occurrence graph keeps 10 users per user"):
        model = DualGNN(data, embedding_dim=8, k_user=40)
    assert model.num_padding_draws == NU * 30
    before = model.graphs.get("user_user")[0].values().clone()
    model.on_epoch_start(1)
    after = model.graphs.get("user_user")[0]
    assert not torch.allclose(before, after.values())
    dense_after = after.to_dense()
    assert torch.allclose(dense_after.sum(1), torch.ones(NU))
    fixed = DualGNN(data, embedding_dim=8, pad_neighbors=False)
    adj = fixed.graphs.get("user_user")[0].values().clone()
    fixed.on_epoch_start(1)
    assert torch.equal(adj, fixed.graphs.get("user_user")[0].values())


def test_errors_and_repr(data):
    with pytest.raises(ValueError, match="'construction'"):
        DualGNN(data, construction="concat")
    with pytest.raises(ValueError, match="'user_aggr'"):
        DualGNN(data, user_aggr="sum")
    with pytest.raises(ValueError, match="'k_user'"):
        DualGNN(data, k_user=0)
    # the graph keeps 10 users per user: k_user follows it, and more is
    # refused (every user would be padded with random copies)
    assert DualGNN(data).k_user == 10
    with pytest.raises(ValueError, match=r"'k_user' must be an integer, "
                       r"got 2.5"):
        DualGNN(data, k_user=2.5)
    # recorded as used, so a run names it and is rebuilt with it
    model = DualGNN.from_data(data, embedding_dim=8)
    assert model.hparams["k_user"] == 10 and model.num_padding_draws == 0
    # a graph of an earlier build records no k: the most any user keeps
    old = data.clone()
    del old["user", "co_occurs", "user"].k
    assert DualGNN(old).k_user == 10
    with pytest.raises(ValueError, match="'num_layers'"):
        DualGNN(data, num_layers=-1)
    bare = HeteroData()
    bare["user"].num_nodes = 2
    with pytest.raises(ValueError, match="UserCoOccurrenceGraph"):
        DualGNN(bare)
    model = DualGNN(data, embedding_dim=8, k_user=10)
    assert str(model) == (
        "DualGNN(100 users, 80 items, modalities=['image', 'text'], dim=8, "
        "construction='weighted_sum', k_user=10, user_aggr='softmax')")


def test_one_modality(data):
    torch.manual_seed(0)
    single = data.clone()
    del single["item"].x_text
    model = DualGNN(single, embedding_dim=8, k_user=10)
    assert model.modalities == ["image"]
    assert torch.allclose(model.modality_weight, torch.ones(NU, 1))
    # the two-modality formula of test_embedding_by_hand over {image}
    adj = dense(*user_item_edges(single), NU + NI)
    x = model.encoder.projection["image"](single["item"].x_image)
    x = F.normalize(torch.cat([model.encoder.user["image"], x]), dim=-1)
    x_hat = x + adj @ x + adj @ adj @ x
    store = single[CO_OCCURS]
    user = x_hat[:NU] + dense(store.edge_index, store.edge_weight,
                              NU) @ x_hat[:NU]
    got_user, got_item = model.get_embedding()
    assert torch.allclose(got_user, user, atol=1e-5)
    assert torch.allclose(got_item, x_hat[NU:], atol=1e-5)


def test_training_lowers_the_loss(data):
    torch.manual_seed(0)
    model = DualGNN(data, embedding_dim=16)
    before, after = train(model, data, steps=150)
    assert after < 0.3 * before
