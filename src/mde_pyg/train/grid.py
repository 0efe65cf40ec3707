"""Hyper-parameter grid search, selected on the validation split only."""

from __future__ import annotations

import csv
import inspect
import io
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sklearn.model_selection import ParameterGrid
from torch_geometric.data import HeteroData

from mde_pyg.files import atomic_write_text
from mde_pyg.models.base import Recommender
from mde_pyg.train.trainer import (
    DEFAULT_EVAL_METRIC,
    RunExistsError,
    Trainer,
    check_trainer_args,
    run_files,
    seed_everything,
)

#: Keyword arguments of :class:`Trainer` that go to the trainer of each
#: run (``lr``, ...; :func:`check_grid` refuses a grid that varies
#: ``eval_metric``, by which its runs are compared); every other grid key
#: goes to the model.
TRAINER_KEYS: frozenset[str] = frozenset(
    inspect.signature(Trainer.__init__).parameters
) - {"self", "model", "data", "output_dir", "callbacks", "extra_config"}

#: Name of the CSV file :func:`grid_search` writes into ``output_dir``.
GRID_FILE = "grid.csv"

ModelFactory = Callable[..., Recommender]

#: How :func:`grid_search` names the folder of run ``i``: ``run_<i>``,
#: ``i`` written with at least 3 digits.
_RUN_NAME = re.compile(r"run_(\d{3,})")


class GridConfigError(ValueError):
    """A grid configuration that cannot train, found by :func:`check_grid`
    before any run starts.
    """


def _factory(model: str | ModelFactory) -> ModelFactory:
    if isinstance(model, str):
        from mde_pyg.models import build_model

        def build(data: HeteroData, **hparams: Any) -> Recommender:
            return build_model(model, data, **hparams)

        return build
    if isinstance(model, type) and issubclass(model, Recommender):
        return model.from_data
    return model


def split_params(
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``params`` into ``(model_kwargs, trainer_kwargs)``.

    Keys that are arguments of :class:`Trainer` (see :data:`TRAINER_KEYS`)
    go to the trainer, all others to the model.

    Args:
        params (Mapping[str, Any]): One configuration.
    """
    model_kwargs = {k: v for k, v in params.items() if k not in TRAINER_KEYS}
    trainer_kwargs = {k: v for k, v in params.items() if k in TRAINER_KEYS}
    return model_kwargs, trainer_kwargs


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buffer.getvalue(), path)


def best_index(results: Sequence[Mapping[str, Any]],
               metric: str = "recall@20") -> int:
    """Return the position of the result with the highest *validation*
    ``metric`` (``result["valid"][metric]``), the first one on ties: the
    selection rule of :func:`grid_search`.

    Args:
        results (Sequence[Mapping]): :meth:`Trainer.fit` results.
        metric (str, optional): The validation metric.
            (default: ``"recall@20"``)
    """
    if len(results) == 0:
        raise ValueError("'best_index' needs at least one result")
    best = 0
    for index, result in enumerate(results):
        if result["valid"][metric] > results[best]["valid"][metric]:
            best = index
    return best


def check_grid(
    model: str | ModelFactory,
    data: HeteroData,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
    fixed: Mapping[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> list[dict[str, Any]]:
    """Check every configuration of ``grid`` before any of them trains.

    Each configuration's :class:`Trainer` arguments are checked with
    :func:`~mde_pyg.train.trainer.check_trainer_args`, and its model is
    built once and discarded (once per distinct set of model arguments), so
    that a bad value in the last configuration fails in seconds rather
    than after the others have trained. :func:`grid_search` calls it first.

    Args:
        model (str or Callable): As for :func:`grid_search`.
        data (torch_geometric.data.HeteroData): The dataset.
        grid (Mapping or Sequence[Mapping]): As for :func:`grid_search`.
        fixed (Mapping[str, Any], optional): Model keyword arguments shared
            by every configuration. (default: :obj:`None`)
        **trainer_kwargs: Further :class:`Trainer` arguments for every run.

    Returns:
        The configurations, in the order :func:`grid_search` trains them.

    Raises:
        GridConfigError: A :class:`ValueError` naming the configuration and
            the argument at fault (the constructor's error is chained).
    """
    build = _factory(model)
    configs = list(ParameterGrid(grid))
    if len(configs) == 0:
        raise GridConfigError(
            "The grid is empty; give at least one value per key")
    unknown = set(trainer_kwargs) - TRAINER_KEYS
    if "overwrite" in unknown:  # Trainer.fit's and the CLI's name
        raise GridConfigError(
            "grid_search takes replace=True (not overwrite=True) to train "
            "a grid again over an earlier one")
    if unknown:
        raise GridConfigError(
            f"Unknown Trainer arguments {sorted(unknown)}; choose from "
            f"{sorted(TRAINER_KEYS)}"
        )
    metrics = {split_params(params)[1].get(
        "eval_metric", trainer_kwargs.get("eval_metric", DEFAULT_EVAL_METRIC))
        for params in configs}
    if len(metrics) > 1:
        raise GridConfigError(
            f"'eval_metric' varies across the grid ({sorted(metrics)}), but "
            f"the runs are compared by one validation metric; give "
            f"eval_metric once, outside the grid")
    built: set[str] = set()
    for index, params in enumerate(configs):
        model_kwargs, run_kwargs = split_params(params)
        model_kwargs = {**(fixed or {}), **model_kwargs}
        key = repr(sorted(model_kwargs.items()))
        try:
            check_trainer_args(**{**trainer_kwargs, **run_kwargs})
            if key not in built:
                build(data, **model_kwargs)  # on the CPU, then dropped
                built.add(key)
        except (ValueError, TypeError, RuntimeError) as error:
            raise GridConfigError(
                f"grid configuration {index} {params}: {error}"
            ) from error
    return configs


def grid_run_index(path: str | os.PathLike) -> int | None:
    """Return ``i`` when ``path`` is the folder ``run_<i>`` of one grid
    configuration, as :func:`grid_search` names them, beside its grid's
    ``grid.csv``; :obj:`None` otherwise.
    """
    path = Path(path)
    match = _RUN_NAME.fullmatch(path.name)
    if match is None or not (path.parent / GRID_FILE).is_file():
        return None
    return int(match[1])


def held_run_files(folder: str | os.PathLike) -> list[str]:
    """Return the files of a run or a grid that ``folder`` holds.

    The one answer to "does this folder hold a run", for
    :func:`grid_search` and ``mde-pyg train``: a :class:`Trainer`'s run
    files in ``folder`` itself (:func:`~mde_pyg.train.trainer.run_files`),
    then its ``grid.csv``, then ``run_<i>/<file>`` for each folder named as
    :func:`grid_search` names its runs that holds run files (with or
    without a ``grid.csv`` beside it: a grid interrupted in its first run
    has none yet). ``[]`` for a folder that does not exist or holds none.

    Args:
        folder (str or os.PathLike): An ``output_dir``.
    """
    path = Path(folder)
    if not path.is_dir():
        return []
    held = run_files(path)
    if (path / GRID_FILE).is_file():
        held.append(GRID_FILE)
    for run in sorted(path.iterdir()):
        if (_RUN_NAME.fullmatch(run.name) and run.is_dir()
                and not run.is_symlink()):
            held += [f"{run.name}/{name}" for name in run_files(run)]
    return held


def holds_grid(held: Sequence[str]) -> bool:
    """Whether a :func:`held_run_files` listing is a grid's (a
    ``grid.csv`` or ``run_<i>/`` files) rather than a single run's.
    """
    return any(name == GRID_FILE or "/" in name for name in held)


def _remove_runs_beyond(out: Path, count: int) -> None:
    """Remove the run folders ``run_<i>``, ``i >= count``, an earlier grid
    wrote in ``out``: only folders (not links) named as :func:`grid_search`
    names them that hold a run's files.
    """
    for old in out.iterdir():
        index = grid_run_index(old)
        if (index is None or index < count or old.is_symlink()
                or not old.is_dir()):
            continue
        if run_files(old):
            shutil.rmtree(old)


def grid_search(
    model: str | ModelFactory,
    data: HeteroData,
    grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
    fixed: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    resume: bool = False,
    replace: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    callbacks: Iterable[Callable[[Trainer, dict[str, Any]], Any]] = (),
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    r"""Train every configuration of ``grid``; select by *validation* score.

    Configurations are enumerated with
    :class:`sklearn.model_selection.ParameterGrid`. Each one is trained from
    the same seed by a :class:`Trainer`; the winner is the configuration
    with the highest validation ``eval_metric`` (default ``recall@20``) at
    its best epoch, the first one on ties. Test metrics never influence the
    choice (MMRec's own search selects on test, a leak); they are only
    reported.

    With ``output_dir``, run ``i`` trains in ``output_dir/run_<i>`` and
    ``grid.csv`` (one row per finished run: ``run``, the grid values,
    ``best_epoch``, ``valid_<metric>`` and ``test_<metric>`` columns, and
    ``selected``) is rewritten atomically after each run.

    .. code-block:: python

        result = grid_search("mde", data,
                             {"lambda_1": [1e-3, 1e-2], "lr": [1e-3]},
                             output_dir="runs/grid", max_epochs=100)
        result["params"], result["test"]["recall@20"]

    Args:
        model (str or Callable): A registered model name, a
            :class:`~mde_pyg.models.Recommender` subclass, or a function
            ``(data, **hparams) -> Recommender``.
        data (torch_geometric.data.HeteroData): The dataset.
        grid (Mapping or Sequence[Mapping]): Values to try per key, as for
            :class:`~sklearn.model_selection.ParameterGrid`. Keys in
            :data:`TRAINER_KEYS` (``lr``, ``batch_size``, ...) go to the
            :class:`Trainer`, all others to the model.
        fixed (Mapping[str, Any], optional): Model keyword arguments shared
            by every configuration. (default: :obj:`None`)
        output_dir (str or os.PathLike, optional): Where runs and
            ``grid.csv`` go. (default: :obj:`None`)
        resume (bool, optional): Resume each run from its ``last.pt`` (runs
            already finished are only reloaded). (default: :obj:`False`)
        replace (bool, optional): This grid replaces an earlier one in
            ``output_dir`` (``mde-pyg train --overwrite``): its runs are
            trained again from scratch, and the run folders the earlier
            grid wrote beyond this one's (``run_<i>`` beside its
            ``grid.csv``, holding a run's checkpoints) are removed. Without
            it (nor ``resume``), an ``output_dir`` holding a grid raises
            :class:`~mde_pyg.train.trainer.RunExistsError` before anything
            trains. (default: :obj:`False`)
        extra_config (Mapping[str, Any], optional): Recorded by every
            run's :class:`Trainer` and compared on resume.
            (default: :obj:`None`)
        callbacks (Iterable[Callable], optional): Given to every run's
            :class:`Trainer`: called as ``callback(trainer, entry)`` after
            each epoch (``trainer.output_dir`` tells the run).
            (default: :obj:`()`)
        **trainer_kwargs: Further :class:`Trainer` arguments for every run.

    Returns:
        The winner's :meth:`Trainer.fit` result (``model``, ``best_epoch``,
        ``valid``, ``test``, ``config``, ``history``) plus ``params`` (its
        grid values), ``index`` (its run number) and ``runs`` (one summary
        per configuration, as in ``grid.csv``).
    """
    build = _factory(model)
    if isinstance(callbacks, Iterator):  # checked, then given to each run
        callbacks = list(callbacks)
    check_trainer_args(callbacks=callbacks)
    configs = check_grid(build, data, grid, fixed, **trainer_kwargs)
    out = None if output_dir is None else Path(output_dir)
    if out is not None and not (resume or replace):
        held = held_run_files(out)
        if held:
            kind = "grid" if holds_grid(held) else "run"
            raise RunExistsError(
                f"'{out}' already holds a {kind} ({', '.join(held[:3])}"
                f"{', ...' if len(held) > 3 else ''}); resume=True continues "
                f"it, replace=True trains it again from scratch, or give "
                f"another output_dir")
    if replace and out is not None and (out / GRID_FILE).is_file():
        _remove_runs_beyond(out, len(configs))
    seed = trainer_kwargs.get("seed", 0)
    metric = trainer_kwargs.get("eval_metric", DEFAULT_EVAL_METRIC)

    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for index, params in enumerate(configs):
        model_kwargs, run_kwargs = split_params(params)
        run_kwargs = {**trainer_kwargs, **run_kwargs}
        seed = run_kwargs.get("seed", seed)
        metric = run_kwargs.get("eval_metric", metric)
        seed_everything(seed)  # identical initialisation in every run
        recommender = build(data, **{**(fixed or {}), **model_kwargs})
        run_dir = None if out is None else out / f"run_{index:03d}"
        if run_kwargs.get("progress", True):  # whose lines follow
            where = "" if run_dir is None else f" ({run_dir.name})"
            values = ", ".join(f"{k}={v}" for k, v in params.items())
            print(f"grid configuration {index + 1} of {len(configs)}{where}: "
                  f"{values or 'the fixed settings'}", file=sys.stderr,
                  flush=True)
        result = Trainer(recommender, data, output_dir=run_dir,
                         extra_config=extra_config, callbacks=callbacks,
                         **run_kwargs).fit(resume=resume, overwrite=replace)

        row: dict[str, Any] = {"run": index, **params,
                               "best_epoch": result["best_epoch"]}
        row.update({f"valid_{k}": v for k, v in result["valid"].items()})
        row.update({f"test_{k}": v for k, v in result["test"].items()})
        rows.append(row)
        results.append(result)
        chosen = best_index(results, metric)
        for r in rows:
            r["selected"] = r["run"] == chosen
        for i, r in enumerate(results):  # a run passed over never comes
            if i != chosen:              # back: free its model's memory
                r.pop("model", None)
        if out is not None:
            _write_csv(rows, out / GRID_FILE)

    return {**results[chosen], "params": dict(configs[chosen]),
            "index": chosen, "runs": rows}
