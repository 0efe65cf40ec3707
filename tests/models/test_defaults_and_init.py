"""Initialisation and documented defaults of the baselines: the values
``mde-pyg train`` and ``benchmarks/accuracy.py`` train with."""

import math

import torch

from mde_pyg.models.bm3 import BM3
from mde_pyg.models.lightgcn import LightGCN
from mde_pyg.models.sand import SAND
from mde_pyg.models.slmrec import SLMRec
from mde_pyg.models.vbpr import VBPR


def assert_xavier_uniform(w, tol=0.25):
    """|w| <= b and var(w) ~ b^2 / 3, b = sqrt(6 / (fan_in + fan_out))."""
    fan_out, fan_in = w.shape
    b = math.sqrt(6.0 / (fan_in + fan_out))
    assert w.abs().max().item() <= b + 1e-7
    assert abs(w.var().item() / (b * b / 3) - 1) < tol


def test_lightgcn_and_vbpr_initialisation(data):
    # METHOD.md §1 / §III-A and the docstrings: Xavier embeddings, VBPR's
    # content map Xavier-normal with a zero bias
    torch.manual_seed(0)
    assert_xavier_uniform(LightGCN(data, embedding_dim=64).embedding.weight)
    model = VBPR(data, embedding_dim=32)
    assert_xavier_uniform(model.user)
    assert_xavier_uniform(model.item)
    w = model.item_linear.weight  # xavier_normal_
    std = math.sqrt(2.0 / sum(w.shape))
    assert abs(w.std().item() / std - 1) < 0.1
    assert torch.equal(model.item_linear.bias,
                       torch.zeros_like(model.item_linear.bias))


def test_slmrec_keeps_pytorch_default_biases(data):
    # its docstring: Xavier weights and, as MMRec, PyTorch's default bias
    # initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not zeros
    torch.manual_seed(0)
    model = SLMRec(data, embedding_dim=16)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    for lin in linears:
        bound = 1 / math.sqrt(lin.in_features)
        assert lin.bias.abs().max().item() <= bound + 1e-7
        assert lin.bias.abs().max().item() > 0.1 * bound
        assert_xavier_uniform(lin.weight, tol=0.6)


def test_baseline_defaults_are_the_documented_ones(data):
    # the docstrings' defaults; SAND's from METHOD.md §2 (head Linear(-> 32),
    # hidden 64, alpha 0.012, ureg 0.006) and the authors' CLUB hidden 16,
    # halved inside their estimator
    assert VBPR(data).reg_weight == 1e-4
    bm3 = BM3(data)
    assert (bm3.num_layers, bm3.dropout, bm3.reg_weight, bm3.cl_weight,
            bm3.reg_scope) == (1, 0.3, 0.1, 2.0, "all")
    slm = SLMRec(data)
    assert (slm.num_layers, slm.ssl_task, slm.ssl_alpha, slm.ssl_temp,
            slm.temperature, slm.dropout, slm.fusion, slm.reg_weight) == (
        3, "FAC", 0.1, 0.2, 0.2, 0.3, "concat", 0.0)
    sand = SAND(data).sand
    assert (sand.alpha, sand.ureg, sand.distance) == (0.012, 0.006, "club")
    for m in ("image", "text"):
        head = sand.heads[m]
        assert (head.hidden_dim, head.out_dim) == (64, 32)
        assert sand.generic_map[m].out_features == 32
        assert sand.unique_map[m].out_features == 32
        assert sand.estimator(m).hidden_dim == 8
    assert list(sand.estimators) == ["shared"]
