"""MostPop: rank items by their training popularity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg.data.mmrec import check_data
from mde_pyg.models.base import Recommender


class MostPop(Recommender):
    r"""The popularity baseline: every user gets the same ranking,
    :math:`y_{u,i} = |\{v : (v, i) \in \mathcal{R}_{\text{train}}\}|`.

    Items of equal popularity are ranked by id, the smaller first: the
    ranking scores of :meth:`scorer` are the items' positions in that
    order (:math:`I` for the first, :math:`1` for the last), so that the
    top-:math:`k` lists do not depend on how a device's
    :func:`torch.topk` orders ties. The model has no trainable parameters;
    :class:`~mde_pyg.train.Trainer` evaluates it once without training.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
        popularity (torch.Tensor): Number of training interactions of each
            item, shape ``[num_items]``.
    """

    uses_negatives = False
    reads_features = False

    def __init__(
        self, num_users: int, num_items: int, popularity: Tensor
    ) -> None:
        super().__init__(num_users, num_items)
        if popularity.numel() != num_items:
            raise ValueError(
                f"'popularity' has {popularity.numel()} entries but there "
                f"are {num_items} items"
            )
        self.register_buffer("popularity", popularity.float().view(-1))
        # stable: equal counts keep their ascending ids
        order = torch.sort(self.popularity, descending=True,
                           stable=True).indices
        rank_score = torch.empty_like(self.popularity)
        rank_score[order] = torch.arange(num_items, 0, -1,
                                         dtype=rank_score.dtype,
                                         device=rank_score.device)
        self.register_buffer("rank_score", rank_score, persistent=False)

    @classmethod
    def from_data(cls, data: HeteroData, **hparams: Any) -> MostPop:
        """Count each item's training interactions in ``data``.

        Args:
            data (torch_geometric.data.HeteroData): A dataset of
                :mod:`mde_pyg.data`.
            **hparams: None are accepted (MostPop has no hyper-parameter).
        """
        if hparams:
            raise TypeError(
                f"MostPop takes no hyper-parameters, got {sorted(hparams)}"
            )
        check_data(data)
        num_items = int(data["item"].num_nodes)
        item = data["user", "rates", "item"].edge_index[1]
        popularity = torch.bincount(item.cpu(), minlength=num_items)
        return cls(int(data["user"].num_nodes), num_items, popularity)

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return all-one user vectors and the popularity as item vectors."""
        user = self.popularity.new_ones(self.num_users, 1)
        return user, self.popularity.view(-1, 1)

    def loss(
        self, user: Tensor, pos: Tensor, neg: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return zero: there is nothing to learn."""
        return self.popularity.new_zeros(()), {}

    @torch.no_grad()
    def scorer(self) -> Callable[[Tensor], Tensor]:
        """Return a function giving every user the ranking scores: the
        popularity order, ties to the smaller item id.
        """
        rank_score = self.rank_score

        def score(user: Tensor) -> Tensor:
            return rank_score.unsqueeze(0).repeat(user.numel(), 1)

        return score
