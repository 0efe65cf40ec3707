"""BM3 (Zhou et al. 2023): self-supervised bootstrapping, no negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.functional import normalize
from mde_pyg.losses import embedding_norm_reg
from mde_pyg.models.base import check_batch, gather_rows, map_rows
from mde_pyg.models.encoder import feature_buffers
from mde_pyg.models.lightgcn import LightGCN


class BM3(LightGCN):
    r"""BM3, from `Zhou et al. 2023 <https://arxiv.org/abs/2207.05969>`_.

    "Bootstrap Latent Representations for Multi-modal Recommendation".
    Online embeddings come from LightGCN plus the item ID embeddings (as
    the authors' code), :math:`\mathbf{e}_u` and :math:`\mathbf{e}_i =
    \mathbf{e}^{\text{LightGCN}}_i + \mathbf{e}^{(0)}_i`; modality
    features are projected, :math:`\mathbf{f}_{m,i} = \mathbf{W}_m
    \mathbf{x}_{m,i}`. Targets are dropped-out, stop-gradient copies,
    :math:`\tilde{\mathbf{e}} = \operatorname{dropout}(\operatorname{sg}(
    \mathbf{e}))`, and a shared linear predictor :math:`p` produces the
    online views. With :math:`c(\mathbf{a}, \mathbf{b}) = 1 -
    \cos(\mathbf{a}, \operatorname{sg}(\mathbf{b}))`
    (:func:`~mde_pyg.losses.cosine_prediction_loss`), over the batch's
    observed pairs :math:`(u, i)` only:

    .. math::
        \mathcal{L} = c(p(\mathbf{e}_u), \tilde{\mathbf{e}}_i)
        + c(p(\mathbf{e}_i), \tilde{\mathbf{e}}_u)
        + \lambda_{cl} \sum_m \big[c(p(\mathbf{f}_{m,i}),
        \tilde{\mathbf{e}}_i) + c(p(\mathbf{f}_{m,i}),
        \tilde{\mathbf{f}}_{m,i})\big]
        + \frac{\lambda}{|\mathcal{I}|} \big(\lVert \mathbf{E}_U
        \rVert_F + \lVert \mathbf{E}_I \rVert_F\big)

    the last term MMRec's ``EmbLoss`` over all online user and item
    embeddings, as the authors' code (``reg_scope="batch"``: over the
    batch's rows, divided by :math:`B`). The authors' code also leaves the
    raw features trainable (``nn.Embedding.from_pretrained(freeze=False)``);
    here they are fixed buffers, as in every model of the package. It
    keeps PyTorch's default biases for the predictor and projections
    (zeros here; both draw Xavier-normal weights).

    No negative items are needed (``uses_negatives = False``); the score
    is :math:`\langle p(\mathbf{e}_u), p(\mathbf{e}_i) \rangle`. The
    feature terms train only the projections and the shared predictor
    (their targets are stop-gradient copies), so the features reach the
    score through :math:`p` alone: on data whose taste lies only in the
    features, BM3 ranks as an ID model (on the embedded synthetic data it
    stays below MostPop with the default ``cl_weight`` and clears it by
    1.7x with ``cl_weight=0``).

    Args:
        data (HeteroData): The dataset, with the normalised user-item graph
            and item features ``x_<m>``.
        embedding_dim (int, optional): :math:`d`. (default: :obj:`64`)
        num_layers (int, optional): LightGCN hops (MMRec grid: 1, 2).
            (default: :obj:`1`)
        dropout (float, optional): Target dropout (MMRec grid: 0.3, 0.5).
            (default: :obj:`0.3`)
        reg_weight (float, optional): :math:`\lambda` of
            :func:`~mde_pyg.losses.embedding_norm_reg` (MMRec's ``EmbLoss``;
            MMRec grid: 0.1, 0.01). (default: :obj:`0.1`)
        reg_scope (str, optional): ``"all"`` online embeddings (the
            authors') or the ``"batch"`` rows. (default: ``"all"``)
        cl_weight (float, optional): :math:`\lambda_{cl}`.
            (default: :obj:`2.0`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    uses_negatives: bool = False
    reads_features: bool = True  # unlike LightGCN
    #: Runs before ``reg_scope`` regularised the batch rows.
    legacy_hparams = {"reg_scope": "batch"}

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 1,
        dropout: float = 0.3,
        reg_weight: float = 0.1,
        cl_weight: float = 2.0,
        reg_scope: str = "all",
        fused: bool = True,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), got {dropout}")
        if reg_scope not in ("all", "batch"):
            raise ValueError(f"'reg_scope' must be 'all' or 'batch', got "
                             f"'{reg_scope}'")
        self.reg_scope = reg_scope
        super().__init__(data, embedding_dim, num_layers, reg_weight, fused)
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        self.dropout = dropout
        self.cl_weight = cl_weight
        self.predictor = nn.Linear(embedding_dim, embedding_dim)
        self.projection = nn.ModuleDict({
            m: nn.Linear(dim, embedding_dim) for m, dim in dims.items()})
        for lin in [self.predictor, *self.projection.values()]:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def online(self) -> tuple[Tensor, Tensor]:
        """Return the online ``(user, item)`` embeddings (before ``p``)."""
        user, item = self.propagate()
        return user, item + self.embedding.weight[self.num_users:]

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the predicted ``(user, item)`` embeddings."""
        user, item = self.online()
        return self.predictor(user), self.predictor(item)

    def _target(self, x: Tensor) -> Tensor:
        r"""Return ``dropout(sg(x))``, always in training mode.

        Each entry is kept with probability :math:`1 - p` and scaled by
        :math:`1 / (1 - p)`, as :func:`torch.nn.functional.dropout`. The
        mask compares uniform 31-bit integers with :math:`\lfloor 2^{31} p
        \rceil`, so the keep probability is :math:`1 - p` within
        :math:`2^{-32}`; drawing them is about 2.5x faster on CPU than the
        ``bernoulli_`` inside ``F.dropout`` and 1.4x faster than
        :func:`torch.rand_like`.
        """
        x = x.detach()
        if self.dropout == 0.0:
            return x
        bits = torch.empty(x.shape, dtype=torch.int32, device=x.device)
        # below 2^31, or an int32 comparison would wrap and keep every entry
        keep = bits.random_() >= min(round(self.dropout * 2**31), 2**31 - 1)
        return x * keep * (1.0 / (1.0 - self.dropout))

    def _reg(self, out: Tensor, ego: Tensor, u: Tensor, i: Tensor) -> Tensor:
        """EmbLoss over all online embeddings or the batch's rows."""
        if self.reg_scope == "batch":
            return embedding_norm_reg(u, i)
        user, item = out.split([self.num_users, self.num_items])
        return embedding_norm_reg(user, item + ego[self.num_users:])

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r"""Return the bootstrap objective of the pairs ``(user, pos)``.

        ``neg`` is ignored. The :math:`2 + 2M` cosine terms are computed
        together: the online rows :math:`[\mathbf{e}_u; \mathbf{e}_i;
        \mathbf{f}_{1,i}; \dots]` pass the predictor and
        :func:`~mde_pyg.functional.normalize` once as one ``[(2 + M) B,
        d]`` matrix, their dropped-out targets are drawn and normalised
        once, and each term is a dot product with the sum of the
        normalised targets it is compared with, since :math:`\sum_k c(
        \mathbf{p}, \mathbf{t}_k) = K - \langle \hat{\mathbf{p}},
        \sum_k \hat{\mathbf{t}}_k \rangle` for unit rows. The value
        is that of :func:`~mde_pyg.losses.cosine_prediction_loss` term by
        term.
        """
        check_batch("BM3.loss", user)  # the view below would not say so
        ego = self.embedding.weight
        item = pos + self.num_users
        out = self.propagation(ego, *self.graphs.get("user_item"))
        u, i = gather_rows(out, user, item)
        i = i + ego.index_select(0, item)
        feats = [map_rows(lin, getattr(self, f"x_{m}"), pos)
                 for m, lin in self.projection.items()]
        online = torch.cat([u, i, *feats])
        size = user.numel()
        p = normalize(self.predictor(online), 1e-8).view(-1, size, u.size(1))
        t = F.normalize(self._target(online), dim=-1, eps=1e-8)
        t = t.view_as(p)
        # what each online row is compared with: p(e_u) with t_i, p(e_i)
        # with t_u, p(f_m) with t_i and t_m (weighted by cl_weight)
        partner = torch.cat([t[1:2], t[0:1],
                             self.cl_weight * (t[2:] + t[1:2])])
        dots = (p * partner).sum(dim=(1, 2)) / size
        num_modal = len(feats)
        parts = {"ui": 2.0 - dots[:2].sum(),
                 "cl": self.cl_weight * 2 * num_modal - dots[2:].sum(),
                 "reg": self.reg_weight * self._reg(out, ego, u, i)}
        return self.sum_parts(parts)
