import math

import pytest
import torch
import torch.nn.functional as F

from mde_pyg.losses import (
    NegL2Distance,
    SoloSimLoss,
    club_nll,
    club_upper_bound,
    cosine_prediction_loss,
    gaussian_log_likelihood,
    neg_l2_distance,
    solo_sim_loss,
)


def test_solo_sim_loss_by_hand():
    z_t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    z_v = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, -1.0]])
    tau = 0.5
    unit_t = [[a / math.hypot(*r) for a in r] for r in z_t.tolist()]
    unit_v = [[a / math.hypot(*r) for a in r] for r in z_v.tolist()]
    expected = 0.0
    for i, a in enumerate(unit_t):
        logits = [sum(x * y for x, y in zip(a, b)) / tau for b in unit_v]
        expected -= logits[i] - math.log(sum(math.exp(v) for v in logits))
    expected /= 3
    assert solo_sim_loss(z_t, z_v, tau).item() == pytest.approx(expected,
                                                                rel=1e-5)
    # One direction only: swapping the views changes the value.
    assert solo_sim_loss(z_v, z_t, tau).item() != pytest.approx(expected)


def test_solo_sim_module_weight_and_pairs():
    torch.manual_seed(0)
    z = {m: torch.randn(5, 4) for m in ("image", "text", "audio")}
    module = SoloSimLoss(weight=0.5, tau=0.3)
    pairs = [("image", "text"), ("image", "audio"), ("text", "audio")]
    expected = sum(solo_sim_loss(z[a], z[b], 0.3) for a, b in pairs) / 3
    assert module(z).item() == pytest.approx(0.5 * expected.item(), rel=1e-6)
    assert str(module) == "SoloSimLoss(weight=0.5, tau=0.3)"
    with pytest.raises(ValueError, match="at least two modalities"):
        module({"image": z["image"]})


def test_gaussian_log_likelihood_matches_normal():
    torch.manual_seed(0)
    mu, logvar, y = torch.randn(4, 3), torch.randn(4, 3).tanh(), \
        torch.randn(4, 3)
    normal = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    const = 0.5 * math.log(2 * math.pi) * 3
    expected = normal.log_prob(y).sum(-1) + const
    assert torch.allclose(gaussian_log_likelihood(mu, logvar, y), expected,
                          atol=1e-5)


def test_club_upper_bound_by_hand():
    mu = torch.tensor([[0.0], [1.0], [2.0]])
    logvar = torch.zeros(3, 1)
    y = torch.tensor([[0.0], [1.0], [2.0]])
    perm = torch.tensor([2, 0, 1])
    # Positive pairs: log q = 0 each. Negative pairs y[perm] = [2, 0, 1]:
    # -(2-0)^2/2, -(0-1)^2/2, -(1-2)^2/2 -> mean -1.
    bound = club_upper_bound(mu, logvar, y, perm)
    assert bound.item() == pytest.approx(1.0)
    # A negative estimate is clamped to zero unless asked otherwise.
    y_bad = y[perm]
    assert club_upper_bound(mu, logvar, y_bad, torch.tensor([1, 2, 0])
                            ).item() == 0.0
    raw = club_upper_bound(mu, logvar, y_bad, torch.tensor([1, 2, 0]),
                           clamp=False)
    # positives y_bad = [2, 0, 1] against mu: -2, -1/2, -1/2, mean -1; the
    # negatives y_bad[[1, 2, 0]] = [0, 1, 2] match mu: mean 0
    assert raw.item() == pytest.approx(-1.0)
    assert club_nll(mu, logvar, y).item() == pytest.approx(0.0)


def test_neg_l2_distance_is_negative_mse():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    expected = -((a - b) ** 2).mean()
    assert neg_l2_distance(a, b).item() == pytest.approx(expected.item())
    assert neg_l2_distance(a, b).item() == pytest.approx(
        -F.mse_loss(a, b).item())
    module = NegL2Distance(weight=0.006)
    assert module(a, b).item() == pytest.approx(0.006 * expected.item())


def test_cosine_prediction_loss_stops_target_gradient():
    online = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = cosine_prediction_loss(online, target)
    assert loss.item() == pytest.approx(1.0 - 0.5)
    loss.backward()
    assert target.grad is None
    assert online.grad is not None


def test_cosine_prediction_loss_equals_torch_cosine_similarity():
    gen = torch.Generator().manual_seed(0)
    online = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    target = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    online[2], target[5] = 0.0, 0.0  # norms clamped at 1e-8
    a, b = online.clone().requires_grad_(), online.clone().requires_grad_()
    got = cosine_prediction_loss(a, target)
    want = 1.0 - torch.nn.functional.cosine_similarity(b, target).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad)
