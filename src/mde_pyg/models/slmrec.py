"""SLMRec (Tao et al. 2022), self-supervised multimedia recommendation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.data.mmrec import modality_names
from mde_pyg.losses import info_nce, inner_product_info_nce, l2_reg
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import (
    add_user_item_graph,
    feature_buffers,
    is_visual,
)
from mde_pyg.nn.conv import MultiHopPropagation
from mde_pyg.nn.graphs import GraphBuffers

SSL_TASKS = ("FAC", "FD", "FM", "FD+FM")


def default_modality_order(modalities: Sequence[str]) -> list[str]:
    """SLMRec's alignment order: the visual modalities
    (:func:`~mde_pyg.models.encoder.is_visual`) first, then the others as
    given (the paper: visual, acoustic, textual).
    """
    names = list(modalities)
    visual = [m for m in names if is_visual(m)]
    return visual + [m for m in names if m not in visual]


class SLMRec(Recommender):
    r"""SLMRec, from `Tao et al. 2022
    <https://doi.org/10.1109/TMM.2022.3187556>`_.

    "Self-supervised Learning for Multimedia Recommendation", in MMRec's
    form. There are :math:`M + 1` branches, the ID branch :math:`b = 0`
    and one per modality :math:`m`; all share the user embeddings
    :math:`\mathbf{E}_U` and each propagates them with its own item input
    over the normalised user-item graph :math:`\hat{\mathbf{A}}`
    (LightGCN, mean over layers):

    .. math::
        \mathbf{H}^{(0)}_b = \begin{bmatrix} \mathbf{E}_U \\ \mathbf{I}_b
        \end{bmatrix}, \quad \mathbf{I}_0 = \mathbf{E}_I, \quad
        \mathbf{I}_m = \operatorname{normalize}(\mathbf{X}_m)
        \mathbf{W}_m^\top + \mathbf{b}_m, \quad
        \bar{\mathbf{H}}_b = \frac{1}{L+1} \sum_{l=0}^{L}
        \hat{\mathbf{A}}^l \mathbf{H}^{(0)}_b

    The branches are fused per node type by a linear layer on their
    concatenation (or mean, ``fusion="mean"``),

    .. math::
        \mathbf{e}_u = \operatorname{Lin}_U([\bar{\mathbf{h}}_{0,u};
        \dots; \bar{\mathbf{h}}_{M,u}]), \qquad
        \mathbf{e}_i = \operatorname{Lin}_I([\bar{\mathbf{h}}_{0,i};
        \dots; \bar{\mathbf{h}}_{M,i}]),

    scores are :math:`y_{u,i} = \langle \mathbf{e}_u, \mathbf{e}_i
    \rangle`, and the loss is an in-batch softmax over the batch's
    positive items (no negatives, ``uses_negatives = False``;
    :func:`~mde_pyg.losses.info_nce` one-directional) plus
    :math:`\alpha` times a self-supervised task:

    .. math::
        \mathcal{L} = -\frac{1}{B} \sum_{(u, i)} \log
        \frac{\exp(\cos(\mathbf{e}_u, \mathbf{e}_i) / \tau)}
        {\sum_{(u', i') \in B} \exp(\cos(\mathbf{e}_u, \mathbf{e}_{i'})
        / \tau)} + \alpha \mathcal{L}_{ssl}

    ``ssl_task`` chooses :math:`\mathcal{L}_{ssl}`:

    * ``"FAC"`` (fine and coarse-grained alignment, MMRec's default): on
      the batch's positive items, the ID branch is mapped into a space
      shared with the first modality, then on into one shared with the
      next, and so on, :math:`\mathbf{z}_1 = g_0(\bar{\mathbf{h}}_{0,i})`,
      :math:`\mathbf{z}_k = c_k(\mathbf{z}_{k-1})`, and each space aligns
      with its modality by an inner-product InfoNCE
      (:func:`~mde_pyg.losses.inner_product_info_nce`, temperature
      :math:`\tau_s`):

      .. math::
          \mathcal{L}_{FAC} = \sum_{k=1}^{M} \operatorname{NCE}(
          \mathbf{z}_k, g_{m_k}(\bar{\mathbf{h}}_{m_k,i}))

      with :math:`g, c` linear maps; all spaces are :math:`d` wide but the
      last of two or more, :math:`d/2` wide (as MMRec).
    * ``"FD"`` (feature dropout), ``"FM"`` (feature masking), ``"FD+FM"``:
      two augmented views of all branches are propagated and fused as
      above, and :math:`\mathcal{L}_{ssl} = \operatorname{NCE}_{\cos}(
      \mathbf{e}'_U, \mathbf{e}''_U) + \operatorname{NCE}_{\cos}(
      \mathbf{e}'_I, \mathbf{e}''_I)` on the batch's users and items
      (:func:`~mde_pyg.losses.info_nce`, one direction, :math:`\tau_s`).
      FD drops each hop's output, :math:`\mathbf{H}^{(l+1)} =
      \operatorname{dropout}_p(\hat{\mathbf{A}} \mathbf{H}^{(l)})`, with
      independent masks per view; FM zeroes the item input of one branch
      per view, the two branches drawn uniformly and distinct
      (:meth:`masked_views`); FD+FM does both. Each view's layer mean
      takes its own input as layer 0 and the *other* view's propagated
      layers, :math:`\mathbf{e}' = \frac{1}{L+1}(\mathbf{X}' +
      \sum_{l \ge 1} \mathbf{H}''^{(l)})` and vice versa (the
      authors' code).

    The random draws use torch's generator of the parameters' device
    (seeded by :func:`torch.manual_seed`).

    Departures from MMRec: MMRec reads its ``reg`` grid value nowhere;
    its regulariser is Adam's weight decay (1e-4), which is the
    :class:`~mde_pyg.train.Trainer`'s ``weight_decay``. ``reg_weight``
    adds an optional :func:`~mde_pyg.losses.l2_reg` on the batch rows of
    :math:`\mathbf{E}_U` and :math:`\mathbf{E}_I` instead, off by default
    **[choice]**. With two modalities MMRec's FAC reaches the text space
    through two stacked linear maps, the second belonging to a missing
    acoustic modality; here each step is one map :math:`c_k` (the same
    function class) **[choice]**. FM draws among the existing branches
    only (MMRec's draw includes the missing acoustic one, whose masking
    changes nothing) **[choice]**. MMRec's FD and FM code still refers to
    the acoustic modality and to a config key it lacks, so it cannot run
    there; those tasks follow the authors' code, for any number of
    modalities, its crossed chains included (each view keeps its own
    input as layer 0 and takes its propagated layers from the other
    view's chain). MMRec ranks with the embeddings cached by the last training
    step's forward pass (one update old); here :meth:`get_embedding`
    recomputes them.

    Args:
        data (HeteroData): The dataset, with the normalised user-item graph
            and item features ``x_<m>``.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): Hops :math:`L`. (default: :obj:`3`)
        ssl_task (str, optional): ``"FAC"``, ``"FD"``, ``"FM"`` or
            ``"FD+FM"``. (default: :obj:`"FAC"`)
        ssl_alpha (float, optional): :math:`\alpha` (MMRec grid: 0.01, 0.05,
            0.1, 0.5, 1.0; the authors' default 0.1). (default: :obj:`0.1`)
        ssl_temp (float, optional): :math:`\tau_s` (MMRec grid: 0.1, 0.2,
            0.5, 1.0; the authors' default 0.2). (default: :obj:`0.2`)
        temperature (float, optional): :math:`\tau` of the main loss.
            (default: :obj:`0.2`)
        dropout (float, optional): :math:`p` of FD. (default: :obj:`0.3`)
        fusion (str, optional): ``"concat"`` or ``"mean"`` of the
            branches before :math:`\operatorname{Lin}_U,
            \operatorname{Lin}_I`. (default: :obj:`"concat"`)
        reg_weight (float, optional): Weight of the optional L2 term.
            (default: :obj:`0.0`)
        normalize_features (bool, optional): L2-normalise the rows of
            :math:`\mathbf{X}_m` once, as MMRec. (default: :obj:`True`)
        modality_order (Sequence[str], optional): The modalities in FAC's
            alignment order (also the order of the concatenation).
            (default: :func:`default_modality_order`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    uses_negatives: bool = False

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 3,
        ssl_task: str = "FAC",
        ssl_alpha: float = 0.1,
        ssl_temp: float = 0.2,
        temperature: float = 0.2,
        dropout: float = 0.3,
        fusion: str = "concat",
        reg_weight: float = 0.0,
        normalize_features: bool = True,
        modality_order: Sequence[str] | None = None,
        fused: bool = True,
    ) -> None:
        if embedding_dim < 2:
            raise ValueError(f"'embedding_dim' must be >= 2, got "
                             f"{embedding_dim}")
        if num_layers < 1:
            raise ValueError(f"'num_layers' must be >= 1, got {num_layers}")
        if ssl_task not in SSL_TASKS:
            raise ValueError(f"'ssl_task' must be one of {list(SSL_TASKS)}, "
                             f"got '{ssl_task}'")
        if ssl_alpha < 0:
            raise ValueError(f"'ssl_alpha' must be >= 0, got {ssl_alpha}")
        if ssl_temp <= 0:
            raise ValueError(f"'ssl_temp' must be positive, got {ssl_temp}")
        if temperature <= 0:
            raise ValueError(f"'temperature' must be positive, got "
                             f"{temperature}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), got {dropout}")
        if fusion not in ("concat", "mean"):
            raise ValueError(f"'fusion' must be 'concat' or 'mean', got "
                             f"'{fusion}'")
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        names = modality_names(data)
        if modality_order is None:
            modality_order = default_modality_order(names)
        order = list(modality_order)
        if sorted(order) != sorted(names):
            raise ValueError(f"'modality_order' must name every modality "
                             f"{names} exactly once, got {order}")
        dims = feature_buffers(self, data, order)
        if normalize_features:
            for m in order:
                setattr(self, f"x_{m}",
                        F.normalize(getattr(self, f"x_{m}"), dim=-1))
        self.modalities = order
        self.num_branches = len(order) + 1
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.ssl_task = ssl_task
        self.ssl_alpha = ssl_alpha
        self.ssl_temp = ssl_temp
        self.temperature = temperature
        self.dropout = dropout
        self.fusion = fusion
        self.reg_weight = reg_weight

        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        self.propagation = MultiHopPropagation(num_layers, "mean")

        d = embedding_dim
        self.user_embedding = nn.Parameter(torch.empty(self.num_users, d))
        self.item_embedding = nn.Parameter(torch.empty(self.num_items, d))
        self.projection = nn.ModuleDict({
            m: nn.Linear(dim, d) for m, dim in dims.items()})
        width = d * self.num_branches if fusion == "concat" else d
        self.user_fusion = nn.Linear(width, d)
        self.item_fusion = nn.Linear(width, d)
        if ssl_task == "FAC":
            widths = [d] * len(order)
            if len(order) > 1:
                widths[-1] = d // 2
            self.fac_id_head = nn.Linear(d, widths[0])
            self.fac_heads = nn.ModuleDict({
                m: nn.Linear(d, w) for m, w in zip(order, widths)})
            self.fac_chain = nn.ModuleList([
                nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform embeddings and linear weights; PyTorch's default
        bias initialisation (as MMRec).
        """
        nn.init.xavier_uniform_(self.user_embedding)
        nn.init.xavier_uniform_(self.item_embedding)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
                nn.init.xavier_uniform_(module.weight)

    def initial_embedding(self) -> Tensor:
        r"""Return :math:`[\mathbf{H}^{(0)}_0, \dots, \mathbf{H}^{(0)}_M]`
        side by side, ``[U+I, (M+1) d]`` (users first).
        """
        items = torch.cat([self.item_embedding] + [
            self.projection[m](getattr(self, f"x_{m}"))
            for m in self.modalities], dim=-1)
        users = self.user_embedding.repeat(1, self.num_branches)
        return torch.cat([users, items])

    def propagate(self, x: Tensor, dropout: float = 0.0) -> Tensor:
        r"""Return the layer mean of ``x`` propagated over the user-item
        graph; with ``dropout > 0`` each hop's output is dropped out
        (FD), :math:`\mathbf{H}^{(l+1)} = \operatorname{dropout}_p(
        \hat{\mathbf{A}} \mathbf{H}^{(l)})`, in training mode.

        Args:
            x (torch.Tensor): ``[U+I, F]``, any number of branches and
                views side by side.
            dropout (float, optional): :math:`p`. (default: :obj:`0.0`)
        """
        return self.propagation(x, *self.graphs.get("user_item"),
                                dropout=dropout)

    def fuse(self, user: Tensor, item: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse propagated branch rows (``[*, (M+1) d]``) into
        ``(user, item)`` representations.
        """
        if self.fusion == "mean":
            user, item = (t.reshape(t.size(0), self.num_branches, -1).mean(1)
                          for t in (user, item))
        return self.user_fusion(user), self.item_fusion(item)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the fused ``(user, item)`` representations."""
        h = self.propagate(self.initial_embedding())
        return self.fuse(*h.split([self.num_users, self.num_items]))

    def masked_views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return FM's two views of ``x`` side by side and the masked
        branches.

        View :math:`k` is ``x`` with the item rows of branch :math:`b_k`
        set to zero (0 the ID branch, then the modalities in order);
        :math:`b_1` is uniform and :math:`b_2` uniform among the others.

        Args:
            x (torch.Tensor): :meth:`initial_embedding`, ``[U+I, (M+1) d]``.

        Returns:
            The views ``[U+I, 2 (M+1) d]`` and :math:`(b_1, b_2)` ``[2]``.
        """
        k = self.num_branches
        first = torch.randint(k, (1,), device=x.device)
        second = (first + torch.randint(1, k, (1,), device=x.device)) % k
        branches = torch.cat([first, second])
        keep = torch.arange(k, device=x.device) != branches.view(2, 1)
        keep = keep.to(x.dtype).repeat_interleave(self.embedding_dim, 1)
        user, item = x.split([self.num_users, self.num_items])
        return torch.cat([user.repeat(1, 2),
                          item.repeat(1, 2) * keep.view(-1)]), branches

    def fac_loss(self, item: Tensor) -> Tensor:
        r"""Return :math:`\mathcal{L}_{FAC}` of propagated item rows.

        Args:
            item (torch.Tensor): Rows of :math:`[\bar{\mathbf{H}}_0, \dots,
                \bar{\mathbf{H}}_M]` of the batch's items, ``[B, (M+1) d]``.
        """
        branch = item.split(self.embedding_dim, dim=-1)
        z = self.fac_id_head(branch[0])
        terms = []
        for k, m in enumerate(self.modalities):
            if k > 0:
                z = self.fac_chain[k - 1](z)
            terms.append(inner_product_info_nce(
                z, self.fac_heads[m](branch[k + 1]), self.ssl_temp))
        return torch.stack(terms).sum()

    def view_loss(self, x: Tensor, user: Tensor, item: Tensor) -> Tensor:
        r"""Return the FD / FM / FD+FM loss of two augmented views.

        Args:
            x (torch.Tensor): :meth:`initial_embedding`.
            user (torch.Tensor): The batch's user ids.
            item (torch.Tensor): The batch's item ids.
        """
        if "FM" in self.ssl_task:
            views = self.masked_views(x)[0]
        else:
            views = x.repeat(1, 2)
        p = self.dropout if "FD" in self.ssl_task else 0.0
        rows = torch.cat([user, item + self.num_users])
        h = self.propagate(views, p).index_select(0, rows)
        # As the authors' code, view k keeps its own input as layer 0 and
        # takes its hops from the other view's chain: from the layer means,
        # cross_k = mean_other + (x_k - x_other) / (L + 1). For FD alone
        # the two chains are exchangeable and this only swaps their names.
        views = views.index_select(0, rows)
        swap = torch.cat(views.chunk(2, -1)[::-1], dim=-1)
        h = (torch.cat(h.chunk(2, -1)[::-1], dim=-1)
             + (views - swap) / (self.num_layers + 1))
        h_user, h_item = h.split([user.numel(), item.numel()])
        u1, i1 = self.fuse(*(t.chunk(2, -1)[0] for t in (h_user, h_item)))
        u2, i2 = self.fuse(*(t.chunk(2, -1)[1] for t in (h_user, h_item)))
        return (info_nce(u1, u2, self.ssl_temp, symmetric=False)
                + info_nce(i1, i2, self.ssl_temp, symmetric=False))

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the in-batch softmax loss plus the weighted
        self-supervised loss (``neg`` is ignored).
        """
        x = self.initial_embedding()
        h = self.propagate(x)
        h_user, h_item = gather_rows(h, user, pos + self.num_users)
        u, i = self.fuse(h_user, h_item)
        parts = {"rec": info_nce(u, i, self.temperature, symmetric=False)}
        if self.ssl_task == "FAC":
            ssl = self.fac_loss(h_item)
        else:
            ssl = self.view_loss(x, user, pos)
        parts["ssl"] = self.ssl_alpha * ssl
        if self.reg_weight > 0:
            parts["reg"] = self.reg_weight * l2_reg(
                self.user_embedding.index_select(0, user),
                self.item_embedding.index_select(0, pos))
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the number of hops and the self-supervised task."""
        return [f"num_layers={self.num_layers}",
                f"ssl_task='{self.ssl_task}'"]
