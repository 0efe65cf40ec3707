"""MDE: Modality Discrimination Enhancement (Zhou, Zhan, Wang 2025)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg.losses import embedding_bpr_loss, l2_reg, mda_loss, multi_msa_loss
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import (
    MultiModalGraphEncoder,
    add_item_graphs,
    add_user_graph,
    add_user_item_graph,
    feature_buffers,
)
from mde_pyg.nn.conv import SimpleGraphConv
from mde_pyg.nn.fusion import (
    PreferenceFusion,
    check_fusion_mode,
    check_preference,
)
from mde_pyg.nn.graphs import GraphBuffers
from mde_pyg.nn.tradeoff import LearnableTradeoff, NodeLevelTradeoff

TRADEOFFS = ("node", "global", "learned")


class MDE(Recommender):
    r"""The MDE model from `"MDE: Modality Discrimination Enhancement for
    Multi-modal Recommendation" <https://arxiv.org/abs/2502.18481>`_.

    Per modality :math:`m`, the encoder
    (:class:`~mde_pyg.models.encoder.MultiModalGraphEncoder`) propagates
    :math:`[\mathbf{U}_m; f_m(\mathbf{X}_m)]` over the user-item graph
    (Eq. 2-3); a simple graph convolution over the user co-occurrence and
    the item kNN graph of :math:`m` follows (Eq. 4); node-level preferences
    fuse the modalities (Eq. 5); the score is
    :math:`y_{u,i} = \langle \mathbf{h}_u, \mathbf{h}_i \rangle`. The
    objective (Eq. 11) is

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda_1 \mathcal{L}_{MDA}
        + \lambda_2 \mathcal{L}_{MSA} + \lambda \lVert \Theta_B \rVert^2

    with :math:`\mathcal{L}_{MDA}` (:func:`mde_pyg.losses.mda_loss`) and
    :math:`\mathcal{L}_{MSA}` (:func:`mde_pyg.losses.msa_loss`) each summed
    over the batch users and the batch positive items (Eq. 10), weighted
    per node by the trade-off :math:`(w_d, w_a)` of Eq. 8. The equations
    are reconstructed from the paper's prose (no official code); the open
    choices are arguments.

    Args:
        data (HeteroData): The dataset, with the graphs of
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): User-item hops :math:`L`.
            (default: :obj:`2`)
        lambda_1 (float, optional): MDA weight. (default: :obj:`0.01`)
        lambda_2 (float, optional): MSA weight. (default: :obj:`0.01`)
        tau (float, optional): MSA temperature. (default: :obj:`0.2`)
        reg_weight (float, optional): :math:`\lambda`, L2 on the batch rows
            of the user matrices and preference logits:
            :math:`\lVert \Theta_B \rVert^2 = \sum_t \frac{1}{B}
            \sum_{n \in B} \lVert \mathbf{t}_n \rVert^2` over the
            tensors :math:`t` (each modality's :math:`\mathbf{U}_m`, the
            user and the positive and negative item logits), i.e.
            :func:`~mde_pyg.losses.l2_reg`: the squared row norm averaged
            over the batch, not summed (:math:`B` times smaller) nor
            averaged over entries as MMRec's DRAGON (:math:`d` times
            larger than that). (default: 1e-4)
        fusion (str, optional): **[choice]** ``"concat"`` or ``"sum"``, see
            :class:`~mde_pyg.nn.PreferenceFusion`. (default: ``"concat"``)
        residual (bool, optional): **[choice]** Eq. 4 keeps the input,
            see :class:`~mde_pyg.nn.SimpleGraphConv`. (default: :obj:`True`)
        tradeoff (str, optional): ``"node"`` (Eq. 8, from the learned
            preferences), ``"global"`` (Fig. 2 variant A: one fixed
            preference ``global_preference`` for every node, used for fusion
            and trade-off; the fusion is fixed too, the reading of "we fix
            the same modality preference for all nodes") or ``"learned"``
            (variant B: independent learnable node-level trade-off
            weights). Variant B's weights are trained by the MDA and MSA
            terms alone, which they scale, so they drift toward the
            smaller term: with InfoNCE far above :math:`|\cos|`,
            :math:`w_a` falls from 0.5 toward 0 and MSA fades (the paper
            states no constraint on them). (default: ``"node"``)
        global_preference (Mapping[str, float] or Sequence[float], optional):
            The fixed preference of variant A, per modality name
            (``{"text": 0.8, "image": 0.2}``) or one value per modality in
            data order, summing to 1. At the default, equal preferences,
            the gap :math:`\delta` and so MDA's weight :math:`w_d` are 0
            for every node; the paper's Fig. 2 sweeps the text modality's
            weight. (default: equal)
        detach_tradeoff (bool, optional): **[choice]** the trade-off weights
            carry no gradient into the preferences. (default: :obj:`True`)
        symmetric_msa (bool, optional): **[choice]** average both InfoNCE
            directions. (default: :obj:`True`)
        unique_nodes (bool, optional): **[choice]** take MDA and MSA over
            the distinct users and positive items of a batch. A node that
            a batch holds twice is otherwise its own in-batch negative in
            MSA (on Last.fm-2k a batch of 2048 holds about 1220 distinct
            users and 770 distinct items). (default: :obj:`False`, the
            batch rows as the paper's Eq. 10 reads)
        use_mda (bool, optional): Ablation "w/o MDA" when :obj:`False`.
        use_msa (bool, optional): Ablation "w/o MSA" when :obj:`False`.
        use_nlt (bool, optional): Ablation "w/o NLT" when :obj:`False`
            (:math:`w_d = w_a = 1`).
        use_user_graph (bool, optional): Apply Eq. 4 on the user side.
            (default: :obj:`True`)
        use_item_graph (bool, optional): Apply Eq. 4 on the item side.
            (default: :obj:`True`)
        fused (bool, optional): Propagate with fused CSR products (fast);
            :obj:`False` uses the ``edge_index`` path. (default: True)
    """

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 2,
        lambda_1: float = 0.01,
        lambda_2: float = 0.01,
        tau: float = 0.2,
        reg_weight: float = 1e-4,
        fusion: str = "concat",
        residual: bool = True,
        tradeoff: str = "node",
        global_preference: Mapping[str, float] | Sequence[float] | None = None,
        detach_tradeoff: bool = True,
        symmetric_msa: bool = True,
        unique_nodes: bool = False,
        use_mda: bool = True,
        use_msa: bool = True,
        use_nlt: bool = True,
        use_user_graph: bool = True,
        use_item_graph: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        if tradeoff not in TRADEOFFS:
            raise ValueError(f"'tradeoff' must be one of {TRADEOFFS}, got "
                             f"'{tradeoff}'")
        check_fusion_mode(fusion, "fusion")
        self.check_hparams({  # also when built directly, not by from_data
            "tau": tau, "num_layers": num_layers, "lambda_1": lambda_1,
            "lambda_2": lambda_2, "reg_weight": reg_weight})
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        if len(self.modalities) < 2:
            raise ValueError(
                f"MDE needs at least two modalities, the data has "
                f"{self.modalities}")
        self.embedding_dim = embedding_dim
        self.lambda_1, self.lambda_2, self.tau = lambda_1, lambda_2, tau
        self.reg_weight = reg_weight
        self.tradeoff_mode = tradeoff
        self.symmetric_msa = symmetric_msa
        self.unique_nodes = unique_nodes
        self.use_mda, self.use_msa, self.use_nlt = use_mda, use_msa, use_nlt
        self.use_user_graph = use_user_graph
        self.use_item_graph = use_item_graph

        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        if use_user_graph:
            add_user_graph(self.graphs, data)
        if use_item_graph:
            add_item_graphs(self.graphs, data, self.modalities)

        self.encoder = MultiModalGraphEncoder(
            self.num_users, dims, embedding_dim, num_layers, "mean")
        self.homogeneous = SimpleGraphConv(residual=residual)

        fixed = None
        if tradeoff == "global":
            fixed = self._global_preference(global_preference)
        elif global_preference is not None:
            raise ValueError(
                f"'global_preference' is the fixed preference of "
                f"tradeoff='global' (variant A); with tradeoff='{tradeoff}' "
                f"the preferences are learned. Pass tradeoff='global' or "
                f"leave 'global_preference' out")
        self.user_fusion = PreferenceFusion(self.num_users, self.modalities,
                                            fusion, fixed)
        self.item_fusion = PreferenceFusion(self.num_items, self.modalities,
                                            fusion, fixed)
        self.tradeoff = NodeLevelTradeoff(detach_tradeoff)
        if tradeoff == "learned":
            self.user_tradeoff = LearnableTradeoff(self.num_users)
            self.item_tradeoff = LearnableTradeoff(self.num_items)

    def _global_preference(
        self, value: Mapping[str, float] | Sequence[float] | None
    ) -> list[float]:
        """Variant A's preference as one value per modality, in order."""
        num = len(self.modalities)
        if value is None:
            return [1.0 / num] * num
        if not isinstance(value, Mapping):
            return check_preference(value, self.modalities,
                                    "global_preference")
        names = set(value)
        if names != set(self.modalities):
            raise ValueError(
                f"'global_preference' must name each modality "
                f"{self.modalities} once, got {sorted(names, key=str)}")
        try:
            return check_preference([value[m] for m in self.modalities],
                                    self.modalities, "global_preference")
        except ValueError:
            raise ValueError(
                f"'global_preference' must map each modality "
                f"{self.modalities} to a non-negative number, the numbers "
                f"summing to 1, got {dict(value)!r}") from None

    @property
    def features(self) -> dict[str, Tensor]:
        """The raw item features, ``{modality: [I, d_m]}``."""
        return {m: getattr(self, f"x_{m}") for m in self.modalities}

    def modality_embedding(self) -> tuple[dict[str, Tensor],
                                          dict[str, Tensor]]:
        r"""Return the pre-fusion :math:`\tilde{\mathbf{U}}_m` and
        :math:`\tilde{\mathbf{I}}_m` (Eq. 4) as two ``{modality: tensor}``
        dicts.
        """
        x_bar = self.encoder(self.features, *self.graphs.get("user_item"))
        users, items = {}, {}
        for m, x in x_bar.items():
            user, item = x.split([self.num_users, self.num_items])
            if self.use_user_graph:
                user = self.homogeneous(user, *self.graphs.get("user_user"))
            if self.use_item_graph:
                item = self.homogeneous(item, *self.graphs.get(f"item_{m}"))
            users[m], items[m] = user, item
        return users, items

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the fused user and item representations (Eq. 5)."""
        users, items = self.modality_embedding()
        return self.user_fusion(users)[0], self.item_fusion(items)[0]

    def _tradeoff(self, side: str, index: Tensor,
                  pref: Tensor) -> tuple[Tensor | None, Tensor | None]:
        if not self.use_nlt:
            return None, None
        if self.tradeoff_mode == "learned":
            return getattr(self, f"{side}_tradeoff")(index)
        return self.tradeoff(pref)

    def _modality_losses(self, side: str, rows: dict[str, Tensor],
                         index: Tensor) -> dict[str, Tensor]:
        fusion = getattr(self, f"{side}_fusion")
        w_d, w_a = self._tradeoff(side, index, fusion.preferences(index))
        out = {}
        if self.use_mda and self.lambda_1 > 0:
            out["mda"] = self.lambda_1 * mda_loss(rows, w_d)
        if self.use_msa and self.lambda_2 > 0:
            out["msa"] = self.lambda_2 * multi_msa_loss(
                rows, w_a, self.tau, self.symmetric_msa)
        return out

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the objective of Eq. 11 on a batch and its parts."""
        users, items = self.modality_embedding()
        # Each modality's batch rows, gathered once (gather_rows); the
        # modality losses reuse them.
        u_rows = {m: x.index_select(0, user) for m, x in users.items()}
        pos_rows, neg_rows = {}, {}
        for m, x in items.items():
            pos_rows[m], neg_rows[m] = gather_rows(x, pos, neg)
        user_emb = self.user_fusion(u_rows, user)[0]
        pos_emb = self.item_fusion(pos_rows, pos)[0]
        neg_emb = self.item_fusion(neg_rows, neg)[0]
        parts = {"bpr": embedding_bpr_loss(user_emb, pos_emb, neg_emb)}
        sides = [("user", u_rows, user, users), ("item", pos_rows, pos, items)]
        for side, rows, index, full in sides:
            if self.unique_nodes:
                index = index.unique()
                rows = {m: x.index_select(0, index) for m, x in full.items()}
            for name, value in self._modality_losses(side, rows,
                                                     index).items():
                parts[name] = parts.get(name, 0.0) + value
        batch_params = [self.encoder.user[m].index_select(0, user)
                        for m in self.modalities]
        for fusion, index in ((self.user_fusion, user),
                              (self.item_fusion, pos),
                              (self.item_fusion, neg)):
            if fusion.weight is not None:
                batch_params.append(fusion.weight.index_select(0, index))
        parts["reg"] = self.reg_weight * l2_reg(*batch_params)
        return self.sum_parts(parts)
