"""Trained multi-modal models against the popularity floor, on the embedded
synthetic data the README's first command trains on."""

import pytest
import torch
from torch_geometric.transforms import Compose

from mde_pyg.data import SyntheticMultiModal
from mde_pyg.models import get_model_class
from mde_pyg.train import Trainer
from mde_pyg.transforms import MultiModalGraphs, NormalizeFeatures


@pytest.fixture(scope="module")
def synthetic():
    transform = Compose([MultiModalGraphs(), NormalizeFeatures("standardize")])
    return SyntheticMultiModal(seed=0, pre_transform=transform)[0]


@pytest.fixture(scope="module")
def fitted(synthetic):
    """``fitted(name, max_epochs)``: a seed-0 run, trained once per module."""
    results = {}

    def get(name, max_epochs):
        if (name, max_epochs) not in results:
            results[name, max_epochs] = fit(name, synthetic, max_epochs)
        return results[name, max_epochs]

    return get


def fit(name, data, max_epochs):
    torch.manual_seed(0)
    model = get_model_class(name).from_data(data)
    return Trainer(model, data, max_epochs=max_epochs, seed=0,
                   progress=False).fit()


@pytest.mark.parametrize("name", ["mde", "dragon", "sand"])
def test_beats_popularity(fitted, name):
    # The synthetic users' interactions follow their per-modality item
    # tastes, which popularity ignores: MostPop reaches test Recall@20
    # 0.140 here, MDE 0.248, DRAGON 0.293 and SAND 0.250 after 12 epochs
    # (seed 0), so a trained model that stops learning from the graphs or
    # the features falls below 1.4x the floor.
    floor = fitted("mostpop", 1)
    result = fitted(name, 12)
    for split in ("valid", "test"):
        assert result[split]["recall@20"] > 1.4 * floor[split]["recall@20"]
        assert result[split]["ndcg@20"] > 1.4 * floor[split]["ndcg@20"]


def test_mde_beats_the_id_only_lightgcn(fitted):
    # The taste lies in the features: in the same 12 epochs LightGCN, which
    # sees only the interactions, stays at the popularity floor (test
    # Recall@20 0.137, seed 0) while MDE reaches 0.248. MDE's own figure
    # is kept within a margin of about two seed spreads.
    mde, lightgcn = fitted("mde", 12), fitted("lightgcn", 12)
    for split in ("valid", "test"):
        assert mde[split]["recall@20"] > 1.4 * lightgcn[split]["recall@20"]
    assert mde["test"]["recall@20"] > 0.22
