"""Parameter-free propagation layers over pre-normalised weighted graphs.

Each layer has two paths, as PyG's :class:`~torch_geometric.nn.conv.LGConv`:
an ``edge_index`` path (``message``, the general reference) and a fused
sparse path (``message_and_aggregate``), taken when the graph is passed as
a torch CSR tensor or a :class:`torch_sparse.SparseTensor` (``adj_t``).
The torch CSR path is the training default: its backward reuses the
adjacency (symmetric graphs) or a transpose computed once and cached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import spmm

from mde_pyg._cache import IdentityCache
from mde_pyg.nn.sparse import (
    HOP_REDUCTIONS,
    crow_indices,
    csr_edge_dot,
    csr_hops,
    csr_is_symmetric,
    csr_matmul,
    csr_tensor,
    csr_transpose,
    weighted_csr_matmul,
)


def _fixed_csr(edge_index: Adj, edge_weight: OptTensor) -> bool:
    """Whether the graph is a torch CSR matrix of fixed values, the input
    of the fused products.
    """
    return (isinstance(edge_index, Tensor)
            and edge_index.layout == torch.sparse_csr
            and edge_weight is None and not edge_index.requires_grad)


def _sparse_shape(edge_index: Adj) -> tuple[int, int] | None:
    """The ``[num_target, num_source]`` shape of a sparse graph (a torch
    sparse tensor or a :class:`torch_sparse.SparseTensor`), or
    :obj:`None` for an ``edge_index`` ``[2, E]``.
    """
    if isinstance(edge_index, Tensor) and edge_index.layout == torch.strided:
        return None
    return int(edge_index.size(0)), int(edge_index.size(1))


def _check_graph(owner: str, x: Tensor, edge_index: Adj,
                 edge_weight: OptTensor) -> None:
    """Raise a :class:`ValueError` (a :class:`TypeError` for an ``x`` that
    is no tensor) naming ``owner`` (the layer the caller built) unless
    ``x`` is ``[N, d]``, ``edge_weight`` holds one weight per edge of
    ``edge_index`` ``[2, E]`` and a sparse graph's source nodes are the
    rows of ``x``.

    Only sizes are compared, never values: no device synchronisation.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: 'x' must be a node feature tensor "
                        f"[N, d], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"{owner}: 'x' must be a node feature matrix [N, d] (one row "
            f"per node), got shape {tuple(x.shape)}; for one feature per "
            f"node pass x.view(-1, 1)")
    _check_sparse_weight(edge_index, edge_weight)
    shape = _sparse_shape(edge_index)
    if shape is None:
        num_edges = edge_index.size(-1)
        if edge_weight is not None and edge_weight.shape != (num_edges,):
            raise ValueError(
                f"{owner}: 'edge_weight' has shape "
                f"{tuple(edge_weight.shape)} but 'edge_index' has "
                f"{num_edges} edges; pass one weight per edge, of shape "
                f"({num_edges},)")
    elif shape[1] != x.size(0):
        raise ValueError(
            f"{owner}: the sparse graph has shape {shape} (adj_t, "
            f"[num_target, num_source]), so 'x' must have {shape[1]} rows, "
            f"one per source node, but it has {x.size(0)}; build the graph "
            f"over the nodes of 'x', to_csr(edge_index, edge_weight, "
            f"({x.size(0)}, num_target))")


def _check_sparse_weight(edge_index: Adj, edge_weight: OptTensor) -> None:
    """Refuse an ``edge_weight`` beside a sparse graph, whose own values
    are the weights (it would be ignored).
    """
    dense = (isinstance(edge_index, Tensor)
             and edge_index.layout == torch.strided)
    if edge_weight is not None and not dense:
        raise ValueError(
            "'edge_weight' is given with a sparse graph, whose values are "
            "the weights and would be used instead; build the sparse graph "
            "with the weights as its values, or pass 'edge_index' [2, E]")


class LightGCNConv(MessagePassing):
    r"""One LightGCN propagation step over given weights (MDE Eq. 2).

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i)} w_{j,i}
        \mathbf{x}_j

    with :math:`w_{j,i}` the weights given with the graph, e.g.
    :math:`1/\sqrt{d_i d_j}` from
    :class:`mde_pyg.transforms.NormalizeUserItem` (its ``edge_weight``, or
    the values of a CSR graph built from it), computed once per dataset.
    Unlike :class:`~torch_geometric.nn.conv.LGConv`, this layer never
    normalises: without ``edge_weight`` it sums the neighbours
    (:math:`w_{j,i} = 1`), so in place of ``LGConv()`` pass the normalised
    weights.

    Args:
        symmetric (bool, optional): The graph is symmetric
            (:math:`w_{j,i} = w_{i,j}`), so the fused CSR path reuses it in
            the backward pass instead of a transpose. Checked once per CSR
            graph (one transpose): a graph that is not symmetric raises a
            :class:`ValueError`, since its gradients would be wrong. The
            ``edge_index`` and :class:`torch_sparse.SparseTensor` paths
            never rely on it. (default: :obj:`True`)
        **kwargs (optional): Arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`; the fused
            sparse paths sum, so ``aggr`` must be ``"add"``.
    """

    def __init__(self, symmetric: bool = True, **kwargs) -> None:
        kwargs.setdefault("aggr", "add")
        if kwargs["aggr"] != "add":
            raise ValueError(
                f"{self.__class__.__name__} sums the weighted neighbours "
                f"(its sparse paths are weighted sums), so 'aggr' must be "
                f"'add', got {kwargs['aggr']!r}")
        super().__init__(**kwargs)
        self.symmetric = symmetric
        # per CSR graph: its transpose, or that it was found symmetric
        self._transposed = IdentityCache()
        self._checked = IdentityCache()

    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        """Propagate ``x`` once over the graph."""
        _check_graph(self.__class__.__name__, x, edge_index, edge_weight)
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        """Weight each neighbour's features."""
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        """Fused sparse product ``adj_t @ x``."""
        if isinstance(adj_t, Tensor) and adj_t.layout == torch.sparse_csr:
            # a graph with learnable values takes torch's own backward
            backward = (None if adj_t.requires_grad
                        else self._backward_matrix(adj_t))
            return csr_matmul(adj_t, x, backward)
        return spmm(adj_t, x, reduce=self.aggr)

    def _backward_matrix(self, adj_t: Tensor,
                         owner: str | None = None) -> Tensor:
        """The matrix of the fused backward: ``adj_t`` itself (checked
        once to be symmetric) or its transpose (computed once). A
        symmetry error names ``owner``, the module the caller built (this
        layer's class when :obj:`None`).
        """
        if self.symmetric:
            owner = owner or self.__class__.__name__
            self._checked.get(adj_t,
                              lambda a: self._check_symmetric(a, owner))
            return adj_t
        # One layer may serve several graphs (one per modality).
        return self._transposed.get(adj_t, csr_transpose)

    @staticmethod
    def _check_symmetric(adj_t: Tensor, owner: str) -> bool:
        # The backward of a symmetric layer reuses adj_t as its transpose.
        if not csr_is_symmetric(adj_t):
            raise ValueError(
                f"{owner}(symmetric=True) got a CSR graph of shape "
                f"{tuple(adj_t.shape)} that is not symmetric; its backward "
                f"would use the graph as its own transpose and give wrong "
                f"gradients: pass symmetric=False")
        return True

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(symmetric={self.symmetric})"


class SimpleGraphConv(LightGCNConv):
    r"""Simple graph convolution on a weighted homogeneous graph (MDE Eq. 4).

    .. math::
        \tilde{\mathbf{x}}_i = \mathbf{x}_i + \sum_{j \in \mathcal{N}(i)}
        s_{j,i} \mathbf{x}_j

    over the user co-occurrence graph or an item kNN graph.
    *Reconstruction*: the paper's prose leaves the residual term open.

    Args:
        residual (bool, optional): **[choice]** add :math:`\mathbf{x}_i`
            (as written above); :obj:`False` returns the neighbour sum only.
            (default: :obj:`True`)
        symmetric (bool, optional): See :class:`LightGCNConv`; the kNN and
            co-occurrence graphs are not symmetric. (default: :obj:`False`)
        **kwargs (optional): Arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.
    """

    def __init__(self, residual: bool = True, symmetric: bool = False,
                 **kwargs) -> None:
        super().__init__(symmetric=symmetric, **kwargs)
        self.residual = residual

    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None) -> Tensor:
        """Return ``x`` plus (if residual) its weighted neighbour sum.

        With the residual over a torch CSR graph, the sum is accumulated
        into the product (:func:`~mde_pyg.nn.sparse.csr_hops`, one hop,
        ``"sum"``), forward and backward.
        """
        _check_graph(self.__class__.__name__, x, edge_index, edge_weight)
        if self.residual and _fixed_csr(edge_index, edge_weight):
            return csr_hops(edge_index, x, 1, "sum",
                            self._backward_matrix(edge_index))
        out = super().forward(x, edge_index, edge_weight)
        return x + out if self.residual else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(residual={self.residual})"


class MultiHopPropagation(torch.nn.Module):
    r"""Stacked :class:`LightGCNConv` hops combined over layers (MDE Eq. 3).

    .. math::
        \bar{\mathbf{X}} = \frac{1}{L+1} \sum_{l=0}^{L} \mathbf{X}^{(l)},
        \qquad \mathbf{X}^{(l+1)} = \hat{\mathbf{A}} \mathbf{X}^{(l)}

    Args:
        num_layers (int, optional): Hops :math:`L`. (default: :obj:`2`)
        reduce (str, optional): ``"mean"`` (LightGCN, MDE) or ``"sum"``
            (DRAGON's :math:`\mathbf{x} + \mathbf{h}_1 + \mathbf{h}_2`) or
            ``"last"`` (:math:`\mathbf{X}^{(L)}` only). (default:
            :obj:`"mean"`)
        symmetric (bool, optional): See :class:`LightGCNConv`.
            (default: :obj:`True`)
    """

    def __init__(self, num_layers: int = 2, reduce: str = "mean",
                 symmetric: bool = True) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"'num_layers' must be >= 0, got {num_layers}")
        if reduce not in HOP_REDUCTIONS:
            raise ValueError(f"'reduce' must be one of {HOP_REDUCTIONS}, "
                             f"got '{reduce}'")
        self.num_layers = num_layers
        self.reduce = reduce
        self.conv = LightGCNConv(symmetric=symmetric)

    def forward(self, x: Tensor, edge_index: Adj,
                edge_weight: OptTensor = None,
                dropout: float = 0.0) -> Tensor:
        r"""Return the combination of ``x`` and its ``num_layers`` hops.

        With ``dropout > 0`` (and in training mode) each hop's output is
        dropped out before the next hop, :math:`\mathbf{X}^{(l+1)} =
        \operatorname{dropout}_p(\hat{\mathbf{A}} \mathbf{X}^{(l)})`
        (SLMRec's feature dropout).

        Over a torch CSR graph without dropout the hops run fused
        (:func:`~mde_pyg.nn.sparse.csr_hops`: the same values, one
        accumulating product per hop forward and backward).
        """
        owner = self.__class__.__name__
        _check_graph(owner, x, edge_index, edge_weight)
        shape = _sparse_shape(edge_index)
        if shape is not None and shape[0] != shape[1]:
            raise ValueError(
                f"{owner}: the sparse graph has shape {shape}, but each hop "
                f"propagates the previous hop's output over it again, so "
                f"it must be square [N, N]; for one step over a bipartite "
                f"graph use LightGCNConv")
        backward = None
        if (self.num_layers > 0 and isinstance(edge_index, Tensor)
                and edge_index.layout == torch.sparse_csr
                and not edge_index.requires_grad):
            # checked here, so that a graph that is not symmetric names
            # the module the caller built, not its inner layer
            backward = self.conv._backward_matrix(edge_index, owner)
        if (_fixed_csr(edge_index, edge_weight) and self.num_layers > 0
                and (dropout == 0.0 or not self.training)):
            return csr_hops(edge_index, x, self.num_layers, self.reduce,
                            backward)
        # A running sum: stacking the hops would copy them all once more.
        h = total = x
        for _ in range(self.num_layers):
            h = self.conv(h, edge_index, edge_weight)
            if dropout > 0.0:
                h = F.dropout(h, dropout, self.training)
            total = total + h
        if self.reduce == "last":
            return h
        if self.reduce == "mean":
            return total / (self.num_layers + 1)
        return total

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_layers={self.num_layers}, "
                f"reduce='{self.reduce}')")


class EdgeWeightedPropagation(nn.Module):
    r"""One propagation step over a fixed graph whose edge weights are
    computed anew at every call (e.g. GRCN's refined graph).

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \to i} w_{j,i} \mathbf{x}_j

    with gradients flowing into both :math:`\mathbf{x}` and
    :math:`\mathbf{w}`. With ``fused=False`` this is
    :class:`LightGCNConv`'s ``edge_index`` path (one message
    per edge); with ``fused=True`` a CSR product whose structure (and that
    of its transpose, for the backward pass) is sorted once here, and
    whose weight gradient is a sampled dense-dense product at the edges.
    :meth:`edge_dot` computes edge scores from the two ends of each edge
    on the same two paths.

    Args:
        edge_index (torch.Tensor): Edges ``[2, E]`` as ``(source,
            target)``; :meth:`forward` takes the weights in this order.
        size (Tuple[int, int]): ``(num_source, num_target)``.
        fused (bool, optional): Use the CSR path. (default: :obj:`True`)
    """

    def __init__(self, edge_index: Tensor, size: tuple[int, int],
                 fused: bool = True) -> None:
        super().__init__()
        self.shape = (int(size[0]), int(size[1]))
        self.fused = fused
        if not fused:
            self.register_buffer("edge_index", edge_index, persistent=False)
            self.conv = LightGCNConv(symmetric=False)
            return
        num_src, num_dst = self.shape
        src, dst = edge_index
        order = (dst * num_src + src).argsort(stable=True)
        src, dst = src[order], dst[order]
        t_order = (src * num_dst + dst).argsort(stable=True)
        inv_order = order.argsort()
        if torch.equal(order, torch.arange(order.numel(),
                                           device=order.device)):
            order = inv_order = None  # already in CSR order
        buffers = {"order": order, "inv_order": inv_order,
                   "crow": crow_indices(dst, num_dst),
                   "col": src, "t_order": t_order,
                   "t_crow": crow_indices(src[t_order], num_src),
                   "t_col": dst[t_order]}
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def matrix(self, weight: Tensor, transposed: bool = False) -> Tensor:
        """Return the CSR ``adj_t`` (``[num_target, num_source]``) of the
        weights ``weight`` given in CSR order, or its transpose.
        """
        if transposed:
            return csr_tensor(self.t_crow, self.t_col,
                        weight.index_select(0, self.t_order), self.shape)
        return csr_tensor(self.crow, self.col, weight, self.shape[::-1])

    def forward(self, x: Tensor, edge_weight: Tensor) -> Tensor:
        """Return the weighted neighbour sums ``[num_target, F]``.

        Args:
            x (torch.Tensor): Source node rows ``[num_source, F]``.
            edge_weight (torch.Tensor): One weight per edge ``[E]``, in
                the order of the ``edge_index`` the layer was built with.
        """
        self._check_rows("x", x, 0)
        num_edges = (self.edge_index.size(1) if not self.fused
                     else self.col.numel())
        if edge_weight.shape != (num_edges,):
            raise ValueError(
                f"{self.__class__.__name__}: 'edge_weight' has shape "
                f"{tuple(edge_weight.shape)} but the graph has {num_edges} "
                f"edges; pass one weight per edge, of shape ({num_edges},), "
                f"in the order of the 'edge_index' the layer was built with")
        if not self.fused:
            return self.conv.propagate(self.edge_index, x=x,
                                       edge_weight=edge_weight,
                                       size=self.shape)
        weight = edge_weight
        if self.order is not None:
            weight = weight.index_select(0, self.order)
        # in float32 outside autocast, as the sparse kernels require
        return weighted_csr_matmul(self, weight, x)

    def edge_dot(self, x_src: Tensor, x_dst: Tensor) -> Tensor:
        r"""Return :math:`\langle \mathbf{x}^{src}_j, \mathbf{x}^{dst}_i
        \rangle` for every edge :math:`j \to i`, in edge order.

        Args:
            x_src (torch.Tensor): Source node rows ``[num_source, F]``.
            x_dst (torch.Tensor): Target node rows ``[num_target, F]``.
        """
        self._check_rows("x_src", x_src, 0)
        self._check_rows("x_dst", x_dst, 1)
        if x_src.size(1) != x_dst.size(1):
            raise ValueError(
                f"{self.__class__.__name__}: 'x_src' has {x_src.size(1)} "
                f"columns but 'x_dst' has {x_dst.size(1)}; pass rows of one "
                f"width F")
        if not self.fused:
            src, dst = self.edge_index
            return (x_src.index_select(0, src) *
                    x_dst.index_select(0, dst)).sum(dim=-1)
        out = csr_edge_dot(self, x_src, x_dst)
        if self.inv_order is not None:
            out = out.index_select(0, self.inv_order)
        return out

    def _check_rows(self, name: str, x: Tensor, side: int) -> None:
        """Refuse ``x`` unless it is ``[n, F]`` with ``n`` the number of
        source (``side=0``) or target (``side=1``) nodes.
        """
        rows = self.shape[side]
        if x.dim() != 2 or x.size(0) != rows:
            nodes = "source" if side == 0 else "target"
            raise ValueError(
                f"{self.__class__.__name__}: '{name}' has shape "
                f"{tuple(x.shape)}, but the graph has {rows} {nodes} nodes "
                f"(size={self.shape}); pass one row per {nodes} node, "
                f"[{rows}, F]")

    def extra_repr(self) -> str:
        """Show the size and the path in ``repr``."""
        return f"size={self.shape}, fused={self.fused}"
