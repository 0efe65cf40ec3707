import pytest
import torch

from mde_pyg.data import SyntheticMultiModal
from mde_pyg.models import build_model
from mde_pyg.models.vbpr import VBPR
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


def test_score_is_formula_by_hand(data):
    model = build_model("vbpr", data, embedding_dim=4)
    assert isinstance(model, VBPR)
    user_emb, item_emb = model.get_embedding()
    assert user_emb.shape == (100, 8) and item_emb.shape == (80, 8)
    W = model.item_linear.weight
    b = model.item_linear.bias
    x = torch.cat([data["item"].x_image, data["item"].x_text], dim=-1)
    for u, i in [(0, 0), (3, 17), (99, 79)]:
        item = torch.cat([model.item[i], W @ x[i] + b])
        expected = (model.user[u] * item).sum()
        got = model(torch.tensor([u]), torch.tensor([i]))
        assert got.item() == pytest.approx(expected.item(), abs=1e-5)
    assert str(model) == ("VBPR(100 users, 80 items, "
                          "modalities=['image', 'text'], dim=4)")


def test_loss_parts(data):
    model = VBPR(data, embedding_dim=4, reg_weight=0.1)
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    total, parts = model.loss(u, p, n)
    reg = (model.user[u].pow(2).sum() + model.item_embedding(p).pow(2).sum()
           + model.item_embedding(n).pow(2).sum()) / 2
    assert parts["reg"].item() == pytest.approx(0.1 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())


def test_loss_decreases(data):
    model = VBPR(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before
