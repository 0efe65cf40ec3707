"""Negative sampling, evaluation, training, grid search, recommendation."""

from mde_pyg.train.evaluator import Evaluator
from mde_pyg.train.grid import (
    GridConfigError,
    best_index,
    check_grid,
    grid_search,
)
from mde_pyg.train.recommend import iter_recommend, recommend
from mde_pyg.train.sampler import NegativeSampler
from mde_pyg.train.trainer import (
    CheckpointError,
    ResumeMismatchError,
    RunExistsError,
    Trainer,
    check_trainer_args,
    load_checkpoint,
    seed_everything,
)

__all__ = [
    "NegativeSampler",
    "Evaluator",
    "Trainer",
    "ResumeMismatchError",
    "CheckpointError",
    "RunExistsError",
    "GridConfigError",
    "best_index",
    "check_grid",
    "check_trainer_args",
    "grid_search",
    "iter_recommend",
    "load_checkpoint",
    "recommend",
    "seed_everything",
]
