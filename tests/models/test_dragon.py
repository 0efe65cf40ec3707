import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_fused_matches_edge_index, bpr_by_hand, train
from torch_geometric.utils import to_dense_adj

from mde_pyg.models import build_model
from mde_pyg.models.dragon import DRAGON


def dense(model, name, num):
    edge_index, weight = model.graphs.get(name)
    # Edges point source -> aggregating node: propagation is A^T x.
    return to_dense_adj(edge_index, edge_attr=weight,
                        max_num_nodes=num)[0].t()


@pytest.mark.parametrize("use_user_graph", [True, False])
def test_embedding_by_hand(data, use_user_graph):
    torch.manual_seed(0)
    model = DRAGON(data, embedding_dim=8, use_user_graph=use_user_graph,
                   fused=False)
    with torch.no_grad():  # make the preferences non-uniform
        model.user_fusion.weight.normal_()
    num_users = model.num_users
    adj = dense(model, "user_item", num_users + 80)
    x_hat = {}
    for m in ("image", "text"):
        item = model.encoder.projection[m](data["item"][f"x_{m}"])
        x = F.normalize(torch.cat([model.encoder.user[m], item]), dim=-1)
        x_hat[m] = x + adj @ x + adj @ adj @ x
    pref = model.user_fusion.weight.softmax(dim=-1)
    item = torch.cat([x_hat["image"][num_users:], x_hat["text"][num_users:]],
                     dim=-1)
    item = item + dense(model, "item_mm", 80) @ item
    user = torch.cat([pref[:, :1] * x_hat["image"][:num_users],
                      pref[:, 1:] * x_hat["text"][:num_users]], dim=-1)
    if use_user_graph:
        user = user + dense(model, "user_user", num_users) @ user
    got_user, got_item = model.get_embedding()
    assert got_user.shape == (100, 16) and got_item.shape == (80, 16)
    assert torch.allclose(got_user, user, atol=1e-5)
    assert torch.allclose(got_item, item, atol=1e-5)


def test_fused_equals_edge_index_path(data):
    torch.manual_seed(0)
    fused = DRAGON(data, embedding_dim=8, fused=True)
    plain = DRAGON(data, embedding_dim=8, fused=False)
    plain.load_state_dict(fused.state_dict())
    for a, b in zip(fused.get_embedding(), plain.get_embedding()):
        assert torch.allclose(a, b, atol=1e-5)
    batch = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    assert_fused_matches_edge_index(fused, plain, batch, atol=1e-5)


def test_loss_parts(data):
    model = build_model("dragon", data, embedding_dim=8, reg_weight=0.1)
    assert isinstance(model, DRAGON)
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    total, parts = model.loss(u, p, n)
    assert set(parts) == {"bpr", "reg"}
    reg = sum(model.encoder.user[m][u].pow(2).sum() / 2
              for m in ("image", "text"))
    reg = reg + model.user_fusion.weight[u].pow(2).sum() / 2
    assert parts["reg"].item() == pytest.approx(0.1 * reg.item(), rel=1e-5)
    user, item = model.get_embedding()
    assert torch.allclose(model(u, p), (user[u] * item[p]).sum(-1))
    assert str(model) == ("DRAGON(100 users, 80 items, "
                          "modalities=['image', 'text'], dim=8)")


def test_loss_decreases(data):
    model = DRAGON(data, embedding_dim=32)
    before, after = train(model, data)
    assert after < 0.6 * before


def test_item_graph_is_mmrecs_mix_built_from_data(data):
    # MMRec's mm_image_weight: A_mm = 0.1 A_image + 0.9 A_text, built from
    # the data's kNN graphs (the by-hand test reads the model's graphs)
    from model_helpers import dense_propagation

    from mde_pyg.transforms import similar_edge_type

    num = data["item"].num_nodes
    model = DRAGON(data, embedding_dim=8, fused=False)  # edge_index form
    got = dense_propagation(*model.graphs.get("item_mm"), num)
    want = sum(w * dense_propagation(data[similar_edge_type(m)].edge_index,
                                     data[similar_edge_type(m)].edge_weight,
                                     num)
               for m, w in (("image", 0.1), ("text", 0.9)))
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("name", ["dragon", "sand"])
def test_bpr_part_by_hand(data, name):
    # SAND inherits DRAGON's backbone loss: its "bpr" part is BPR of the
    # embeddings get_embedding returns, the positives scored first
    torch.manual_seed(0)
    model = build_model(name, data, embedding_dim=8)
    user, pos, neg = (torch.tensor([1, 2, 1]), torch.tensor([3, 4, 3]),
                      torch.tensor([5, 6, 7]))
    parts = model.loss(user, pos, neg)[1]
    users, items = model.get_embedding()
    assert parts["bpr"].item() == pytest.approx(
        bpr_by_hand(users[user], items[pos], items[neg]).item(), rel=1e-5)
