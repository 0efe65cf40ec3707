import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_fused_matches_edge_index, fixed_batch, train

from mde_pyg.data.mmrec import RATES
from mde_pyg.models.lgmrec import (
    LGMRec,
    hypergraph_propagation,
)

NU, NI = 100, 80
BATCH = (torch.tensor([0, 3, 3]), torch.tensor([1, 2, 7]),
         torch.tensor([5, 6, 9]))


def dense_graphs(data):
    """The binary interactions R [U, I] and D^-1/2 A D^-1/2 [U+I, U+I]."""
    user, item = data[RATES].edge_index
    r = torch.zeros(NU, NI)
    r[user, item] = 1.0
    a = torch.zeros(NU + NI, NU + NI)
    a[:NU, NU:] = r
    a[NU:, :NU] = r.t()
    d = a.sum(1).clamp(min=1).rsqrt()
    return r, d[:, None] * a * d[None, :]


def by_hand(model, data, assign):
    """LGMRec's final embeddings and global embeddings with dense matrices;
    ``assign`` maps the hyperedge logits to memberships."""
    r, adj = dense_graphs(data)
    d = model.embedding_dim
    h = total = model.embedding
    for _ in range(model.num_ui_layers):
        h = adj @ h
        total = total + h
    cge = total / (model.num_ui_layers + 1)
    out, hyper = cge, {}
    for m in model.modalities:
        xw = data["item"][f"x_{m}"] @ model.item_maps[m].weight.t()
        feat_i, logit_i = xw[:, :d], xw[:, d:]
        feat_u = (r @ feat_i) / r.sum(1, keepdim=True).clamp(min=1)
        x = torch.cat([feat_u, feat_i])
        for _ in range(model.num_mm_layers):
            x = adj @ x
        out = out + F.normalize(x, dim=-1)
        memberships = assign(torch.cat([r @ logit_i, logit_i]))
        h_u, h_i = memberships[:NU], memberships[NU:]
        g = cge[NU:]
        for _ in range(model.num_hyper_layers):
            lat = h_i.t() @ g
            g = h_i @ lat
        hyper[m] = (h_u @ lat, g)
    ghe = torch.cat([sum(u for u, _ in hyper.values()),
                     sum(i for _, i in hyper.values())])
    return out + model.alpha * F.normalize(ghe, dim=-1), hyper


def naive_hcl(a, p, c, tau):
    a, p, c = (F.normalize(t, dim=-1) for t in (a, p, c))
    num = torch.exp((a * p).sum(-1) / tau)
    den = torch.exp(a @ c.t() / tau).sum(-1)
    return -torch.log(num / den).sum()


@pytest.mark.parametrize("num_layers", [1, 2])
def test_embedding_by_hand(data, num_layers):
    torch.manual_seed(0)
    model = LGMRec(data, embedding_dim=8, num_ui_layers=num_layers,
                   num_mm_layers=num_layers, num_hyper_layers=num_layers,
                   num_hyperedges=3, alpha=0.7).eval()
    expected, hyper = by_hand(
        model, data, lambda logits: (logits / model.tau).softmax(-1))
    user, item = model.get_embedding()
    assert user.shape == (NU, 8) and item.shape == (NI, 8)
    assert torch.allclose(torch.cat([user, item]), expected, atol=1e-5)
    _, got = model.propagate()
    for m in model.modalities:
        for a, b in zip(got[m], hyper[m]):
            assert torch.allclose(a, b, atol=1e-5)
    # evaluation is deterministic
    assert torch.equal(model.get_embedding()[0], user)


def test_gumbel_and_dropout_by_hand(data):
    """In training the memberships are Gumbel-softmax samples (torch RNG),
    dropped out with keep rate rho and rescaled by 1 / rho."""
    torch.manual_seed(0)
    model = LGMRec(data, embedding_dim=8, num_hyper_layers=2,
                   keep_rate=0.6)
    torch.manual_seed(1)
    user, item = model.get_embedding()
    torch.manual_seed(1)
    expected, _ = by_hand(model, data, lambda logits: F.dropout(
        F.gumbel_softmax(logits, tau=model.tau, dim=-1), 0.4))
    assert torch.allclose(torch.cat([user, item]), expected, atol=1e-5)
    # a second draw differs
    assert not torch.allclose(model.get_embedding()[0], user)


def test_hyperedge_memberships(data):
    torch.manual_seed(0)
    model = LGMRec(data, embedding_dim=8, keep_rate=0.5, tau=0.5)
    logits = torch.randn(500, 4)
    torch.manual_seed(3)
    h = model.hyperedges(logits)
    torch.manual_seed(3)
    soft = F.gumbel_softmax(logits, tau=0.5, dim=-1)
    assert torch.allclose(soft.sum(-1), torch.ones(500))
    assert torch.allclose(h, F.dropout(soft, 0.5))
    kept = h != 0
    assert torch.allclose(h[kept], 2 * soft[kept])
    assert 0.4 < kept.float().mean() < 0.6
    model.eval()
    assert torch.allclose(model.hyperedges(logits),
                          (logits / 0.5).softmax(-1))
    # MMRec's form: noise in evaluation too, no dropout
    noisy = LGMRec(data, embedding_dim=8, eval_noise=True).eval()
    a, b = noisy.hyperedges(logits), noisy.hyperedges(logits)
    assert not torch.allclose(a, b)
    assert torch.allclose(a.sum(-1), torch.ones(500))


def test_hypergraph_propagation_by_hand():
    torch.manual_seed(0)
    h_u, h_i, x = torch.rand(5, 3), torch.rand(7, 3), torch.randn(7, 4)
    user, item = hypergraph_propagation(h_u, h_i, x, 1)
    assert torch.allclose(item, h_i @ h_i.t() @ x, atol=1e-5)
    assert torch.allclose(user, h_u @ h_i.t() @ x, atol=1e-5)
    user, item = hypergraph_propagation(h_u, h_i, x, 2)
    first = h_i @ h_i.t() @ x
    assert torch.allclose(item, h_i @ h_i.t() @ first, atol=1e-5)
    assert torch.allclose(user, h_u @ h_i.t() @ first, atol=1e-5)
    with pytest.raises(ValueError, match="'num_layers'"):
        hypergraph_propagation(h_u, h_i, x, 0)


def test_fused_equals_edge_index_path(data):
    torch.manual_seed(0)
    fused = LGMRec(data, embedding_dim=8, num_hyper_layers=2)
    plain = LGMRec(data, embedding_dim=8, num_hyper_layers=2, fused=False)
    assert_fused_matches_edge_index(fused, plain, BATCH, seed=1)


def test_loss_parts_by_hand(data):
    torch.manual_seed(0)
    model = LGMRec(data, embedding_dim=8, cl_weight=0.5,
                   reg_weight=0.1).eval()
    u, p, n = BATCH
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    _, hyper = model.propagate()
    (uv, iv), (ut, it) = hyper["image"], hyper["text"]
    hcl = naive_hcl(uv[u], ut[u], ut, 0.2) + naive_hcl(iv[p], it[p], it, 0.2)
    assert parts["hcl"].item() == pytest.approx(0.5 * hcl.item(), rel=1e-5)
    reg = (user[u].norm() + item[p].norm() + item[n].norm()) / 3
    assert parts["reg"].item() == pytest.approx(0.1 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())
    # the hyperedge maps V_m learn through the losses
    total.backward()
    for m in model.modalities:
        assert model.item_maps[m].weight.grad[8:].abs().sum() > 0
    model.cl_weight = 0.0
    assert set(model.loss(u, p, n)[1]) == {"bpr", "reg"}


def test_one_modality_and_anchor(data):
    one = data.clone()
    del one["item"].x_image
    with pytest.raises(ValueError, match="'cl_weight'=0"):
        LGMRec(one)
    model = LGMRec(one, embedding_dim=8, cl_weight=0.0)
    assert model.modalities == ["text"]
    assert set(model.loss(*BATCH)[1]) == {"bpr", "reg"}
    # the visual modality anchors the contrastive loss, whatever its order
    swapped = data.clone()
    del swapped["item"].x_image
    swapped["item"].x_image = data["item"].x_image
    model = LGMRec(swapped, embedding_dim=8)
    assert model.modalities == ["text", "image"]
    assert model.pairs == [("image", "text")]


def test_errors_and_repr(data):
    for kwargs, name in [({"num_ui_layers": -1}, "num_ui_layers"),
                         ({"num_mm_layers": -1}, "num_mm_layers"),
                         ({"num_hyper_layers": 0}, "num_hyper_layers"),
                         ({"num_hyperedges": 0}, "num_hyperedges"),
                         ({"keep_rate": 0.0}, "keep_rate"),
                         ({"keep_rate": 1.5}, "keep_rate"),
                         ({"tau": 0.0}, "tau"),
                         ({"cl_weight": -1.0}, "cl_weight")]:
        with pytest.raises(ValueError, match=f"'{name}'"):
            LGMRec(data, **kwargs)
    model = LGMRec(data)
    assert str(model) == (
        "LGMRec(100 users, 80 items, modalities=['image', 'text'], dim=64, "
        "num_hyperedges=4, alpha=0.3)")
    # no user parameters besides the ID embeddings
    assert {name for name, _ in model.named_parameters()} == {
        "embedding", "item_maps.image.weight", "item_maps.text.weight"}
    assert model.item_maps["image"].weight.shape == (64 + 4, 32)


def test_training_lowers_the_loss(data):
    torch.manual_seed(0)
    model = LGMRec(data, embedding_dim=16)
    batch = fixed_batch(data)
    bpr_before = model.loss(*batch)[1]["bpr"]
    before, after = train(model, data, steps=150)
    assert after < 0.8 * before
    assert model.loss(*batch)[1]["bpr"] < 0.3 * bpr_before
