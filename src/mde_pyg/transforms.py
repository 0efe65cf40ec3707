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

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from mde_pyg.data.mmrec import RATED_BY, RATES, modality_names

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
        store = data[RATES]
        weight = user_item_norm(store.edge_index, data["user"].num_nodes,
                                data["item"].num_nodes)
        store.edge_weight = weight
        data[RATED_BY].edge_index = store.edge_index.flip(0)
        data[RATED_BY].edge_weight = weight
        return data


def topk_per_row(row: Tensor, col: Tensor, value: Tensor, num_rows: int,
                 k: int) -> Tensor:
    """Return a mask keeping the ``k`` largest ``value`` of each ``row``.

    Ties are broken towards the smaller ``col``, so the result does not
    depend on the input order.
    """
    # Sort by (row, -value, col): lexsort keys are applied last-first.
    order = np.lexsort((col.numpy(), -value.numpy(), row.numpy()))
    order = torch.from_numpy(order)
    sorted_row = row[order]
    start = torch.zeros(num_rows + 1, dtype=torch.long)
    start[1:] = torch.bincount(sorted_row, minlength=num_rows).cumsum(0)
    rank = torch.arange(row.numel()) - start[sorted_row]
    mask = torch.zeros(row.numel(), dtype=torch.bool)
    mask[order[rank < k]] = True
    return mask


def softmax_per_row(row: Tensor, value: Tensor, num_rows: int) -> Tensor:
    """Softmax of ``value`` within each group of equal ``row``."""
    value = value.to(torch.float)
    row_max = torch.full((num_rows,), float("-inf")).scatter_reduce(
        0, row, value, "amax")
    exp = (value - row_max[row]).exp()
    total = torch.zeros(num_rows).index_add_(0, row, exp)
    return exp / total[row]


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

    Args:
        k (int, optional): Neighbours kept per user. (default: :obj:`40`)
    """

    def __init__(self, k: int = 40) -> None:
        if k < 1:
            raise ValueError(f"'k' must be a positive integer, got {k}")
        self.k = k

    def forward(self, data: HeteroData) -> HeteroData:
        """Add the co-occurrence graph to ``data``."""
        import scipy.sparse as sp

        num_users = data["user"].num_nodes
        user, item = data[RATES].edge_index.numpy()
        r = sp.csr_matrix((np.ones(user.size, dtype=np.float32),
                           (user, item)),
                          shape=(num_users, data["item"].num_nodes))
        counts = (r @ r.T).tocoo()
        off_diag = counts.row != counts.col
        row = torch.from_numpy(counts.row[off_diag].astype(np.int64))
        col = torch.from_numpy(counts.col[off_diag].astype(np.int64))
        value = torch.from_numpy(counts.data[off_diag])
        keep = topk_per_row(row, col, value, num_users, self.k)
        row, col, value = row[keep], col[keep], value[keep]

        store = data[CO_OCCURS]
        store.edge_index = torch.stack([col, row])
        store.edge_weight = softmax_per_row(row, value, num_users)
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k})"


def knn_cosine(
    x: Tensor,
    k: int,
    include_self: bool = False,
    chunk_size: int | None = None,
    max_chunk_bytes: int = 2**28,
) -> Tensor:
    r"""Return the ``k`` most cosine-similar rows of each row of ``x``.

    Computed on ``x``'s device in row chunks of ``[chunk, N]`` similarities,
    never an :math:`N \times N` matrix, so that memory stays
    :math:`O(N (k + d) + \text{chunk} \cdot N)`.

    Args:
        x (torch.Tensor): Features ``[N, d]``.
        k (int): Neighbours per row (at most ``N - 1`` without self).
        include_self (bool, optional): Let a row be its own neighbour, as
            MMRec's graph builder does implicitly. (default: :obj:`False`)
        chunk_size (int, optional): Rows per chunk; by default the largest
            that keeps a chunk's similarities under ``max_chunk_bytes``.
        max_chunk_bytes (int, optional): Memory budget of one chunk.
            (default: 256 MiB)

    Returns:
        ``[N, k]`` neighbour indices, most similar first.
    """
    num = x.size(0)
    k_max = num if include_self else num - 1
    if not 1 <= k <= k_max:
        raise ValueError(f"'k' must be in [1, {k_max}] for {num} items, "
                         f"got {k}")
    x = F.normalize(x.to(torch.float), dim=-1)
    if chunk_size is None:
        chunk_size = max(1, min(num, max_chunk_bytes // (4 * num)))
    out = torch.empty(num, k, dtype=torch.long, device=x.device)
    for start in range(0, num, chunk_size):
        end = min(start + chunk_size, num)
        sim = x[start:end] @ x.t()
        if not include_self:
            rows = torch.arange(end - start, device=x.device)
            sim[rows, rows + start] = float("-inf")
        out[start:end] = sim.topk(k, dim=-1).indices
    return out


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
        k (int, optional): Neighbours per item. (default: :obj:`10`)
        modalities (Sequence[str], optional): Modalities to build; every
            ``x_<m>`` item attribute when :obj:`None`. (default: :obj:`None`)
        include_self (bool, optional): **[choice]** count an item as its own
            neighbour, as MMRec's top-k over the full similarity row does.
            (default: :obj:`False`)
        chunk_size (int, optional): Rows per similarity chunk.
            (default: automatic, 256 MiB per chunk)
    """

    def __init__(
        self,
        k: int = 10,
        modalities: Sequence[str] | None = None,
        include_self: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"'k' must be a positive integer, got {k}")
        self.k = k
        self.modalities = None if modalities is None else list(modalities)
        self.include_self = include_self
        self.chunk_size = chunk_size

    def forward(self, data: HeteroData) -> HeteroData:
        """Add one kNN graph per modality to ``data``."""
        names: list[str] = (modality_names(data) if self.modalities is None
                            else self.modalities)
        for m in names:
            if f"x_{m}" not in data["item"]:
                raise ValueError(
                    f"Modality '{m}' has no item features 'x_{m}'; available"
                    f": {modality_names(data)}")
            x = data["item"][f"x_{m}"]
            num = x.size(0)
            nbr = knn_cosine(x, min(self.k, num - 1 + self.include_self),
                             self.include_self, self.chunk_size)
            row = torch.arange(num, device=x.device).repeat_interleave(
                nbr.size(1))
            col = nbr.reshape(-1)
            deg = torch.bincount(row, minlength=num).to(torch.float)
            store = data[similar_edge_type(m)]
            store.edge_index = torch.stack([col, row]).cpu()
            store.edge_weight = (deg[row] * deg[col]).rsqrt().cpu()
        return data

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(k={self.k})"


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
