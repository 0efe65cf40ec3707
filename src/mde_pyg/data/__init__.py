"""Loading multi-modal recommendation data into :class:`HeteroData`."""

from mde_pyg.data.datasets import (
    AmazonBaby,
    AmazonClothing,
    AmazonSports,
    MMRecDataset,
)
from mde_pyg.data.mmrec import (
    DEFAULT_MODALITIES,
    RATED_BY,
    RATES,
    check_data,
    modality_features,
    modality_names,
    read_features,
    read_inter,
    read_mmrec,
)
from mde_pyg.data.synthetic import SyntheticMultiModal, make_synthetic

__all__ = [
    "DEFAULT_MODALITIES",
    "RATES",
    "RATED_BY",
    "read_mmrec",
    "read_inter",
    "read_features",
    "check_data",
    "modality_names",
    "modality_features",
    "MMRecDataset",
    "AmazonBaby",
    "AmazonSports",
    "AmazonClothing",
    "SyntheticMultiModal",
    "make_synthetic",
]
