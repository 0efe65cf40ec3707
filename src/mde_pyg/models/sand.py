"""SAND (He et al. 2024): separate alignment and distancing on DRAGON."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.models.dragon import DRAGON
from mde_pyg.nn.sand import SeparateAlignDistance

ITEM_SCOPES = ("all", "batch")


class SAND(DRAGON):
    r"""SAND, from `He et al. 2024 <https://arxiv.org/abs/2406.08270>`_.

    "Separate Learning for Multimedia Recommendation" (Separate Alignment
    aNd Distancing), on the :class:`~mde_pyg.models.DRAGON` backbone, as
    the authors' code (whose item kNN graphs count each item among its own
    neighbours: see :func:`~mde_pyg.models.encoder.add_mixed_item_graph`).
    Each modality's raw item features pass through a
    square linear split (:class:`~mde_pyg.nn.GenericUniqueSplit`) before
    the backbone; the first half of the output is the *generic* part
    :math:`\mathbf{g}_m`, the second half the *unique* part
    :math:`\mathbf{u}_m`. The objective
    (:class:`~mde_pyg.nn.SeparateAlignDistance`) is

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda \mathcal{R}
        + u_{reg} \frac{1}{|\mathcal{M}|} \sum_m D(\mathbf{W}^a_m
        \mathbf{g}_m, \mathbf{W}^b_m \mathbf{u}_m)
        + \alpha \mathcal{L}_{SoloSim}(\{P_m(\mathbf{g}_m)\}_m)

    with :math:`D` half the CLUB upper bound of the mutual information
    (``distance="club"``; the authors' estimator returns half) or the
    negative L2 distance (``"l2"``), and :math:`\mathcal{L}_{SoloSim}` the
    one-directional InfoNCE between the projected generic parts, anchored
    on the text modality as the authors' (mean over pairs). The authors'
    objective has no L2 term, hence ``reg_weight=0``; their BPR is in
    bits (``log2``), 1.44 times this package's in nats, so at the same
    :math:`\alpha` and :math:`u_{reg}` their BPR weighs 1.44 times more
    against the SAND terms (Adam is invariant to the overall scale: pass
    ``alpha=0.0083, ureg=0.0042`` for their exact balance). See
    :class:`~mde_pyg.nn.SeparateAlignDistance`.

    With ``distance="club"``, the CLUB estimators are fitted by maximum
    likelihood in optimiser steps of their own: a trainer creates a second
    optimiser over :meth:`estimator_parameters` (the main optimiser leaves
    them out) and, before each main step, minimises
    :meth:`estimator_step` (:class:`mde_pyg.train.Trainer` does this).

    Args:
        data (HeteroData): The dataset, with the graphs of
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        embedding_dim (int, optional): See :class:`DRAGON`.
        num_layers (int, optional): See :class:`DRAGON`.
        item_graph_layers (int, optional): See :class:`DRAGON`.
        reg_weight (float, optional): See :class:`DRAGON`; the authors'
            SAND has no L2 term. (default: :obj:`0.0`)
        modality_weights (Mapping[str, float], optional): See
            :class:`DRAGON`.
        use_user_graph (bool, optional): See :class:`DRAGON`; the authors'
            SAND code leaves the co-occurrence term out.
            (default: :obj:`False`)
        alpha (float, optional): SoloSim weight :math:`\alpha`.
            (default: :obj:`0.012`)
        ureg (float, optional): Distancing weight :math:`u_{reg}`.
            (default: :obj:`0.006`)
        tau (float, optional): SoloSim temperature. (default: :obj:`0.2`)
        distance (str, optional): ``"club"`` or ``"l2"``.
            (default: :obj:`"club"`)
        item_scope (str, optional): Items the SAND losses cover: ``"all"``
            items (as the authors) or the unique positive items of the
            ``"batch"``. (default: :obj:`"all"`)
        head_hidden_dim (int, optional): Projection head hidden width.
            (default: :obj:`64`)
        head_out_dim (int, optional): Projection head output width.
            (default: :obj:`32`)
        distance_dim (int, optional): Width of the mapped generic and
            unique parts. (default: :obj:`32`)
        estimator_hidden_dim (int, optional): CLUB hidden width (the
            authors' 16, halved inside their estimator). (default: :obj:`8`)
        shared_estimator (bool, optional): One CLUB estimator for all
            modalities, as the authors. (default: :obj:`True`)
        anchor (str, optional): SoloSim's anchor modality. (default:
            :obj:`None`: ``"text"`` where the data has it, as the authors,
            else the first modality)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    #: Runs before the shared estimator had one per modality.
    legacy_hparams = {"shared_estimator": False}

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 2,
        item_graph_layers: int = 1,
        reg_weight: float = 0.0,
        modality_weights: Mapping[str, float] | None = None,
        use_user_graph: bool = False,
        alpha: float = 0.012,
        ureg: float = 0.006,
        tau: float = 0.2,
        distance: str = "club",
        item_scope: str = "all",
        head_hidden_dim: int = 64,
        head_out_dim: int = 32,
        distance_dim: int = 32,
        estimator_hidden_dim: int = 8,
        shared_estimator: bool = True,
        anchor: str | None = None,
        fused: bool = True,
    ) -> None:
        if item_scope not in ITEM_SCOPES:
            raise ValueError(f"'item_scope' must be one of {ITEM_SCOPES}, "
                             f"got '{item_scope}'")
        super().__init__(data, embedding_dim, num_layers, item_graph_layers,
                         reg_weight, modality_weights, use_user_graph, fused)
        self.item_scope = item_scope
        self._split_cache: tuple[tuple, dict[str, Tensor]] | None = None
        self.sand = SeparateAlignDistance(
            self.feature_dims, alpha, ureg, tau, distance, head_hidden_dim,
            head_out_dim, distance_dim, estimator_hidden_dim,
            shared_estimator, anchor)

    def input_features(self) -> dict[str, Tensor]:
        """Return the split item features fed to the backbone."""
        return self.sand.split(self.features)

    def _scope(self, pos: Tensor) -> Tensor | None:
        return None if self.item_scope == "all" else pos.unique()

    def _split_key(self) -> tuple:
        """What the split of all items depends on besides the features."""
        params = list(self.sand.splitter.parameters())
        device = params[0].device.type
        return (tuple(p._version for p in params), self.training,
                torch.is_autocast_enabled(device),
                torch.get_autocast_dtype(device))

    def _take_split(self) -> dict[str, Tensor]:
        """The split of all items kept by :meth:`estimator_step` when the
        split weights have not changed since, else a fresh one.
        """
        cached, self._split_cache = self._split_cache, None
        if cached is not None and cached[0] == self._split_key() and \
                torch.is_grad_enabled():
            return cached[1]
        return self.input_features()

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR, L2, distancing and SoloSim terms of a batch."""
        x_split = self._take_split()
        parts = self.backbone_loss(user, pos, neg, x_split)
        parts.update(self.sand.losses(x_split, self._scope(pos)))
        return self.sum_parts(parts)

    def estimator_parameters(self) -> Iterator[nn.Parameter]:
        """Return the CLUB estimators' parameters (none for ``"l2"``)."""
        return self.sand.estimator_parameters()

    def estimator_step(self, user: Tensor, pos: Tensor,
                       neg: Tensor) -> Tensor:
        """Return the CLUB estimators' negative log-likelihood on a batch.

        Computed on detached split features of the items the SAND losses
        cover; only the estimators receive gradients. A trainer minimises
        it with the optimiser over :meth:`estimator_parameters`, once per
        batch before the main step.

        With ``item_scope="all"`` the split of all items (the costliest
        product of a step) is computed here with gradients and kept: the
        :meth:`loss` call that follows reuses it as long as the split
        weights are unchanged (the estimator step does not touch them), so
        a training step computes it once, not twice.
        """
        index = self._scope(pos)
        if index is None and torch.is_grad_enabled():
            x_split = self.input_features()
            self._split_cache = (self._split_key(), x_split)
        else:
            with torch.no_grad():
                features = self.features if index is None else {
                    m: x.index_select(0, index)
                    for m, x in self.features.items()}
                x_split = self.sand.split(features)
        return self.sand.estimator_loss(x_split)

    def extra_repr_parts(self) -> list[str]:
        """Show the distancing form in ``repr``."""
        return [f"distance='{self.sand.distance}'"]
