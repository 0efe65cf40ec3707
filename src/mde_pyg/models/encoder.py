"""The multi-modal graph encoder shared by MDE, DRAGON and SAND."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import coalesce

from mde_pyg.data.mmrec import modality_names
from mde_pyg.functional import normalize
from mde_pyg.nn.conv import MultiHopPropagation
from mde_pyg.nn.graphs import GraphBuffers
from mde_pyg.nn.sparse import user_item_edges
from mde_pyg.transforms import CO_OCCURS, similar_edge_type


def _require(data: HeteroData, edge_type, builder: str) -> None:
    if edge_type not in data.edge_types or "edge_weight" not in \
            data[edge_type]:
        raise ValueError(
            f"The data has no weighted {edge_type} graph; apply "
            f"mde_pyg.transforms.{builder} (or MultiModalGraphs) first")


def add_user_item_graph(graphs: GraphBuffers, data: HeteroData,
                        name: str = "user_item") -> None:
    """Store the normalised ``(U+I)``-node user-item graph of ``data``."""
    _require(data, ("user", "rates", "item"), "NormalizeUserItem")
    num = data["user"].num_nodes + data["item"].num_nodes
    edge_index, edge_weight = user_item_edges(data)
    graphs.add(name, edge_index, edge_weight, (num, num))


def add_user_graph(graphs: GraphBuffers, data: HeteroData,
                   name: str = "user_user") -> None:
    """Store the user co-occurrence graph of ``data``."""
    _require(data, CO_OCCURS, "UserCoOccurrenceGraph")
    num = data["user"].num_nodes
    store = data[CO_OCCURS]
    graphs.add(name, store.edge_index, store.edge_weight, (num, num))


def add_item_graphs(graphs: GraphBuffers, data: HeteroData,
                    modalities: Sequence[str]) -> None:
    """Store one item kNN graph per modality, named ``item_<m>``."""
    num = data["item"].num_nodes
    for m in modalities:
        _require(data, similar_edge_type(m), "ItemKNNGraph")
        store = data[similar_edge_type(m)]
        graphs.add(f"item_{m}", store.edge_index, store.edge_weight,
                   (num, num))


#: Modality names read as the visual one (lower case), by the baselines
#: whose reference code treats the image features apart.
VISUAL_NAMES: frozenset[str] = frozenset(
    {"image", "images", "img", "visual", "vision", "vis", "video", "v"})


def is_visual(name: str) -> bool:
    """Whether the modality ``name`` is visual: its first word (split at
    ``_``, ``-``, ``.`` or a space) is in :data:`VISUAL_NAMES`, any case.
    ``"image"``, ``"image_feat"``, ``"v_feat"`` (MMRec's) and ``"video"``
    are; ``"vggish"`` (audio) is not.
    """
    return re.split(r"[_\-. ]", name.lower(), maxsplit=1)[0] in VISUAL_NAMES


def default_modality_weights(modalities: Sequence[str],
                             visual_weight: float = 0.1
                             ) -> dict[str, float]:
    """Return MMRec's item-graph mixing weights for ``modalities``.

    The first visual modality (:func:`is_visual`: ``"image"``,
    ``"video"``, ...) gets ``visual_weight`` and the others share the rest
    equally, as
    MMRec's ``mm_image_weight = 0.1`` (image 0.1, text 0.9); without such a
    modality all weigh the same.

    Args:
        modalities (Sequence[str]): Modality names.
        visual_weight (float, optional): Weight of the visual modality.
            (default: :obj:`0.1`)
    """
    names = list(modalities)
    if not names:
        raise ValueError("'modalities' is empty")
    visual = [m for m in names if is_visual(m)]
    if len(names) == 1 or not visual:
        return {m: 1.0 / len(names) for m in names}
    rest = (1.0 - visual_weight) / (len(names) - 1)
    return {m: visual_weight if m == visual[0] else rest for m in names}


def add_mixed_item_graph(graphs: GraphBuffers, data: HeteroData,
                         weights: Mapping[str, float],
                         name: str = "item_mm") -> None:
    r"""Store the weighted sum of the modality kNN graphs of ``data``.

    .. math::
        \mathbf{A}_{mm} = \sum_{m} w_m \mathbf{S}_m

    with :math:`\mathbf{S}_m` the normalised kNN graph
    ``('item', 'similar_<m>', 'item')`` of
    :class:`mde_pyg.transforms.ItemKNNGraph` (FREEDOM, DRAGON, SAND). That
    graph leaves each item out of its own neighbours by default; MMRec's
    code (and the SAND authors') takes the top-k over the whole similarity
    row, so each item is one of its own :math:`k`: build the data with
    ``ItemKNNGraph(include_self=True)`` (``MultiModalGraphs(...,
    include_self=True)``, ``mde-pyg train --knn-include-self``) for theirs.

    Args:
        graphs (GraphBuffers): Where to store the graph.
        data (HeteroData): The dataset with the kNN graphs.
        weights (Mapping[str, float]): Modality -> :math:`w_m \ge 0`.
        name (str, optional): Graph name. (default: ``"item_mm"``)
    """
    num = data["item"].num_nodes
    edge_index, edge_weight = [], []
    for m, w in weights.items():
        edge_type = similar_edge_type(m)
        _require(data, edge_type, "ItemKNNGraph")
        store = data[edge_type]
        edge_index.append(store.edge_index)
        edge_weight.append(w * store.edge_weight.to(torch.float))
    index, weight = coalesce(torch.cat(edge_index, dim=1),
                             torch.cat(edge_weight), num, reduce="sum")
    graphs.add(name, index, weight, (num, num))


def check_modality_weights(weights: Mapping[str, float] | None,
                           modalities: Sequence[str]) -> dict[str, float]:
    """Validate user-given mixing weights, or return the defaults.

    Args:
        weights (Mapping[str, float] or None): One non-negative weight per
            modality of ``modalities``, with a positive sum;
            :func:`default_modality_weights` when :obj:`None`.
        modalities (Sequence[str]): The model's modalities.
    """
    if weights is None:
        return default_modality_weights(modalities)
    names = list(modalities)
    if not isinstance(weights, Mapping):
        raise ValueError(
            f"'modality_weights' must be a mapping from each modality "
            f"{names} to a non-negative weight, got {weights!r}; pass e.g. "
            f"{default_modality_weights(names)}")
    weights = dict(weights)
    if set(weights) != set(names):
        raise ValueError(
            f"'modality_weights' must name every modality {names}"
            f" exactly once, got {list(weights)}")
    try:
        floats = {m: float(weights[m]) for m in names}
    except (TypeError, ValueError):
        floats = None
    if floats is None or not all(
            math.isfinite(w) and w >= 0 for w in floats.values()) or \
            sum(floats.values()) <= 0:
        raise ValueError(f"'modality_weights' must be non-negative numbers "
                         f"with a positive sum, got {weights}")
    return floats


def feature_mlp(in_dim: int, out_dim: int, hidden_dim: int | None
                ) -> nn.Module:
    """A 2-layer LeakyReLU MLP, or one linear map when ``hidden_dim`` is
    :obj:`None`.
    """
    if hidden_dim is None:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LeakyReLU(),
                         nn.Linear(hidden_dim, out_dim))


class MultiModalGraphEncoder(nn.Module):
    r"""Per-modality projection and LightGCN propagation (MDE Eq. 2-3).

    For each modality :math:`m`: a learnable user matrix
    :math:`\mathbf{U}_m` (Xavier init) and the item matrix
    :math:`\mathbf{I}_m = f_m(\mathbf{X}_m)` projected from the raw
    features by an MLP (:math:`d_m \to 4d \to d`, LeakyReLU, as DRAGON);
    then :math:`\mathbf{X}^{(0)}_m = [\mathbf{U}_m; \mathbf{I}_m]`
    propagates over the normalised user-item graph:

    .. math::
        \bar{\mathbf{X}}_m = \operatorname{reduce}_{l=0..L}
        (\mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2})^l
        \mathbf{X}^{(0)}_m

    Args:
        num_users (int): Users.
        feature_dims (Mapping[str, int]): Modality name -> raw feature width.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): Hops :math:`L`. (default: :obj:`2`)
        reduce (str, optional): Combination over layers, ``"mean"`` (MDE)
            or ``"sum"`` (DRAGON). (default: :obj:`"mean"`)
        hidden_factor (int, optional): MLP hidden width is
            ``hidden_factor * d``; ``0`` for a single linear map.
            (default: :obj:`4`)
        normalize (bool, optional): L2-normalise the rows of
            :math:`\mathbf{X}^{(0)}_m` (DRAGON). (default: :obj:`False`)
    """

    def __init__(
        self,
        num_users: int,
        feature_dims: Mapping[str, int],
        embedding_dim: int = 64,
        num_layers: int = 2,
        reduce: str = "mean",
        hidden_factor: int = 4,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        self.num_users = num_users
        self.modalities = list(feature_dims)
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        hidden = hidden_factor * embedding_dim if hidden_factor else None
        self.user = nn.ParameterDict({
            m: nn.Parameter(torch.empty(num_users, embedding_dim))
            for m in self.modalities
        })
        self.projection = nn.ModuleDict({
            m: feature_mlp(dim, embedding_dim, hidden)
            for m, dim in feature_dims.items()
        })
        self.propagation = MultiHopPropagation(num_layers, reduce)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-initialise user matrices and projections."""
        for weight in self.user.values():
            nn.init.xavier_uniform_(weight)
        for module in self.projection.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, features: Mapping[str, Tensor], edge_index: Adj,
                edge_weight: OptTensor = None) -> dict[str, Tensor]:
        r"""Return :math:`\bar{\mathbf{X}}_m` (``[U+I, d]``) per modality."""
        out = {}
        for m in self.modalities:
            x = torch.cat([self.user[m], self.projection[m](features[m])])
            if self.normalize:
                x = normalize(x)
            out[m] = self.propagation(x, edge_index, edge_weight)
        return out


def feature_buffers(module: nn.Module, data: HeteroData,
                    modalities: Sequence[str] | None = None,
                    concat: bool = False) -> dict[str, int]:
    """Register the item features of ``data`` as buffers ``x_<m>``
    (float32, detached from any autograd graph).

    Args:
        module (torch.nn.Module): Where to register them (non-persistent).
        data (HeteroData): The dataset with ``data['item'].x_<m>``.
        modalities (Sequence[str], optional): Which, in order. (default: all
            of :func:`~mde_pyg.data.modality_names`)
        concat (bool, optional): Register one buffer ``x`` holding all
            modalities side by side instead (a model that only reads them
            concatenated then gathers its batch rows once).
            (default: :obj:`False`)

    Returns:
        Modality name -> feature width.
    """
    names = modality_names(data) if modalities is None else list(modalities)
    if not names:
        raise ValueError(
            "The data has no item features 'x_<modality>', which this model "
            "reads; load them with the interactions (read_mmrec's "
            "'modalities', mde-pyg train --modality NAME=FILE, not "
            "--no-features)")
    # detached (a feature tensor that requires grad would collect one at
    # every step); float32 features are the data's own tensors, not copies
    features = {m: data["item"][f"x_{m}"].detach().to(torch.float)
                for m in names}
    if concat:
        module.register_buffer("x", torch.cat(list(features.values()), -1),
                               persistent=False)
    else:
        for m, x in features.items():
            module.register_buffer(f"x_{m}", x, persistent=False)
    return {m: x.size(1) for m, x in features.items()}
