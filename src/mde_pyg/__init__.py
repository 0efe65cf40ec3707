"""mde-pyg: MDE, SAND and multi-modal recommenders for PyTorch Geometric.

Modules:

* :mod:`mde_pyg.data`: MMRec-layout loaders (``read_mmrec``, the Amazon
  datasets) and the embedded synthetic data, as ``HeteroData``;
* :mod:`mde_pyg.transforms`: the graphs built from the train edges (the
  normalised user-item graph, user co-occurrence, item kNN per modality)
  and feature rescaling;
* :mod:`mde_pyg.nn`: ``MessagePassing`` layers (LightGCN, simple GCN),
  preference fusion, trade-off weights, SAND's modules;
* :mod:`mde_pyg.losses`: BPR, MDA, MSA, SAND's and the baselines' losses;
* :mod:`mde_pyg.models`: MDE, SAND and the baselines (``build_model``);
* :mod:`mde_pyg.train`: negative sampling, ``Trainer``, ``Evaluator``,
  grid search and ``recommend``;
* :mod:`mde_pyg.metrics`: the ranking metrics (Recall, NDCG, ...);
* :mod:`mde_pyg.functional`: row normalisation, grouped edge softmax;
* :mod:`mde_pyg.runs`: ``load_run`` of a trained run folder;
* :mod:`mde_pyg.cli`: the ``mde-pyg`` command.
"""

from mde_pyg.allocator import tune_cpu_allocator

__version__ = "0.1.0"

__all__ = ["__version__", "tune_cpu_allocator"]
