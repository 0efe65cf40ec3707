import pytest
import torch
from model_helpers import train
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
    assert model.recommend(u, k=5).shape == (2, 5)
    assert str(model) == "LightGCN(100 users, 80 items, dim=8, num_layers=3)"

    n = torch.tensor([9, 10])
    total, parts = model.loss(u, i, n)
    ego = model.embedding.weight
    reg = sum(ego[idx].pow(2).sum() / 2
              for idx in (u, i + model.num_users, n + model.num_users))
    assert parts["reg"].item() == pytest.approx(0.5 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(
        (parts["bpr"] + parts["reg"]).item(), rel=1e-6)


def test_loss_decreases(data):
    model = LightGCN(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before

