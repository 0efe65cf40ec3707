import pytest
import torch
from model_helpers import info_nce_by_hand, train

from mde_pyg.losses import solo_sim_loss
from mde_pyg.models import build_model
from mde_pyg.models.dragon import DRAGON
from mde_pyg.models.sand import SAND
from mde_pyg.nn import split_halves
from mde_pyg.train import Trainer


def split_by_hand(model, data):
    """x'_m = x_m W_m^T + b_m from the split's weights."""
    out = {}
    for m in model.modalities:
        lin = model.sand.splitter.linear[m]
        assert lin.in_features == lin.out_features  # a square map
        out[m] = data["item"][f"x_{m}"].float() @ lin.weight.t() + lin.bias
    return out


def test_backbone_runs_on_split_features(data):
    torch.manual_seed(0)
    model = build_model("sand", data, embedding_dim=8)
    assert isinstance(model, SAND) and isinstance(model, DRAGON)
    assert "user_user" not in model.graphs.names  # authors' default
    user, item = model.get_embedding()
    assert user.shape == (100, 16) and item.shape == (80, 16)
    x_split = split_by_hand(model, data)
    assert {m: x.shape for m, x in x_split.items()} == {
        "image": (80, 32), "text": (80, 16)}
    # A plain DRAGON whose data holds the split features as its raw
    # features, with the same weights, gives the same representations.
    split_data = data.clone()
    for m, x in x_split.items():
        split_data["item"][f"x_{m}"] = x.detach()
    backbone = DRAGON(split_data, embedding_dim=8, use_user_graph=False)
    missing, unexpected = backbone.load_state_dict(model.state_dict(),
                                                   strict=False)
    assert missing == [] and unexpected
    assert all(key.startswith("sand.") for key in unexpected)
    expected = backbone.get_embedding()
    assert torch.allclose(user, expected[0], atol=1e-5)
    assert torch.allclose(item, expected[1], atol=1e-5)
    # ... and differ from a DRAGON on the raw features
    raw = DRAGON(data, embedding_dim=8, use_user_graph=False)
    raw.load_state_dict(model.state_dict(), strict=False)
    assert not torch.allclose(item, raw.get_embedding()[1], atol=1e-3)
    # The split is on the path from features to scores.
    model(torch.tensor([0]), torch.tensor([1])).sum().backward()
    assert model.sand.splitter.linear["text"].weight.grad.abs().sum() > 0
    assert "distance='club'" in str(model)


def club_by_hand(estimator, a, b, perm):
    """max(0, mean_i log q(b_i|a_i) - mean_i log q(b_perm(i)|a_i)), with
    log q(y|x) = sum_k -(y_k - mu_k)^2 / (2 exp(l_k)) - l_k / 2 (the
    constant cancels)."""
    return (log_q_by_hand(estimator, a, b).mean()
            - log_q_by_hand(estimator, a, b[perm]).mean()).clamp(min=0)


def log_q_by_hand(estimator, a, y):
    """log q(y_i|a_i) per row, without the constant: sum_k -(y_k -
    mu_k)^2 / (2 exp(l_k)) - l_k / 2, with mu, l the estimator's heads."""
    mu, logvar = estimator.mu(a), estimator.logvar(a)
    return (-(y - mu).pow(2) / (2 * logvar.exp()) - logvar / 2).sum(-1)


def estimator_nll_by_hand(model, data):
    """Mean over modalities of -mean_i log q(u_i|g_i), with (g, u) the
    mapped generic and unique halves of all items' split features."""
    nll = []
    with torch.no_grad():
        for m, x in split_by_hand(model, data).items():
            half = x.size(1) // 2  # generic half first
            a = model.sand.generic_map[m](x[:, :half])
            b = model.sand.unique_map[m](x[:, half:])
            nll.append(-log_q_by_hand(model.sand.estimator(m), a, b).mean())
    return torch.stack(nll).mean().item()


def test_loss_parts(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=8, alpha=0.5, ureg=0.1)
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    total, parts = model.loss(u, p, n)
    assert set(parts) == {"bpr", "reg", "distance", "solosim"}
    assert parts["distance"].item() >= 0  # a clamped CLUB bound
    # ureg x the mean over modalities of half the CLUB bound of the mapped
    # (generic, unique) halves of all items, one permutation per modality
    torch.manual_seed(5)
    drawn = model.loss(u, p, n)[1]["distance"]
    torch.manual_seed(5)
    x_split = split_by_hand(model, data)
    halves = []
    for m in model.modalities:
        half = x_split[m].size(1) // 2  # generic half first
        gen, uni = x_split[m][:, :half], x_split[m][:, half:]
        a = model.sand.generic_map[m](gen)
        b = model.sand.unique_map[m](uni)
        perm = torch.randperm(80)
        halves.append(0.5 * club_by_hand(model.sand.estimator(m), a, b,
                                         perm))
    distance = 0.1 * (halves[0] + halves[1]) / 2
    assert distance.item() > 0  # not a clamped-to-zero tautology
    assert drawn.item() == pytest.approx(distance.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(parts.values()).item(),
                                         rel=1e-6)
    assert parts["reg"].item() == 0.0  # the authors' SAND has no L2 term
    # SoloSim over all items, text -> image (the authors' direction,
    # whatever the data's order).
    x_split = model.sand.split(model.features)
    z = {m: model.sand.heads[m](split_halves(x_split[m])[0])
         for m in ("image", "text")}
    assert parts["solosim"].item() == pytest.approx(
        0.5 * solo_sim_loss(z["text"], z["image"]).item(), rel=1e-5)


def test_estimator_is_trained_separately(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=8)
    est = list(model.estimator_parameters())
    est_ids = {id(p) for p in est}
    assert len(est) == 8  # one estimator shared by the modalities
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    model.estimator_step(u, p, n).backward()
    for param in model.parameters():
        assert (param.grad is not None) == (id(param) in est_ids)
    model.zero_grad(set_to_none=True)
    model.loss(u, p, n)[0].backward()
    assert model.sand.generic_map["image"].weight.grad is not None


def test_l2_distance_and_batch_scope(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=8, distance="l2", item_scope="batch")
    assert list(model.estimator_parameters()) == []
    u, p, n = torch.tensor([1, 2, 3]), torch.tensor([3, 4, 3]), \
        torch.tensor([5, 6, 7])
    _, parts = model.loss(u, p, n)
    assert parts["distance"].item() <= 0  # -ureg * MSE
    # Over the distinct positive items only: items 3 and 4.
    idx = p.unique()
    x_split = {m: x[idx] for m, x in split_by_hand(model, data).items()}
    dist, z = [], {}
    for m in model.modalities:
        half = x_split[m].size(1) // 2  # generic half first
        gen, uni = x_split[m][:, :half], x_split[m][:, half:]
        a = model.sand.generic_map[m](gen)
        b = model.sand.unique_map[m](uni)
        dist.append(-(a - b).pow(2).mean())
        # the head (BatchNorm in training mode) sees the batch rows only
        z[m] = model.sand.heads[m](gen)
    assert parts["distance"].item() == pytest.approx(
        0.006 * (dist[0] + dist[1]).item() / 2, rel=1e-5)
    # alpha x one-directional InfoNCE, text anchors
    solosim = 0.012 * info_nce_by_hand(z["text"], z["image"], 0.2)
    assert parts["solosim"].item() == pytest.approx(solosim.item(), rel=1e-5)
    assert parts["solosim"].item() == pytest.approx(
        0.012 * solo_sim_loss(z["text"], z["image"]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="item_scope"):
        SAND(data, item_scope="some")
    with pytest.raises(ValueError, match="distance"):
        SAND(data, distance="cosine")


@pytest.mark.parametrize("distance", ["club", "l2"])
def test_loss_decreases(data, distance):
    model = SAND(data, embedding_dim=32, distance=distance)
    before, after = train(model, data)
    assert after < 0.6 * before


def test_trainer_runs_estimator_steps(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=16)
    trainer = Trainer(model, data, lr=1e-2, batch_size=256, max_epochs=2,
                      progress=False)
    est_ids = {id(p) for p in model.estimator_parameters()}
    assert not est_ids & {id(p) for p in trainer.main_parameters}
    # Record, for every estimator step, the value it returns and the
    # CLUB NLL recomputed by hand from the weights at that moment (the
    # estimator optimiser steps after the call), grouped by epoch.
    steps, by_hand = [], []
    estimator_step, on_epoch_start = model.estimator_step, \
        model.on_epoch_start

    def recording_step(user, pos, neg):
        loss = estimator_step(user, pos, neg)
        steps[-1].append(loss.item())
        by_hand[-1].append(estimator_nll_by_hand(model, data))
        return loss

    def new_epoch(epoch):
        steps.append([])
        by_hand.append([])
        on_epoch_start(epoch)

    model.estimator_step, model.on_epoch_start = recording_step, new_epoch
    result = trainer.fit()
    history = result["history"]
    assert "solosim" in history[-1]["parts"]
    num_train = data["user", "rates", "item"].edge_index.size(1)
    assert [len(s) for s in steps] == [-(-num_train // 256)] * 2
    for epoch, entry in enumerate(history):
        # the step's value is the NLL of the estimator's Gaussian ...
        assert steps[epoch] == pytest.approx(by_hand[epoch], rel=1e-5,
                                             abs=1e-6)
        # ... and the history holds its mean over the epoch's steps
        mean = sum(by_hand[epoch]) / len(by_hand[epoch])
        assert entry["parts"]["estimator_loss"] == pytest.approx(
            mean, rel=1e-5, abs=1e-6)
    # the estimator's own optimiser fits q: its NLL falls
    assert history[1]["parts"]["estimator_loss"] < \
        history[0]["parts"]["estimator_loss"]


def _loss_and_grads(model, u, p, n):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same CLUB negatives each time
    total, _ = model.loss(u, p, n)
    total.backward()
    return total.detach(), {name: param.grad.clone() for name, param in
                            model.named_parameters()
                            if param.grad is not None}


def test_estimator_step_split_is_reused_by_loss(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=8, alpha=0.5, ureg=0.1)
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    fresh_loss, fresh_grads = _loss_and_grads(model, u, p, n)
    calls = []
    handle = model.sand.splitter.linear["image"].register_forward_hook(
        lambda *args: calls.append(1))
    model.estimator_step(u, p, n)
    loss, grads = _loss_and_grads(model, u, p, n)
    handle.remove()
    assert len(calls) == 1  # one split of all items for the whole step
    assert torch.equal(loss, fresh_loss)
    assert grads.keys() == fresh_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, fresh_grads[name], atol=1e-7), name


def test_split_cache_is_dropped_when_split_weights_change(data):
    torch.manual_seed(0)
    model = SAND(data, embedding_dim=8, alpha=0.5, ureg=0.1)
    u, p, n = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])
    model.estimator_step(u, p, n)
    with torch.no_grad():  # what an optimiser step does in place
        model.sand.splitter.linear["text"].weight.mul_(2.0)
    loss, _ = _loss_and_grads(model, u, p, n)
    assert model._split_cache is None
    expected, _ = _loss_and_grads(model, u, p, n)  # computed afresh
    assert torch.equal(loss, expected)
    # Nor is a split kept in fp32 reused by a loss under bf16 autocast.
    model.estimator_step(u, p, n)
    key = model._split_cache[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model._split_key() != key
        model.loss(u, p, n)
    assert model._split_cache is None
    # A batch-scoped model never keeps a split.
    batch = SAND(data, embedding_dim=8, item_scope="batch")
    batch.estimator_step(u, p, n)
    assert batch._split_cache is None
