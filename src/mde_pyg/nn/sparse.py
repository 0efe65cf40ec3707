"""Sparse adjacency construction and a sparse-dense product for training.

The fused training path multiplies a fixed (non-learnable) adjacency in
CSR layout with dense features. PyTorch's own backward of that product
transposes the adjacency at every step; :func:`csr_matmul` takes the
transpose once (or reuses the matrix itself when it is symmetric, as the
normalised user-item graph is), which halves the cost of a training step.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg.data.mmrec import RATES


def to_csr(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    size: tuple[int, int],
) -> Tensor:
    r"""Return the ``adj_t`` of a weighted graph as a torch CSR tensor.

    ``edge_index`` holds ``(source, target)`` pairs, so that
    ``adj_t @ x`` sums :math:`w_{j \to i} \mathbf{x}_j` into row :math:`i`.
    The values keep the floating dtype of ``edge_weight`` (float64 stays
    float64); float32 without weights, or for integer, boolean and
    half-precision weights, which the sparse kernels do not take.

    Args:
        edge_index (torch.Tensor): Edges ``[2, E]``.
        edge_weight (torch.Tensor or None): Weights ``[E]``. Required
            (the second positional argument, it has no default): pass
            :obj:`None` for an unweighted graph, whose values are then
            ones.
        size (Tuple[int, int]): ``(num_source, num_target)``.
    """
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1),
                                 device=edge_index.device)
    dtype = (edge_weight.dtype if edge_weight.is_floating_point()
             else torch.float32)
    adj_t = torch.sparse_coo_tensor(
        edge_index.flip(0),
        edge_weight.to(torch.promote_types(dtype, torch.float32)),
        (size[1], size[0]), check_invariants=False)
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return adj_t.coalesce().to_sparse_csr()


def csr_transpose(adj: Tensor) -> Tensor:
    """Return the transpose of a CSR tensor, again in CSR layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return adj.t().to_sparse_csr()


def csr_is_symmetric(adj: Tensor, rtol: float = 1e-5) -> bool:
    """Whether a square CSR tensor equals its transpose: the same sparsity
    pattern, and values equal within ``rtol``.

    Args:
        adj (torch.Tensor): A sparse CSR matrix.
        rtol (float, optional): Relative tolerance of the values.
            (default: :obj:`1e-5`)
    """
    if adj.size(0) != adj.size(1):
        return False
    t = csr_transpose(adj)
    if (torch.equal(adj.crow_indices(), t.crow_indices())
            and torch.equal(adj.col_indices(), t.col_indices())):
        return torch.allclose(adj.values(), t.values(), rtol=rtol, atol=0.0)
    # unsorted columns or duplicate entries: compare the coalesced entries
    # (a COO tensor built afresh, which to_sparse_coo's is not: it comes
    # flagged as coalesced, and coalesce() would then keep duplicates)
    crow, col, value = adj.crow_indices(), adj.col_indices(), adj.values()
    row = torch.repeat_interleave(
        torch.arange(adj.size(0), device=adj.device), crow.diff())
    # (the indices come from a valid CSR tensor: no invariants to check)
    a = torch.sparse_coo_tensor(torch.stack([row, col]), value, adj.shape,
                                check_invariants=False).coalesce()
    b = torch.sparse_coo_tensor(torch.stack([col, row]), value, adj.shape,
                                check_invariants=False).coalesce()
    return (torch.equal(a.indices(), b.indices())
            and torch.allclose(a.values(), b.values(), rtol=rtol, atol=0.0))


def user_item_edges(data: HeteroData) -> tuple[Tensor, Tensor]:
    r"""Return the user-item graph as one ``(U+I)``-node homogeneous graph.

    Users keep ids ``0..U-1`` and items are shifted to ``U..U+I-1``; both
    directions of every train edge are listed, weighted by the normalised
    ``edge_weight`` of :class:`mde_pyg.transforms.NormalizeUserItem` (ones
    if absent).

    Returns:
        ``(edge_index [2, 2E], edge_weight [2E])``.
    """
    store = data[RATES]
    num_users = data["user"].num_nodes
    user, item = store.edge_index
    weight = store.get("edge_weight")
    if weight is None:
        weight = torch.ones(user.numel(), device=user.device)
    item = item + num_users
    edge_index = torch.stack([torch.cat([user, item]),
                              torch.cat([item, user])])
    return edge_index, torch.cat([weight, weight])


class _CSRMatmul(torch.autograd.Function):
    """``adj @ x`` whose backward uses a precomputed ``adj^T``."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_transposed: Tensor,
                x: Tensor) -> Tensor:
        ctx.adj_transposed, ctx.dtype = adj_transposed, x.dtype
        return _sparse_mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, _sparse_mm(ctx.adj_transposed,
                                      grad).to(ctx.dtype)


def _product_dtypes(a: Tensor, b: Tensor) -> tuple[torch.dtype,
                                                   torch.dtype]:
    """The dtypes of a sparse product of ``a`` and ``b``: that of its
    result and the one it is computed in, at least float32
    (:func:`_sparse_dtype`). The result has the wider of the two dtypes,
    as the ``edge_index`` path's ``w * x_j``, or under autocast the
    computed one, which autocast casts where the next operation needs.
    """
    dtype = _sparse_dtype(a, b)
    if torch.is_autocast_enabled(a.device.type):
        return dtype, dtype
    return torch.promote_types(a.dtype, b.dtype), dtype


def _csr_as(adj: Tensor, dtype: torch.dtype) -> Tensor:
    """``adj`` with its values in ``dtype``; a fixed CSR matrix shares its
    indices, only the values are copied (and only if the dtype differs).
    """
    if adj.dtype == dtype:
        return adj
    if adj.requires_grad or adj.layout != torch.sparse_csr:
        return adj.to(dtype)
    return csr_tensor(adj.crow_indices(), adj.col_indices(),
                      adj.values().to(dtype), tuple(adj.shape))


def _sparse_mm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` outside autocast, in the wider of the two dtypes.

    Sparse kernels have no half-precision path on CPU (MKL) or for mixed
    fp32 x bf16 operands on CUDA (cuSPARSE), so a product of half-precision
    operands runs in float32 (the product is memory-bound, so this costs
    little); it returns float32, unless both operands have one
    half-precision dtype (``model.half()``) and autocast is off, when it
    is cast back to it. A float64 ``x`` over a float32 ``adj`` (or the
    reverse) runs in float64, the other operand's values converted for
    the call.
    """
    out_dtype, dtype = _product_dtypes(adj, x)
    with torch.autocast(x.device.type, enabled=False):
        out = torch.sparse.mm(_csr_as(adj, dtype),
                              x.to(dtype).contiguous())
    return out.to(out_dtype)


def csr_matmul(adj: Tensor, x: Tensor,
               adj_transposed: Tensor | None = None) -> Tensor:
    r"""Compute ``adj @ x`` for a fixed CSR ``adj`` and dense ``x``.

    The gradient with respect to ``x`` is ``adj^T @ grad``; pass
    ``adj_transposed`` (computed once, see :func:`csr_transpose`) or, for a
    symmetric ``adj``, ``adj`` itself. Without it, or when ``adj`` requires
    gradients, PyTorch's own sparse product is used.

    The result has the wider of the two dtypes, as on the ``edge_index``
    path (float64 for a float64 ``x`` or ``adj``); half-precision operands
    are multiplied in float32, outside autocast, and under autocast the
    result is that float32. The gradient of ``x`` has the dtype of ``x``.

    Args:
        adj (torch.Tensor): A sparse CSR matrix ``[N, M]``.
        x (torch.Tensor): Dense features ``[M, F]``.
        adj_transposed (torch.Tensor, optional): ``adj^T`` in CSR layout.
    """
    if adj_transposed is None or adj.requires_grad:
        return _sparse_mm(adj, x)
    return _CSRMatmul.apply(adj, adj_transposed, x)


class _CSRHops(torch.autograd.Function):
    r"""The combination of ``num_layers`` hops over a fixed CSR ``adj``
    (:func:`csr_hops`), whose backward is the same combination over the
    transpose: :math:`\nabla_{\mathbf{x}} = c \sum_l (\mathbf{A}^\top)^l
    \mathbf{g}` for :math:`c \sum_l \mathbf{A}^l \mathbf{x}`, and
    :math:`(\mathbf{A}^\top)^L \mathbf{g}` for the last hop; so it is
    differentiable again.
    """

    @staticmethod
    def forward(ctx, x: Tensor, adj: Tensor, adj_transposed: Tensor,
                num_layers: int, reduce: str) -> Tensor:
        ctx.matrices = (adj_transposed, adj)
        ctx.num_layers, ctx.reduce, ctx.dtype = num_layers, reduce, x.dtype
        return _hops(adj, x, num_layers, reduce)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_x = _CSRHops.apply(grad, *ctx.matrices, ctx.num_layers,
                                ctx.reduce)
        return grad_x.to(ctx.dtype), None, None, None, None


def _hops(adj: Tensor, x: Tensor, num_layers: int, reduce: str) -> Tensor:
    """Horner's form of the hops, outside autocast, in the dtypes of
    :func:`_sparse_mm`.
    """
    out_dtype, dtype = _product_dtypes(adj, x)
    with torch.autocast(x.device.type, enabled=False):
        adj = _csr_as(adj, dtype)
        x = x.to(dtype).contiguous()
        if reduce == "last":
            for _ in range(num_layers):
                x = torch.sparse.mm(adj, x)
            return x.to(out_dtype)
        # x + A (x + A (x + ...)): each hop's sum is accumulated into the
        # product (beta = 1), not added to a running total afterwards
        out = x
        for _ in range(num_layers):
            out = torch.addmm(x, adj, out)
        if reduce == "mean":
            out.div_(num_layers + 1)
        return out.to(out_dtype)


#: How :func:`csr_hops` combines the hops.
HOP_REDUCTIONS = ("mean", "sum", "last")


def csr_hops(adj: Tensor, x: Tensor, num_layers: int, reduce: str = "mean",
             adj_transposed: Tensor | None = None) -> Tensor:
    r"""Return ``num_layers`` hops of ``x`` over a fixed CSR ``adj``,
    combined as LightGCN combines its layers.

    .. math::
        \texttt{"mean"}: \frac{1}{L+1} \sum_{l=0}^{L} \mathbf{A}^l
        \mathbf{x}, \qquad \texttt{"sum"}: \sum_{l=0}^{L} \mathbf{A}^l
        \mathbf{x}, \qquad \texttt{"last"}: \mathbf{A}^L \mathbf{x}.

    The sums are computed in Horner's form, :math:`\mathbf{x} +
    \mathbf{A}(\mathbf{x} + \mathbf{A}(\mathbf{x} + \dots))`, one
    product with accumulation (``torch.addmm``) per hop, so that neither
    the hops nor a running total are stored, and the backward is the same
    combination over :math:`\mathbf{A}^\top`. A stack of
    :func:`csr_matmul` hops with a running sum computes the same values
    with a zero-filled output and a separate addition per hop, and as many
    additions again in its backward. Dtypes as in :func:`csr_matmul`.

    Args:
        adj (torch.Tensor): A sparse CSR matrix ``[N, N]``.
        x (torch.Tensor): Dense features ``[N, F]``.
        num_layers (int): Hops :math:`L \geq 0`.
        reduce (str, optional): ``"mean"``, ``"sum"`` or ``"last"``.
            (default: :obj:`"mean"`)
        adj_transposed (torch.Tensor, optional): ``adj^T`` in CSR layout
            (see :func:`csr_matmul`); :obj:`None` for a symmetric ``adj``.
    """
    if reduce not in HOP_REDUCTIONS:
        raise ValueError(f"'reduce' must be one of {HOP_REDUCTIONS}, got "
                         f"'{reduce}'")
    if num_layers < 0:
        raise ValueError(f"'num_layers' must be >= 0, got {num_layers}")
    if num_layers == 0:  # x itself, as a new tensor
        return x.to(torch.promote_types(adj.dtype, x.dtype), copy=True)
    if adj_transposed is None:
        adj_transposed = adj
    return _CSRHops.apply(x, adj, adj_transposed, num_layers, reduce)


def crow_indices(row: Tensor, num_rows: int) -> Tensor:
    """Return the CSR row pointers of the sorted row ids ``row``."""
    crow = row.new_zeros(num_rows + 1)
    crow[1:] = torch.bincount(row, minlength=num_rows).cumsum(0)
    return crow


def csr_tensor(crow: Tensor, col: Tensor, value: Tensor,
               shape: tuple[int, int]) -> Tensor:
    """Return a CSR tensor of a known-valid structure (not re-checked).

    Args:
        crow (torch.Tensor): Row pointers ``[N + 1]``.
        col (torch.Tensor): Column ids ``[nnz]``, sorted within each row.
        value (torch.Tensor): Values ``[nnz]``.
        shape (Tuple[int, int]): ``(N, M)``.
    """
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, shape,
                                       check_invariants=False)


class _EdgeWeightedMatmul(torch.autograd.Function):
    r"""``A(w) @ x`` over a fixed CSR structure whose values ``w`` require
    gradients.

    PyTorch's own backward of a sparse CSR product with learnable values
    builds the gradient of the whole ``[N, M]`` matrix densely before
    masking it. Here the gradient of the values is the sampled product
    :math:`\partial w_{ij} = \langle \mathbf{g}_i, \mathbf{x}_j
    \rangle` at the stored entries only, and that of ``x`` a product with
    the transpose, whose structure is computed once.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, x: Tensor,
                graph: Any) -> Tensor:
        ctx.graph = graph
        ctx.save_for_backward(weight, x)
        return torch.sparse.mm(graph.matrix(weight), x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, x = ctx.saved_tensors
        graph = ctx.graph
        grad = grad.to(weight.dtype).contiguous()
        grad_weight = grad_x = None
        with torch.autocast(grad.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_weight = torch.sparse.sampled_addmm(
                    graph.matrix(weight), grad, x.t(), beta=0.0).values()
            if ctx.needs_input_grad[1]:
                grad_x = torch.sparse.mm(graph.matrix(weight, True), grad)
        return grad_weight, grad_x, None


class _EdgeDot(torch.autograd.Function):
    r"""The inner products :math:`\langle \mathbf{x}_i, \mathbf{x}_j
    \rangle` of the ends of every stored edge :math:`j \to i` (CSR
    order), a sampled dense-dense product whose backward is two sparse
    products; no ``[E, F]`` rows are gathered.
    """

    @staticmethod
    def forward(ctx, x_src: Tensor, x_dst: Tensor,
                graph: Any) -> Tensor:
        ctx.graph = graph
        ctx.save_for_backward(x_src, x_dst)
        mask = graph.matrix(x_src.new_zeros(graph.col.numel()))
        return torch.sparse.sampled_addmm(mask, x_dst, x_src.t(),
                                          beta=0.0).values()

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_src, x_dst = ctx.saved_tensors
        graph = ctx.graph
        grad = grad.to(x_src.dtype).contiguous()
        grad_src = grad_dst = None
        with torch.autocast(grad.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_src = torch.sparse.mm(graph.matrix(grad, True), x_dst)
            if ctx.needs_input_grad[1]:
                grad_dst = torch.sparse.mm(graph.matrix(grad), x_src)
        return grad_src, grad_dst, None


def weighted_csr_matmul(graph: Any, weight: Tensor, x: Tensor) -> Tensor:
    r"""Compute ``A(w) @ x`` where the values ``w`` of a fixed CSR
    structure require gradients.

    The gradient of ``w`` is computed at the stored entries only (a
    sampled dense-dense product), that of ``x`` by a product with the
    transpose; PyTorch's own backward would form a dense ``[N, M]``
    gradient first. The product runs outside autocast in float32 (or
    float64 where an input is), since the sparse kernels have no
    reduced-precision form, and returns the dtype :func:`csr_matmul`
    does; the gradients return in the inputs' dtypes.

    Args:
        graph: The structure, e.g. an
            :class:`~mde_pyg.nn.EdgeWeightedPropagation`: its
            ``matrix(values, transposed=False)`` returns the CSR matrix (or
            its transpose) of values given in CSR order.
        weight (torch.Tensor): Values ``[nnz]`` in CSR order.
        x (torch.Tensor): Dense ``[M, F]``.
    """
    out_dtype, dtype = _product_dtypes(weight, x)
    with torch.autocast(x.device.type, enabled=False):
        out = _EdgeWeightedMatmul.apply(weight.to(dtype),
                                        x.to(dtype).contiguous(), graph)
    return out.to(out_dtype)


def csr_edge_dot(graph: Any, x_src: Tensor, x_dst: Tensor) -> Tensor:
    r"""Return :math:`\langle \mathbf{x}^{dst}_i, \mathbf{x}^{src}_j
    \rangle` at every stored entry :math:`(i, j)` of a CSR structure, in
    CSR order, without gathering ``[nnz, F]`` rows; the backward is two
    sparse products. Computed outside autocast in float32 (or float64),
    with the result's dtype as in :func:`weighted_csr_matmul`.

    Args:
        graph: The structure, as in :func:`weighted_csr_matmul`.
        x_src (torch.Tensor): Column-side rows ``[M, F]``.
        x_dst (torch.Tensor): Row-side rows ``[N, F]``.
    """
    out_dtype, dtype = _product_dtypes(x_src, x_dst)
    with torch.autocast(x_src.device.type, enabled=False):
        out = _EdgeDot.apply(x_src.to(dtype).contiguous(),
                             x_dst.to(dtype).contiguous(), graph)
    return out.to(out_dtype)


def _sparse_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    """The dtype of a sparse product of ``a`` and ``b``: float32 or
    float64, the only ones the CPU sparse kernels take.
    """
    return torch.promote_types(torch.promote_types(a.dtype, b.dtype),
                               torch.float32)
