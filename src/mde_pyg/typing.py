"""Optional accelerated backends and shared type aliases.

The flags are read once at import, as :mod:`torch_geometric.typing` does:
``torch_sparse`` and ``torch_scatter`` speed up sparse products when
installed, and every code path falls back to pure PyTorch without them.
"""

from __future__ import annotations

from torch import Tensor

try:  # pragma: no cover - depends on the environment
    import torch_sparse  # noqa: F401
    from torch_sparse import SparseTensor

    WITH_TORCH_SPARSE = True
except (ImportError, OSError):  # pragma: no cover
    from torch_geometric.typing import SparseTensor  # placeholder class

    WITH_TORCH_SPARSE = False

try:  # pragma: no cover - depends on the environment
    import torch_scatter  # noqa: F401

    WITH_TORCH_SCATTER = True
except (ImportError, OSError):  # pragma: no cover
    WITH_TORCH_SCATTER = False

#: Per-modality tensors keyed by modality name, e.g. ``{"image": x, ...}``.
ModalityDict = dict[str, Tensor]
#: A pair ``(user_embeddings, item_embeddings)``.
UserItem = tuple[Tensor, Tensor]

__all__ = [
    "WITH_TORCH_SPARSE",
    "WITH_TORCH_SCATTER",
    "SparseTensor",
    "ModalityDict",
    "UserItem",
]
