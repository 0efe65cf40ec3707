import pytest
import torch
import torch.nn.functional as F
from model_helpers import (
    assert_fused_matches_edge_index,
    dense_norm_adjacency,
    dense_propagation,
    info_nce_by_hand,
)

from mde_pyg.models import MDE, build_model


def batch(data, size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ei = data["user", "rates", "item"].edge_index
    idx = torch.randint(0, ei.size(1), (size,), generator=gen)
    neg = torch.randint(0, data["item"].num_nodes, (size,), generator=gen)
    return ei[0, idx], ei[1, idx], neg


def test_shapes_and_repr(synthetic_graphs):
    model = MDE(synthetic_graphs, embedding_dim=8)
    user, item = model.get_embedding()
    assert user.shape == (60, 16) and item.shape == (40, 16)  # concat
    scores = model(torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert torch.allclose(scores, (user[[0, 1]] * item[[2, 3]]).sum(-1))
    top = model.recommend(torch.tensor([0, 1]), k=5)
    assert top.shape == (2, 5)
    model_sum = MDE(synthetic_graphs, embedding_dim=8, fusion="sum")
    assert model_sum.get_embedding()[0].shape == (60, 8)
    assert "MDE(60 users, 40 items" in str(model)


FLAGS = [{}, {"residual": False}, {"use_user_graph": False},
         {"use_item_graph": False}, {"fused": False}]


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_embedding_by_hand(synthetic_graphs, fusion, flags):
    data = synthetic_graphs
    torch.manual_seed(0)
    model = MDE(data, embedding_dim=8, fusion=fusion, **flags)
    with torch.no_grad():  # non-uniform preferences
        model.user_fusion.weight.normal_()
        model.item_fusion.weight.normal_()
    num_users, num_items = 60, 40
    assert model.modalities == ["image", "text"]
    assert model.encoder.propagation.num_layers == 2  # METHOD.md: L = 2
    residual = flags.get("residual", True)
    use_user = flags.get("use_user_graph", True)
    use_item = flags.get("use_item_graph", True)
    # Eq. 2-3: A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2 from R alone
    adj = dense_norm_adjacency(data)
    s_user = dense_propagation(data["user", "co_occurs", "user"].edge_index,
                               data["user", "co_occurs", "user"].edge_weight,
                               num_users)
    # the co-occurrence weights are a softmax over each user's neighbours
    has = s_user.sum(1) > 0
    assert torch.allclose(s_user.sum(1)[has], torch.ones(int(has.sum())))
    users, items = {}, {}
    for m in model.modalities:
        x = data["item"][f"x_{m}"].float()
        first, act, second = model.encoder.projection[m]
        assert isinstance(act, torch.nn.LeakyReLU)
        # f_m: X_m -> 4d -> d
        assert (first.in_features, first.out_features) == (x.size(1), 32)
        assert (second.in_features, second.out_features) == (32, 8)
        item = F.leaky_relu(x @ first.weight.t() + first.bias, 0.01)
        item = item @ second.weight.t() + second.bias
        x0 = torch.cat([model.encoder.user[m], item])
        x_bar = (x0 + adj @ x0 + adj @ adj @ x0) / 3
        u_bar, i_bar = x_bar[:num_users], x_bar[num_users:]
        # Eq. 4: x + S x (residual) or S x
        store = data["item", f"similar_{m}", "item"]
        s_item = dense_propagation(store.edge_index, store.edge_weight,
                                   num_items)
        keep = 1.0 if residual else 0.0
        users[m] = keep * u_bar + s_user @ u_bar if use_user else u_bar
        items[m] = keep * i_bar + s_item @ i_bar if use_item else i_bar
    got_users, got_items = model.modality_embedding()
    for m in model.modalities:
        assert torch.allclose(got_users[m], users[m], atol=1e-5)
        assert torch.allclose(got_items[m], items[m], atol=1e-5)
    # Eq. 5: P = softmax(W), P[:, m] * x_m concatenated or summed
    out = []
    for fusion_module, x in ((model.user_fusion, users),
                             (model.item_fusion, items)):
        w = fusion_module.weight.detach()
        pref = w.exp() / w.exp().sum(1, keepdim=True)
        parts = [pref[:, j:j + 1] * x[m]
                 for j, m in enumerate(model.modalities)]
        out.append(torch.cat(parts, -1) if fusion == "concat"
                   else parts[0] + parts[1])
    user, item = model.get_embedding()
    width = 16 if fusion == "concat" else 8
    assert user.shape == (num_users, width)
    assert item.shape == (num_items, width)
    assert torch.allclose(user, out[0], atol=1e-5)
    assert torch.allclose(item, out[1], atol=1e-5)


def test_fused_equals_edge_index_path(synthetic_graphs):
    torch.manual_seed(0)
    fused = MDE(synthetic_graphs, embedding_dim=8)
    plain = MDE(synthetic_graphs, embedding_dim=8, fused=False)
    plain.load_state_dict(fused.state_dict())
    u, p, n = batch(synthetic_graphs)
    for a, b in zip(fused.get_embedding(), plain.get_embedding()):
        assert torch.allclose(a, b, atol=1e-5)
    assert_fused_matches_edge_index(fused, plain, (u, p, n), atol=1e-5)


def test_loss_parts_match_formula(synthetic_graphs):
    from mde_pyg.losses import bpr_loss, mda_loss, msa_loss
    from mde_pyg.nn import preference_gap

    torch.manual_seed(0)
    model = MDE(synthetic_graphs, embedding_dim=8, lambda_1=0.3,
                lambda_2=0.7, tau=0.5, reg_weight=0.01)
    with torch.no_grad():
        model.user_fusion.weight.normal_()
        model.item_fusion.weight.normal_()
    u, p, n = batch(synthetic_graphs)
    total, parts = model.loss(u, p, n)
    users, items = model.modality_embedding()
    user, item = model.get_embedding()
    bpr = bpr_loss((user[u] * item[p]).sum(-1), (user[u] * item[n]).sum(-1))
    pu = model.user_fusion.preferences(u)
    pi = model.item_fusion.preferences(p)
    gu, gi = preference_gap(pu), preference_gap(pi)
    mda = 0.3 * (mda_loss({m: x[u] for m, x in users.items()}, gu)
                 + mda_loss({m: x[p] for m, x in items.items()}, gi))
    msa = 0.7 * (msa_loss(users["image"][u], users["text"][u], 1 - gu, 0.5)
                 + msa_loss(items["image"][p], items["text"][p], 1 - gi, 0.5))
    # lambda ||Theta_B||^2: each tensor's squared batch-row norms averaged
    # over its rows (the MDE docstring's convention), written out here
    reg = 0.01 * sum(t.pow(2).sum() / t.size(0) for t in (
        model.encoder.user["image"][u], model.encoder.user["text"][u],
        model.user_fusion.weight[u], model.item_fusion.weight[p],
        model.item_fusion.weight[n]))
    for key, value in (("bpr", bpr), ("mda", mda), ("msa", msa),
                       ("reg", reg)):
        assert parts[key].item() == pytest.approx(value.item(), rel=1e-4)
    assert total.item() == pytest.approx((bpr + mda + msa + reg).item(),
                                         rel=1e-4)


def test_one_way_msa_and_an_undetached_tradeoff_by_hand(synthetic_graphs):
    # The two [choice] alternatives together, end to end against a dense
    # reference: symmetric_msa=False keeps the image->text InfoNCE only,
    # and detach_tradeoff=False lets the MDA/MSA weights w_d = |p_1 - p_2|
    # and w_a = 1 - w_d carry gradient into the preference logits.
    torch.manual_seed(0)
    model = MDE(synthetic_graphs, embedding_dim=8, lambda_1=0.3,
                lambda_2=0.7, tau=0.5, reg_weight=0.0, symmetric_msa=False,
                detach_tradeoff=False)
    with torch.no_grad():
        model.user_fusion.weight.normal_()
        model.item_fusion.weight.normal_()
    u, p, n = batch(synthetic_graphs)
    total, parts = model.loss(u, p, n)
    logits = [model.user_fusion.weight, model.item_fusion.weight]
    grads = torch.autograd.grad(total, logits)

    users, items = model.modality_embedding()
    user, item = model.get_embedding()
    bpr = -F.logsigmoid((user[u] * item[p]).sum(-1)
                        - (user[u] * item[n]).sum(-1)).mean()

    def by_hand(x_img, x_txt, logit):
        pref = logit.softmax(-1)
        w_d = (pref[:, 0] - pref[:, 1]).abs()
        a, b = F.normalize(x_img, dim=-1), F.normalize(x_txt, dim=-1)
        mda = (w_d * (a * b).sum(-1).abs()).mean()
        sim = a @ b.t() / 0.5
        nce = sim.logsumexp(dim=1) - sim.diagonal()
        return 0.3 * mda, 0.7 * ((1 - w_d) * nce).mean()

    mda_u, msa_u = by_hand(users["image"][u], users["text"][u],
                           model.user_fusion.weight[u])
    mda_i, msa_i = by_hand(items["image"][p], items["text"][p],
                           model.item_fusion.weight[p])
    assert parts["msa"].item() == pytest.approx((msa_u + msa_i).item(),
                                                rel=1e-5)
    assert parts["mda"].item() == pytest.approx((mda_u + mda_i).item(),
                                                rel=1e-5)
    expected = torch.autograd.grad(bpr + mda_u + mda_i + msa_u + msa_i,
                                   logits, retain_graph=True)
    for grad, hand in zip(grads, expected):
        assert torch.allclose(grad, hand, atol=1e-6)
    # the trade-off path is a visible part of that gradient
    plain = torch.autograd.grad(bpr, logits)
    assert not torch.allclose(grads[0], plain[0], atol=1e-4)


def test_tradeoff_detached_from_preferences(synthetic_graphs):
    u, p, n = batch(synthetic_graphs)
    for detach in (True, False):
        torch.manual_seed(0)
        model = MDE(synthetic_graphs, embedding_dim=8, lambda_1=1.0,
                    lambda_2=0.0, reg_weight=0.0, detach_tradeoff=detach)
        with torch.no_grad():
            model.user_fusion.weight.normal_()
        # Only the MDA term: the fused embeddings' BPR also reaches the
        # preferences, so isolate the trade-off path.
        users, _ = model.modality_embedding()
        pref = model.user_fusion.preferences(u)
        w_d, _ = model.tradeoff(pref)
        from mde_pyg.losses import mda_loss
        mda_loss({m: x[u] for m, x in users.items()}, w_d).backward()
        grad = model.user_fusion.weight.grad
        has_grad = grad is not None and grad.abs().sum() > 0
        assert has_grad == (not detach)


def test_ablation_flags(synthetic_graphs):
    from mde_pyg.losses import mda_loss, multi_msa_loss

    u, p, n = batch(synthetic_graphs)
    torch.manual_seed(0)
    full = MDE(synthetic_graphs, lambda_1=0.3, lambda_2=0.7)
    with torch.no_grad():
        full.user_fusion.weight.normal_()
        full.item_fusion.weight.normal_()
    full_parts = full.loss(u, p, n)[1]
    for flag, kept in (("use_mda", "msa"), ("use_msa", "mda")):
        model = MDE(synthetic_graphs, lambda_1=0.3, lambda_2=0.7,
                    **{flag: False})
        model.load_state_dict(full.state_dict())
        total, parts = model.loss(u, p, n)
        assert set(parts) == {"bpr", kept, "reg"}
        # the ablation drops one term and leaves the others as they were
        for key in parts:
            assert parts[key].item() == pytest.approx(
                full_parts[key].item(), rel=1e-6)
        assert total.item() == pytest.approx(
            (parts["bpr"] + parts[kept] + parts["reg"]).item(), rel=1e-6)
    # w/o NLT: unit weights, so the MDA term is the plain mean |cos| and
    # the MSA term the unweighted InfoNCE, whatever the preferences.
    model = MDE(synthetic_graphs, use_nlt=False, lambda_1=1.0, lambda_2=0.7)
    model.load_state_dict(full.state_dict())
    users, items = model.modality_embedding()
    u_rows = {m: x[u] for m, x in users.items()}
    p_rows = {m: x[p] for m, x in items.items()}
    expected = mda_loss(u_rows) + mda_loss(p_rows)
    parts = model.loss(u, p, n)[1]
    assert parts["mda"].item() == pytest.approx(expected.item(), rel=1e-5)
    expected = 0.7 * (multi_msa_loss(u_rows) + multi_msa_loss(p_rows))
    assert parts["msa"].item() == pytest.approx(expected.item(), rel=1e-5)
    by_hand = 0.7 * sum(
        info_nce_by_hand(rows["image"], rows["text"], 0.2, symmetric=True)
        for rows in (u_rows, p_rows))
    assert parts["msa"].item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_variants(synthetic_graphs):
    u, p, n = batch(synthetic_graphs)
    model = MDE(synthetic_graphs, tradeoff="global",
                global_preference=[0.8, 0.2])
    assert model.user_fusion.weight is None
    pref = model.user_fusion.preferences(u)
    assert torch.allclose(pref, torch.tensor([[0.8, 0.2]]).expand(64, 2))
    model.loss(u, p, n)[0].backward()
    model = MDE(synthetic_graphs, tradeoff="learned")
    model.loss(u, p, n)[0].backward()
    assert model.user_tradeoff.weight.grad.abs().sum() > 0
    assert_learned_tradeoff_terms(synthetic_graphs, u, p, n)
    with pytest.raises(ValueError, match="'tradeoff' must be one of"):
        MDE(synthetic_graphs, tradeoff="nope")
    # built directly (not through build_model), the constructor checks too
    with pytest.raises(ValueError, match="'tau' must be > 0, got 0"):
        MDE(synthetic_graphs, tau=0)
    with pytest.raises(ValueError, match="'lambda_2' must be >= 0, got -1"):
        MDE(synthetic_graphs, lambda_2=-1)


def assert_learned_tradeoff_terms(data, u, p, n):
    """Variant B: (w_d, w_a) = softmax(theta_n), 0.5 each at zero init."""
    from mde_pyg.losses import mda_loss, multi_msa_loss

    torch.manual_seed(0)
    model = MDE(data, tradeoff="learned", lambda_1=1.0, lambda_2=1.0)
    users, items = model.modality_embedding()
    u_rows = {m: x[u] for m, x in users.items()}
    p_rows = {m: x[p] for m, x in items.items()}
    parts = model.loss(u, p, n)[1]
    mda = 0.5 * (mda_loss(u_rows) + mda_loss(p_rows))
    msa = 0.5 * (multi_msa_loss(u_rows) + multi_msa_loss(p_rows))
    assert parts["mda"].item() == pytest.approx(mda.item(), rel=1e-5)
    assert parts["msa"].item() == pytest.approx(msa.item(), rel=1e-5)
    # random theta: w_d = sigmoid(theta_0 - theta_1), w_a = 1 - w_d, per
    # node, independent of the preferences
    with torch.no_grad():
        model.user_tradeoff.weight.normal_()
        model.item_tradeoff.weight.normal_()
    parts = model.loss(u, p, n)[1]
    mda = msa = 0.0
    for side, rows, index in (("user", u_rows, u), ("item", p_rows, p)):
        theta = getattr(model, f"{side}_tradeoff").weight.detach()[index]
        w_d = torch.sigmoid(theta[:, 0] - theta[:, 1])
        cos = F.cosine_similarity(rows["image"], rows["text"], dim=-1)
        mda = mda + (w_d * cos.abs()).mean()
        msa = msa + info_nce_by_hand(rows["image"], rows["text"], 0.2,
                                     1 - w_d, symmetric=True)
    assert parts["mda"].item() == pytest.approx(mda.item(), rel=1e-5)
    assert parts["msa"].item() == pytest.approx(msa.item(), rel=1e-5)


def test_variant_a_preference_by_name(synthetic_graphs):
    from mde_pyg.losses import mda_loss
    u, p, n = batch(synthetic_graphs)
    names = MDE(synthetic_graphs).modalities
    weights = {names[0]: 0.8, names[1]: 0.2}
    torch.manual_seed(0)
    by_name = MDE(synthetic_graphs, tradeoff="global", lambda_1=1.0,
                  global_preference=dict(reversed(weights.items())))
    torch.manual_seed(0)
    by_order = MDE(synthetic_graphs, tradeoff="global", lambda_1=1.0,
                   global_preference=[0.8, 0.2])
    assert torch.equal(by_name.item_fusion.fixed, by_order.item_fusion.fixed)
    parts = by_name.loss(u, p, n)[1]
    assert parts["mda"] == by_order.loss(u, p, n)[1]["mda"]
    # every node's gap is |0.8 - 0.2|: MDA is 0.6 x the unweighted term
    users, items = by_name.modality_embedding()
    plain = mda_loss({m: x[u] for m, x in users.items()}) + mda_loss(
        {m: x[p] for m, x in items.items()})
    assert parts["mda"].item() == pytest.approx(0.6 * plain.item(), rel=1e-5)
    # equal preferences: no gap, no MDA term
    equal = MDE(synthetic_graphs, tradeoff="global", lambda_1=1.0)
    assert equal.loss(u, p, n)[1]["mda"].item() == 0.0
    with pytest.raises(ValueError, match="must name each modality"):
        MDE(synthetic_graphs, tradeoff="global",
            global_preference={names[0]: 1.0})
    with pytest.raises(ValueError, match="with tradeoff='node' the"):
        MDE(synthetic_graphs, global_preference=[0.5, 0.5])


def test_needs_two_modalities(synthetic_graphs):
    data = synthetic_graphs.clone()
    del data["item"].x_text
    with pytest.raises(ValueError, match="at least two modalities"):
        MDE(data)


def test_training_reduces_loss_and_learns_preferences():
    from mde_pyg.data import SyntheticMultiModal
    from mde_pyg.transforms import MultiModalGraphs

    data = SyntheticMultiModal(num_users=150, num_items=100,
                               interactions_per_user=15, seed=1,
                               pre_transform=MultiModalGraphs(10, 5))[0]
    torch.manual_seed(0)
    model = build_model("mde", data, embedding_dim=16, lambda_1=0.1,
                        lambda_2=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(200):
        u, p, n = batch(data, 256, seed=step)
        total, parts = model.loss(u, p, n)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(parts["bpr"].item())
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    learned = model.user_fusion.preferences().detach()[:, 0]
    planted = data["user"].preference[:, 0]
    strong = (planted - 0.5).abs() > 0.3
    # Users whose planted taste favours one modality move off uniform
    # towards it more than users with balanced tastes.
    moved = (learned - 0.5).abs()
    assert moved[strong].mean() > moved[~strong].mean()
    corr = torch.corrcoef(torch.stack([learned[strong], planted[strong]]))
    assert corr[0, 1] > 0.3


def test_unique_nodes(synthetic_graphs):
    from mde_pyg.losses import mda_loss, multi_msa_loss
    torch.manual_seed(0)
    model = MDE(synthetic_graphs, unique_nodes=True, lambda_1=1.0,
                lambda_2=1.0)
    # repeated users and items in the batch
    u, p, n = (torch.tensor([1, 1, 2, 3, 1]), torch.tensor([4, 4, 5, 4, 6]),
               torch.tensor([7, 8, 9, 10, 11]))
    parts = model.loss(u, p, n)[1]
    users, items = model.modality_embedding()
    expected_mda = expected_msa = 0.0
    for side, full, index in (("user", users, torch.tensor([1, 2, 3])),
                              ("item", items, torch.tensor([4, 5, 6]))):
        rows = {m: x[index] for m, x in full.items()}
        w_d, w_a = model.tradeoff(
            getattr(model, f"{side}_fusion").preferences(index))
        expected_mda = expected_mda + mda_loss(rows, w_d)
        expected_msa = expected_msa + multi_msa_loss(rows, w_a, 0.2)
    assert parts["mda"].item() == pytest.approx(expected_mda.item(), rel=1e-5)
    assert parts["msa"].item() == pytest.approx(expected_msa.item(), rel=1e-5)
    # the batch rows otherwise: the repeats count, as their own negatives
    model.unique_nodes = False
    assert model.loss(u, p, n)[1]["msa"].item() != pytest.approx(
        expected_msa.item(), rel=1e-3)


def three_modality_data(data):
    """``data`` with a third modality ``audio`` and its kNN graph."""
    from mde_pyg.transforms import ItemKNNGraph

    data = data.clone()
    gen = torch.Generator().manual_seed(3)
    data["item"].x_audio = torch.randn(data["item"].num_nodes, 6,
                                       generator=gen)
    return ItemKNNGraph(4, modalities=["audio"])(data)


def test_multi_msa_three_modalities_is_mean_over_pairs():
    from mde_pyg.losses import msa_loss, multi_msa_loss

    gen = torch.Generator().manual_seed(0)
    x = {m: torch.randn(7, 5, generator=gen) for m in ("a", "b", "c")}
    weight = torch.rand(7, generator=gen)
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    for symmetric in (True, False):
        got = multi_msa_loss(x, weight, 0.5, symmetric)
        by_hand = sum(info_nce_by_hand(x[i], x[j], 0.5, weight, symmetric)
                      for i, j in pairs) / 3
        pairwise = sum(msa_loss(x[i], x[j], weight, 0.5, symmetric)
                       for i, j in pairs) / 3
        assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)
        assert got.item() == pytest.approx(pairwise.item(), rel=1e-5)


def test_three_modalities_loss_terms(synthetic_graphs):
    data = three_modality_data(synthetic_graphs)
    u, p, n = batch(data)
    torch.manual_seed(0)
    model = MDE(data, embedding_dim=8, lambda_1=0.3, lambda_2=0.7)
    assert model.modalities == ["image", "text", "audio"]
    with torch.no_grad():
        model.user_fusion.weight.normal_()
        model.item_fusion.weight.normal_()
    parts = model.loss(u, p, n)[1]
    users, items = model.modality_embedding()
    assert model.get_embedding()[1].shape == (40, 24)
    pairs = [("image", "text"), ("image", "audio"), ("text", "audio")]
    mda = msa = 0.0
    for fusion, full, index in ((model.user_fusion, users, u),
                                (model.item_fusion, items, p)):
        w = fusion.weight.detach()[index]
        pref = w.exp() / w.exp().sum(1, keepdim=True)
        # delta: mean pairwise |P_m - P_m'| over the 3 pairs
        names = model.modalities
        delta = sum((pref[:, names.index(a)] - pref[:, names.index(b)]).abs()
                    for a, b in pairs) / 3
        rows = {m: x[index] for m, x in full.items()}
        cos = sum(F.cosine_similarity(rows[a], rows[b], dim=-1).abs()
                  for a, b in pairs) / 3
        mda = mda + (delta * cos).mean()
        msa = msa + sum(info_nce_by_hand(rows[a], rows[b], 0.2, 1 - delta,
                                         symmetric=True)
                        for a, b in pairs) / 3
    assert parts["mda"].item() == pytest.approx(0.3 * mda.item(), rel=1e-5)
    assert parts["msa"].item() == pytest.approx(0.7 * msa.item(), rel=1e-5)


def test_xavier_initialisation(synthetic_graphs):
    # METHOD.md §1: Xavier-uniform user matrices U_m and projection layers,
    # zero biases
    import math

    torch.manual_seed(0)
    model = MDE(synthetic_graphs, embedding_dim=8)
    linears = [mod for mod in model.encoder.projection.modules()
               if isinstance(mod, torch.nn.Linear)]
    assert linears
    for w in list(model.encoder.user.values()) + [m.weight for m in linears]:
        fan_out, fan_in = w.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        # the variance of U(-b, b) is b^2 / 3
        assert abs(w.var().item() / (bound ** 2 / 3) - 1) < 0.25
    for mod in linears:
        assert torch.all(mod.bias == 0)


def test_loss_carries_no_tradeoff_gradient_into_preferences(synthetic_graphs):
    # MDA and MSA read the rows before fusion: their only path into the
    # preferences P is w_d / w_a, which detach_tradeoff=True cuts
    user, pos, neg = (torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4]),
                      torch.tensor([5, 6, 7, 8]))

    def preference_grad(lam, detach):
        torch.manual_seed(0)
        model = MDE(synthetic_graphs, embedding_dim=8, lambda_1=lam,
                    lambda_2=lam, detach_tradeoff=detach)
        with torch.no_grad():
            model.user_fusion.weight.normal_()
        total = model.loss(user, pos, neg)[0]
        return torch.autograd.grad(total, model.user_fusion.weight)[0]

    assert torch.allclose(preference_grad(1.0, True),
                          preference_grad(0.0, True), atol=1e-7)
    assert not torch.allclose(preference_grad(1.0, False),
                              preference_grad(0.0, False), atol=1e-7)


def test_variant_b_weights_drift_toward_the_smaller_term(synthetic_graphs):
    # Variant B's logits are trained only through lambda_1 w_d |cos| +
    # lambda_2 w_a InfoNCE, so the softmax moves weight to the smaller
    # term: InfoNCE (about log B) dwarfs |cos| (below 1), and w_a falls
    # from 0.5 toward 0 (documented in MDE's ``tradeoff`` argument)
    from model_helpers import train

    torch.manual_seed(0)
    model = MDE(synthetic_graphs, embedding_dim=16, tradeoff="learned")
    for side in ("user", "item"):
        assert torch.equal(getattr(model, f"{side}_tradeoff")()[1],
                           torch.full((getattr(model, f"num_{side}s"),), 0.5))
    train(model, synthetic_graphs, steps=150)
    for side in ("user", "item"):
        w_d, w_a = getattr(model, f"{side}_tradeoff")()
        assert torch.allclose(w_d + w_a, torch.ones_like(w_a))
        assert w_a.mean() < 0.25
