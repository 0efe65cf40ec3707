r"""Top-:math:`K` ranking metrics of the MMRec evaluation protocol.

For a user :math:`u` with held-out items :math:`T_u`, a ranked list
:math:`r_1, r_2, \ldots` and binary relevance
:math:`\mathrm{rel}(j) = [r_j \in T_u]`:

.. math::
    \mathrm{Recall@}K &= \frac{1}{|T_u|} \sum_{j \le K} \mathrm{rel}(j)

    \mathrm{Precision@}K &= \frac{1}{K} \sum_{j \le K} \mathrm{rel}(j)

    \mathrm{NDCG@}K &= \frac{\sum_{j \le K} \mathrm{rel}(j) / \log_2(j + 1)}
    {\sum_{j \le \min(|T_u|, K)} 1 / \log_2(j + 1)}

    \mathrm{MAP@}K &= \frac{1}{\min(|T_u|, K)} \sum_{j \le K}
    \mathrm{P}(j) \, \mathrm{rel}(j),

with :math:`\mathrm{P}(j)` the precision of the first :math:`j` items. Each
metric is averaged over the users that have at least one held-out item.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

#: Metric names, in the order of the returned dictionaries.
METRIC_NAMES: tuple[str, ...] = ("recall", "precision", "map", "ndcg")


def check_ks(ks: Sequence[int], max_k: int | None = None) -> tuple[int, ...]:
    """Return the cut-offs ``ks`` sorted and without repeats, or raise a
    :class:`ValueError` naming the value at fault.

    .. code-block:: python

        check_ks([20, 10, 20])  # (10, 20)
        check_ks([10.5])        # ValueError: ... integers, got 10.5

    Args:
        ks (Sequence[int]): Cut-offs :math:`K`, integers >= 1 (NumPy and
            PyTorch integers too; not :obj:`bool`, not floats such as
            ``10.0``).
        max_k (int, optional): The most items ranked per user; a larger
            cut-off is an error. (default: :obj:`None`)
    """
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Iterable):
        raise ValueError(f"'ks' must be a sequence of cut-offs such as "
                         f"(10, 20), got {ks!r}")
    values = []
    for k in ks:
        try:
            if isinstance(k, bool):
                raise TypeError
            values.append(operator.index(k))
        except TypeError:
            raise ValueError(f"The cut-offs in 'ks' must be integers, got "
                             f"{k!r} in {list(ks)!r}") from None
    ks = tuple(sorted(set(values)))
    if len(ks) == 0:
        raise ValueError("'ks' must name at least one cut-off, got none")
    if ks[0] < 1:
        raise ValueError(f"Every cut-off in 'ks' must be >= 1, got {ks[0]}")
    if max_k is not None and ks[-1] > max_k:
        raise ValueError(
            f"Cut-off {ks[-1]} exceeds the {max_k} ranked items given per "
            f"user; rank at least max(ks) = {ks[-1]} items"
        )
    return ks


def metric_keys(ks: Sequence[int]) -> list[str]:
    """Return the metric names computed at cut-offs ``ks``, such as
    ``"recall@20"``, in the order of the returned dictionaries (every
    metric of :data:`METRIC_NAMES` at each cut-off).

    Args:
        ks (Sequence[int]): Cut-offs, checked by :func:`check_ks`.
    """
    return [f"{name}@{k}" for name in METRIC_NAMES for k in check_ks(ks)]


def _rank_ties_by_id(scores: Tensor, values: Tensor, indices: Tensor,
                     k: int) -> tuple[Tensor, bool]:
    """Return the ``[B, k]`` ids of the ``k`` best items of each row of
    ``scores`` under the order (score descending, id ascending), and
    whether any row was changed; a changed row lists the items above the
    cut in score order, then the tied ones in id order.

    ``values`` / ``indices`` are the sorted :func:`torch.topk` of ``scores``
    at ``k + 1`` (or at ``k`` when there are only ``k`` items). Its first
    ``k`` ids are already right unless the ``k``-th score ties with the
    ``(k + 1)``-th: only those rows are fixed, by keeping the items above
    the ``k``-th score and filling the rest with the smallest ids of the
    items at it.
    """
    top = indices[:, :k]
    if values.size(1) == k:
        return top, False
    rows = (values[:, k] == values[:, k - 1]).nonzero().view(-1)
    if rows.numel() == 0:
        return top, False
    num_items = scores.size(1)
    cut = values[rows, k - 1:k]
    sub = scores if rows.numel() == scores.size(0) else scores[rows]
    # The tied items, scored num_items (id 0) down to 1; the others 0
    # (float32 holds every id exactly up to 2 ** 24 items):
    dtype = torch.float32 if num_items <= 2**24 else torch.float64
    rev_id = torch.arange(num_items, 0, -1, device=scores.device,
                          dtype=dtype)
    tied = torch.where(sub == cut, rev_id, 0.0).topk(k, dim=1).indices
    head = values[rows, :k]
    above = ((head > cut) | head.isnan()).sum(1, keepdim=True)  # NaN first
    position = torch.arange(k, device=scores.device)
    fill = tied.gather(1, (position - above).clamp(min=0))
    top = top.clone()
    top[rows] = torch.where(position < above, top[rows], fill)
    return top, True


def rank_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Return the ``(values, indices)`` of the ``k`` best items of each row
    of ``scores`` ``[B, N]``, best first: by score, the higher first, and
    items of equal score by id, the smaller first.

    So the ranking is the same on every device and its first ``j`` items
    do not depend on ``k`` (:func:`torch.topk` alone orders ties as its
    ``k`` and the device happen to make it, so that Recall@5 of a model
    with tied scores moved with the other cut-offs asked for). It costs a
    :func:`torch.topk` at ``k + 1``; the ``k`` chosen are sorted again
    only where equal scores are among them, and only rows whose ties
    straddle the cut take one more pass over their scores.
    NaN ranks first, as in :func:`torch.topk`.

    Args:
        scores (torch.Tensor): Scores ``[B, N]``.
        k (int): Items per row, at most ``N``.
    """
    if scores.dim() != 2 or not 1 <= k <= scores.size(1):
        raise ValueError(f"rank_top_k takes scores [B, N] and 1 <= k <= N, "
                         f"got shape {tuple(scores.shape)} and k={k}")
    values, indices = scores.topk(min(k + 1, scores.size(1)), dim=-1)
    top, changed = _rank_ties_by_id(scores, values, indices, k)
    values = values[:, :k]
    if changed:  # the chosen ids changed: reorder every row
        rows = None
    else:  # only rows with equal scores among the chosen need an order
        rows = (values[:, 1:] == values[:, :-1]).any(dim=1).nonzero()
        rows = rows.view(-1)
        if rows.numel() == 0:
            return values, top
    # the (score, id) order within the k chosen: ids ascending, then a
    # stable sort by score keeps equal scores in that order
    part = top if rows is None else top[rows]
    part = part.sort(dim=1).values
    part_scores = (scores.gather(1, part) if rows is None
                   else scores[rows.view(-1, 1), part])
    part_values, order = part_scores.sort(dim=1, descending=True,
                                          stable=True)
    part = part.gather(1, order)
    if rows is None:
        return part_values, part
    top, values = top.clone(), values.clone()
    top[rows], values[rows] = part, part_values
    return values, top


def _check_distinct(top_items: Tensor) -> None:
    """Raise a :class:`ValueError` if a row of ``top_items`` repeats an id
    other than the ``-1`` padding.
    """
    if top_items.size(1) < 2:
        return
    ordered = top_items.sort(dim=1).values
    repeat = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    bad = repeat.any(dim=1).nonzero().view(-1)
    if bad.numel() > 0:
        row = int(bad[0])
        item = int(ordered[row, 1:][repeat[row]][0])
        raise ValueError(
            f"'top_items' row {row} lists item {item} more than once "
            f"({top_items[row].tolist()}; {bad.numel()} such row(s)); each "
            f"row of the ranking must list distinct item ids; -1 pads")


def _as_targets(targets: Sequence[Tensor | Sequence[int]]) -> list[Tensor]:
    """Return ``targets`` as 1-D integer tensors, refusing float or bool
    ones (which :meth:`torch.Tensor.long` would silently truncate).
    """
    out = []
    for u, target in enumerate(targets):
        target = torch.as_tensor(target)
        if target.numel() == 0:
            target = target.long()
        if target.is_floating_point() or target.is_complex() or \
                target.dtype == torch.bool:
            raise TypeError(
                f"'targets[{u}]' must hold integer item ids, got "
                f"{target.dtype}; give an integer tensor or a sequence of "
                f"ints (e.g. 'target.long()' if the values are whole)")
        out.append(target.reshape(-1))
    return out


def _hit_matrix(
    top_items: Tensor, targets: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """Return the hit matrix and the number of distinct targets per user.

    ``hits[u, j]`` is :obj:`True` iff ``top_items[u, j]`` is in
    ``targets[u]``; no Python loop runs over items.
    """
    num_users, max_k = top_items.size()
    device = top_items.device
    if num_users == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return top_items.new_zeros((0, max_k), dtype=torch.bool), empty
    counts = torch.tensor(
        [t.numel() for t in targets], dtype=torch.long, device=device
    )
    items = torch.cat([t.reshape(-1) for t in targets]).to(device, torch.long)
    if items.numel() == 0:
        return top_items.new_zeros(top_items.size(), dtype=torch.bool), counts
    if items.min() < 0 or top_items.min() < -1:
        raise ValueError("Item ids must be non-negative (-1 in 'top_items' "
                         "marks an empty position)")
    empty = top_items < 0  # never a hit
    top_items = top_items.clamp(min=0)

    # Encode (user, item) pairs as user * stride + item, sort the targets and
    # look every ranked pair up with a binary search.
    stride = int(max(int(items.max()), int(top_items.max()))) + 1
    owner = torch.repeat_interleave(
        torch.arange(num_users, device=device), counts
    )
    target_key = torch.unique(owner * stride + items)  # sorted, distinct
    counts = torch.bincount(target_key // stride, minlength=num_users)

    rank_owner = torch.arange(num_users, device=device).view(-1, 1)
    pred_key = (rank_owner * stride + top_items).reshape(-1)  # any layout
    pos = torch.searchsorted(target_key, pred_key)
    pos = pos.clamp(max=target_key.numel() - 1)
    hits = (target_key[pos] == pred_key).view(num_users, max_k)
    return hits & ~empty, counts


def per_user_metrics(
    top_items: Tensor,
    targets: Sequence[Tensor | Sequence[int]],
    ks: Sequence[int] = (5, 10, 20, 50),
    *,
    check_distinct: bool = True,
) -> dict[str, Tensor]:
    r"""Return every metric of every user, as tensors of shape ``[U]``.

    Users without held-out items get :obj:`NaN`; :func:`ranking_metrics`
    leaves them out of the average. Per-user values are what a paired
    significance test between two models needs.

    Args:
        top_items (torch.Tensor): Ranked item ids of each user, shape
            ``[U, max_k]`` with ``max_k >= max(ks)``, best first, no
            repeated id within a row; ``-1`` marks an empty position (a
            user with fewer than ``max_k`` rankable items), never a hit.
        targets (Sequence[torch.Tensor or Sequence[int]]): ``U`` integer
            tensors (or sequences of ints); ``targets[u]`` holds the
            held-out item ids of user ``u`` (duplicates count once).
        ks (Sequence[int], optional): Cut-offs :math:`K`.
            (default: :obj:`(5, 10, 20, 50)`)
        check_distinct (bool, optional): Refuse rows that repeat an item
            (a sort of each row); :obj:`False` skips it for rankings known
            to be distinct, such as those of :func:`rank_top_k`.
            (default: :obj:`True`)

    Raises:
        ValueError: If a row of ``top_items`` repeats an item id (``-1``
            padding aside), or on a bad shape or cut-off.
        TypeError: If a target holds float or bool values.
    """
    if top_items.dim() != 2:
        raise ValueError(
            f"'top_items' must have shape [num_users, max_k], got "
            f"{tuple(top_items.size())}"
        )
    if top_items.is_floating_point() or top_items.dtype == torch.bool:
        raise ValueError(
            f"'top_items' must hold integer item ids, got {top_items.dtype}"
        )
    if len(targets) != top_items.size(0):
        raise ValueError(
            f"'top_items' ranks {top_items.size(0)} users but 'targets' "
            f"holds {len(targets)}; give one target tensor per ranked user"
        )
    ks = check_ks(ks, top_items.size(1))
    if check_distinct:
        _check_distinct(top_items)
    targets = _as_targets(targets)
    max_k = ks[-1]
    hits, counts = _hit_matrix(top_items[:, :max_k].long(), targets)

    hits = hits.to(torch.float64)
    n = counts.to(torch.float64)
    position = torch.arange(
        1, max_k + 1, dtype=torch.float64, device=hits.device
    )
    cum_hits = hits.cumsum(dim=1)
    discount = 1.0 / torch.log2(position + 1.0)
    dcg = (hits * discount).cumsum(dim=1)
    ideal = discount.cumsum(dim=0)
    ap = (hits * cum_hits / position).cumsum(dim=1)

    nan = torch.tensor(float("nan"), dtype=torch.float64, device=hits.device)
    valid = counts > 0
    out: dict[str, Tensor] = {}
    for name in METRIC_NAMES:
        for k in ks:
            num_hits = cum_hits[:, k - 1]
            # min(|T_u|, K) relevant positions at best; >= 1 for valid users:
            best = counts.clamp(min=1, max=k)
            if name == "recall":
                value = num_hits / n.clamp(min=1)
            elif name == "precision":
                value = num_hits / k
            elif name == "map":
                value = ap[:, k - 1] / best
            else:
                value = dcg[:, k - 1] / ideal[best - 1]
            out[f"{name}@{k}"] = torch.where(valid, value, nan)
    return out


def ranking_metrics(
    top_items: Tensor,
    targets: Sequence[Tensor | Sequence[int]],
    ks: Sequence[int] = (5, 10, 20, 50),
) -> dict[str, float]:
    r"""Compute Recall, Precision, MAP and NDCG at every cut-off in ``ks``.

    Returns a dictionary with the keys ``"recall@K"``, ``"precision@K"``,
    ``"map@K"`` and ``"ndcg@K"``, averaged over the users that have at
    least one held-out item (see the module docstring for the formulas).

    .. code-block:: python

        top = torch.tensor([[3, 1, 0], [2, 0, 1]])
        ranking_metrics(top, [torch.tensor([1]), torch.tensor([0, 1])],
                        ks=(1, 3))

    Args:
        top_items (torch.Tensor): Ranked item ids of each user, shape
            ``[U, max_k]`` with ``max_k >= max(ks)``, best first, distinct
            within a row (``-1`` pads).
        targets (Sequence[torch.Tensor or Sequence[int]]): ``U`` integer
            tensors (or sequences of ints) of held-out item ids.
        ks (Sequence[int], optional): Cut-offs :math:`K`.
            (default: :obj:`(5, 10, 20, 50)`)
    """
    metric = RankingMetrics(ks)
    metric.update(top_items, targets)
    return metric.compute()


class RankingMetrics:
    r"""Accumulates :func:`ranking_metrics` over batches of users.

    .. code-block:: python

        metric = RankingMetrics(ks=(10, 20))
        for user in user_batches:
            metric.update(top_items_of(user), targets_of(user))
        out = metric.compute()  # {"recall@10": ..., ...}
        metric.reset()

    The result equals one call of :func:`ranking_metrics` over all users
    (up to rounding; sums are kept in double precision).

    Args:
        ks (Sequence[int], optional): Cut-offs :math:`K`.
            (default: :obj:`(5, 10, 20, 50)`)
    """

    def __init__(self, ks: Sequence[int] = (5, 10, 20, 50)) -> None:
        self.ks = check_ks(ks)
        self.reset()

    @property
    def max_k(self) -> int:
        """The number of ranked items :meth:`update` needs per user."""
        return self.ks[-1]

    @property
    def keys(self) -> list[str]:
        """The keys of :meth:`compute`'s dictionary, in order."""
        return metric_keys(self.ks)

    def reset(self) -> None:
        """Forget every accumulated user."""
        self._sums = {key: 0.0 for key in self.keys}
        self.num_users = 0

    def update(self, top_items: Tensor,
               targets: Sequence[Tensor | Sequence[int]], *,
               check_distinct: bool = True) -> None:
        """Add a batch of users.

        Args:
            top_items (torch.Tensor): Ranked item ids, shape ``[B, max_k]``,
                distinct within a row (``-1`` pads).
            targets (Sequence[torch.Tensor or Sequence[int]]): ``B`` integer
                tensors (or sequences of ints) of held-out items; users
                with none are skipped.
            check_distinct (bool, optional): See :func:`per_user_metrics`.
                (default: :obj:`True`)
        """
        values = per_user_metrics(top_items, targets, self.ks,
                                  check_distinct=check_distinct)
        valid = ~values[self.keys[0]].isnan()
        for key, value in values.items():
            self._sums[key] += float(value[valid].sum())
        self.num_users += int(valid.sum())

    def compute(self) -> dict[str, float]:
        """Return the metrics averaged over all users seen since :meth:`reset`.

        Raises:
            ValueError: If no user with a held-out item has been seen.
        """
        if self.num_users == 0:
            raise ValueError(
                "No user with a held-out item was given to 'update'; there "
                "is nothing to average"
            )
        return {key: s / self.num_users for key, s in self._sums.items()}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(ks={list(self.ks)})"


__all__ = [
    "METRIC_NAMES",
    "RankingMetrics",
    "check_ks",
    "metric_keys",
    "per_user_metrics",
    "rank_top_k",
    "ranking_metrics",
]
