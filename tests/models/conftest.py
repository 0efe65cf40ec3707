"""Fixtures shared by the model tests."""

import pytest

from mde_pyg.data import SyntheticMultiModal
from mde_pyg.transforms import MultiModalGraphs


@pytest.fixture(scope="module")
def data():
    """A small synthetic dataset with every graph built."""
    return SyntheticMultiModal(
        num_users=100, num_items=80, interactions_per_user=10, seed=0,
        pre_transform=MultiModalGraphs(k_user=10, k_item=5))[0]
