"""Full-ranking evaluation of a recommender on the valid or test split."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.typing import EdgeType

from mde_pyg.data.mmrec import check_ids_in_range, pairs_in
from mde_pyg.metrics import RankingMetrics, rank_top_k
from mde_pyg.models.base import Recommender

#: The interaction edge type of every dataset in :mod:`mde_pyg.data`.
RATES: EdgeType = ("user", "rates", "item")

#: Split name -> the attribute of ``data[RATES]`` holding its edges.
SPLIT_ATTRS: dict[str, str] = {
    "train": "edge_index",
    "valid": "val_edge_index",
    "val": "val_edge_index",
    "test": "test_edge_index",
}


def _csr(edge_index: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """Return ``(indptr, indices)`` of the distinct pairs in ``edge_index``."""
    row, col = edge_index.cpu().long()
    num_cols = int(col.max()) + 1 if col.numel() > 0 else 1
    key = torch.unique(row * num_cols + col)  # sorted by row, then column
    indptr = torch.zeros(num_rows + 1, dtype=torch.long)
    indptr[1:] = torch.bincount(key // num_cols, minlength=num_rows).cumsum(0)
    return indptr, key % num_cols


def split_edges(data: HeteroData, split: str) -> Tensor:
    """Return the ``[2, E]`` user-item edges of ``split`` in ``data``.

    Args:
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data`.
        split (str): ``"train"``, ``"valid"`` (or ``"val"``) or ``"test"``.
    """
    if split not in SPLIT_ATTRS:
        raise ValueError(
            f"Unknown split '{split}'; choose 'train', 'valid' or 'test'"
        )
    store = data[RATES]
    attr = SPLIT_ATTRS[split]
    if attr not in store:
        raise ValueError(
            f"data[{RATES}] has no '{attr}' (the {split} interactions); set "
            f"it to a [2, E] tensor of (user, item) ids, or load the data "
            f"with mde_pyg.data"
        )
    return store[attr]


class SeenItems:
    """The items each user has interacted with, to leave out of a ranking.

    Stored once as CSR (``indptr`` over all users, ``indices`` the distinct
    items), copied to each device it is asked for.

    Args:
        edge_index (torch.Tensor): ``[2, E]`` (user, item) pairs; repeated
            pairs count once.
        num_users (int): The number of users.
        num_items (int, optional): The number of items, which
            :meth:`top_k` checks the score matrices' width against.
            (default: :obj:`None`: not checked)
    """

    def __init__(self, edge_index: Tensor, num_users: int,
                 num_items: int | None = None) -> None:
        self.num_users = num_users
        self.num_items = num_items
        self.indptr, self.indices = _csr(edge_index, num_users)
        self._device_cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (
                self.indptr.to(device), self.indices.to(device))
        return self._device_cache[device]

    def pairs(self, user: Tensor, device: torch.device | None = None
              ) -> Tensor:
        """Return the ``[2, M]`` (row in ``user``, seen item) pairs.

        Args:
            user (torch.Tensor): User ids of a batch, shape ``[B]``.
            device (torch.device, optional): Where to build the pairs.
                (default: :obj:`None`: the device of ``user``)
        """
        device = user.device if device is None else device
        indptr, indices = self._on(device)
        user = user.to(device)
        start = indptr[user]
        count = indptr[user + 1] - start
        row = torch.repeat_interleave(
            torch.arange(user.numel(), device=device), count
        )
        # Position of each masked entry within its user's segment:
        offset = torch.arange(row.numel(), device=device)
        offset = offset - (count.cumsum(0) - count)[row]
        return torch.stack([row, indices[start[row] + offset]])

    def top_k(self, score: Callable[[Tensor], Tensor], user: Tensor,
              k: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Score ``user`` over all items, leave out their seen items and
        return the top ``k`` ``(values, indices)``, best first. A user with
        fewer than ``k`` unseen items gets index ``-1`` and value ``-inf``
        in the positions past them (never a seen item).

        Items are ranked by score, the higher first, and items of equal
        score by id, the smaller first (:func:`mde_pyg.metrics.rank_top_k`).

        Args:
            score (Callable): A :meth:`~mde_pyg.models.Recommender.scorer`;
                its score matrix is masked in place, so it must return a
                fresh tensor.
            user (torch.Tensor): User ids of a batch, shape ``[B]``.
            k (int): Items per user.
            device (torch.device): Where the model scores.
        """
        user = user.to(device)
        scores = score(user).float()
        width = scores.size(-1) if self.num_items is None else self.num_items
        if scores.shape != (user.numel(), width):
            raise ValueError(
                f"The scorer returned scores of shape {tuple(scores.shape)} "
                f"for {user.numel()} users; expected [{user.numel()}, "
                f"{width}]: one score per item of the data")
        mask = self.pairs(user, device)
        scores[mask[0], mask[1]] = float("-inf")
        values, indices = rank_top_k(scores, k)
        # NaN ranks first, so a row with a NaN score has it at the top: one
        # look at the first column, not a pass over all scores
        nan = values[:, 0].isnan()
        if nan.any():
            raise FloatingPointError(
                f"The model scored NaN for {int(nan.sum())} of "
                f"{user.numel()} users (e.g. user {int(user[nan][0])}); its "
                f"weights have diverged: lower the learning rate or check "
                f"the input features for NaN")
        indptr = self._on(device)[0]
        unseen = scores.size(1) - (indptr[user + 1] - indptr[user])
        past = torch.arange(k, device=device) >= unseen.view(-1, 1)
        return (values.masked_fill(past, float("-inf")),
                indices.masked_fill(past, -1))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_users} users, "
                f"{self.indices.numel()} pairs)")


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.device]:
    """Run the block with ``model`` in evaluation mode, without gradients
    and outside any autocast of the caller (scores in the model's own
    precision), restoring its mode after; yield the model's device.

    Args:
        model (torch.nn.Module): The model.
    """
    was_training = model.training
    model.eval()
    device = _model_device(model)
    try:
        with torch.no_grad(), without_autocast(device):
            yield device
    finally:
        model.train(was_training)


def without_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Return a context in which no :func:`torch.autocast` of the caller
    applies on ``device`` (a no-op for devices without autocast).

    Args:
        device (torch.device): The device the block computes on.
    """
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class Evaluator:
    r"""Full-ranking evaluation over all items (the MMRec protocol).

    Every user with at least one interaction in ``split`` and at least one
    in the training split is ranked against all items (a user without
    training interactions is not evaluated); the user's *training*
    items are masked out (validation items are not masked when testing),
    and the top ``max(ks)`` items are compared with the user's held-out
    items by :class:`mde_pyg.metrics.RankingMetrics`. Items are ranked by
    score, the higher first, and items of equal score by id, the smaller
    first (:meth:`SeenItems.top_k`), so the metrics at a cut-off do not
    depend on the other cut-offs in ``ks`` nor on the device.

    The evaluated users, the mask (CSR ``indptr`` / ``indices``) and the
    targets are computed once here; a call needs one
    :meth:`~mde_pyg.models.Recommender.scorer` and one score matrix per user
    batch, on the model's device. The model is scored in evaluation mode and
    in its own precision (a caller's :func:`torch.autocast` is switched off
    meanwhile); the score matrix returned by the scorer is masked in
    place, so a scorer must return a fresh tensor.

    .. code-block:: python

        evaluator = Evaluator(data, split="valid")
        metrics = evaluator(model)  # {"recall@20": ..., ...}

    Args:
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data` with ``edge_index`` (train),
            ``val_edge_index`` and ``test_edge_index`` on
            ``('user', 'rates', 'item')``.
        split (str, optional): ``"valid"`` (or ``"val"``) or ``"test"``.
            (default: :obj:`"valid"`)
        ks (Sequence[int], optional): Cut-offs.
            (default: :obj:`(5, 10, 20, 50)`)
        batch_size (int, optional): Users scored at once.
            (default: :obj:`4096`)
    """

    def __init__(
        self,
        data: HeteroData,
        split: str = "valid",
        ks: Sequence[int] = (5, 10, 20, 50),
        batch_size: int = 4096,
    ) -> None:
        if split not in ("valid", "val", "test"):
            raise ValueError(
                f"Evaluator 'split' must be 'valid' or 'test', got '{split}'"
            )
        if batch_size < 1:
            raise ValueError(f"'batch_size' must be >= 1, got {batch_size}")
        self.split = "valid" if split == "val" else split
        self.metric = RankingMetrics(ks)
        self.ks = self.metric.ks
        self.batch_size = batch_size
        self.num_users = int(data["user"].num_nodes)
        self.num_items = int(data["item"].num_nodes)
        if self.max_k > self.num_items:
            raise ValueError(
                f"Cut-off {self.max_k} exceeds the number of items "
                f"({self.num_items}); choose smaller 'ks'"
            )

        # the ids of the two splits read within the node counts (repeated
        # pairs count once; features are the model's)
        sizes = {"user": self.num_users, "item": self.num_items}
        for name in ("train", self.split):
            index = split_edges(data, name)
            if index.dim() != 2 or index.size(0) != 2 or \
                    index.is_floating_point():
                raise ValueError(
                    f"data[{RATES}].{SPLIT_ATTRS[name]} is a {index.dtype} "
                    f"tensor of shape {tuple(index.shape)}; expected a "
                    f"[2, E] integer tensor of (user, item) ids")
            check_ids_in_range(index, f"data[{RATES}].{SPLIT_ATTRS[name]}",
                               ("user", "item"), sizes)
        # Training items to mask:
        self.seen = SeenItems(split_edges(data, "train"), self.num_users,
                              self.num_items)
        # Held-out items of the evaluated users:
        held_out = split_edges(data, self.split)
        self._warn_if_seen_in_train(held_out, data)
        ptr, index = _csr(held_out, self.num_users)
        count = ptr[1:] - ptr[:-1]
        in_train = self.seen.indptr[1:] > self.seen.indptr[:-1]
        self.users = ((count > 0) & in_train).nonzero().view(-1)
        if self.users.numel() == 0:
            raise ValueError(
                f"No user has interactions in both the {self.split} split "
                f"and the training split, so there is nothing to evaluate; "
                f"give the users with x_label "
                f"{1 if self.split == 'valid' else 2} interactions "
                f"training ones (x_label 0) too"
            )
        per_user = torch.split(index, count.tolist())
        self.targets: list[Tensor] = [per_user[u] for u in self.users.tolist()]

    def _warn_if_seen_in_train(self, held_out: Tensor,
                               data: HeteroData) -> None:
        """Warn about held-out pairs that are train pairs too: masked as
        train items, they can never be ranked, so they lower the recall.
        """
        user, item = held_out.cpu().long()
        both = pairs_in(held_out.cpu(), split_edges(data, "train"),
                        self.num_items)
        if bool(both.any()):
            first = int(both.nonzero()[0])
            warnings.warn(
                f"{int(both.sum())} of the {user.numel()} {self.split} "
                f"(user, item) pairs are train pairs too (e.g. user "
                f"{int(user[first])}, item {int(item[first])}); train items "
                f"are never ranked, so these count as misses: drop them from "
                f"the {self.split} split", stacklevel=3)

    @property
    def max_k(self) -> int:
        """The number of items ranked per user, ``max(ks)``."""
        return self.metric.max_k

    def mask_pairs(
        self, user: Tensor, device: torch.device | None = None
    ) -> Tensor:
        """Return the ``[2, M]`` (row in ``user``, train item) pairs to mask.

        Args:
            user (torch.Tensor): User ids of a batch, shape ``[B]``.
            device (torch.device, optional): Where to build the pairs.
                (default: :obj:`None`: the device of ``user``)
        """
        return self.seen.pairs(user, device)

    def top_items(self, model: Recommender, user: Tensor) -> Tensor:
        """Return the top ``max(ks)`` unseen items of every user in ``user``
        (``-1`` past the last unseen item of a user with fewer), equal
        scores ranked by the smaller item id first.

        Args:
            model (Recommender): The model to rank with.
            user (torch.Tensor): User ids, shape ``[B]``.
        """
        with evaluation_mode(model) as device:
            return self.seen.top_k(model_scorer(model), user, self.max_k,
                                   device)[1]

    def __call__(self, model: Recommender) -> dict[str, float]:
        """Evaluate ``model`` and return the averaged metrics.

        Args:
            model (Recommender): The model to evaluate.
        """
        with evaluation_mode(model) as device:
            score = model_scorer(model)
            self.metric.reset()
            for start in range(0, self.users.numel(), self.batch_size):
                end = start + self.batch_size
                top = self.seen.top_k(score, self.users[start:end],
                                      self.max_k, device)[1]
                self.metric.update(top.cpu(), self.targets[start:end],
                                   check_distinct=False)  # rank_top_k's
            return self.metric.compute()

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(split='{self.split}', "
            f"{self.users.numel()} users, ks={list(self.ks)})"
        )


def check_scorer(model: torch.nn.Module) -> None:
    """Raise a :class:`TypeError` unless ``model`` can be ranked with: a
    ``scorer()`` method returning a function of user ids ``[B]`` to scores
    ``[B, num_items]``, and ``num_users`` / ``num_items``, as every
    :class:`~mde_pyg.models.Recommender` has.

    Args:
        model (torch.nn.Module): The model to rank with.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{type(model).__name__} is not a torch.nn.Module: ranking "
            f"switches the model to evaluation mode and back; subclass "
            f"mde_pyg.models.Recommender (or torch.nn.Module)")
    missing = [name for name in ("scorer", "num_users", "num_items")
               if not hasattr(model, name)]
    if missing or not callable(model.scorer):
        raise TypeError(
            f"{type(model).__name__} lacks {missing or ['a callable scorer']}"
            f": ranking needs a scorer() method returning a function of "
            f"user ids [B] -> scores [B, num_items], and num_users and "
            f"num_items, as mde_pyg.models.Recommender has (subclass it, or "
            f"wrap the model as examples/swap_losses.py does)")


def model_scorer(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Return ``model.scorer()`` after :func:`check_scorer`.

    Args:
        model (torch.nn.Module): The model to rank with.
    """
    check_scorer(model)
    return model.scorer()


def _model_device(model: torch.nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (or CPU)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
