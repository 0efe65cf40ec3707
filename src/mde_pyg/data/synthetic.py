"""A seeded synthetic multi-modal dataset with a planted signal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch_geometric.data import HeteroData, InMemoryDataset

from mde_pyg.data.mmrec import RATED_BY, RATES, _edge_index


def make_synthetic(
    num_users: int = 300,
    num_items: int = 200,
    modalities: dict[str, int] | None = None,
    latent_dim: int = 8,
    interactions_per_user: int = 20,
    noise: float = 0.3,
    temperature: float = 0.5,
    split: tuple = (0.8, 0.1, 0.1),
    seed: int = 0,
    candidates: int | None = None,
) -> HeteroData:
    r"""Generate interactions whose taste depends on each modality.

    Each item :math:`i` has a latent factor :math:`\mathbf{z}_{m,i}` per
    modality; its observed features are
    :math:`\mathbf{x}_{m,i} = \tanh(\mathbf{z}_{m,i} \mathbf{P}_m) +
    \text{noise}`. Each user has a taste :math:`\mathbf{t}_{m,u}` per
    modality and a planted preference :math:`\mathbf{p}_u` over modalities:
    a third of the users favour one modality (weight 0.9), a third split
    evenly, and the rest are drawn from a Dirichlet. A user picks
    ``interactions_per_user`` distinct items without replacement with
    probability :math:`\propto \exp(\sum_m p_{u,m} \langle \mathbf{t}_{m,u},
    \mathbf{z}_{m,i} \rangle / T)` (Gumbel top-k), and each user's items are
    split at random into train / valid / test (at least one train item).

    Drawing from all items costs :math:`O(\text{users} \times
    \text{items})`, about 25 s at 10^6 interactions. With ``candidates``
    each user instead draws from ``candidates`` distinct items picked
    uniformly at random, with the same choice model among them: an
    approximation, in :math:`O(\text{users} \times \text{candidates})`,
    for data far larger than the planted signal needs (the scaling
    benchmark).

    The planted preferences are kept at ``data['user'].preference``.

    Args:
        num_users (int, optional): Users. (default: :obj:`300`)
        num_items (int, optional): Items. (default: :obj:`200`)
        modalities (Dict[str, int], optional): Modality name -> feature
            width. (default: ``{"image": 32, "text": 16}``)
        latent_dim (int, optional): Width of the latent factors.
            (default: :obj:`8`)
        interactions_per_user (int, optional): Items per user.
            (default: :obj:`20`)
        noise (float, optional): Feature noise standard deviation.
            (default: :obj:`0.3`)
        temperature (float, optional): Softmax temperature :math:`T` of the
            choice model; lower is more deterministic. (default: :obj:`0.5`)
        split (tuple, optional): Train, valid, test fractions.
            (default: ``(0.8, 0.1, 0.1)``)
        seed (int, optional): Random seed. (default: :obj:`0`)
        candidates (int, optional): If set, the number of uniformly drawn
            distinct items each user chooses among, at least
            ``interactions_per_user``; :obj:`None` for all items.
            (default: :obj:`None`)
    """
    if modalities is None:
        modalities = {"image": 32, "text": 16}
    if len(modalities) < 1:
        raise ValueError("'modalities' must name at least one modality")
    if not 1 <= interactions_per_user <= num_items:
        raise ValueError(f"'interactions_per_user' must be in [1, "
                         f"{num_items}], got {interactions_per_user}")
    if candidates is not None and not (
            interactions_per_user <= candidates <= num_items):
        raise ValueError(f"'candidates' must be in [interactions_per_user="
                         f"{interactions_per_user}, num_items={num_items}] "
                         f"or None, got {candidates}")
    rng = np.random.default_rng(seed)
    num_mod = len(modalities)

    pref = rng.dirichlet(np.ones(num_mod), size=num_users)
    group = np.arange(num_users) % 3
    favoured = rng.integers(num_mod, size=num_users)
    strong = np.full((num_users, num_mod), 0.1 / max(num_mod - 1, 1))
    strong[np.arange(num_users), favoured] = 0.9
    pref[group == 0] = strong[group == 0] if num_mod > 1 else 1.0
    pref[group == 1] = 1.0 / num_mod

    data = HeteroData()
    factors = []
    for name, width in modalities.items():
        z = rng.normal(size=(num_items, latent_dim))
        taste = rng.normal(size=(num_users, latent_dim))
        factors.append((z, taste))
        proj = rng.normal(size=(latent_dim, width)) / np.sqrt(latent_dim)
        x = np.tanh(z @ proj) + noise * rng.normal(size=(num_items, width))
        data["item"][f"x_{name}"] = torch.from_numpy(x.astype(np.float32))

    # Gumbel top-k over user chunks: memory O(chunk * width).
    width = num_items if candidates is None else candidates
    if candidates is not None:
        stacked = np.concatenate([z for z, _ in factors], 1).astype(
            np.float32)
    chosen = np.empty((num_users, interactions_per_user), dtype=np.int64)
    chunk = max(1, 2**22 // width)
    for start in range(0, num_users, chunk):
        end = min(start + chunk, num_users)
        if candidates is None:
            logits = sum(pref[start:end, m:m + 1] * (taste[start:end] @ z.T)
                         for m, (z, taste) in enumerate(factors))
            items = None
        else:
            # the same sum over modalities, as one product of the
            # preference-weighted tastes with the stacked factors
            items = _distinct_draws(rng, end - start, candidates, num_items)
            weighted = np.concatenate(
                [pref[start:end, m:m + 1] * taste[start:end]
                 for m, (_, taste) in enumerate(factors)], 1)
            logits = np.einsum("ud,ucd->uc", weighted.astype(np.float32),
                               stacked[items])
        key = logits / (temperature * np.sqrt(latent_dim)) + rng.gumbel(
            size=logits.shape)
        top = np.argpartition(-key, interactions_per_user - 1,
                              axis=1)[:, :interactions_per_user]
        chosen[start:end] = (top if items is None
                             else np.take_along_axis(items, top, axis=1))
    user = np.repeat(np.arange(num_users), interactions_per_user)
    item = chosen.reshape(-1)

    # Per-user random split, at least one train item per user.
    u = rng.random(user.size)
    order = np.lexsort((u, user))
    rank = np.empty(user.size, dtype=np.int64)
    rank[order] = np.tile(np.arange(interactions_per_user), num_users)
    n_train, n_valid = np.round(np.cumsum(split[:2])
                                * interactions_per_user).astype(np.int64)
    if interactions_per_user >= 3 and split[1] > 0 and split[2] > 0:
        # every split gets an item per user (with 5 or 6 rounding left
        # valid empty, and the trainer had nothing to stop on)
        n_train = min(n_train, interactions_per_user - 2)
        n_valid = min(max(n_valid, n_train + 1), interactions_per_user - 1)
    label = np.where(rank < max(n_train, 1), 0,
                     np.where(rank < n_valid, 1, 2))

    data["user"].num_nodes = num_users
    data["user"].preference = torch.from_numpy(pref.astype(np.float32))
    data["item"].num_nodes = num_items
    store = data[RATES]
    store.edge_index = _edge_index(user[label == 0], item[label == 0],
                                   num_items)
    store.val_edge_index = _edge_index(user[label == 1], item[label == 1],
                                       num_items)
    store.test_edge_index = _edge_index(user[label == 2], item[label == 2],
                                        num_items)
    data[RATED_BY].edge_index = store.edge_index.flip(0)
    return data


def _distinct_draws(rng: np.random.Generator, rows: int, size: int,
                    high: int) -> np.ndarray:
    """Return ``[rows, size]`` integers in ``[0, high)``, each row a
    uniformly random set of ``size`` distinct values (in sorted order).

    Each row is drawn with replacement, and every repeat is drawn again
    until none is left: sampling without replacement by rejection, so
    each set is equally likely. Above half of ``high``, a permutation per
    row is cheaper.
    """
    if 2 * size > high:
        return np.sort(np.argsort(rng.random((rows, high)), axis=1)[:, :size],
                       axis=1)
    out = np.sort(rng.integers(high, size=(rows, size)), axis=1)
    while True:
        repeat = np.zeros(out.shape, dtype=bool)
        repeat[:, 1:] = out[:, 1:] == out[:, :-1]
        count = int(repeat.sum())
        if count == 0:
            return out
        out[repeat] = rng.integers(high, size=count)
        out.sort(axis=1)


class SyntheticMultiModal(InMemoryDataset):
    r"""A small seeded multi-modal dataset, the package's embedded default.

    Wraps :func:`make_synthetic` (see there for the planted signal) as a
    one-graph :class:`~torch_geometric.data.InMemoryDataset`: nothing is
    downloaded or written to disk.

    Args:
        num_users (int, optional): Users. (default: :obj:`300`)
        num_items (int, optional): Items. (default: :obj:`200`)
        transform (callable, optional): Applied on every access.
        pre_transform (callable, optional): Applied once, e.g.
            :class:`mde_pyg.transforms.MultiModalGraphs`.
        **kwargs: Further arguments of :func:`make_synthetic`.
    """

    def __init__(
        self,
        num_users: int = 300,
        num_items: int = 200,
        transform: Callable | None = None,
        pre_transform: Callable | None = None,
        **kwargs,
    ) -> None:
        super().__init__(None, transform)
        data = make_synthetic(num_users, num_items, **kwargs)
        if pre_transform is not None:
            data = pre_transform(data)
        self.data, self.slices = self.collate([data])
