"""Bad input shapes to the losses: a clear error, never a silent
broadcast; same-shape input keeps the formula's value."""

import re

import pytest
import torch
import torch.nn.functional as F

from mde_pyg.losses import (
    BPRLoss,
    MDALoss,
    MSALoss,
    NegL2Distance,
    SoloSimLoss,
    bpr_loss,
    club_nll,
    club_upper_bound,
    cosine_prediction_loss,
    embedding_bpr_loss,
    gaussian_log_likelihood,
    hypergraph_contrastive_loss,
    info_nce,
    inner_product_info_nce,
    mda_loss,
    msa_loss,
    multi_msa_loss,
    neg_l2_distance,
    solo_sim_loss,
)

_GEN = torch.Generator().manual_seed(0)


def _rand(*shape):
    return torch.randn(*shape, generator=_GEN)


def _msg(text: str) -> str:
    return re.escape(text)


# (call, the start of its message: function, argument names, shapes)
MISMATCHED = [
    (lambda: bpr_loss(_rand(4), _rand(4, 1)),
     "bpr_loss: 'pos' has shape (4,) but 'neg' has shape (4, 1); pass two "
     "tensors of the same shape"),
    (lambda: BPRLoss()(_rand(4), _rand(3)),
     "bpr_loss: 'pos' has shape (4,) but 'neg' has shape (3,)"),
    (lambda: embedding_bpr_loss(_rand(4, 3), _rand(4, 3), _rand(1, 3)),
     "embedding_bpr_loss: 'user' has shape (4, 3) but 'neg' has shape "
     "(1, 3)"),
    (lambda: cosine_prediction_loss(_rand(4, 3), _rand(2, 3)),
     "cosine_prediction_loss: 'online' has shape (4, 3) but 'target' has "
     "shape (2, 3)"),
    (lambda: neg_l2_distance(_rand(4, 3), _rand(1, 3)),
     "neg_l2_distance: 'a' has shape (4, 3) but 'b' has shape (1, 3)"),
    (lambda: NegL2Distance()(_rand(4, 3), _rand(4, 1)),
     "neg_l2_distance: 'a' has shape (4, 3) but 'b' has shape (4, 1)"),
    (lambda: info_nce(_rand(4, 3), _rand(5, 3)),
     "info_nce: 'a' has shape (4, 3) but 'b' has shape (5, 3)"),
    (lambda: info_nce(_rand(4, 3), _rand(4, 2), symmetric=False),
     "info_nce: 'a' has shape (4, 3) but 'b' has shape (4, 2)"),
    (lambda: info_nce(_rand(4), _rand(4)),
     "info_nce: 'a' must have 2 dimensions, got shape (4,)"),
    (lambda: inner_product_info_nce(_rand(4, 3), _rand(3, 3)),
     "inner_product_info_nce: 'a' has shape (4, 3) but 'b' has shape "
     "(3, 3)"),
    (lambda: msa_loss(_rand(4, 3), _rand(5, 3)),
     "msa_loss: 'x_a' has shape (4, 3) but 'x_b' has shape (5, 3)"),
    (lambda: solo_sim_loss(_rand(4, 3), _rand(5, 3)),
     "solo_sim_loss: 'z_a' has shape (4, 3) but 'z_b' has shape (5, 3)"),
    (lambda: hypergraph_contrastive_loss(_rand(4, 3), _rand(1, 3),
                                         _rand(6, 3)),
     "hypergraph_contrastive_loss: 'anchor' has shape (4, 3) but "
     "'positive' has shape (1, 3)"),
    (lambda: hypergraph_contrastive_loss(_rand(4, 3), _rand(4, 3),
                                         _rand(6, 2)),
     "hypergraph_contrastive_loss: 'candidates' has shape (6, 2) but "
     "'anchor' has shape (4, 3)"),
    (lambda: gaussian_log_likelihood(_rand(4, 3), _rand(4, 3), _rand(1, 3)),
     "gaussian_log_likelihood: 'mu' has shape (4, 3) but 'y' has shape "
     "(1, 3)"),
    (lambda: club_upper_bound(_rand(4, 3), _rand(4, 3), _rand(1, 3)),
     "club_upper_bound: 'mu' has shape (4, 3) but 'y' has shape (1, 3)"),
    (lambda: club_upper_bound(_rand(3, 2), _rand(3, 2), _rand(3, 2),
                              torch.tensor([1, 0])),
     "club_upper_bound: 'perm' has shape (2,) but 'y' has 3 rows"),
    (lambda: club_nll(_rand(4, 3), _rand(4, 1), _rand(4, 3)),
     "club_nll: 'mu' has shape (4, 3) but 'logvar' has shape (4, 1)"),
    (lambda: mda_loss({"image": _rand(4, 3), "text": _rand(5, 3)}),
     "mda_loss: 'image' has shape (4, 3) but 'text' has shape (5, 3); "
     "pass one tensor per modality in 'x'"),
    (lambda: MDALoss()([_rand(4, 3), _rand(4, 2)]),
     "mda_loss: 'x[0]' has shape (4, 3) but 'x[1]' has shape (4, 2)"),
    (lambda: multi_msa_loss({"v": _rand(4, 3), "t": _rand(3, 3)}),
     "multi_msa_loss: 'v' has shape (4, 3) but 't' has shape (3, 3)"),
    (lambda: MSALoss()({"v": _rand(4), "t": _rand(4)}),
     "multi_msa_loss: 'v' must have 2 dimensions, got shape (4,)"),
    (lambda: mda_loss([_rand(8), _rand(8)]),
     "mda_loss: 'x[0]' must have 2 dimensions, got shape (8,)"),
    (lambda: mda_loss({"v": _rand(2, 4, 3), "t": _rand(2, 4, 3)}),
     "mda_loss: 'v' must have 2 dimensions, got shape (2, 4, 3)"),
    (lambda: SoloSimLoss()({"text": _rand(4, 3), "image": _rand(2, 3)}),
     "SoloSimLoss: 'text' has shape (4, 3) but 'image' has shape (2, 3); "
     "pass one tensor per modality in 'z'"),
]


@pytest.mark.parametrize("call, message", MISMATCHED)
def test_mismatched_shapes_name_the_arguments(call, message):
    with pytest.raises(ValueError, match=_msg(message)):
        call()


EMPTY = [
    (lambda e: bpr_loss(e[:, 0], e[:, 0]), "bpr_loss: 'pos'"),
    (lambda e: mda_loss({"v": e, "t": e}), "mda_loss: 'v'"),
    (lambda e: msa_loss(e, e), "msa_loss: 'x_a'"),
    (lambda e: MDALoss()([e, e]), "mda_loss: 'x[0]'"),
    (lambda e: MSALoss()([e, e]), "multi_msa_loss: 'x[0]'"),
    (lambda e: info_nce(e, e), "info_nce: 'a'"),
    (lambda e: SoloSimLoss()([e, e]), "SoloSimLoss: 'z[0]'"),
]


@pytest.mark.parametrize("call, name", EMPTY)
def test_an_empty_batch_is_refused_not_nan(call, name):
    # a mean over no rows is NaN, which backward spreads to every weight
    with pytest.raises(ValueError, match=_msg(
            f"{name} is an empty batch (shape (0,")):
        call(torch.empty(0, 8))


def test_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="pass two tensors of the same "
                       "shape, one score per"):
        bpr_loss(_rand(4), _rand(4, 1))
    with pytest.raises(ValueError, match=_msg(
            "pass two [B, d] matrices of the same shape, row n of 'b' the "
            "positive of row n of 'a'")):
        inner_product_info_nce(_rand(4, 3), _rand(5, 3))
    with pytest.raises(ValueError, match=_msg(
            "pass a permutation of the 3 row ids, of shape (3,)")):
        club_upper_bound(_rand(3, 2), _rand(3, 2), _rand(3, 2),
                         torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("perm, message", [
    (torch.tensor([0, 1, 1]), "'perm' names row 1 more than once, so it is "
     "not a permutation"),
    (torch.tensor([0, 1, 3]), "'perm' holds ids outside [0, 3)"),
    (torch.tensor([2, -1, 0]), "'perm' holds ids outside [0, 3)"),
    (torch.tensor([2.0, 1.0, 0.0]), "'perm' has dtype torch.float32, not "
     "int64 or int32 row ids"),
    # indexing takes uint8 as a mask and refuses int8 and int16
    (torch.tensor([2, 0, 1], dtype=torch.uint8), "'perm' has dtype "
     "torch.uint8, not int64 or int32 row ids"),
    (torch.tensor([2, 0, 1], dtype=torch.int16), "'perm' has dtype "
     "torch.int16, not int64 or int32 row ids"),
])
def test_club_upper_bound_refuses_a_perm_that_is_no_permutation(perm,
                                                               message):
    # a repeated id would pair a row with itself as a negative (biasing
    # the bound towards 0); -1 would silently take the last row
    with pytest.raises(ValueError, match=_msg(
            f"club_upper_bound: {message}; pass a permutation of the 3 row "
            f"ids, of shape (3,), such as torch.randperm(3)")):
        club_upper_bound(_rand(3, 2), _rand(3, 2), _rand(3, 2), perm)
    # any true permutation, int64 or int32, is taken and pairs row i
    # with row perm[i]: mean log q(y_i | x_i) - mean log q(y_perm(i) | x_i)
    mu, logvar, y = _rand(3, 2), _rand(3, 2), _rand(3, 2)

    def log_q(rows):
        return ((-(rows - mu) ** 2 / logvar.exp() - logvar).sum(-1) / 2)

    want = (log_q(y).mean() - log_q(y[[2, 0, 1]]).mean()).item()
    for ok in (torch.tensor([2, 0, 1]), torch.tensor([2, 0, 1],
                                                     dtype=torch.int32)):
        got = club_upper_bound(mu, logvar, y, ok, clamp=False).item()
        assert got == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_same_shape_values_unchanged():
    a, b, c = _rand(5, 3), _rand(5, 3), _rand(5, 3)
    pos, neg = _rand(5), _rand(5)
    # the formulas of the docstrings, written out
    bpr = -F.logsigmoid(pos - neg).mean()
    assert bpr_loss(pos, neg).item() == pytest.approx(bpr.item(), rel=1e-6)
    assert embedding_bpr_loss(a, b, c).item() == pytest.approx(
        -F.logsigmoid((a * b).sum(-1) - (a * c).sum(-1)).mean().item(),
        rel=1e-6)
    assert neg_l2_distance(a, b).item() == pytest.approx(
        -((a - b) ** 2).mean().item(), rel=1e-6)
    assert cosine_prediction_loss(a, b).item() == pytest.approx(
        1 - F.cosine_similarity(a, b).mean().item(), rel=1e-6)
    logits = (a @ b.t()) / 0.5
    assert inner_product_info_nce(a, b, 0.5).item() == pytest.approx(
        (logits.logsumexp(1) - logits.diag()).mean().item(), rel=1e-5)
    cos = F.normalize(a) @ F.normalize(b).t() / 0.2
    one_way = (cos.logsumexp(1) - cos.diag()).mean()
    assert info_nce(a, b, symmetric=False).item() == pytest.approx(
        one_way.item(), rel=1e-5)
    assert solo_sim_loss(a, b).item() == pytest.approx(one_way.item(),
                                                       rel=1e-5)
    both = 0.5 * (one_way + (cos.logsumexp(0) - cos.diag()).mean())
    assert msa_loss(a, b).item() == pytest.approx(both.item(), rel=1e-5)
    assert mda_loss([a, b]).item() == pytest.approx(
        F.cosine_similarity(a, b).abs().mean().item(), rel=1e-6)
    mu, logvar = a, 0.1 * b
    log_q = (-(c - mu) ** 2 / logvar.exp() - logvar).sum(-1) / 2
    assert torch.allclose(gaussian_log_likelihood(mu, logvar, c), log_q)
    assert club_nll(mu, logvar, c).item() == pytest.approx(
        -log_q.mean().item(), rel=1e-6)
    perm = torch.tensor([4, 3, 2, 1, 0])
    shifted = (-(c[perm] - mu) ** 2 / logvar.exp() - logvar).sum(-1) / 2
    assert club_upper_bound(mu, logvar, c, perm, clamp=False).item() == \
        pytest.approx((log_q.mean() - shifted.mean()).item(), rel=1e-5)
    cand = _rand(7, 3)
    hcl = (F.normalize(a) @ F.normalize(cand).t() / 0.2).logsumexp(1) - (
        F.cosine_similarity(a, b) / 0.2)
    assert hypergraph_contrastive_loss(a, b, cand).item() == pytest.approx(
        hcl.sum().item(), rel=1e-5)
    # same shapes of any rank stay accepted: [B, 1] scores as [B]
    assert bpr_loss(pos[:, None], neg[:, None]).item() == pytest.approx(
        bpr.item(), rel=1e-6)


@pytest.mark.parametrize("module", [MDALoss(1.0), MSALoss(1.0)])
def test_modules_name_node_weight(module):
    a, b = _rand(4, 3), _rand(4, 3)
    name = type(module).__name__
    with pytest.raises(ValueError, match=rf"{name}: 'node_weight' must have "
                       r"shape \(4,\), one weight per node .* got \(3,\)"):
        module({"text": a, "image": b}, node_weight=torch.ones(3))
    # a right-sized weight scales each node's term: weight 2 everywhere
    # doubles the unweighted loss
    assert module([a, b], torch.full((4,), 2.0)).item() == pytest.approx(
        2 * module([a, b]).item(), rel=1e-6)


@pytest.mark.parametrize("cls, per_node", [
    (MDALoss, True), (MSALoss, True), (SoloSimLoss, False),
    (NegL2Distance, False)])
def test_modules_take_one_number_as_weight(cls, per_node):
    # a module's 'weight' is its coefficient (lambda_1, lambda_2, alpha,
    # u_reg): per-node weights there would make the loss a vector
    with pytest.raises(TypeError) as info:
        cls(weight=torch.ones(4))
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}: 'weight' is the loss's "
                              f"coefficient, one number, got a tensor of "
                              f"shape (4,)")
    assert ("node_weight=" in message) == per_node
    with pytest.raises(TypeError, match="one number, got str"):
        cls(weight="0.1")
    # a number or a one-element tensor (e.g. a schedule's value) scales it
    a, b = _rand(4, 3), _rand(4, 3)
    args = (a, b) if cls is NegL2Distance else ([a, b],)
    base = cls(weight=1.0)(*args)
    for weight in (3, 3.0, torch.tensor(3.0)):
        assert cls(weight=weight)(*args).item() == pytest.approx(
            3 * base.item(), rel=1e-6)


@pytest.mark.parametrize("cls", [MSALoss, SoloSimLoss])
def test_modules_check_tau_when_built(cls):
    with pytest.raises(ValueError, match="'tau' must be positive, got 0"):
        cls(tau=0)


def test_modules_without_modalities_say_so():
    for module in (MDALoss(), MSALoss()):
        with pytest.raises(ValueError, match="needs at least two "
                           "modalities, got 0"):
            module({}, torch.ones(3))


@pytest.mark.parametrize("module", [MDALoss(1.0), MSALoss(1.0)])
def test_modules_take_the_modalities_as_one_dict_or_list(module):
    a, b = _rand(4, 3), _rand(4, 3)
    name = type(module).__name__
    # the function's form, module(x_v, x_t), passes x_t as node_weight
    with pytest.raises(TypeError, match=rf"{name}: 'x' is one tensor of shape "
                       r"\(4, 3\); pass the modalities as one dict or list of "
                       rf"\[B, d\] tensors, e\.g\. {name}\(\{{'v': x_v, 't': "
                       r"x_t\}\)"):
        module(a, b)
    with pytest.raises(TypeError, match=rf"{name}: modality 'x\[1\]' is a "
                       r"list, not a tensor"):
        module([a, [1.0] * 3])
    with pytest.raises(TypeError, match=rf"{name}: 'node_weight' takes a "
                       r"tensor of shape \(4,\), one weight per node, got "
                       rf"list; the loss's coefficient is {name}\(weight="):
        module([a, b], [1.0] * 4)


def test_functions_say_weight_is_per_node():
    from mde_pyg.losses import mda_loss, msa_loss

    a, b = _rand(4, 3), _rand(4, 3)
    for call in (lambda: msa_loss(a, b, 0.5), lambda: mda_loss([a, b], 0.5)):
        with pytest.raises(TypeError, match=r"'weight' takes per-node "
                           r"weights, a tensor of shape \(4,\), got float; a "
                           r"coefficient multiplies the returned loss"):
            call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_msa_follows_float32(dtype):
    from mde_pyg.losses import msa_loss

    # identical views: the loss is small, where rounding the positive term
    # to half precision alone once took it below 0
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    low = x.to(dtype)
    # against float64 at the same rounded inputs, up to the rounding of
    # normalize in half precision (measured: 1.2e-3 fp16, 5e-3 bf16 of the
    # loss, about 8e-4); a half-precision positive term errs by ~1e-4, 13 %
    # (tests/test_losses.py checks the terms at float32's rounding)
    reference = msa_loss(low.double(), low.double(), tau=0.05)
    value = msa_loss(low, low, tau=0.05)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=1e-2)
    # a 0-d tensor tau: the same value, and no warning from inside
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MSALoss(1.0, tau=torch.tensor(0.05))([x, x]).item() == \
            pytest.approx(msa_loss(x, x, tau=0.05).item(), rel=1e-6)


@pytest.mark.parametrize("cls", [MSALoss, SoloSimLoss])
@pytest.mark.parametrize("bad, shown", [("0.2", "str '0.2'"),
                                        (True, "bool True"),
                                        (None, "NoneType None")])
def test_modules_refuse_a_tau_that_is_no_number(cls, bad, shown):
    with pytest.raises(TypeError, match="^" + _msg(
            f"{cls.__name__}: 'tau' is the temperature, one positive "
            f"number, got {shown}; pass e.g. tau=0.2")):
        cls(tau=bad)
    with pytest.raises(TypeError, match="^" + _msg(
            f"{cls.__name__}: 'tau' is the temperature, one positive "
            f"number, got a tensor of shape (2,) and dtype torch.float32")):
        cls(tau=torch.tensor([0.2, 0.3]))


@pytest.mark.parametrize("cls", [MSALoss, SoloSimLoss])
def test_modules_refuse_a_tau_out_of_range(cls):
    for bad, shown in ((0, "0"), (-0.5, "-0.5"), (float("nan"), "nan"),
                       (torch.tensor(-1.0), "-1.0")):
        with pytest.raises(ValueError, match="^" + _msg(
                f"{cls.__name__}: 'tau' must be positive, got {shown}; "
                f"pass e.g. tau=0.2")):
            cls(tau=bad)
    with pytest.raises(ValueError, match="^" + _msg(
            f"{cls.__name__}: 'tau' must be finite, got inf: every logit "
            f"would be 0 and the loss a constant; pass e.g. tau=0.2")):
        cls(tau=float("inf"))


def test_functions_name_themselves_for_a_bad_tau():
    a, b = _rand(4, 3), _rand(4, 3)
    calls = {"info_nce": lambda t: info_nce(a, b, tau=t),
             "msa_loss": lambda t: msa_loss(a, b, tau=t),
             "multi_msa_loss": lambda t: multi_msa_loss([a, b], tau=t),
             "solo_sim_loss": lambda t: solo_sim_loss(a, b, tau=t),
             "inner_product_info_nce":
                 lambda t: inner_product_info_nce(a, b, tau=t),
             "hypergraph_contrastive_loss":
                 lambda t: hypergraph_contrastive_loss(a, b, b, tau=t)}
    for fn, call in calls.items():
        with pytest.raises(TypeError, match="^" + _msg(
                f"{fn}: 'tau' is the temperature, one positive number, got "
                f"str '0.2'")):
            call("0.2")
        with pytest.raises(ValueError, match="^" + _msg(
                f"{fn}: 'tau' must be positive, got 0.0")):
            call(0.0)


@pytest.mark.parametrize("cls, per_node", [
    (MDALoss, True), (MSALoss, True), (SoloSimLoss, False),
    (NegL2Distance, False)])
def test_modules_refuse_a_negative_or_non_finite_weight(cls, per_node):
    negative = ("a negative coefficient would maximise the loss instead "
                "of minimising it")
    infinite = "it would make the objective NaN or infinite"
    for bad, shown, why in ((-1.0, "-1.0", negative), (-1, "-1", negative),
                            (torch.tensor(-0.5), "-0.5", negative),
                            (float("nan"), "nan", infinite),
                            (float("inf"), "inf", infinite)):
        with pytest.raises(ValueError, match="^" + _msg(
                f"{cls.__name__}: 'weight' is the loss's coefficient and "
                f"must be a finite number >= 0, got {shown}; {why}; pass a "
                f"number >= 0 (0 leaves the term out)")):
            cls(weight=bad)
    # bool is an int, but no coefficient
    with pytest.raises(TypeError, match="^" + _msg(
            f"{cls.__name__}: 'weight' is the loss's coefficient, one "
            f"number, got bool")):
        cls(weight=True)
    # 0 turns the term off
    a, b = _rand(4, 3), _rand(4, 3)
    args = (a, b) if cls is NegL2Distance else ([a, b],)
    assert cls(weight=0)(*args).item() == 0.0
    assert cls(weight=torch.tensor(0.0))(*args).item() == 0.0


_NODE_WEIGHT = "must hold finite non-negative per-node weights, got "
_NODE_FIX = ("; a negative weight would maximise that node's term, a NaN "
             "spreads to every gradient; pass weights >= 0, such as the "
             "w_d and w_a of NodeLevelTradeoff (in [0, 1])")


@pytest.mark.parametrize("bad, shown", [
    (torch.tensor([0.5, -0.25, 1.0, 0.0]), "-0.25 for node 1"),
    (torch.tensor([0.5, 1.0, float("nan"), 0.0]), "nan for node 2"),
    (torch.tensor([float("inf"), 1.0, 1.0, 0.0]), "inf for node 0")])
def test_negative_or_nan_node_weights_are_refused(bad, shown):
    a, b = _rand(4, 3), _rand(4, 3)
    calls = [("mda_loss", "weight", lambda: mda_loss([a, b], bad)),
             ("msa_loss", "weight", lambda: msa_loss(a, b, bad)),
             ("multi_msa_loss", "weight",
              lambda: multi_msa_loss([a, b], bad)),
             ("info_nce", "weight", lambda: info_nce(a, b, weight=bad)),
             ("MDALoss", "node_weight", lambda: MDALoss()([a, b], bad)),
             ("MSALoss", "node_weight", lambda: MSALoss()([a, b], bad))]
    for fn, name, call in calls:
        with pytest.raises(ValueError, match="^" + _msg(
                f"{fn}: '{name}' {_NODE_WEIGHT}{shown}{_NODE_FIX}")):
            call()


def test_node_weights_in_range_keep_their_values():
    a, b = _rand(5, 3), _rand(5, 3)
    w = torch.tensor([0.0, 0.25, 1.0, 0.5, 0.75])  # e.g. w_d or w_a
    cos = F.cosine_similarity(a, b).abs()
    assert mda_loss([a, b], w).item() == pytest.approx(
        (w * cos).mean().item(), rel=1e-6)
    assert MDALoss(0.5)([a, b], w).item() == pytest.approx(
        0.5 * (w * cos).mean().item(), rel=1e-6)
    logits = F.normalize(a) @ F.normalize(b).t() / 0.2
    per_node = 0.5 * ((logits.logsumexp(1) - logits.diag())
                      + (logits.logsumexp(0) - logits.diag()))
    assert msa_loss(a, b, w).item() == pytest.approx(
        (w * per_node).mean().item(), rel=1e-5)
    assert MSALoss(2.0)({"v": a, "t": b}, w).item() == pytest.approx(
        2 * (w * per_node).mean().item(), rel=1e-5)
    # on the CPU only: the check would otherwise wait for the device
    from mde_pyg.losses import _check_node_values
    _check_node_values("mda_loss", "weight",
                       torch.tensor([-1.0], device="meta"))
    assert MDALoss(torch.tensor(-1.0, device="meta")).weight.is_meta
    assert MSALoss(tau=torch.tensor(-1.0, device="meta")).tau.is_meta
