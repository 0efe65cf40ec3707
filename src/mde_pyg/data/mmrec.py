"""Reading datasets in MMRec's folder layout into :class:`HeteroData`."""

from __future__ import annotations

import functools
import os
import os.path as osp
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from mde_pyg._cache import IdentityCache

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
    names = sorted(os.listdir(folder))  # unreadable: an OSError naming it
    found = [name for name in names if name.endswith(".inter")
             and osp.isfile(osp.join(folder, name))]
    if not found:
        inside = [osp.join(folder, name) for name in names
                  if osp.isdir(osp.join(folder, name))
                  and _inter_files(osp.join(folder, name))]
        fix = (f"did you mean '{inside[0]}'?" if len(inside) == 1 else
               f"did you mean one of {inside}?" if inside else
               "give the folder that holds '<name>.inter' and the modality "
               "'.npy' files")
        raise ValueError(
            f"Expected exactly one '*.inter' file in '{folder}', found no "
            f"'*.inter' file; {fix}")
    if len(found) > 1:
        raise ValueError(
            f"Expected exactly one '*.inter' file in '{folder}', found "
            f"several: {found}; pass 'inter_file' (--inter-file) to choose one"
        )
    return osp.join(folder, found[0])


def _id_range(first: int, last: int) -> str:
    """``itemID 4`` or ``itemIDs 3..4``."""
    return f"itemID {first}" if first == last else f"itemIDs {first}..{last}"


def _inter_files(folder: str) -> list[str]:
    """The ``*.inter`` files of ``folder``, sorted (none if unreadable)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(name for name in names if name.endswith(".inter")
                  and osp.isfile(osp.join(folder, name)))


#: Ids index tables of ``max id + 1`` rows (embeddings, degrees), so they
#: must stay below this bound ...
ID_BOUND = 2**31
#: ... and leave at most half of those rows unused, beyond this many.
ID_SLACK = 2**20

_ID_RULE = ("ids must be 0-based indices below 2**31 that leave few gaps, "
            "as in MMRec's format (users and items numbered 0..N-1); "
            "remap them first")


def _parse_int_column(values: np.ndarray, name: str, path: str,
                      line: np.ndarray) -> np.ndarray:
    """Parse one id column; ``line`` holds each row's line in the file."""
    try:
        out = values.astype(np.int64)
    except (ValueError, OverflowError):
        for row, value in enumerate(values):
            try:
                number = int(value)
            except ValueError:
                raise ValueError(
                    f"{path}, line {line[row]}: column '{name}' holds "
                    f"'{value}', which is not an integer id; ids must be "
                    f"0-based integers (remap them first)"
                ) from None
            if not -ID_BOUND <= number < ID_BOUND:
                raise ValueError(
                    f"{path}, line {line[row]}: column '{name}' holds the "
                    f"id {number}, which is too large; {_ID_RULE}"
                ) from None
        raise  # pragma: no cover
    bad = np.flatnonzero(out < 0)
    if bad.size:
        raise ValueError(
            f"{path}, line {line[bad[0]]}: column '{name}' holds the negative "
            f"id {out[bad[0]]}; ids must be 0-based non-negative integers"
        )
    return out


def _check_id_range(ids: np.ndarray, name: str, path: str,
                    line: np.ndarray) -> None:
    """Reject ids that would size a table far beyond the ids in use.

    Users and items are rows ``0 .. max id`` of every table built from
    them, so an id must stay below :data:`ID_BOUND`, and ``max id + 1``
    may exceed twice the number of distinct ids only within
    :data:`ID_SLACK` rows (gaps left by a filtered subset are fine, one
    raw id such as ``5000000000`` is not).
    """
    top = int(np.argmax(ids))
    size = int(ids[top]) + 1
    if size > ID_BOUND:
        raise ValueError(
            f"{path}, line {line[top]}: column '{name}' holds the id "
            f"{ids[top]}, which is too large; {_ID_RULE}")
    if size <= ID_SLACK:
        return
    distinct = np.unique(ids).size
    if size > 2 * distinct:
        raise ValueError(
            f"{path}, line {line[top]}: column '{name}' holds the id "
            f"{ids[top]}, but only {distinct} distinct ids appear, so "
            f"{size - distinct} of the {size} rows of every table would be "
            f"unused; {_ID_RULE} (to 0..{distinct - 1})")


def read_inter(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an MMRec ``.inter`` file.

    The file is tab separated with a header naming at least the columns
    ``userID``, ``itemID`` and ``x_label`` (``0`` train, ``1`` valid, ``2``
    test); ``rating``, ``timestamp`` and any other column are ignored.
    Ids are 0-based and nearly contiguous (see :data:`ID_SLACK`), below
    :data:`ID_BOUND`.

    Args:
        path (str): The ``.inter`` file.

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
    if user.size:
        _check_id_range(user, "userID", path, line)
        _check_id_range(item, "itemID", path, line)
    unknown = np.flatnonzero(~np.isin(split, list(_SPLITS)))
    if unknown.size:
        raise ValueError(
            f"{path}, line {line[unknown[0]]}: x_label {split[unknown[0]]} is "
            f"not one of 0 (train), 1 (valid), 2 (test)"
        )
    return user, item, split


_NPY_MAGIC = b"\x93NUMPY"
_SAVE_HINT = "re-create it with numpy.save(path, x) for a [num_items, dim] x"


def _load_npy(path: str) -> np.ndarray:
    """Load a ``.npy`` array, or raise a :class:`ValueError` that names
    ``path`` and what is wrong with it (an ``.npz`` archive, another
    format, a pickled object array, a truncated file).
    """
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if not magic:
        raise ValueError(f"{path} is empty (0 bytes); {_SAVE_HINT}")
    if magic.startswith(b"PK"):  # a zip archive, as numpy.savez writes
        try:
            with np.load(path, allow_pickle=False) as archive:
                inside = f" (holding the arrays {archive.files})"
        except Exception:  # a damaged archive: say what it is anyway
            inside = ""
        raise ValueError(
            f"{path} is a zip (.npz) archive{inside}, not a .npy array; "
            f"save the one feature matrix alone with numpy.save(path, x)")
    if magic != _NPY_MAGIC:
        raise ValueError(
            f"{path} is not a NumPy .npy file (it starts with {magic!r}, "
            f"not {_NPY_MAGIC!r}); {_SAVE_HINT}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{path} holds a pickled object array, which is refused "
                f"(unpickling can run arbitrary code); save a numeric "
                f"array instead, e.g. numpy.save(path, "
                f"np.asarray(x, dtype=np.float32))") from None
        raise ValueError(f"{path} is truncated or corrupt ({error}); "
                         f"{_SAVE_HINT}") from error
    except (EOFError, OSError) as error:
        raise ValueError(f"{path} is truncated or corrupt ({error}); "
                         f"{_SAVE_HINT}") from error


def _npy_files_beside(path: str) -> str:
    """``"; the folder holds a.npy, b.npy"``: the choices beside a missing
    feature file, or nothing when its folder holds none.
    """
    folder = osp.dirname(path) or "."
    try:
        found = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
    except OSError:
        return ""
    return f"; '{folder}' holds {', '.join(found)}" if found else ""


def read_features(path: str, num_items: int) -> Tensor:
    """Load one modality's ``[num_items, dim]`` feature matrix as float32.

    The file must be a ``.npy`` file (not ``.npz``, not pickled) of a 2-D
    integer, boolean or floating point array whose values are finite in
    float32 (magnitudes up to about ``3.4e38``); any other file raises a
    :class:`ValueError` that names it.

    Args:
        path (str): A ``.npy`` file whose row ``n`` describes item ``n``.
        num_items (int): The number of items named by the interactions.
    """
    if not osp.isfile(path):
        raise ValueError(
            f"Modality file '{path}' does not exist; pass an existing file "
            f"as 'modalities={{name: file}}' (--modality NAME=FILE)"
            f"{_npy_files_beside(path)}"
        )
    x = _load_npy(path)
    if x.ndim != 2:
        raise ValueError(f"{path} has shape {x.shape}; expected a 2-D "
                         f"[num_items, dim] feature matrix")
    if x.shape[0] > num_items:
        raise ValueError(
            f"{path} has {x.shape[0]} rows but the interactions name "
            f"{num_items} items (itemIDs 0..{num_items - 1}); row n must "
            f"hold the features of itemID n, and items after the largest "
            f"itemID of the interactions are not supported: save its first "
            f"{num_items} rows to a new file and name that one"
        )
    if x.shape[0] < num_items:
        raise ValueError(
            f"{path} has {x.shape[0]} rows but the interactions name "
            f"{num_items} items (itemIDs 0..{num_items - 1}); row n must "
            f"hold the features of itemID n, so "
            f"{_id_range(x.shape[0], num_items - 1)} ha"
            f"{'s' if x.shape[0] == num_items - 1 else 've'} none: add their "
            f"rows, or give the feature file of these interactions"
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{path} has dtype {x.dtype}; expected real "
                         f"numbers (integer, boolean or floating point)")
    # Checked after the cast: float64 values beyond float32's range
    # become infinite in it.
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        col = int(np.flatnonzero(bad[row])[0])
        non_finite = int((~np.isfinite(x[bad])).sum())
        too_large = int(bad.sum()) - non_finite
        what = [f"{non_finite} NaN or infinite value(s)"] if non_finite \
            else []
        if too_large:
            what.append(f"{too_large} value(s) too large for float32 (|x| > "
                        f"{float(np.finfo(np.float32).max):.3g})")
        raise ValueError(
            f"{path} has {' and '.join(what)}, the first in row {row} "
            f"(itemID {row}, column {col}: {x[row, col]}); replace them "
            f"(e.g. with zeros) or rescale the features before loading; "
            f"they are stored as float32"
        )
    return torch.from_numpy(out)


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
            file (relative to ``folder`` or absolute); ``{}`` reads no
            features, for models of the interactions alone (LightGCN,
            MostPop). (default:
            ``{"image": "image_feat.npy", "text": "text_feat.npy"}``)
    """
    path = find_inter_file(folder, inter_file)
    modalities = dict(DEFAULT_MODALITIES if modalities is None
                      else modalities)  # {}: the interactions only
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
    for split, held_out in (("valid", store.val_edge_index),
                            ("test", store.test_edge_index)):
        seen = pairs_in(held_out, store.edge_index, num_items)
        if seen.any():
            warnings.warn(
                f"{path}: {int(seen.sum())} {split} interaction(s) are also "
                f"train interactions; evaluation masks train items, so they "
                f"count as misses that no model can hit (as in MMRec); remove "
                f"them from the {split} rows for metrics that can reach 1",
                stacklevel=2)
    return data


def pair_keys(index: Tensor, num_items: int) -> Tensor:
    """Return the ``(user, item)`` pairs of the ``[2, E]`` ``index`` as one
    :obj:`torch.long` key each, ``user * num_items + item`` (on the
    device of ``index``): equal pairs, equal keys, ordered by user and
    then item.
    """
    return index[0].long() * num_items + index[1].long()


def pairs_in(index: Tensor, other: Tensor, num_items: int) -> Tensor:
    """Return, for each pair of ``index``, whether ``other`` holds it too
    (both ``[2, E]`` ``(user, item)`` tensors; a bool mask on the device
    of ``index``).
    """
    return torch.isin(pair_keys(index, num_items),
                      pair_keys(other.to(index.device), num_items))


def _node_count(data: HeteroData, node_type: str) -> int | None:
    """``data[node_type].num_nodes`` as set or inferred, else :obj:`None`."""
    if node_type not in data.node_types:
        return None
    with warnings.catch_warnings():  # PyG's "unable to infer" warning
        warnings.simplefilter("ignore")
        num = data[node_type].num_nodes
    return None if num is None else int(num)


def check_data(data: HeteroData, interactions: bool = True) -> None:
    r"""Raise a :class:`ValueError` naming the first part of ``data`` that
    does not fit its node counts, before a graph or a model is built.

    Checked, in one pass over the features and the edges (and one sort of
    the interactions): every item (and user) feature matrix ``x`` or
    ``x_<m>`` is a 2-D floating point tensor of finite values with one row
    per node; every ``*edge_index`` of every edge type ``(src, rel, dst)``
    is a ``[2, E]`` :obj:`torch.long` tensor whose ids lie in
    ``[0, num_nodes)`` of ``src`` (row 0) and ``dst`` (row 1); each
    ``*edge_index`` of ``('user', 'rates', 'item')`` (the train, valid and
    test interactions) holds every ``(user, item)`` pair once; and an
    ``edge_weight`` has one entry per edge. :func:`read_mmrec` builds such
    data; this catches a hand-built :class:`HeteroData` that would
    otherwise fail deep inside a sparse product, or read out of bounds.

    Args:
        data (torch_geometric.data.HeteroData): The dataset.
        interactions (bool, optional): Also require ``user`` and ``item``
            node counts and the train ``edge_index`` of ``('user',
            'rates', 'item')``, which every model and the user-item graph
            builders read. (default: :obj:`True`)
    """
    sizes = {t: _node_count(data, t) for t in data.node_types}
    if interactions:
        for node_type in ("user", "item"):
            if sizes.get(node_type) is None:
                raise ValueError(
                    f"data['{node_type}'].num_nodes is not set; set it to "
                    f"the number of {node_type}s (ids 0..N-1)")
        if RATES not in data.edge_types or "edge_index" not in data[RATES]:
            raise ValueError(
                f"data[{RATES}].edge_index is missing; it holds the train "
                f"interactions as a [2, E] tensor of (user, item) ids "
                f"(see mde_pyg.data.read_mmrec)")
    for node_type, num in sizes.items():
        store = data[node_type]
        for key, x in store.items():
            if num is None or not isinstance(x, Tensor) or not (
                    key == "x" or key.startswith("x_")):
                continue
            where = f"data['{node_type}'].{key}"
            if x.dim() != 2 or not x.is_floating_point():
                raise ValueError(
                    f"{where} is a {x.dtype} tensor of shape "
                    f"{tuple(x.shape)}; expected a 2-D floating point "
                    f"[num_{node_type}s, dim] matrix (e.g. x.float())")
            if x.size(0) != num:
                raise ValueError(
                    f"{where} has {x.size(0)} rows but "
                    f"data['{node_type}'].num_nodes is {num}; row n must "
                    f"hold the features of {node_type} n")
            finite = torch.isfinite(x).all(dim=1)
            if not bool(finite.all()):
                row = int((~finite).nonzero()[0])
                raise ValueError(
                    f"{where} has a NaN or infinite value in row {row} "
                    f"({node_type} {row}); fill or drop the missing "
                    f"features before training")
    for edge_type in data.edge_types:
        store = data[edge_type]
        num_edges = None
        for key, index in store.items():
            if not (key.endswith("edge_index") and isinstance(index, Tensor)):
                continue
            where = f"data[{edge_type}].{key}"
            if index.dim() != 2 or index.size(0) != 2 \
                    or index.dtype != torch.long:
                raise ValueError(
                    f"{where} is a {index.dtype} tensor of shape "
                    f"{tuple(index.shape)}; expected a [2, E] torch.long "
                    f"tensor of (source, target) ids")
            if key == "edge_index":
                num_edges = index.size(1)
            if index.numel() == 0:
                continue
            check_ids_in_range(index, where, (edge_type[0], edge_type[2]),
                               sizes)
            if edge_type == RATES and sizes.get("item") is not None:
                # one sort per edge tensor, however many checks see it
                _DISTINCT_CHECKED.get(index, functools.partial(
                    _check_distinct_pairs, num_items=sizes["item"],
                    where=where))
        weight = store.get("edge_weight")
        if isinstance(weight, Tensor) and num_edges is not None and (
                weight.dim() != 1 or weight.numel() != num_edges):
            raise ValueError(
                f"data[{edge_type}].edge_weight has shape "
                f"{tuple(weight.shape)} but edge_index has {num_edges} "
                f"edges; expected one weight per edge")


def check_ids_in_range(index: Tensor, where: str,
                       node_types: tuple[str, str],
                       sizes: Mapping[str, int | None]) -> None:
    """Raise a :class:`ValueError` naming the first id of the ``[2, E]``
    ``index`` (``where``, as the message names it) outside ``[0, N)`` of
    its row's node type (``node_types``: of row 0 and row 1; ``sizes``:
    node type -> N, :obj:`None` for unknown).
    """
    if index.numel() == 0:
        return
    for row, node_type in enumerate(node_types):
        num = sizes.get(node_type)
        low, high = (int(v) for v in torch.aminmax(index[row]))
        if low < 0:
            edge = int((index[row] == low).nonzero()[0])
            raise ValueError(
                f"{where} names the negative {node_type} id {low} "
                f"(row {row}, edge {edge}); ids must be 0-based")
        if num is not None and high >= num:
            edge = int((index[row] == high).nonzero()[0])
            raise ValueError(
                f"{where} names the {node_type} id {high} (row "
                f"{row}, edge {edge}), but data['{node_type}']"
                f".num_nodes is {num}; ids must lie in [0, {num})")


#: The interaction tensors found to hold each pair once (until changed).
_DISTINCT_CHECKED = IdentityCache(size=16)


def _check_distinct_pairs(index: Tensor, num_items: int, where: str) -> None:
    """Raise a :class:`ValueError` naming the first ``(user, item)`` pair
    that ``index`` holds more than once.
    """
    key, order = torch.sort(pair_keys(index, num_items), stable=True)
    repeated = (key[1:] == key[:-1]).nonzero()
    if repeated.numel() == 0:
        return
    first, second = (int(order[int(repeated[0]) + j]) for j in (0, 1))
    user, item = (int(v) for v in index[:, first])
    raise ValueError(
        f"{where} holds the (user, item) pair ({user}, {item}) more than "
        f"once (edges {first} and {second}); keep one edge per pair, e.g. "
        f"edge_index.unique(dim=1)")


def modality_names(data: HeteroData) -> list[str]:
    """Return the modality names of ``data`` (its ``x_<name>`` item keys)."""
    return [key[2:] for key in data["item"].keys() if key.startswith("x_")]


def modality_features(data: HeteroData) -> dict[str, Tensor]:
    """Return ``{modality: item feature matrix}`` of ``data``."""
    return {m: data["item"][f"x_{m}"] for m in modality_names(data)}
