"""Top-k recommendation of a trained model for many users."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg.models.base import Recommender, check_k, check_user_ids
from mde_pyg.train.evaluator import (
    SeenItems,
    check_scorer,
    evaluation_mode,
    split_edges,
    without_autocast,
)

#: The splits whose items :func:`recommend` may leave out.
SPLITS: tuple[str, ...] = ("train", "valid", "test")


def seen_items(data: HeteroData, exclude: Sequence[str]) -> SeenItems:
    """Return the items of each user in the splits ``exclude`` of ``data``.

    Args:
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data`.
        exclude (Sequence[str]): Split names among :data:`SPLITS`; empty
            leaves nothing out.
    """
    if isinstance(exclude, str):
        example = ((exclude,) if exclude in SPLITS
                   else ("train", "valid", "test") if exclude == "all"
                   else ("train",))
        raise TypeError(
            f"'exclude' must be a sequence of split names among "
            f"{list(SPLITS)}, such as {example}, not the string "
            f"'{exclude}'")
    unknown = [split for split in exclude if split not in SPLITS]
    if unknown:
        raise ValueError(
            f"'exclude' names unknown splits {unknown}; choose from "
            f"{list(SPLITS)}")
    edges = [split_edges(data, split) for split in dict.fromkeys(exclude)]
    edge_index = (torch.cat(edges, dim=1) if edges
                  else torch.empty(2, 0, dtype=torch.long))
    return SeenItems(edge_index, int(data["user"].num_nodes),
                     int(data["item"].num_nodes))


def iter_recommend(
    model: Recommender,
    data: HeteroData,
    user: Tensor | None = None,
    k: int = 20,
    exclude: Sequence[str] = ("train",),
    batch_size: int = 4096,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield :func:`recommend`'s ``(user, item, score)`` one batch of
    ``batch_size`` users at a time (on the CPU), for outputs that do not
    fit in memory at once. Arguments as for :func:`recommend`.
    """
    check_scorer(model)
    num_users, num_items = model.num_users, model.num_items
    if (int(data["user"].num_nodes), int(data["item"].num_nodes)) != (
            num_users, num_items):
        raise ValueError(
            f"The model ranks {num_users} users x {num_items} items, the "
            f"data has {int(data['user'].num_nodes)} x "
            f"{int(data['item'].num_nodes)}; give the data it was trained on")
    k = check_k(k, num_items)
    if batch_size < 1:
        raise ValueError(f"'batch_size' must be >= 1, got {batch_size}")
    if user is None:
        user = torch.arange(num_users)
    user = check_user_ids(torch.as_tensor(user).view(-1).cpu(), num_users)
    seen = seen_items(data, exclude)

    with evaluation_mode(model) as device:
        # the embeddings, once, in evaluation mode
        score = model.scorer()  # checked above
    for start in range(0, user.numel(), batch_size):
        batch = user[start:start + batch_size]
        # no_grad per batch, not around the yield, so that the caller's
        # code between two batches keeps its gradients
        with torch.no_grad(), without_autocast(device):
            top, item = seen.top_k(score, batch, k, device)
        yield batch, item.cpu(), top.cpu()


def recommend(
    model: Recommender,
    data: HeteroData,
    user: Tensor | None = None,
    k: int = 20,
    exclude: Sequence[str] = ("train",),
    batch_size: int = 4096,
) -> tuple[Tensor, Tensor]:
    """Return the top-``k`` items of each user that the user has not seen.

    Ranks all items for every user in ``user`` (in batches of
    ``batch_size``, in evaluation mode, on the model's device), leaving out
    the user's items in the splits ``exclude``: the training items by
    default, as the evaluation protocol does; ``("train", "valid",
    "test")`` recommends only items new to the user.

    .. code-block:: python

        model, data = load_run("out/lfm2k_mde")
        items, scores = recommend(model, data, torch.tensor([0, 1]), k=10)

    Args:
        model (Recommender): A trained model.
        data (torch_geometric.data.HeteroData): Its dataset.
        user (torch.Tensor, optional): User ids, shape ``[B]``.
            (default: :obj:`None`: every user)
        k (int, optional): Items per user. (default: :obj:`20`)
        exclude (Sequence[str], optional): Splits whose items are never
            recommended, among :data:`SPLITS`. (default: ``("train",)``)
        batch_size (int, optional): Users ranked at once.
            (default: :obj:`4096`)

    Returns:
        ``(item, score)``, both ``[B, k]`` on the CPU, best first. A user
        with fewer than ``k`` items left gets item ``-1`` and score
        ``-inf`` in the remaining positions.
    """
    items, scores = [], []
    for _, item, score in iter_recommend(model, data, user, k, exclude,
                                         batch_size):
        items.append(item)
        scores.append(score)
    if not items:
        empty = torch.empty(0, k)
        return empty.long(), empty
    return torch.cat(items), torch.cat(scores)
