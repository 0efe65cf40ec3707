import pytest
import torch
import torch.nn.functional as F
from model_helpers import dense_norm_adjacency, layer_mean, train

from mde_pyg.losses import cosine_prediction_loss, embedding_norm_reg
from mde_pyg.models import build_model
from mde_pyg.models.bm3 import BM3
from mde_pyg.train import Evaluator, Trainer


def test_loss_ignores_negatives(data):
    # batch-scoped reg: the default "all" reaches every embedding
    model = build_model("bm3", data, embedding_dim=8, reg_scope="batch")
    assert isinstance(model, BM3)
    assert model.uses_negatives is False
    u, p = torch.tensor([1, 2, 3]), torch.tensor([3, 4, 5])
    losses = []
    for neg in (torch.tensor([0, 0, 0]), torch.tensor([7, 50, 79]), p):
        torch.manual_seed(1)  # the same target dropout masks
        losses.append(model.loss(u, p, neg)[0])
    assert losses[0].item() == losses[1].item() == losses[2].item()
    model.zero_grad()
    losses[0].backward()
    grad = model.embedding.weight.grad
    assert grad[model.num_users + 0].abs().sum() == 0  # a "negative" only


def test_embedding_and_loss_by_hand(data):
    model = BM3(data, embedding_dim=8, dropout=0.0, cl_weight=0.5,
                reg_weight=0.1)
    user, item = model.get_embedding()
    assert user.shape == (100, 8) and item.shape == (80, 8)
    online_user, online_item = model.online()
    # LightGCN with BM3's default L = 1: mean of E and A E, dense A from R
    assert model.num_layers == 1
    light = layer_mean(dense_norm_adjacency(data), model.embedding.weight, 1)
    light_user, light_item = light[:100], light[100:]
    ego = model.embedding.weight[model.num_users:]
    assert torch.allclose(online_user, light_user, atol=1e-5)
    assert torch.allclose(online_item, light_item + ego, atol=1e-5)
    assert torch.allclose(user, model.predictor(online_user))

    u, p = torch.tensor([1, 2, 1]), torch.tensor([3, 4, 3])  # 3 repeats
    _, parts = model.loss(u, p, p)
    eu, ei = online_user[u], online_item[p]
    pred = model.predictor

    def c(a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1).mean()

    assert parts["ui"].item() == pytest.approx(
        (c(pred(eu), ei) + c(pred(ei), eu)).item(), rel=1e-5)
    cl = 0.0
    for m in ("image", "text"):
        f = model.projection[m](data["item"][f"x_{m}"][p])
        cl = cl + c(pred(f), ei) + c(pred(f), f)
    assert parts["cl"].item() == pytest.approx(0.5 * cl.item(), rel=1e-5)
    # EmbLoss over all online embeddings, divided by the number of items
    reg = (online_user.pow(2).sum().sqrt()
           + online_item.pow(2).sum().sqrt()) / 80
    assert parts["reg"].item() == pytest.approx(0.1 * reg.item(), rel=1e-5)
    batch = BM3(data, embedding_dim=8, dropout=0.0, reg_weight=0.1,
                reg_scope="batch")
    batch.load_state_dict(model.state_dict())
    reg = (eu.pow(2).sum().sqrt() + ei.pow(2).sum().sqrt()) / 3  # B rows
    assert batch.loss(u, p, p)[1]["reg"].item() == pytest.approx(
        0.1 * reg.item(), rel=1e-5)
    with pytest.raises(ValueError, match="'reg_scope' must be"):
        BM3(data, reg_scope="none")


def test_loss_decreases(data):
    model = BM3(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before


def test_trainer_skips_negative_sampling(data):
    torch.manual_seed(0)
    model = BM3(data, embedding_dim=16)
    calls = []
    trainer = Trainer(model, data, lr=1e-2, batch_size=256, max_epochs=2,
                      progress=False)
    trainer.sampler.sample = lambda user: calls.append(user)  # must not run
    result = trainer.fit()
    assert calls == []
    assert len(result["history"]) == 2
    # The reported test metrics are those of the returned (best) weights:
    # a fresh evaluator on the test split gives them again.
    evaluator = Evaluator(data, "test", ks=trainer.ks)
    assert evaluator(result["model"]) == result["test"]


def test_target_dropout_keeps_and_scales(data):
    model = BM3(data, embedding_dim=8, dropout=0.3)
    x = torch.randn(200, 500, requires_grad=True)
    torch.manual_seed(0)
    target = model._target(x)
    assert not target.requires_grad
    kept = target != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.01)
    assert torch.allclose(target[kept], x.detach()[kept] / 0.7)
    assert torch.equal(BM3(data, dropout=0.0)._target(x), x.detach())
    with pytest.raises(ValueError, match="'dropout' must be in"):
        BM3(data, dropout=1.0)
    # within 2^-32 of 1, the threshold 2^31 would wrap in an int32
    # comparison and keep everything; it drops (all but 2^-31 of) it
    assert round((1 - 2**-33) * 2**31) == 2**31
    target = BM3(data, embedding_dim=8, dropout=1 - 2**-33)._target(x)
    assert torch.count_nonzero(target) == 0


def test_loss_with_dropout_matches_terms(data):
    # the fused loss against cosine_prediction_loss term by term, with the
    # targets drawn by _target from the same seed over the same rows
    model = BM3(data, embedding_dim=8, dropout=0.5, cl_weight=0.7)
    u, p = torch.tensor([1, 2, 1, 9]), torch.tensor([3, 4, 3, 0])
    params = [model.embedding.weight, model.predictor.weight,
              model.projection["image"].weight]
    torch.manual_seed(3)
    loss, parts = model.loss(u, p, p)
    grads = torch.autograd.grad(loss, params)
    eu, ei = model.online()
    eu, ei = eu[u], ei[p]
    feats = [model.projection[m](data["item"][f"x_{m}"][p])
             for m in ("image", "text")]
    torch.manual_seed(3)
    targets = model._target(torch.cat([eu, ei, *feats])).split(4)
    assert (targets[0] == 0).any() and not torch.equal(targets[1], ei)
    pred = model.predictor
    ui = (cosine_prediction_loss(pred(eu), targets[1])
          + cosine_prediction_loss(pred(ei), targets[0]))
    assert parts["ui"].item() == pytest.approx(ui.item(), rel=1e-5)
    cl = sum(cosine_prediction_loss(pred(f), targets[1])
             + cosine_prediction_loss(pred(f), t)
             for f, t in zip(feats, targets[2:]))
    assert parts["cl"].item() == pytest.approx(0.7 * cl.item(), rel=1e-5)
    # and the same gradients, reg term included
    all_u, all_i = model.online()
    total = ui + 0.7 * cl + model.reg_weight * embedding_norm_reg(all_u,
                                                                  all_i)
    for grad, expected in zip(grads, torch.autograd.grad(total, params)):
        assert expected.abs().sum() > 0
        assert torch.allclose(grad, expected, atol=1e-6)


def test_bm3_scores_with_predicted_users_and_items(data):
    # BM3 ranks by <p(e_u), p(e_i)>: items through the predictor too (the
    # loss never calls get_embedding, so only the ranking would notice)
    torch.manual_seed(0)
    model = BM3(data, embedding_dim=8)
    online_user, online_item = model.online()
    user, item = model.get_embedding()
    assert torch.allclose(item, model.predictor(online_item), atol=1e-6)
    u, i = torch.tensor([0, 5, 99]), torch.tensor([1, 2, 79])
    expected = (model.predictor(online_user[u])
                * model.predictor(online_item[i])).sum(-1)
    assert torch.allclose(model(u, i), expected, atol=1e-5)


def test_feature_terms_reach_the_predictor_and_projections_only(data):
    # The cl terms compare p(W_m x_m) with detached targets, so their
    # gradient reaches no embedding row: the features inform the ranking
    # <p(e_u), p(e_i)> only through the predictor they share with e_u, e_i.
    # The same model and dropout masks with and without the cl terms:
    model = BM3(data, embedding_dim=8, dropout=0.3, cl_weight=2.0)
    params = [model.embedding.weight, model.predictor.weight,
              model.projection["text"].weight]
    grads = {}
    for cl_weight in (2.0, 0.0):
        model.cl_weight = cl_weight
        torch.manual_seed(0)
        loss, _ = model.loss(torch.tensor([1, 2, 9]), torch.tensor([3, 4, 0]),
                             torch.tensor([0, 0, 0]))
        grads[cl_weight] = torch.autograd.grad(loss, params,
                                               allow_unused=True)
    (emb, pred, proj), (emb0, pred0, proj0) = grads[2.0], grads[0.0]
    assert torch.allclose(emb, emb0, atol=1e-7)
    assert emb[1].abs().sum() > 0 and emb[100 + 3].abs().sum() > 0
    assert not torch.allclose(pred, pred0, atol=1e-3)
    assert proj.abs().sum() > 0 and (proj0 is None or proj0.abs().sum() == 0)
