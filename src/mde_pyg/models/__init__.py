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

#: Model name -> ``"module:Class"`` inside :mod:`mde_pyg.models`.
MODELS: dict[str, str] = {
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


def get_model_class(name: str) -> type[Recommender]:
    """Return the class registered under ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in MODELS:
        raise ValueError(
            f"Unknown model '{name}'; choose one of {available_models()}"
        )
    module_name, class_name = MODELS[key].split(":")
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
        if target.split(":")[1] == name:
            return get_model_class(key)
    raise AttributeError(f"module 'mde_pyg.models' has no attribute '{name}'")


__all__ = [
    "Recommender",
    "MODELS",
    "available_models",
    "get_model_class",
    "build_model",
]
