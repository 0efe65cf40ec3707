r"""Layers of SAND: generic/unique split, projection head, CLUB estimator.

From `"Separate Learning for Multimedia Recommendation"
<https://arxiv.org/abs/2406.08270>`_ (He et al., SAND: Separate Alignment
aNd Distancing). Each modality's item representation is split into a
*generic* part, aligned across modalities by :func:`~mde_pyg.losses.
solo_sim_loss`, and a *unique* part, pushed away from the generic one by a
mutual-information upper bound (:func:`~mde_pyg.losses.club_upper_bound`)
or by :func:`~mde_pyg.losses.neg_l2_distance`.
:class:`SeparateAlignDistance` bundles the pieces so that any recommender
with per-modality item inputs can add SAND's losses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from mde_pyg.losses import (
    SoloSimLoss,
    club_nll,
    club_upper_bound,
    neg_l2_distance,
)

DISTANCES = ("club", "l2")


def split_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """Return the first ``d // 2`` columns of ``x`` and the rest."""
    half = x.size(-1) // 2
    # split, not two slices: its backward concatenates the two gradients
    # instead of zero-filling a full-width buffer per slice.
    gen, uni = x.split([half, x.size(-1) - half], dim=-1)
    return gen, uni


class GenericUniqueSplit(nn.Module):
    r"""Per-modality linear map whose output halves are generic and unique.

    .. math::
        \mathbf{x}'_m = \mathbf{W}_m \mathbf{x}_m + \mathbf{b}_m, \qquad
        \mathbf{g}_m = \mathbf{x}'_{m,[:d_m/2]}, \quad
        \mathbf{u}_m = \mathbf{x}'_{m,[d_m/2:]}

    with :math:`\mathbf{W}_m \in \mathbb{R}^{d_m \times d_m}`; the whole
    :math:`\mathbf{x}'_m` replaces the raw features downstream. For odd
    :math:`d_m` the unique part is one column wider.

    Args:
        feature_dims (Mapping[str, int]): Modality name -> width
            :math:`d_m` (at least 2).
    """

    def __init__(self, feature_dims: Mapping[str, int]) -> None:
        super().__init__()
        for m, dim in feature_dims.items():
            if dim < 2:
                raise ValueError(f"Modality '{m}' has width {dim}; a "
                                 f"generic/unique split needs at least 2")
        self.feature_dims = dict(feature_dims)
        self.linear = nn.ModuleDict({
            m: nn.Linear(dim, dim) for m, dim in feature_dims.items()})

    def reset_parameters(self) -> None:
        """Reset the linear maps."""
        for lin in self.linear.values():
            lin.reset_parameters()

    def forward(self, x_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        r"""Return :math:`\mathbf{x}'_m` per modality (``[N, d_m]``)."""
        for m, dim in self.feature_dims.items():
            if m not in x_dict:
                raise ValueError(
                    f"{self.__class__.__name__}: modality '{m}' is missing "
                    f"from the input; give one [N, d] tensor per modality of "
                    f"{list(self.feature_dims)}, got {list(x_dict)}")
            if x_dict[m].size(-1) != dim:
                raise ValueError(
                    f"{self.__class__.__name__}: modality '{m}' has width "
                    f"{x_dict[m].size(-1)} but the split was built for "
                    f"{dim} (shape {tuple(x_dict[m].shape)})")
        return {m: lin(x_dict[m]) for m, lin in self.linear.items()}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.feature_dims})"


class ProjectionHead(nn.Module):
    r"""SAND's projection head for SoloSim, with L2-normalised outputs.

    .. math::
        \mathbf{z} = \frac{h(\mathbf{g})}{\lVert h(\mathbf{g}) \rVert_2},
        \qquad h = \mathrm{Lin} \circ \mathrm{ReLU} \circ \mathrm{BN} \circ
        \mathrm{Lin} \circ \mathrm{ReLU} \circ \mathrm{BN} \circ \mathrm{Lin}

    Args:
        in_dim (int): Input width.
        hidden_dim (int, optional): Hidden width. (default: :obj:`64`)
        out_dim (int, optional): Output width. (default: :obj:`32`)
    """

    def __init__(self, in_dim: int, hidden_dim: int = 64,
                 out_dim: int = 32) -> None:
        super().__init__()
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, \
            out_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim))

    def reset_parameters(self) -> None:
        """Reset every layer."""
        for module in self.mlp:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Return the unit-norm projections ``[N, out_dim]``."""
        return nn.functional.normalize(self.mlp(x), dim=-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_dim}, "
                f"{self.hidden_dim}, {self.out_dim})")


class CLUBEstimator(nn.Module):
    r"""Variational network of the CLUB mutual-information upper bound.

    From `"CLUB: A Contrastive Log-ratio Upper Bound of Mutual Information"
    <https://arxiv.org/abs/2006.12013>`_, as SAND uses it:

    .. math::
        q(\mathbf{y} \mid \mathbf{x}) = \mathcal{N}\big(
        \boldsymbol{\mu}(\mathbf{x}), \operatorname{diag}
        \exp \boldsymbol{\ell}(\mathbf{x})\big), \quad
        \boldsymbol{\mu} = \mathrm{Lin} \circ \mathrm{ReLU} \circ \mathrm{Lin},
        \quad \boldsymbol{\ell} = \tanh \circ \mathrm{Lin} \circ \mathrm{ReLU}
        \circ \mathrm{Lin}

    :meth:`forward` returns the bound (:func:`mde_pyg.losses.
    club_upper_bound`) to minimise in the model's objective;
    :meth:`learning_loss` the negative log-likelihood
    (:func:`mde_pyg.losses.club_nll`) that fits :math:`q` in optimiser
    steps of its own, on detached samples.

    Args:
        x_dim (int): Width of :math:`\mathbf{x}`.
        y_dim (int): Width of :math:`\mathbf{y}`.
        hidden_dim (int, optional): Hidden width of both heads.
            (default: :obj:`16`)
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int = 16) -> None:
        super().__init__()
        self.x_dim, self.y_dim, self.hidden_dim = x_dim, y_dim, hidden_dim
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden_dim), nn.ReLU(),
                                nn.Linear(hidden_dim, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden_dim), nn.ReLU(),
                                    nn.Linear(hidden_dim, y_dim), nn.Tanh())

    def reset_parameters(self) -> None:
        """Reset both heads."""
        for module in [*self.mu, *self.logvar]:
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def gaussian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return the means and log-variances of :math:`q(\cdot \mid x)`."""
        return self.mu(x), self.logvar(x)

    def forward(self, x: Tensor, y: Tensor,
                perm: Tensor | None = None) -> Tensor:
        """Return the clamped CLUB bound of the pairs ``(x[i], y[i])``."""
        return club_upper_bound(*self.gaussian(x), y, perm)

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Return the negative log-likelihood of ``y`` given ``x``."""
        return club_nll(*self.gaussian(x), y)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.x_dim}, {self.y_dim}, "
                f"hidden_dim={self.hidden_dim})")


class SeparateAlignDistance(nn.Module):
    r"""SAND's alignment and distancing losses, for any item encoder.

    Per modality :math:`m`, :class:`GenericUniqueSplit` maps the item
    inputs :math:`\mathbf{x}_m` to :math:`\mathbf{x}'_m` (to be used by the
    recommender in place of :math:`\mathbf{x}_m`) with generic part
    :math:`\mathbf{g}_m` and unique part :math:`\mathbf{u}_m`. Then

    .. math::
        \mathcal{L}_{SAND} = \alpha\, \mathcal{L}_{SoloSim}\big(
        \{P_m(\mathbf{g}_m)\}_m\big) + u_{reg} \frac{1}{|\mathcal{M}|}
        \sum_m D\big(\mathbf{W}^a_m \mathbf{g}_m, \mathbf{W}^b_m
        \mathbf{u}_m\big)

    with :math:`P_m` a :class:`ProjectionHead`, :math:`\mathcal{L}_{
    SoloSim}` :class:`~mde_pyg.losses.SoloSimLoss` (mean over modality
    pairs; the ``anchor`` modality's rows are the anchors, as the authors'
    text-to-image term), :math:`\mathbf{W}^a_m, \mathbf{W}^b_m` linear
    maps to ``distance_dim`` and :math:`D` either half the CLUB bound
    (:class:`CLUBEstimator`; the authors' code halves it) or
    :func:`~mde_pyg.losses.neg_l2_distance`. With ``distance="club"``
    the estimator (one for all modalities, as the authors', or one per
    modality) is fitted by :meth:`estimator_loss` in a separate optimiser
    over :meth:`estimator_parameters`.

    .. code-block:: python

        sand = SeparateAlignDistance({"image": 4096, "text": 384})
        x_split = sand.split(features)           # feed to the recommender
        losses = sand.losses(x_split, pos_items)  # {"solosim", "distance"}

    Args:
        feature_dims (Mapping[str, int]): Modality name -> input width
            (at least two modalities).
        alpha (float, optional): SoloSim weight. (default: :obj:`0.012`)
        ureg (float, optional): Distancing weight. (default: :obj:`0.006`)
        tau (float, optional): SoloSim temperature. (default: :obj:`0.2`)
        distance (str, optional): ``"club"`` (mutual-information upper
            bound) or ``"l2"`` (negative L2). (default: :obj:`"club"`)
        head_hidden_dim (int, optional): Projection head hidden width.
            (default: :obj:`64`)
        head_out_dim (int, optional): Projection head output width.
            (default: :obj:`32`)
        distance_dim (int, optional): Width of
            :math:`\mathbf{W}^a_m \mathbf{g}_m`. (default: :obj:`32`)
        estimator_hidden_dim (int, optional): Hidden width of the CLUB
            heads (the authors' ``hidden_size=16``, which their estimator
            halves). (default: :obj:`8`)
        shared_estimator (bool, optional): One CLUB estimator for all
            modalities (the authors' code) instead of one per modality.
            (default: :obj:`True`)
        anchor (str, optional): The modality whose rows anchor SoloSim's
            InfoNCE. (default: :obj:`None`: ``"text"`` where there is one,
            as the authors, else the first modality)
    """

    def __init__(
        self,
        feature_dims: Mapping[str, int],
        alpha: float = 0.012,
        ureg: float = 0.006,
        tau: float = 0.2,
        distance: str = "club",
        head_hidden_dim: int = 64,
        head_out_dim: int = 32,
        distance_dim: int = 32,
        estimator_hidden_dim: int = 8,
        shared_estimator: bool = True,
        anchor: str | None = None,
    ) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"'distance' must be one of {DISTANCES}, got "
                             f"'{distance}'")
        if len(feature_dims) < 2:
            raise ValueError(f"SAND aligns modalities and needs at least "
                             f"two, got {list(feature_dims)}")
        self.modalities = list(feature_dims)
        self.alpha, self.ureg, self.distance = alpha, ureg, distance
        if anchor is not None and anchor not in self.modalities:
            raise ValueError(f"'anchor' must be one of the modalities "
                             f"{self.modalities}, got '{anchor}'")
        if anchor is None:
            anchor = "text" if "text" in self.modalities else \
                self.modalities[0]
        self.anchor = anchor
        # SoloSim's order: the anchor first (a stable sort keeps the rest)
        self.solo_sim_order = sorted(self.modalities,
                                     key=lambda m: m != anchor)
        self.splitter = GenericUniqueSplit(feature_dims)
        gen = {m: dim // 2 for m, dim in feature_dims.items()}
        uni = {m: dim - dim // 2 for m, dim in feature_dims.items()}
        self.heads = nn.ModuleDict({
            m: ProjectionHead(gen[m], head_hidden_dim, head_out_dim)
            for m in self.modalities})
        self.solo_sim = SoloSimLoss(alpha, tau)
        self.generic_map = nn.ModuleDict({
            m: nn.Linear(gen[m], distance_dim) for m in self.modalities})
        self.unique_map = nn.ModuleDict({
            m: nn.Linear(uni[m], distance_dim) for m in self.modalities})
        self.shared_estimator = shared_estimator
        names = ["shared"] if shared_estimator else self.modalities
        self.estimators = nn.ModuleDict({
            name: CLUBEstimator(distance_dim, distance_dim,
                                estimator_hidden_dim)
            for name in names} if distance == "club" else {})

    def estimator(self, modality: str) -> CLUBEstimator:
        """Return the CLUB estimator of ``modality``."""
        return self.estimators["shared" if self.shared_estimator
                               else modality]

    def split(self, x_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Return the split inputs per modality, see GenericUniqueSplit."""
        return self.splitter(x_dict)

    def distance_pairs(self, x_split: Mapping[str, Tensor]
                       ) -> dict[str, tuple[Tensor, Tensor]]:
        """Return the mapped (generic, unique) parts per modality."""
        out = {}
        for m in self.modalities:
            gen, uni = split_halves(x_split[m])
            out[m] = (self.generic_map[m](gen), self.unique_map[m](uni))
        return out

    def losses(self, x_split: Mapping[str, Tensor],
               index: Tensor | None = None) -> dict[str, Tensor]:
        """Return the weighted ``"solosim"`` and ``"distance"`` terms.

        Args:
            x_split (Mapping[str, Tensor]): The output of :meth:`split`.
            index (torch.Tensor, optional): Rows to use (e.g. the unique
                items of a batch); all rows when :obj:`None`.
                (default: :obj:`None`)
        """
        if index is not None:
            x_split = {m: x_split[m].index_select(0, index)
                       for m in self.modalities}
        first = next(iter(x_split.values()))
        if self.training and first.size(0) < 2:
            # one row (a batch's last, say): SoloSim has no other row to
            # contrast with (its value is 0) and the heads' BatchNorm1d no
            # statistics to take, so the term is 0
            solosim = first.new_zeros(())
        else:
            z = {m: self.heads[m](split_halves(x_split[m])[0])
                 for m in self.solo_sim_order}
            solosim = self.solo_sim(z)
        terms = []
        for m, (a, b) in self.distance_pairs(x_split).items():
            # half the bound, as the authors' estimator returns it
            terms.append(0.5 * self.estimator(m)(a, b)
                         if self.distance == "club"
                         else neg_l2_distance(a, b))
        return {"solosim": solosim,
                "distance": self.ureg * torch.stack(terms).mean()}

    def estimator_loss(self, x_split: Mapping[str, Tensor],
                       index: Tensor | None = None) -> Tensor:
        """Return the CLUB estimators' mean negative log-likelihood.

        The inputs are detached: minimising it moves the estimators only.
        Zero (without gradient) for ``distance="l2"``.

        Args:
            x_split (Mapping[str, Tensor]): The output of :meth:`split`.
            index (torch.Tensor, optional): Rows to use; all when
                :obj:`None`. (default: :obj:`None`)
        """
        if self.distance != "club":
            return torch.zeros((), device=next(iter(x_split.values())).device)
        x_split = {m: (x_split[m] if index is None else
                       x_split[m].index_select(0, index)).detach()
                   for m in self.modalities}
        with torch.no_grad():
            pairs = self.distance_pairs(x_split)
        return torch.stack([
            self.estimator(m).learning_loss(a, b)
            for m, (a, b) in pairs.items()]).mean()

    def estimator_parameters(self) -> Iterator[nn.Parameter]:
        """Return the CLUB estimators' parameters (none for ``"l2"``)."""
        return self.estimators.parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(modalities={self.modalities}, "
                f"distance='{self.distance}', alpha={self.alpha}, "
                f"ureg={self.ureg}, anchor={self.anchor!r})")
