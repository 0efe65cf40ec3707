import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import assert_fused_matches_edge_index, train
from torch_geometric.data import HeteroData

from mde_pyg.models.grcn import GRCN


def interaction_matrix(data):
    user, item = data["user", "rates", "item"].edge_index
    r = torch.zeros(data["user"].num_nodes, data["item"].num_nodes)
    r[user, item] = 1.0
    return r


def masked_softmax(s, mask, dim):
    e = s.exp() * mask
    return e / e.sum(dim, keepdim=True).clamp(min=1e-30)


def dense_forward(model, data):
    """GRCN with dense matrices: returns (representation, weight matrix
    with rows = receiving node)."""
    r = interaction_matrix(data)
    num_users, num_items = r.shape
    reps, to_user, to_item = [], [], []
    for m in model.modalities:
        f = F.normalize(F.leaky_relu(
            model.projection[m](data["item"][f"x_{m}"])), dim=-1)
        p = F.normalize(model.preference[m], dim=-1)
        for _ in range(model.num_routing):
            alpha = masked_softmax(p @ f.t(), r, dim=1)
            p = F.normalize(p + alpha @ f, dim=-1)
        s = p @ f.t()
        a_iu = masked_softmax(s, r, dim=1)          # [U, I]: i -> u
        a_ui = masked_softmax(s, r, dim=0).t()      # [I, U]: u -> i
        adj = torch.zeros(num_users + num_items, num_users + num_items)
        adj[:num_users, num_users:] = a_iu
        adj[num_users:, :num_users] = a_ui
        x = torch.cat([p, f])
        reps.append(x + adj @ x)
        to_user.append(a_iu)
        to_item.append(a_ui)
    conf = model.confidence
    w_iu = torch.stack([a * conf[num_users:, k] for k, a in
                        enumerate(to_user)]).amax(0).relu() * r
    w_ui = torch.stack([a * conf[:num_users, k] for k, a in
                        enumerate(to_item)]).amax(0).relu() * r.t()
    w = torch.zeros(num_users + num_items, num_users + num_items)
    w[:num_users, num_users:] = w_iu
    w[num_users:, :num_users] = w_ui
    h = total = F.normalize(model.id_embedding, dim=-1)
    for _ in range(model.num_layers):
        h = w @ h
        total = total + h
    return torch.cat([total, *reps], dim=-1), w


@pytest.mark.parametrize("num_layers,num_routing", [(1, 0), (2, 2)])
def test_embedding_by_hand(data, num_layers, num_routing):
    torch.manual_seed(0)
    model = GRCN(data, embedding_dim=8, latent_dim=6, num_layers=num_layers,
                 num_routing=num_routing)
    with torch.no_grad():  # larger confidences: fewer edges near zero
        model.confidence.normal_()
    expected, _ = dense_forward(model, data)
    user, item = model.get_embedding()
    assert user.shape == (100, 8 + 2 * 6) and item.shape == (80, 20)
    assert torch.allclose(torch.cat([user, item]), expected, atol=1e-5)


@pytest.mark.parametrize("weight_mode", ["confid", "max", "mean"])
def test_fused_equals_edge_index_path(data, weight_mode):
    torch.manual_seed(0)
    fused = GRCN(data, embedding_dim=8, latent_dim=8,
                 weight_mode=weight_mode)
    plain = GRCN(data, embedding_dim=8, latent_dim=8,
                 weight_mode=weight_mode, fused=False)
    batch = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    assert_fused_matches_edge_index(fused, plain, batch)


def test_loss_parts_by_hand(data):
    torch.manual_seed(0)
    model = GRCN(data, embedding_dim=8, latent_dim=4, reg_weight=0.5,
                 full_preference_reg=["image"])
    u, p, n = torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([5, 6])
    total, parts = model.loss(u, p, n)
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()
    assert parts["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    e, pref = model.id_embedding, model.preference
    reg = (e[u].pow(2).sum() / 2 + e[torch.cat([p, n]) + 100].pow(2).sum() / 4
           + pref["image"][u].pow(2).sum() / 2
           + pref["text"][u].pow(2).sum() / 2
           + pref["image"].pow(2).sum() / 100)
    assert parts["reg"].item() == pytest.approx(0.5 * reg.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item())


@pytest.fixture()
def tiny():
    """3 users, 4 items, two modalities."""
    gen = torch.Generator().manual_seed(1)
    data = HeteroData()
    data["user"].num_nodes = 3
    data["item"].num_nodes = 4
    data["item"].x_a = torch.randn(4, 5, generator=gen)
    data["item"].x_b = torch.randn(4, 3, generator=gen)
    data["user", "rates", "item"].edge_index = torch.tensor(
        [[1, 0, 1, 2, 0, 1], [2, 0, 1, 0, 1, 3]])
    return data


def edge_weights_by_hand(model, data, pruning=True, mode="confid"):
    """One edge at a time, as the formulas say (num_routing=0)."""
    pairs = data["user", "rates", "item"].edge_index.t().tolist()
    nbr_u = {u: [i for v, i in pairs if v == u] for u, _ in pairs}
    nbr_i = {i: [v for v, j in pairs if j == i] for _, i in pairs}
    feats = {}
    for m in model.modalities:
        lin = model.projection[m]
        f = F.normalize(F.leaky_relu(
            data["item"][f"x_{m}"] @ lin.weight.t() + lin.bias), dim=-1)
        feats[m] = (F.normalize(model.preference[m], dim=-1), f)

    def affinity(m, u, i):
        p, f = feats[m]
        return math.exp(sum(a * b for a, b in zip(p[u].tolist(),
                                                  f[i].tolist())))

    to_user, to_item = [], []  # weights of i -> u, then of u -> i
    for u, i in pairs:
        a_iu, a_ui = [], []
        for m in model.modalities:
            a_iu.append(affinity(m, u, i) / sum(affinity(m, u, j)
                                                 for j in nbr_u[u]))
            a_ui.append(affinity(m, u, i) / sum(affinity(m, v, i)
                                                 for v in nbr_i[i]))
        for scores, out, sender in ((a_iu, to_user, 3 + i),
                                    (a_ui, to_item, u)):
            if mode == "confid":
                c = model.confidence[sender].tolist()
                w = max(s * ck for s, ck in zip(scores, c))
            elif mode == "max":
                w = max(scores)
            else:
                w = sum(scores) / len(scores)
            out.append(max(w, 0.0) if pruning else w)
    return torch.tensor(to_user + to_item)


@pytest.mark.parametrize("pruning", [True, False])
def test_edge_confidences_by_hand(tiny, pruning):
    torch.manual_seed(0)
    model = GRCN(tiny, embedding_dim=4, latent_dim=3, num_routing=0,
                 pruning=pruning)
    with torch.no_grad():
        model.confidence.copy_(torch.tensor(
            [[0.5, -1.0], [-0.2, -0.3], [2.0, 1.0],           # users
             [1.0, 3.0], [-1.0, 0.5], [-0.4, -0.1], [0.7, 0.7]]))  # items
    weight, reps = model.refine()
    expected = edge_weights_by_hand(model, tiny, pruning)
    assert torch.allclose(weight, expected.float(), atol=1e-6)
    # User 1 has only negative confidences: its messages are pruned.
    sender = model.edge_index[0]
    assert (weight[sender == 1] == 0).all() == pruning
    assert ((weight == 0).sum() > 0) == pruning
    # Edges are listed items -> users, then users -> items.
    user, item = tiny["user", "rates", "item"].edge_index
    assert torch.equal(model.edge_index[:, :6],
                       torch.stack([item + 3, user]))
    # No routing: the user rows are the normalised preferences (MMRec).
    for m in ("a", "b"):
        x, _ = model.modality_scores(m)
        assert torch.allclose(x[:3], F.normalize(model.preference[m],
                                                 dim=-1))
    assert set(reps) == {"a", "b"}


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_weight_modes_by_hand(tiny, mode):
    torch.manual_seed(0)
    model = GRCN(tiny, embedding_dim=4, latent_dim=3, num_routing=0,
                 weight_mode=mode)
    assert model.confidence is None
    weight, _ = model.refine()
    expected = edge_weights_by_hand(model, tiny, mode=mode)
    assert torch.allclose(weight, expected.float(), atol=1e-6)
    assert (weight > 0).all()  # softmax scores are never pruned


def test_routing_moves_preference_to_items(tiny):
    torch.manual_seed(0)
    model = GRCN(tiny, embedding_dim=4, latent_dim=3, num_routing=1)
    x, _ = model.modality_scores("a")
    lin = model.projection["a"]
    f = F.normalize(F.leaky_relu(lin(tiny["item"].x_a)), dim=-1)
    p = F.normalize(model.preference["a"], dim=-1)
    items = [1, 2, 3]  # user 1's items
    alpha = torch.softmax(p[1] @ f[items].t(), dim=0)
    expected = F.normalize(p[1] + alpha @ f[items], dim=0)
    assert torch.allclose(x[1], expected, atol=1e-6)
    # User 2 has a single item: one step halves the angle towards it.
    expected = F.normalize(p[2] + f[0], dim=0)
    assert torch.allclose(x[2], expected, atol=1e-6)


def test_errors_and_repr(data):
    with pytest.raises(ValueError, match="'num_layers'"):
        GRCN(data, num_layers=0)
    with pytest.raises(ValueError, match="'num_routing'"):
        GRCN(data, num_routing=-1)
    with pytest.raises(ValueError, match="'weight_mode'"):
        GRCN(data, weight_mode="sum")
    with pytest.raises(ValueError, match="'full_preference_reg'"):
        GRCN(data, full_preference_reg=["audio"])
    model = GRCN(data, embedding_dim=8, latent_dim=8)
    assert str(model) == ("GRCN(100 users, 80 items, modalities=['image', "
                          "'text'], dim=8, num_routing=3, "
                          "weight_mode='confid')")


def test_training_lowers_the_loss(data):
    torch.manual_seed(0)
    model = GRCN(data, embedding_dim=16, latent_dim=16)
    before, after = train(model, data, steps=150)
    assert after < 0.3 * before


def test_cosine_softmax_equals_the_shifted_softmax():
    from torch_geometric.utils import softmax

    from mde_pyg.models.grcn import cosine_softmax

    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(40, 8, generator=gen), dim=-1)
    b = F.normalize(torch.randn(40, 8, generator=gen), dim=-1)
    score = ((a * b).sum(-1)).requires_grad_()
    index = torch.randint(0, 7, (40,), generator=gen)  # group 6 may be empty
    weight = torch.randn(40, generator=gen)
    out = cosine_softmax(score, index, 9)
    (grad,) = torch.autograd.grad((out * weight).sum(), score)
    expected = softmax(score, index, num_nodes=9)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), score)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad, expected_grad)
    # each group sums to one
    sums = torch.zeros(9).index_add_(0, index, out.detach())
    torch.testing.assert_close(sums[index.unique()],
                               torch.ones(index.unique().numel()))
