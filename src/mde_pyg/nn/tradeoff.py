"""Trade-off weights between modality distancing and alignment."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def preference_gap(pref: Tensor) -> Tensor:
    r"""Mean pairwise absolute difference of each row of ``pref``.

    .. math::
        \delta_n = \binom{|\mathcal{M}|}{2}^{-1} \sum_{m < m'}
        |P_{n,m} - P_{n,m'}|

    which is :math:`|P_{n,v} - P_{n,t}|` for two modalities.

    Args:
        pref (torch.Tensor): Preferences ``[N, M]`` with ``M >= 2``.
    """
    num = pref.size(-1)
    if num < 2:
        raise ValueError(f"A trade-off needs at least two modalities, got "
                         f"preferences of width {num}")
    first, second = torch.triu_indices(num, num, offset=1,
                                       device=pref.device)
    return (pref[:, first] - pref[:, second]).abs().mean(dim=-1)


def _check_preferences(pref: Tensor) -> None:
    """Refuse ``pref`` unless it is ``[N, M]`` and, on the CPU, each row
    is non-negative and sums to 1 (to the rounding of its dtype).
    """
    if pref.dim() != 2:
        raise ValueError(
            f"NodeLevelTradeoff: the preferences must be [N, M] (a row per "
            f"node, a column per modality), got shape {tuple(pref.shape)}")
    if pref.is_cuda or pref.numel() == 0:
        return
    tol = 8 * torch.finfo(pref.dtype).eps + 1e-5
    sums = pref.sum(dim=-1, dtype=torch.float64)
    bad = (pref < 0).any(dim=-1) | ~((sums - 1.0).abs() <= tol)  # NaN too
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(
            f"NodeLevelTradeoff: preference row {row} is "
            f"{pref[row].tolist()}, not a distribution over the modalities "
            f"(non-negative, summing to 1); pass softmax-ed preferences, "
            f"such as PreferenceFusion.preferences(index), not their logits")


class NodeLevelTradeoff(nn.Module):
    r"""Node-level trade-off weights from modality preferences (MDE Eq. 8).

    .. math::
        \mathbf{W}_d = \operatorname{broadcast}_d(\boldsymbol{\delta}),
        \qquad
        \mathbf{W}_a = \operatorname{broadcast}_d(1 - \boldsymbol{\delta})

    with :math:`\boldsymbol{\delta}` from :func:`preference_gap`: a node
    whose modalities matter unequally gets more distancing (MDA), one whose
    modalities matter alike gets more alignment (MSA). The weights are
    returned per node (``[N]``); the broadcast over the :math:`d` feature
    dimensions happens inside the losses, where a per-node weight scales a
    per-node term.

    Args:
        detach (bool, optional): **[choice]** stop gradients from the losses
            into the preferences, which are then learned through the
            recommendation loss only. (default: :obj:`True`)
    """

    def __init__(self, detach: bool = True) -> None:
        super().__init__()
        self.detach = detach

    def forward(self, pref: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(w_d, w_a)``, each ``[N]``, from preferences ``[N, M]``.

        Each row of ``pref`` is a distribution over the modalities (such
        as :meth:`~mde_pyg.nn.PreferenceFusion.preferences`, a softmax), so
        that both weights lie in :math:`[0, 1]`; on the CPU, rows that are
        not (raw logits, say) are refused, since they would give negative
        alignment weights. CUDA tensors are not checked (the check would
        wait for the device at every step).
        """
        if self.detach:
            pref = pref.detach()
        _check_preferences(pref)
        # at most 1 for a distribution; clamped against a row that sums to
        # 1 only within rounding, whose w_a would dip below 0
        gap = preference_gap(pref).clamp(max=1.0)
        return gap, 1.0 - gap

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(detach={self.detach})"


class LearnableTradeoff(nn.Module):
    r"""Independent learnable node-level trade-off (MDE Fig. 2, variant B).

    .. math::
        (w_{d,n}, w_{a,n}) = \operatorname{softmax}(\boldsymbol{\theta}_n)

    with :math:`\boldsymbol{\theta} \in \mathbb{R}^{N \times 2}` initialised
    to zero, learned jointly with the model instead of being derived from
    the modality preferences.

    Args:
        num_nodes (int): Number of nodes.
    """

    def __init__(self, num_nodes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_nodes, 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset to equal weights."""
        nn.init.zeros_(self.weight)

    def forward(self, index: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """Return ``(w_d, w_a)`` of the nodes ``index`` (or all)."""
        weight = (self.weight if index is None
                  else self.weight.index_select(0, index))
        prob = weight.softmax(dim=-1)
        return prob[:, 0], prob[:, 1]

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.weight.size(0)})"
