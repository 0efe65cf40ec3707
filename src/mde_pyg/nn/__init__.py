"""Layers of mde-pyg: propagation, fusion, trade-off, SAND modules."""

from mde_pyg.nn.conv import (
    EdgeWeightedPropagation,
    LightGCNConv,
    MultiHopPropagation,
    SimpleGraphConv,
)
from mde_pyg.nn.fusion import PreferenceFusion
from mde_pyg.nn.graphs import GraphBuffers
from mde_pyg.nn.sparse import csr_matmul, csr_transpose, to_csr
from mde_pyg.nn.tradeoff import (
    LearnableTradeoff,
    NodeLevelTradeoff,
    preference_gap,
)

__all__ = [
    "LightGCNConv",
    "SimpleGraphConv",
    "MultiHopPropagation",
    "EdgeWeightedPropagation",
    "PreferenceFusion",
    "GraphBuffers",
    "NodeLevelTradeoff",
    "LearnableTradeoff",
    "preference_gap",
    "to_csr",
    "csr_transpose",
    "csr_matmul",
]

from mde_pyg.nn.sand import (  # noqa: E402
    CLUBEstimator,
    GenericUniqueSplit,
    ProjectionHead,
    SeparateAlignDistance,
    split_halves,
)

__all__ += [
    "GenericUniqueSplit",
    "ProjectionHead",
    "CLUBEstimator",
    "SeparateAlignDistance",
    "split_halves",
]
