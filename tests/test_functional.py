"""The fused functional forms against their PyTorch definitions."""

import torch
import torch.nn.functional as F

from mde_pyg.functional import normalize


def test_normalize_equals_torch_with_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    x[3] = 0.0  # a clamped row: gradient g / eps
    x[7] *= 1e-14  # below eps, not zero
    g = torch.randn(50, 8, generator=gen, dtype=torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    out = normalize(a)
    expected = F.normalize(b, dim=-1)
    torch.testing.assert_close(out, expected)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(a.grad, b.grad)
    # the closed form by hand on an unclamped row
    y = x[0] / x[0].norm()
    by_hand = (g[0] - y * (g[0] @ y)) / x[0].norm()
    torch.testing.assert_close(a.grad[0], by_hand)


def test_normalize_gradcheck_and_batched_rows():
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(normalize, (x,))
    torch.testing.assert_close(normalize(x), F.normalize(x, dim=-1))


def test_normalize_keeps_dtypes_under_autocast():
    x = torch.randn(16, 8, dtype=torch.bfloat16, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = normalize(x)
        expected = F.normalize(y, dim=-1)
    assert out.dtype == expected.dtype
    torch.testing.assert_close(out, expected)
    out.float().sum().backward()
    expected.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(x.grad, y.grad, atol=2e-2, rtol=2e-2)


def test_normalize_refuses_a_double_backward():
    import pytest

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(normalize(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
