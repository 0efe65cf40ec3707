r"""FREEDOM (Zhou and Shen 2023): frozen item graph, pruned user-item graph.

Its frozen item graph is the weighted multi-modal item graph
:math:`\mathbf{A}_{mm} = \sum_m w_m \mathbf{S}_m` that FREEDOM, DRAGON and
SAND share (:func:`~mde_pyg.models.encoder.add_mixed_item_graph`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.data.mmrec import RATES
from mde_pyg.losses import embedding_bpr_loss
from mde_pyg.models.base import gather_rows, map_rows
from mde_pyg.models.encoder import (
    add_mixed_item_graph,
    check_modality_weights,
    feature_buffers,
)
from mde_pyg.models.lightgcn import LightGCN
from mde_pyg.nn.conv import MultiHopPropagation
from mde_pyg.nn.sparse import user_item_edges
from mde_pyg.transforms import user_item_norm


def degree_sensitive_sample(weight: Tensor, num_samples: int,
                            generator: torch.Generator | None = None
                            ) -> Tensor:
    r"""Draw ``num_samples`` indices without replacement, by ``weight``.

    Successive draws without replacement with probability proportional to
    ``weight`` among the remaining indices, done at once by the Gumbel
    top-:math:`k` trick: keep the :math:`k` largest
    :math:`\log w_e - \log \epsilon_e`, :math:`\epsilon_e \sim
    \mathrm{Exp}(1)` (FREEDOM samples the same distribution with
    :func:`torch.multinomial`, which is limited to :math:`2^{24}`
    categories).

    Args:
        weight (torch.Tensor): Positive weights ``[E]``.
        num_samples (int): :math:`k \le E`.
        generator (torch.Generator, optional): Random generator on
            ``weight``'s device. (default: :obj:`None`)

    Returns:
        The sampled indices ``[k]``, sorted.
    """
    if not 0 <= num_samples <= weight.numel():
        raise ValueError(f"'num_samples' must be in [0, {weight.numel()}], "
                         f"got {num_samples}")
    noise = torch.empty_like(weight, dtype=torch.float).exponential_(
        generator=generator)
    key = weight.to(torch.float).log() - noise.log()
    return key.topk(num_samples).indices.sort().values


class FREEDOM(LightGCN):
    r"""FREEDOM, from `Zhou and Shen 2023 <https://arxiv.org/abs/2211.06924>`_.

    "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation". A frozen item-item graph
    :math:`\mathbf{A}_{mm} = \sum_m w_m \mathbf{S}_m` (image 0.1, text 0.9;
    :func:`add_mixed_item_graph`) smooths the item ID embeddings, and
    LightGCN runs on a *degree-sensitively pruned* user-item graph
    :math:`\hat{\mathbf{A}}_p`, re-sampled every epoch
    (:meth:`on_epoch_start`):

    .. math::
        \mathbf{h} = \mathbf{A}_{mm}^{L_m} \mathbf{E}^{(0)}_I, \qquad
        [\mathbf{E}_U; \mathbf{E}_I] = \frac{1}{L+1} \sum_{l=0}^{L}
        \hat{\mathbf{A}}_p^l \mathbf{E}^{(0)}, \qquad
        \mathbf{h}_i = \mathbf{e}_i + \mathbf{h}

    The pruned graph keeps :math:`(1 - p) |E|` train edges (rounded),
    drawn without replacement with probability proportional to
    :math:`1/\sqrt{d_u d_i}` (:func:`degree_sensitive_sample`, full-graph
    degrees), and is re-normalised with its own degrees; evaluation
    (``model.eval()``) uses the full graph. The loss adds a BPR per
    modality on linearly projected raw features:

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR}(\mathbf{e}_u, \mathbf{h}_i)
        + \lambda \sum_m \mathcal{L}_{BPR}(\mathbf{e}_u,
        \mathbf{W}_m \mathbf{x}_{m,i})

    MMRec's FREEDOM code also trains the raw features
    :math:`\mathbf{x}_m` (``nn.Embedding.from_pretrained(freeze=False)``),
    through that term only; here they are fixed buffers, as in every model
    of the package. It keeps ``int`` rather than rounded :math:`(1 - p)
    |E|` edges, at most one fewer. Its feature projections keep PyTorch's
    default initialisation (here Xavier-uniform weights, zero biases).
    Its kNN graphs count each item among
    its own neighbours (see
    :func:`~mde_pyg.models.encoder.add_mixed_item_graph` for building
    them so).

    Args:
        data (HeteroData): The dataset, with the graphs of
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): User-item hops :math:`L`.
            (default: :obj:`2`)
        item_graph_layers (int, optional): Item-graph hops :math:`L_m`.
            (default: :obj:`1`)
        dropout (float, optional): Fraction :math:`p` of train edges pruned
            per epoch (MMRec grid: 0.8, 0.9). (default: :obj:`0.8`)
        reg_weight (float, optional): :math:`\lambda` (MMRec grid: 0, 1e-5,
            1e-4, 1e-3). (default: :obj:`1e-4`)
        modality_weights (Mapping[str, float], optional): :math:`w_m` per
            modality name. (default:
            :func:`~mde_pyg.models.encoder.default_modality_weights`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    reads_features: bool = True  # unlike LightGCN

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 2,
        item_graph_layers: int = 1,
        dropout: float = 0.8,
        reg_weight: float = 1e-4,
        modality_weights: Mapping[str, float] | None = None,
        fused: bool = True,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), got {dropout}")
        super().__init__(data, embedding_dim, num_layers, 0.0, fused)
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        self.dropout = dropout
        self.reg_weight = reg_weight
        self.modality_weights = check_modality_weights(modality_weights,
                                                       self.modalities)
        add_mixed_item_graph(self.graphs, data, self.modality_weights)
        self.item_propagation = MultiHopPropagation(
            item_graph_layers, "last", symmetric=False)
        self.projection = nn.ModuleDict({
            m: nn.Linear(dim, embedding_dim) for m, dim in dims.items()})
        for lin in self.projection.values():
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

        store = data[RATES]
        self.register_buffer("train_edge_index", store.edge_index,
                             persistent=False)
        self.register_buffer(
            "edge_keep_weight",
            user_item_norm(store.edge_index, self.num_users, self.num_items),
            persistent=False)
        self.num_kept = round(store.edge_index.size(1) * (1.0 - dropout))
        self.graphs.add("pruned", *user_item_edges(data),
                        (self.num_users + self.num_items,) * 2)
        self.prune()

    def sample_edges(self, generator: torch.Generator | None = None
                     ) -> Tensor:
        """Return the ids of the train edges kept by one pruning draw."""
        return degree_sensitive_sample(self.edge_keep_weight, self.num_kept,
                                       generator)

    def prune(self, generator: torch.Generator | None = None) -> None:
        """Re-sample the pruned, re-normalised user-item graph."""
        if self.dropout == 0.0:
            return
        kept = self.train_edge_index[:, self.sample_edges(generator)]
        pruned = HeteroData()
        pruned["user"].num_nodes = self.num_users
        pruned[RATES].edge_index = kept
        pruned[RATES].edge_weight = user_item_norm(kept, self.num_users,
                                                   self.num_items)
        self.graphs.set("pruned", *user_item_edges(pruned),
                        (self.num_users + self.num_items,) * 2)

    def on_epoch_start(self, epoch: int) -> None:
        """Re-sample the pruned graph (:meth:`prune`)."""
        self.prune()

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return ``(user, item)``; the pruned graph is used in training."""
        user, item = self.propagate("pruned" if self.training
                                    else "user_item")
        item_ego = self.embedding.weight[self.num_users:]
        h = self.item_propagation(item_ego, *self.graphs.get("item_mm"))
        return user, item + h

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the weighted per-modality feature BPR."""
        user_emb, item_emb = self.get_embedding()
        u = user_emb.index_select(0, user)
        parts = {"bpr": embedding_bpr_loss(u, *gather_rows(item_emb, pos,
                                                           neg))}
        feature_bpr, items = [], torch.cat([pos, neg])
        for m, lin in self.projection.items():
            f = map_rows(lin, getattr(self, f"x_{m}"), items)
            feature_bpr.append(embedding_bpr_loss(u, *f.split(pos.numel())))
        parts["reg"] = self.reg_weight * torch.stack(feature_bpr).sum()
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the pruning rate in ``repr``."""
        return [f"dropout={self.dropout}"]
