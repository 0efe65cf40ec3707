"""Uniform negative sampling for BPR training."""

from __future__ import annotations

import torch
from torch import Tensor


class NegativeSampler:
    r"""Draws one uniform negative item per positive interaction.

    A negative of user :math:`u` is drawn uniformly from the items :math:`u`
    has no training interaction with (MMRec's protocol). Sampling is
    vectorised: all pairs are drawn at once, every ``(user, item)`` pair is
    encoded as ``user * num_items + item`` and tested against the sorted
    training pairs with :func:`torch.searchsorted`, and only the rejected
    draws are redrawn. Draws still rejected after ``max_rounds`` rounds
    (users who interacted with almost every item) are drawn exactly instead:
    the :math:`r`-th item not interacted with, :math:`r` uniform.

    .. code-block:: python

        sampler = NegativeSampler(edge_index, num_items, seed=0)
        neg = sampler.sample(edge_index[0])  # one negative per train edge

    Args:
        edge_index (torch.Tensor): Training interactions, shape ``[2, E]``,
            user ids in row 0, item ids in row 1.
        num_items (int): Number of items.
        num_users (int, optional): Number of users; inferred from
            ``edge_index`` if :obj:`None`. (default: :obj:`None`)
        generator (torch.Generator, optional): CPU random generator to draw
            from. (default: :obj:`None`: a new one seeded with ``seed``)
        seed (int, optional): Seed of the new generator, if ``generator`` is
            :obj:`None`. (default: :obj:`0`)
        max_rounds (int, optional): Rejection rounds before the exact
            fallback. (default: :obj:`10`)

    Raises:
        ValueError: If a user has interacted with every item (no negative
            exists) or an id is out of range.
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_items: int,
        num_users: int | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        max_rounds: int = 10,
    ) -> None:
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(
                f"'edge_index' must have shape [2, num_edges], got "
                f"{tuple(edge_index.size())}"
            )
        edge_index = edge_index.detach().cpu().long()
        user, item = edge_index
        if num_users is None:
            num_users = int(user.max()) + 1 if user.numel() > 0 else 0
        if user.numel() > 0:
            if int(user.min()) < 0 or int(user.max()) >= num_users:
                raise ValueError(
                    f"User ids must lie in [0, {num_users}), got "
                    f"[{int(user.min())}, {int(user.max())}]"
                )
            if int(item.min()) < 0 or int(item.max()) >= num_items:
                raise ValueError(
                    f"Item ids must lie in [0, {num_items}), got "
                    f"[{int(item.min())}, {int(item.max())}]"
                )
        self.num_users = num_users
        self.num_items = num_items
        self.max_rounds = max_rounds
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

        # Sorted distinct keys of the training pairs, grouped by user:
        self.key = torch.unique(user * num_items + item)
        key_user = self.key // num_items
        key_item = self.key % num_items
        self.degree = torch.bincount(key_user, minlength=num_users)
        full = (self.degree >= num_items).nonzero().view(-1)
        if full.numel() > 0:
            raise ValueError(
                f"{full.numel()} user(s) interacted with all {num_items} "
                f"items, so no negative item exists for them (first ids: "
                f"{full[:5].tolist()}); remove them from the training data"
            )
        # For the exact fallback: within a user's sorted positives p_0 < p_1
        # < ..., ``p_j - j`` is non-decreasing, and the r-th non-positive
        # item is ``r + #{j : p_j - j <= r}``.
        self.ptr = torch.zeros(num_users + 1, dtype=torch.long)
        self.ptr[1:] = self.degree.cumsum(0)
        rank = torch.arange(self.key.numel()) - self.ptr[key_user]
        self.shifted_key = key_user * (num_items + 1) + (key_item - rank)

    def is_positive(self, user: Tensor, item: Tensor) -> Tensor:
        """Return whether each ``(user[n], item[n])`` is a training pair."""
        query = user.long() * self.num_items + item.long()
        if self.key.numel() == 0:
            return torch.zeros_like(query, dtype=torch.bool)
        pos = torch.searchsorted(self.key, query)
        pos = pos.clamp(max=self.key.numel() - 1)
        return self.key[pos] == query

    def _exact(self, user: Tensor) -> Tensor:
        """Draw the negatives of ``user`` exactly, without rejection."""
        free = (self.num_items - self.degree[user]).to(torch.float64)
        uniform = torch.rand(
            user.numel(), dtype=torch.float64, generator=self.generator
        )
        # r-th free item, r uniform in [0, free); the minimum guards u -> 1:
        r = torch.minimum((uniform * free).long(), free.long() - 1)
        query = user * (self.num_items + 1) + r
        below = torch.searchsorted(self.shifted_key, query, right=True)
        return r + below - self.ptr[user]

    def sample(self, user: Tensor) -> Tensor:
        """Return one negative item for every entry of ``user``.

        Args:
            user (torch.Tensor): User ids, any shape; the result has the
                same shape and lives on the same device.
        """
        device = user.device
        flat = user.detach().reshape(-1).cpu().long()
        if flat.numel() > 0 and (int(flat.min()) < 0
                                 or int(flat.max()) >= self.num_users):
            bad = flat[(flat < 0) | (flat >= self.num_users)]
            raise ValueError(
                f"'user' has ids outside [0, {self.num_users}) (the users "
                f"of the sampler's interactions): {bad[:5].tolist()}")
        neg = torch.randint(
            self.num_items, flat.size(), generator=self.generator
        )
        todo = self.is_positive(flat, neg).nonzero().view(-1)
        for _ in range(self.max_rounds):
            if todo.numel() == 0:
                break
            neg[todo] = torch.randint(
                self.num_items, todo.size(), generator=self.generator
            )
            todo = todo[self.is_positive(flat[todo], neg[todo])]
        if todo.numel() > 0:
            neg[todo] = self._exact(flat[todo])
        return neg.view(user.size()).to(device)

    def state_dict(self) -> dict[str, Tensor]:
        """Return the generator's state, for checkpoints."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.num_users} users, "
            f"{self.num_items} items, {self.key.numel()} positives)"
        )
