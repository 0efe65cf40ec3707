"""LightGCN (He et al. 2020), the ID-only graph baseline."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.losses import embedding_bpr_loss, l2_reg
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import add_user_item_graph
from mde_pyg.nn.conv import MultiHopPropagation
from mde_pyg.nn.graphs import GraphBuffers


class LightGCN(Recommender):
    r"""LightGCN, from `He et al. 2020 <https://arxiv.org/abs/2002.02126>`_.

    "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation":

    .. math::
        \mathbf{E} = \frac{1}{L+1} \sum_{l=0}^{L} \hat{\mathbf{A}}^l
        \mathbf{E}^{(0)}, \qquad y_{u,i} = \langle \mathbf{e}_u,
        \mathbf{e}_i \rangle

    with :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2} \mathbf{A}
    \mathbf{D}^{-1/2}` the normalised user-item graph and
    :math:`\mathbf{E}^{(0)}` learnable embeddings (users first, Xavier
    init), trained with

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda \big(
        \lVert \mathbf{E}^{(0)}_{B_u} \rVert^2 +
        \lVert \mathbf{E}^{(0)}_{B_{i^+}} \rVert^2 +
        \lVert \mathbf{E}^{(0)}_{B_{i^-}} \rVert^2 \big)

    (:func:`~mde_pyg.losses.l2_reg` on the batch rows). It computes the
    same embeddings as :class:`torch_geometric.nn.models.LightGCN` with
    uniform layer weights :math:`1/(L+1)`. MMRec's LightGCN regularises
    with ``EmbLoss``, the unsquared Frobenius norms of the three batch
    matrices over :math:`B` (:func:`~mde_pyg.losses.embedding_norm_reg`),
    so its :math:`\lambda` is on another scale. :math:`\mathbf{E}^{(0)}`
    is one Xavier-uniform table over all users and items, as PyG's
    LightGCN; MMRec initialises the user and item tables apart, each with
    its own fans (on Amazon Baby its items start about 1.9 times wider).
    FREEDOM and BM3 inherit this.

    Args:
        data (HeteroData): The dataset, with the normalised user-item graph
            of :class:`mde_pyg.transforms.NormalizeUserItem`.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): Hops :math:`L`. (default: :obj:`3`)
        reg_weight (float, optional): :math:`\lambda`. (default: 1e-4)
        fused (bool, optional): Propagate with fused CSR products; see
            :class:`~mde_pyg.nn.GraphBuffers`. (default: :obj:`True`)
    """

    reads_features: bool = False

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 3,
        reg_weight: float = 1e-4,
        fused: bool = True,
    ) -> None:
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.embedding = nn.Embedding(self.num_users + self.num_items,
                                      embedding_dim)
        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        self.propagation = MultiHopPropagation(num_layers, "mean")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Xavier-initialise the embeddings :math:`\mathbf{E}^{(0)}`."""
        nn.init.xavier_uniform_(self.embedding.weight)

    def propagate(self, graph: str = "user_item") -> tuple[Tensor, Tensor]:
        """Return the layer-averaged ``(user, item)`` embeddings.

        Args:
            graph (str, optional): Name of the user-item graph in
                :attr:`graphs` to propagate over. (default: ``"user_item"``)
        """
        out = self.propagation(self.embedding.weight, *self.graphs.get(graph))
        return tuple(out.split([self.num_users, self.num_items]))

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the final ``(user, item)`` embeddings."""
        return self.propagate()

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the L2 term on the batch's initial embeddings."""
        rows = (user, pos + self.num_users, neg + self.num_users)
        ego = self.embedding.weight
        out = self.propagation(ego, *self.graphs.get("user_item"))
        parts = {"bpr": embedding_bpr_loss(*gather_rows(out, *rows)),
                 "reg": self.reg_weight * l2_reg(*gather_rows(ego, *rows))}
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the number of hops in ``repr``."""
        return [f"num_layers={self.num_layers}"]
