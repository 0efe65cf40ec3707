import math

import pytest
import torch
import torch.nn.functional as F
from device_params import DEVICES

from mde_pyg.losses import (
    BPRLoss,
    MDALoss,
    MSALoss,
    bpr_loss,
    hypergraph_contrastive_loss,
    inner_product_info_nce,
    l2_reg,
    mda_loss,
    msa_loss,
)


def test_bpr_by_hand():
    pos, neg = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])
    expected = -(math.log(1 / (1 + math.exp(-1)))
                 + math.log(1 / (1 + math.exp(3)))) / 2
    assert bpr_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    assert BPRLoss()(pos, neg).item() == pytest.approx(expected, rel=1e-6)


def test_l2_reg_by_hand():
    a = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # 6 / 2 rows
    b = torch.tensor([[3.0]])  # 9 / 1 row
    assert l2_reg(a, b).item() == pytest.approx(3.0 + 9.0)


def test_mda_by_hand():
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    cos = [0.0, 1 / math.sqrt(2), -1.0]
    w = torch.tensor([0.5, 0.2, 0.9])
    expected = sum(wi * abs(c) for wi, c in zip(w.tolist(), cos)) / 3
    assert mda_loss({"v": v, "t": t}, w).item() == pytest.approx(expected)
    assert mda_loss([v, t]).item() == pytest.approx(
        sum(abs(c) for c in cos) / 3)
    assert MDALoss(0.1)({"v": v, "t": t}, w).item() == pytest.approx(
        0.1 * expected)
    # The Eq. 6 form: |sum_d W_d * xhat_v * xhat_t| with W_d broadcast.
    vh, th = torch.nn.functional.normalize(v), torch.nn.functional.normalize(t)
    eq6 = (w[:, None] * vh * th).sum(1).abs().mean()
    assert mda_loss({"v": v, "t": t}, w).item() == pytest.approx(eq6.item())


def test_mda_three_modalities_is_pairwise_mean():
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 4, 5)
    pairs = [mda_loss([a, b]), mda_loss([a, c]), mda_loss([b, c])]
    assert mda_loss([a, b, c]).item() == pytest.approx(
        sum(p.item() for p in pairs) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="at least two modalities"):
        mda_loss([a])


def msa_reference(a, b, w, tau, symmetric):
    n = a.size(0)
    total = 0.0
    for i in range(n):
        def term(x, y, i=i):
            logits = [torch.cosine_similarity(x[i], y[j], 0).item() / tau
                      for j in range(n)]
            return -(logits[i] - math.log(sum(math.exp(z) for z in logits)))
        loss = term(a, b)
        if symmetric:
            loss = 0.5 * (loss + term(b, a))
        total += w[i] * loss
    return total / n


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tau", [0.2, 0.5, 0.01])
def test_msa_by_hand(symmetric, tau):
    torch.manual_seed(1)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    w = torch.tensor([0.1, 0.4, 0.7, 1.0])
    got = msa_loss(a, b, w, tau=tau, symmetric=symmetric).item()
    assert got == pytest.approx(msa_reference(a, b, w.tolist(), tau,
                                              symmetric), rel=1e-5)
    module = MSALoss(0.5, tau, symmetric)({"v": a, "t": b}, w).item()
    assert module == pytest.approx(0.5 * got, rel=1e-6)


def test_msa_three_modalities_is_pairwise_mean():
    # MSALoss and multi_msa_loss average msa_loss over the pairs (a, b),
    # (a, c), (b, c), each with the same node weights and temperature
    from mde_pyg.losses import multi_msa_loss

    torch.manual_seed(4)
    a, b, c = torch.randn(3, 5, 4)
    w = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])
    for symmetric in (True, False):
        pairs = [msa_loss(x, y, w, 0.3, symmetric).item()
                 for x, y in ((a, b), (a, c), (b, c))]
        expected = sum(pairs) / 3
        assert multi_msa_loss([a, b, c], w, 0.3, symmetric).item() == \
            pytest.approx(expected, rel=1e-6)
        module = MSALoss(0.5, 0.3, symmetric)({"v": a, "t": b, "a": c}, w)
        assert module.item() == pytest.approx(0.5 * expected, rel=1e-6)


def test_msa_errors_and_gradients():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3)
    with pytest.raises(ValueError, match="'tau' must be positive"):
        msa_loss(a, b, tau=0.0)
    with pytest.raises(ValueError, match="'weight' must have shape"):
        msa_loss(a, b, weight=torch.ones(3))
    msa_loss(a, b).backward()
    assert a.grad.abs().sum() > 0


def test_embedding_bpr_is_bpr_of_inner_products():
    from mde_pyg.losses import embedding_bpr_loss

    u = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [3.0, 1.0]])  # scores 1, 1
    n = torch.tensor([[0.0, 1.0], [0.0, -2.0]])  # scores 2, -2
    expected = (math.log(1 + math.exp(1)) + math.log(1 + math.exp(-3))) / 2
    assert embedding_bpr_loss(u, p, n).item() == pytest.approx(expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tau", [0.2, 0.5, 0.025])  # 0.025: bound 40
@pytest.mark.parametrize("block_rows", [None, 2, 4])  # 4: blocks of 4 + 2
def test_info_nce_gradients_match_autograd_logsumexp(symmetric, tau, device,
                                                     block_rows, monkeypatch):
    from mde_pyg import losses
    from mde_pyg.losses import info_nce

    if block_rows is not None:  # the logits in blocks of rows of b
        monkeypatch.setitem(losses._BLOCK_ELEMENTS, device, 6 * block_rows)

    def reference(a, b, w):  # plain autograd through logsumexp
        a = torch.nn.functional.normalize(a, dim=-1) / tau
        b = torch.nn.functional.normalize(b, dim=-1)
        logits, pos = a @ b.t(), (a * b).sum(-1)
        loss = logits.logsumexp(1) - pos
        if symmetric:
            loss = 0.5 * (loss + logits.logsumexp(0) - pos)
        return (w * loss).mean()

    torch.manual_seed(2)
    kw = dict(dtype=torch.float64, device=device, requires_grad=True)
    a, b, w = torch.randn(6, 5, **kw), torch.randn(6, 5, **kw), torch.rand(
        6, **kw)
    assert losses._block_rows(a, b) == (block_rows or 6)
    got = info_nce(a, b, tau, w, symmetric)
    want = reference(a, b, w)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for x, gx in zip((a, b, w), torch.autograd.grad(got, (a, b, w))):
        assert torch.allclose(gx, torch.autograd.grad(want, x,
                                                      retain_graph=True)[0],
                              atol=1e-12), x.shape
    assert torch.autograd.gradcheck(
        lambda x, y: info_nce(x, y, tau, None, symmetric), (a, b))
    if tau < 0.2:  # 1/tau scales bf16's rounding of the normalised rows
        return
    # bf16 inputs (autocast) get bf16 gradients computed in float32: the
    # float64 gradient at the same (rounded) inputs, up to bf16 rounding.
    a16 = a.detach().to(torch.bfloat16).requires_grad_()
    b16 = b.detach().to(torch.bfloat16)
    info_nce(a16, b16, tau).backward()
    assert a16.grad.dtype == torch.bfloat16
    a64 = a16.detach().double().requires_grad_()
    info_nce(a64, b16.double(), tau).backward()
    assert torch.allclose(a16.grad.double(), a64.grad, rtol=2e-2,
                          atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tau", [0.2, 0.01])  # 0.01: bound 100 > 40
def test_info_nce_of_half_inputs_is_float32_on_both_paths(dtype, tau):
    # the blocked path (bound <= 40) and the plain logsumexp beyond it
    # both compute in float32: the value is that of float64 at the same
    # (rounded) inputs, and its dtype does not move with tau
    from mde_pyg.losses import info_nce

    torch.manual_seed(0)
    a, b = torch.randn(6, 5).to(dtype), torch.randn(6, 5).to(dtype)
    got = info_nce(a, b, tau)
    want = info_nce(a.double(), b.double(), tau)
    assert got.dtype == torch.float32
    # up to the rounding of normalize, which runs in the input's precision
    assert got.item() == pytest.approx(want.item(), rel=1e-2)
    # at the same rounded rows (normalize and 1/tau in the input's dtype)
    # every term, the positive one too, is float32: float64's value to
    # float32 rounding (a half-precision positive term errs by ~1e-4)
    rows_a = (F.normalize(a, dim=-1) / tau).double()
    rows_b = F.normalize(b, dim=-1).double()
    logits, pos = rows_a @ rows_b.t(), (rows_a * rows_b).sum(-1)
    for symmetric in (True, False):
        loss = logits.logsumexp(1) - pos
        if symmetric:
            loss = 0.5 * (loss + logits.logsumexp(0) - pos)
        assert info_nce(a, b, tau, symmetric=symmetric).item() == \
            pytest.approx(loss.mean().item(), rel=1e-6, abs=0)


@pytest.mark.parametrize("used", ["row", "col", "both"])
@pytest.mark.parametrize("block_rows", [None, 3])  # 3: blocks of 3 + 3 + 1
def test_bounded_logsumexp_gradients_of_either_direction(used, block_rows,
                                                         monkeypatch):
    # rectangular [5, 7] logits; only the sums a loss uses get a gradient
    # (both: the backward's one scaled block M = S * (r_i + c_j))
    from mde_pyg import losses

    if block_rows is not None:
        monkeypatch.setitem(losses._BLOCK_ELEMENTS, "cpu", 5 * block_rows)
    torch.manual_seed(3)
    kw = dict(dtype=torch.float64, requires_grad=True)
    a, b = torch.randn(5, 4, **kw), torch.randn(7, 4, **kw)
    g_row, g_col = torch.rand(5, dtype=torch.float64), torch.rand(
        7, dtype=torch.float64)
    bound = float((a @ b.t()).detach().abs().max()) + 1.0

    def objective(row, col):
        return ((g_row * row).sum() if used != "col" else 0.0) + (
            (g_col * col).sum() if used != "row" else 0.0)

    row, col = losses._logsumexp_of_product(a, b, bound, columns=True)
    got = torch.autograd.grad(objective(row, col), (a, b))
    logits = a @ b.t()
    want = torch.autograd.grad(
        objective(logits.logsumexp(1), logits.logsumexp(0)), (a, b))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_embedding_norm_reg_by_hand():
    from mde_pyg.losses import embedding_norm_reg

    u = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # Frobenius norm 5
    i = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # sqrt(25) = 5
    # (5 + 5) / 2 rows, norms not squared (MMRec's EmbLoss)
    assert embedding_norm_reg(u, i).item() == pytest.approx(5.0)
    assert embedding_norm_reg(2 * u, i).item() == pytest.approx(7.5)
    # B is the row count of the last tensor (BM3: all items), not the first
    items = torch.cat([i, torch.zeros(2, 2)])  # norm 5, 4 rows
    assert embedding_norm_reg(u, items).item() == pytest.approx(10 / 4)
    assert embedding_norm_reg(items, u).item() == pytest.approx(10 / 2)
    with pytest.raises(ValueError, match="at least one"):
        embedding_norm_reg()


def test_inner_product_info_nce_formula():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    logits = a @ b.t() / 0.5
    expected = -torch.stack([
        logits[n, n] - logits[n].exp().sum().log() for n in range(6)]).mean()
    assert inner_product_info_nce(a, b, 0.5).item() == pytest.approx(
        expected.item(), rel=1e-6)
    # gradients equal those of the formula written out
    a.requires_grad_(), b.requires_grad_()
    inner_product_info_nce(a, b, 0.5).backward()
    got = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    logits = a @ b.t() / 0.5
    (logits.logsumexp(1) - logits.diagonal()).mean().backward()
    torch.testing.assert_close(got, (a.grad, b.grad))
    a, b = a.detach(), b.detach()
    # unnormalised: scaling the rows changes the loss
    assert inner_product_info_nce(2 * a, b, 0.5).item() != pytest.approx(
        expected.item(), rel=1e-3)
    with pytest.raises(ValueError, match="'tau'"):
        inner_product_info_nce(a, b, 0.0)


def naive_hcl(a, p, c, tau):
    a, p, c = (F.normalize(t, dim=-1) for t in (a, p, c))
    num = torch.exp((a * p).sum(-1) / tau)
    den = torch.exp(a @ c.t() / tau).sum(-1)
    return -torch.log(num / den).sum()


@pytest.mark.parametrize("tau", [0.2, 0.01])
@pytest.mark.parametrize("block_rows", [None, 3])  # 7 blocks, the last 2
def test_hypergraph_contrastive_loss_formula(tau, block_rows, monkeypatch):
    from mde_pyg import losses

    if block_rows is not None:
        monkeypatch.setitem(losses._BLOCK_ELEMENTS, "cpu", 6 * block_rows)
    torch.manual_seed(0)
    a = torch.randn(6, 5, requires_grad=True)
    p = torch.randn(6, 5, requires_grad=True)
    c = torch.randn(20, 5, requires_grad=True)
    assert losses._block_rows(a, c) == (block_rows or 20)
    loss = hypergraph_contrastive_loss(a, p, c, tau)
    grads = torch.autograd.grad(loss, (a, p, c))
    expected = naive_hcl(a.double(), p.double(), c.double(), tau)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for g, e in zip(grads, torch.autograd.grad(expected, (a, p, c))):
        assert torch.allclose(g, e.float(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="'tau'"):
        hypergraph_contrastive_loss(a, p, c, 0.0)


def test_info_nce_float32_at_the_largest_bound():
    """At tau = 1/40 the logits reach +-40: exp stays finite and normal in
    float32, and the loss and gradients match float64."""
    from mde_pyg.losses import info_nce

    torch.manual_seed(0)
    a = torch.randn(64, 8)
    b = torch.cat([a[:32], -a[32:]])  # cosines +1 and -1: logits +-40
    a32, b32 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a64, b64 = (a.double().requires_grad_(), b.double().requires_grad_())
    got, want = info_nce(a32, b32, 0.025), info_nce(a64, b64, 0.025)
    got.backward()
    want.backward()
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.allclose(a32.grad.double(), a64.grad, atol=1e-5)
    assert torch.allclose(b32.grad.double(), b64.grad, atol=1e-5)
