"""DualGNN (Wang et al. 2021), per-modality graphs and a user graph."""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.losses import embedding_bpr_loss, l2_reg
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import (
    MultiModalGraphEncoder,
    add_user_item_graph,
    feature_buffers,
)
from mde_pyg.nn.conv import SimpleGraphConv
from mde_pyg.nn.graphs import GraphBuffers
from mde_pyg.transforms import CO_OCCURS, topk_positions_per_row

CONSTRUCTIONS = ("weighted_sum", "mean", "max", "cat")
USER_AGGRS = ("softmax", "mean")


def _graph_k(data: HeteroData) -> int:
    """The users per user the co-occurrence graph of ``data`` keeps: the
    ``k`` :class:`~mde_pyg.transforms.UserCoOccurrenceGraph` records, or for
    a graph built before it recorded one, the most any user has.
    """
    store = data[CO_OCCURS]
    if store.get("k") is not None:
        return int(store.k)
    target = store.edge_index[1]
    if target.numel() == 0:
        return 1
    return int(torch.bincount(target).max())


class DualGNN(Recommender):
    r"""DualGNN, from `Wang et al. 2021
    <https://doi.org/10.1109/TMM.2021.3138298>`_.

    "DualGNN: Dual Graph Neural Network for Multimedia Recommendation"
    (IEEE TMM), in the form of the authors' code as ported to MMRec.

    *Single-modal representation learning*: per modality :math:`m`, a user
    preference matrix :math:`\mathbf{P}_m` stacked on the item features
    mapped by a two-layer MLP :math:`f_m` (:math:`d_m \to 4d \to d`,
    LeakyReLU), row-normalised, propagates without parameters over the
    normalised user-item graph
    :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}`
    (the shared :class:`~mde_pyg.models.encoder.MultiModalGraphEncoder`
    with ``reduce="sum"``, ``normalize=True``):

    .. math::
        \mathbf{x}_m = \operatorname{normalize}([\mathbf{P}_m ;
        f_m(\mathbf{X}_m)]), \qquad
        \hat{\mathbf{x}}_m = \sum_{l=0}^{L} \hat{\mathbf{A}}^l \mathbf{x}_m

    *Multi-modal representation learning*: an item is the sum of its
    modality representations, a user the fusion (``construction``) of
    hers, with learnable per-user weights :math:`w_{u,m}`:

    .. math::
        \mathbf{h}_i = \sum_m \hat{\mathbf{x}}_{m,i}, \qquad
        \mathbf{h}_u = \begin{cases}
        \sum_m w_{u,m} \hat{\mathbf{x}}_{m,u} & \text{weighted\_sum} \\
        \frac{1}{|\mathcal{M}|} \sum_m \hat{\mathbf{x}}_{m,u} &
        \text{mean} \\
        \max_m w_{u,m} \hat{\mathbf{x}}_{m,u} & \text{max (elementwise)} \\
        \mathbf{W}_c \big[\Vert_m w_{u,m} \hat{\mathbf{x}}_{m,u}\big]
        + \mathbf{b}_c & \text{cat}
        \end{cases}

    and the fused user representation is aggregated over the user
    co-occurrence graph, the top-:math:`k` users :math:`\mathcal{N}_k(u)`
    sharing the most train items :math:`c_{u,v}` with :math:`u`:

    .. math::
        \mathbf{e}_u = \mathbf{h}_u + \sum_{v \in \mathcal{N}_k(u)}
        s_{u,v} \mathbf{h}_v, \qquad
        s_{u,v} = \frac{n_{u,v}\, b_{u,v}}{\sum_{v'} n_{u,v'}\, b_{u,v'}},
        \qquad b_{u,v} = \begin{cases} \exp(c_{u,v}) & \text{softmax} \\
        1 & \text{mean} \end{cases}

    :math:`y_{u,i} = \langle \mathbf{e}_u, \mathbf{h}_i \rangle`. The
    multiplicity :math:`n_{u,v}` is 1, except that, as in the authors' code,
    a user with fewer than :math:`k` (but some) co-occurring users has her
    list padded to :math:`k` with neighbours drawn uniformly with
    replacement from it, re-drawn every epoch (:meth:`on_epoch_start`);
    :math:`n_{u,v}` counts the copies of :math:`v`. MMRec's code draws
    each copy from the list as it grows (a copy can be copied again),
    which gives the same expected counts with a larger variance; here each
    copy is drawn from the :math:`c` neighbours themselves. The draw in use
    also serves evaluation, as MMRec's. Users with no co-occurring user
    get :math:`\mathbf{e}_u = \mathbf{h}_u`. The weights
    :math:`b_{u,v}` come from the graph of
    :class:`~mde_pyg.transforms.UserCoOccurrenceGraph` (softmax of the
    counts over the top users), which must have been built with at least
    ``k_user`` neighbours per user (by default ``k_user`` is the ``k`` it
    was built with, such as ``MultiModalGraphs(k_user=40)``); a smaller
    ``k_user`` keeps each user's top ``k_user`` of them.

    The loss is BPR plus :math:`\lambda` times mean squares (MMRec's
    ``(t ** 2).mean()``) of the batch rows of every :math:`\mathbf{P}_m`
    and, for ``"weighted_sum"``, of all of :math:`\mathbf{W} = (w_{u,m})`
    (for ``"cat"``, of :math:`\mathbf{W}_c` instead), as the authors:

    .. math::
        \mathcal{L} = \mathcal{L}_{BPR} + \lambda \Big(\sum_m
        \frac{\lVert \mathbf{P}_{m,\mathcal{B}} \rVert_F^2}{|\mathcal{B}|
        d} + \frac{\lVert \mathbf{W} \rVert_F^2}{|\mathcal{U}|
        |\mathcal{M}|}\Big)

    :math:`w_{u,m}` start as a softmax over modalities of Xavier-normal
    draws and are then free (no softmax in the forward pass);
    :math:`\mathbf{P}_m` are Xavier-normal and the linear layers keep
    PyTorch's default initialisation, as MMRec.

    Departures from MMRec, all **[choice]**:

    * MMRec's forward adds the text output in place into the tensor that
      also holds the visual output (``representation += self.t_rep``), so
      its user fusion is :math:`w_{u,v}(\hat{\mathbf{x}}_v +
      \hat{\mathbf{x}}_t) + w_{u,t} \hat{\mathbf{x}}_t`. That aliasing is
      absent from the authors' code and only re-parametrises the weights
      (same function class); the weighted sum above is used.
    * BPR uses the natural logarithm (:func:`~mde_pyg.losses.bpr_loss`);
      MMRec's :math:`\log_2` divides it by :math:`\ln 2`, which under Adam
      is the same training as ``reg_weight`` times :math:`\ln 2`.
    * MMRec's per-modality item-dropped graphs (``edge_index_dropv/t``),
      drawn once and never used by its forward pass (nor by the authors'),
      its unused ``weight_i`` (only regularised), ``MLP_v``/``MLP_t`` and
      ``result_embed`` are left out. MMRec ranks with ``result_embed``,
      cached by the last training step's forward pass (one update old);
      here :meth:`get_embedding` recomputes it.
    * ``"mean"``, ``"max"`` and ``"cat"`` (the authors' ``cat_mlp``) follow
      the authors' code; MMRec implements ``"weighted_sum"`` only.

    Args:
        data (HeteroData): The dataset, with the graphs of
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): User-item hops :math:`L` (MMRec: 2).
            (default: :obj:`2`)
        construction (str, optional): User fusion, one of
            ``"weighted_sum"``, ``"mean"``, ``"max"``, ``"cat"``.
            (default: :obj:`"weighted_sum"`)
        k_user (int, optional): :math:`k`, co-occurring users per user
            (MMRec: 40); above the ``k`` the graph was built with, every
            user is padded (with a warning). (default: :obj:`None`: that
            ``k``, e.g. ``mde-pyg train --k-user``, recorded in
            ``hparams`` as used)
        user_aggr (str, optional): :math:`b_{u,v}`, ``"softmax"`` of the
            counts or ``"mean"``. (default: :obj:`"softmax"`)
        pad_neighbors (bool, optional): Pad short neighbour lists to
            :math:`k` by random copies every epoch, as MMRec; :obj:`False`
            keeps :math:`n_{u,v} = 1` (for ``"mean"``, the expectation of
            the padded weights). (default: :obj:`True`)
        reg_weight (float, optional): :math:`\lambda` (MMRec grid: 0.1,
            0.01, 1e-3, 1e-4, 1e-5). (default: :obj:`1e-4`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    resolved_hparam_names = ("k_user",)  # the k of the graph it is given

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 2,
        construction: str = "weighted_sum",
        k_user: int | None = None,
        user_aggr: str = "softmax",
        pad_neighbors: bool = True,
        reg_weight: float = 1e-4,
        fused: bool = True,
    ) -> None:
        if construction not in CONSTRUCTIONS:
            raise ValueError(f"'construction' must be one of {CONSTRUCTIONS}"
                             f", got '{construction}'")
        if user_aggr not in USER_AGGRS:
            raise ValueError(f"'user_aggr' must be one of {USER_AGGRS}, got "
                             f"'{user_aggr}'")
        if num_layers < 0:
            raise ValueError(f"'num_layers' must be >= 0, got {num_layers}")
        if CO_OCCURS not in data.edge_types:
            raise ValueError(
                f"The data has no {CO_OCCURS} graph; apply "
                f"mde_pyg.transforms.UserCoOccurrenceGraph (or "
                f"MultiModalGraphs) first")
        built = _graph_k(data)
        if k_user is None:
            k_user = built
        if isinstance(k_user, bool) or not isinstance(k_user,
                                                      numbers.Integral):
            raise ValueError(f"'k_user' must be an integer, got {k_user!r}")
        if k_user < 1:
            raise ValueError(f"'k_user' must be >= 1, got {k_user}")
        if k_user > built:  # MMRec's padding of every short list
            warnings.warn(
                f"DualGNN: k_user={k_user}, but the data's co-occurrence "
                f"graph keeps {built} users per user, so every user is "
                f"padded to {k_user} with random copies of its neighbours; "
                f"leave k_user out (it follows the graph) or build the graph "
                f"with k >= {k_user} (UserCoOccurrenceGraph(k), mde-pyg "
                f"train --k-user)", stacklevel=2)
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.construction = construction
        self.k_user = k_user
        self.user_aggr = user_aggr
        self.pad_neighbors = pad_neighbors
        self.reg_weight = reg_weight

        self.graphs = GraphBuffers(fused)
        add_user_item_graph(self.graphs, data)
        self.encoder = MultiModalGraphEncoder(
            self.num_users, dims, embedding_dim, num_layers, reduce="sum",
            hidden_factor=4, normalize=True)
        num_modalities = len(self.modalities)
        if construction == "mean":
            self.register_parameter("modality_weight", None)
        else:
            self.modality_weight = nn.Parameter(
                torch.empty(self.num_users, num_modalities))
        self.user_mlp = (nn.Linear(num_modalities * embedding_dim,
                                   embedding_dim)
                         if construction == "cat" else None)
        self.user_propagation = SimpleGraphConv(residual=True)
        self._init_user_graph(data)
        self.reset_parameters()

    def _init_user_graph(self, data: HeteroData) -> None:
        """Keep the top-``k_user`` co-occurrence edges and what the padding
        draws need, then draw the first graph.
        """
        store = data[CO_OCCURS]
        weight = store.edge_weight.to(torch.float)
        # grouped by target user, as the padding draws below need
        kept = topk_positions_per_row(store.edge_index[1],
                                      store.edge_index[0], weight,
                                      self.num_users, self.k_user)
        edge_index = store.edge_index[:, kept]
        base = (weight[kept] if self.user_aggr == "softmax"
                else torch.ones_like(weight[kept]))
        count = torch.bincount(edge_index[1], minlength=self.num_users)
        start = count.cumsum(0) - count
        short = (count > 0) & (count < self.k_user)
        if not self.pad_neighbors:
            short = torch.zeros_like(short)
        draws = torch.repeat_interleave(
            short.nonzero().view(-1), (self.k_user - count)[short])
        self.register_buffer("user_edge_index", edge_index, persistent=False)
        self.register_buffer("user_edge_base", base, persistent=False)
        # One entry per padding copy: its user's first edge and list length.
        self.register_buffer("pad_start", start[draws], persistent=False)
        self.register_buffer("pad_count", count[draws], persistent=False)
        self.graphs.add("user_user", edge_index,
                        self.user_graph_weights(),
                        (self.num_users, self.num_users))

    def reset_parameters(self) -> None:
        r"""Re-initialise as MMRec: Xavier-normal :math:`\mathbf{P}_m`,
        softmax of Xavier-normal :math:`w_{u,m}`, default linear layers.
        """
        for weight in self.encoder.user.values():
            nn.init.xavier_normal_(weight)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        if self.modality_weight is not None:
            with torch.no_grad():
                nn.init.xavier_normal_(self.modality_weight)
                self.modality_weight.copy_(self.modality_weight.softmax(-1))

    @property
    def num_padding_draws(self) -> int:
        """Neighbour copies drawn per epoch to pad short lists."""
        return self.pad_start.numel()

    def user_graph_weights(self, generator: torch.Generator | None = None
                           ) -> Tensor:
        r"""Return :math:`s_{u,v}` on ``user_edge_index``, with a fresh
        padding draw.

        Args:
            generator (torch.Generator, optional): Random generator on the
                model's device. (default: :obj:`None`)
        """
        weight = self.user_edge_base
        if self.num_padding_draws:
            uniform = torch.rand(self.num_padding_draws, generator=generator,
                                 device=weight.device)
            offset = (uniform * self.pad_count).long()
            pick = self.pad_start + torch.minimum(offset, self.pad_count - 1)
            copies = torch.ones_like(weight).index_add_(
                0, pick, torch.ones_like(uniform))
            weight = copies * weight
        target = self.user_edge_index[1]
        total = torch.zeros(self.num_users, device=weight.device,
                            dtype=weight.dtype).index_add_(0, target, weight)
        return weight / total[target]

    def sample_user_graph(self, generator: torch.Generator | None = None
                          ) -> None:
        """Re-draw the padding of the user graph (:meth:`user_graph_weights`).

        Args:
            generator (torch.Generator, optional): Random generator on the
                model's device. (default: :obj:`None`)
        """
        if self.num_padding_draws:
            self.graphs.set("user_user", self.user_edge_index,
                            self.user_graph_weights(generator),
                            (self.num_users, self.num_users))

    def on_epoch_start(self, epoch: int) -> None:
        """Re-draw the padding of the user graph, as MMRec every epoch."""
        self.sample_user_graph()

    @property
    def features(self) -> dict[str, Tensor]:
        """The raw item features, ``{modality: [I, d_m]}``."""
        return {m: getattr(self, f"x_{m}") for m in self.modalities}

    def fuse_users(self, user: list[Tensor]) -> Tensor:
        """Fuse the modalities' user representations (``construction``).

        Args:
            user (List[torch.Tensor]): ``[U, d]`` per modality, in the
                order of ``modalities``.
        """
        if self.construction == "mean":
            return sum(user) / len(user)
        weight = self.modality_weight.unsqueeze(-1).unbind(1)
        weighted = [w * x for w, x in zip(weight, user)]
        if self.construction == "weighted_sum":
            return sum(weighted)
        if self.construction == "max":
            return torch.stack(weighted).amax(0)
        return self.user_mlp(torch.cat(weighted, dim=-1))

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        r"""Return :math:`(\mathbf{e}_U, \mathbf{h}_I)`, each ``[*, d]``."""
        x_hat = self.encoder(self.features, *self.graphs.get("user_item"))
        sizes = [self.num_users, self.num_items]
        user, item = zip(*(x_hat[m].split(sizes) for m in self.modalities))
        user = self.user_propagation(self.fuse_users(list(user)),
                                     *self.graphs.get("user_user"))
        return user, sum(item)

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the mean-square regulariser."""
        user_emb, item_emb = self.get_embedding()
        parts = {"bpr": embedding_bpr_loss(user_emb.index_select(0, user),
                                           *gather_rows(item_emb, pos, neg))}
        # l2_reg averages over rows; dividing by the width gives the mean
        # over entries that MMRec's reg_weight scales.
        reg = l2_reg(*(self.encoder.user[m].index_select(0, user)
                       for m in self.modalities)) / self.embedding_dim
        if self.construction == "weighted_sum":
            reg = reg + l2_reg(self.modality_weight) / len(self.modalities)
        elif self.construction == "cat":
            reg = reg + l2_reg(self.user_mlp.weight) / \
                self.user_mlp.in_features
        parts["reg"] = self.reg_weight * reg
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the fusion and the user graph in ``repr``."""
        return [f"construction='{self.construction}'",
                f"k_user={self.k_user}", f"user_aggr='{self.user_aggr}'"]
