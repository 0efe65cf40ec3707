"""A container that keeps a model's fixed graphs on its device."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.typing import Adj, OptTensor

from mde_pyg.nn.sparse import to_csr


class GraphBuffers(nn.Module):
    """Fixed weighted graphs stored as non-persistent buffers.

    Each graph is kept either as a torch CSR ``adj_t`` (``fused=True``, the
    fast training path of :class:`mde_pyg.nn.LightGCNConv`) or as
    ``edge_index`` plus ``edge_weight`` (the general message-passing path).
    The buffers follow the module across ``.to(device)`` and are rebuilt
    from the data, so they are left out of ``state_dict``.

    Args:
        fused (bool, optional): Store graphs as CSR tensors.
            (default: :obj:`True`)
    """

    def __init__(self, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        self.names: list = []

    def add(self, name: str, edge_index: Tensor, edge_weight: OptTensor,
            size: tuple[int, int]) -> None:
        """Store the graph ``name`` with ``size = (num_src, num_dst)``.

        Floating weights are stored in float32, the dtype of the model's
        parameters (``model.double()`` converts them with the rest), so
        that float64 weights in the data do not make a float32 model's
        propagation float64.
        """
        if edge_weight is not None and edge_weight.is_floating_point():
            edge_weight = edge_weight.float()
        if self.fused:
            self.register_buffer(f"{name}_adj",
                                 to_csr(edge_index, edge_weight, size),
                                 persistent=False)
        else:
            self.register_buffer(f"{name}_edge_index", edge_index,
                                 persistent=False)
            self.register_buffer(f"{name}_edge_weight", edge_weight,
                                 persistent=False)
        self.names.append(name)

    def set(self, name: str, edge_index: Tensor, edge_weight: OptTensor,
            size: tuple[int, int]) -> None:
        """Replace graph ``name`` (e.g. a re-sampled pruned graph), its
        weights in the dtype of the graph it replaces (float32 where that
        had no weights).
        """
        adj, old_weight = self.get(name)
        device = adj.device
        dtype = adj.dtype if self.fused else (
            torch.float32 if old_weight is None else old_weight.dtype)
        if edge_weight is None and self.fused:
            edge_weight = torch.ones(edge_index.size(1), dtype=dtype)
        elif edge_weight is not None and edge_weight.is_floating_point():
            edge_weight = edge_weight.to(dtype)
        if self.fused:
            adj = to_csr(edge_index.to(device),
                         None if edge_weight is None
                         else edge_weight.to(device), size)
            # to_csr makes half precision float32: back to the graph's own
            setattr(self, f"{name}_adj",
                    adj if adj.dtype == dtype else adj.to(dtype))
        else:
            setattr(self, f"{name}_edge_index", edge_index.to(device))
            setattr(self, f"{name}_edge_weight",
                    None if edge_weight is None else edge_weight.to(device))

    def get(self, name: str) -> tuple[Adj, Tensor | None]:
        """Return ``(adj_t, None)`` or ``(edge_index, edge_weight)``."""
        if self.fused:
            return getattr(self, f"{name}_adj"), None
        return (getattr(self, f"{name}_edge_index"),
                getattr(self, f"{name}_edge_weight"))

    def extra_repr(self) -> str:
        """Show the stored graph names in ``repr``."""
        return f"{self.names}, fused={self.fused}"
