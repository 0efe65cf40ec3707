import math

import pytest
import torch

from mde_pyg.nn import (
    LearnableTradeoff,
    NodeLevelTradeoff,
    PreferenceFusion,
    preference_gap,
)


def test_fusion_concat_and_sum():
    fusion = PreferenceFusion(3, ["v", "t"])
    x = {"v": torch.ones(3, 2), "t": 2 * torch.ones(3, 2)}
    out, pref = fusion(x)
    assert torch.allclose(pref, torch.full((3, 2), 0.5))
    assert torch.allclose(out, torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 3))
    with torch.no_grad():
        fusion.weight[1] = torch.tensor([0.0, 1.0])
    out, pref = fusion({m: v[[1]] for m, v in x.items()}, torch.tensor([1]))
    p = torch.tensor(1.0).exp() / (1 + torch.tensor(1.0).exp())
    assert torch.allclose(pref, torch.stack([1 - p, p]).view(1, 2))
    assert torch.allclose(out, torch.cat([(1 - p).repeat(2),
                                          2 * p.repeat(2)]).view(1, 4))
    assert out.shape == (1, 4)
    summed, _ = PreferenceFusion(3, ["v", "t"], mode="sum")(x)
    assert torch.allclose(summed, torch.full((3, 2), 1.5))
    # rows that are not the nodes weighed: a batch without its ids
    with pytest.raises(ValueError, match=r"x_dict\['v'\] has shape \(2, 2\), "
                       r"but the fusion weighs all 3 nodes \(3\).*'index'"):
        fusion({m: v[:2] for m, v in x.items()})
    with pytest.raises(ValueError, match=r"weighs the batch's nodes \(1\)"):
        fusion(x, torch.tensor([1]))
    with pytest.raises(IndexError, match=r"PreferenceFusion: 'index' names "
                       r"nodes outside \[0, 3\) \(the nodes it was built "
                       r"for\), e\.g\. 9"):
        fusion({m: v[:2] for m, v in x.items()}, torch.tensor([0, 9]))


def test_fusion_fixed_and_errors():
    fusion = PreferenceFusion(4, ["v", "t"], fixed_preference=[0.2, 0.8])
    assert fusion.weight is None and not list(fusion.parameters())
    _, pref = fusion({"v": torch.ones(4, 1), "t": torch.ones(4, 1)})
    assert torch.allclose(pref, torch.tensor([[0.2, 0.8]] * 4))
    with pytest.raises(ValueError, match="summing to 1"):
        PreferenceFusion(4, ["v", "t"], fixed_preference=[0.5, 0.6])
    # a batch of nodes gets the fixed preference on each of its rows
    x = {"v": torch.tensor([[1.0], [2.0]]), "t": torch.tensor([[3.0], [4.0]])}
    out, pref = fusion(x, torch.tensor([3, 0]))
    assert torch.allclose(pref, torch.tensor([[0.2, 0.8]] * 2))
    assert torch.allclose(out, torch.tensor([[0.2, 2.4], [0.4, 3.2]]))
    # the sum to 1 is checked to rounding only (1e-5), not to 1e-2
    with pytest.raises(ValueError, match="summing to 1"):
        PreferenceFusion(4, ["v", "t"], fixed_preference=[0.5, 0.51])
    PreferenceFusion(4, ["v", "t"], fixed_preference=[0.3, 0.7 + 1e-7])
    with pytest.raises(ValueError, match="lacks the modalities"):
        PreferenceFusion(4, ["v", "t"])({"v": torch.ones(4, 1)})


def test_preference_gap_two_and_three():
    pref = torch.tensor([[0.7, 0.3], [0.5, 0.5]])
    assert torch.allclose(preference_gap(pref), torch.tensor([0.4, 0.0]))
    pref3 = torch.tensor([[0.6, 0.3, 0.1]])
    # pairs: .3, .5, .2 -> mean 1/3
    assert torch.allclose(preference_gap(pref3), torch.tensor([1 / 3]))
    with pytest.raises(ValueError, match="at least two modalities"):
        preference_gap(torch.ones(2, 1))
    # absolute differences: the order of the columns does not matter
    assert torch.allclose(preference_gap(pref.flip(1)),
                          torch.tensor([0.4, 0.0]))
    assert torch.allclose(preference_gap(torch.tensor([[0.1, 0.3, 0.6],
                                                       [0.3, 0.1, 0.6]])),
                          torch.tensor([1 / 3, 1 / 3]))


def test_node_level_tradeoff_detach():
    # Eq. 8: w_d = delta = |P_v - P_t|, w_a = 1 - delta. For logits
    # [1, 0], P = [sigmoid(1), sigmoid(-1)], so delta = 2 sigmoid(1) - 1
    # = tanh(1/2) = 0.4621172.
    logits = torch.tensor([[1.0, 0.0]], requires_grad=True)
    w_d, w_a = NodeLevelTradeoff(detach=True)(logits.softmax(-1))
    assert w_d.shape == w_a.shape == (1,)
    assert w_d.item() == pytest.approx(0.4621172, abs=1e-6)
    assert w_a.item() == pytest.approx(1 - 0.4621172, abs=1e-6)
    assert not w_d.requires_grad and not w_a.requires_grad
    w_d, w_a = NodeLevelTradeoff(detach=False)(logits.softmax(-1))
    assert w_d.item() == pytest.approx(0.4621172, abs=1e-6)
    w_d.sum().backward()
    # d delta / d l_0 = 2 sigmoid'(1) = 2 sigmoid(1) sigmoid(-1) = 0.3932239
    # = -d delta / d l_1
    assert torch.allclose(logits.grad, torch.tensor([[0.3932239,
                                                      -0.3932239]]),
                          atol=1e-6)


@pytest.mark.parametrize("pref, row", [
    (torch.tensor([[0.5, 0.5], [1.0, 0.0], [2.0, -1.0]]), 2),  # negative
    (torch.tensor([[0.3, 0.7], [0.9, 0.9]]), 1),  # sums to 1.8
    (torch.tensor([[1.0, 0.0]]).log(), 0),  # log-probabilities, -inf
    (torch.tensor([[0.5, 0.5], [float("nan"), 0.5]]), 1),
])
def test_node_level_tradeoff_refuses_what_is_no_distribution(pref, row):
    # logits would give gaps above 1, so negative alignment weights
    # (1 - delta) that turn MSA into its opposite
    with pytest.raises(ValueError, match=rf"preference row {row} is .*not a "
                       r"distribution over the modalities \(non-negative, "
                       r"summing to 1\); pass softmax-ed preferences"):
        NodeLevelTradeoff()(pref)
    with pytest.raises(ValueError, match=r"must be \[N, M\] .* got shape "
                       r"\(2,\)"):
        NodeLevelTradeoff()(torch.tensor([0.5, 0.5]))


def test_node_level_tradeoff_takes_rounded_distributions():
    # a bf16 or fp16 softmax sums to 1 only to its rounding; a three-way
    # split does not sum to exactly 1 in float32 either
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        pref = logits.to(dtype).softmax(-1)
        w_d, w_a = NodeLevelTradeoff()(pref)
        assert torch.equal(w_d, preference_gap(pref))
        assert torch.equal(w_a, 1.0 - w_d)
    # a fixed preference 1e-5 over 1 is taken, and its weights stay in
    # [0, 1]: the MSA loss refuses a negative node weight
    pref = torch.tensor([[1.000005, 0.0], [0.7, 0.3]])
    w_d, w_a = NodeLevelTradeoff()(pref)
    assert w_d.tolist() == pytest.approx([1.0, 0.4]) and w_d[0] == 1.0
    assert w_a[0] == 0.0


def test_learnable_tradeoff():
    tradeoff = LearnableTradeoff(5)
    w_d, w_a = tradeoff(torch.tensor([0, 3]))
    assert torch.allclose(w_d, torch.full((2,), 0.5))
    (w_d.sum() - w_a.sum()).backward()
    # w_d - w_a = tanh((theta_0 - theta_1) / 2): its gradient is
    # +-2 w_d w_a = +-1/2 on the rows gathered, 0 elsewhere
    assert tradeoff.weight.grad.tolist() == [[0.5, -0.5], [0.0, 0.0],
                                             [0.0, 0.0], [0.5, -0.5],
                                             [0.0, 0.0]]
    # (w_d, w_a) = softmax(theta_n): w_d from column 0, w_a from column 1
    with torch.no_grad():
        tradeoff.weight[2] = torch.tensor([1.0, 0.0])
    w_d, w_a = tradeoff(torch.tensor([2]))
    assert w_d.item() == pytest.approx(1 / (1 + math.exp(-1)))
    assert w_a.item() == pytest.approx(1 / (1 + math.exp(1)))


def test_fusion_widths_per_mode():
    # concat takes modalities of any widths, side by side; sum needs one
    x = {"v": torch.ones(3, 4), "t": 2 * torch.ones(3, 2)}
    out, _ = PreferenceFusion(3, ["v", "t"])(x)
    assert torch.allclose(out, torch.tensor([[0.5] * 4 + [1.0] * 2] * 3))
    with pytest.raises(ValueError, match=r"widths \{'v': 4, 't': 2\}.*"
                       r"mode='concat'"):
        PreferenceFusion(3, ["v", "t"], mode="sum")(x)
    out, _ = PreferenceFusion(3, ["v", "t"], mode="sum")(
        {"v": x["v"][:, :2], "t": x["t"]})
    assert torch.allclose(out, torch.full((3, 2), 1.5))
