"""The helpers of ``mde_pyg.models.base`` that every model uses."""

import pytest
import torch

from mde_pyg.models.base import gather_rows, map_rows

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
