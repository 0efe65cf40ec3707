"""Sparse adjacency construction and a sparse-dense product for training.

The fused training path multiplies a fixed (non-learnable) adjacency in
CSR layout with dense features. PyTorch's own backward of that product
transposes the adjacency at every step; :func:`csr_matmul` takes the
transpose once (or reuses the matrix itself when it is symmetric, as the
normalised user-item graph is), which halves the cost of a training step.
"""

from __future__ import annotations

import warnings

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

    Args:
        edge_index (torch.Tensor): Edges ``[2, E]``.
        edge_weight (torch.Tensor, optional): Weights ``[E]`` (ones when
            :obj:`None`).
        size (Tuple[int, int]): ``(num_source, num_target)``.
    """
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1),
                                 device=edge_index.device)
    adj_t = torch.sparse_coo_tensor(
        edge_index.flip(0), edge_weight.to(torch.float),
        (size[1], size[0]), check_invariants=False)
    with warnings.catch_warnings():  # "CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return adj_t.coalesce().to_sparse_csr()


def csr_transpose(adj: Tensor) -> Tensor:
    """Return the transpose of a CSR tensor, again in CSR layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return adj.t().to_sparse_csr()


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
        weight = torch.ones(user.numel())
    item = item + num_users
    edge_index = torch.stack([torch.cat([user, item]),
                              torch.cat([item, user])])
    return edge_index, torch.cat([weight, weight])


class _CSRMatmul(torch.autograd.Function):
    """``adj @ x`` whose backward uses a precomputed ``adj^T``."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_transposed: Tensor,
                x: Tensor) -> Tensor:
        ctx.adj_transposed = adj_transposed
        return _sparse_mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, _sparse_mm(ctx.adj_transposed, grad)


def _sparse_mm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` in the adjacency's precision, outside autocast.

    Sparse kernels have no bfloat16 path on CPU (MKL) or for mixed fp32 x
    bf16 operands on CUDA (cuSPARSE); the product is memory-bound, so fp32
    costs little.
    """
    with torch.autocast(x.device.type, enabled=False):
        return torch.sparse.mm(adj, x.to(adj.dtype).contiguous())


def csr_matmul(adj: Tensor, x: Tensor,
               adj_transposed: Tensor | None = None) -> Tensor:
    r"""Compute ``adj @ x`` for a fixed CSR ``adj`` and dense ``x``.

    The gradient with respect to ``x`` is ``adj^T @ grad``; pass
    ``adj_transposed`` (computed once, see :func:`csr_transpose`) or, for a
    symmetric ``adj``, ``adj`` itself. Without it, or when ``adj`` requires
    gradients, PyTorch's own sparse product is used.

    Args:
        adj (torch.Tensor): A sparse CSR matrix ``[N, M]``.
        x (torch.Tensor): Dense features ``[M, F]``.
        adj_transposed (torch.Tensor, optional): ``adj^T`` in CSR layout.
    """
    if adj_transposed is None or adj.requires_grad:
        return _sparse_mm(adj, x)
    return _CSRMatmul.apply(adj, adj_transposed, x)
