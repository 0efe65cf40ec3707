"""VBPR (He and McAuley 2016), matrix factorisation with item content."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.losses import embedding_bpr_loss, l2_reg
from mde_pyg.models.base import Recommender, check_batch, map_rows
from mde_pyg.models.encoder import feature_buffers


class VBPR(Recommender):
    r"""VBPR, from `He and McAuley 2016 <https://arxiv.org/abs/1510.01784>`_.

    "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", in
    MMRec's multi-modal form:

    .. math::
        \mathbf{h}_u \in \mathbb{R}^{2d}, \qquad
        \mathbf{h}_i = \big[\mathbf{e}_i \,;\, \mathbf{W} \big(
        \Vert_{m} \mathbf{x}_{m,i}\big) + \mathbf{b}\big], \qquad
        y_{u,i} = \langle \mathbf{h}_u, \mathbf{h}_i \rangle

    with :math:`\mathbf{e}_i \in \mathbb{R}^d` a learnable item embedding
    and the raw features of every modality concatenated (in the data's
    modality order) and mapped to :math:`d` by one linear layer. Loss:

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda \big(
        \lVert \mathbf{h}_{B_u} \rVert^2 + \lVert \mathbf{h}_{B_{i^+}}
        \rVert^2 + \lVert \mathbf{h}_{B_{i^-}} \rVert^2 \big)

    (:func:`~mde_pyg.losses.l2_reg`; MMRec's VBPR takes ``EmbLoss``, the
    unsquared Frobenius norms over :math:`B`, so its grid is on another
    scale).

    Args:
        data (HeteroData): The dataset, with item features ``x_<m>``.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        reg_weight (float, optional): :math:`\lambda`.
            (default: :obj:`1e-4`)
    """

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        reg_weight: float = 1e-4,
    ) -> None:
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        dims = feature_buffers(self, data, concat=True)
        self.modalities = list(dims)
        self.embedding_dim = embedding_dim
        self.reg_weight = reg_weight
        self.user = nn.Parameter(torch.empty(self.num_users,
                                             2 * embedding_dim))
        self.item = nn.Parameter(torch.empty(self.num_items, embedding_dim))
        self.item_linear = nn.Linear(sum(dims.values()), embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-initialise embeddings and the feature map."""
        nn.init.xavier_uniform_(self.user)
        nn.init.xavier_uniform_(self.item)
        nn.init.xavier_normal_(self.item_linear.weight)
        nn.init.zeros_(self.item_linear.bias)

    def content(self, item: Tensor | None = None) -> Tensor:
        """Return the mapped features of ``item`` (all when :obj:`None`)."""
        if item is None:
            return self.item_linear(self.x)
        return map_rows(self.item_linear, self.x, item)

    def item_embedding(self, item: Tensor | None = None) -> Tensor:
        """Return the item embeddings and mapped features (``[*, 2d]``)."""
        emb = self.item if item is None else self.item.index_select(0, item)
        return torch.cat([emb, self.content(item)], dim=-1)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return users ``[U, 2d]`` and items ``[I, 2d]``."""
        return self.user, self.item_embedding()

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the L2 term on the batch representations."""
        check_batch("VBPR.loss", user)  # split below would not say so
        u = self.user.index_select(0, user)
        p, n = self.item_embedding(torch.cat([pos, neg])).split(pos.numel())
        parts = {"bpr": embedding_bpr_loss(u, p, n),
                 "reg": self.reg_weight * l2_reg(u, p, n)}
        return self.sum_parts(parts)
