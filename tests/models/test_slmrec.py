import pytest
import torch
import torch.nn.functional as F
from model_helpers import (
    assert_fused_matches_edge_index,
    dense_norm_adjacency,
    fixed_batch,
    train,
)

from mde_pyg.models.slmrec import (
    SLMRec,
    default_modality_order,
)


def branches_by_hand(model, data, num_layers):
    """The propagated branches [ID, image, text], each [U+I, d]."""
    adj = dense_norm_adjacency(data)
    out = []
    items = [model.item_embedding] + [
        model.projection[m](F.normalize(data["item"][f"x_{m}"], dim=-1))
        for m in ("image", "text")]
    for item in items:
        h = torch.cat([model.user_embedding, item])
        layers = [h]
        for _ in range(num_layers):
            layers.append(adj @ layers[-1])
        out.append(torch.stack(layers).mean(0))
    return out


def ce_info_nce(a, b, tau):
    """One-directional InfoNCE as a cross-entropy over a @ b.T / tau."""
    logits = a @ b.t() / tau
    return F.cross_entropy(logits, torch.arange(a.size(0)))


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("fusion", ["concat", "mean"])
def test_embedding_by_hand(data, num_layers, fusion):
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=8, num_layers=num_layers,
                   fusion=fusion)
    assert model.modalities == ["image", "text"]
    branches = branches_by_hand(model, data, num_layers)
    h = (torch.cat(branches, -1) if fusion == "concat"
         else torch.stack(branches).mean(0))
    user, item = model.get_embedding()
    assert user.shape == (100, 8) and item.shape == (80, 8)
    assert torch.allclose(user, model.user_fusion(h[:100]), atol=1e-5)
    assert torch.allclose(item, model.item_fusion(h[100:]), atol=1e-5)
    width = 24 if fusion == "concat" else 8
    assert model.user_fusion.weight.shape == (8, width)


@pytest.mark.parametrize("ssl_task", ["FAC", "FD+FM"])
def test_fused_equals_edge_index_path(data, ssl_task):
    torch.manual_seed(0)
    fused = SLMRec(data, embedding_dim=8, num_layers=2, ssl_task=ssl_task,
                   reg_weight=0.1)
    plain = SLMRec(data, embedding_dim=8, num_layers=2, ssl_task=ssl_task,
                   reg_weight=0.1, fused=False)
    u, p = torch.tensor([0, 3, 7, 3]), torch.tensor([1, 2, 5, 9])
    # seed: the same augmentation draws on both paths
    parts = assert_fused_matches_edge_index(fused, plain, (u, p, p), seed=1)
    assert set(parts) == {"rec", "ssl", "reg"}


def test_fac_loss_parts_by_hand(data):
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=8, num_layers=2, ssl_alpha=0.5,
                   ssl_temp=0.3, temperature=0.2, reg_weight=0.01)
    u = torch.tensor([0, 3, 7, 11, 3])
    p = torch.tensor([1, 2, 5, 9, 60])
    neg = torch.tensor([4, 4, 4, 4, 4])
    total, parts = model.loss(u, p, neg)
    user, item = model.get_embedding()
    rec = ce_info_nce(F.normalize(user[u]), F.normalize(item[p]), 0.2)
    assert parts["rec"].item() == pytest.approx(rec.item(), rel=1e-5)
    # FAC: ID -> image space (8 wide), then on to the text space (4 wide)
    i_id, i_img, i_txt = (b[100 + p] for b in
                          branches_by_hand(model, data, 2))
    z1 = model.fac_id_head(i_id)
    z2 = model.fac_chain[0](z1)
    assert z1.shape == (5, 8) and z2.shape == (5, 4)
    fac = (ce_info_nce(z1, model.fac_heads["image"](i_img), 0.3)
           + ce_info_nce(z2, model.fac_heads["text"](i_txt), 0.3))
    assert parts["ssl"].item() == pytest.approx(0.5 * fac.item(), rel=1e-5)
    reg = (model.user_embedding[u].pow(2).sum() / 5
           + model.item_embedding[p].pow(2).sum() / 5)
    assert parts["reg"].item() == pytest.approx(0.01 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())
    # No negatives: another ``neg`` gives the same loss.
    assert not model.uses_negatives
    assert model.loss(u, p, p)[0].item() == pytest.approx(total.item())


def test_feature_dropout_drops_each_hop(data):
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=16, num_layers=1, ssl_task="FD",
                   dropout=0.3)
    x = model.initial_embedding().detach()
    hop = dense_norm_adjacency(data) @ x
    torch.manual_seed(2)
    out = model.propagate(x, 0.3)
    dropped_hop = 2 * out - x  # mean of (x, dropout(A x)) over 2 layers
    zero = dropped_hop.abs() < 1e-6
    assert zero.float().mean().item() == pytest.approx(0.3, abs=0.02)
    kept = ~zero & (hop.abs() > 1e-6)
    assert torch.allclose(dropped_hop[kept], hop[kept] / 0.7, atol=1e-5)
    # seeded, and no dropout in eval mode
    torch.manual_seed(2)
    assert torch.equal(model.propagate(x, 0.3), out)
    model.eval()
    assert torch.allclose(model.propagate(x, 0.3), model.propagate(x),
                          atol=1e-6)


def test_feature_masking_zeroes_one_branch_per_view(data):
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=8, ssl_task="FM")
    x = model.initial_embedding().detach()
    seen = set()
    torch.manual_seed(3)
    for _ in range(60):
        views, branches = model.masked_views(x)
        assert views.shape == (180, 48)
        b1, b2 = branches.tolist()
        assert b1 != b2
        seen.add((b1, b2))
        for view, b in zip(views.chunk(2, -1), (b1, b2)):
            # users untouched, item rows of branch b zero, the rest kept
            assert torch.equal(view[:100], x[:100])
            blocks, orig = view[100:].split(8, -1), x[100:].split(8, -1)
            for k in range(3):
                expected = torch.zeros_like(orig[k]) if k == b else orig[k]
                assert torch.equal(blocks[k], expected)
    assert seen == {(a, b) for a in range(3) for b in range(3) if a != b}
    torch.manual_seed(3)
    again = model.masked_views(x)[1]
    torch.manual_seed(3)
    assert torch.equal(model.masked_views(x)[1], again)


def view_loss_by_hand(model, u, p, view_1, view_2, tau):
    """One-direction cosine InfoNCE of the fused users and items."""
    u1, i1 = model.fuse(view_1[u], view_1[100 + p])
    u2, i2 = model.fuse(view_2[u], view_2[100 + p])
    return (ce_info_nce(F.normalize(u1), F.normalize(u2), tau)
            + ce_info_nce(F.normalize(i1), F.normalize(i2), tau))


def ssl_loss_then_replay(data, ssl_task, num_layers):
    """An SLMRec's loss parts on a fixed batch (seed 5), then its input
    ``x`` with the generator reset to replay the loss's draws."""
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=8, num_layers=num_layers,
                   ssl_task=ssl_task, ssl_alpha=0.7, ssl_temp=0.4)
    u, p = torch.tensor([0, 3, 7, 11]), torch.tensor([1, 2, 5, 9])
    torch.manual_seed(5)
    _, parts = model.loss(u, p, p)
    x = model.initial_embedding()
    torch.manual_seed(5)
    return model, u, p, parts, x


def test_masked_views_cross_their_chains_by_hand(data):
    # FM, as the authors' code: view 1 = mean(x1, A x2, A^2 x2), view 2 =
    # mean(x2, A x1, A^2 x1), x_k the input with branch b_k's items zeroed
    model, u, p, parts, x = ssl_loss_then_replay(data, "FM", num_layers=2)
    branches = model.masked_views(x)[1]
    adj = dense_norm_adjacency(data)
    inputs = []
    for b in branches.tolist():
        x_k = x.clone()
        x_k[100:, 8 * b:8 * (b + 1)] = 0
        inputs.append(x_k)
    x1, x2 = inputs
    view_1 = (x1 + adj @ x2 + adj @ adj @ x2) / 3
    view_2 = (x2 + adj @ x1 + adj @ adj @ x1) / 3
    ssl = view_loss_by_hand(model, u, p, view_1, view_2, 0.4)
    assert parts["ssl"].item() == pytest.approx(0.7 * ssl.item(), rel=1e-5)
    # each view's own chain would give another loss
    own = view_loss_by_hand(model, u, p, (x1 + adj @ x1 + adj @ adj @ x1) / 3,
                            (x2 + adj @ x2 + adj @ adj @ x2) / 3, 0.4)
    assert abs(own.item() - ssl.item()) > 1e-3
    assert not hasattr(model, "fac_heads")


@pytest.mark.parametrize("ssl_task", ["FD", "FD+FM"])
def test_dropped_views_cross_their_chains(data, ssl_task):
    # With one hop, view k = (x_k + d_other) / 2, d_k = dropout(A x_k) the
    # k-th chain's dropped hop: replayed from the same draws (views, then
    # the propagation's dropout) as 2 * mean_k - x_k
    model, u, p, parts, x = ssl_loss_then_replay(data, ssl_task, num_layers=1)
    views = (model.masked_views(x)[0] if "FM" in ssl_task
             else x.repeat(1, 2))
    x1, x2 = views.chunk(2, -1)
    mean_1, mean_2 = model.propagate(views, 0.3).chunk(2, -1)
    hop_1, hop_2 = 2 * mean_1 - x1, 2 * mean_2 - x2
    assert not torch.allclose(hop_1, hop_2, atol=1e-3)  # two dropout draws
    ssl = view_loss_by_hand(model, u, p, (x1 + hop_2) / 2,
                            (x2 + hop_1) / 2, 0.4)
    assert parts["ssl"].item() == pytest.approx(0.7 * ssl.item(), rel=1e-5)


@pytest.mark.parametrize("ssl_task", ["FAC", "FD+FM"])
def test_training_lowers_the_loss(data, ssl_task):
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=16, num_layers=2, ssl_task=ssl_task)
    user, pos, _ = fixed_batch(data)
    torch.manual_seed(0)
    rec_before = model.loss(user, pos, pos)[1]["rec"].item()
    before, after = train(model, data, steps=150)
    torch.manual_seed(0)
    rec_after = model.loss(user, pos, pos)[1]["rec"].item()
    assert after < 0.9 * before
    assert rec_after < 0.95 * rec_before


def test_modality_order_and_errors(data):
    assert default_modality_order(["text", "image"]) == ["image", "text"]
    assert default_modality_order(["audio", "text", "video"]) == [
        "video", "audio", "text"]
    model = SLMRec(data, embedding_dim=8, modality_order=["text", "image"])
    assert model.modalities == ["text", "image"]
    assert model.fac_heads["image"].out_features == 4
    with pytest.raises(ValueError, match="'modality_order'"):
        SLMRec(data, modality_order=["image"])
    for kwargs, name in [({"ssl_task": "XYZ"}, "ssl_task"),
                         ({"num_layers": 0}, "num_layers"),
                         ({"embedding_dim": 1}, "embedding_dim"),
                         ({"ssl_temp": 0.0}, "ssl_temp"),
                         ({"temperature": -1.0}, "temperature"),
                         ({"ssl_alpha": -0.1}, "ssl_alpha"),
                         ({"dropout": 1.0}, "dropout"),
                         ({"fusion": "sum"}, "fusion")]:
        with pytest.raises(ValueError, match=f"'{name}'"):
            SLMRec(data, **kwargs)


def test_repr(data):
    model = SLMRec(data, embedding_dim=8, ssl_task="FD")
    assert str(model) == (
        "SLMRec(100 users, 80 items, modalities=['image', 'text'], dim=8, "
        "num_layers=3, ssl_task='FD')")
