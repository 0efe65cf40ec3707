r"""The ``mde-pyg`` command line: train a registered model, recommend with
a trained run, list the models and their arguments.

.. code-block:: bash

    mde-pyg models
    mde-pyg models mde                     # its arguments and defaults
    mde-pyg train --model mde --dataset synthetic --output runs/mde
    mde-pyg recommend runs/mde --k 10      # runs/mde/recommendations.tsv
    mde-pyg train --model mde --data data/baby \
        --modality image=image_feat.npy --modality text=text_feat.npy \
        --grid lambda_1=0.001,0.01,0.1 --grid tau=0.2,0.5 --output runs/baby

Settings may also come from a TOML, YAML or JSON file (``--config``) whose
keys are the long option names (``max_epochs`` or ``max-epochs``) with
``set``, ``grid`` and ``modality`` given as tables; options on the command
line take precedence over the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mde_pyg.files import atomic_path, atomic_write, atomic_write_json
from mde_pyg.metrics import METRIC_NAMES

if TYPE_CHECKING:
    from torch_geometric.data import HeteroData

#: Defaults of the ``train`` options that a config file may also set.
DEFAULTS: dict[str, Any] = {
    "model": None,
    "data": None,
    "dataset": None,
    "root": None,
    "inter_file": None,
    "max_epochs": 1000,
    "patience": 20,
    "batch_size": 2048,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "seed": 0,
    "device": None,
    "precision": "fp32",
    "eval_metric": "recall@20",
    "ks": (5, 10, 20, 50),
    "k_user": 40,
    "k_item": 10,
    "knn_include_self": False,
    "feature_norm": "standardize",
    "feature_min_std": 0.0,
    "no_features": False,
    "output": None,
    "resume": False,
    "overwrite": False,
    "plot": False,
    "progress": True,
}
#: Options given as ``KEY=VALUE`` pairs (tables in a config file).
MAPPING_OPTIONS: tuple[str, ...] = ("set", "grid", "modality")

#: ``--dataset`` names: the embedded synthetic data and MMRec's Amazon sets.
DATASETS: tuple[str, ...] = ("synthetic", "baby", "sports", "clothing")

MATPLOTLIB_MISSING = "--plot needs matplotlib (pip install 'mde-pyg[plot]')"
RESULTS_FILE = "results.json"
CURVE_FILE = "curve.png"
RECOMMENDATIONS_FILE = "recommendations.tsv"

#: ``recommend --exclude`` choices -> the splits whose items are left out.
EXCLUDE: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "train+valid": ("train", "valid"),
    "all": ("train", "valid", "test"),
    "none": (),
}


class UsageError(ValueError):
    """Bad user input, reported as one line rather than a traceback."""


# Parsing ######################################################################


def parse_value(text: str) -> Any:
    """Parse ``text`` as a bool, int, float, ``None`` or a JSON list or
    object (``[0.8, 0.2]``, ``{"text": 0.8, "image": 0.2}``), else keep the
    string.

    Args:
        text (str): A value from the command line, e.g. ``"1e-3"``.
    """
    if text.strip()[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(
                f"'{text}' starts like a JSON list or object but is not "
                f"one ({error.msg} at character {error.pos}); quote it for "
                f"the shell, e.g. --set 'key={{\"text\": 0.8}}'"
            ) from None
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: Sequence[str], option: str) -> dict[str, str]:
    """Split ``["KEY=VALUE", ...]`` into a dict. A key given twice with
    two values raises a :class:`UsageError` naming both (for ``--set``
    and ``--grid``, dashes and underscores name the same key); the same
    value repeated is taken once.

    Args:
        items (Sequence[str]): The raw option values.
        option (str): The option name, for error messages.

    Raises:
        UsageError: An item without ``=``, or a key given two values.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            raise UsageError(
                f"{option} expects KEY=VALUE, got '{item}'"
            )
        if option != "--modality":
            key = key.replace("-", "_")
        if key in out and out[key] != value:
            what = "name" if option == "--modality" else "key"
            also = (f" (a grid key takes all its values: {key}=V1,V2)"
                    if option == "--grid" else "")
            raise UsageError(
                f"{option} gives '{key}' twice ('{out[key]}' and '{value}'); "
                f"give each {what} once{also}")
        out[key] = value
    return out


def parse_grid(items: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Turn ``{"lr": "1e-3,1e-4"}`` (or lists) into ``{"lr": [1e-3, 1e-4]}``.

    A string that is a JSON list is the list of values, so that values
    may be lists or objects themselves:
    ``global_preference=[[0.8,0.2],[0.2,0.8]]``.

    Args:
        items (Mapping[str, Any]): Grid values per key, comma separated
            strings, JSON lists or lists.
    """
    grid: dict[str, list[Any]] = {}
    for key, values in items.items():
        if isinstance(values, str) and values.strip().startswith("["):
            values = parse_value(values)  # a list, or a UsageError
        elif isinstance(values, str):
            values = [parse_value(v) for v in values.split(",") if v.strip()]
        elif not isinstance(values, (list, tuple)):
            values = [values]
        if len(values) == 0:
            raise UsageError(f"--grid {key} has no values")
        grid[key] = list(values)
    return grid


#: A number in exponent form without a dot, such as ``1e-3``: a string in
#: YAML 1.1 (PyYAML's), a number in TOML, JSON and on the command line.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml_floats(value: Any) -> Any:
    """``value`` with the strings PyYAML left for numbers such as ``1e-3``
    read as floats, recursively (``lr: 1e-3`` was refused as not a number).
    """
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {key: _yaml_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_yaml_floats(item) for item in value]
    return value


def _repeated_key(path: Path, key: Any, first: Any, second: Any) -> None:
    """Raise the :class:`UsageError` of a table giving ``key`` twice."""
    raise UsageError(f"config file '{path}' gives '{key}' twice ({first} "
                     f"and {second}); keep one")


def _unique_keys(pairs: Sequence[tuple[str, Any]], path: Path
                 ) -> dict[str, Any]:
    """A JSON object's ``pairs`` as a dict, refusing a key given twice
    (which :func:`json.loads` would let the last win).
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            _repeated_key(path, key, json.dumps(out[key]), json.dumps(value))
        out[key] = value
    return out


def _unique_key_loader(yaml: Any, path: Path) -> type:
    """PyYAML's safe loader, refusing a mapping that gives a key twice
    with two values (which it would let the last win); merged keys
    (``<<``) may be overridden as usual.
    """

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, tuple[str, Any]] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not \
                        isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                mark = value_node.start_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}"
                value = self.construct_object(value_node, deep=True)
                if key in seen and seen[key][1] != value:
                    _repeated_key(path, key, seen[key][0], where)
                seen[key] = (where, value)
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml`` / ``.yml`` or ``.json`` config file.

    Args:
        path (str or os.PathLike): The file.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file '{path}' does not exist")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib
                except ImportError as error:
                    raise UsageError(
                        "TOML config files need Python >= 3.11 or tomli "
                        "(pip install tomli)"
                    ) from error
            config = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as error:
                raise UsageError(
                    "YAML config files need PyYAML (pip install pyyaml)"
                ) from error
            config = _yaml_floats(
                yaml.load(text, Loader=_unique_key_loader(yaml, path)) or {})
        elif suffix == ".json":
            config = json.loads(text, object_pairs_hook=lambda pairs:
                                _unique_keys(pairs, path))
        else:
            raise UsageError(
                f"config file '{path}' must end in .toml, .yaml, .yml or "
                f".json"
            )
    except UsageError:
        raise
    except Exception as error:  # a syntax error of any of the formats
        # one line: YAML's messages span several, naming "<unicode string>"
        where = " ".join(str(error).replace('"<unicode string>", ', "")
                         .split())
        raise UsageError(f"cannot parse '{path}': {where}") from error
    if not isinstance(config, dict):
        raise UsageError(f"config file '{path}' must hold a table/mapping")
    config = _underscored(config, str(path))
    if "modalities" in config:
        config["modality"] = config.pop("modalities")
    unknown = set(config) - set(DEFAULTS) - set(MAPPING_OPTIONS)
    if unknown:
        raise UsageError(
            f"unknown key(s) {sorted(unknown)} in '{path}'; allowed: "
            f"{sorted(set(DEFAULTS) | set(MAPPING_OPTIONS))}"
        )
    for key in MAPPING_OPTIONS:
        if key in config and not isinstance(config[key], dict):
            raise UsageError(f"'{key}' in '{path}' must be a table/mapping")
    for key in ("set", "grid"):  # dashes or underscores, as --set / --grid
        if key in config:
            config[key] = _underscored(config[key], f"'{key}' in '{path}'")
    return config


def _underscored(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``table`` with dashes in its keys made underscores, refusing two keys
    that become one (``k-user`` and ``k_user``).
    """
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise UsageError(f"{where} sets '{name}' twice (dashes and "
                             f"underscores name the same key); keep one")
        out[name] = value
    return out


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge defaults, the config file and the command line (which wins).

    Args:
        args (argparse.Namespace): Parsed ``train`` arguments.
    """
    config = load_config(args.config) if args.config else {}
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in config.items() if k in DEFAULTS})
    settings.update(
        {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}
    )
    given_set = {k: parse_value(v) for k, v in
                 parse_assignments(args.set or [], "--set").items()}
    given_grid = parse_assignments(args.grid or [], "--grid")
    for fixed, searched, where in (
            (given_set, given_grid, "--set and --grid"),
            (config.get("set", {}), config.get("grid", {}),
             f"the [set] and [grid] of '{args.config}'")):
        both = sorted(set(fixed) & set(searched))
        if both:
            raise UsageError(f"{where} both give {both}: a value is either "
                             f"fixed or searched; give it in one of them")
    # the command line wins, also over the file's other table
    settings["hparams"] = {
        **{k: v for k, v in config.get("set", {}).items()
           if k not in given_grid},
        **given_set,
    }
    settings["grid"] = parse_grid(
        {**{k: v for k, v in config.get("grid", {}).items()
            if k not in given_set},
         **given_grid}
    )
    settings["modality"] = {
        **config.get("modality", {}),
        **parse_assignments(args.modality or [], "--modality"),
    }
    if settings["model"] is None:
        raise UsageError("--model is required (see 'mde-pyg models')")
    if settings["output"] is None:
        raise UsageError("--output is required")
    check_output_folder(settings["output"])
    check_output_is_free(settings["output"], settings["resume"],
                         settings["overwrite"], grid=bool(settings["grid"]),
                         model=str(settings["model"]))
    if (settings["data"] is None) == (settings["dataset"] is None):
        raise UsageError("give exactly one of --data FOLDER or --dataset NAME")
    if settings["dataset"] is not None and settings["dataset"] not in DATASETS:
        raise UsageError(
            f"unknown dataset '{settings['dataset']}'; choose from "
            f"{list(DATASETS)}"
        )
    if settings["no_features"] and (settings["modality"]
                                    or settings["data"] is None):
        raise UsageError("--no-features reads a --data folder's "
                         "interactions alone; give --data and no --modality")
    if settings["modality"] and settings["dataset"] == "synthetic":
        raise UsageError("--modality needs --data FOLDER or an Amazon dataset")
    from mde_pyg.train.trainer import check_trainer_args

    from_file = {k for k in config if k in DEFAULTS
                 and getattr(args, k, None) is None}

    def flag(key: str) -> str:
        """The option as the user gave it: a flag, or a config file key."""
        dashed = f"--{key.replace('_', '-')}"
        return (f"{dashed} ('{key}' in '{args.config}')" if key in from_file
                else dashed)

    for key in ("max_epochs", "patience", "batch_size", "lr", "weight_decay"):
        try:
            check_trainer_args(**{key: settings[key]})
        except ValueError as error:
            raise UsageError(f"{flag(key)}: {error}") from error
    for key in ("k_user", "k_item"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{flag(key)} must be an integer >= 1, got "
                             f"{value!r}")
    if not isinstance(settings["knn_include_self"], bool):
        raise UsageError(f"{flag('knn_include_self')} must be true or false, "
                         f"got {settings['knn_include_self']!r}")
    min_std = settings["feature_min_std"]
    if isinstance(min_std, bool) or not isinstance(min_std, (int, float)) \
            or not 0 <= min_std < 1:
        raise UsageError(f"--feature-min-std must be a number in [0, 1), "
                         f"got {min_std!r}")
    if min_std and settings["feature_norm"] != "standardize":
        raise UsageError("--feature-min-std applies to --feature-norm "
                         "standardize only")
    ks = settings["ks"]
    if isinstance(ks, str):
        try:
            ks = [int(k) for k in ks.split(",") if k.strip()]
        except ValueError as error:
            raise UsageError(f"--ks expects K1,K2,..., got '{ks}'") from error
    if not ks or any(int(k) < 1 for k in ks):
        raise UsageError(f"--ks needs positive cut-offs, got {ks}")
    settings["ks"] = tuple(sorted({int(k) for k in ks}))
    name, _, k = str(settings["eval_metric"]).partition("@")
    if (name not in METRIC_NAMES or not k.isdigit()
            or int(k) not in settings["ks"]):
        raise UsageError(
            f"--eval-metric must be NAME@K with NAME in {list(METRIC_NAMES)} "
            f"and K in --ks {list(settings['ks'])}, got "
            f"'{settings['eval_metric']}'"
        )
    return settings


def _check_output_parent(path: Path, what: str) -> None:
    """Raise a :class:`UsageError` when the nearest existing parent of the
    ``--output`` ``path`` is a file, so that ``path`` cannot be ``what``
    (made, written).
    """
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(
            f"--output '{path}' cannot be {what}: '{parent}' is a file, not "
            f"a folder; give another --output")
    if path.exists() or not parent.is_dir():
        return
    try:  # before any work: can anything be created there?
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".mde-pyg-probe-"))
    except OSError as error:
        raise UsageError(
            f"--output '{path}' cannot be {what}: nothing can be created in "
            f"'{parent}' ({error.strerror or error}); give another --output"
        ) from None


def check_output_folder(output: str | os.PathLike) -> None:
    """Raise a :class:`UsageError` when ``output`` cannot be a folder: it,
    or the nearest of its parents that exists, is a file.

    Args:
        output (str or os.PathLike): The ``train --output`` folder.
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"--output '{path}' is an existing file, not a folder; give a "
            f"new folder (or the folder of the run to --resume)")
    _check_output_parent(path, "made")


def check_output_is_free(output: str | os.PathLike, resume: bool,
                         overwrite: bool, grid: bool = False,
                         model: str | None = None) -> None:
    """Raise a :class:`UsageError` when the ``train --output`` folder
    already holds a run (its ``results.json``, or any file
    :func:`~mde_pyg.train.grid.held_run_files` names: a run's checkpoints
    or history, a grid's ``grid.csv`` or its runs' files) and neither
    ``--resume`` nor ``--overwrite`` says what to do with it; or when
    ``--resume`` would continue a run of another kind (a grid without
    ``--grid``, a single run with one) or of another model, which would
    train a new run over it instead.

    Args:
        output (str or os.PathLike): The ``train --output`` folder.
        resume (bool): ``--resume`` was given.
        overwrite (bool): ``--overwrite`` was given.
        grid (bool, optional): The command searches a grid.
            (default: :obj:`False`)
        model (str, optional): The command's ``--model``.
            (default: :obj:`None`: not compared)
    """
    if resume and overwrite:
        raise UsageError("give --resume (continue the run in --output) or "
                         "--overwrite (train it again from scratch), not "
                         "both")
    if overwrite:
        return
    from mde_pyg.train.grid import held_run_files, holds_grid

    path = Path(output)
    held = held_run_files(path)  # grid.csv: a grid, maybe unfinished
    is_grid = holds_grid(held)
    if (path / RESULTS_FILE).is_file():
        held.insert(0, RESULTS_FILE)
    if not resume:
        if held:
            raise UsageError(
                f"--output '{path}' already holds a run ({', '.join(held[:4])}"
                f"{', ...' if len(held) > 4 else ''}); pass --resume to "
                f"continue it, --overwrite to train it again from scratch, "
                f"or give another --output")
        return
    fix = "or --overwrite to train anew, or give another --output"
    if is_grid and not grid:
        raise UsageError(f"--output '{path}' holds a grid (grid.csv, "
                         f"run_<i>/): --resume continues it with its --grid; "
                         f"give the grid, {fix}")
    if not is_grid and grid and held:
        raise UsageError(f"--output '{path}' holds a single run "
                         f"({', '.join(held)}): --resume continues it "
                         f"without --grid; drop the grid, {fix}")
    recorded = None
    if model is not None and (path / RESULTS_FILE).is_file():
        try:
            recorded = json.loads((path / RESULTS_FILE).read_text())["model"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None  # an unreadable summary: the checkpoints decide
    from mde_pyg.models import model_key

    if isinstance(recorded, str) and model_key(recorded) != model_key(model):
        raise UsageError(f"--output '{path}' holds a run of --model "
                         f"'{recorded}': --resume continues it with that "
                         f"model; give --model {recorded}, {fix}")


def check_output_file(output: str | os.PathLike) -> None:
    """Raise a :class:`UsageError` when ``output`` cannot be written as a
    file: it is a folder, or the nearest of its parents that exists is a
    file.

    Args:
        output (str or os.PathLike): The ``recommend --output`` file.
    """
    path = Path(output)
    if path.is_dir():
        raise UsageError(
            f"--output '{path}' is a folder; give a file name, e.g. "
            f"--output {path / RECOMMENDATIONS_FILE}")
    _check_output_parent(path, "written")


# Data and models ##############################################################


def read_folder(
    data: str | os.PathLike,
    inter_file: str | None = None,
    modalities: Mapping[str, str] | None = None,
    transform: Callable[[HeteroData], HeteroData] | None = None,
) -> HeteroData:
    """Read a folder in MMRec's layout (:func:`mde_pyg.data.read_mmrec`),
    then apply ``transform``; a missing folder or a file that cannot be
    read (or built into graphs) raises a :class:`UsageError` naming it.

    Args:
        data (str or os.PathLike): The folder.
        inter_file (str, optional): The ``.inter`` file in ``data``.
            (default: :obj:`None`)
        modalities (Mapping[str, str], optional): Modality name -> feature
            file. (default: :obj:`None`: the loader's default)
        transform (Callable, optional): Applied to the data read.
            (default: :obj:`None`)
    """
    from mde_pyg.data import read_mmrec
    from mde_pyg.data.mmrec import DEFAULT_MODALITIES

    if Path(data).is_file():
        raise UsageError(f"data folder '{data}' is a file; give the folder "
                         f"that holds it (and --inter-file "
                         f"{Path(data).name} if it is the .inter file)")
    if not Path(data).is_dir():
        raise UsageError(f"data folder '{data}' does not exist")
    try:
        out = read_mmrec(str(data), inter_file,
                         None if modalities is None else dict(modalities))
        return out if transform is None else transform(out)
    except (OSError, ValueError) as error:
        hint = ""
        if modalities is None and _finds_inter_file(data, inter_file) \
                and not any((Path(data) / name).is_file()
                            for name in DEFAULT_MODALITIES.values()):
            hint = ("; or, for a model without features (mostpop, "
                    "lightgcn), --no-features reads the interactions alone")
        raise UsageError(f"cannot read '{data}': {error}{hint}") from error


def _finds_inter_file(data: str | os.PathLike, inter_file: str | None
                      ) -> bool:
    """Whether the folder ``data`` holds its ``.inter`` file (so that an
    error reading it is about the features).
    """
    from mde_pyg.data.mmrec import find_inter_file

    try:
        find_inter_file(str(data), inter_file)
    except (OSError, ValueError):
        return False
    return True


def load_data(
    data: str | os.PathLike | None = None,
    dataset: str | None = None,
    modalities: Mapping[str, str] | None = None,
    inter_file: str | None = None,
    root: str | os.PathLike | None = None,
    k_user: int = 40,
    k_item: int = 10,
    feature_norm: str = "none",
    feature_min_std: float = 0.0,
    knn_include_self: bool = False,
) -> HeteroData:
    """Load a dataset and build every graph the models need.

    Args:
        data (str or os.PathLike, optional): A folder in MMRec's layout, read
            with :func:`mde_pyg.data.read_mmrec`. (default: :obj:`None`)
        dataset (str, optional): One of :data:`DATASETS` instead of
            ``data``. (default: :obj:`None`)
        modalities (Mapping[str, str], optional): Modality name -> feature
            file. (default: :obj:`None`: the loader's default)
        inter_file (str, optional): The ``.inter`` file in ``data``.
            (default: :obj:`None`)
        root (str or os.PathLike, optional): Root of an Amazon ``dataset``.
            (default: :obj:`None`: ``data/<dataset>``)
        k_user (int, optional): Co-occurring users kept per user.
            (default: :obj:`40`)
        k_item (int, optional): Item neighbours per modality.
            (default: :obj:`10`)
        feature_norm (str, optional): ``"none"``, or a method of
            :class:`mde_pyg.transforms.NormalizeFeatures` applied to the
            model inputs after the graphs are built. (default: ``"none"``)
        feature_min_std (float, optional): ``min_std`` of
            :class:`~mde_pyg.transforms.NormalizeFeatures` with
            ``"standardize"``: columns of rounding noise become 0.
            (default: :obj:`0.0`)
        knn_include_self (bool, optional): ``include_self`` of
            :class:`~mde_pyg.transforms.ItemKNNGraph`. (default:
            :obj:`False`)

    Returns:
        torch_geometric.data.HeteroData: The data with its graphs.
    """
    from torch_geometric.transforms import Compose

    from mde_pyg.transforms import MultiModalGraphs, NormalizeFeatures

    transforms = [MultiModalGraphs(k_user=k_user, k_item=k_item,
                                   include_self=knn_include_self)]
    if feature_norm != "none":
        transforms.append(NormalizeFeatures(feature_norm,
                                            min_std=feature_min_std))
    transform = Compose(transforms)
    modalities = None if modalities is None else dict(modalities)
    if data is not None:
        return read_folder(data, inter_file, modalities, transform)
    if dataset == "synthetic":
        from mde_pyg.data import SyntheticMultiModal

        return SyntheticMultiModal(seed=0, pre_transform=transform)[0]
    from mde_pyg import data as datasets

    cls = {
        "baby": datasets.AmazonBaby,
        "sports": datasets.AmazonSports,
        "clothing": datasets.AmazonClothing,
    }.get(str(dataset))
    if cls is None:
        raise UsageError(
            f"unknown dataset '{dataset}'; choose from {list(DATASETS)}"
        )
    root = Path("data") / str(dataset) if root is None else Path(root)
    try:
        return cls(str(root), modalities, pre_transform=transform)[0]
    except RuntimeError as error:  # its message says which files to place
        raise UsageError(str(error)) from error
    except (OSError, ValueError) as error:  # a bad row or feature file
        raise UsageError(
            f"cannot load the '{dataset}' dataset from '{root}': {error}"
        ) from error


def load_data_source(source: Mapping[str, Any]) -> HeteroData:
    """Load the data that ``source`` describes, as recorded under
    ``config["data"]`` in ``results.json``: the keys ``data``, ``dataset``,
    ``root``, ``modality``, ``inter_file``, ``k_user``, ``k_item``,
    ``feature_norm``, ``feature_min_std`` and ``knn_include_self``, the
    arguments of :func:`load_data` (``modality`` is its ``modalities``),
    and ``no_features`` (:obj:`True`: no feature file is read); missing
    keys take their defaults.

    Args:
        source (Mapping[str, Any]): The description.
    """
    return load_data(
        data=source.get("data"),
        dataset=source.get("dataset"),
        modalities={} if source.get("no_features")
        else source.get("modality") or None,
        inter_file=source.get("inter_file"),
        root=source.get("root"),
        k_user=source.get("k_user", 40),
        k_item=source.get("k_item", 10),
        feature_norm=source.get("feature_norm", "none"),
        feature_min_std=source.get("feature_min_std", 0.0),
        knn_include_self=source.get("knn_include_self", False),
    )


def model_class(model: str) -> type:
    """Return the class of the ``--model`` name or import path, or raise a
    :class:`UsageError` naming the choices.

    Args:
        model (str): A registered name or ``"package.module:Class"``.
    """
    from mde_pyg.models import available_models, get_model_class

    try:
        return get_model_class(model)
    except ValueError as error:
        if ":" in model:
            raise UsageError(str(error)) from error
        raise UsageError(
            f"unknown model '{model}'; choose from {available_models()}, "
            f"or give the import path 'package.module:Class' of your own "
            f"Recommender") from error


def check_hparams(model: str, hparams: Mapping[str, Any]) -> None:
    """Raise a :class:`UsageError` naming any unknown model argument.

    Args:
        model (str): A registered model name.
        hparams (Mapping[str, Any]): Keyword arguments for the model.
    """
    cls = model_class(model)
    names: set[str] = set()
    for fn in (cls.__init__, getattr(cls, "from_data", None)):
        if fn is None:
            continue
        for param in inspect.signature(fn).parameters.values():
            if param.kind is param.VAR_KEYWORD:
                if fn is cls.__init__:
                    return  # anything may be accepted
                continue
            names.add(param.name)
    names -= {"self", "cls", "data", "num_users", "num_items"}
    unknown = sorted(set(hparams) - names)
    if unknown:
        raise UsageError(
            f"model '{model}' has no argument(s) {unknown}; it takes "
            f"{sorted(names) or 'none'}"
        )


#: An argument's entry in a Google-style "Args:" section:
#: ``name (type, optional): Text.``
_ARG_ENTRY = re.compile(r"(\w+) \((.*?)\):\s*(.*)")
#: The widest description :func:`describe_model` prints.
DESCRIPTION_WIDTH = 64


def docstring_args(cls: type) -> dict[str, str]:
    """Return the descriptions of the ``Args:`` section of ``cls``'s
    docstring (Google style), argument name -> text on one line.

    Args:
        cls (type): A class, e.g. a model.
    """
    doc = inspect.getdoc(cls) or ""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    start = next((n for n, line in enumerate(lines)
                  if line.strip() == "Args:"), None)
    if start is None:
        return out
    indent = len(lines[start]) - len(lines[start].lstrip())
    entry: int | None = None  # the indentation of the entries
    name = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:
            break  # the next section
        if entry is None:
            entry = depth
        match = _ARG_ENTRY.fullmatch(line.strip())
        if depth == entry and match:
            name = match.group(1)
            out[name] = match.group(3)
        elif depth > entry and name is not None:
            out[name] = f"{out[name]} {line.strip()}".strip()
    return out


def _plain(text: str) -> str:
    r"""``text`` without reST markup: a class, function or method role
    such as ``:class:`~a.b.C``` reads ``C``, other roles their text,
    literals and bold their text, ``\lambda`` reads ``lambda``.
    """
    text = re.sub(r":\w+:`~?([^`]*)`",
                  lambda m: m.group(1).rsplit(".", 1)[-1]
                  if m.group(0).startswith((":class:", ":func:", ":meth:",
                                            ":attr:")) else m.group(1),
                  text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"\*\*([^*]*)\*\*", r"\1", text)
    text = re.sub(r"\\(?:mathbf|mathcal|operatorname)\{([^}]*)\}", r"\1",
                  text)
    text = re.sub(r"\\(\w+)", r"\1", text)
    return text.replace("{", "").replace("}", "")


def _first_clause(text: str) -> str:
    """The first clause of ``text`` (up to a ``.``, ``;`` or ``:`` outside
    parentheses), without its ``(default: ...)``, at most
    :data:`DESCRIPTION_WIDTH` characters.
    """
    depth = 0
    end = len(text)
    for n, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        after = text[n + 1:n + 2]
        if depth == 0 and char in ".;:" and after in ("", " "):
            word = text[:n + 1].rsplit(" ", 1)[-1]
            if char == "." and word.lower() in ("e.g.", "i.e.", "eq.",
                                                "fig.", "etc."):
                continue
            end = n
            break
    clause = re.sub(r"\s*\(default:.*$", "", text[:end]).strip()
    if len(clause) > DESCRIPTION_WIDTH:
        clause = clause[:DESCRIPTION_WIDTH - 4].rsplit(" ", 1)[0] + " ..."
    return clause


def describe_model(model: str) -> str:
    """Return a table of the arguments of ``model`` that ``--set`` and
    ``--grid`` take: each constructor argument with a default (the
    hyper-parameters, :meth:`~mde_pyg.models.Recommender.default_hparams`),
    its default, and the first clause of its description in the class
    docstring's ``Args:`` section.

    .. code-block:: text

        mde (mde_pyg.models.mde.MDE): the arguments of --set and --grid
        argument           default   description
        embedding_dim      64        d
        ...
        lambda_1           0.01      MDA weight
        ...

    Args:
        model (str): A registered name or ``"package.module:Class"``.
    """
    cls = model_class(model)
    defaults = cls.default_hparams()
    path = f"{cls.__module__}.{cls.__qualname__}"
    trainer = ("--set and --grid also take the trainer's lr, batch_size, "
               "weight_decay, ... (see mde-pyg train --help)")
    if not defaults:
        return f"{model} ({path}) takes no model argument; {trainer}"
    text = docstring_args(cls)
    rows = [("argument", "default", "description")] + [
        (name, value if isinstance(value, str) else repr(value),
         _first_clause(_plain(text.get(name, "-"))))
        for name, value in defaults.items()]
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    first = next(iter(defaults))
    return "\n".join([
        f"{model} ({path}): the model arguments of --set and --grid",
        *(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip()
          for a, b, c in rows),
        f"e.g. --set {first}=VALUE; --grid {first}=V1,V2 selects on "
        f"validation; {trainer}",
        f"every argument in full: python -m pydoc {path}"])


# Training #####################################################################

#: The ``config.data`` keys ``mde-pyg train`` records only when not at
#: their default (so that earlier runs compare equal on resume).
UNRECORDED_DEFAULTS: tuple[str, ...] = ("feature_min_std", "no_features",
                                        "knn_include_self")


def _unrecorded_defaults() -> dict[str, Any]:
    """The defaults of :data:`UNRECORDED_DEFAULTS` by their key in a
    :class:`~mde_pyg.train.ResumeMismatchError`'s changes, so that a run
    that did not record one shows its default, not :obj:`None`.
    """
    return {f"data.{key}": DEFAULTS[key] for key in UNRECORDED_DEFAULTS}


def plot_curve(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    metric: str = "recall@20",
) -> None:
    """Save the validation ``metric`` per epoch as an image.

    Args:
        history (Sequence[Mapping]): The trainer's history.
        path (str or os.PathLike): Image file, e.g. ``curve.png``.
        metric (str, optional): The validation metric to draw.
            (default: :obj:`"recall@20"`)
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise UsageError(MATPLOTLIB_MISSING) from error
    epochs = [entry["epoch"] for entry in history]
    values = [entry["valid"][metric] for entry in history]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(epochs, values, marker="o", markersize=2)
    best = max(range(len(values)), key=values.__getitem__)
    ax.axvline(epochs[best], color="grey", linestyle="--", linewidth=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {metric}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:  # never a half-written image
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")


def format_metrics(
    rows: Mapping[str, Mapping[str, float]],
    ks: Sequence[int] | None = None,
) -> str:
    """Format metric dicts as a text table, one line per row label and K.

    .. code-block:: text

                  K     recall  precision        map       ndcg
        valid     5     0.0300     0.0120     0.0159     0.0237
        test      5     0.0433     0.0173     0.0210     0.0324

    Args:
        rows (Mapping[str, Mapping[str, float]]): Row label -> metrics, e.g.
            ``{"valid": ..., "test": ...}``; missing values print as ``-``.
        ks (Sequence[int], optional): Cut-offs to show.
            (default: :obj:`None`: all in the first row)
    """
    if ks is None:
        first = next(iter(rows.values()))
        ks = sorted({int(key.split("@")[1]) for key in first})
    width = max(len(label) for label in rows) + 2
    lines = [f"{'':<{width}}{'K':>3}"
             + "".join(f"{name:>11}" for name in METRIC_NAMES)]
    for k in ks:
        for label, metrics in rows.items():
            cells = "".join(
                f"{metrics[f'{name}@{k}']:>11.4f}"
                if f"{name}@{k}" in metrics else f"{'-':>11}"
                for name in METRIC_NAMES
            )
            lines.append(f"{label:<{width}}{k:>3}{cells}")
    return "\n".join(lines)


def train_model(
    model: str,
    data: HeteroData,
    output: str | os.PathLike,
    hparams: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    resume: bool = False,
    plot: bool = False,
    extra_config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train ``model`` (or grid-search it) and write ``results.json``.

    ``output/results.json`` gets ``model``, ``best_epoch``, ``valid``,
    ``test``, ``config``, ``history``, ``checkpoint`` (the best weights,
    relative to ``output``) and ``environment``
    (:func:`mde_pyg.env.environment`: versions, processor, GPU); with a
    grid also ``params``, the winner's values (``grid.csv`` lists every
    run). ``hparams`` and
    ``grid`` keys that are :class:`~mde_pyg.train.Trainer` arguments (such
    as ``lr``) go to the trainer, the others to the model.

    Args:
        model (str): A registered model name.
        data (torch_geometric.data.HeteroData): Data from :func:`load_data`.
        output (str or os.PathLike): Output folder.
        hparams (Mapping[str, Any], optional): Fixed arguments.
            (default: :obj:`None`)
        grid (Mapping[str, Sequence], optional): Values to search over,
            selected on validation ``eval_metric``. (default: :obj:`None`)
        resume (bool, optional): Continue interrupted runs.
            (default: :obj:`False`)
        plot (bool, optional): Also save ``curve.png``.
            (default: :obj:`False`)
        extra_config (Mapping[str, Any], optional): Recorded under
            ``config`` in the checkpoints and ``results.json`` and compared
            on resume (e.g. the data settings; see
            :class:`~mde_pyg.train.Trainer`). (default: :obj:`None`)
        overwrite (bool, optional): The folder's earlier run is replaced:
            for a grid, the run folders of an earlier, larger grid go
            (:func:`~mde_pyg.train.grid_search`'s ``replace``).
            (default: :obj:`False`)
        **trainer_kwargs: :class:`~mde_pyg.train.Trainer` arguments.

    Returns:
        The result dict of :meth:`~mde_pyg.train.Trainer.fit` (or of
        :func:`~mde_pyg.train.grid_search`).
    """
    from mde_pyg.env import environment
    from mde_pyg.models import build_model, model_key
    from mde_pyg.train import (
        GridConfigError,
        ResumeMismatchError,
        Trainer,
        grid_search,
        seed_everything,
    )
    from mde_pyg.train.grid import split_params
    from mde_pyg.train.trainer import (
        BEST_CHECKPOINT,
        CheckpointError,
        RunExistsError,
    )

    model = model_key(model)
    model_kwargs, fixed_trainer = split_params(hparams or {})
    grid = dict(grid or {})
    check_hparams(model, {**model_kwargs, **split_params(grid)[0]})
    if plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(MATPLOTLIB_MISSING)
    trainer_kwargs = {**trainer_kwargs, **fixed_trainer}
    output = Path(output)
    # Bad values fail before anything is written (the checkpoints and
    # results are written atomically, making the folder) or trains.
    try:
        if grid:
            result = grid_search(model, data, grid, fixed=model_kwargs,
                                 output_dir=output, resume=resume,
                                 replace=overwrite,
                                 extra_config=extra_config,
                                 **trainer_kwargs)  # checks the grid first
        else:
            try:
                seed_everything(trainer_kwargs.get("seed", 0))
                recommender = build_model(model, data, **model_kwargs)
                trainer = Trainer(recommender, data, output_dir=output,
                                  extra_config=extra_config,
                                  **trainer_kwargs)
            except (ValueError, TypeError) as error:
                raise UsageError(f"cannot train '{model}': {error}") from error
            result = trainer.fit(resume=resume, overwrite=overwrite)
    except GridConfigError as error:
        raise UsageError(f"cannot train '{model}': {error}") from error
    except ResumeMismatchError as error:
        raise UsageError(f"cannot --resume: "
                         f"{error.describe(_unrecorded_defaults())}"
                         ) from error
    except CheckpointError as error:
        raise UsageError(f"cannot --resume: {error}") from error  # untrained
    except RunExistsError:  # written since check_output_is_free looked
        raise UsageError(f"--output '{output}' already holds a run; pass "
                         f"--resume to continue it, --overwrite to train it "
                         f"again from scratch, or give another --output"
                         ) from None

    config = {**result["config"], "hparams": dict(model_kwargs)}
    if grid:
        config["grid"] = grid
    summary = {
        "model": model,
        "best_epoch": result["best_epoch"],
        "valid": result["valid"],
        "test": result["test"],
        "config": config,
        "history": result["history"],
    }
    if grid:
        summary["params"] = result["params"]
    summary["checkpoint"] = (f"run_{result['index']:03d}/{BEST_CHECKPOINT}"
                             if grid else BEST_CHECKPOINT)
    summary["environment"] = environment(result["config"]["device"])
    atomic_write_json(summary, output / RESULTS_FILE)
    if plot:
        plot_curve(result["history"], output / CURVE_FILE,
                   result["config"]["eval_metric"])
    return result


# Entry points #################################################################


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``mde-pyg`` command."""
    from mde_pyg import __version__

    parser = argparse.ArgumentParser(
        prog="mde-pyg",
        description="Multi-modal recommendation with MDE, SAND and baselines.",
    )
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # each command's parser, whose usage line its errors print
    parser.commands = sub.choices
    sub.required = True
    models = sub.add_parser(
        "models", help="list the registered models, or one's arguments",
        description="List the registered models; with NAME, the arguments "
        "of that model that --set and --grid take, their defaults and "
        "descriptions.")
    models.add_argument("name", nargs="?", metavar="NAME",
                        help="a model name (or package.module:Class)")

    train = sub.add_parser(
        "train",
        help="train a model and evaluate it on the test split",
        description="Train a model with early stopping on validation "
        "Recall@20 and report the test metrics of the best epoch.",
    )
    add = train.add_argument
    add("--model", help="registered model name (see 'mde-pyg models') or "
        "the import path package.module:Class of your own Recommender "
        "(required)")
    add("--data", metavar="FOLDER", help="a dataset folder in MMRec's layout")
    add("--dataset", choices=DATASETS,
        help="'synthetic' (embedded) or an Amazon dataset of MMRec")
    add("--root", metavar="DIR", help="root of an Amazon --dataset "
        "(default: data/<dataset>)")
    add("--modality", action="append", metavar="NAME=FILE",
        help="a modality and its .npy feature file (repeatable)")
    add("--inter-file", metavar="FILE", help="the .inter file in --data")
    add("--max-epochs", type=int, metavar="N", help="default: 1000")
    add("--patience", type=int, metavar="N", help="default: 20")
    add("--batch-size", type=int, metavar="N", help="default: 2048")
    add("--lr", type=float, metavar="X", help="default: 1e-3")
    add("--weight-decay", type=float, metavar="X", help="default: 0")
    add("--seed", type=int, metavar="S", help="default: 0")
    add("--device", metavar="DEVICE",
        help="cpu or cuda (default: cuda when available)")
    add("--precision", choices=("fp32", "bf16"), help="default: fp32")
    add("--eval-metric", metavar="METRIC", help="default: recall@20")
    add("--ks", metavar="K1,K2", help="cut-offs (default: 5,10,20,50)")
    add("--k-user", type=int, metavar="K", help="default: 40")
    add("--k-item", type=int, metavar="K", help="default: 10")
    add("--knn-include-self", action="store_const", const=True,
        help="count each item among its own k-item neighbours, as MMRec's "
             "top-k over the full similarity row (FREEDOM, DRAGON and SAND "
             "in their authors' code); default: the k nearest other items")
    add("--feature-norm", choices=("none", "l2", "standardize"),
        help="rescale the item features the models read, after the graphs "
             "are built from the raw ones (default: standardize)")
    add("--no-features", action="store_const", const=True,
        help="read no feature file of --data: for the models of the "
             "interactions alone (lightgcn, mostpop)")
    add("--feature-min-std", type=float, metavar="X",
        help="with standardize, zero the columns whose std is at most X "
             "times their modality's largest (rounding noise; default: 0)")
    add("--set", action="append", metavar="KEY=VALUE",
        help="a model argument (repeatable)")
    add("--grid", action="append", metavar="KEY=V1,V2",
        help="values to grid-search, selected on validation (repeatable; "
             "a JSON list for list or object values)")
    add("--config", metavar="FILE", help="a .toml, .yaml or .json file")
    add("--resume", action="store_const", const=True,
        help="continue from OUTPUT/last.pt")
    add("--overwrite", action="store_const", const=True,
        help="train again into an OUTPUT that holds a run (refused "
             "otherwise)")
    add("--plot", action="store_const", const=True,
        help="save OUTPUT/curve.png (needs matplotlib); --resume redraws "
             "the curve of a run that has one")
    add("--no-progress", dest="progress", action="store_const", const=False,
        help="hide the progress bar (the per-epoch lines when stderr "
             "is not a terminal)")
    add("--output", metavar="DIR", help="output folder (required)")
    add("--system-malloc", action="store_true",
        help="leave glibc's allocator as it is (by default freed memory is "
             "kept for reuse: see mde_pyg.tune_cpu_allocator)")

    rec = sub.add_parser(
        "recommend",
        help="write the top-k items per user of a trained run",
        description="Rank all items for each user with the best weights of "
        "an 'mde-pyg train' run (the data is loaded again as the run "
        "loaded it) and write a TSV: userID, rank, itemID, score.",
    )
    add = rec.add_argument
    add("run", metavar="RUN", help="the --output folder of the train run")
    add("--k", type=int, default=20, metavar="K", help="default: 20")
    add("--users", metavar="U1,U2",
        help="user ids, comma separated; a repeated id counts once "
             "(default: every user)")
    add("--exclude", choices=tuple(EXCLUDE), default="train",
        help="never recommend the user's items of these splits: 'all' "
             "recommends only new items (default: train, as the "
             "evaluation)")
    add("--data", metavar="FOLDER",
        help="where the run's data folder is now, if it moved")
    add("--device", metavar="DEVICE",
        help="cpu or cuda (default: cuda when available)")
    add("--output", metavar="FILE",
        help="default: RUN/recommendations.tsv")
    add("--system-malloc", action="store_true",
        help="leave glibc's allocator as it is")
    return parser


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    from mde_pyg.train.trainer import parse_device

    try:
        parse_device(device, "--device")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return device


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the ``train`` command; return the training result.

    Args:
        args (argparse.Namespace): Parsed ``train`` arguments.
    """
    settings = resolve_settings(args)
    model = str(settings["model"])
    model_class(model)
    device = _resolve_device(settings["device"])
    # model arguments and --plot, before the data is read
    from mde_pyg.train.grid import split_params

    check_hparams(model, {**split_params(settings["hparams"])[0],
                          **split_params(settings["grid"])[0]})
    if settings["plot"] and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(MATPLOTLIB_MISSING)
    data_config = {
        key: settings[key]
        for key in ("data", "dataset", "root", "modality", "inter_file",
                    "k_user", "k_item", "feature_norm")
    }
    if settings["feature_min_std"]:  # recorded only when used: earlier runs
        data_config["feature_min_std"] = settings["feature_min_std"]
    if settings["no_features"]:  # the same
        data_config["no_features"] = True
    if settings["knn_include_self"]:  # the same
        data_config["knn_include_self"] = True
    data = load_data_source(data_config)
    data_config["cwd"] = os.getcwd()  # where relative paths start
    # the folder read, whatever the path's spelling: what a resume compares
    given = settings["data"] or settings["root"]
    data_config["folder"] = (None if given is None
                             else str(Path(given).resolve()))
    from mde_pyg.train.evaluator import split_edges

    source = settings["data"] or settings["dataset"]
    for label, split in enumerate(("train", "valid", "test")):
        if split_edges(data, split).size(1) == 0:
            raise UsageError(
                f"the {split} split of '{source}' has no interaction; the "
                f".inter file needs rows with x_label {label} ({split})"
            )
    num_items = int(data["item"].num_nodes)
    if max(settings["ks"]) > num_items:
        raise UsageError(
            f"the data has {num_items} items, fewer than the largest cut-off "
            f"{max(settings['ks'])}; lower --ks"
        )
    # recommendations (of the run, or of a grid's configurations) and the
    # curve of this folder's earlier run: gone before the run changes (a
    # run that fails midway leaves none stale), but for the curve that a
    # --resume keeps and redraws when it ends
    out = Path(settings["output"])
    from mde_pyg.train.grid import held_run_files

    continues = settings["resume"] and bool(held_run_files(out))
    if settings["resume"] and not continues:
        print(f"--resume: '{out}' holds no run to continue; training a new "
              f"one there", file=sys.stderr, flush=True)
    # the curve of the run --resume continues stays, and is drawn again
    # with every epoch when training ends (as results.json is written)
    if continues and (out / CURVE_FILE).is_file() \
            and importlib.util.find_spec("matplotlib") is not None:
        settings["plot"] = True
    kept = {out / CURVE_FILE} if continues and settings["plot"] else set()
    for name, made_from in ((RECOMMENDATIONS_FILE, "weights"),
                            (CURVE_FILE, "epochs")):
        for stale in (out / name, *sorted(out.glob(f"run_*/{name}"))):
            if stale.is_file() and stale not in kept:
                again = (f"'mde-pyg recommend {stale.parent}'"
                         if name == RECOMMENDATIONS_FILE else "--plot")
                stale.unlink()
                print(f"removed {stale}, made from the run's earlier "
                      f"{made_from}; {again} makes it again", flush=True)

    def checkpoints() -> dict[Path, tuple[int, int]]:
        # each written atomically: a new file (inode) per epoch
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns)
                for p in (out / "last.pt", *out.glob("run_*/last.pt"))
                if p.is_file()}

    before = checkpoints()
    try:
        result = _train_with_settings(model, data, settings, data_config,
                                      device)
    except KeyboardInterrupt:
        # this run's checkpoints, not an earlier run's that --overwrite
        # has not replaced yet
        if checkpoints().items() - before.items():
            instead = (" in place of --overwrite" if settings["overwrite"]
                       else "")
            raise KeyboardInterrupt(
                f"the checkpoints hold the last finished epoch: rerun the "
                f"same command with --resume{instead} to continue") from None
        raise KeyboardInterrupt("no epoch had finished, so nothing was "
                                "written: rerun the same command") from None
    # after the run (an error is best alone on stderr): for the next one
    if not model_class(model).reads_features and settings["data"] is not None \
            and not settings["no_features"] and not continues:
        print(f"note: {model} reads no item features; --no-features (with "
              f"no --modality) skips reading them", file=sys.stderr,
              flush=True)
    return result


def _train_with_settings(model: str, data: HeteroData,
                         settings: Mapping[str, Any],
                         data_config: dict[str, Any],
                         device: str | None) -> dict[str, Any]:
    """:func:`train_model` with ``mde-pyg train``'s resolved settings."""
    result = train_model(
        model,
        data,
        settings["output"],
        hparams=settings["hparams"],
        grid=settings["grid"],
        resume=settings["resume"],
        overwrite=settings["overwrite"],
        plot=settings["plot"],
        extra_config={"data": data_config},
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        max_epochs=settings["max_epochs"],
        patience=settings["patience"],
        eval_metric=settings["eval_metric"],
        ks=settings["ks"],
        seed=settings["seed"],
        device=device,
        precision=settings["precision"],
        weight_decay=settings["weight_decay"],
        progress=settings["progress"],
    )
    if "params" in result:  # a grid: which configuration won, and where
        from mde_pyg.train.grid import GRID_FILE

        chosen = ", ".join(f"{k}={v}" for k, v in result["params"].items())
        print(f"selected on valid {settings['eval_metric']}: {chosen} "
              f"(run_{result['index']:03d}; every configuration in "
              f"{Path(settings['output']) / GRID_FILE})")
    print(f"best epoch {result['best_epoch']} (counted from 0)")
    print(format_metrics({"valid": result["valid"], "test": result["test"]}))
    print(f"results written to {Path(settings['output']) / RESULTS_FILE}")
    return result


def run_recommend(args: argparse.Namespace) -> Path:
    """Run the ``recommend`` command; return the path written.

    Args:
        args (argparse.Namespace): Parsed ``recommend`` arguments.
    """
    import torch

    from mde_pyg.runs import load_run
    from mde_pyg.train.recommend import iter_recommend

    users = None
    if args.users is not None:
        try:
            # once each, in the order first given
            users = torch.tensor(list(dict.fromkeys(
                int(u) for u in args.users.split(","))))
        except ValueError as error:
            raise UsageError(
                f"--users must be user ids separated by commas, got "
                f"'{args.users}'") from error
    # before the run is loaded: the --output given, then the run
    if args.output is not None:
        check_output_file(args.output)
    if Path(args.run).exists() and not Path(args.run).is_dir():
        raise UsageError(f"RUN '{args.run}' is a file; give the --output "
                         f"folder of an 'mde-pyg train' run")
    output = (Path(args.run) / RECOMMENDATIONS_FILE if args.output is None
              else Path(args.output))
    device = _resolve_device(args.device)
    try:
        model, data = load_run(args.run, data_folder=args.data,
                               device=device)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot load the run '{args.run}': {error}") \
            from error
    if not 1 <= args.k <= model.num_items:
        raise UsageError(f"--k must be in [1, {model.num_items}] (the "
                         f"number of items), got {args.k}")
    if users is not None:
        from mde_pyg.models.base import check_user_ids

        try:
            check_user_ids(users, model.num_users, arg="--users")
        except ValueError as error:
            raise UsageError(str(error)) from error
    count = 0

    def write(f: Any) -> None:  # one batch of users at a time
        nonlocal count
        f.write("userID\trank\titemID\tscore\n")
        for user, item, score in iter_recommend(model, data, users, args.k,
                                                EXCLUDE[args.exclude]):
            count += user.numel()
            for u, items, scores in zip(user.tolist(), item.tolist(),
                                        score.tolist()):
                f.writelines(f"{u}\t{rank}\t{i}\t{s:.6g}\n"
                             for rank, (i, s) in enumerate(
                                 zip(items, scores), start=1) if i >= 0)

    atomic_write(output, write)
    splits = EXCLUDE[args.exclude]
    left_out = f"their {', '.join(splits)} items" if splits else "nothing"
    print(f"top-{args.k} items of {count} user{'s' * (count != 1)} "
          f"(leaving out {left_out}) "
          f"written to {output}")
    return output


def _unknown_arguments(command: argparse.ArgumentParser,
                       unknown: Sequence[str]) -> str:
    """Name the ``unknown`` arguments of ``command``, with the option
    each misspelt one is closest to.
    """
    import difflib

    options = [option for action in command._actions
               for option in action.option_strings if option.startswith("--")]
    hints = []
    for argument in unknown:
        name = argument.split("=", 1)[0]
        if name.startswith("-"):
            close = difflib.get_close_matches(name, options, n=1, cutoff=0.75)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
    return (f"unrecognized arguments: {' '.join(unknown)}"
            + (f" ({'; '.join(hints)})" if hints else ""))


def _usage_error(command: argparse.ArgumentParser, message: str):
    """Exit with status 2 on ``message``, a mistake found after parsing,
    under one usage line (argparse's :meth:`error` prints the command's
    whole usage, some ten lines for ``train``, above it).
    """
    command.exit(2, f"usage: {command.prog} [options]  (all of them: "
                    f"{command.prog} --help)\n"
                    f"{command.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mde-pyg``; return the exit status (0, or 130 when
    interrupted). A usage error prints a usage line and a one-line
    error on stderr and exits with status 2 (:class:`SystemExit`), as
    :mod:`argparse` does.

    Args:
        argv (Sequence[str], optional): Arguments without the program name.
            (default: :obj:`None`: :obj:`sys.argv`)
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse names the top level; the command is known
        command = parser.commands.get(args.command) if args.command else None
        if command is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        _usage_error(command, _unknown_arguments(command, unknown))
    if args.command == "models":
        from mde_pyg.models import available_models

        try:
            print(describe_model(args.name) if args.name is not None
                  else "\n".join(available_models()))
        except UsageError as error:
            _usage_error(parser.commands[args.command], str(error))
        return 0
    if not args.system_malloc:
        from mde_pyg.allocator import tune_cpu_allocator

        tune_cpu_allocator()
    try:
        if args.command == "recommend":
            run_recommend(args)
        else:
            run_train(args)
    except UsageError as error:  # one line on stderr, exit status 2,
        # under the usage of the command that was given
        _usage_error(parser.commands[args.command], str(error))
    except KeyboardInterrupt as interrupt:
        # run_train says what was written; elsewhere nothing was
        print(f"mde-pyg: interrupted; "
              f"{interrupt.args[0] if interrupt.args else 'nothing written'}",
              file=sys.stderr)
        return 130  # the shell's status for SIGINT
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
