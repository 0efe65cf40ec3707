"""DRAGON (Zhou et al. 2023): dual graphs over a multi-modal encoder."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg.losses import embedding_bpr_loss, l2_reg
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import (
    MultiModalGraphEncoder,
    add_mixed_item_graph,
    add_user_graph,
    add_user_item_graph,
    check_modality_weights,
    feature_buffers,
)
from mde_pyg.nn.conv import MultiHopPropagation, SimpleGraphConv
from mde_pyg.nn.fusion import PreferenceFusion
from mde_pyg.nn.graphs import GraphBuffers


class DRAGON(Recommender):
    r"""DRAGON, from `Zhou et al. 2023 <https://arxiv.org/abs/2301.12097>`_.

    "Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal
    Recommendation". Per modality :math:`m`, the shared encoder
    (:class:`~mde_pyg.models.encoder.MultiModalGraphEncoder` with
    ``reduce="sum"``, ``normalize=True``) computes

    .. math::
        \mathbf{x}_m = \operatorname{normalize}([\mathbf{P}_m ;
        f_m(\mathbf{X}_m)]), \qquad
        \hat{\mathbf{x}}_m = \mathbf{x}_m + \hat{\mathbf{A}}\mathbf{x}_m +
        \hat{\mathbf{A}}^2 \mathbf{x}_m

    over the normalised user-item graph :math:`\hat{\mathbf{A}}`; then

    .. math::
        \mathbf{h}_i = \Vert_m \hat{\mathbf{x}}_{m,i}, \quad
        \mathbf{h}_u = \Vert_m \operatorname{softmax}(\mathbf{W}_u)_{m}
        \hat{\mathbf{x}}_{m,u}, \quad
        \mathbf{h}_I \mathrel{+}= \mathbf{A}_{mm}^{L_m} \mathbf{h}_I, \quad
        \mathbf{h}_u \mathrel{+}= \sum_{v} s_{u,v} \mathbf{h}_v

    with :math:`\mathbf{A}_{mm}` the weighted sum of the modality kNN
    graphs (:func:`~mde_pyg.models.encoder.add_mixed_item_graph`) and
    :math:`s_{u,v}` the softmax co-occurrence weights of each user's top-k
    users (:class:`~mde_pyg.transforms.UserCoOccurrenceGraph`; the data's
    ``('user', 'co_occurs', 'user')`` graph, :math:`k = 40` by default).
    Loss: BPR plus :math:`\lambda` times :func:`~mde_pyg.losses.l2_reg` on
    the batch rows of :math:`\mathbf{P}_m` and :math:`\mathbf{W}_u`.

    Where MMRec's DRAGON code differs: its BPR is in bits (``log2``, 1.44
    times this one in nats); its L2 is the element mean,
    ``(P_m[user] ** 2).mean()`` plus ``(W_u ** 2).mean()`` over all
    users, so for the :math:`\mathbf{P}_m` rows its :math:`\lambda` is
    :math:`d` times this one (its grid 0.1 ... 1e-5 is 1.6e-3 ... 1.6e-7
    here at :math:`d = 64`); :math:`\mathbf{W}_u` is a raw parameter
    there (a softmax of random values at initialisation, none in the
    forward pass); and a user with fewer than 40 co-occurring users has
    random ones repeated, drawn again every epoch (here they keep fewer
    neighbours, as the MDE paper's graph does); its kNN graphs count each
    item among its own neighbours (see
    :func:`~mde_pyg.models.encoder.add_mixed_item_graph` for building them
    so). With equal user weights, no repeated neighbours and the same
    graphs, the representations are the same. MMRec's MLPs keep PyTorch's
    default initialisation (Xavier-uniform weights and zero biases here),
    and it ranks with the representation cached by the last training
    step's forward pass (one update old), where :meth:`get_embedding`
    recomputes it.

    Args:
        data (HeteroData): The dataset, with the graphs of
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        embedding_dim (int, optional): :math:`d` per modality.
            (default: :obj:`64`)
        num_layers (int, optional): User-item hops. (default: :obj:`2`)
        item_graph_layers (int, optional): Item-graph hops :math:`L_m`.
            (default: :obj:`1`)
        reg_weight (float, optional): :math:`\lambda` (on the scale of
            :func:`~mde_pyg.losses.l2_reg`, see above). (default: 1e-4)
        modality_weights (Mapping[str, float], optional): Mixing weights of
            :math:`\mathbf{A}_{mm}` per modality name. (default:
            :func:`~mde_pyg.models.encoder.default_modality_weights`)
        use_user_graph (bool, optional): Add the co-occurrence term on the
            user side. (default: :obj:`True`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 2,
        item_graph_layers: int = 1,
        reg_weight: float = 1e-4,
        modality_weights: Mapping[str, float] | None = None,
        use_user_graph: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        self.feature_dims = feature_buffers(self, data)
        self.modalities = list(self.feature_dims)
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.use_user_graph = use_user_graph
        self.modality_weights = check_modality_weights(modality_weights,
                                                       self.modalities)
        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        if use_user_graph:
            add_user_graph(self.graphs, data)
        add_mixed_item_graph(self.graphs, data, self.modality_weights)

        self.encoder = MultiModalGraphEncoder(
            self.num_users, self.feature_dims, embedding_dim, num_layers,
            reduce="sum", normalize=True)
        self.user_fusion = PreferenceFusion(self.num_users, self.modalities,
                                            "concat")
        self.item_propagation = MultiHopPropagation(
            item_graph_layers, "last", symmetric=False)
        self.user_propagation = SimpleGraphConv(residual=True)

    @property
    def features(self) -> dict[str, Tensor]:
        """The raw item features, ``{modality: [I, d_m]}``."""
        return {m: getattr(self, f"x_{m}") for m in self.modalities}

    def input_features(self) -> dict[str, Tensor]:
        """Return the item inputs of the encoder (the raw features)."""
        return self.features

    def encode(self, features: Mapping[str, Tensor]
               ) -> tuple[Tensor, Tensor]:
        """Return ``(user, item)`` representations from item inputs.

        Args:
            features (Mapping[str, Tensor]): ``[I, d_m]`` per modality.
        """
        x_hat = self.encoder(features, *self.graphs.get("user_item"))
        sizes = [self.num_users, self.num_items]
        split = {m: x.split(sizes) for m, x in x_hat.items()}
        user = self.user_fusion({m: x[0] for m, x in split.items()})[0]
        item = torch.cat([split[m][1] for m in self.modalities], dim=-1)
        item = item + self.item_propagation(item,
                                            *self.graphs.get("item_mm"))
        if self.use_user_graph:
            user = self.user_propagation(user, *self.graphs.get("user_user"))
        return user, item

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return users and items, each ``[*, |M| d]``."""
        return self.encode(self.input_features())

    def backbone_loss(self, user: Tensor, pos: Tensor, neg: Tensor,
                      features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Return the ``"bpr"`` and ``"reg"`` terms for given item inputs."""
        user_emb, item_emb = self.encode(features)
        u = user_emb.index_select(0, user)
        p, n = gather_rows(item_emb, pos, neg)
        batch = [self.encoder.user[m].index_select(0, user)
                 for m in self.modalities]
        if self.user_fusion.weight is not None:
            batch.append(self.user_fusion.weight.index_select(0, user))
        return {"bpr": embedding_bpr_loss(u, p, n),
                "reg": self.reg_weight * l2_reg(*batch)}

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the L2 term."""
        parts = self.backbone_loss(user, pos, neg, self.input_features())
        return self.sum_parts(parts)
