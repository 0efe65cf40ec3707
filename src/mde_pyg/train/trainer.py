"""BPR training with early stopping on the validation split."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import pickle
import random
import re
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from mde_pyg._cache import IdentityCache
from mde_pyg.data.mmrec import pair_keys
from mde_pyg.files import atomic_save, atomic_write_json
from mde_pyg.metrics import check_ks, metric_keys
from mde_pyg.models.base import Recommender, plain_values
from mde_pyg.train.evaluator import Evaluator, _model_device, split_edges
from mde_pyg.train.sampler import NegativeSampler

#: Evaluation cut-offs and selection metric of :class:`Trainer` by default.
DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)
DEFAULT_EVAL_METRIC = "recall@20"

#: Precision settings of :class:`Trainer`.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

#: :attr:`Trainer.config` keys a resumed run may change (``model_path``: the
#: same class imported from elsewhere, e.g. a notebook's ``__main__`` class
#: from a module; its name, arguments and weights are still compared).
#: A dotted name is one entry of a recorded dict: ``mde-pyg train``'s data
#: paths as spelled (``data.data``, ``data.root``) and where it started
#: (``data.cwd``) may change, the folder they name (``data.folder``) not.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {"max_epochs", "device", "model_path", "data.cwd", "data.data",
     "data.root"})


class ResumeMismatchError(ValueError):
    """``fit(resume=True)`` found a checkpoint written under other
    settings; raised before anything is loaded or trained.

    Args:
        message (str): What does not match, where that is not a list of
            settings (weights of other shapes).
        path (str or os.PathLike, optional): The checkpoint.
        changes (Sequence[tuple[str, Any, Any]], optional): The settings
            that differ, as ``(key, saved, current)``; a key of the
            checkpoint's ``config`` or ``"<key>.<sub-key>"`` of a dict
            in it (``"data.k_user"``). :obj:`None` stands for a setting
            the checkpoint or the current run does not record.

    Attributes:
        path (pathlib.Path or None): The checkpoint.
        changes (list[tuple[str, Any, Any]]): As given (empty without).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        path: str | os.PathLike | None = None,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        self.path = None if path is None else Path(path)
        self.changes = list(changes)
        if message is None and not self.changes:
            raise ValueError("ResumeMismatchError needs a 'message' or "
                             "'changes'")
        self._message = message
        super().__init__(message if message is not None else
                         self.describe())

    def __reduce__(self):
        # keep path and changes across pickling (a run in another process)
        return (_rebuild_resume_mismatch,
                (self._message, self.path, self.changes))

    def describe(self, defaults: Mapping[str, Any] | None = None) -> str:
        """The message, with ``defaults[key]`` in place of the
        :obj:`None` of a setting one side does not record (a run that
        stores a setting only when it is not at its default).

        Args:
            defaults (Mapping[str, Any], optional): Values by key of
                :attr:`changes`. (default: :obj:`None`)
        """
        if self._message is not None:
            return self._message
        defaults = defaults or {}

        def shown(key: str, value: Any) -> str:
            if value is None and key in defaults:
                value = defaults[key]
            return repr(value)

        listed = "; ".join(f"{key} {shown(key, old)} -> {shown(key, new)}"
                           for key, old, new in self.changes)
        return (f"'{self.path}' was written under other settings "
                f"({listed}); resume with the settings it was started "
                f"with, or train into another output folder")


def _rebuild_resume_mismatch(message, path, changes):
    return ResumeMismatchError(message, path=path, changes=changes)


class CheckpointError(ValueError):
    """A checkpoint file that :func:`torch.load` cannot read (truncated,
    or not written by mde-pyg) or that lacks an entry it must hold; the
    message names the file and what to do.
    """


#: File names written into :obj:`Trainer.output_dir`.
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
HISTORY_FILE = "history.json"

class RunExistsError(FileExistsError):
    """:meth:`Trainer.fit` was asked to start a new run in an
    ``output_dir`` that holds one, without ``resume`` or ``overwrite``;
    raised before anything is trained or written.
    """


def run_files(folder: str | os.PathLike | None) -> list[str]:
    """Return the names of the run files (``last.pt``, ``best.pt``,
    ``history.json``) that ``folder`` holds; ``[]`` for :obj:`None`.
    """
    if folder is None:
        return []
    return [name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, HISTORY_FILE)
            if (Path(folder) / name).is_file()]


def check_run_is_free(folder: str | os.PathLike | None) -> None:
    """Raise :class:`RunExistsError` when ``folder`` holds a run's files.

    Args:
        folder (str or os.PathLike or None): A :class:`Trainer`'s
            ``output_dir`` (:obj:`None`: no folder, nothing held).
    """
    held = run_files(folder)
    if held:
        raise RunExistsError(
            f"'{folder}' already holds a run ({', '.join(held)}); "
            f"fit(resume=True) continues it, fit(overwrite=True) starts a "
            f"new run there (from the model's current weights), or give "
            f"another output_dir")


#: Called after every epoch with ``(trainer, history_entry)``.
EpochCallback = Callable[["Trainer", dict[str, Any]], None]


def can_redraw(stream: Any) -> bool:
    """Whether a :mod:`tqdm` bar can redraw itself on ``stream``: a
    terminal, or a notebook (where :mod:`tqdm.auto` picked its widget).

    Args:
        stream: The stream the bar writes to, usually :obj:`sys.stderr`.
    """
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def seed_everything(seed: int) -> None:
    """Seed Python's :mod:`random`, NumPy and PyTorch (CPU and CUDA).

    Args:
        seed (int): The seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _unreadable_checkpoint(path: Path, error: Exception,
                           fix: str) -> CheckpointError:
    """The error for a checkpoint whose bytes :func:`torch.load` cannot
    read, with torch's first sentence ("PytorchStreamReader failed reading
    zip archive: failed finding central directory") as the reason.
    """
    lines = str(error).strip().splitlines()
    reason = lines[0].split(". ")[0][:200] if lines else type(error).__name__
    return CheckpointError(f"'{path}' is truncated or not a mde-pyg "
                           f"checkpoint ({reason}); {fix}")


def load_checkpoint(path: str | os.PathLike, keys: Iterable[str] = (),
                    fix: str = "delete it and train again",
                    ) -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` onto the CPU and
    check that it holds ``keys``.

    .. code-block:: python

        state = load_checkpoint("runs/mde/best.pt", ["model"])

    Args:
        path (str or os.PathLike): The file (``last.pt`` or ``best.pt``).
        keys (Iterable[str], optional): Entries the checkpoint must have.
            (default: :obj:`()`)
        fix (str, optional): What to do about a bad file, the end of the
            error message. (default: ``"delete it and train again"``)

    Raises:
        CheckpointError: The file is truncated, is not a checkpoint of
            mde-pyg, or lacks one of ``keys``.
        OSError: The file cannot be opened (missing, a folder, no
            permission).
    """
    path = Path(path)
    with open(path, "rb") as f:  # an OSError of opening names the file
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # whole, but weights_only refuses an object it holds
            refused = [line.strip() for line in str(error).splitlines()
                       if "Unsupported global" in line]
            if not refused:
                raise _unreadable_checkpoint(path, error, fix) from None
            raise CheckpointError(
                f"'{path}' holds objects a mde-pyg checkpoint never holds "
                f"({refused[0]}); it was not written by mde-pyg, so it is "
                f"left as it is: move it away, or give another folder"
            ) from None
        except Exception as error:  # torch.load's many kinds of bad bytes
            raise _unreadable_checkpoint(path, error, fix) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"'{path}' holds a {type(state).__name__}, not the dict of a "
            f"mde-pyg checkpoint; {fix}")
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"'{path}' has no {', '.join(repr(k) for k in missing)} "
            f"entr{'ies' if len(missing) > 1 else 'y'}: it is not a "
            f"complete mde-pyg checkpoint; {fix}")
    return state


def data_sizes(data: HeteroData) -> dict[str, int]:
    """Return the numbers of users, items and train / valid / test
    interactions of ``data``, as :attr:`Trainer.config` records them.

    Args:
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data`.
    """
    return {
        "users": int(data["user"].num_nodes),
        "items": int(data["item"].num_nodes),
        **{split: int(split_edges(data, split).size(1))
           for split in ("train", "valid", "test")},
    }


def interactions_checksum(data: HeteroData) -> str:
    """Return a CRC-32 of the train, valid and test ``(user, item)`` pairs
    of ``data`` (as sets: the edges' order does not count), as
    :attr:`Trainer.config` records it, so that a run is reloaded and
    resumed only with the interactions it was trained on. Features are not
    included: their last bits may differ between machines.

    Args:
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data`.
    """
    num_items = int(data["item"].num_nodes)

    def split_crc(index: Tensor) -> int:
        key = torch.sort(pair_keys(index.cpu(), num_items)).values
        return zlib.crc32(key.numpy().tobytes())

    crc = 0
    for split in ("train", "valid", "test"):
        # one sort per split tensor and item count, however many trainers
        # (a grid's configurations) ask
        part = _SPLIT_CRC.get(split_edges(data, split),
                              lambda index: {})
        if num_items not in part:
            part[num_items] = split_crc(split_edges(data, split))
        crc = zlib.crc32(f"{split}:{part[num_items]:08x}".encode(), crc)
    return f"{crc:08x}"


#: Per interaction tensor: item count -> CRC-32 of its sorted pairs.
_SPLIT_CRC = IdentityCache(size=16)


def check_trainer_args(**kwargs: Any) -> None:
    """Check the :class:`Trainer` arguments in ``kwargs`` without building
    one; raise a :class:`ValueError` naming the first invalid one.

    Only the arguments given are checked, so a grid search can check every
    configuration before its first run trains.

    .. code-block:: python

        check_trainer_args(lr=0.0)  # ValueError: 'lr' must be > 0, got 0.0

    Args:
        **kwargs: :class:`Trainer` keyword arguments (``lr``,
            ``batch_size``, ``max_epochs``, ``patience``,
            ``eval_batch_size``, ``weight_decay``, ``precision``, ``ks``,
            ``eval_metric`` (one of the metrics at ``ks``: at
            :data:`DEFAULT_KS` when ``ks`` is not given, and
            ``"recall@20"`` when ``eval_metric`` is not), ``callbacks``;
            others are not checked here).
    """
    def number(name: str) -> float | None:
        value = kwargs.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"'{name}' must be a number, got {value!r}")
        return value

    if "precision" in kwargs and kwargs["precision"] not in PRECISIONS:
        raise ValueError(f"'precision' must be one of {PRECISIONS}, got "
                         f"'{kwargs['precision']}'")
    for name in ("batch_size", "max_epochs", "patience", "eval_batch_size"):
        value = number(name)
        if value is not None and (not isinstance(value, numbers.Integral)
                                  or value < 1):
            raise ValueError(f"'{name}' must be an integer >= 1, got {value}")
    lr = number("lr")
    if lr is not None and not lr > 0:
        raise ValueError(f"'lr' must be > 0, got {lr}")
    weight_decay = number("weight_decay")
    if weight_decay is not None and not weight_decay >= 0:
        raise ValueError(f"'weight_decay' must be >= 0, got {weight_decay}")
    ks = check_ks(kwargs.get("ks", DEFAULT_KS))
    metric = kwargs.get("eval_metric", DEFAULT_EVAL_METRIC)
    if ("ks" in kwargs or "eval_metric" in kwargs) \
            and metric not in metric_keys(ks):
        raise ValueError(
            f"Unknown 'eval_metric' {metric!r}; choose one of "
            f"{metric_keys(ks)} (the metrics at 'ks' = {list(ks)})")
    if "callbacks" in kwargs:
        callbacks = kwargs["callbacks"]
        if callable(callbacks) or not isinstance(callbacks, Iterable):
            raise ValueError(f"'callbacks' must be a list of functions "
                             f"callback(trainer, entry), got {callbacks!r}")
        for callback in callbacks:
            if not callable(callback):
                raise ValueError(f"Every entry of 'callbacks' must be a "
                                 f"function callback(trainer, entry), got "
                                 f"{callback!r}")


def parse_device(device: torch.device | str,
                 arg: str = "'device'") -> torch.device:
    """Return ``device`` as a :class:`torch.device`, or raise a
    :class:`ValueError` naming the argument ``arg`` and its valid forms
    (also a GPU index beyond this machine's GPUs).

    Args:
        device (torch.device or str): ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        arg (str, optional): How the message names the argument, e.g.
            ``"--device"``. (default: ``"'device'"``)
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{arg} must be cpu, cuda or cuda:N (the index of a GPU), or a "
            f"torch.device; got {device!r}") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(
            f"{arg} is {device!r}, but mde-pyg is built and tested for cpu "
            f"and cuda only; use cpu, cuda or cuda:N")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{arg} is {device!r} but CUDA is not "
                             f"available; use cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"{arg} is {device!r} but this machine has "
                             f"{count} GPU(s): cuda:0 to cuda:{count - 1}")
    return parsed


def _rng_state(device: torch.device) -> dict[str, Any]:
    """Return the global RNG states, as tensors and plain Python values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos,
                  has_gauss, gauss),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(
        (kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss)
    )
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _adam(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """Adam, with the fused kernel where the parameters' device has one.

    On CPU the fused step is several times faster than the default
    ``foreach`` one (LightGCN at the Amazon Baby shape: 4.6 ms -> 0.6 ms
    per step); the update rule is the same.
    """
    fused = all(
        p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
        for p in params
    )
    return torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay, fused=fused or None
    )


def _loss_and_parts(out: Any, model: torch.nn.Module
                    ) -> tuple[Tensor, dict[str, Tensor]]:
    """``(total, parts)`` from what ``model.loss`` returned: that pair, or a
    bare scalar tensor (no parts logged).
    """
    if isinstance(out, Tensor) and out.dim() == 0:
        return out, {}
    if (isinstance(out, tuple) and len(out) == 2
            and isinstance(out[0], Tensor) and out[0].dim() == 0
            and isinstance(out[1], dict)):
        return out
    got = (f"a tensor of shape {tuple(out.shape)}"
           if isinstance(out, Tensor) else type(out).__name__)
    raise TypeError(
        f"{type(model).__name__}.loss returned {got}; return the scalar loss "
        f"and a dict of its logged parts, (total, {{name: part}}) (e.g. "
        f"return self.sum_parts({{'bpr': bpr, 'reg': reg}})), or the scalar "
        f"loss alone")


def _clone_state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True)
            for k, v in module.state_dict().items()}


class Trainer:
    r"""Trains a :class:`~mde_pyg.models.Recommender` with the MMRec protocol.

    Each epoch shuffles the training interactions, draws one uniform
    negative per interaction (:class:`~mde_pyg.train.NegativeSampler`, the
    whole epoch at once), and takes Adam steps on ``model.loss(user, pos,
    neg)`` over mini-batches. The validation split is evaluated after every
    epoch (:class:`~mde_pyg.train.Evaluator`); training stops once
    ``eval_metric`` has not improved for ``patience`` epochs in a row, or
    after ``max_epochs`` epochs. Each time the validation score improves,
    the test split is evaluated with the same weights, so the reported test
    metrics are those of the best validation epoch, and the weights are
    kept (in memory and in ``best.pt``). :meth:`fit` returns with the best
    weights loaded into the model.

    Epochs are counted from 0. :meth:`~mde_pyg.models.Recommender
    .on_epoch_start` is called before each epoch. Models with
    ``uses_negatives = False`` get the positives again in place of ``neg``
    (no sampling is done). Models without trainable parameters (such as
    :class:`~mde_pyg.models.MostPop`) are evaluated once, as epoch 0.

    A model with an ``estimator_parameters()`` method (SAND's CLUB
    estimator) gets a second Adam optimiser over those parameters: before
    each main step, ``model.estimator_step(user, pos, neg)`` is called and
    its loss (a tensor, or the ``"loss"`` entry of a returned dict)
    minimised by that optimiser alone. The main optimiser holds all other
    trainable parameters.

    With ``output_dir`` set, ``last.pt`` (model, optimisers, every RNG
    state, history and early-stopping state) and ``history.json`` are
    written there atomically after every epoch, and ``best.pt`` (best
    weights and their metrics) after each epoch that improves the
    validation score; ``fit(resume=True)`` continues an interrupted run
    (under the settings it started with: :attr:`config`, the model's
    hyper-parameters included, may differ only in ``max_epochs``,
    ``device`` and the other keys of :data:`RESUMABLE_CHANGES`, such as
    where the data folder now is, else :class:`ResumeMismatchError`) and
    reaches exactly the results of an uninterrupted one on CPU (on CUDA,
    kernels with atomic additions, such as the ``index_add_`` backward of
    the batch-row gathers, already make two runs of the same seed differ
    in the last bits).

    .. code-block:: python

        trainer = Trainer(model, data, lr=1e-3, output_dir="runs/mde")
        result = trainer.fit()
        print(result["best_epoch"], result["test"]["recall@20"])

    Args:
        model (Recommender): The model to train.
        data (torch_geometric.data.HeteroData): A dataset of
            :mod:`mde_pyg.data` (train, valid and test edges on
            ``('user', 'rates', 'item')``).
        lr (float, optional): Adam learning rate. (default: :obj:`1e-3`)
        batch_size (int, optional): Training triples per step.
            (default: :obj:`2048`)
        max_epochs (int, optional): Maximum number of epochs.
            (default: :obj:`1000`)
        patience (int, optional): Epochs without improvement of
            ``eval_metric`` after which training stops. (default: :obj:`20`)
        eval_metric (str, optional): Validation metric to select the best
            epoch by. (default: :obj:`"recall@20"`)
        ks (Sequence[int], optional): Cut-offs of the evaluation.
            (default: :obj:`(5, 10, 20, 50)`)
        seed (int, optional): Seed of Python, NumPy, PyTorch and of the
            generator for shuffling and negative sampling; set when
            :meth:`fit` starts a new run. (default: :obj:`0`)
        device (torch.device or str, optional): Where to train (``"cpu"``,
            ``"cuda"``, ``"cuda:0"``, a :class:`torch.device`); the model is
            moved there. (default: :obj:`None`: where the model is)
        precision (str, optional): ``"fp32"``, or ``"bf16"`` for
            :func:`torch.autocast` with :obj:`torch.bfloat16` in the loss
            computations (evaluation stays in ``fp32``).
            (default: :obj:`"fp32"`)
        weight_decay (float, optional): Adam weight decay (the models'
            own L2 terms are part of their losses). (default: :obj:`0.0`)
        output_dir (str or os.PathLike, optional): Folder of the
            checkpoints and the history. (default: :obj:`None`: nothing is
            written)
        progress (bool, optional): Report every epoch: a :mod:`tqdm`
            progress bar on a terminal or in a notebook, otherwise (a log
            file, a batch job) one line per epoch on :obj:`sys.stderr`
            with the loss, the validation score and the best epoch so
            far, and a last line when early stopping ends the run.
            (default: :obj:`True`)
        eval_batch_size (int, optional): Users ranked at once during
            evaluation. (default: :obj:`4096`)
        callbacks (Iterable[Callable], optional): Called as
            ``callback(trainer, entry)`` after every epoch, once the
            checkpoint is written. (default: :obj:`()`)
        extra_config (Mapping[str, Any], optional): JSON-serialisable
            settings recorded in :attr:`config` and the checkpoints, and
            compared on resume as the others, such as how the data was
            loaded (``mde-pyg train`` records its data settings as
            ``data``). (default: :obj:`None`)
    """

    def __init__(
        self,
        model: Recommender,
        data: HeteroData,
        lr: float = 1e-3,
        batch_size: int = 2048,
        max_epochs: int = 1000,
        patience: int = 20,
        eval_metric: str = DEFAULT_EVAL_METRIC,
        ks: Sequence[int] = DEFAULT_KS,
        seed: int = 0,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        weight_decay: float = 0.0,
        output_dir: str | os.PathLike | None = None,
        progress: bool = True,
        eval_batch_size: int = 4096,
        callbacks: Iterable[EpochCallback] = (),
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(callbacks, Iterator):  # checked, then kept
            callbacks = list(callbacks)
        check_trainer_args(
            lr=lr, batch_size=batch_size, max_epochs=max_epochs,
            patience=patience, precision=precision, weight_decay=weight_decay,
            eval_batch_size=eval_batch_size, ks=ks, eval_metric=eval_metric,
            callbacks=callbacks,
        )

        self.device = (
            _model_device(model) if device is None else parse_device(device)
        )
        self.model = model.to(self.device)
        self.data = data
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.eval_metric = eval_metric
        self.seed = seed
        self.precision = precision
        self.weight_decay = weight_decay
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.progress = progress
        self._log_lines = False  # set by fit: no bar can redraw on stderr
        self.callbacks = list(callbacks)

        self.valid_evaluator = Evaluator(data, "valid", ks, eval_batch_size)
        self.test_evaluator = Evaluator(data, "test", ks, eval_batch_size)
        self.ks = self.valid_evaluator.ks

        train = split_edges(data, "train").cpu().long()
        self.train_user, self.train_item = train[0], train[1]
        self.data_sizes = data_sizes(data)
        self.interactions_crc32 = interactions_checksum(data)
        self.generator = torch.Generator()
        self.sampler = NegativeSampler(
            train,
            num_items=int(data["item"].num_nodes),
            num_users=int(data["user"].num_nodes),
            generator=self.generator,
        )

        est_params = (
            list(model.estimator_parameters())
            if hasattr(model, "estimator_parameters")
            else []
        )
        est_ids = {id(p) for p in est_params}
        self.main_parameters = [
            p
            for p in model.parameters()
            if p.requires_grad and id(p) not in est_ids
        ]
        self.estimator_parameters = [p for p in est_params if p.requires_grad]
        self.extra_config = {}
        clash = sorted(set(extra_config or {}) & set(self.config))
        if clash:
            raise ValueError(f"'extra_config' may not redefine the trainer's "
                             f"own settings {clash}; give them other names")
        # plain values: a checkpoint holds nothing torch.load refuses
        self.extra_config = plain_values(dict(extra_config or {}))
        self._reset_state()

    @property
    def config(self) -> dict[str, Any]:
        """The training settings, as JSON-serialisable values, with the
        model's class and its import path (``model_path``,
        ``"package.module:Class"``), its ``hparams`` (set by
        :meth:`~mde_pyg.models.Recommender.from_data`; :obj:`None` for a
        model built otherwise) as ``model_hparams``, and the numbers of
        users, items and train / valid / test interactions as
        ``data_sizes`` and a checksum of those interactions as
        ``interactions_crc32`` (:func:`interactions_checksum`).
        """
        cls = type(self.model)
        return {
            "model_class": cls.__name__,
            "model_path": f"{cls.__module__}:{cls.__qualname__}",
            "lr": self.lr,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "eval_metric": self.eval_metric,
            "ks": list(self.ks),
            "seed": self.seed,
            "device": str(self.device),
            "precision": self.precision,
            "weight_decay": self.weight_decay,
            "model_hparams": getattr(self.model, "hparams", None),
            "data_sizes": self.data_sizes,
            "interactions_crc32": self.interactions_crc32,
            **self.extra_config,
        }

    def _reset_state(self) -> None:
        """Start a new run: fresh optimisers, seeds and early stopping."""
        self.optimizer = (
            _adam(self.main_parameters, self.lr, self.weight_decay)
            if self.main_parameters
            else None
        )
        self.estimator_optimizer = (
            _adam(self.estimator_parameters, self.lr)
            if self.estimator_parameters
            else None
        )
        self.epoch = 0  # the next epoch to run
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {
            "score": -math.inf,
            "epoch": -1,
            "valid": None,
            "test": None,
            "wait": 0,
            "stopped": False,
        }
        self.best_state: dict[str, Tensor] | None = None

    # Checkpoints #############################################################

    def _path(self, name: str) -> Path | None:
        return None if self.output_dir is None else self.output_dir / name

    def state_dict(self) -> dict[str, Any]:
        """Return everything :meth:`fit` needs to continue this run."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": (
                None if self.optimizer is None else self.optimizer.state_dict()
            ),
            "estimator_optimizer": (
                None
                if self.estimator_optimizer is None
                else self.estimator_optimizer.state_dict()
            ),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(self.device),
            "history": self.history,
            "best": self.best,
            "best_state": self.best_state,
            "config": self.config,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.estimator_optimizer is not None:
            self.estimator_optimizer.load_state_dict(
                state["estimator_optimizer"]
            )
        self.sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], self.device)
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.best = state["best"]
        self.best_state = state["best_state"]

    def _save_best(self) -> None:
        path = self._path(BEST_CHECKPOINT)
        if path is not None:
            atomic_save(
                {
                    "model": self.best_state,
                    "epoch": self.best["epoch"],
                    "valid": self.best["valid"],
                    "test": self.best["test"],
                    "config": self.config,
                },
                path,
            )

    def _save_last(self) -> None:
        path = self._path(LAST_CHECKPOINT)
        if path is not None:
            atomic_save(self.state_dict(), path)
            atomic_write_json(self.history, self._path(HISTORY_FILE))

    # Training ################################################################

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_epoch(self, max_batches: int | None = None,
                    ) -> tuple[float, dict[str, float]]:
        """Run one training epoch (no evaluation, no checkpoint).

        :meth:`fit` calls it once per epoch; benchmarks call it directly.

        Args:
            max_batches (int, optional): Stop after this many batches of
                the epoch's shuffled order (benchmarks time a part of a
                long epoch). (default: :obj:`None`, the whole epoch)

        Returns:
            The mean loss and the mean loss parts over the epoch's batches.
        """
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"'max_batches' must be a positive integer or "
                             f"None, got {max_batches}")
        model, device = self.model, self.device
        model.train()
        perm = torch.randperm(self.train_user.numel(), generator=self.generator)
        user, pos = self.train_user[perm], self.train_item[perm]
        if model.uses_negatives:
            neg = self.sampler.sample(user)
        else:  # The model ignores ``neg``; hand it the positives again.
            neg = pos
        # one host-to-device copy per epoch, not three blocking ones a step
        user, pos, neg = user.to(device), pos.to(device), neg.to(device)

        total = torch.zeros((), device=device)
        sums: dict[str, Tensor] = {}
        num_batches = 0
        starts = range(0, user.numel(), self.batch_size)
        for start in starts[:max_batches]:
            end = start + self.batch_size
            u, p, n = user[start:end], pos[start:end], neg[start:end]

            if self.estimator_optimizer is not None:
                self.estimator_optimizer.zero_grad()
                with self._autocast():
                    out = model.estimator_step(u, p, n)
                if isinstance(out, Tensor):
                    out = {"loss": out}
                out["loss"].backward()
                self.estimator_optimizer.step()
                for key, value in out.items():
                    key = f"estimator_{key}"
                    sums[key] = sums.get(key, 0.0) + value.detach().float()

            assert self.optimizer is not None
            self.optimizer.zero_grad()
            with self._autocast():
                loss, parts = _loss_and_parts(model.loss(u, p, n), model)
            loss.backward()
            self.optimizer.step()

            total += loss.detach().float()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
            num_batches += 1

        mean = float(total) / max(num_batches, 1)
        parts_mean = {k: float(v) / num_batches for k, v in sums.items()}
        return mean, parts_mean

    def _evaluate_only(self) -> dict[str, Any]:
        """Evaluate a model without trainable parameters (epoch 0)."""
        start = time.perf_counter()
        valid = self.valid_evaluator(self.model)
        test = self.test_evaluator(self.model)
        entry = {
            "epoch": 0,
            "loss": None,  # no training step
            "parts": {},
            "valid": valid,
            "seconds": time.perf_counter() - start,
        }
        self.history = [entry]
        self.epoch = 1
        self.best.update(
            score=valid[self.eval_metric], epoch=0, valid=valid, test=test
        )
        self.best_state = _clone_state(self.model)
        self._save_best()
        if self.output_dir is not None:
            atomic_write_json(self.history, self._path(HISTORY_FILE))
        for callback in self.callbacks:
            callback(self, entry)
        return self._result()

    def _result(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "best_epoch": self.best["epoch"],
            "valid": self.best["valid"],
            "test": self.best["test"],
            "config": self.config,
            "history": self.history,
        }

    def fit(self, resume: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
        """Train until early stopping or ``max_epochs``.

        Each call without ``resume`` starts a new run: the seeds, the
        optimisers, the history and early stopping start again, but the
        weights are the model's own, so a second :meth:`fit` continues from
        the best weights the first one loaded (build a new model, e.g. with
        :meth:`~mde_pyg.models.Recommender.from_data`, for a run from fresh
        weights). With an ``output_dir``, a second new run there needs
        ``overwrite=True``, which replaces the first one's files.

        Args:
            resume (bool, optional): Continue from ``output_dir/last.pt``
                when it exists (a new run starts otherwise). A run that
                stopped early stays finished; one that reached an earlier
                ``max_epochs`` continues up to the current one. Other
                settings than the checkpoint's (see :attr:`config`) raise
                :class:`ResumeMismatchError`; one unknown on either side
                (``model_hparams`` of a model not built by ``from_data``)
                is not compared; a ``last.pt`` that cannot be read or
                lacks an entry raises :class:`CheckpointError`.
                (default: :obj:`False`)
            overwrite (bool, optional): A new run may replace the files of
                an earlier one in ``output_dir``; without it (nor
                ``resume``), :class:`RunExistsError` is raised before
                anything trains. (default: :obj:`False`)

        Returns:
            A dict with ``model`` (the model, best weights loaded, in
            evaluation mode: call ``model.train()`` to train it further),
            ``best_epoch``, ``valid`` and ``test`` (metric dicts of the best
            validation epoch), ``config`` (:attr:`config`) and ``history``
            (one dict per epoch: ``epoch``, ``loss``, ``parts`` (mean loss
            parts), ``valid`` (metrics), ``seconds``; a model without
            trainable parameters has the one entry of epoch 0, with
            ``loss`` :obj:`None` and no ``parts``).
        """
        last = self._path(LAST_CHECKPOINT)
        if resume and last is None:
            raise ValueError("'resume=True' needs an 'output_dir'")
        if not (resume or overwrite):
            check_run_is_free(self.output_dir)
        self._reset_state()
        if resume and last is not None and last.exists():
            state = load_checkpoint(
                last, self._resume_keys(),
                "delete it, or train without resume (mde-pyg train "
                "without --resume) to start the run again")
            self._check_resume(state.get("config", {}), last)
            try:
                self.load_state_dict(state)
            except (RuntimeError, ValueError) as error:
                if not re.search(r"state[_ ]dict", str(error)):
                    raise  # not weights of other shapes (e.g. out of memory)
                first = str(error).strip().splitlines()
                raise ResumeMismatchError(
                    f"'{last}' does not fit this model "
                    f"({' '.join(line.strip() for line in first[:3])[:300]}"
                    f"); it was written under other settings (another "
                    f"feature file?): resume with the settings it was "
                    f"started with, or train into another output folder"
                ) from None
            if self.progress and (self.best["stopped"]
                                  or self.epoch >= self.max_epochs):
                ended = (f"it stopped early, best epoch {self.best['epoch']}"
                         if self.best["stopped"] else
                         f"{self.epoch} epochs run, max_epochs is "
                         f"{self.max_epochs}")
                print(f"{type(self.model).__name__}: the run in "
                      f"'{self.output_dir}' had already ended ({ended}); "
                      f"nothing more to train", file=sys.stderr, flush=True)
        else:
            seed_everything(self.seed)
            self.generator.manual_seed(self.seed)

        if self.optimizer is None and self.estimator_optimizer is None:
            result = self._evaluate_only()
            self.model.eval()
            return result

        self._log_lines = self.progress and not can_redraw(sys.stderr)
        bar = tqdm(
            total=self.max_epochs,
            initial=min(self.epoch, self.max_epochs),
            disable=not self.progress or self._log_lines,
            desc=self.model.__class__.__name__,
            unit="epoch",
        )
        try:
            while self.epoch < self.max_epochs and not self.best["stopped"]:
                self._run_epoch(bar)
        finally:
            bar.close()

        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        # the model ranks as it was evaluated (model.recommend, scorer)
        self.model.eval()
        return self._result()

    def _resume_keys(self) -> list[str]:
        """The entries of ``last.pt`` that :meth:`load_state_dict` reads."""
        keys = ["epoch", "model", "sampler", "rng", "history", "best",
                "best_state"]
        if self.optimizer is not None:
            keys.append("optimizer")
        if self.estimator_optimizer is not None:
            keys.append("estimator_optimizer")
        return keys

    def _check_resume(self, saved: dict[str, Any], path: Path) -> None:
        """Refuse to continue a run under other settings than it started
        with (only those of :data:`RESUMABLE_CHANGES` may change).
        """
        current = self.config
        changed = []
        for key, value in current.items():
            if key in RESUMABLE_CHANGES or key not in saved:
                continue
            old = saved[key]
            if old is None or value is None:
                continue  # unknown on one side (a model not from from_data)
            if isinstance(old, dict) and isinstance(value, dict):
                changed += [(f"{key}.{k}", old.get(k), value.get(k))
                            for k in sorted({*old, *value})
                            if old.get(k) != value.get(k)
                            and f"{key}.{k}" not in RESUMABLE_CHANGES]
            elif old != value:
                changed.append((key, old, value))
        if changed:
            raise ResumeMismatchError(path=path, changes=changed)

    def _run_epoch(self, bar: tqdm) -> None:
        epoch = self.epoch
        start = time.perf_counter()
        self.model.on_epoch_start(epoch)
        loss, parts = self.train_epoch()
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"The training loss of epoch {epoch} is {loss}; lower the "
                f"learning rate or check the model's loss"
            )
        valid = self.valid_evaluator(self.model)
        score = valid[self.eval_metric]
        if score > self.best["score"]:
            test = self.test_evaluator(self.model)
            self.best.update(
                score=score, epoch=epoch, valid=valid, test=test, wait=0
            )
            self.best_state = _clone_state(self.model)
            self._save_best()
        else:
            self.best["wait"] += 1
            if self.best["wait"] >= self.patience:
                self.best["stopped"] = True

        entry = {
            "epoch": epoch,
            "loss": loss,
            "parts": parts,
            "valid": valid,
            "seconds": time.perf_counter() - start,
        }
        self.history.append(entry)
        self.epoch = epoch + 1
        self._save_last()

        bar.set_postfix(
            {
                "loss": f"{loss:.4f}",
                self.eval_metric: f"{score:.4f}",
                "best": f"{self.best['score']:.4f}@{self.best['epoch']}",
                # the bar counts to max_epochs; early stopping comes first
                "no gain": f"{self.best['wait']}/{self.patience}",
            }
        )
        bar.update(1)
        if self._log_lines:
            self._log_epoch(entry)
        for callback in self.callbacks:
            callback(self, entry)

    def _log_epoch(self, entry: dict[str, Any]) -> None:
        """Write the epoch's line (and the early stop's) to stderr."""
        name, metric = self.model.__class__.__name__, self.eval_metric
        best = f"{self.best['score']:.4f} at epoch {self.best['epoch']}"
        lines = [
            f"{name} epoch {entry['epoch']} ({entry['epoch'] + 1} of at "
            f"most {self.max_epochs}): loss "
            f"{entry['loss']:.4f}, valid {metric} "
            f"{entry['valid'][metric]:.4f}, best {best}, "
            f"{entry['seconds']:.2f} s"
        ]
        if self.best["stopped"]:
            lines.append(f"{name} stopped early: no better valid {metric} "
                         f"in {self.patience} epochs; best {best}")
        print("\n".join(lines), file=sys.stderr, flush=True)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.model}, lr={self.lr}, "
            f"batch_size={self.batch_size}, max_epochs={self.max_epochs}, "
            f"patience={self.patience})"
        )
