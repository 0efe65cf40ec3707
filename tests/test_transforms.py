import math

import pytest
import torch
from torch_geometric.data import HeteroData

from mde_pyg.transforms import (
    ItemKNNGraph,
    MultiModalGraphs,
    NormalizeUserItem,
    UserCoOccurrenceGraph,
    knn_cosine,
)


def hand_graph():
    # users 0..3, items 0..3; R:
    # u0: i0 i1 i2 | u1: i0 i1 | u2: i2 | u3: i3
    data = HeteroData()
    data["user"].num_nodes = 4
    data["item"].num_nodes = 4
    data["user", "rates", "item"].edge_index = torch.tensor(
        [[0, 0, 0, 1, 1, 2, 3], [0, 1, 2, 0, 1, 2, 3]])
    data["item"].x_a = torch.tensor(
        [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.05]])
    return data


def test_normalize_user_item():
    data = NormalizeUserItem()(hand_graph())
    w = data["user", "rates", "item"].edge_weight
    deg_u = [3, 3, 3, 2, 2, 1, 1]
    deg_i = [2, 2, 2, 2, 2, 2, 1]
    expected = [1 / math.sqrt(a * b) for a, b in zip(deg_u, deg_i)]
    assert torch.allclose(w, torch.tensor(expected))
    rev = data["item", "rated_by", "user"]
    assert torch.equal(rev.edge_weight, w)
    assert torch.equal(rev.edge_index,
                       data["user", "rates", "item"].edge_index.flip(0))


def test_user_cooccurrence_topk_and_softmax():
    data = UserCoOccurrenceGraph(k=1)(hand_graph())
    store = data["user", "co_occurs", "user"]
    pairs = sorted(zip(store.edge_index[1].tolist(),
                       store.edge_index[0].tolist()))
    # u0 shares 2 items with u1 and 1 with u2 -> keeps u1; u1 -> u0;
    # u2 -> u0; u3 shares nothing -> no edge.
    assert pairs == [(0, 1), (1, 0), (2, 0)]
    assert torch.allclose(store.edge_weight, torch.ones(3))

    data = UserCoOccurrenceGraph(k=40)(hand_graph())
    store = data["user", "co_occurs", "user"]
    got = {(int(t), int(s)): float(w) for s, t, w in zip(
        store.edge_index[0], store.edge_index[1], store.edge_weight)}
    z = math.exp(2) + math.exp(1)
    assert got[(0, 1)] == pytest.approx(math.exp(2) / z)
    assert got[(0, 2)] == pytest.approx(math.exp(1) / z)
    assert got[(1, 0)] == pytest.approx(1.0)
    assert got[(2, 0)] == pytest.approx(1.0)
    assert 3 not in store.edge_index[1].tolist()


def test_item_knn_graph_hand():
    data = ItemKNNGraph(k=1)(hand_graph())
    store = data["item", "similar_a", "item"]
    nbr = dict(zip(store.edge_index[1].tolist(),
                   store.edge_index[0].tolist()))
    assert nbr == {0: 1, 1: 0, 2: 1, 3: 2}
    assert torch.allclose(store.edge_weight, torch.ones(4))
    data = ItemKNNGraph(k=2)(hand_graph())
    assert torch.allclose(data["item", "similar_a", "item"].edge_weight,
                          torch.full((8,), 0.5))
    data = ItemKNNGraph(k=1, include_self=True)(hand_graph())
    store = data["item", "similar_a", "item"]
    assert torch.equal(store.edge_index[0], store.edge_index[1])


@pytest.mark.parametrize("include_self", [False, True])
def test_chunked_knn_equals_dense(include_self):
    torch.manual_seed(0)
    x = torch.randn(103, 16)
    xn = torch.nn.functional.normalize(x, dim=-1)
    sim = xn @ xn.t()
    if not include_self:
        sim.fill_diagonal_(float("-inf"))
    expected = sim.topk(5, dim=-1).indices
    for chunk in (1, 7, 103):
        got = knn_cosine(x, 5, include_self, chunk_size=chunk)
        assert torch.equal(got, expected)


def test_knn_errors():
    with pytest.raises(ValueError, match="'k' must be in"):
        knn_cosine(torch.randn(3, 2), 3)
    with pytest.raises(ValueError, match="has no item features"):
        ItemKNNGraph(modalities=["nope"])(hand_graph())


def test_multimodal_graphs_on_synthetic(synthetic_graphs):
    data = synthetic_graphs
    assert set(data.edge_types) >= {
        ("user", "co_occurs", "user"), ("item", "similar_image", "item"),
        ("item", "similar_text", "item")}
    # Every item has exactly k_item = 4 neighbours, none itself.
    ei = data["item", "similar_text", "item"].edge_index
    assert torch.equal(torch.bincount(ei[1]), torch.full((40,), 4))
    assert not (ei[0] == ei[1]).any()
    # Co-occurrence weights sum to one per user that has neighbours.
    store = data["user", "co_occurs", "user"]
    sums = torch.zeros(60).index_add_(0, store.edge_index[1],
                                      store.edge_weight)
    has = torch.bincount(store.edge_index[1], minlength=60) > 0
    assert torch.allclose(sums[has], torch.ones(int(has.sum())))
    assert str(MultiModalGraphs()).startswith("MultiModalGraphs(")
