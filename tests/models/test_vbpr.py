import pytest
import torch
import torch.nn.functional as F
from model_helpers import train

from mde_pyg.models import build_model
from mde_pyg.models.vbpr import VBPR


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
    # item 3 repeats, so the features of distinct items are mapped once
    u, p, n = (torch.tensor([1, 2, 1]), torch.tensor([3, 4, 3]),
               torch.tensor([5, 3, 6]))
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    reg = (model.user[u].pow(2).sum() + model.item_embedding(p).pow(2).sum()
           + model.item_embedding(n).pow(2).sum()) / 3
    assert parts["reg"].item() == pytest.approx(0.1 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())


def test_loss_decreases(data):
    model = VBPR(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before
