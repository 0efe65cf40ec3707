"""Recommenders: MDE, SAND and the baselines of the MDE paper.

Models are registered by name and imported lazily, so that
``build_model("mde", data, ...)`` works from the CLI and a config file while
``import mde_pyg`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch_geometric.data import HeteroData

from mde_pyg.models.base import Recommender

#: Model name -> ``"module:Class"`` inside :mod:`mde_pyg.models`, or a
#: class added by :func:`register_model`.
MODELS: dict[str, str | type[Recommender]] = {
    "mostpop": "mostpop:MostPop",
    "lightgcn": "lightgcn:LightGCN",
    "vbpr": "vbpr:VBPR",
    "mmgcn": "mmgcn:MMGCN",
    "grcn": "grcn:GRCN",
    "dualgnn": "dualgnn:DualGNN",
    "slmrec": "slmrec:SLMRec",
    "lgmrec": "lgmrec:LGMRec",
    "freedom": "freedom:FREEDOM",
    "dragon": "dragon:DRAGON",
    "bm3": "bm3:BM3",
    "sand": "sand:SAND",
    "mde": "mde:MDE",
}


def available_models() -> list[str]:
    """Return the registered model names, in registry order."""
    return list(MODELS)


def model_key(name: str) -> str:
    """Return the registry key of ``name``: registered names are
    case-insensitive; an import path ``"package.module:Class"`` is kept as
    written.
    """
    return name if ":" in name else name.lower()


def register_model(name: str, cls: type[Recommender],
                   overwrite: bool = False) -> None:
    """Register a :class:`Recommender` subclass under ``name``, so that
    :func:`build_model`, ``mde-pyg train --model NAME`` (from Python),
    grid search and :func:`mde_pyg.runs.load_run` find it.

    The name lives in this process only: a run trained under it records
    the name in ``results.json``, so another process (``mde-pyg
    recommend``) must register it again before reloading the run. The
    ``mde-pyg`` command names a model of one's own by its import path
    instead, ``--model mypackage.models:MyRec``, which needs no
    registration and is recorded as written.

    Args:
        name (str): The name (case-insensitive, no ``:``).
        cls (type): The class.
        overwrite (bool, optional): Replace a model already registered
            under ``name``. (default: :obj:`False`)
    """
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise TypeError(f"register_model('{name}', ...) needs a subclass of "
                        f"mde_pyg.models.Recommender, got {cls!r}")
    if not name or ":" in name:
        raise ValueError(f"A model name must be non-empty and hold no ':' "
                         f"(which marks an import path), got '{name}'")
    key = name.lower()
    if key in MODELS and not overwrite and get_model_class(key) is not cls:
        raise ValueError(f"'{key}' is already registered "
                         f"({MODELS[key]}); pass overwrite=True to replace "
                         f"it")
    MODELS[key] = cls


def get_model_class(name: str) -> type[Recommender]:
    """Return the class registered under ``name`` (case-insensitive), or
    the class at the import path ``"package.module:Class"``.
    """
    key = model_key(name)
    if ":" in key:
        module_name, _, class_name = key.partition(":")
        if not module_name or not class_name:
            raise ValueError(f"'{name}' is not an import path; write "
                             f"'package.module:Class'")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"Cannot import the model '{name}': {error}; give "
                f"'package.module:Class' of a module Python can import "
                f"(installed, or its folder on PYTHONPATH: the mde-pyg "
                f"command does not look in the current folder, python -m "
                f"mde_pyg does)") from None
        if not (isinstance(cls, type) and issubclass(cls, Recommender)):
            raise ValueError(f"'{name}' is not a subclass of "
                             f"mde_pyg.models.Recommender")
        return cls
    if key not in MODELS:
        raise ValueError(
            f"Unknown model '{name}'; choose one of {available_models()}, "
            f"or give the import path 'package.module:Class' of your own"
        )
    target = MODELS[key]
    if isinstance(target, type):
        return target
    module_name, class_name = target.split(":")
    module = importlib.import_module(f"mde_pyg.models.{module_name}")
    return getattr(module, class_name)


def build_model(name: str, data: HeteroData, **hparams: Any) -> Recommender:
    """Build model ``name`` for the graphs in ``data``.

    Args:
        name (str): A name from :func:`available_models`.
        data (torch_geometric.data.HeteroData): The dataset, with the graphs
            of :class:`mde_pyg.transforms.MultiModalGraphs` already built.
        **hparams: Keyword arguments of the model's constructor.
    """
    return get_model_class(name).from_data(data, **hparams)


def __getattr__(name: str) -> Any:
    for key, target in MODELS.items():
        if isinstance(target, str) and target.split(":")[1] == name:
            return get_model_class(key)
    raise AttributeError(f"module 'mde_pyg.models' has no attribute '{name}'")


__all__ = [
    "Recommender",
    "MODELS",
    "available_models",
    "get_model_class",
    "model_key",
    "register_model",
    "build_model",
    # the model classes, imported on first use (module __getattr__)
    *(target.split(":")[1] for target in MODELS.values()
      if isinstance(target, str)),
]
