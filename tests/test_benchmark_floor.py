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
    assert recorder.linears == [] and recorder.products == []
    # the three hops, fused, as the model computes them
    ((adj, adj_t, x, num_layers, reduce, grad),) = recorder.hops
    assert adj.shape == (110, 110) and adj_t is adj  # symmetric graph
    assert x.shape == (110, 8) and grad
    assert (num_layers, reduce) == (3, "mean")
    torch.testing.assert_close(x, model.embedding.weight)
    assert "3 sparse: 110x110" in recorder.describe()
    assert "(hop 3/3, mean)" in recorder.describe()

    # the replay runs them on the recorded input and back-propagates
    from mde_pyg.nn import sparse
    outputs = []
    hops = sparse.csr_hops

    def keeping(*args):
        outputs.append(hops(*args))
        return outputs[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sparse, "csr_hops", keeping)
        assert recorder.replay(torch.device("cpu"), "fp32", repeat=1) > 0
    dense = adj.to_dense()
    expected = sum(torch.linalg.matrix_power(dense, k) @ x.detach()
                   for k in range(4)) / 4
    assert len(outputs) == 3  # draw, warm-up, one timed pass
    torch.testing.assert_close(outputs[0], expected)
    assert x.grad is not None and x.grad.shape == x.shape
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
    sizes += [adj.size(0) for adj, _, _, num_layers, *_ in recorder.hops
              for _ in range(num_layers)]
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
    # under --precision bf16 the replay autocasts as the step did; the
    # weighted products still run (in float32) and back-propagate
    counts.update(matmul=0, dot=0)
    assert recorder.replay(torch.device("cpu"), "bf16", repeat=1) > 0
    assert counts == {"matmul": 6 * 3, "dot": 4 * 3}


def test_lgmrec_records_its_products_outside_the_floor(data, monkeypatch):
    model = build_model("lgmrec", data, embedding_dim=8)
    trainer = Trainer(model, data, progress=False)
    recorder = speed.record_products(model, trainer, batch_size=32)

    def inputs(kind, args):  # logsumexp: (a, b, bound, columns); mm: (f, args)
        return list(args[:2] if kind == "logsumexp" else args[1])

    shapes = [(kind, [tuple(t.shape) for t in inputs(kind, args)])
              for kind, args, _ in recorder.others]
    # per modality the hypergraph: H_I^T X, H_I (H_I^T X), H_U (H_I^T X)
    hyper = [("mm", [(4, 50), (50, 8)]), ("mm", [(50, 4), (4, 8)]),
             ("mm", [(60, 4), (4, 8)])]
    # one modality pair: the batch's users against all 60 users, its
    # items against all 50 items, without the [32, N] logits kept
    contrastive = [("logsumexp", [(32, 8), (60, 8)]),
                   ("logsumexp", [(32, 8), (50, 8)])]
    assert shapes == hyper * 2 + contrastive
    assert all(grad for *_, grad in recorder.others)
    assert "(logsumexp of rows)" in recorder.describe()

    # each replayed logsumexp is the one the loss computed: that of the
    # recorded product's rows
    from mde_pyg import losses
    outputs = []
    apply = losses._BoundedLogSumExp.apply

    def keeping(*args):
        out = apply(*args)
        outputs.append((args, out))
        return out

    monkeypatch.setattr(losses._BoundedLogSumExp, "apply", keeping)
    assert recorder.replay(torch.device("cpu"), "fp32", repeat=1,
                           part="other") > 0
    assert len(outputs) == 2 * 3  # draw, warm-up, one timed pass
    for (a, b, _, columns), (row, _) in outputs[:2]:
        assert not columns
        torch.testing.assert_close(row, (a @ b.t()).logsumexp(dim=1))
    for kind, args, _ in recorder.others:
        for t in inputs(kind, args):
            assert t.grad is not None and t.grad.shape == t.shape
    # the floor leaves them out
    hops = [(adj.size(0), x.size(1), num_layers, reduce)
            for adj, _, x, num_layers, reduce, _ in recorder.hops]
    # over the user-item graph: the ID embeddings (2 hops, mean), then the
    # two modalities' features side by side (2 hops, last)
    assert hops == [(110, 8, 2, "mean"), (110, 16, 2, "last")]
    # and the user-item aggregation of the item features (one product)
    assert [adj.shape for adj, *_ in recorder.products] == [(60, 50)]
    assert len(recorder.linears) == 2 and not recorder.weighted


def test_dense_product_mode_records_keyword_arguments():
    # a recorded product replays to the value the step computed, keyword
    # arguments included; out= buffers, sparse operands and the products
    # inside a recorded loss are not recorded
    gen = torch.Generator().manual_seed(0)
    c, a, b = (torch.randn(*shape, generator=gen)
               for shape in ((3, 2), (3, 4), (4, 2)))
    a.requires_grad_()
    records, inside = [], []
    with speed._dense_product_mode(records, inside):
        got = torch.addmm(c, a, b, beta=0.5, alpha=2.0)
        torch.mm(a.detach(), b, out=torch.empty(3, 2))
        torch.mm(a.detach().to_sparse(), b)
        inside.append(True)
        torch.mm(a, b)
    assert [kind for kind, *_ in records] == ["mm"]
    kind, (func, args, kwargs), grad = records[0]
    assert grad and kwargs == {"beta": 0.5, "alpha": 2.0}
    torch.testing.assert_close(func(*args, **kwargs), 0.5 * c + 2.0 * a @ b)
    torch.testing.assert_close(got, 0.5 * c + 2.0 * a @ b)
    assert args[1] is not a and args[1].requires_grad  # a detached leaf


def test_paired_floors_take_the_faster_neighbour():
    # (floor, other) replays before epoch 1, between 1 and 2, after 2; a
    # slow spell during the middle replay inflates neither epoch's floor
    replays = [(2.0, 0.5), (3.0, 0.4), (2.2, 0.6)]
    floors, others = speed.paired_floors(replays)
    assert floors == [2.0, 2.2]
    assert others == [0.4, 0.4]
    with pytest.raises(ValueError, match="before and after each epoch"):
        speed.paired_floors([(1.0, 0.0)])


def test_mean_ratio_pairs_each_epoch_with_its_floor():
    # (3 / 2 + 4 / 2.5) / 2, not the ratio of the means (3.5 / 2.25)
    assert speed.mean_ratio([3.0, 4.0], [2.0, 2.5]) == pytest.approx(1.55)
    assert speed.mean_ratio([3.0], [0.0]) is None  # no floor (MostPop)
    assert speed.mean_ratio([], []) is None


def test_speed_rejects_zero_epochs():
    import subprocess

    script = osp.join(osp.dirname(speed.__file__), "speed.py")
    result = subprocess.run([sys.executable, script, "--epochs", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--epochs and --batch-size must be >= 1, got 0" in result.stderr
