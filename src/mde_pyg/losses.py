r"""Losses of MDE, SAND and the baselines, as functions and modules.

Each loss is a plain function with its equation, plus a thin
:class:`torch.nn.Module` holding its hyper-parameters, so that any PyG
recommender can add it to its own objective: the losses need nothing from
:mod:`mde_pyg.models`. Multi-modal losses take the per-modality
representations of the same batch of nodes as a ``{name: [B, d]}`` dict
and average over all modality pairs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mde_pyg.functional import normalize

Modalities = Mapping[str, Tensor] | Sequence[Tensor]


def _check_same_shape(fn: str, fix: str, ndim: int | None = None,
                      /, **tensors: Tensor) -> None:
    """Raise a :class:`ValueError` unless all ``tensors`` (keyword names as
    the caller of ``fn`` spelled them) have one shape, of ``ndim``
    dimensions when given.

    Only sizes are compared, never values: no device synchronisation, and
    nothing for :func:`torch.compile` to break the graph on.
    """
    if ndim is not None:
        for name, t in tensors.items():
            if t.dim() != ndim:
                raise ValueError(
                    f"{fn}: '{name}' must have {ndim} dimensions, got shape "
                    f"{tuple(t.shape)}; pass {fix}")
    (first, ref), *rest = tensors.items()
    for name, t in rest:
        if t.shape != ref.shape:
            raise ValueError(
                f"{fn}: '{first}' has shape {tuple(ref.shape)} but '{name}' "
                f"has shape {tuple(t.shape)}; pass {fix}")
    if ref.dim() > 0 and ref.size(0) == 0:
        raise ValueError(
            f"{fn}: '{first}' is an empty batch (shape {tuple(ref.shape)}): "
            f"a mean over no rows is NaN; skip the step (or the term) when "
            f"a batch has no rows")


def _named(x: Modalities, fn: str, arg: str = "x") -> dict[str, Tensor]:
    """The modalities ``x`` (argument ``arg`` of ``fn``) by name, or a
    :class:`TypeError` unless ``x`` is a dict or a list of tensors.
    """
    fix = (f"pass the modalities as one dict or list of [B, d] tensors, "
           f"e.g. {fn}({{'v': x_v, 't': x_t}})")
    if isinstance(x, Tensor) or not isinstance(x, (Mapping, Sequence)):
        got = (f"one tensor of shape {tuple(x.shape)}"
               if isinstance(x, Tensor) else type(x).__name__)
        raise TypeError(f"{fn}: '{arg}' is {got}; {fix}")
    if isinstance(x, Mapping):
        named = {str(k): t for k, t in x.items()}
    else:
        named = {f"{arg}[{i}]": t for i, t in enumerate(x)}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: modality '{name}' is a "
                            f"{type(t).__name__}, not a tensor; {fix}")
    return named


def _pairs(x: Modalities, fn: str, arg: str = "x",
           ndim: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """All pairs of the modalities ``x`` (argument ``arg`` of ``fn``),
    checked for one shape.
    """
    named = _named(x, fn, arg)
    if len(named) < 2:
        raise ValueError(
            f"A multi-modal loss needs at least two modalities, got "
            f"{len(named)}; pass one [B, d] tensor per modality")
    _check_same_shape(fn, f"one tensor per modality in '{arg}', all of the "
                      f"same shape [B, d], rows aligned (the same nodes)",
                      ndim, **named)
    return list(combinations(named.values(), 2))


_VIEWS = ("two [B, d] matrices of the same shape, row n of 'b' the "
          "positive of row n of 'a'")
_GAUSSIAN = ("'mu', 'logvar' and 'y' of the same shape [N, d], rows "
             "aligned")


def _check_node_values(fn: str, name: str, weight: Tensor) -> None:
    """Raise a :class:`ValueError` naming ``name`` (an argument of ``fn``)
    unless the per-node weights ``weight`` are finite and non-negative.

    The values are checked on the CPU only: on an accelerator the check
    would wait for the device at every step.
    """
    if weight.device.type != "cpu" or weight.numel() == 0:
        return
    bad = ~(torch.isfinite(weight) & (weight >= 0))  # NaN too
    if bool(bad.any()):
        node = int(bad.view(-1).nonzero()[0])
        raise ValueError(
            f"{fn}: '{name}' must hold finite non-negative per-node "
            f"weights, got {weight.view(-1)[node].item():g} for node "
            f"{node}; a negative weight would maximise that node's term, a "
            f"NaN spreads to every gradient; pass weights >= 0, such as the "
            f"w_d and w_a of NodeLevelTradeoff (in [0, 1])")


def _weighted_mean(fn: str, value: Tensor, weight: Tensor | None) -> Tensor:
    if weight is None:
        return value.mean()
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"{fn}: 'weight' takes per-node weights, a tensor of shape "
            f"{tuple(value.shape)}, got {type(weight).__name__}; a "
            f"coefficient multiplies the returned loss (the loss modules' "
            f"'weight')")
    if weight.shape != value.shape:
        raise ValueError(f"{fn}: 'weight' must have shape "
                         f"{tuple(value.shape)} (one per node), got "
                         f"{tuple(weight.shape)}")
    _check_node_values(fn, "weight", weight)
    return (weight * value).mean()


def _check_tau(fn: str, tau: Any) -> None:
    """Raise a :class:`TypeError` unless the temperature ``tau`` (an
    argument of ``fn``) is one number (a one-element tensor too), a
    :class:`ValueError` unless it is positive and finite (a tensor's value
    checked on the CPU only).
    """
    if isinstance(tau, Tensor):
        if tau.numel() != 1 or tau.dtype == torch.bool:
            raise TypeError(
                f"{fn}: 'tau' is the temperature, one positive number, got "
                f"a tensor of shape {tuple(tau.shape)} and dtype "
                f"{tau.dtype}; pass e.g. tau=0.2")
        if tau.device.type != "cpu":
            return
        value = shown = float(tau)
    elif isinstance(tau, numbers.Real) and not isinstance(tau, bool):
        value, shown = float(tau), tau
    else:
        raise TypeError(
            f"{fn}: 'tau' is the temperature, one positive number, got "
            f"{type(tau).__name__} {tau!r}; pass e.g. tau=0.2")
    if not value > 0:  # NaN too
        raise ValueError(f"{fn}: 'tau' must be positive, got {shown}; pass "
                         f"e.g. tau=0.2")
    if math.isinf(value):
        raise ValueError(f"{fn}: 'tau' must be finite, got {shown}: every "
                         f"logit would be 0 and the loss a constant; pass "
                         f"e.g. tau=0.2")


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    r"""Bayesian personalised ranking loss (MDE Eq. 9).

    .. math::
        \mathcal{L}_{BPR} = -\frac{1}{B} \sum_{(u, i^+, i^-)}
        \log \sigma(y_{u,i^+} - y_{u,i^-})

    Args:
        pos (torch.Tensor): Scores of the positive pairs ``[B]``.
        neg (torch.Tensor): Scores of the negative pairs ``[B]``, of the
            shape of ``pos``.
    """
    _check_same_shape("bpr_loss", "two tensors of the same shape, one score "
                      "per (user, item) pair", pos=pos, neg=neg)
    return F.softplus(neg - pos).mean()


def embedding_bpr_loss(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    r""":func:`bpr_loss` of inner-product scores.

    .. math::
        \mathcal{L} = -\frac{1}{B} \sum_n \log \sigma(
        \langle \mathbf{u}_n, \mathbf{i}^+_n \rangle -
        \langle \mathbf{u}_n, \mathbf{i}^-_n \rangle)

    Args:
        user (torch.Tensor): User representations ``[B, d]``.
        pos (torch.Tensor): Positive item representations ``[B, d]``.
        neg (torch.Tensor): Negative item representations ``[B, d]``.
    """
    _check_same_shape("embedding_bpr_loss", "three tensors of the same "
                      "shape [B, d], rows aligned (one triple per row)",
                      user=user, pos=pos, neg=neg)
    return bpr_loss((user * pos).sum(dim=-1), (user * neg).sum(dim=-1))


def l2_reg(*tensors: Tensor) -> Tensor:
    r"""Squared L2 norm of batch rows, averaged over rows per tensor.

    .. math::
        \mathcal{R} = \sum_{t} \frac{1}{|t|} \sum_{n} \lVert t_n \rVert_2^2

    Args:
        *tensors (torch.Tensor): Batch rows of parameters, e.g.
            ``embedding[user]``.
    """
    if not tensors:
        raise ValueError("'l2_reg' needs at least one tensor")
    return sum(t.pow(2).sum() / max(t.size(0), 1) for t in tensors)


def embedding_norm_reg(*tensors: Tensor) -> Tensor:
    r"""Unsquared Frobenius norms of embedding matrices over a row count.

    .. math::
        \mathcal{R} = \frac{1}{B} \sum_{t} \lVert t \rVert_F

    with :math:`B` the rows of the last tensor: MMRec's ``EmbLoss``, the
    regulariser of its LightGCN (on batch rows) and BM3 (on all online
    user and item embeddings, :math:`B = |\mathcal{I}|`). Unlike
    :func:`l2_reg` the norms are not squared, so its weights (MMRec's grid
    for BM3: 0.1, 0.01) do not carry over to :func:`l2_reg` or back.

    Args:
        *tensors (torch.Tensor): Embedding rows, e.g. ``embedding[user]``.
    """
    if not tensors:
        raise ValueError("'embedding_norm_reg' needs at least one tensor")
    total = sum(torch.linalg.vector_norm(t) for t in tensors)
    return total / max(tensors[-1].size(0), 1)


def mda_loss(x: Modalities, weight: Tensor | None = None) -> Tensor:
    r"""Modality difference amplification (MDE Eq. 6, without
    :math:`\lambda_1`).

    .. math::
        \mathcal{L}_{MDA} = \frac{1}{B} \sum_{n} \Big| \sum_{d}
        W_{d}[n, d]\, \hat{x}_{v,n,d}\, \hat{x}_{t,n,d} \Big|
        = \frac{1}{B} \sum_n w_n \lvert \cos(\mathbf{x}_{v,n},
        \mathbf{x}_{t,n}) \rvert

    with :math:`\hat{\mathbf{x}} = \mathbf{x}/\lVert\mathbf{x}\rVert_2` and
    :math:`w_n \ge 0` the node's distancing weight (broadcast over
    :math:`d`); averaged over modality pairs when there are more than two.
    Minimising it drives the modalities of a node towards orthogonal
    directions. *Reconstruction* from the paper's prose.

    Args:
        x (Mapping[str, Tensor] or Sequence[Tensor]): ``[B, d]`` per
            modality, rows aligned (same nodes).
        weight (torch.Tensor, optional): Non-negative ``[B]`` weights
            :math:`w_n` (e.g. ``w_d`` of
            :class:`mde_pyg.nn.NodeLevelTradeoff`); on the CPU, negative,
            NaN or infinite weights are refused. (default: ones)
    """
    terms = [F.cosine_similarity(a, b, dim=-1).abs()
             for a, b in _pairs(x, "mda_loss", ndim=2)]
    return _weighted_mean("mda_loss", torch.stack(terms).mean(0), weight)


# Entries of one block of exp(A B^T - bound) on CPU: 4 MiB in float32, so
# that each block is exponentiated and summed while still in cache and the
# same buffer is reused (a whole [2048 x 19445] matrix costs 1.5x more);
# on accelerators the blocks only bound the memory.
_BLOCK_ELEMENTS = {"cpu": 2**20}
_BLOCK_ELEMENTS_DEFAULT = 2**26


def _block_rows(a: Tensor, b: Tensor) -> int:
    elements = _BLOCK_ELEMENTS.get(a.device.type, _BLOCK_ELEMENTS_DEFAULT)
    return max(1, min(b.size(0), elements // max(a.size(0), 1)))


class _BoundedLogSumExp(torch.autograd.Function):
    r"""Row and column logsumexp of :math:`\mathbf{A}\mathbf{B}^\top` for
    logits bounded by ``bound`` in absolute value, without forming the
    ``[N, M]`` matrix.

    Forward takes one exp pass over
    :math:`\mathbf{S} = \exp(\mathbf{A}\mathbf{B}^\top - \text{bound})`,
    shifted by the known maximum instead of a per-row max
    (:math:`e^{-2 \cdot 40}` stays a normal float32), block by block over
    the rows of :math:`\mathbf{B}`, and keeps only the row and column
    sums. Backward recomputes each block of :math:`\mathbf{S}` and
    contracts it with the inputs: with :math:`r = g_{row} / \text{rowsum}`
    and :math:`c = g_{col} / \text{colsum}`,

    .. math::
        \nabla_{\mathbf{A}} = \mathbf{M}\mathbf{B}, \qquad
        \nabla_{\mathbf{B}} = \mathbf{M}^\top\mathbf{A}, \qquad
        \mathbf{M} = \mathbf{S} \odot (r \mathbf{1}^\top +
        \mathbf{1} c^\top),

    two products per block whether one direction or both are needed (the
    row-only case keeps :math:`r` out of the block:
    :math:`\nabla_{\mathbf{A}} = r \odot (\mathbf{S}\mathbf{B})`,
    :math:`\nabla_{\mathbf{B}} = \mathbf{S}^\top(r \odot \mathbf{A})`),
    so neither the logits nor their gradient exist whole at any time (SAND's
    SoloSim runs over all items, LGMRec's hypergraph loss over all users).
    Computed outside autocast, in float32 or wider.
    """

    @staticmethod
    def _blocks(a: Tensor, b: Tensor, bound: float):
        """Yield ``(rows of B, B block, exp(A B_block^T - bound))``."""
        bias = a.new_full((), -bound)  # no host-to-device copy
        step = _block_rows(a, b)
        for start in range(0, b.size(0), step):
            block = b[start:start + step]
            rows = slice(start, start + block.size(0))
            yield rows, block, torch.addmm(bias, a, block.t()).exp_()

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, bound: float,
                columns: bool) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        ctx.dtypes = (a.dtype, b.dtype)
        with torch.autocast(a.device.type, enabled=False):
            # float32 at least (bf16 inputs under autocast), float64 kept
            dtype = torch.promote_types(
                torch.promote_types(a.dtype, b.dtype), torch.float32)
            a, b = a.to(dtype), b.to(dtype)
            row_sum = a.new_zeros(a.size(0))
            col_sum = a.new_ones(b.size(0))
            for rows, _, shifted in _BoundedLogSumExp._blocks(a, b, bound):
                row_sum += shifted.sum(dim=1)
                if columns:
                    col_sum[rows] = shifted.sum(dim=0)
        ctx.bound = bound
        ctx.save_for_backward(a, b, row_sum, col_sum)
        return row_sum.log() + bound, col_sum.log() + bound

    @staticmethod
    def backward(ctx, g_row: Tensor | None, g_col: Tensor | None):
        a, b, row_sum, col_sum = ctx.saved_tensors
        if g_row is None and g_col is None:
            return None, None, None, None
        with torch.autocast(a.device.type, enabled=False):
            r = c = None
            if g_row is not None:
                r = (g_row.to(a.dtype) / row_sum).unsqueeze(-1)
            if g_col is not None:
                c = (g_col.to(a.dtype) / col_sum).unsqueeze(0)
            rows_only = c is None
            if rows_only:
                ra = r * a
            grad_a = torch.zeros_like(a)  # S @ B when rows_only
            grad_b = torch.empty_like(b)
            for rows, block, shifted in _BoundedLogSumExp._blocks(
                    a, b, ctx.bound):
                if rows_only:
                    grad_a.addmm_(shifted, block)
                    grad_b[rows] = shifted.t() @ ra
                    continue
                # M = S * (r_i + c_j), in place of the block
                shifted.mul_(c[:, rows] if r is None else r + c[:, rows])
                grad_a.addmm_(shifted, block)
                grad_b[rows] = shifted.t() @ a
            if rows_only:
                grad_a.mul_(r)
        return (grad_a.to(ctx.dtypes[0]), grad_b.to(ctx.dtypes[1]),
                None, None)


def _logsumexp_of_product(a: Tensor, b: Tensor, bound: float,
                          columns: bool) -> tuple[Tensor, Tensor | None]:
    """Row (and, with ``columns``, column) logsumexp of ``a @ b.t()``
    whose entries are bounded by ``bound`` in absolute value: through
    :class:`_BoundedLogSumExp` (in blocks, never the whole ``[N, M]``
    matrix) up to a bound of 40, by autograd's :func:`torch.logsumexp`
    above it; in float32 or wider either way.
    """
    if bound <= 40.0:
        row, col = _BoundedLogSumExp.apply(a, b, bound, columns)
        return row, col if columns else None
    # as the blocked path: float32 at least, outside autocast (a small
    # temperature is where a bf16 or fp16 product would lose the most)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype),
                                torch.float32)
    with torch.autocast(a.device.type, enabled=False):
        logits = a.to(dtype) @ b.to(dtype).t()
        return (logits.logsumexp(dim=1),
                logits.logsumexp(dim=0) if columns else None)


def info_nce(
    a: Tensor,
    b: Tensor,
    tau: float = 0.2,
    weight: Tensor | None = None,
    symmetric: bool = True,
) -> Tensor:
    r"""InfoNCE between two views with in-batch negatives, cosine logits.

    .. math::
        \ell_n = -\log \frac{\exp(\cos(\mathbf{a}_n, \mathbf{b}_n)/\tau)}
        {\sum_{n'} \exp(\cos(\mathbf{a}_n, \mathbf{b}_{n'})/\tau)},
        \qquad \mathcal{L} = \frac{1}{B} \sum_n w_n \ell_n

    Args:
        a (torch.Tensor): First view ``[B, d]``.
        b (torch.Tensor): Second view ``[B, d]``, row ``n`` the positive of
            ``a[n]``.
        tau (float, optional): Temperature. (default: :obj:`0.2`)
        weight (torch.Tensor, optional): Non-negative per-row weights
            ``[B]`` (checked on the CPU).
        symmetric (bool, optional): Average the ``a -> b`` and ``b -> a``
            directions. (default: :obj:`True`)
    """
    _check_same_shape("info_nce", _VIEWS, 2, a=a, b=b)
    return _info_nce("info_nce", a, b, tau, weight, symmetric)


def _info_nce(fn: str, a: Tensor, b: Tensor, tau: float,
              weight: Tensor | None, symmetric: bool) -> Tensor:
    """:func:`info_nce` of inputs whose shapes its caller ``fn``
    checked.
    """
    _check_tau(fn, tau)
    a = normalize(a) / tau
    b = normalize(b)
    # at least float32, as the log-sum-exp: in half precision the positive
    # term's rounding alone can take the loss below 0
    wide = torch.promote_types(a.dtype, torch.float32)
    positive = (a.to(wide) * b.to(wide)).sum(dim=-1)
    # Row n of the logits scores a_n against every b; column n scores b_n
    # against every a, so the reverse direction needs no transposed copy.
    bound = 1.0 / float(tau)  # cosine logits lie in [-bound, bound]
    row, col = _logsumexp_of_product(a, b, bound, symmetric)
    loss = row - positive
    if symmetric:
        loss = 0.5 * (loss + col - positive)
    return _weighted_mean(fn, loss, weight)


def inner_product_info_nce(a: Tensor, b: Tensor, tau: float = 0.2) -> Tensor:
    r"""InfoNCE with in-batch negatives and raw inner-product logits.

    .. math::
        \mathcal{L} = -\frac{1}{B} \sum_n \log
        \frac{\exp(\langle \mathbf{a}_n, \mathbf{b}_n \rangle / \tau)}
        {\sum_{n'} \exp(\langle \mathbf{a}_n, \mathbf{b}_{n'} \rangle
        / \tau)}

    One direction (``a -> b``), as a cross-entropy over the rows of
    :math:`\mathbf{A}\mathbf{B}^\top / \tau`. Unlike
    :func:`~mde_pyg.losses.info_nce` the rows are not normalised, so the
    logits are unbounded (SLMRec's fine-and-coarse alignment,
    :class:`~mde_pyg.models.slmrec.SLMRec`).

    Args:
        a (torch.Tensor): Anchors ``[B, d]``.
        b (torch.Tensor): Positives ``[B, d]``, row ``n`` that of
            ``a[n]``; the other rows are its negatives.
        tau (float, optional): Temperature. (default: :obj:`0.2`)
    """
    _check_tau("inner_product_info_nce", tau)
    _check_same_shape("inner_product_info_nce", _VIEWS, 2, a=a, b=b)
    # The temperature scales the [B, d] anchors, not the [B, B] logits,
    # and cross_entropy's fused log-softmax backs one pass over them
    # (1.5x faster than logsumexp minus the diagonal on CPU).
    logits = (a / tau) @ b.t()
    target = torch.arange(a.size(0), device=a.device)
    return F.cross_entropy(logits, target)


def hypergraph_contrastive_loss(anchor: Tensor, positive: Tensor,
                                candidates: Tensor,
                                tau: float = 0.2) -> Tensor:
    r"""LGMRec's hypergraph contrastive loss between two modalities.

    InfoNCE with cosine logits whose negatives are *all* rows of the other
    modality (every user, or every item), summed over the batch:

    .. math::
        \mathcal{L}_{HCL} = -\sum_{n} \log
        \frac{\exp(\cos(\mathbf{a}_n, \mathbf{p}_n)/\tau)}
        {\sum_{j} \exp(\cos(\mathbf{a}_n, \mathbf{c}_j)/\tau)}

    Unlike :func:`~mde_pyg.losses.info_nce` (in-batch negatives, mean
    over rows) the denominator runs over ``candidates`` and the rows are
    summed, as MMRec's ``ssl_triple_loss``
    (:class:`~mde_pyg.models.lgmrec.LGMRec`); for :math:`\tau \geq 1/40`
    the ``[B, N]`` logits are not kept for the backward pass (a smaller
    :math:`\tau` falls back to autograd's log-sum-exp, which keeps them).

    Args:
        anchor (torch.Tensor): Batch rows of one modality ``[B, d]``.
        positive (torch.Tensor): The same nodes in the other modality
            ``[B, d]``.
        candidates (torch.Tensor): All nodes in the other modality
            ``[N, d]`` (including the positives).
        tau (float, optional): Temperature :math:`\tau`.
            (default: :obj:`0.2`)
    """
    _check_tau("hypergraph_contrastive_loss", tau)
    _check_same_shape("hypergraph_contrastive_loss", "'anchor' and "
                      "'positive' of the same shape [B, d], rows aligned",
                      2, anchor=anchor, positive=positive)
    if candidates.dim() != 2 or candidates.size(1) != anchor.size(1):
        raise ValueError(
            f"hypergraph_contrastive_loss: 'candidates' has shape "
            f"{tuple(candidates.shape)} but 'anchor' has shape "
            f"{tuple(anchor.shape)}; pass 'candidates' as an [N, d] matrix "
            f"of the width d of 'anchor'")
    a = normalize(anchor) / tau
    score = (a * normalize(positive)).sum(dim=-1)
    c = normalize(candidates)
    bound = 1.0 / float(tau)  # cosine logits lie in [-bound, bound]
    log_total = _logsumexp_of_product(a, c, bound, False)[0]
    return (log_total - score).sum()


def msa_loss(
    x_a: Tensor,
    x_b: Tensor,
    weight: Tensor | None = None,
    tau: float = 0.2,
    symmetric: bool = True,
) -> Tensor:
    r"""Modality similarity alignment (MDE Eq. 7, without :math:`\lambda_2`).

    .. math::
        \mathcal{L}_{MSA} = -\frac{1}{B} \sum_{n} w_n \log
        \frac{\exp(\cos(\mathbf{x}_{v,n}, \mathbf{x}_{t,n})/\tau)}
        {\sum_{n'} \exp(\cos(\mathbf{x}_{v,n}, \mathbf{x}_{t,n'})/\tau)}

    InfoNCE with in-batch negatives (:func:`info_nce`), pulling a node's two
    modalities together relative to other nodes. *Reconstruction*: the
    direction is a choice, see ``symmetric``.

    Args:
        x_a (torch.Tensor): One modality ``[B, d]``.
        x_b (torch.Tensor): Another modality ``[B, d]``, rows aligned.
        weight (torch.Tensor, optional): Non-negative alignment weights
            ``[B]`` (e.g. ``w_a`` of :class:`mde_pyg.nn.NodeLevelTradeoff`);
            on the CPU, negative, NaN or infinite weights are refused.
        tau (float, optional): Temperature :math:`\tau`. (default: 0.2)
        symmetric (bool, optional): **[choice]** average the ``v -> t`` and
            ``t -> v`` directions. (default: :obj:`True`)
    """
    _check_same_shape("msa_loss", "two [B, d] matrices of the same shape, "
                      "one modality each, rows aligned (the same nodes)", 2,
                      x_a=x_a, x_b=x_b)
    return _info_nce("msa_loss", x_a, x_b, tau, weight, symmetric)


def multi_msa_loss(x: Modalities, weight: Tensor | None = None,
                   tau: float = 0.2, symmetric: bool = True) -> Tensor:
    """:func:`msa_loss` averaged over every pair of modalities in ``x``."""
    terms = [_info_nce("multi_msa_loss", a, b, tau, weight,
                       symmetric)  # _pairs checked the shapes
             for a, b in _pairs(x, "multi_msa_loss", ndim=2)]
    return torch.stack(terms).mean()


class BPRLoss(nn.Module):
    """Module form of :func:`bpr_loss`."""

    def forward(self, pos: Tensor, neg: Tensor) -> Tensor:
        """Return :func:`bpr_loss` of the scores."""
        return bpr_loss(pos, neg)


def _check_node_weight(module: str, x: Modalities,
                       node_weight: Tensor | None) -> None:
    r"""Raise a :class:`ValueError` naming ``node_weight`` (a module's
    argument, ``weight`` in the functions, where ``weight`` is the
    module's :math:`\lambda`) unless it holds one weight per row of the
    modalities ``x``, finite and non-negative (values checked on the CPU
    only).
    """
    named = _named(x, module)
    if node_weight is None or len(named) == 0:  # none: _pairs says so
        return
    first = next(iter(named.values()))
    if not isinstance(node_weight, Tensor):
        raise TypeError(
            f"{module}: 'node_weight' takes a tensor of shape "
            f"({first.size(0)},), one weight per node, got "
            f"{type(node_weight).__name__}; the loss's coefficient is "
            f"{module}(weight=...)")
    if node_weight.shape != first.shape[:1]:
        raise ValueError(
            f"{module}: 'node_weight' must have shape "
            f"({first.size(0)},), one weight per node (row of each "
            f"modality), got {tuple(node_weight.shape)}")
    _check_node_values(module, "node_weight", node_weight)


def _check_scale(module: str, weight: Any, per_node: bool) -> None:
    """Raise a :class:`TypeError` unless a module's ``weight`` (its
    coefficient) is one number, not a bool: a per-node tensor passed there
    would make the loss a vector. Raise a :class:`ValueError` unless it is
    finite and non-negative (a tensor's value checked on the CPU only): a
    negative coefficient would maximise the loss.
    """
    value = None
    if isinstance(weight, Tensor):
        if weight.numel() == 1 and weight.dtype != torch.bool:
            if weight.device.type != "cpu":
                return
            value = shown = float(weight)
    elif isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        value, shown = float(weight), weight
    if value is None:
        shape = (f"a tensor of shape {tuple(weight.shape)}"
                 if isinstance(weight, Tensor) else type(weight).__name__)
        fix = ("; per-node weights go to forward(x, node_weight=...)"
               if per_node else "")
        raise TypeError(f"{module}: 'weight' is the loss's coefficient, one "
                        f"number, got {shape}{fix}")
    if not (math.isfinite(value) and value >= 0):
        why = ("a negative coefficient would maximise the loss instead of "
               "minimising it" if value < 0 else "it would make the "
               "objective NaN or infinite")
        raise ValueError(
            f"{module}: 'weight' is the loss's coefficient and must be a "
            f"finite number >= 0, got {shown}; {why}; pass a number >= 0 "
            f"(0 leaves the term out)")


class MDALoss(nn.Module):
    r"""Module form of :func:`mda_loss`, scaled by :math:`\lambda_1`.

    ``weight`` is the loss's coefficient; the per-node distancing weights
    :math:`w_d` (e.g. of :class:`~mde_pyg.nn.NodeLevelTradeoff`) go to
    :meth:`forward` as ``node_weight``.

    Args:
        weight (float, optional): :math:`\lambda_1 \geq 0`.
            (default: :obj:`0.01`)
    """

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__()
        _check_scale("MDALoss", weight, per_node=True)
        self.weight = weight

    def forward(self, x: Modalities,
                node_weight: Tensor | None = None) -> Tensor:
        r"""Return :math:`\lambda_1` times :func:`mda_loss`.

        Args:
            x (Dict[str, torch.Tensor]): Modality name -> the same nodes'
                embeddings ``[B, d]`` (e.g. the batch's positive items).
            node_weight (torch.Tensor, optional): Per-node weights
                :math:`w_d \geq 0` ``[B]``. (default: :obj:`None`: 1)
        """
        _check_node_weight("MDALoss", x, node_weight)
        return self.weight * mda_loss(x, node_weight)

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"weight={self.weight}"


class MSALoss(nn.Module):
    r"""Module form of :func:`msa_loss` over all modality pairs, scaled by
    :math:`\lambda_2`.

    ``weight`` is the loss's coefficient; the per-node alignment weights
    :math:`w_a` go to :meth:`forward` as ``node_weight``.

    Args:
        weight (float, optional): :math:`\lambda_2 \geq 0`.
            (default: :obj:`0.01`)
        tau (float, optional): Temperature, positive. (default: :obj:`0.2`)
        symmetric (bool, optional): See :func:`msa_loss`.
            (default: :obj:`True`)
    """

    def __init__(self, weight: float = 0.01, tau: float = 0.2,
                 symmetric: bool = True) -> None:
        super().__init__()
        _check_scale("MSALoss", weight, per_node=True)
        _check_tau("MSALoss", tau)
        self.weight = weight
        self.tau = tau
        self.symmetric = symmetric

    def forward(self, x: Modalities,
                node_weight: Tensor | None = None) -> Tensor:
        r"""Return :math:`\lambda_2` times the pairwise :func:`msa_loss`.

        Args:
            x (Dict[str, torch.Tensor]): Modality name -> the same nodes'
                embeddings ``[B, d]``; row :math:`n` of each is a positive
                pair, the other rows its in-batch negatives.
            node_weight (torch.Tensor, optional): Per-node weights
                :math:`w_a \geq 0` ``[B]``. (default: :obj:`None`: 1)
        """
        _check_node_weight("MSALoss", x, node_weight)
        return self.weight * multi_msa_loss(x, node_weight, self.tau,
                                            self.symmetric)

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return (f"weight={self.weight}, tau={self.tau}, "
                f"symmetric={self.symmetric}")


__all__ = [
    "bpr_loss",
    "embedding_bpr_loss",
    "l2_reg",
    "embedding_norm_reg",
    "mda_loss",
    "info_nce",
    "inner_product_info_nce",
    "hypergraph_contrastive_loss",
    "msa_loss",
    "multi_msa_loss",
    "BPRLoss",
    "MDALoss",
    "MSALoss",
]


# SAND (He et al.): alignment of generic parts, distancing of unique parts ##


def solo_sim_loss(z_a: Tensor, z_b: Tensor, tau: float = 0.2) -> Tensor:
    r"""SoloSim alignment loss of SAND.

    From `"Separate Learning for Multimedia Recommendation"
    <https://arxiv.org/abs/2406.08270>`_:

    .. math::
        \mathcal{L}_{SoloSim} = -\frac{1}{N} \sum_{i} \log
        \frac{\exp(\hat{\mathbf{z}}_{a,i}^\top \hat{\mathbf{z}}_{b,i}
        / \tau)}{\sum_{j} \exp(\hat{\mathbf{z}}_{a,i}^\top
        \hat{\mathbf{z}}_{b,j} / \tau)}

    with :math:`\hat{\mathbf{z}} = \mathbf{z} / \lVert \mathbf{z}
    \rVert_2`: one-directional InfoNCE (:func:`info_nce` with
    ``symmetric=False``) from the generic part of one modality to the
    generic part of another, the other rows serving as negatives. SAND
    applies it to the projected generic parts of all items.

    Args:
        z_a (torch.Tensor): Anchors ``[N, d]`` (e.g. text).
        z_b (torch.Tensor): Positives ``[N, d]`` (e.g. image), rows aligned.
        tau (float, optional): Temperature :math:`\tau`. (default: 0.2)
    """
    _check_same_shape("solo_sim_loss", "two [N, d] matrices of the same "
                      "shape, rows aligned (the same items)", 2,
                      z_a=z_a, z_b=z_b)
    return _info_nce("solo_sim_loss", z_a, z_b, tau, None, symmetric=False)


def gaussian_log_likelihood(mu: Tensor, logvar: Tensor, y: Tensor) -> Tensor:
    r"""Row-wise log-density of ``y`` under a diagonal Gaussian.

    Up to the constant :math:`-\frac{d}{2} \log 2\pi`:

    .. math::
        \log q(\mathbf{y}_i \mid \mathbf{x}_i) = \sum_{k} \left(
        -\frac{(y_{i,k} - \mu_{i,k})^2}{2 \exp(\ell_{i,k})}
        - \frac{\ell_{i,k}}{2} \right)

    Args:
        mu (torch.Tensor): Means ``[N, d]``.
        logvar (torch.Tensor): Log-variances :math:`\ell` ``[N, d]``.
        y (torch.Tensor): Samples ``[N, d]``.
    """
    _check_same_shape("gaussian_log_likelihood", _GAUSSIAN, mu=mu,
                      logvar=logvar, y=y)
    return _log_likelihood(mu, logvar, y)


def _log_likelihood(mu: Tensor, logvar: Tensor, y: Tensor) -> Tensor:
    return (-(y - mu).pow(2) / logvar.exp() - logvar).sum(dim=-1) / 2


def _check_permutation(perm: Tensor, size: int) -> None:
    """Refuse ``perm`` unless it is a permutation of ``0, ..., size - 1``
    (its values checked on the CPU only: on CUDA, at no sync).
    """
    fix = (f"pass a permutation of the {size} row ids, of shape ({size},), "
           f"such as torch.randperm({size})")
    if perm.shape != (size,):
        raise ValueError(
            f"club_upper_bound: 'perm' has shape {tuple(perm.shape)} but 'y' "
            f"has {size} rows; {fix}")
    if perm.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"club_upper_bound: 'perm' has dtype {perm.dtype}, "
                         f"not int64 or int32 row ids; {fix}")
    if perm.is_cuda or size == 0:
        return
    if perm.min() < 0 or perm.max() >= size:
        raise ValueError(f"club_upper_bound: 'perm' holds ids outside "
                         f"[0, {size}); {fix}")
    twice = (torch.bincount(perm.long(), minlength=size) > 1).nonzero()
    if twice.numel():
        raise ValueError(f"club_upper_bound: 'perm' names row "
                         f"{int(twice[0])} more than once, so it is not a "
                         f"permutation; {fix}")


def club_upper_bound(
    mu: Tensor,
    logvar: Tensor,
    y: Tensor,
    perm: Tensor | None = None,
    clamp: bool = True,
) -> Tensor:
    r"""Sampled CLUB upper bound of the mutual information (SAND).

    The bound on :math:`I(\mathbf{x}; \mathbf{y})` of `Cheng et al.,
    "CLUB: A Contrastive Log-ratio Upper Bound of Mutual Information"
    <https://arxiv.org/abs/2006.12013>`_, SAND's distancing term:

    .. math::
        \hat{I} = \max\Big(0, \frac{1}{N} \sum_i \log q(\mathbf{y}_i
        \mid \mathbf{x}_i) - \frac{1}{N} \sum_i \log
        q(\mathbf{y}_{\pi(i)} \mid \mathbf{x}_i)\Big)

    with :math:`q(\mathbf{y} \mid \mathbf{x}) = \mathcal{N}(\boldsymbol{
    \mu}(\mathbf{x}), \operatorname{diag} \exp \boldsymbol{\ell}(
    \mathbf{x}))` a variational approximation fitted by maximum likelihood
    (see :func:`gaussian_log_likelihood`) and :math:`\pi` a random
    permutation (the negative pairs). Gradients reach ``y`` and, through
    ``mu`` and ``logvar``, the samples :math:`\mathbf{x}`.

    Args:
        mu (torch.Tensor): :math:`\boldsymbol{\mu}(\mathbf{x})` ``[N, d]``.
        logvar (torch.Tensor): :math:`\boldsymbol{\ell}(\mathbf{x})`
            ``[N, d]``.
        y (torch.Tensor): The paired samples ``[N, d]``.
        perm (torch.Tensor, optional): The permutation :math:`\pi`
            (``[N]``, int64 or int32). (default: :obj:`None`: drawn with
            :func:`torch.randperm`)
        clamp (bool, optional): Clamp the estimate at 0, as SAND does.
            (default: :obj:`True`)
    """
    _check_same_shape("club_upper_bound", _GAUSSIAN, mu=mu, logvar=logvar,
                      y=y)
    if perm is None:
        perm = torch.randperm(y.size(0), device=y.device)
    else:
        _check_permutation(perm, y.size(0))
    positive = _log_likelihood(mu, logvar, y)
    negative = _log_likelihood(mu, logvar, y[perm])
    bound = positive.mean() - negative.mean()
    return bound.clamp(min=0.0) if clamp else bound


def club_nll(mu: Tensor, logvar: Tensor, y: Tensor) -> Tensor:
    r"""Negative log-likelihood fitting the CLUB variational network.

    .. math::
        \mathcal{L}_{q} = -\frac{1}{N} \sum_i \log q(\mathbf{y}_i \mid
        \mathbf{x}_i)

    minimised over the parameters of :math:`q` only, on detached samples,
    in optimiser steps of its own (see
    :class:`mde_pyg.nn.CLUBEstimator`).

    Args:
        mu (torch.Tensor): Means ``[N, d]``.
        logvar (torch.Tensor): Log-variances ``[N, d]``.
        y (torch.Tensor): Samples ``[N, d]``.
    """
    _check_same_shape("club_nll", _GAUSSIAN, mu=mu, logvar=logvar, y=y)
    return -_log_likelihood(mu, logvar, y).mean()


def neg_l2_distance(a: Tensor, b: Tensor) -> Tensor:
    r"""Negative squared L2 distance, SAND's simple distancing term.

    .. math::
        \mathcal{L}_{dist} = -\frac{1}{N d} \sum_{i} \lVert \mathbf{a}_i
        - \mathbf{b}_i \rVert_2^2 = -\operatorname{MSE}(\mathbf{a},
        \mathbf{b})

    Minimising it pushes ``a`` (e.g. a generic part) away from ``b`` (the
    unique part of the same item). It is unbounded below: keep its weight
    small.

    Args:
        a (torch.Tensor): ``[N, d]``.
        b (torch.Tensor): ``[N, d]``, rows aligned.
    """
    _check_same_shape("neg_l2_distance", "two tensors of the same shape "
                      "[N, d], rows aligned (the same items)", a=a, b=b)
    return -F.mse_loss(a, b)


def cosine_prediction_loss(online: Tensor, target: Tensor) -> Tensor:
    r"""Bootstrap prediction loss of BM3.

    From `"Bootstrap Latent Representations for Multi-modal Recommendation"
    <https://arxiv.org/abs/2207.05969>`_:

    .. math::
        \mathcal{L} = 1 - \frac{1}{N} \sum_i \cos(\mathbf{p}_i,
        \operatorname{sg}(\mathbf{t}_i))

    with :math:`\operatorname{sg}` the stop-gradient: no gradient reaches
    the target view.

    Args:
        online (torch.Tensor): Predictions ``[N, d]``.
        target (torch.Tensor): Targets ``[N, d]`` (detached here).
    """
    _check_same_shape("cosine_prediction_loss", "two tensors of the same "
                      "shape [N, d], row i of 'target' the target of row i "
                      "of 'online'", online=online, target=target)
    # F.cosine_similarity's value (each norm clamped at 1e-8), with the
    # closed-form backward of normalize: 1.6x faster forward + backward
    # on [2048 x 64] rows on CPU
    target = F.normalize(target.detach(), dim=-1, eps=1e-8)
    return 1.0 - (normalize(online, 1e-8) * target).sum(dim=-1).mean()


class SoloSimLoss(nn.Module):
    r"""Module form of :func:`solo_sim_loss`, scaled by :math:`\alpha`.

    For modalities :math:`m_1, \dots, m_M` (in the given order) the loss is
    the mean of :func:`solo_sim_loss` over the pairs :math:`(m_a, m_b)`,
    :math:`a < b`; for two modalities it is the single term of SAND.

    Args:
        weight (float, optional): :math:`\alpha \geq 0`.
            (default: :obj:`0.012`)
        tau (float, optional): Temperature, positive. (default: :obj:`0.2`)
    """

    def __init__(self, weight: float = 0.012, tau: float = 0.2) -> None:
        super().__init__()
        _check_scale("SoloSimLoss", weight, per_node=False)
        _check_tau("SoloSimLoss", tau)
        self.weight = weight
        self.tau = tau

    def forward(self, z: Modalities) -> Tensor:
        r"""Return :math:`\alpha` times the pairwise :func:`solo_sim_loss`."""
        terms = [_info_nce("SoloSimLoss", a, b, self.tau, None,
                           False)  # _pairs checked the shapes
                 for a, b in _pairs(z, "SoloSimLoss", "z", 2)]
        return self.weight * torch.stack(terms).mean()

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"weight={self.weight}, tau={self.tau}"


class NegL2Distance(nn.Module):
    r"""Module form of :func:`neg_l2_distance`, scaled by ``weight``.

    Args:
        weight (float, optional): SAND's :math:`u_{reg} \geq 0`.
            (default: :obj:`0.006`)
    """

    def __init__(self, weight: float = 0.006) -> None:
        super().__init__()
        _check_scale("NegL2Distance", weight, per_node=False)
        self.weight = weight

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Return ``weight`` times :func:`neg_l2_distance`."""
        return self.weight * neg_l2_distance(a, b)

    def extra_repr(self) -> str:
        """Show the hyper-parameters in ``repr``."""
        return f"weight={self.weight}"


__all__ += [
    "solo_sim_loss",
    "gaussian_log_likelihood",
    "club_upper_bound",
    "club_nll",
    "neg_l2_distance",
    "cosine_prediction_loss",
    "SoloSimLoss",
    "NegL2Distance",
]
