import pytest
import torch
from model_helpers import bpr_by_hand, train
from torch_geometric.nn.models import LightGCN as PyGLightGCN

from mde_pyg.models import build_model
from mde_pyg.models.lightgcn import LightGCN
from mde_pyg.nn.sparse import user_item_edges


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("num_layers", [0, 2, 3])
def test_matches_pyg_lightgcn(data, fused, num_layers):
    torch.manual_seed(0)
    model = LightGCN(data, embedding_dim=16, num_layers=num_layers,
                     fused=fused)
    num_nodes = model.num_users + model.num_items
    pyg = PyGLightGCN(num_nodes, 16, num_layers)
    pyg.embedding.weight.data.copy_(model.embedding.weight.data)
    edge_index, _ = user_item_edges(data)
    expected = pyg.get_embedding(edge_index)
    user, item = model.get_embedding()
    assert torch.allclose(torch.cat([user, item]), expected, atol=1e-5)
    # Same scores for user-item pairs.
    u = torch.tensor([0, 5, 7])
    i = torch.tensor([1, 2, 79])
    pyg_score = pyg(edge_index, torch.stack([u, i + model.num_users]))
    assert torch.allclose(model(u, i), pyg_score, atol=1e-5)


def test_shapes_and_loss_parts(data):
    model = build_model("lightgcn", data, embedding_dim=8, reg_weight=0.5)
    assert isinstance(model, LightGCN)
    user, item = model.get_embedding()
    assert user.shape == (100, 8) and item.shape == (80, 8)
    u, i = torch.tensor([0, 1]), torch.tensor([3, 4])
    assert torch.allclose(model(u, i), (user[u] * item[i]).sum(-1))
    # recommend: top-5 of the full-ranking scores <e_u, e_i>; items in
    # ``exclude`` (pairs of batch position, item) get -inf
    scores = user[u] @ item.t()
    top = model.recommend(u, k=5)
    assert top.shape == (2, 5)
    assert torch.equal(top, scores.argsort(dim=-1, descending=True)[:, :5])
    rates = data["user", "rates", "item"].edge_index
    exclude = torch.cat([
        torch.stack([torch.full_like(items, pos), items])
        for pos, items in enumerate(rates[1][rates[0] == v] for v in u)],
        dim=1)
    masked = scores.clone()
    masked[exclude[0], exclude[1]] = float("-inf")
    top = model.recommend(u, k=5, exclude=exclude)
    assert torch.equal(top, masked.argsort(dim=-1, descending=True)[:, :5])
    for pos, v in enumerate(u.tolist()):  # no train item recommended
        train_items = set(rates[1][rates[0] == v].tolist())
        assert train_items and not train_items & set(top[pos].tolist())
    assert str(model) == "LightGCN(100 users, 80 items, dim=8, num_layers=3)"

    n = torch.tensor([9, 10])
    total, parts = model.loss(u, i, n)
    ego = model.embedding.weight
    reg = sum(ego[idx].pow(2).sum() / 2
              for idx in (u, i + model.num_users, n + model.num_users))
    assert parts["reg"].item() == pytest.approx(0.5 * reg.item(), rel=1e-5)
    bpr = bpr_by_hand(user[u], item[i], item[n])
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    assert total.item() == pytest.approx(
        (parts["bpr"] + parts["reg"]).item(), rel=1e-6)


def test_loss_decreases(data):
    model = LightGCN(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before

