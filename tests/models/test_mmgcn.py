import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_fused_matches_edge_index, train

from mde_pyg.models import build_model
from mde_pyg.models.mmgcn import MMGCN, default_latent_dims
from mde_pyg.nn.sparse import user_item_edges


def dense_mean_adjacency(data):
    """Row n averages node n's neighbours in the (U+I)-node graph."""
    num = data["user"].num_nodes + data["item"].num_nodes
    src, dst = user_item_edges(data)[0]
    adj = torch.zeros(num, num)
    adj[dst, src] = 1.0
    return adj / adj.sum(1, keepdim=True).clamp(min=1)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_embedding_by_hand(data, num_layers):
    torch.manual_seed(0)
    model = MMGCN(data, embedding_dim=8, num_layers=num_layers,
                  latent_dims={"image": 16, "text": None})
    adj = dense_mean_adjacency(data)
    outs = []
    for m in ("image", "text"):
        x = data["item"][f"x_{m}"]
        if m == "image":
            x = model.input_map[m](x)
        x = F.normalize(torch.cat([getattr(model, f"preference_{m}"), x]),
                        dim=-1)
        for layer in model.layers[m]:
            h = F.leaky_relu(adj @ (x @ layer["conv"].weight.t()))
            x_hat = F.leaky_relu(layer["self"](x)) + model.id_embedding
            x = F.leaky_relu(layer["combine"](torch.cat([h, x_hat], -1)))
        outs.append(x)
    expected = (outs[0] + outs[1]) / 2
    user, item = model.get_embedding()
    assert torch.allclose(torch.cat([user, item]), expected, atol=1e-5)
    assert user.shape == (100, 8) and item.shape == (80, 8)
    # input widths: image mapped to 16, text enters raw
    assert model.layers["image"][0]["conv"].weight.shape == (16, 16)
    assert "text" not in model.input_map


def test_fused_equals_edge_index_path(data):
    torch.manual_seed(0)
    fused = MMGCN(data, embedding_dim=8, num_layers=2)
    plain = MMGCN(data, embedding_dim=8, num_layers=2, fused=False)
    batch = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    assert_fused_matches_edge_index(fused, plain, batch)


def test_loss_parts_and_frozen_embeddings(data):
    torch.manual_seed(0)
    model = build_model("mmgcn", data, embedding_dim=8, reg_weight=0.5)
    assert isinstance(model, MMGCN)
    u, p, n = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    e = model.id_embedding
    reg = (e[u].pow(2).sum() / 2 + e[torch.cat([p, n]) + 100].pow(2).sum() / 4
           + sum(getattr(model, f"preference_{m}")[u].pow(2).sum() / 2
                 for m in ("image", "text")))
    assert parts["reg"].item() == pytest.approx(0.5 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())
    # MMRec's form: ID and preference stay at their initial values.
    frozen = MMGCN(data, embedding_dim=8, learn_embeddings=False)
    names = {name for name, _ in frozen.named_parameters()}
    assert "id_embedding" not in names and "preference_image" not in names
    assert set(frozen.loss(u, p, n)[1]) == {"bpr"}
    assert "num_layers=3" in str(frozen)


def test_default_latent_dims_and_errors(data):
    assert default_latent_dims({"image": 4096, "text": 384}) == {
        "image": 256, "text": None}
    assert default_latent_dims({"video": 10, "audio": 5}) == {
        "video": 256, "audio": None}
    with pytest.raises(ValueError, match="'latent_dims' must name"):
        MMGCN(data, latent_dims={"image": 8})
    with pytest.raises(ValueError, match="'num_layers'"):
        MMGCN(data, num_layers=0)


def test_training_lowers_the_loss(data):
    torch.manual_seed(0)
    model = MMGCN(data, embedding_dim=16, num_layers=2)
    before, after = train(model, data, steps=150)
    assert after < 0.6 * before
