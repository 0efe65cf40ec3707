import pytest
import torch
from torch_geometric.nn.models import LightGCN as PyGLightGCN

from mde_pyg.data import SyntheticMultiModal
from mde_pyg.models import build_model
from mde_pyg.models.lightgcn import LightGCN
from mde_pyg.nn.sparse import user_item_edges
from mde_pyg.transforms import MultiModalGraphs


@pytest.fixture(scope="module")
def data():
    return SyntheticMultiModal(
        num_users=100, num_items=80, interactions_per_user=10, seed=0,
        pre_transform=MultiModalGraphs(k_user=10, k_item=5))[0]


def fixed_batch(data):
    user, pos = data["user", "rates", "item"].edge_index
    gen = torch.Generator().manual_seed(0)
    neg = torch.randint(data["item"].num_nodes, pos.shape, generator=gen)
    return user, pos, neg


def train(model, data, steps=200, lr=1e-2, batch_size=256):
    """Adam steps on random BPR batches; return the fixed-batch losses
    before and after."""
    torch.manual_seed(0)
    user, pos, neg = fixed_batch(data)
    est = list(getattr(model, "estimator_parameters", list)())
    est_ids = {id(p) for p in est}
    opt = torch.optim.Adam(
        [p for p in model.parameters() if id(p) not in est_ids], lr=lr)
    est_opt = torch.optim.Adam(est, lr=lr) if est else None
    before = model.loss(user, pos, neg)[0].item()
    for step in range(steps):
        if step % 10 == 0:
            model.on_epoch_start(step // 10)
        idx = torch.randint(user.numel(), (batch_size,))
        batch = user[idx], pos[idx], neg[idx]
        if est_opt is not None:
            est_opt.zero_grad()
            model.estimator_step(*batch).backward()
            est_opt.step()
        opt.zero_grad()
        model.loss(*batch)[0].backward()
        opt.step()
    return before, model.loss(user, pos, neg)[0].item()


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
