r"""LGMRec (Guo et al. 2024): local graphs and a learned global hypergraph."""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import degree

from mde_pyg.data.mmrec import RATES
from mde_pyg.functional import normalize
from mde_pyg.losses import (
    embedding_bpr_loss,
    embedding_norm_reg,
    hypergraph_contrastive_loss,
)
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import (
    add_user_item_graph,
    feature_buffers,
    is_visual,
)
from mde_pyg.nn.conv import LightGCNConv, MultiHopPropagation
from mde_pyg.nn.graphs import GraphBuffers


def hypergraph_propagation(user_assignment: Tensor, item_assignment: Tensor,
                           x: Tensor, num_layers: int = 1
                           ) -> tuple[Tensor, Tensor]:
    r"""Item-hyperedge-item propagation of LGMRec's global embedding.

    With :math:`\mathbf{H}_I` (``[I, A]``) and :math:`\mathbf{H}_U`
    (``[U, A]``) the items' and users' memberships of :math:`A`
    hyperedges, each layer gathers the items into the hyperedges and
    spreads the hyperedges back; the users read the hyperedges of the last
    layer:

    .. math::
        \mathbf{X}^{(h+1)} = \mathbf{H}_I \mathbf{H}_I^\top
        \mathbf{X}^{(h)}, \qquad
        \mathbf{U} = \mathbf{H}_U \mathbf{H}_I^\top \mathbf{X}^{(L-1)}

    (no degree normalisation, as the reference code).

    Args:
        user_assignment (torch.Tensor): :math:`\mathbf{H}_U`, ``[U, A]``.
        item_assignment (torch.Tensor): :math:`\mathbf{H}_I`, ``[I, A]``.
        x (torch.Tensor): Item embeddings :math:`\mathbf{X}^{(0)}`,
            ``[I, d]``.
        num_layers (int, optional): :math:`L \ge 1`. (default: :obj:`1`)

    Returns:
        ``(user [U, d], item [I, d])``, i.e. :math:`(\mathbf{U},
        \mathbf{X}^{(L)})`.
    """
    if num_layers < 1:
        raise ValueError(f"'num_layers' must be >= 1, got {num_layers}")
    for _ in range(num_layers):
        hyperedges = item_assignment.t() @ x
        x = item_assignment @ hyperedges
    return user_assignment @ hyperedges, x


class LGMRec(Recommender):
    r"""LGMRec, from `Guo et al. 2024 <https://arxiv.org/abs/2312.16400>`_.

    "LGMRec: Local and Global Graph Learning for Multimodal
    Recommendation", in MMRec's form (the authors' code). Three embeddings
    of every node are summed. The *collaborative* one is LightGCN on ID
    embeddings :math:`\mathbf{E}^{(0)}` over the normalised user-item graph
    :math:`\hat{\mathbf{A}}`; the *modality* one propagates, per modality
    :math:`m`, the projected item features :math:`\mathbf{X}_m
    \mathbf{W}_m` and, for the users, the mean over their items
    (:math:`\mathbf{D}_U^{-1} \mathbf{R}`, no user parameters), keeping
    the last layer:

    .. math::
        \mathbf{E}_c = \frac{1}{L_c+1} \sum_{l=0}^{L_c} \hat{\mathbf{A}}^l
        \mathbf{E}^{(0)}, \qquad
        \mathbf{F}_m = \hat{\mathbf{A}}^{L_m} \begin{bmatrix}
        \mathbf{D}_U^{-1} \mathbf{R} \mathbf{X}_m \mathbf{W}_m \\
        \mathbf{X}_m \mathbf{W}_m \end{bmatrix}, \qquad
        \mathbf{E}_{loc} = \mathbf{E}_c + \sum_m
        \operatorname{normalize}(\mathbf{F}_m)

    The *global* one is a hypergraph of :math:`A` learnable hyperedges per
    modality. Items join them by their features, users through their
    items' logits (:math:`\mathbf{R}` the binary interaction matrix); the
    memberships are Gumbel-softmax samples, then dropped out with keep
    rate :math:`\rho` (one mask per matrix and step, shared by all
    layers, kept entries scaled by :math:`1/\rho`), and
    :func:`hypergraph_propagation` runs :math:`L_h` layers from the
    collaborative item embeddings:

    .. math::
        \mathbf{H}_{I,m} = \mathbf{X}_m \mathbf{V}_m, \quad
        \mathbf{H}_{U,m} = \mathbf{R} \mathbf{H}_{I,m}, \quad
        \tilde{\mathbf{H}} = \operatorname{drop}_\rho\big(
        \operatorname{softmax}((\mathbf{H} + \mathbf{g}) / \tau)\big),
        \quad g \sim \operatorname{Gumbel}(0, 1)

    .. math::
        \mathbf{G}_m = \big[\tilde{\mathbf{H}}_{U,m};
        \tilde{\mathbf{H}}_{I,m}\big] \tilde{\mathbf{H}}_{I,m}^\top
        \mathbf{G}^{(L_h-1)}_{I,m}, \qquad
        \mathbf{E} = \mathbf{E}_{loc} + \alpha \operatorname{normalize}
        \Big(\sum_m \mathbf{G}_m\Big)

    (:math:`\mathbf{G}^{(0)}_{I,m} = \mathbf{E}_{c,I}`). The score is
    :math:`\langle \mathbf{e}_u, \mathbf{e}_i \rangle`, and the loss

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda_c \big(
        \mathcal{L}_{HCL}(\mathbf{G}_{U,a}[B_u], \mathbf{G}_{U,b}[B_u],
        \mathbf{G}_{U,b}) + \mathcal{L}_{HCL}(\mathbf{G}_{I,a}[B_{i^+}],
        \mathbf{G}_{I,b}[B_{i^+}], \mathbf{G}_{I,b})\big)
        + \frac{\lambda}{B} \big(\lVert \mathbf{E}_{B_u} \rVert_F +
        \lVert \mathbf{E}_{B_{i^+}} \rVert_F + \lVert \mathbf{E}_{B_{i^-}}
        \rVert_F\big)

    with :func:`~mde_pyg.losses.hypergraph_contrastive_loss` (summed over
    the batch, as MMRec: :math:`\lambda_c` scales with the batch size)
    from the visual modality :math:`a` to the other :math:`b`, averaged
    over the modality pairs when there are more than two, and
    :func:`~mde_pyg.losses.embedding_norm_reg` on the batch's final
    embeddings (MMRec's ``reg_loss``). LGMRec uses no item-item kNN graph.
    MMRec's ``cf_model='mf'`` is ``num_ui_layers=0``.

    MMRec draws the Gumbel noise in evaluation too, so its scores are
    random; here evaluation (``model.eval()``) uses the noise-free
    memberships :math:`\operatorname{softmax}(\mathbf{H} / \tau)` and
    ``eval_noise=True`` reproduces MMRec **[choice]**. Dropout is off in
    evaluation in both.

    Args:
        data (HeteroData): The dataset, with the normalised user-item graph
            of :class:`mde_pyg.transforms.NormalizeUserItem` and item
            features ``x_<m>``.
        embedding_dim (int, optional): :math:`d`, also the width of the
            projected features. (default: :obj:`64`)
        num_ui_layers (int, optional): Collaborative hops :math:`L_c`.
            (default: :obj:`2`)
        num_mm_layers (int, optional): Modality hops :math:`L_m`.
            (default: :obj:`2`)
        num_hyper_layers (int, optional): Hypergraph layers :math:`L_h`
            (MMRec: Baby and Sports 1, Clothing 2). (default: :obj:`1`)
        num_hyperedges (int, optional): :math:`A` per modality (MMRec:
            Baby and Sports 4, Clothing 64). (default: :obj:`4`)
        keep_rate (float, optional): :math:`\rho`, the fraction of
            memberships kept by the dropout (MMRec: Baby 0.5, Sports 0.4,
            Clothing 0.2). (default: :obj:`0.5`)
        alpha (float, optional): :math:`\alpha`, the weight of the global
            embedding (MMRec: Baby 0.3, Sports 0.6, Clothing 0.2).
            (default: :obj:`0.3`)
        cl_weight (float, optional): :math:`\lambda_c`. (default: 1e-4)
        reg_weight (float, optional): :math:`\lambda`. (default: 1e-6)
        tau (float, optional): :math:`\tau` of the Gumbel-softmax and of
            the contrastive loss. (default: :obj:`0.2`)
        eval_noise (bool, optional): Draw Gumbel noise in evaluation too,
            as MMRec. (default: :obj:`False`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_ui_layers: int = 2,
        num_mm_layers: int = 2,
        num_hyper_layers: int = 1,
        num_hyperedges: int = 4,
        keep_rate: float = 0.5,
        alpha: float = 0.3,
        cl_weight: float = 1e-4,
        reg_weight: float = 1e-6,
        tau: float = 0.2,
        eval_noise: bool = False,
        fused: bool = True,
    ) -> None:
        for name, value, low in [("num_ui_layers", num_ui_layers, 0),
                                 ("num_mm_layers", num_mm_layers, 0),
                                 ("num_hyper_layers", num_hyper_layers, 1),
                                 ("num_hyperedges", num_hyperedges, 1)]:
            if value < low:
                raise ValueError(f"'{name}' must be >= {low}, got {value}")
        if not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"'keep_rate' must be in (0, 1], got "
                             f"{keep_rate}")
        if tau <= 0:
            raise ValueError(f"'tau' must be positive, got {tau}")
        if cl_weight < 0 or reg_weight < 0:
            raise ValueError(f"'cl_weight' and 'reg_weight' must be >= 0, "
                             f"got {cl_weight} and {reg_weight}")
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        if cl_weight > 0 and len(self.modalities) < 2:
            raise ValueError(
                f"The hypergraph contrastive loss needs at least two "
                f"modalities, the data has {self.modalities}; pass "
                f"'cl_weight'=0 to train on one")
        self.embedding_dim = embedding_dim
        self.num_ui_layers = num_ui_layers
        self.num_mm_layers = num_mm_layers
        self.num_hyper_layers = num_hyper_layers
        self.num_hyperedges = num_hyperedges
        self.keep_rate = keep_rate
        self.alpha = alpha
        self.cl_weight = cl_weight
        self.reg_weight = reg_weight
        self.tau = tau
        self.eval_noise = eval_noise
        # Contrastive pairs (anchor, other): the visual modality anchors,
        # as MMRec's image -> text.
        order = sorted(self.modalities, key=lambda m: not is_visual(m))
        self.pairs = list(combinations(order, 2))

        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        user, item = data[RATES].edge_index
        self.graphs.add("item_user", torch.stack([item, user]), None,
                        (self.num_items, self.num_users))
        self.register_buffer(
            "user_inv_degree",
            degree(user, self.num_users).clamp(min=1).reciprocal()
            .unsqueeze(-1), persistent=False)
        self.aggregate = LightGCNConv(symmetric=False)
        self.ui_propagation = MultiHopPropagation(num_ui_layers, "mean")
        self.mm_propagation = MultiHopPropagation(num_mm_layers, "last")

        self.embedding = nn.Parameter(
            torch.empty(self.num_users + self.num_items, embedding_dim))
        # W_m and V_m stacked: the features are read once per step.
        self.item_maps = nn.ModuleDict({
            m: nn.Linear(dim, embedding_dim + num_hyperedges, bias=False)
            for m, dim in dims.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Xavier-uniform :math:`\mathbf{E}^{(0)}_U`,
        :math:`\mathbf{E}^{(0)}_I`, :math:`\mathbf{W}_m` and
        :math:`\mathbf{V}_m`, each with its own fans, as MMRec.
        """
        d = self.embedding_dim
        with torch.no_grad():
            for part in self.embedding.split([self.num_users,
                                              self.num_items]):
                nn.init.xavier_uniform_(part)
            for lin in self.item_maps.values():
                nn.init.xavier_uniform_(lin.weight[:d])
                nn.init.xavier_uniform_(lin.weight[d:])

    def to_users(self, x: Tensor) -> Tensor:
        r"""Return :math:`\mathbf{R} \mathbf{x}`, each user's sum over its
        items' rows of ``x`` (``[I, F] -> [U, F]``).
        """
        adj, weight = self.graphs.get("item_user")
        return self.aggregate.propagate(adj, x=x, edge_weight=weight,
                                        size=(self.num_items,
                                              self.num_users))

    def modality_inputs(self) -> tuple[Tensor, list[Tensor]]:
        r"""Return the local inputs and the hyperedge logits of every
        modality, users first.

        The modalities share one sparse product with :math:`\mathbf{R}`.

        Returns:
            ``[D_U^{-1} R X_m W_m; X_m W_m]`` side by side for all
            modalities (``[U+I, M d]``) and, per modality,
            ``[R H_{I,m}; H_{I,m}]`` (``[U+I, A]``).
        """
        item = torch.cat([self.item_maps[m](getattr(self, f"x_{m}"))
                          for m in self.modalities], dim=-1)
        user = self.to_users(item)
        sizes = [self.embedding_dim, self.num_hyperedges] * len(
            self.modalities)
        user, item = user.split(sizes, dim=-1), item.split(sizes, dim=-1)
        feat = torch.cat([torch.cat(user[0::2], dim=-1)
                          * self.user_inv_degree,
                          torch.cat(item[0::2], dim=-1)])
        logits = [torch.cat([u, i]) for u, i in zip(user[1::2],
                                                    item[1::2])]
        return feat, logits

    def hyperedges(self, logits: Tensor) -> Tensor:
        r"""Return the memberships :math:`\tilde{\mathbf{H}}` of the
        hyperedge ``logits``: Gumbel-softmax samples then dropout in
        training, :math:`\operatorname{softmax}(\mathbf{H} / \tau)` in
        evaluation (unless ``eval_noise``).
        """
        if self.training or self.eval_noise:
            h = F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
        else:
            h = (logits / self.tau).softmax(dim=-1)
        if self.training and self.keep_rate < 1.0:
            h = F.dropout(h, 1.0 - self.keep_rate)
        return h

    def propagate(self) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        r"""Return the final embeddings ``[U+I, d]`` (users first) and,
        per modality, the global ``(user, item)`` embeddings
        :math:`\mathbf{G}_m`.
        """
        graph = self.graphs.get("user_item")
        collaborative = self.ui_propagation(self.embedding, *graph)
        item_c = collaborative[self.num_users:]
        feat, logits = self.modality_inputs()
        local = self.mm_propagation(feat, *graph).split(self.embedding_dim,
                                                        dim=-1)
        out = collaborative + sum(normalize(x) for x in local)
        hyper = {}
        for m, logit in zip(self.modalities, logits):
            user_h, item_h = self.hyperedges(logit).split(
                [self.num_users, self.num_items])
            hyper[m] = hypergraph_propagation(user_h, item_h, item_c,
                                              self.num_hyper_layers)
        user_g = sum(u for u, _ in hyper.values())
        item_g = sum(i for _, i in hyper.values())
        out = out + self.alpha * normalize(torch.cat([user_g, item_g]))
        return out, hyper

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the final ``(user, item)`` embeddings."""
        return tuple(self.propagate()[0].split([self.num_users,
                                                self.num_items]))

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR, the hypergraph contrastive loss and the norm term."""
        out, hyper = self.propagate()
        user_emb, item_emb = out.split([self.num_users, self.num_items])
        u = user_emb.index_select(0, user)
        p, n = gather_rows(item_emb, pos, neg)
        parts = {"bpr": embedding_bpr_loss(u, p, n)}
        if self.cl_weight > 0:
            terms = []
            for a, b in self.pairs:
                (user_a, item_a), (user_b, item_b) = hyper[a], hyper[b]
                terms.append(
                    hypergraph_contrastive_loss(
                        user_a.index_select(0, user),
                        user_b.index_select(0, user), user_b, self.tau)
                    + hypergraph_contrastive_loss(
                        item_a.index_select(0, pos),
                        item_b.index_select(0, pos), item_b, self.tau))
            parts["hcl"] = self.cl_weight * torch.stack(terms).mean()
        parts["reg"] = self.reg_weight * embedding_norm_reg(u, p, n)
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the hypergraph size and the global weight in ``repr``."""
        return [f"num_hyperedges={self.num_hyperedges}",
                f"alpha={self.alpha}"]
