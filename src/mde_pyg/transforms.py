r"""Graph builders, as PyG transforms usable as ``pre_transform``.

Every graph is built from the TRAIN interactions only (and the raw item
features), once, and stored in the :class:`HeteroData`:

* :class:`NormalizeUserItem`: the weights of
  :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` on the user-item
  edges (``edge_weight`` of both directions);
* :class:`UserCoOccurrenceGraph`: ``('user', 'co_occurs', 'user')``;
* :class:`ItemKNNGraph`: ``('item', 'similar_<m>', 'item')`` per modality;
* :class:`MultiModalGraphs`: the three above, the graphs every model of
  :mod:`mde_pyg.models` reads.

Edges point from the neighbour (``edge_index[0]``) to the node that
aggregates it (``edge_index[1]``), PyG's ``source_to_target`` flow.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from mde_pyg.data.mmrec import RATED_BY, RATES, check_data, modality_names

CO_OCCURS = ("user", "co_occurs", "user")


def similar_edge_type(modality: str) -> tuple[str, str, str]:
    """Return the edge type of the item-item graph of ``modality``."""
    return ("item", f"similar_{modality}", "item")


def user_item_norm(edge_index: Tensor, num_users: int,
                   num_items: int) -> Tensor:
    r"""Return the weights :math:`1/\sqrt{d_u d_i}` of user-item edges.

    These are the non-zeros of :math:`\mathbf{D}^{-1/2}\mathbf{A}
    \mathbf{D}^{-1/2}` for :math:`\mathbf{A} = [[0, R], [R^\top, 0]]`
    (no self loops), in the order of ``edge_index`` (``[2, E]``, users in
    row 0, items in row 1).
    """
    user, item = edge_index
    deg_u = torch.bincount(user, minlength=num_users).to(torch.float)
    deg_i = torch.bincount(item, minlength=num_items).to(torch.float)
    return (deg_u[user] * deg_i[item]).rsqrt()


class NormalizeUserItem(BaseTransform):
    r"""Store the symmetric normalisation of the user-item graph.

    Sets ``edge_weight`` :math:`= 1/\sqrt{d_u d_i}` on the train edges of
    ``('user', 'rates', 'item')`` and of its reverse, the non-zeros of
    :math:`\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` with
    :math:`\mathbf{A} = [[0, R], [R^\top, 0]]` (MDE Eq. 2, LightGCN).
    """

    def forward(self, data: HeteroData) -> HeteroData:
        """Add the normalised weights to ``data``."""
        check_data(data)
        store = data[RATES]
        weight = user_item_norm(store.edge_index, data["user"].num_nodes,
                                data["item"].num_nodes)
        store.edge_weight = weight
        data[RATED_BY].edge_index = store.edge_index.flip(0)
        data[RATED_BY].edge_weight = weight
        return data


def topk_positions_per_row(row: Tensor, col: Tensor, value: Tensor,
                           num_rows: int, k: int) -> Tensor:
    r"""Return the positions of the ``k`` largest ``value`` of each ``row``.

    The positions are grouped by row (ascending), and within a row sorted
    by decreasing ``value``, ties towards the smaller ``col``; so the
    result does not depend on the input order, and the top ``k`` of a
    top-:math:`k' \ge k` graph are its top ``k``.

    Args:
        row (torch.Tensor): Row ids ``[E]`` (e.g. edge targets).
        col (torch.Tensor): Column ids ``[E]``, the tie-breaker.
        value (torch.Tensor): Values ``[E]`` to rank.
        num_rows (int): Number of rows.
        k (int): Entries kept per row.
    """
    device = row.device
    row, col, value = row.cpu(), col.cpu(), value.cpu()
    # Sort by (row, -value, col): lexsort keys are applied last-first.
    order = torch.from_numpy(np.lexsort((col.numpy(), -value.numpy(),
                                         row.numpy())))
    sorted_row = row[order]
    count = torch.bincount(sorted_row, minlength=num_rows)
    rank = torch.arange(row.numel()) - (count.cumsum(0) - count)[sorted_row]
    return order[rank < k].to(device)


def topk_per_row(row: Tensor, col: Tensor, value: Tensor, num_rows: int,
                 k: int) -> Tensor:
    """Return a mask keeping the ``k`` largest ``value`` of each ``row``,
    ties towards the smaller ``col`` (:func:`topk_positions_per_row`).
    """
    mask = torch.zeros(row.numel(), dtype=torch.bool, device=row.device)
    mask[topk_positions_per_row(row, col, value, num_rows, k)] = True
    return mask


def softmax_per_row(row: Tensor, value: Tensor, num_rows: int) -> Tensor:
    """Softmax of ``value`` within each group of equal ``row``."""
    value = value.to(torch.float)
    row_max = value.new_full((num_rows,), float("-inf")).scatter_reduce(
        0, row, value, "amax")
    exp = (value - row_max[row]).exp()
    total = value.new_zeros(num_rows).index_add_(0, row, exp)
    return exp / total[row]


def row_blocks(work: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows ``0 .. len(work)`` into consecutive ``(start, end)``
    blocks whose summed ``work`` stays within ``budget`` where it can (a
    single row heavier than ``budget`` is a block of its own).
    """
    if budget < 1:
        raise ValueError(f"'budget' must be a positive integer, got {budget}")
    bounds, start, total = [], 0, 0
    for row, cost in enumerate(work.tolist()):
        if row > start and total + cost > budget:
            bounds.append((start, row))
            start, total = row, 0
        total += cost
    if start < len(work):
        bounds.append((start, len(work)))
    return bounds


class UserCoOccurrenceGraph(BaseTransform):
    r"""The user-user co-occurrence graph of MDE and DRAGON.

    .. math::
        c_{u,v} = |\mathcal{I}_u \cap \mathcal{I}_v|, \qquad
        s_{u,v} = \frac{\exp(c_{u,v})}{\sum_{v' \in \mathcal{N}_k(u)}
        \exp(c_{u,v'})}, \quad v \in \mathcal{N}_k(u)

    over train items, with :math:`\mathcal{N}_k(u)` the ``k`` users sharing
    the most items with :math:`u` (ties towards smaller ids). Users with no
    co-occurring user get no edges. Stored as ``('user', 'co_occurs',
    'user')`` with ``edge_index`` (neighbour :math:`v` -> user :math:`u`)
    and ``edge_weight`` :math:`s_{u,v}`, so that a weighted sum over
    incoming edges computes :math:`\sum_v s_{u,v} \mathbf{x}_v`.

    The counts are computed for blocks of users at a time, each block's
    top ``k`` kept before the next, so that memory grows with the block
    and not with the number of co-occurring pairs (about 80 million at
    10^6 interactions of :func:`~mde_pyg.data.make_synthetic`). The graph
    does not depend on the block size.

    Args:
        k (int, optional): Neighbours kept per user. (default: :obj:`40`)
        block_pairs (int, optional): The most co-occurring (user, user)
            pairs, counted with multiplicity, held at once.
            (default: :obj:`2**22`)
    """

    def __init__(self, k: int = 40, block_pairs: int = 2**22) -> None:
        if k < 1:
            raise ValueError(f"'k' must be a positive integer, got {k}")
        if block_pairs < 1:
            raise ValueError(f"'block_pairs' must be a positive integer, "
                             f"got {block_pairs}")
        self.k = k
        self.block_pairs = block_pairs

    def forward(self, data: HeteroData) -> HeteroData:
        """Add the co-occurrence graph to ``data``."""
        import scipy.sparse as sp

        check_data(data)
        num_users = data["user"].num_nodes
        num_items = data["item"].num_nodes
        user, item = data[RATES].edge_index.cpu().numpy()
        r = sp.csr_matrix((np.ones(user.size, dtype=np.float32),
                           (user, item)), shape=(num_users, num_items))
        r_t = r.T.tocsr()
        # A user's row of R R^T has at most sum_{i in I_u} deg(i) entries.
        degree = np.bincount(item, minlength=num_items)
        work = np.bincount(user, weights=degree[item], minlength=num_users)
        empty = torch.empty(0, dtype=torch.long)
        rows, cols, values = [empty], [empty], [torch.empty(0)]
        for start, end in row_blocks(work, self.block_pairs):
            counts = (r[start:end] @ r_t).tocoo()
            off_diag = counts.row + start != counts.col
            row = torch.from_numpy(counts.row[off_diag].astype(np.int64))
            col = torch.from_numpy(counts.col[off_diag].astype(np.int64))
            value = torch.from_numpy(counts.data[off_diag])
            keep = topk_per_row(row, col, value, end - start, self.k)
            rows.append(row[keep] + start)
            cols.append(col[keep])
            values.append(value[keep])
        row, col, value = torch.cat(rows), torch.cat(cols), torch.cat(values)

        store = data[CO_OCCURS]
        store.edge_index = torch.stack([col, row])
        store.edge_weight = softmax_per_row(row, value, num_users)
        store.k = self.k  # users kept per user, read by DualGNN
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k})"


# Unit roundoffs (half the spacing of the significand) of bfloat16 (8
# significant bits) and float32 (24 significant bits).
_BF16_UNIT = 2.0**-8
_FP32_UNIT = 2.0**-24
_PRECISIONS = ("fp32", "bf16")
# Default [rows, columns] of a similarity panel on CPU: 32 MiB in float32,
# small enough to stay in the caches between the product and the max pass.
_CPU_PANEL = (1024, 8192)


def _group_size(block: int, width: int) -> int:
    """Return the group size of the pruning pass of ``[block, width]`` panels.

    It divides both sides and leaves at least 64 groups per row, so that the
    group maxima are a contiguous (vectorised) reduction.
    """
    for group in (32, 16, 8, 4, 2):
        if block % group == 0 and width % group == 0 and width >= 64 * group:
            return group
    return 1


def _tile_candidates(
    sim: Tensor,
    thr: Tensor,
    dim: int,
    group: int,
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Return the entries of a similarity tile above their query's threshold.

    The queries are the rows of ``sim`` (``dim=1``) or its columns
    (``dim=0``, the transposed tile), with one threshold each in ``thr``.
    The tile is cut along the other dimension into ``group`` interleaved
    slices; one max-reduction gives each query's maximum per group of
    ``group`` entries, and only the groups whose maximum beats the threshold
    are gathered and compared entry by entry.

    Returns:
        ``(query, neighbour, value)``: local positions in the tile, or
        :obj:`None` when no entry beats its threshold.
    """
    if dim == 1:
        grouped = sim.unflatten(1, (group, -1))  # [R, group, C / group]
        hit = grouped.amax(1) > thr[:, None]
        query, slot = hit.nonzero().unbind(1)
    else:  # reduce and compare in the tile's own layout, which is faster
        grouped = sim.unflatten(0, (group, -1))  # [group, R / group, C]
        hit = grouped.amax(0) > thr
        slot, query = hit.nonzero().unbind(1)
    if query.numel() == 0:
        return None
    if dim == 1:
        value = grouped[query, :, slot]  # [P, group]
    else:
        value = grouped[:, slot, query].t()
    pos, member = (value > thr[query, None]).nonzero().unbind(1)
    return (query[pos], slot[pos] + member * grouped.size(1 + dim),
            value[pos, member])


def _merge_topk(val: Tensor, idx: Tensor, row: Tensor, col: Tensor,
                value: Tensor) -> None:
    """Merge candidates ``(row, col, value)`` into the running top lists.

    ``val`` and ``idx`` (``[N, c]``, best first) are updated in place.
    """
    c = val.size(1)
    order = row.argsort(stable=True)
    row, col, value = row[order], col[order], value[order]
    rows, count = torch.unique_consecutive(row, return_counts=True)
    slot = torch.repeat_interleave(
        torch.arange(rows.numel(), device=row.device), count)
    first = count.cumsum(0) - count
    pos = torch.arange(row.numel(), device=row.device) - first[slot] + c
    width = c + int(count.max())
    pool_val = val.new_full((rows.numel(), width), float("-inf"))
    pool_idx = idx.new_full((rows.numel(), width), -1)
    pool_val[:, :c] = val[rows]
    pool_idx[:, :c] = idx[rows]
    pool_val[slot, pos] = value.to(val.dtype)
    pool_idx[slot, pos] = col
    top = pool_val.topk(c, dim=1)
    val[rows] = top.values
    idx[rows] = pool_idx.gather(1, top.indices)


def _round_up(n: int, multiple: int) -> int:
    """Round ``n`` up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def _pad_to(t: Tensor, size: tuple[int, ...], value: float) -> Tensor:
    """Pad the trailing end of every dimension of ``t`` up to ``size``."""
    pad = []
    for have, want in zip(reversed(t.shape), reversed(size)):
        pad += [0, want - have]
    return F.pad(t, pad, value=value) if any(pad) else t


def _topk_blocks(x: Tensor, c: int, include_self: bool, block: int,
                 width: int) -> tuple[Tensor, Tensor]:
    """Top-``c`` values and indices of every row of ``x @ x.T``.

    See :func:`knn_cosine`: diagonal ``[block, block]`` tiles seed the lists,
    then each row block is multiplied with the columns after it in panels of
    ``[block, width]``, each panel serving its rows and, transposed, its
    columns.
    """
    num = x.size(0)
    inf = float("inf")
    group = _group_size(block, width)
    val = torch.full((num, c), -inf, device=x.device)
    idx = torch.full((num, c), -1, dtype=torch.long, device=x.device)

    # Diagonal tiles: an exact top-c within each block seeds the thresholds.
    for s in range(0, num, block):
        e = min(s + block, num)
        sim = (x[s:e] @ x[s:e].t()).float()
        if not include_self:
            sim.fill_diagonal_(-inf)
        top = sim.topk(min(c, e - s), dim=1)
        val[s:e, :top.values.size(1)] = top.values
        idx[s:e, :top.values.size(1)] = top.indices + s

    # Panels [s:e] x [t:u] right of the diagonal. Candidates (entries above
    # the current c-th best of their row, or of their column for the
    # transposed panel) are merged once about `block * c` have accumulated,
    # and at the end of each row block.
    buf = x.new_empty(block, width) if num > block else None
    for s in range(0, num, block):
        e = min(s + block, num)
        found_row: list[tuple[Tensor, Tensor, Tensor]] = []
        found_col: list[tuple[Tensor, Tensor, Tensor]] = []
        for t in range(e, num, width):
            u = min(t + width, num)
            if e - s == block and u - t == width:
                sim = torch.mm(x[s:e], x[t:u].t(), out=buf)
            else:  # a partial panel: pad to whole groups
                shape = (_round_up(e - s, group), _round_up(u - t, group))
                sim = _pad_to(x[s:e] @ x[t:u].t(), shape, -inf)
            for dim, found, q0, q1, n0 in ((1, found_row, s, e, t),
                                           (0, found_col, t, u, s)):
                thr = _pad_to(val[q0:q1, -1], (sim.size(1 - dim),), inf)
                hit = _tile_candidates(sim, thr, dim, group)
                if hit is not None:
                    found.append((hit[0] + q0, hit[1] + n0, hit[2]))
                if found and (u == num or sum(f[0].numel() for f in found)
                              >= block * c):
                    _merge_topk(val, idx, *(torch.cat(f) for f in zip(*found)))
                    found.clear()
    return val, idx


def _knn_rows(x: Tensor, rows: Tensor, k: int, include_self: bool,
              max_chunk_bytes: int) -> Tensor:
    """Exact top-``k`` of the given ``rows`` against all rows of ``x``."""
    num = x.size(0)
    chunk = max(1, max_chunk_bytes // (4 * num))
    out = torch.empty(rows.numel(), k, dtype=torch.long, device=x.device)
    for s in range(0, rows.numel(), chunk):
        row = rows[s:s + chunk]
        sim = x[row] @ x.t()
        if not include_self:
            sim[torch.arange(row.numel(), device=x.device), row] = float("-inf")
        out[s:s + chunk] = sim.topk(k, dim=1).indices
    return out


@contextmanager
def _float32_bf16_reductions(device: torch.device) -> Iterator[None]:
    """Keep cuBLAS's bfloat16 products on ``device`` to float32 partial
    sums (PyTorch lets split-K reduce them in bfloat16 by default, which the
    certificate of :func:`_knn_bf16` does not bound).
    """
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    old = matmul.allow_bf16_reduced_precision_reduction
    try:  # newer torch also holds whether split-K may be used at all
        old = (old, matmul.allow_bf16_reduced_precision_reduction_split_k)
    except AttributeError:
        pass
    matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        matmul.allow_bf16_reduced_precision_reduction = old


def _knn_bf16(x: Tensor, k: int, include_self: bool, block: int,
              width: int, max_chunk_bytes: int) -> Tensor:
    """The ``precision="bf16"`` path of :func:`knn_cosine`."""
    num, dim = x.shape
    k_max = num if include_self else num - 1
    c = min(k_max, 3 * k + 8)
    low = x.to(torch.bfloat16)
    with _float32_bf16_reductions(x.device):
        approx, cand = _topk_blocks(low, c, include_self, block, width)

    # Exact float32 similarities of the candidates, and the norms of each
    # row's bf16 copy and of its rounding error, in small row chunks.
    score = torch.empty(num, c, device=x.device)
    norm = torch.empty(num, device=x.device)
    err = torch.empty(num, device=x.device)
    chunk = max(1, min(256, max_chunk_bytes // (4 * c * dim)))
    near = x.new_empty(chunk * c, dim)
    for s in range(0, num, chunk):
        e = min(s + chunk, num)
        n = (e - s) * c
        torch.index_select(x, 0, cand[s:e].reshape(-1), out=near[:n])
        score[s:e] = torch.bmm(near[:n].view(e - s, c, dim),
                               x[s:e, :, None]).squeeze(-1)
        rounded = low[s:e].float()
        norm[s:e] = rounded.norm(dim=1)
        err[s:e] = (x[s:e] - rounded).norm(dim=1)
    top = score.topk(k, dim=1)
    out = cand.gather(1, top.indices)
    if c == k_max:  # every item is a candidate
        return out

    # Certificate. Write x = x' + r with x' the bf16 copy. An item j outside
    # the candidates of row i has a bf16 similarity of at most the last
    # candidate's, `last`, which the rounding of the product to bf16 moved
    # by at most 2^-8 of its size; x_i.x_j - x'_i.x'_j = r_i.x_j + x'_i.r_j
    # is at most err_i + norm_i * max(err); and float32 accumulation errs by
    # at most d 2^-24 per unit of |x'_i||x'_j| (float32 re-ranking too).
    last = approx[:, -1]
    bound = (last + 2 * _BF16_UNIT * last.abs() + err + norm * err.max() +
             dim * _FP32_UNIT * (norm * norm.max() + 2))
    redo = (top.values[:, -1] <= bound).nonzero().view(-1)
    if redo.numel() > 0:
        out[redo] = _knn_rows(x, redo, k, include_self, max_chunk_bytes)
    return out


def knn_cosine(
    x: Tensor,
    k: int,
    include_self: bool = False,
    chunk_size: int | None = None,
    max_chunk_bytes: int = 2**28,
    precision: str = "fp32",
) -> Tensor:
    r"""Return the ``k`` most cosine-similar rows of each row of ``x``.

    Exact and memory-bounded: computed on ``x``'s device by panels of
    :math:`B \times W` similarities, never an :math:`N \times N` matrix, in
    :math:`O(N (c + d) + B W)` memory, with :math:`c` the neighbours tracked
    per row (:math:`c = k`, or :math:`3k + 8` with ``precision="bf16"``).

    The rows are cut into blocks of :math:`B`. Every row keeps its :math:`c`
    best neighbours so far, seeded by an exact top-:math:`c` within its own
    block (the :math:`B \times B` diagonal tiles). Each block is then
    multiplied with the rows after it, :math:`W` at a time, so that every
    pair of rows is computed once: a panel serves both its :math:`B` rows and,
    transposed, its :math:`W` columns, half the multiplications of a
    row-by-row scan. Only the entries above the current :math:`c`-th best of
    their row are merged into its list, and they are found without sorting
    the panel: one max-reduction gives the maximum of each group of up to 32
    entries, and only the groups whose maximum beats the threshold are
    inspected. The thresholds rise fast (on random data a row merges about
    :math:`c \ln(N / B)` entries in all), so the cost is close to one matrix
    product and one max pass per panel.

    With ``precision="bf16"`` the panels are multiplied in bfloat16 (several
    times faster on CPUs with AMX or AVX512-BF16, and on GPUs) to keep
    :math:`3k + 8` candidates per row, which are re-ranked with exact float32
    similarities. Each row is then certified: if its :math:`k`-th exact
    similarity beats the largest one an item outside its candidates can have
    (the last candidate's bfloat16 similarity plus a rigorous bound on the
    error of bfloat16 inputs and output, assuming float32 accumulation as in
    oneDNN, and in cuBLAS, whose bfloat16 reductions are kept in float32
    while the panels are multiplied), the row is exact; otherwise it is
    recomputed in float32. The result is therefore the float32 one, not an
    approximate search; only the time depends on the data (on
    near-duplicates, more rows are recomputed). Where TF32 is allowed for
    float32 products on CUDA, the re-ranking and the recomputed rows use it
    too, as the ``"fp32"`` path does.

    Ties are broken arbitrarily, and near-ties within float32 rounding may
    be ordered differently from another float32 computation.

    Args:
        x (torch.Tensor): Features ``[N, d]``.
        k (int): Neighbours per row (at most ``N - 1`` without self).
        include_self (bool, optional): Let a row be its own neighbour, as
            MMRec's graph builder does implicitly. (default: :obj:`False`)
        chunk_size (int, optional): Rows per block, :math:`B`; by default
            1024 on CPU and the largest square tile within
            ``max_chunk_bytes`` on other devices.
        max_chunk_bytes (int, optional): Memory budget of one float32 panel
            (which sets :math:`W`, at most 8192 on CPU so that a panel stays
            in cache), and of one chunk of the re-ranking or of the float32
            fallback. (default: 256 MiB)
        precision (str, optional): :obj:`"fp32"` multiplies in float32;
            :obj:`"bf16"` in bfloat16 with the exact re-ranking and
            certificate above. (default: :obj:`"fp32"`)

    Returns:
        ``[N, k]`` neighbour indices, most similar first.
    """
    num = x.size(0)
    k_max = num if include_self else num - 1
    if not 1 <= k <= k_max:
        raise ValueError(f"'k' must be in [1, {k_max}] for {num} items, "
                         f"got {k}")
    if precision not in _PRECISIONS:
        raise ValueError(f"'precision' must be one of {_PRECISIONS}, got "
                         f"'{precision}'")
    x = F.normalize(x.to(torch.float), dim=-1)
    cpu = x.device.type == "cpu"
    if chunk_size is None:
        chunk_size = _CPU_PANEL[0] if cpu else math.isqrt(max_chunk_bytes // 4)
    block = max(1, min(num, chunk_size, math.isqrt(max_chunk_bytes // 4)))
    width = max(1, min(num, max_chunk_bytes // (4 * block)))
    if cpu:
        width = min(width, max(block, _CPU_PANEL[1]))
    if precision == "bf16":
        return _knn_bf16(x, k, include_self, block, width, max_chunk_bytes)
    return _topk_blocks(x, k, include_self, block, width)[1]


class ItemKNNGraph(BaseTransform):
    r"""Item-item cosine kNN graphs, one per modality (MDE, DRAGON, FREEDOM).

    For modality :math:`m`, each item keeps its ``k`` most cosine-similar
    items under the raw features :math:`\mathbf{X}_m` (binary edges
    :math:`\mathbf{A}_m`), then
    :math:`\mathbf{S}_m = \mathbf{D}^{-1/2} \mathbf{A}_m \mathbf{D}^{-1/2}`
    with :math:`\mathbf{D}` the row degrees (as MMRec; every row has ``k``
    neighbours, so each weight is :math:`1/k`). Stored as
    ``('item', f'similar_{m}', 'item')`` with ``edge_index`` (neighbour ->
    item) and ``edge_weight``. Computed in chunks on the features' device
    (see :func:`knn_cosine`).

    Args:
        k (int, optional): Neighbours per item (all other items, with a
            warning, where there are no more than ``k``).
            (default: :obj:`10`)
        modalities (Sequence[str], optional): Modalities to build; every
            ``x_<m>`` item attribute when :obj:`None`. (default: :obj:`None`)
        include_self (bool, optional): **[choice]** count an item as its own
            neighbour, as MMRec's top-k over the full similarity row does.
            (default: :obj:`False`)
        chunk_size (int, optional): Rows per similarity block.
            (default: automatic, see :func:`knn_cosine`)
        precision (str, optional): :obj:`"fp32"` or :obj:`"bf16"`, the
            similarity pass of :func:`knn_cosine`; both give the float32
            neighbours. (default: :obj:`"fp32"`)
    """

    def __init__(
        self,
        k: int = 10,
        modalities: Sequence[str] | None = None,
        include_self: bool = False,
        chunk_size: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if k < 1:
            raise ValueError(f"'k' must be a positive integer, got {k}")
        self.k = k
        self.modalities = None if modalities is None else list(modalities)
        self.include_self = include_self
        self.chunk_size = chunk_size
        self.precision = precision

    def forward(self, data: HeteroData) -> HeteroData:
        """Add one kNN graph per modality to ``data``."""
        check_data(data, interactions=False)
        names: list[str] = (modality_names(data) if self.modalities is None
                            else self.modalities)
        for m in names:
            x = _item_features(data, m, "ItemKNNGraph")
            num = x.size(0)
            k = min(self.k, num - 1 + self.include_self)
            if k < self.k:
                warnings.warn(
                    f"ItemKNNGraph(k={self.k}): modality '{m}' has {num} "
                    f"items, so each item gets all {k} "
                    f"{'items' if self.include_self else 'other items'} as "
                    f"neighbours; lower 'k' to silence this", stacklevel=3)
            nbr = knn_cosine(x, k, self.include_self, self.chunk_size,
                             precision=self.precision)
            row = torch.arange(num, device=x.device).repeat_interleave(
                nbr.size(1))
            col = nbr.reshape(-1)
            deg = torch.bincount(row, minlength=num).to(torch.float)
            store = data[similar_edge_type(m)]
            store.edge_index = torch.stack([col, row]).cpu()
            store.edge_weight = (deg[row] * deg[col]).rsqrt().cpu()
        return data

    def __repr__(self) -> str:
        # every argument that changes the graphs, the defaults left out (a
        # processed dataset's cache file is named from this string)
        parts = [f"k={self.k}"]
        if self.modalities is not None:
            parts.append(f"modalities={self.modalities}")
        if self.include_self:
            parts.append("include_self=True")
        if self.precision != "fp32":
            parts.append(f"precision='{self.precision}'")
        return f"{self.__class__.__name__}({', '.join(parts)})"


class MultiModalGraphs(BaseTransform):
    """Build every graph the models of :mod:`mde_pyg.models` read.

    Applies :class:`NormalizeUserItem`, :class:`UserCoOccurrenceGraph` and
    :class:`ItemKNNGraph` in turn.

    Args:
        k_user (int, optional): Co-occurring users kept per user.
            (default: :obj:`40`)
        k_item (int, optional): Neighbours per item and modality.
            (default: :obj:`10`)
        include_self (bool, optional): See :class:`ItemKNNGraph`.
            (default: :obj:`False`)
    """

    def __init__(self, k_user: int = 40, k_item: int = 10,
                 include_self: bool = False) -> None:
        self.transforms = [
            NormalizeUserItem(),
            UserCoOccurrenceGraph(k_user),
            ItemKNNGraph(k_item, include_self=include_self),
        ]

    def forward(self, data: HeteroData) -> HeteroData:
        """Add all graphs to ``data``."""
        for transform in self.transforms:
            data = transform(data)
        return data

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{self.__class__.__name__}({inner})"


def _item_features(data: HeteroData, modality: str, owner: str) -> Tensor:
    """``data['item'].x_<modality>``, or a :class:`ValueError` of ``owner``
    naming the modalities there are.
    """
    if f"x_{modality}" not in data["item"]:
        raise ValueError(
            f"{owner}: modality '{modality}' has no item features "
            f"'x_{modality}'; available: {modality_names(data)}")
    return data["item"][f"x_{modality}"]


class NormalizeFeatures(BaseTransform):
    r"""Rescale the item features that the models read.

    Raw features can differ in scale by orders of magnitude between
    modalities (e.g. VGGish audio rows have norms near 1,500, MiniLM text
    rows norm 1), and a projection initialised for unit-scale inputs then
    starts from huge scores. Apply this transform *after* the graph
    builders, which use the raw features (cosine kNN).

    * ``"l2"``: :math:`\mathbf{x}_i / \lVert\mathbf{x}_i\rVert_2` per row;
    * ``"standardize"``: zero mean and unit variance per column (over
      items; the population standard deviation), then ``"l2"`` per row. A
      constant column becomes 0; so does one whose standard deviation is
      at most ``min_std`` times the largest of its modality's columns.

    ``min_std`` matters for features with a column of rounding noise:
    Last.fm-2k's MiniLM text has one (column 319: values near
    :math:`10^{-8}` where the other columns' standard deviations are near
    :math:`0.05`), which ``min_std=0`` scales to unit variance like the
    signal columns; ``min_std=1e-4`` zeroes it.

    Args:
        method (str, optional): ``"l2"`` or ``"standardize"``.
            (default: :obj:`"l2"`)
        modalities (Sequence[str], optional): Modalities to rescale; every
            ``x_<m>`` item attribute when :obj:`None`.
        min_std (float, optional): With ``"standardize"``, the relative
            standard deviation below which a column counts as constant.
            (default: :obj:`0.0`: only columns constant to rounding, of
            standard deviation at most 1e-12)
    """

    METHODS = ("l2", "standardize")

    def __init__(self, method: str = "l2",
                 modalities: Sequence[str] | None = None,
                 min_std: float = 0.0) -> None:
        if method not in self.METHODS:
            raise ValueError(f"'method' must be one of {self.METHODS}, got "
                             f"'{method}'")
        if isinstance(min_std, bool) or not isinstance(min_std, numbers.Real) \
                or not 0 <= min_std < 1:
            raise ValueError(f"'min_std' must be a number in [0, 1), got "
                             f"{min_std!r}")
        self.method = method
        self.modalities = None if modalities is None else list(modalities)
        self.min_std = float(min_std)

    def forward(self, data: HeteroData) -> HeteroData:
        """Rescale ``data['item'].x_<m>`` in place."""
        names = (modality_names(data) if self.modalities is None
                 else self.modalities)
        for m in names:
            x = _item_features(data, m, "NormalizeFeatures").to(torch.float)
            if self.method == "standardize":
                std = x.std(0, correction=0)
                # constant (and, with min_std, rounding-noise) columns -> 0
                top = float(std.max()) if std.numel() else 0.0
                flat = std <= max(self.min_std * top, 1e-12)
                x = (x - x.mean(0)) / std.masked_fill(flat, math.inf)
            data["item"][f"x_{m}"] = F.normalize(x, dim=-1)
        return data

    def __repr__(self) -> str:
        # as ItemKNNGraph's: every argument that changes the features
        extra = ("" if self.modalities is None
                 else f", modalities={self.modalities}")
        if self.min_std:
            extra += f", min_std={self.min_std}"
        return f"{self.__class__.__name__}('{self.method}'{extra})"
