import pytest
import torch
from model_helpers import assert_fused_matches_edge_index

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
    from mde_pyg.losses import bpr_loss, l2_reg, mda_loss, msa_loss
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
    reg = 0.01 * l2_reg(model.encoder.user["image"][u],
                        model.encoder.user["text"][u],
                        model.user_fusion.weight[u],
                        model.item_fusion.weight[p],
                        model.item_fusion.weight[n])
    for key, value in (("bpr", bpr), ("mda", mda), ("msa", msa),
                       ("reg", reg)):
        assert parts[key].item() == pytest.approx(value.item(), rel=1e-4)
    assert total.item() == pytest.approx((bpr + mda + msa + reg).item(),
                                         rel=1e-4)


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
    u, p, n = batch(synthetic_graphs)
    parts = MDE(synthetic_graphs, use_mda=False).loss(u, p, n)[1]
    assert "mda" not in parts and "msa" in parts
    parts = MDE(synthetic_graphs, use_msa=False).loss(u, p, n)[1]
    assert "msa" not in parts and "mda" in parts
    # w/o NLT: unit weights, so the MDA term is the plain mean |cos|.
    torch.manual_seed(0)
    model = MDE(synthetic_graphs, use_nlt=False, lambda_1=1.0)
    from mde_pyg.losses import mda_loss
    users, items = model.modality_embedding()
    expected = mda_loss({m: x[u] for m, x in users.items()}) + mda_loss(
        {m: x[p] for m, x in items.items()})
    assert model.loss(u, p, n)[1]["mda"].item() == pytest.approx(
        expected.item(), rel=1e-5)


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
    with pytest.raises(ValueError, match="'tradeoff' must be one of"):
        MDE(synthetic_graphs, tradeoff="nope")
    # built directly (not through build_model), the constructor checks too
    with pytest.raises(ValueError, match="'tau' must be > 0, got 0"):
        MDE(synthetic_graphs, tau=0)
    with pytest.raises(ValueError, match="'lambda_2' must be >= 0, got -1"):
        MDE(synthetic_graphs, lambda_2=-1)


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
