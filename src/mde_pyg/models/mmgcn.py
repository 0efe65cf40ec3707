"""MMGCN (Wei et al. 2019), one graph convolution network per modality."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import degree

from mde_pyg.functional import normalize
from mde_pyg.losses import embedding_bpr_loss, l2_reg
from mde_pyg.models.base import Recommender, gather_rows
from mde_pyg.models.encoder import feature_buffers, is_visual
from mde_pyg.nn.conv import LightGCNConv
from mde_pyg.nn.graphs import GraphBuffers
from mde_pyg.nn.sparse import user_item_edges


def default_latent_dims(feature_dims: Mapping[str, int],
                        latent_dim: int = 256) -> dict[str, int | None]:
    """MMRec's MMGCN inputs: the visual modality
    (:func:`~mde_pyg.models.encoder.is_visual`) is mapped to ``latent_dim``
    by a linear layer, every other modality enters with its raw width
    (:obj:`None`).
    """
    return {m: latent_dim if is_visual(m) else None for m in feature_dims}


class MMGCN(Recommender):
    r"""MMGCN, from `Wei et al. 2019 <https://arxiv.org/abs/1908.09502>`_.

    "MMGCN: Multi-modal Graph Convolution Network for Personalized
    Recommendation of Micro-video", in MMRec's form. Each modality
    :math:`m` has its own graph network over the user-item graph. Its
    input stacks a user preference matrix :math:`\mathbf{P}_m` on the
    item features (optionally mapped by a linear layer :math:`f_m`), row
    normalised; each of its :math:`L` layers aggregates the neighbours'
    mean and combines it with the node's own transformed state and the ID
    embedding :math:`\mathbf{e}_n` shared by all modalities:

    .. math::
        \mathbf{x}^{(0)}_m = \operatorname{normalize}([\mathbf{P}_m ;
        f_m(\mathbf{X}_m)]), \qquad
        \mathbf{h}_n = \sigma\Big(\frac{1}{|\mathcal{N}(n)|}
        \sum_{j \in \mathcal{N}(n)} \mathbf{W}_l \mathbf{x}_j\Big),

    .. math::
        \hat{\mathbf{x}}_n = \sigma(\operatorname{Lin}_l(\mathbf{x}_n)) +
        \mathbf{e}_n, \qquad
        \mathbf{x}_n \leftarrow \sigma(\mathbf{G}_l [\mathbf{h}_n ;
        \hat{\mathbf{x}}_n])

    with :math:`\sigma` the LeakyReLU. The representation is the mean of the
    modalities' outputs, :math:`y_{u,i}` their inner product, and the loss
    BPR plus :math:`\lambda` :func:`~mde_pyg.losses.l2_reg` on the batch
    rows of :math:`\mathbf{e}` and of every :math:`\mathbf{P}_m`.

    MMRec (and the authors' code) create :math:`\mathbf{P}_m` and
    :math:`\mathbf{e}` as plain tensors that no optimiser sees, so there
    they stay at their random initialisation; ``learn_embeddings=False``
    reproduces that, the default learns them as the paper describes
    **[choice]**. MMRec ranks with the representation cached by the last
    training step's forward pass (one update old); here
    :meth:`get_embedding` recomputes it. Every linear weight here is
    Xavier-normal and every bias zero; MMRec keeps PyTorch's default
    initialisation for its MLP and output layers and all biases, and a
    uniform one for the convolutions' weights.

    Args:
        data (HeteroData): The dataset, with item features ``x_<m>``.
        embedding_dim (int, optional): :math:`d`, the width of every layer's
            output and of :math:`\mathbf{e}`. (default: :obj:`64`)
        num_layers (int, optional): :math:`L` (MMRec: 3).
            (default: :obj:`3`)
        latent_dims (Mapping[str, int or None], optional): Per modality the
            output width of :math:`f_m`, or :obj:`None` for the raw
            features. (default: :func:`default_latent_dims`: 256 for the
            visual modality, raw for the others, as MMRec)
        reg_weight (float, optional): :math:`\lambda`. (default: 1e-4)
        learn_embeddings (bool, optional): Train :math:`\mathbf{P}_m` and
            :math:`\mathbf{e}`. (default: :obj:`True`)
        fused (bool, optional): See :class:`~mde_pyg.nn.GraphBuffers`.
            (default: :obj:`True`)
    """

    def __init__(
        self,
        data: HeteroData,
        embedding_dim: int = 64,
        num_layers: int = 3,
        latent_dims: Mapping[str, int | None] | None = None,
        reg_weight: float = 1e-4,
        learn_embeddings: bool = True,
        fused: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"'num_layers' must be >= 1, got {num_layers}")
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        dims = feature_buffers(self, data)
        self.modalities = list(dims)
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.reg_weight = reg_weight
        self.learn_embeddings = learn_embeddings
        if latent_dims is None:
            latent_dims = default_latent_dims(dims)
        if set(latent_dims) != set(dims):
            raise ValueError(f"'latent_dims' must name every modality "
                             f"{self.modalities}, got {list(latent_dims)}")
        self.latent_dims = dict(latent_dims)

        self.graphs = GraphBuffers(fused)
        edge_index, _ = user_item_edges(data)
        num_nodes = self.num_users + self.num_items
        deg = degree(edge_index[1], num_nodes)
        self.graphs.add("user_item_mean", edge_index,
                        deg.clamp(min=1).reciprocal()[edge_index[1]],
                        (num_nodes, num_nodes))
        self.aggregate = LightGCNConv(symmetric=False)

        embeddings = {"id_embedding": torch.empty(num_nodes, embedding_dim)}
        self.input_map = nn.ModuleDict()
        self.layers = nn.ModuleDict()
        for m, dim in dims.items():
            width = dim if self.latent_dims[m] is None else \
                self.latent_dims[m]
            if self.latent_dims[m] is not None:
                self.input_map[m] = nn.Linear(dim, width)
            embeddings[f"preference_{m}"] = torch.empty(self.num_users,
                                                        width)
            layers = nn.ModuleList()
            for layer in range(num_layers):
                d_in = width if layer == 0 else embedding_dim
                layers.append(nn.ModuleDict({
                    "conv": nn.Linear(d_in, d_in, bias=False),
                    "self": nn.Linear(d_in, embedding_dim),
                    "combine": nn.Linear(d_in + embedding_dim,
                                         embedding_dim),
                }))
            self.layers[m] = layers
        for name, value in embeddings.items():
            if learn_embeddings:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal weights and embeddings, zero biases."""
        tensors = [self.id_embedding] + [getattr(self, f"preference_{m}")
                               for m in self.modalities]
        for module in self.modules():
            if isinstance(module, nn.Linear):
                tensors.append(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            for tensor in tensors:
                nn.init.xavier_normal_(tensor)

    def modality_embedding(self, m: str) -> Tensor:
        """Return modality ``m``'s output for all nodes (users first)."""
        x = getattr(self, f"x_{m}")
        if m in self.input_map:
            x = self.input_map[m](x)
        x = normalize(torch.cat([getattr(self, f"preference_{m}"), x]))
        adj, weight = self.graphs.get("user_item_mean")
        for layer in self.layers[m]:
            h = F.leaky_relu(self.aggregate(layer["conv"](x), adj, weight))
            x_hat = F.leaky_relu(layer["self"](x)) + self.id_embedding
            x = F.leaky_relu(layer["combine"](torch.cat([h, x_hat], -1)))
        return x

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the mean over modalities as ``(user, item)``."""
        out = torch.stack([self.modality_embedding(m)
                           for m in self.modalities]).mean(0)
        return tuple(out.split([self.num_users, self.num_items]))

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return BPR plus the L2 term on the batch's embeddings."""
        user_emb, item_emb = self.get_embedding()
        parts = {"bpr": embedding_bpr_loss(user_emb.index_select(0, user),
                                           *gather_rows(item_emb, pos, neg))}
        if self.learn_embeddings:
            items = torch.cat([pos, neg]) + self.num_users
            batch = list(gather_rows(self.id_embedding, user, items))
            batch += [getattr(self, f"preference_{m}").index_select(0, user)
                      for m in self.modalities]
            parts["reg"] = self.reg_weight * l2_reg(*batch)
        return self.sum_parts(parts)

    def extra_repr_parts(self) -> list[str]:
        """Show the number of layers in ``repr``."""
        return [f"num_layers={self.num_layers}"]
