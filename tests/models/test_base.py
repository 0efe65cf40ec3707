"""The helpers of ``mde_pyg.models.base`` that every model uses."""

import pytest
import torch
from device_params import DEVICES

from mde_pyg.models import available_models, build_model
from mde_pyg.models.base import gather_rows, map_rows


def test_gather_rows_equals_indexing_with_gradients():
    torch.manual_seed(0)
    x = torch.randn(10, 3, requires_grad=True)
    a, b = torch.tensor([1, 1, 4]), torch.tensor([9, 1])
    ra, rb = gather_rows(x, a, b)
    assert torch.equal(ra, x[a]) and torch.equal(rb, x[b])
    weights = torch.randn(3, 3), torch.randn(2, 3)
    got = torch.autograd.grad((ra * weights[0]).sum() + (rb * weights[1])
                              .sum(), x)[0]
    want = torch.autograd.grad((x[a] * weights[0]).sum() + (x[b] * weights[1])
                               .sum(), x)[0]
    assert torch.allclose(got, want)
    assert got[1].abs().sum() > 0  # row 1 collects three gradients
    (single,) = gather_rows(x, b)
    assert torch.equal(single, x[b])


@pytest.mark.parametrize("device", DEVICES)
def test_map_rows_equals_mapping_the_gathered_rows(device):
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3).to(device)
    x = torch.randn(10, 5, device=device)
    index = torch.tensor([7, 1, 7, 7, 0, 1], device=device)
    got = map_rows(lin, x, index)
    want = lin(x[index])
    assert torch.allclose(got, want, atol=1e-6)
    out_grad = torch.randn_like(want)
    grads = [torch.autograd.grad((y * out_grad).sum(), list(lin.parameters()))
             for y in (got, want)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_map_rows_under_bf16_autocast_is_bitwise_the_cast_product(device):
    from mde_pyg.models import base
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8).to(device)
    x = torch.randn(400, 32, device=device)
    index = torch.randint(0, 400, (1000,), device=device)
    out_grad = torch.randn(index.numel(), 8, device=device)

    def run(fn, x):
        with torch.autocast(device, dtype=torch.bfloat16):
            y = map_rows(fn, x, index)
        grads = torch.autograd.grad((y.float() * out_grad).sum(),
                                    list(lin.parameters()))
        return y, grads

    # a function that is not an nn.Linear gathers the float32 rows, and
    # autocast casts them inside the product
    got, got_grads = run(lin, x)
    want, want_grads = run(lambda rows: lin(rows), x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.equal(got, want)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b)
    # the copy is kept for the next step, and remade after x changes
    copy = base._BF16_COPIES[id(x)][1]
    assert torch.equal(copy, x.to(torch.bfloat16))
    run(lin, x)
    assert base._BF16_COPIES[id(x)][1] is copy
    x.mul_(2)
    assert torch.equal(run(lin, x)[0], run(lambda rows: lin(rows), x)[0])
    key = id(x)
    del x
    assert key not in base._BF16_COPIES  # freed with x


@pytest.mark.parametrize("num_index", [1000, 40])
def test_map_rows_pads_row_counts_under_bf16_autocast(num_index):
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8)
    x = torch.randn(400, 32)
    index = torch.randint(0, 400, (num_index,))
    seen = []

    def fn(rows):
        seen.append(rows.size(0))
        return lin(rows)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = map_rows(fn, x, index)
        want = lin(x[index])
    # distinct rows rounded up to a multiple of 128, or the batch itself
    # where that is no fewer rows
    distinct = torch.unique(index).numel()
    padded = -(-distinct // 128) * 128
    assert seen == [padded if padded < num_index else num_index]
    assert torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2)
    out_grad = torch.randn_like(want.float())
    grads = [torch.autograd.grad((y.float() * out_grad).sum(), lin.weight)[0]
             for y in (got, want)]
    # to bfloat16's precision at the gradient's scale
    assert (grads[0] - grads[1]).abs().max() < 2e-2 * grads[1].abs().max()
    # outside autocast the distinct rows are mapped as they are
    seen.clear()
    map_rows(fn, x, index)
    assert seen == [distinct]


def test_map_rows_keeps_no_copy_outside_bf16_autocast_or_linear():
    from mde_pyg.models import base
    x = torch.randn(6, 4)
    lin = torch.nn.Linear(4, 2)
    index = torch.tensor([1, 1, 5])
    map_rows(lin, x, index)  # fp32: no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = map_rows(torch.tanh, x, index)  # not a Linear
    assert torch.equal(got, torch.tanh(x[index]))
    assert id(x) not in base._BF16_COPIES


@pytest.mark.parametrize("name, hparams, message", [
    ("mde", {"tau": 0.0}, "'tau' must be > 0, got 0.0"),
    ("mde", {"embedding_dim": 0}, "'embedding_dim' must be >= 1, got 0"),
    ("mde", {"embedding_dim": 2.5}, "'embedding_dim' must be an integer"),
    ("lightgcn", {"num_layers": -1}, "'num_layers' must be >= 0, got -1"),
    ("sand", {"reg_weight": -1e-4}, "'reg_weight' must be >= 0"),
    ("slmrec", {"ssl_temp": 0}, "'ssl_temp' must be > 0"),
    ("freedom", {"fused": "yes"}, "'fused' must be True or False"),
    ("vbpr", {"reg_weight": True}, "'reg_weight' must be a number"),
])
def test_build_model_names_the_bad_hyper_parameter(data, name, hparams,
                                                   message):
    from mde_pyg.models import build_model

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build_model(name, data, **hparams)


def test_check_hparams_accepts_numpy_numbers_and_bounds(data):
    import numpy as np

    from mde_pyg.models import build_model

    model = build_model("lightgcn", data, embedding_dim=np.int64(8),
                        num_layers=0, reg_weight=np.float32(0.0))
    assert model.embedding.weight.shape == (100 + 80, 8)
    assert model.num_layers == 0


def test_from_data_keeps_every_hyper_parameter_as_plain_values(data):
    import numpy as np

    from mde_pyg.models import build_model
    from mde_pyg.models.base import plain_values

    model = build_model("lightgcn", data, embedding_dim=np.int64(8))
    assert model.hparams == {"embedding_dim": 8, "num_layers": 3,
                             "reg_weight": 1e-4, "fused": True}
    assert type(model.hparams["embedding_dim"]) is int
    assert plain_values({"w": (np.float32(0.5), None), 1: {"b": np.bool_(1)},
                         "f": len}) == {"w": [0.5, None], "1": {"b": True},
                                        "f": repr(len)}


@pytest.mark.parametrize("name", [m for m in available_models()
                                  if m != "mostpop"])
def test_every_loss_refuses_an_empty_batch(name, data):
    # a loss over no rows would be NaN (and backward would spread it to
    # every weight): each model says so instead of failing on a shape
    model = build_model(name, data)
    empty = torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="is an empty batch"):
        model.loss(empty, empty, empty)


@pytest.mark.parametrize("name", [m for m in available_models()
                                  if m != "mostpop"])
def test_every_model_keeps_its_dtype(name, data):
    # model.double() computes in float64 (the CSR products too), and
    # model.half() / .bfloat16() run (the sparse products in float32) and
    # give embeddings of their dtype, near the float32 ones
    def embeddings(dtype):
        torch.manual_seed(0)  # the same weights, then cast
        model = build_model(name, data).eval().to(dtype)
        with torch.no_grad():
            return torch.cat(model.get_embedding())

    want = embeddings(torch.float32).double()
    # relative errors measured on this data: float64 1e-7 (float32's own
    # rounding), bf16 1.3 and fp16 1.4 of their unit roundoff at most
    # (LGMRec; the weights' cast alone is about 0.6): bounds of 2.5 and 3
    # roundoffs, not the 25 and 40 they were
    for dtype, tol in [(torch.float64, 1e-6), (torch.bfloat16, 2.5 * 2**-8),
                       (torch.float16, 3 * 2**-11)]:
        got = embeddings(dtype)
        assert got.dtype == dtype
        err = (got.double() - want).norm() / want.norm()
        assert err < tol, (dtype, float(err))
        # in training too, after an epoch's re-sampled graphs (FREEDOM's
        # pruned graph, DualGNN's padding)
        model = build_model(name, data).to(dtype).train()
        model.on_epoch_start(1)
        with torch.no_grad():
            assert all(e.dtype == dtype for e in model.get_embedding())


def test_check_hparams_reads_the_annotation():
    # "dropout: float = 0" takes 0.1 (the default's type said integer)
    from mde_pyg.models.base import Recommender

    class Custom(Recommender):
        def __init__(self, data, dropout: float = 0, depth: int = 2):
            super().__init__(1, 1)

    Custom.check_hparams({"dropout": 0.1})
    with pytest.raises(ValueError, match="'depth' must be an integer"):
        Custom.check_hparams({"depth": 2.5})


@pytest.mark.parametrize("name", ["vbpr", "mde", "freedom"])
def test_features_that_require_grad_stay_out_of_autograd(data, name):
    data = data.clone()
    x = data["item"].x_text.requires_grad_()
    model = build_model(name, data)
    assert not any(b.requires_grad for b in model.buffers())
    if name == "mde":
        assert model.x_text.data_ptr() == x.data_ptr()  # not a copy
    user = torch.tensor([0, 1])
    loss, _ = model.loss(user, torch.tensor([0, 1]), torch.tensor([2, 3]))
    loss.backward()
    assert x.grad is None


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", [m for m in available_models()
                                  if m != "mostpop"])
def test_a_training_step_never_waits_for_the_gpu(name, data):
    # a step that copies a value between host and GPU (.item(), a tensor
    # from a Python scalar, nonzero, unique, a mask index) stops the CPU
    # from queueing the next kernels, every step; per epoch is fine
    torch.manual_seed(0)
    model = build_model(name, data).cuda().train()
    model.on_epoch_start(1)  # the epoch's draws (pruned graphs, padding)
    gen = torch.Generator(device="cuda").manual_seed(0)
    user, pos, neg = (torch.randint(n, (64,), device="cuda", generator=gen)
                      for n in (model.num_users, model.num_items,
                                model.num_items))

    def step():
        if hasattr(model, "estimator_step"):  # SAND's CLUB estimators
            out = model.estimator_step(user, pos, neg)
            (out if isinstance(out, torch.Tensor) else out["loss"]).backward()
        model.loss(user, pos, neg)[0].backward()

    step()  # the first step may fill caches (transposes, bf16 copies)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
