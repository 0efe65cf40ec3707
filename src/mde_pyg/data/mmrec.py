"""Reading datasets in MMRec's folder layout into :class:`HeteroData`."""

from __future__ import annotations

import os
import os.path as osp
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

#: Modality name -> feature file used when none is given (MMRec's Amazon).
DEFAULT_MODALITIES: dict[str, str] = {
    "image": "image_feat.npy",
    "text": "text_feat.npy",
}

#: The edge types that carry the interactions in every dataset.
RATES = ("user", "rates", "item")
RATED_BY = ("item", "rated_by", "user")

_REQUIRED = ("userID", "itemID", "x_label")
_SPLITS = {0: "train", 1: "valid", 2: "test"}


def find_inter_file(folder: str, inter_file: str | None = None) -> str:
    """Return the path of the interaction file of an MMRec folder.

    Args:
        folder (str): The dataset folder.
        inter_file (str, optional): A file name inside ``folder``; when
            :obj:`None`, the folder must hold exactly one ``*.inter`` file.
    """
    if not osp.isdir(folder):
        raise ValueError(
            f"Dataset folder '{folder}' does not exist: pass the folder that "
            f"holds '<name>.inter' and the modality '.npy' files"
        )
    if inter_file is not None:
        path = inter_file if osp.isabs(inter_file) else osp.join(
            folder, inter_file)
        if not osp.isfile(path):
            raise ValueError(f"Interaction file '{path}' does not exist")
        return path
    found = sorted(f for f in os.listdir(folder) if f.endswith(".inter"))
    if len(found) != 1:
        what = "no '*.inter' file" if not found else f"several: {found}"
        raise ValueError(
            f"Expected exactly one '*.inter' file in '{folder}', found "
            f"{what}; pass 'inter_file' to choose one"
        )
    return osp.join(folder, found[0])


def _parse_int_column(values: np.ndarray, name: str, path: str,
                      line: np.ndarray) -> np.ndarray:
    """Parse one id column; ``line`` holds each row's line in the file."""
    try:
        out = values.astype(np.int64)
    except ValueError:
        for row, value in enumerate(values):
            try:
                int(value)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line[row]}: column '{name}' holds "
                    f"'{value}', which is not an integer id; ids must be "
                    f"0-based integers (remap them first)"
                ) from None
        raise  # pragma: no cover
    bad = np.flatnonzero(out < 0)
    if bad.size:
        raise ValueError(
            f"{path}, line {line[bad[0]]}: column '{name}' holds the negative "
            f"id {out[bad[0]]}; ids must be 0-based non-negative integers"
        )
    return out


def read_inter(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an MMRec ``.inter`` file.

    The file is tab separated with a header naming at least the columns
    ``userID``, ``itemID`` and ``x_label`` (``0`` train, ``1`` valid, ``2``
    test); ``rating``, ``timestamp`` and any other column are ignored.

    Returns:
        ``(user, item, split)`` as :obj:`int64` arrays.
    """
    with open(path, encoding="utf-8-sig") as f:  # a byte-order mark too
        # "\n" only: splitlines() also breaks at form feeds and other
        # separators, which would shift the line numbers of the errors
        lines = [line.rstrip("\r") for line in f.read().split("\n")]
        if lines and lines[-1] == "":
            lines.pop()
    if not lines:
        raise ValueError(f"{path} is empty; expected a tab-separated header "
                         f"with columns {list(_REQUIRED)}")
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in _REQUIRED if c not in header]
    if missing:
        raise ValueError(
            f"{path}: the header {header} lacks the column(s) {missing}; an "
            f"MMRec '.inter' file is tab separated with columns "
            f"{list(_REQUIRED)} (rating and timestamp optional)"
        )
    # Blank lines are skipped; ``line`` keeps each row's line number.
    kept = [(n, text) for n, text in enumerate(lines[1:], start=2)
            if text.strip()]
    line = np.array([n for n, _ in kept], dtype=np.int64)
    rows = [text.split("\t") for _, text in kept]
    widths = np.fromiter((len(r) for r in rows), dtype=np.int64,
                         count=len(rows))
    bad = np.flatnonzero(widths != len(header))
    if bad.size:
        raise ValueError(
            f"{path}, line {line[bad[0]]}: {widths[bad[0]]} fields, but the "
            f"header has {len(header)}; the file must be tab separated"
        )
    table = np.array(rows, dtype=object).reshape(len(rows), len(header))
    cols = {name: table[:, header.index(name)].astype(str) for name in
            _REQUIRED}
    user = _parse_int_column(cols["userID"], "userID", path, line)
    item = _parse_int_column(cols["itemID"], "itemID", path, line)
    split = _parse_int_column(cols["x_label"], "x_label", path, line)
    unknown = np.flatnonzero(~np.isin(split, list(_SPLITS)))
    if unknown.size:
        raise ValueError(
            f"{path}, line {line[unknown[0]]}: x_label {split[unknown[0]]} is "
            f"not one of 0 (train), 1 (valid), 2 (test)"
        )
    return user, item, split


def read_features(path: str, num_items: int) -> Tensor:
    """Load one modality's ``[num_items, dim]`` feature matrix as float32.

    Args:
        path (str): A ``.npy`` file whose row ``n`` describes item ``n``.
        num_items (int): The number of items named by the interactions.
    """
    if not osp.isfile(path):
        raise ValueError(
            f"Modality file '{path}' does not exist; pass an existing file "
            f"as 'modalities={{name: file}}' (--modality NAME=FILE)"
        )
    x = np.load(path, allow_pickle=False)
    if x.ndim != 2:
        raise ValueError(f"{path} has shape {x.shape}; expected a 2-D "
                         f"[num_items, dim] feature matrix")
    if x.shape[0] != num_items:
        raise ValueError(
            f"{path} has {x.shape[0]} rows but the interactions name "
            f"{num_items} items; row n must hold the features of itemID n"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path} has dtype {x.dtype}; expected numbers")
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(
            f"{path} has {int(bad.sum())} NaN or infinite value(s), the first "
            f"in row {row} (itemID {row}); replace them (e.g. with zeros) "
            f"before loading"
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _edge_index(user: np.ndarray, item: np.ndarray,
                num_items: int) -> Tensor:
    """Return unique ``(user, item)`` pairs as a sorted ``[2, E]`` tensor."""
    key = np.unique(user * num_items + item)
    return torch.from_numpy(np.stack([key // num_items, key % num_items]))


def read_mmrec(
    folder: str,
    inter_file: str | None = None,
    modalities: Mapping[str, str] | None = None,
) -> HeteroData:
    r"""Read a dataset in MMRec's layout into a :class:`HeteroData`.

    The folder holds ``<name>.inter`` (see :func:`read_inter`) and one
    ``.npy`` feature matrix per modality, row ``n`` = item ``n``.

    The result has node types ``user`` and ``item``; item features of
    modality ``m`` at ``data['item'][f'x_{m}']`` (float32); the edge type
    ``('user', 'rates', 'item')`` with ``edge_index`` holding the TRAIN
    interactions and ``val_edge_index`` / ``test_edge_index`` the held-out
    ones; and the reverse type ``('item', 'rated_by', 'user')``. Duplicate
    interactions are kept once. Valid and test rows of users without a
    train interaction are dropped, with a warning that counts them; valid
    or test pairs that are also train pairs are kept, with a warning (the
    evaluation masks them, so no model can hit them).

    Args:
        folder (str): The dataset folder.
        inter_file (str, optional): The interaction file name, when the
            folder holds several. (default: :obj:`None`)
        modalities (Mapping[str, str], optional): Modality name -> feature
            file (relative to ``folder`` or absolute). (default:
            ``{"image": "image_feat.npy", "text": "text_feat.npy"}``)
    """
    path = find_inter_file(folder, inter_file)
    modalities = dict(DEFAULT_MODALITIES if modalities is None
                      else modalities)
    if not modalities:
        raise ValueError("'modalities' is empty; name at least one "
                         "modality file, e.g. {'text': 'text_feat.npy'}")
    for name in modalities:
        if not name.isidentifier():
            raise ValueError(f"Modality name '{name}' must be a valid "
                             f"identifier (letters, digits, underscores)")

    user, item, split = read_inter(path)
    if user.size == 0:
        raise ValueError(f"{path} holds no interactions")
    num_users = int(user.max()) + 1
    num_items = int(item.max()) + 1

    train = split == 0
    if not train.any():
        raise ValueError(f"{path} has no train interactions (x_label 0); "
                         f"the graphs are built from the train split")
    has_train = np.zeros(num_users, dtype=bool)
    has_train[user[train]] = True
    dropped = (~train) & ~has_train[user]
    if dropped.any():
        warnings.warn(
            f"{path}: dropped {int(dropped.sum())} valid/test interaction(s) "
            f"of {len(np.unique(user[dropped]))} user(s) with no train "
            f"interaction", stacklevel=2)

    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    for name, file in modalities.items():
        file_path = file if osp.isabs(file) else osp.join(folder, file)
        data["item"][f"x_{name}"] = read_features(file_path, num_items)

    store = data[RATES]
    keep = {s: (split == code) & ~dropped for code, s in _SPLITS.items()}
    store.edge_index = _edge_index(user[keep["train"]], item[keep["train"]],
                                   num_items)
    store.val_edge_index = _edge_index(user[keep["valid"]],
                                       item[keep["valid"]], num_items)
    store.test_edge_index = _edge_index(user[keep["test"]],
                                        item[keep["test"]], num_items)
    data[RATED_BY].edge_index = store.edge_index.flip(0)
    train_keys = store.edge_index[0] * num_items + store.edge_index[1]
    for split, held_out in (("valid", store.val_edge_index),
                            ("test", store.test_edge_index)):
        seen = torch.isin(held_out[0] * num_items + held_out[1], train_keys)
        if seen.any():
            warnings.warn(
                f"{path}: {int(seen.sum())} {split} interaction(s) are also "
                f"train interactions; evaluation masks train items, so they "
                f"count as misses that no model can hit (as in MMRec); remove "
                f"them from the {split} rows for metrics that can reach 1",
                stacklevel=2)
    return data


def modality_names(data: HeteroData) -> list[str]:
    """Return the modality names of ``data`` (its ``x_<name>`` item keys)."""
    return [key[2:] for key in data["item"].keys() if key.startswith("x_")]


def modality_features(data: HeteroData) -> dict[str, Tensor]:
    """Return ``{modality: item feature matrix}`` of ``data``."""
    return {m: data["item"][f"x_{m}"] for m in modality_names(data)}
