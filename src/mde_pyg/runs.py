"""Reload what ``mde-pyg train`` trained: the data, the model, its weights."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch_geometric.data import HeteroData

from mde_pyg.cli import RESULTS_FILE, load_data_source
from mde_pyg.models.base import Recommender
from mde_pyg.train.grid import GRID_FILE, grid_run_index
from mde_pyg.train.trainer import (
    BEST_CHECKPOINT,
    CheckpointError,
    data_sizes,
    interactions_checksum,
    load_checkpoint,
)


def _read_summary(run: Path) -> dict[str, Any]:
    path = run / RESULTS_FILE
    if not run.exists():
        raise FileNotFoundError(
            f"'{run}' does not exist; give the --output folder of a "
            f"finished 'mde-pyg train' run")
    if not path.is_file():
        raise FileNotFoundError(
            f"'{run}' holds no {RESULTS_FILE}; give the --output folder of a "
            f"finished 'mde-pyg train' run")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"'{path}' is not JSON ({error})") from error
    config = summary.get("config") if isinstance(summary, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("data"),
                                                      dict):
        raise ValueError(
            f"'{path}' is not the {RESULTS_FILE} of an 'mde-pyg train' run "
            f"(it has no config.data, how the data was loaded)")
    if not isinstance(summary.get("model"), str):
        raise ValueError(
            f"'{path}' has no \"model\" (the registered model name, a "
            f"string); it is not a complete {RESULTS_FILE} of an 'mde-pyg "
            f"train' run: train the run again")
    if "checkpoint" in summary and not isinstance(summary["checkpoint"],
                                                  str):
        raise ValueError(
            f"'{path}' has a \"checkpoint\" of {summary['checkpoint']!r}, "
            f"not the path of the run's best weights (such as \"best.pt\"); "
            f"remove the key to use best.pt, or train the run again")
    return summary


def _grid_rows(grid: Path) -> list[dict[str, str]]:
    """The rows of the ``grid.csv`` in folder ``grid`` (none without it)."""
    if not (grid / GRID_FILE).is_file():
        return []
    with open(grid / GRID_FILE, newline="") as f:
        return list(csv.DictReader(f))


def _selected_point(grid: Path) -> Path:
    """The folder of the configuration ``grid.csv`` marks selected."""
    chosen = [row["run"] for row in _grid_rows(grid)
              if row.get("selected") == "True"]
    if not chosen:
        raise FileNotFoundError(
            f"'{grid / GRID_FILE}' names no selected run; train the grid "
            f"again")
    return grid / f"run_{int(chosen[0]):03d}"


def _checkpoint(run: Path, summary: dict[str, Any]) -> Path:
    """The best weights of the run (of the selected run of a grid)."""
    if "checkpoint" in summary:
        path = run / summary["checkpoint"]
    elif "params" not in summary:
        path = run / "best.pt"
    else:  # a grid written before results.json named its checkpoint
        path = _selected_point(run) / BEST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}', the run's best weights, is missing; train the run "
            f"again (or restore the file)")
    return path


def _resolve_paths(source: dict[str, Any]) -> dict[str, Any]:
    """Find a relative data folder (or Amazon root) from the working
    directory the run started in when it is not found from this one.
    """
    started = source.get("cwd")
    if started is None:
        return source
    if source.get("dataset") not in (None, "synthetic") and \
            source.get("root") is None:
        source["root"] = f"data/{source['dataset']}"  # load_data's default
    for key in ("data", "root"):
        path = source.get(key)
        if path is None or Path(path).exists() or Path(path).is_absolute():
            continue
        if (Path(started) / path).exists():
            source[key] = str(Path(started) / path)
    return source


def _model_hparams(summary: dict[str, Any]) -> dict[str, Any]:
    from mde_pyg.train.grid import split_params

    config = summary["config"]
    if config.get("model_hparams") is not None:
        return dict(config["model_hparams"])
    # Written before the config recorded every constructor argument:
    return {**config.get("hparams", {}),
            **split_params(summary.get("params", {}))[0]}


def load_run(
    run: str | os.PathLike,
    data: HeteroData | None = None,
    data_folder: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> tuple[Recommender, HeteroData]:
    """Rebuild the model an ``mde-pyg train`` run selected, with the
    weights of its best validation epoch.

    The run's ``results.json`` names the model, its hyper-parameters and
    how the data was loaded (folder or dataset, modalities, ``k_user``,
    ``k_item``, feature normalisation); the data is loaded again the same
    way (a relative folder is looked for from here, then from where the run
    started) and checked against the numbers of users, items and
    interactions the run was trained on. For a grid, the selected
    configuration is rebuilt, and for its folder ``run_<i>``, that
    configuration. The ``output_dir`` of a :class:`~mde_pyg.train.Trainer`
    or :func:`~mde_pyg.train.grid_search` run from Python (``best.pt`` or
    ``grid.csv``, and no ``results.json``) is rebuilt from ``best.pt``'s
    config, the model's import path and constructor arguments, for the
    ``data`` passed (it records no way to load it). An incomplete
    ``results.json`` or a checkpoint that cannot be read raises a
    :class:`ValueError` (for the checkpoint a
    :class:`~mde_pyg.train.trainer.CheckpointError`) naming the file.

    .. code-block:: python

        from mde_pyg.runs import load_run
        from mde_pyg.train.recommend import recommend

        model, data = load_run("out/lfm2k_mde")
        items, scores = recommend(model, data, k=10)

    Args:
        run (str or os.PathLike): The ``--output`` folder of the run (or
            the ``output_dir`` of a run from Python).
        data (torch_geometric.data.HeteroData, optional): The data, with its
            graphs, instead of loading it again. (default: :obj:`None`)
        data_folder (str or os.PathLike, optional): Where the run's data
            folder is now, if not where (relative to the working directory)
            ``mde-pyg train`` read it. (default: :obj:`None`)
        device (torch.device or str, optional): Where to put the model.
            (default: :obj:`None`: the CPU)

    Returns:
        ``(model, data)``, the model in evaluation mode.
    """
    run = Path(run)
    if grid_run_index(run) is not None:
        return _load_grid_point(run, data, data_folder, device)
    if not (run / RESULTS_FILE).is_file() and _grid_rows(run):
        # a grid_search from Python (or an unfinished mde-pyg train grid)
        return _load_grid_point(_selected_point(run), data, data_folder,
                                device, grid=run)
    if _is_trainer_run(run):
        return _load_trainer_run(run, data, device)
    summary = _read_summary(run)
    config = summary["config"]
    checkpoint = _checkpoint(run, summary)
    # A bad file fails before the data is loaded again:
    state = _read_weights(checkpoint)
    if data is None:
        data = _load_recorded_data(config["data"], run, data_folder)
    model = _rebuild(run, summary["model"], _model_hparams(summary), config,
                     data, checkpoint, state, run / RESULTS_FILE)
    return model.to(device or "cpu").eval(), data


def _load_recorded_data(recorded: dict[str, Any], run: Path,
                        data_folder: str | os.PathLike | None) -> HeteroData:
    """Load the data as ``mde-pyg train`` recorded it (``config.data``)."""
    source = _resolve_paths(dict(recorded))
    trained_on = recorded.get("folder") or source.get("data")
    if data_folder is not None:
        if source.get("data") is None:
            raise ValueError(
                f"'data_folder' was given, but the run read the "
                f"'{source.get('dataset')}' dataset, not a folder")
        source["data"] = data_folder
    elif (source.get("data") is not None
          and not Path(source["data"]).is_dir()):
        raise FileNotFoundError(
            f"'{source['data']}', the data folder '{run}' was trained "
            f"on, is not there (relative to {Path.cwd()} or to "
            f"{source.get('cwd')}, where the run started); give where "
            f"it is now as 'data_folder' (mde-pyg recommend --data)")
    if source.get("data") is not None:
        _check_data_folder(source, trained_on, data_folder is not None)
    return load_data_source(source)


def _check_data_folder(source: dict[str, Any], trained_on: str | None,
                       given: bool) -> None:
    """Raise a :class:`FileNotFoundError` saying what the run needs (the
    folder it was trained on, its ``.inter`` file and feature files) when
    the folder ``source["data"]`` (``data_folder`` when ``given``) lacks
    one of those files. A folder with one ``.inter`` file is read whatever
    its name (the data's sizes and checksum are compared later); among
    several, the one named at training (``--inter-file``) or, failing
    that, the one the folder it was trained on holds, set in ``source``.
    """
    from mde_pyg.data.mmrec import DEFAULT_MODALITIES, _inter_files

    folder = Path(source["data"])
    found = _inter_files(str(folder))
    inter = source.get("inter_file")  # as given to mde-pyg train
    named = inter  # the file to choose among several, or to name
    if named is None and trained_on is not None:
        held = _inter_files(trained_on)  # the one the run's folder holds
        named = held[0] if len(held) == 1 else None
    if inter is None and len(found) > 1 and named in found:
        inter = source["inter_file"] = named
    features = {} if source.get("no_features") else dict(
        source.get("modality") or DEFAULT_MODALITIES)
    missing = [name for name in features.values()
               if not (folder / name).is_file()]
    if inter is not None and not (folder / inter).is_file():
        missing.insert(0, inter)
    elif inter is None and not found:
        missing.insert(0, named or "'*.inter' file")
    if not missing and (inter is not None or len(found) == 1):
        return
    if not folder.is_dir():
        problem = f"'{folder}' is not a folder"
    elif missing:
        problem = f"'{folder}' has no {', '.join(missing)}"
    else:
        problem = f"'{folder}' holds several '*.inter' files {found}"
    reads = (", ".join(f"{m}={file}" for m, file in features.items())
             if features else "no feature file (--no-features)")
    those = ("" if not features else " and that file" if len(features) == 1
             else " and those files")
    how = ("'data_folder' (mde-pyg recommend --data) must be" if given else
           "restore them, or give as 'data_folder' (mde-pyg recommend "
           "--data)")
    raise FileNotFoundError(
        f"{problem}: the run was trained on '{trained_on}' with {reads}; "
        f"{how} a folder holding {named or 'its .inter file'}{those}")


def _read_weights(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's entries, checked to hold the model's weights."""
    state = load_checkpoint(
        checkpoint, ["model"],
        "train the run again (or restore the file from a copy)")
    if not isinstance(state["model"], dict):
        raise CheckpointError(
            f"'{checkpoint}' has a \"model\" of type "
            f"{type(state['model']).__name__}, not the model's weights; "
            f"train the run again (or restore the file from a copy)")
    return state


def _rebuild(run: Path, name: str, hparams: dict[str, Any],
             config: dict[str, Any], data: HeteroData, checkpoint: Path,
             state: dict[str, Any], recorded_in: Path) -> Recommender:
    """Build model ``name`` for ``data`` (checked against the sizes the run
    was trained on) with ``hparams``, and load the checkpoint's weights.
    """
    from mde_pyg.models import build_model, get_model_class

    trained_on = config.get("data_sizes")
    if trained_on is not None:
        sizes = data_sizes(data)
        changed = [f"{key} {trained_on[key]} -> {sizes[key]}"
                   for key in trained_on if sizes.get(key) != trained_on[key]]
        if changed:
            raise ValueError(
                f"The data differs from what '{run}' was trained on "
                f"({'; '.join(changed)}); give the run's data")
    crc = config.get("interactions_crc32")  # None: an older run
    if crc is not None and interactions_checksum(data) != crc:
        raise ValueError(
            f"The data has the sizes '{run}' was trained on but other "
            f"interactions (checksum {interactions_checksum(data)}, the run "
            f"recorded {crc}): another split or another dataset of the same "
            f"size; give the run's data")
    legacy = get_model_class(name).legacy_hparams
    model = build_model(name, data, **{**legacy, **hparams})
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:  # keys or shapes that do not fit
        first = str(error).strip().splitlines()[:3]
        raise ValueError(
            f"The weights in '{checkpoint}' do not fit the "
            f"{type(model).__name__} rebuilt from '{recorded_in}' "
            f"({' '.join(line.strip() for line in first)[:300]}); the run "
            f"was probably trained by another version of mde-pyg") from None
    return model


def _is_trainer_run(run: Path) -> bool:
    """Whether ``run`` is the ``output_dir`` of a :class:`Trainer` used from
    Python: its best weights, but no ``results.json`` (which only ``mde-pyg
    train`` writes).
    """
    return (not (run / RESULTS_FILE).is_file()
            and (run / BEST_CHECKPOINT).is_file())


def _load_grid_point(point: Path, data: HeteroData | None,
                     data_folder: str | os.PathLike | None,
                     device: torch.device | str | None,
                     grid: Path | None = None
                     ) -> tuple[Recommender, HeteroData]:
    """:func:`load_run` of one configuration ``run_<i>`` of a grid, from
    its ``best.pt``: the data is loaded as ``mde-pyg train`` recorded it
    there, or must be given for a :func:`grid_search` from Python.
    """
    index = grid_run_index(point)
    if not any(row.get("run") == str(index)
               for row in _grid_rows(point.parent)):
        raise FileNotFoundError(
            f"'{point}' has not finished training ('{point.parent / GRID_FILE}"
            f"' has no row for run {index}); resume the grid (mde-pyg train "
            f"--resume, or grid_search(resume=True)) first")
    checkpoint = point / BEST_CHECKPOINT
    state = _read_weights(checkpoint)
    config = state.get("config")
    recorded = config.get("data") if isinstance(config, dict) else None
    if data is None:
        if isinstance(recorded, dict) and grid is not None:
            raise FileNotFoundError(
                f"'{grid}' is an unfinished 'mde-pyg train' grid "
                f"({GRID_FILE}, no {RESULTS_FILE}, which is written when the "
                f"grid ends): finish it with the same 'mde-pyg train' "
                f"command and --resume, or load one finished configuration, "
                f"load_run('{point}')")
        if not isinstance(recorded, dict):
            raise ValueError(
                f"'{grid or point}' was written by grid_search from Python "
                f"({checkpoint}, no {RESULTS_FILE}), which records no way to "
                f"load its data: pass the data it was trained on, "
                f"load_run('{grid or point}', data=data)")
        data = _load_recorded_data(recorded, point, data_folder)
    return _rebuild_from_checkpoint(point, checkpoint, state, data, device)


def _load_trainer_run(run: Path, data: HeteroData | None,
                      device: torch.device | str | None
                      ) -> tuple[Recommender, HeteroData]:
    """:func:`load_run` of a :class:`~mde_pyg.train.Trainer`'s
    ``output_dir``: the model is rebuilt from ``best.pt``'s config (its
    class's import path and constructor arguments) for the given ``data``.
    """
    checkpoint = run / BEST_CHECKPOINT
    state = _read_weights(checkpoint)
    config = state.get("config")
    if data is None and isinstance(config, dict) and \
            isinstance(config.get("data"), dict):  # mde-pyg train's settings
        raise FileNotFoundError(
            f"'{run}' is an unfinished 'mde-pyg train' run ({checkpoint}, no "
            f"{RESULTS_FILE}, which is written when training ends): finish "
            f"it with the same 'mde-pyg train' command and --resume")
    if data is None:
        raise ValueError(
            f"'{run}' was written by a Trainer from Python ({checkpoint}, no "
            f"{RESULTS_FILE}), which records no way to load its data: pass "
            f"the data it was trained on, load_run('{run}', data=data)")
    return _rebuild_from_checkpoint(run, checkpoint, state, data, device)


def _rebuild_from_checkpoint(run: Path, checkpoint: Path,
                             state: dict[str, Any], data: HeteroData,
                             device: torch.device | str | None
                             ) -> tuple[Recommender, HeteroData]:
    """Rebuild the model of a checkpoint from its config: its class's
    import path and constructor arguments.
    """
    config = state.get("config")
    path = config.get("model_path") if isinstance(config, dict) else None
    if not isinstance(path, str) or config.get("model_hparams") is None:
        what = ("no model_path (written by an earlier mde-pyg)"
                if not isinstance(path, str) else
                "no model_hparams (a model not built by from_data)")
        raise ValueError(
            f"'{checkpoint}' records {what}, so the model cannot be rebuilt "
            f"from it: build the model as it was trained and load the "
            f"weights, model.load_state_dict(torch.load('{checkpoint}')"
            f"['model'])")
    model = _rebuild(run, path, dict(config["model_hparams"]), config, data,
                     checkpoint, state, checkpoint)
    return model.to(device or "cpu").eval(), data
