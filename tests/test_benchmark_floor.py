"""The floor of ``benchmarks/speed.py`` records the products of a step."""

import os.path as osp
import sys

import pytest
import torch

from mde_pyg.data import SyntheticMultiModal
from mde_pyg.models import build_model
from mde_pyg.train import Trainer
from mde_pyg.transforms import MultiModalGraphs

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)),
                            "benchmarks"))
speed = pytest.importorskip("speed")


@pytest.fixture(scope="module")
def data():
    return SyntheticMultiModal(
        num_users=60, num_items=50, interactions_per_user=8, seed=0,
        pre_transform=MultiModalGraphs(k_user=5, k_item=4))[0]


def test_lightgcn_records_its_hops(data):
    model = build_model("lightgcn", data, embedding_dim=8, num_layers=3)
    trainer = Trainer(model, data, progress=False)
    recorder = speed.record_products(model, trainer, batch_size=32)
    assert recorder.linears == []
    assert len(recorder.products) == 3  # one product per hop
    for adj, adj_t, x, grad in recorder.products:
        assert adj.shape == (110, 110) and adj_t is adj  # symmetric graph
        assert x.shape == (110, 8) and grad
    assert "3 sparse: 110x110" in recorder.describe()
    assert recorder.replay(torch.device("cpu"), "fp32", repeat=1) > 0
    assert all(p.grad is None for p in model.parameters())


def test_sand_records_one_split_per_step(data):
    model = build_model("sand", data, embedding_dim=8)
    trainer = Trainer(model, data, progress=False)
    recorder = speed.record_products(model, trainer, batch_size=32)
    split = model.sand.splitter.linear
    calls = [(x.shape, grad) for m, x, grad in recorder.linears
             if m is split["image"]]
    # estimator step and loss share one split of all items, with gradients
    assert calls == [((50, data["item"].x_image.size(1)), True)]
    # the user-item graph: 2 hops per modality; the item graph: once
    sizes = [adj.size(0) for adj, *_ in recorder.products]
    assert sizes.count(110) == 4 and sizes.count(50) == 1


def test_grcn_records_its_learnt_weight_products(data, monkeypatch):
    model = build_model("grcn", data, embedding_dim=8, latent_dim=8,
                        num_layers=2, num_routing=1)
    trainer = Trainer(model, data, progress=False)
    recorder = speed.record_products(model, trainer, batch_size=32)
    kinds = [(kind, graph.shape) for kind, graph, *_ in recorder.weighted]
    # per modality: routing (dot + product), final scores (dot), one layer
    # over the scores; then 2 ID layers over the refined graph
    per_modality = [("dot", (50, 60)), ("matmul", (50, 60)),
                    ("dot", (50, 60)), ("matmul", (110, 110))]
    assert kinds == per_modality * 2 + [("matmul", (110, 110))] * 2
    assert all(grad for *_, grad in recorder.weighted)
    assert "(learnt weights)" in recorder.describe()

    # the replay runs each recorded product once per pass (one pass draws
    # the output gradients, then a warm-up and `repeat` timed passes) and
    # back-propagates into both of its inputs
    from mde_pyg.nn import sparse
    counts = {"matmul": 0, "dot": 0}

    def counting(kind, fn):
        def wrapper(*args):
            counts[kind] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(sparse, "weighted_csr_matmul", counting(
        "matmul", sparse.weighted_csr_matmul))
    monkeypatch.setattr(sparse, "csr_edge_dot", counting(
        "dot", sparse.csr_edge_dot))
    assert recorder.replay(torch.device("cpu"), "fp32", repeat=2) > 0
    passes = 1 + 1 + 2
    assert counts == {"matmul": 6 * passes, "dot": 4 * passes}
    for *_, a, b, _ in recorder.weighted:
        assert a.grad is not None and a.grad.shape == a.shape
        assert b.grad is not None and b.grad.shape == b.shape
    assert all(p.grad is None for p in model.parameters())
