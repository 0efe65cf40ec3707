"""Node-level preference fusion of per-modality representations."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

FUSION_MODES = ("concat", "sum")


def check_fusion_mode(mode: str, name: str = "mode") -> str:
    """Return ``mode`` if it is one of :data:`FUSION_MODES`.

    Args:
        mode (str): The fusion mode.
        name (str, optional): The argument's name in the error message, as
            the caller spelled it (:class:`~mde_pyg.models.MDE` passes
            ``"fusion"``). (default: ``"mode"``)
    """
    if mode not in FUSION_MODES:
        raise ValueError(
            f"'{name}' must be 'concat' (the weighted modalities side by "
            f"side) or 'sum' (added up), got {mode!r}")
    return mode


def check_preference(values: Sequence[float], modalities: Sequence[str],
                     name: str = "fixed_preference") -> list[float]:
    """Return a fixed preference as floats, one per modality.

    Args:
        values (Sequence[float]): One non-negative number per modality,
            summing to 1.
        modalities (Sequence[str]): The modality names, in order.
        name (str, optional): The argument's name in the error message, as
            the caller spelled it (:class:`~mde_pyg.models.MDE` passes
            ``"global_preference"``). (default: ``"fixed_preference"``)
    """
    names = list(modalities)
    want = (f"'{name}' must hold {len(names)} non-negative numbers summing "
            f"to 1, one per modality {names}")
    example = [round(1 / max(len(names), 1), 3)] * len(names)
    if isinstance(values, (str, bytes, Mapping)):
        raise ValueError(f"{want}, got {values!r}; pass e.g. {example}")
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{want}, got {values!r}; pass e.g. "
                         f"{example}") from None
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{want}, got {values!r}") from None
    if (len(floats) != len(names)
            or not all(math.isfinite(v) and v >= 0 for v in floats)
            or not abs(sum(floats) - 1.0) <= 1e-5):
        raise ValueError(f"{want}, got {values!r}")
    return floats


def check_modalities(modalities: Sequence[str], owner: str,
                     name: str = "modalities") -> list[str]:
    """Return the modality names ``modalities`` as a list, refusing a
    string (whose characters would be taken as names), an empty list and
    a name given twice.

    Args:
        modalities (Sequence[str]): The modality names, in order.
        owner (str): The class or function taking them, for the message.
        name (str, optional): The argument's name in the message.
            (default: ``"modalities"``)
    """
    if isinstance(modalities, (str, bytes)):
        raise TypeError(
            f"{owner}: '{name}' must be a list of modality names, got the "
            f"string {modalities!r}, whose characters would be taken as "
            f"names; pass a list of names, e.g. [{modalities!r}]")
    try:
        names = list(modalities)
    except TypeError:
        raise TypeError(
            f"{owner}: '{name}' must be a list of modality names, got "
            f"{type(modalities).__name__}; pass e.g. ['image', 'text']"
        ) from None
    if not names:
        raise ValueError(f"{owner}: '{name}' is empty; pass at least one "
                         f"modality name, e.g. ['image', 'text']")
    twice = [m for i, m in enumerate(names) if m in names[:i]]
    if twice:
        raise ValueError(
            f"{owner}: '{name}' names {twice[0]!r} more than once, in "
            f"{names}; pass each modality once")
    return names


class PreferenceFusion(nn.Module):
    r"""Node-level learnable modality preferences (MDE Eq. 5).

    .. math::
        \mathbf{P} = \operatorname{softmax}(\mathbf{W}, \text{dim}=1), \qquad
        \mathbf{h}_n = \big\Vert_{m \in \mathcal{M}} P_{n,m}\,
        \tilde{\mathbf{x}}_{m,n}

    with :math:`\mathbf{W} \in \mathbb{R}^{N \times |\mathcal{M}|}`
    initialised to zero (equal preference). *Reconstruction*: the paper
    does not say whether the weighted modalities are concatenated or
    summed.

    Args:
        num_nodes (int): Number of nodes :math:`N` (users or items).
        modalities (Sequence[str]): Modality names, in fusion order: at
            least one, each once.
        mode (str, optional): **[choice]** ``"concat"`` (DRAGON-style,
            output width :math:`|\mathcal{M}| d`) or ``"sum"`` (width
            :math:`d`). (default: :obj:`"concat"`)
        fixed_preference (Sequence[float], optional): One global preference
            per modality shared by all nodes and not learned (the paper's
            Fig. 2 variant A); must sum to 1. (default: :obj:`None`)
    """

    def __init__(
        self,
        num_nodes: int,
        modalities: Sequence[str],
        mode: str = "concat",
        fixed_preference: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_fusion_mode(mode)
        self.num_nodes = num_nodes
        self.modalities = check_modalities(modalities,
                                           self.__class__.__name__)
        self.mode = mode
        if fixed_preference is None:
            self.weight: nn.Parameter | None = nn.Parameter(
                torch.empty(num_nodes, len(self.modalities)))
            self.register_buffer("fixed", None)
        else:
            fixed = torch.tensor(
                check_preference(fixed_preference, self.modalities),
                dtype=torch.float)
            self.weight = None
            self.register_buffer("fixed", fixed)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the preference logits to zero (equal preference)."""
        if self.weight is not None:
            nn.init.zeros_(self.weight)

    def preferences(self, index: Tensor | None = None) -> Tensor:
        r"""Return :math:`\mathbf{P}` (rows ``index``, or all) ``[N, M]``."""
        if self.weight is None:
            size = self.num_nodes if index is None else index.numel()
            return self.fixed.expand(size, -1)
        if index is None:
            return self.weight.softmax(dim=-1)
        try:
            weight = self.weight.index_select(0, index)
        except IndexError:  # on the CPU; CUDA asserts in the kernel
            outside = index[(index < 0) | (index >= self.num_nodes)]
            if outside.numel() == 0:
                raise  # not an id out of range (e.g. a 2-D index)
            raise IndexError(
                f"{self.__class__.__name__}: 'index' names nodes outside "
                f"[0, {self.num_nodes}) (the nodes it was built for), e.g. "
                f"{int(outside.view(-1)[0])}") from None
        return weight.softmax(dim=-1)

    def forward(
        self, x_dict: dict[str, Tensor], index: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Fuse ``x_dict`` (one ``[N, d]`` tensor per modality).

        Args:
            x_dict (Dict[str, Tensor]): Per-modality representations of the
                nodes ``index`` (or of all nodes); of one width ``d`` for
                ``mode="sum"``.
            index (torch.Tensor, optional): Node ids of the rows of
                ``x_dict``. (default: :obj:`None`)

        Returns:
            ``(fused, preferences)``.
        """
        missing = [m for m in self.modalities if m not in x_dict]
        if missing:
            raise ValueError(f"'x_dict' lacks the modalities {missing}")
        pref = self.preferences(index)
        for m in self.modalities:
            if x_dict[m].dim() != 2 or x_dict[m].size(0) != pref.size(0):
                rows = ("the batch's" if index is not None
                        else f"all {self.num_nodes}")
                raise ValueError(
                    f"x_dict['{m}'] has shape {tuple(x_dict[m].shape)}, "
                    f"but the fusion weighs {rows} nodes ({pref.size(0)}); "
                    f"pass one [N, d] row per node, and for a batch of "
                    f"nodes their ids as 'index'")
        widths = {m: x_dict[m].size(-1) for m in self.modalities}
        if self.mode == "sum" and len(set(widths.values())) > 1:
            raise ValueError(
                f"mode='sum' adds the modalities up, so they must have one "
                f"width, got widths {widths}; use mode='concat', or project "
                f"the modalities to one width first")
        parts = [pref[:, j:j + 1] * x_dict[m]
                 for j, m in enumerate(self.modalities)]
        fused = torch.cat(parts, dim=-1) if self.mode == "concat" else \
            torch.stack(parts).sum(0)
        return fused, pref

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_nodes}, "
                f"modalities={self.modalities}, mode='{self.mode}')")
