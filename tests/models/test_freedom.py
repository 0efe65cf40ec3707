import pytest
import torch
from model_helpers import (
    bpr_by_hand,
    dense_norm_adjacency,
    dense_propagation,
    layer_mean,
    train,
)
from torch_geometric.utils import to_dense_adj

from mde_pyg.losses import bpr_loss
from mde_pyg.models import build_model
from mde_pyg.models.encoder import default_modality_weights
from mde_pyg.models.freedom import FREEDOM, degree_sensitive_sample
from mde_pyg.transforms import similar_edge_type


def test_sample_follows_weights_exactly():
    weight = torch.tensor([1.0, 1.0, 4.0, 4.0])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[degree_sensitive_sample(weight, 1, gen)] += 1
    assert torch.allclose(counts / 4000, weight / weight.sum(), atol=0.03)
    # Without replacement: k distinct, sorted indices.
    for _ in range(20):
        kept = degree_sensitive_sample(weight, 3, gen)
        assert kept.tolist() == sorted(set(kept.tolist()))
        assert kept.numel() == 3
    with pytest.raises(ValueError, match="num_samples"):
        degree_sensitive_sample(weight, 5)


def test_sample_without_replacement_has_the_successive_draws_law():
    # k = 2 of weights [1, 1, 4, 4] (W = 10), as drawn one after the other
    # without replacement: P(i in S) = p_i + sum_{j != i} p_j w_i / (W - w_j)
    # = 11/45 for the light items, 34/45 for the heavy ones
    weight = torch.tensor([1.0, 1.0, 4.0, 4.0])
    exact = torch.tensor([11 / 45, 11 / 45, 34 / 45, 34 / 45])
    p = weight / weight.sum()
    assert torch.allclose(exact, torch.stack([
        p[i] + sum(p[j] * weight[i] / (weight.sum() - weight[j])
                   for j in range(4) if j != i) for i in range(4)]))
    gen = torch.Generator().manual_seed(0)
    draws = 20000
    counts = torch.zeros(4)
    for _ in range(draws):
        counts[degree_sensitive_sample(weight, 2, gen)] += 1
    sd = (exact * (1 - exact) / draws).sqrt()
    assert ((counts / draws - exact).abs() < 4 * sd).all(), counts / draws


def test_pruning_keeps_fraction_degree_sensitively(data):
    torch.manual_seed(0)
    model = FREEDOM(data, embedding_dim=8, dropout=0.8, fused=False)
    num_edges = data["user", "rates", "item"].edge_index.size(1)
    assert model.num_kept == int(num_edges * 0.2)

    counts = torch.zeros(num_edges)
    for _ in range(300):
        kept = model.sample_edges()
        assert kept.numel() == model.num_kept
        assert kept.unique().numel() == kept.numel()
        counts[kept] += 1
    # Edges between low-degree nodes (large 1/sqrt(d_u d_i)) survive more.
    order = model.edge_keep_weight.argsort()
    quarter = num_edges // 4
    low_weight = counts[order[:quarter]].mean()
    high_weight = counts[order[-quarter:]].mean()
    assert high_weight > 1.3 * low_weight
    corr = torch.corrcoef(torch.stack([counts, model.edge_keep_weight]))
    assert corr[0, 1] > 0.5


def test_pruned_graph_is_renormalised(data):
    torch.manual_seed(0)
    model = FREEDOM(data, embedding_dim=8, dropout=0.5, fused=False)
    edge_index, weight = model.graphs.get("pruned")
    num_users = model.num_users
    assert edge_index.size(1) == 2 * model.num_kept  # both directions
    deg = torch.bincount(edge_index[0], minlength=num_users + 80).float()
    expected = (deg[edge_index[0]] * deg[edge_index[1]]).rsqrt()
    assert torch.allclose(weight, expected)
    model.on_epoch_start(1)
    new_index, _ = model.graphs.get("pruned")
    assert not torch.equal(new_index, edge_index)


def mixed_item_graph_by_hand(data):
    """A_mm = 0.1 S_image + 0.9 S_text (FREEDOM's defaults), dense, so
    that h = A_mm E_I."""
    return sum(w * dense_propagation(data[similar_edge_type(m)].edge_index,
                                     data[similar_edge_type(m)].edge_weight,
                                     80)
               for m, w in (("image", 0.1), ("text", 0.9)))


def test_train_uses_pruned_graph_eval_uses_full(data):
    torch.manual_seed(0)
    model = FREEDOM(data, embedding_dim=8, fused=False)
    num_users = model.num_users
    ego = model.embedding.weight
    h = mixed_item_graph_by_hand(data) @ ego[num_users:]
    train_user, train_item = model.get_embedding()
    # training: LightGCN (L = 2) over the kept edges, re-normalised with
    # their own degrees
    edge_index, _ = model.graphs.get("pruned")
    kept = edge_index[:, edge_index[0] < num_users]
    assert kept.size(1) == model.num_kept
    kept = torch.stack([kept[0], kept[1] - num_users])
    pruned = layer_mean(dense_norm_adjacency(data, kept), ego, 2)
    assert torch.allclose(train_user, pruned[:num_users], atol=1e-5)
    assert torch.allclose(train_item, pruned[num_users:] + h, atol=1e-5)
    model.eval()
    user, item = model.get_embedding()
    assert not torch.allclose(train_user, user)
    # evaluation: the full graph, mean of A^l E for l = 0..2
    full = layer_mean(dense_norm_adjacency(data), ego, 2)
    assert torch.allclose(user, full[:num_users], atol=1e-5)
    assert torch.allclose(item, full[num_users:] + h, atol=1e-5)
    # Edges point neighbour -> item: the same h as A^T of the to_dense_adj
    edge_index, weight = model.graphs.get("item_mm")
    adj = to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=80)[0]
    assert torch.allclose(adj.t() @ ego[num_users:], h, atol=1e-6)


def test_mixed_item_graph_weights(data):
    assert default_modality_weights(["image", "text"]) == {
        "image": 0.1, "text": 0.9}
    assert default_modality_weights(["text", "audio"]) == {
        "text": 0.5, "audio": 0.5}
    # visual by name, not by first letter: lfm2k's vggish is audio
    assert default_modality_weights(["vggish", "text"]) == {
        "vggish": 0.5, "text": 0.5}
    assert default_modality_weights(["text", "Video", "audio"]) == {
        "text": 0.45, "Video": 0.1, "audio": 0.45}
    # the first word counts: MMRec's v_feat and image_feat stay visual
    from mde_pyg.models.encoder import is_visual

    assert [is_visual(m) for m in ("v_feat", "image_feat", "visual-feat",
                                   "vggish", "text_feat", "audio")] == [
        True, True, True, False, False, False]
    weights = {"image": 0.3, "text": 0.7}
    model = FREEDOM(data, embedding_dim=8, modality_weights=weights,
                    fused=False)
    edge_index, weight = model.graphs.get("item_mm")
    dense = to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=80)[0]
    expected = sum(
        w * to_dense_adj(data[similar_edge_type(m)].edge_index,
                         edge_attr=data[similar_edge_type(m)].edge_weight,
                         max_num_nodes=80)[0]
        for m, w in weights.items())
    assert torch.allclose(dense, expected)
    with pytest.raises(ValueError, match="every modality"):
        FREEDOM(data, modality_weights={"image": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        FREEDOM(data, modality_weights={"image": -1.0, "text": 1.0})


def test_feature_bpr_term(data):
    model = build_model("freedom", data, embedding_dim=8, reg_weight=0.5)
    assert isinstance(model, FREEDOM)
    model.eval()
    u, p, n = (torch.tensor([1, 2, 1]), torch.tensor([3, 4, 3]),
               torch.tensor([5, 3, 6]))  # item 3 repeats
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    assert user.shape == (100, 8) and item.shape == (80, 8)
    terms = []
    for m in ("image", "text"):
        f = model.projection[m](data["item"][f"x_{m}"])
        terms.append(bpr_loss((user[u] * f[p]).sum(-1),
                              (user[u] * f[n]).sum(-1)))
    assert parts["reg"].item() == pytest.approx(0.5 * sum(terms).item(),
                                                rel=1e-5)
    bpr = bpr_by_hand(user[u], item[p], item[n])
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    assert total.item() == pytest.approx(
        (parts["bpr"] + parts["reg"]).item(), rel=1e-6)
    assert torch.allclose(model(u, p), (user[u] * item[p]).sum(-1))
    assert "dropout=0.8" in str(model)


def test_loss_decreases(data):
    model = FREEDOM(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before


def test_keep_weights_are_inverse_sqrt_degrees(data):
    # METHOD.md §3: an edge is kept with probability proportional to
    # 1 / sqrt(d_u d_i), from the data's degrees (not the model's buffer)
    model = FREEDOM(data, embedding_dim=8, dropout=0.8)
    user, item = data["user", "rates", "item"].edge_index
    du = torch.bincount(user, minlength=data["user"].num_nodes).float()
    di = torch.bincount(item, minlength=data["item"].num_nodes).float()
    assert torch.allclose(model.edge_keep_weight,
                          (du[user] * di[item]).rsqrt())
