import pytest
import torch
from device_params import DEVICES

from mde_pyg.nn import (
    EdgeWeightedPropagation,
    LightGCNConv,
    MultiHopPropagation,
    SimpleGraphConv,
    csr_matmul,
    to_csr,
)
from mde_pyg.typing import WITH_TORCH_SPARSE, SparseTensor


def random_graph(num_nodes=12, num_edges=40, symmetric=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    edge_index = torch.unique(edge_index, dim=1)
    weight = torch.rand(edge_index.size(1), generator=gen)
    if symmetric:
        edge_index = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        weight = torch.cat([weight, weight])
    return edge_index, weight


def dense(edge_index, weight, n):
    # out = A x with A[target, source] = w.
    adj = torch.zeros(n, n)
    adj.index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    return adj


def value_and_grad(conv, x, *graph):
    x = x.clone().requires_grad_()
    out = conv(x, *graph)
    (grad,) = torch.autograd.grad((out * torch.arange(
        out.numel(), device=x.device).view_as(out).sin()).sum(), x)
    return out.detach(), grad


NEEDS_TORCH_SPARSE = pytest.mark.skipif(
    not WITH_TORCH_SPARSE, reason="torch-sparse is not installed: the "
    "SparseTensor path is not checked")
PATH_CASES = [(LightGCNConv, True), (LightGCNConv, False),
              (SimpleGraphConv, False)]


def path_case(device, cls, symmetric):
    """A layer, its input, its graph and the dense reference output."""
    n = 12
    edge_index, weight = random_graph(n, symmetric=symmetric)
    conv = cls(symmetric=symmetric) if cls is LightGCNConv else cls()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=gen).to(device)
    edge_index, weight = edge_index.to(device), weight.to(device)
    ref = dense(edge_index.cpu(), weight.cpu(), n).to(device)
    expected = ref @ x + (x if cls is SimpleGraphConv else 0)
    return conv, x, edge_index, weight, expected


def as_graph(kind, edge_index, weight, n):
    """The graph in the form a layer takes: ``(edge_index, edge_weight)``,
    a torch CSR matrix, or a :class:`torch_sparse.SparseTensor` adj_t."""
    if kind == "edge_index":
        return edge_index, weight
    if kind == "csr":
        return (to_csr(edge_index, weight, (n, n)),)
    return (SparseTensor(row=edge_index[1], col=edge_index[0], value=weight,
                         sparse_sizes=(n, n)),)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls, symmetric", PATH_CASES)
@pytest.mark.parametrize("kind", [
    "csr", pytest.param("sparse_tensor", marks=NEEDS_TORCH_SPARSE)])
def test_paths_agree_with_dense(device, cls, symmetric, kind):
    conv, x, edge_index, weight, expected = path_case(device, cls, symmetric)
    n = x.size(0)
    out_e, grad_e = value_and_grad(conv, x, edge_index, weight)
    out, grad = value_and_grad(conv, x, *as_graph(kind, edge_index, weight,
                                                  n))
    assert torch.allclose(out_e, expected, atol=1e-5)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(grad, grad_e, atol=1e-5)


def test_symmetric_reuse_gradient_matches_torch():
    edge_index, weight = random_graph(15, symmetric=True, seed=1)
    adj = to_csr(edge_index, weight, (15, 15))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(15, 3, generator=gen, requires_grad=True)
    (g_fast,) = torch.autograd.grad(csr_matmul(adj, x, adj).pow(2).sum(), x)
    (g_ref,) = torch.autograd.grad(
        (dense(edge_index, weight, 15) @ x).pow(2).sum(), x)
    assert torch.allclose(g_fast, g_ref, atol=1e-5)


def test_transpose_cache_per_graph():
    conv = SimpleGraphConv()
    graphs = [to_csr(*random_graph(10, seed=s), (10, 10)) for s in (2, 3)]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(10, 4, generator=gen, requires_grad=True)
    for adj in graphs * 2:
        conv(x, adj).sum().backward()
    assert len(conv._transposed) == 2


def test_multi_hop_mean_and_sum():
    n = 8
    edge_index, weight = random_graph(n, symmetric=True, seed=4)
    a = dense(edge_index, weight, n)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(n, 3, generator=gen)
    hops = [x, a @ x, a @ a @ x]
    mean = MultiHopPropagation(2, "mean")(x, to_csr(edge_index, weight,
                                                    (n, n)))
    assert torch.allclose(mean, sum(hops) / 3, atol=1e-5)
    total = MultiHopPropagation(2, "sum")(x, edge_index, weight)
    assert torch.allclose(total, sum(hops), atol=1e-5)
    last = MultiHopPropagation(2, "last")(x, edge_index, weight)
    assert torch.allclose(last, hops[2], atol=1e-5)
    assert str(MultiHopPropagation()) == \
        "MultiHopPropagation(num_layers=2, reduce='mean')"
    with pytest.raises(ValueError, match="'reduce'"):
        MultiHopPropagation(2, "max")


def test_simple_conv_without_residual():
    edge_index, weight = random_graph(6, seed=5)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 2, generator=gen)
    out = SimpleGraphConv(residual=False)(x, edge_index, weight)
    assert torch.allclose(out, dense(edge_index, weight, 6) @ x, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_edge_weighted_propagation_gradients(device):
    gen = torch.Generator().manual_seed(0)
    # An unsorted bipartite graph: 5 sources -> 3 targets.
    edge_index = torch.tensor([[4, 0, 2, 1, 0, 3, 2],
                               [0, 2, 1, 0, 1, 2, 2]])
    fused = EdgeWeightedPropagation(edge_index, (5, 3)).to(device)
    plain = EdgeWeightedPropagation(edge_index, (5, 3), fused=False).to(device)
    assert fused.order is not None
    x = torch.randn(5, 4, generator=gen, dtype=torch.double,
                    requires_grad=True)
    y = torch.randn(3, 4, generator=gen, dtype=torch.double,
                    requires_grad=True)
    w = torch.randn(7, generator=gen, dtype=torch.double,
                    requires_grad=True)
    x, y, w = (t.detach().to(device).requires_grad_() for t in (x, y, w))
    edge_index = edge_index.to(device)
    dense = torch.zeros(3, 5, dtype=torch.double, device=device)
    dense[edge_index[1], edge_index[0]] = w.detach()
    assert torch.allclose(fused(x, w), dense @ x)
    assert torch.allclose(fused(x, w), plain(x, w))
    dots = (x[edge_index[0]] * y[edge_index[1]]).sum(-1)
    assert torch.allclose(fused.edge_dot(x, y), dots)
    assert torch.allclose(plain.edge_dot(x, y), dots)
    assert torch.autograd.gradcheck(fused, (x, w))
    assert torch.autograd.gradcheck(fused.edge_dot, (x, y))
    assert "size=(5, 3), fused=True" in repr(fused)


def test_weighted_products_under_bf16_autocast():
    # Called directly under autocast with bf16 rows, the weighted product
    # and the edge dot run in float32 (the CPU sparse kernels have no
    # bf16 form) and return bf16 gradients.
    from mde_pyg.nn.sparse import csr_edge_dot, weighted_csr_matmul

    gen = torch.Generator().manual_seed(1)
    edge_index = torch.tensor([[4, 0, 2, 1, 0, 3, 2],
                               [0, 2, 1, 0, 1, 2, 2]])
    graph = EdgeWeightedPropagation(edge_index, (5, 3))
    x = torch.randn(5, 4, generator=gen).bfloat16().requires_grad_()
    y = torch.randn(3, 4, generator=gen).bfloat16().requires_grad_()
    w = torch.randn(7, generator=gen, requires_grad=True)
    w_csr = w.index_select(0, graph.order)  # values in CSR order
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = weighted_csr_matmul(graph, w_csr, x)
        dots = csr_edge_dot(graph, x, y)
    assert out.dtype == dots.dtype == torch.float32
    dense = torch.zeros(3, 5)
    dense[edge_index[1], edge_index[0]] = w.detach()
    xf, yf = x.detach().float(), y.detach().float()
    torch.testing.assert_close(out, dense @ xf)
    torch.testing.assert_close(dots, (xf[edge_index[0]] * yf[edge_index[1]])
                               .sum(-1)[graph.order])
    (out.sum() + dots.sum()).backward()
    assert x.grad.dtype == y.grad.dtype == torch.bfloat16
    assert w.grad.dtype == torch.float32
    # d/dw_e of sum(A(w) x) is the row sum of x at the edge's source
    torch.testing.assert_close(w.grad, xf.sum(-1)[edge_index[0]])


def test_multi_hop_dropout_drops_each_hop():
    torch.manual_seed(0)
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    weight = torch.rand(6)
    x = torch.randn(4, 50)
    prop = MultiHopPropagation(num_layers=2, reduce="mean")
    conv = LightGCNConv()
    torch.manual_seed(1)
    got = prop(x, edge_index, weight, dropout=0.3)
    torch.manual_seed(1)
    h = total = x
    for _ in range(2):  # dropout_p(A h), the same draws
        h = torch.nn.functional.dropout(conv(h, edge_index, weight), 0.3)
        total = total + h
    assert torch.allclose(got, total / 3)
    assert not torch.allclose(got, prop(x, edge_index, weight))
    prop.eval()  # no dropout outside training
    assert torch.allclose(prop(x, edge_index, weight, dropout=0.3),
                          prop(x, edge_index, weight))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["mean", "sum", "last"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_csr_hops_equal_dense_powers(device, reduce, symmetric):
    from mde_pyg.nn.sparse import csr_hops

    n = 12
    edge_index, weight = random_graph(n, symmetric=symmetric, seed=3)
    adj = to_csr(edge_index.to(device), weight.to(device), (n, n))
    adj_t = None if symmetric else adj.to_dense().t().to_sparse_csr()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen, dtype=torch.double).to(device)
    g = torch.randn(n, 4, generator=gen, dtype=torch.double).to(device)
    a = dense(edge_index, weight, n).double().to(device)
    adj, adj_t = adj.double(), None if adj_t is None else adj_t.double()
    powers = [torch.linalg.matrix_power(a, k) for k in range(4)]
    matrix = {"mean": sum(powers) / 4, "sum": sum(powers),
              "last": powers[3]}[reduce]

    leaf = x.clone().requires_grad_()
    out = csr_hops(adj, leaf, 3, reduce, adj_t)
    torch.testing.assert_close(out, matrix @ x)
    (grad,) = torch.autograd.grad(out, leaf, g, create_graph=True)
    torch.testing.assert_close(grad, matrix.t() @ g)
    # the backward is the same combination over A^T, differentiable again:
    # d/dg <grad, h> = (M^T)^T h = M h
    h = torch.randn(g.shape, generator=gen, dtype=g.dtype).to(device)
    g = g.clone().requires_grad_()
    (grad,) = torch.autograd.grad(csr_hops(adj, leaf, 3, reduce, adj_t), leaf,
                                  g, create_graph=True)
    (second,) = torch.autograd.grad((grad * h).sum(), g)
    torch.testing.assert_close(second, matrix @ h)


def test_csr_hops_zero_layers_dtypes_and_errors():
    from mde_pyg.nn.sparse import csr_hops

    edge_index, weight = random_graph(8, symmetric=True, seed=4)
    adj = to_csr(edge_index, weight, (8, 8))
    torch.manual_seed(0)
    x = torch.randn(8, 3, requires_grad=True)
    out = csr_hops(adj, x, 0)
    torch.testing.assert_close(out, x.detach())
    assert out.data_ptr() != x.data_ptr()  # a new tensor, as x / 1
    # under bf16 autocast: the products in the adjacency's float32, the
    # gradient in the input's dtype
    xb = torch.randn(8, 3, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = csr_hops(adj, xb, 2, "sum")
    assert out.dtype == torch.float32
    a = dense(edge_index, weight, 8)
    torch.testing.assert_close(out, (torch.eye(8) + a + a @ a)
                               @ xb.detach().float())
    out.sum().backward()
    assert xb.grad.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="'reduce'"):
        csr_hops(adj, x, 2, "max")
    with pytest.raises(ValueError, match="'num_layers'"):
        csr_hops(adj, x, -1)


@pytest.mark.parametrize("reduce", ["mean", "sum", "last"])
def test_multi_hop_fused_path_equals_edge_index_path(reduce):
    from mde_pyg.nn.sparse import _CSRHops

    n = 14
    edge_index, weight = random_graph(n, symmetric=False, seed=6)
    prop = MultiHopPropagation(3, reduce, symmetric=False)
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(6))
    calls = []
    forward = _CSRHops.forward

    def counting(ctx, *args):
        calls.append((args[1].to_dense(), *args[3:]))
        return forward(ctx, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_CSRHops, "forward", staticmethod(counting))
        out_c, grad_c = value_and_grad(prop, x, to_csr(edge_index, weight,
                                                       (n, n)))
    # one fused call forward and one over the transpose backward, instead
    # of three products each way
    a = dense(edge_index, weight, n)
    assert [call[1:] for call in calls] == [(3, reduce)] * 2
    torch.testing.assert_close(calls[0][0], a)
    torch.testing.assert_close(calls[1][0], a.t())
    out_e, grad_e = value_and_grad(prop, x, edge_index, weight)
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(grad_c, grad_e)


def test_simple_conv_residual_is_one_fused_hop():
    from mde_pyg.nn.sparse import _CSRHops

    n = 10
    edge_index, weight = random_graph(n, seed=7)
    calls = []
    forward = _CSRHops.forward

    def counting(ctx, *args):
        calls.append(args[3:])
        return forward(ctx, *args)

    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(7))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_CSRHops, "forward", staticmethod(counting))
        out, grad = value_and_grad(SimpleGraphConv(), x,
                                   to_csr(edge_index, weight, (n, n)))
    assert calls == [(1, "sum")] * 2  # forward, and backward over A^T
    a = dense(edge_index, weight, n)
    torch.testing.assert_close(out, x + a @ x)
    w = torch.arange(out.numel()).view_as(out).sin()
    torch.testing.assert_close(grad, w + a.t() @ w)


def test_a_symmetric_pattern_with_other_values_is_not_symmetric():
    # A = [[0, 1], [2, 0]]: A^T has A's pattern but not its values, as a
    # random-walk normalised D^-1 A; a sorted CSR, so the values are compared
    from mde_pyg.nn.sparse import csr_is_symmetric

    adj = to_csr(torch.tensor([[1, 0], [0, 1]]), torch.tensor([1.0, 2.0]),
                 (2, 2))
    assert adj.to_dense().tolist() == [[0.0, 1.0], [2.0, 0.0]]
    assert not csr_is_symmetric(adj)
    with pytest.raises(ValueError, match="not symmetric"):
        LightGCNConv()(torch.randn(2, 3), adj)
    assert csr_is_symmetric(to_csr(torch.tensor([[1, 0], [0, 1]]),
                                   torch.tensor([2.0, 2.0]), (2, 2)))


def test_symmetric_layers_refuse_a_graph_that_is_not():
    # A directed graph: A^T != A. A symmetric layer's fused backward would
    # use A as its own transpose, so the gradient would be A x, not A^T g.
    from mde_pyg.nn.sparse import csr_is_symmetric

    edge_index, weight = random_graph(8, 20)
    adj = to_csr(edge_index, weight, (8, 8))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    assert not csr_is_symmetric(adj)
    for layer in (LightGCNConv(), MultiHopPropagation(2)):
        with pytest.raises(ValueError, match=r"symmetric=True\) got a CSR "
                           r"graph of shape \(8, 8\) that is not symmetric"
                           r".*pass symmetric=False"):
            layer(x, adj)
    # declared as it is, the fused gradient is the edge_index path's
    conv = LightGCNConv(symmetric=False)
    out, grad = value_and_grad(conv, x, adj)
    ref_out, ref_grad = value_and_grad(conv, x, edge_index, weight)
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-6)


def test_symmetry_is_checked_once_per_graph(monkeypatch):
    from mde_pyg.nn import conv as conv_module

    edge_index, weight = random_graph(8, 20, symmetric=True)
    adj = to_csr(edge_index, weight, (8, 8))
    other = to_csr(edge_index, 2 * weight, (8, 8))
    calls, check = [], conv_module.csr_is_symmetric

    def counted(a, *args):
        calls.append(a)
        return check(a, *args)

    monkeypatch.setattr(conv_module, "csr_is_symmetric", counted)
    conv = LightGCNConv()
    x = torch.randn(8, 3, requires_grad=True)
    for _ in range(3):
        conv(x, adj).sum().backward()
    conv(x, other)
    assert [a is adj for a in calls] == [True, False]  # one check per graph


@pytest.mark.parametrize("kind", [
    "csr", pytest.param("sparse_tensor", marks=NEEDS_TORCH_SPARSE)])
def test_sparse_graph_with_edge_weight_or_other_aggr_is_refused(kind):
    edge_index, weight = random_graph(8, 20, symmetric=True)
    x = torch.randn(8, 3)
    (graph,) = as_graph(kind, edge_index, weight, 8)
    for layer in (LightGCNConv(), SimpleGraphConv(symmetric=True),
                  MultiHopPropagation(2)):
        with pytest.raises(ValueError, match="'edge_weight' is given "
                           "with a sparse graph"):
            layer(x, graph, weight)
    with pytest.raises(ValueError, match="'aggr' must be 'add', got 'mean'"):
        LightGCNConv(aggr="mean")


def test_graph_caches_follow_their_graphs():
    import gc
    import io

    conv = SimpleGraphConv()
    sym = LightGCNConv()
    x = torch.randn(10, 4, requires_grad=True)
    for seed in range(12):  # a new graph each time, as FREEDOM's pruning
        adj = to_csr(*random_graph(10, seed=seed), (10, 10))
        conv(x, adj).sum().backward()
        sym_adj = to_csr(*random_graph(10, symmetric=True, seed=seed),
                         (10, 10))
        sym(x, sym_adj).sum().backward()
    del adj, sym_adj
    gc.collect()
    # the graphs are gone, so are their entries (none kept alive)
    assert len(conv._transposed) == 0 and len(sym._checked) == 0
    # and a layer with a live cache pickles, without it
    adj = to_csr(*random_graph(10, seed=0), (10, 10))
    conv(x, adj)
    buffer = io.BytesIO()
    torch.save(conv, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert len(loaded._transposed) == 0 and len(conv._transposed) == 1
    out, grad = value_and_grad(loaded, x.detach(), adj)
    ref_out, ref_grad = value_and_grad(conv, x.detach(), adj)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


def test_learnable_graph_values_take_torchs_backward():
    # a directed graph whose values require gradients: symmetric=True is
    # not relied on (torch's own product runs), so nothing is refused
    edge_index, weight = random_graph(8, 20)
    weight = weight.requires_grad_()
    adj = to_csr(edge_index, weight, (8, 8))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    conv = LightGCNConv()
    out = conv(x, adj)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), weight)
    ref = dense(edge_index, weight, 8) @ x
    (ref_grad,) = torch.autograd.grad(ref.pow(2).sum(), weight)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
    assert len(conv._checked) == 0
    # csr_matmul itself, given a transpose: the values' gradient is still
    # torch's (the fused backward has none for the matrix)
    from mde_pyg.nn.sparse import csr_transpose

    adj = to_csr(edge_index, weight, (8, 8))  # a new graph to backprop
    out = csr_matmul(adj, x, csr_transpose(adj.detach()))
    (grad,) = torch.autograd.grad(out.pow(2).sum(), weight)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_symmetry_of_non_canonical_csr():
    from mde_pyg.nn.sparse import csr_is_symmetric, csr_tensor

    # [[0, 1, 2], [1, 0, 0], [2, 0, 0]] with row 0's columns unsorted, and
    # the same matrix with its (0, 1) entry split into two halves
    crow = torch.tensor([0, 2, 3, 4])
    unsorted = csr_tensor(crow, torch.tensor([2, 1, 0, 0]),
                          torch.tensor([2.0, 1.0, 1.0, 2.0]), (3, 3))
    split = csr_tensor(torch.tensor([0, 3, 4, 5]),
                       torch.tensor([1, 1, 2, 0, 0]),
                       torch.tensor([0.5, 0.5, 2.0, 1.0, 2.0]), (3, 3))
    assert csr_is_symmetric(unsorted) and csr_is_symmetric(split)
    skew = csr_tensor(crow, torch.tensor([2, 1, 0, 0]),
                      torch.tensor([2.0, 1.0, 1.5, 2.0]), (3, 3))
    assert not csr_is_symmetric(skew)


def unique_graph(num_nodes, symmetric, seed):
    # no duplicate entries: to_csr would sum them in the values' dtype
    from torch_geometric.utils import coalesce

    edge_index, weight = random_graph(num_nodes, symmetric=symmetric,
                                      seed=seed)
    return coalesce(edge_index, weight, num_nodes)


FLOAT64_LAYERS = [
    lambda: LightGCNConv(), lambda: LightGCNConv(symmetric=False),
    lambda: SimpleGraphConv(), lambda: SimpleGraphConv(residual=False),
    lambda: MultiHopPropagation(2, "mean"),
    lambda: MultiHopPropagation(3, "sum", symmetric=False),
    lambda: MultiHopPropagation(2, "last", symmetric=False),
    lambda: MultiHopPropagation(0)]


@pytest.mark.parametrize("make", FLOAT64_LAYERS)
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
def test_float64_csr_path_equals_edge_index_path(make, weight_dtype):
    # float64 x stays float64 on the CSR path, whether the graph's values
    # are float64 or float32 (converted for the product, not x cast down)
    layer = make()
    n = 12
    edge_index, weight = unique_graph(n, True, seed=8)
    weight = weight.to(weight_dtype)
    adj = to_csr(edge_index, weight, (n, n))
    assert adj.dtype == weight_dtype
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(8),
                    dtype=torch.float64)
    out_c, grad_c = value_and_grad(layer, x, adj)
    out_e, grad_e = value_and_grad(layer, x, edge_index, weight)
    assert out_c.dtype == grad_c.dtype == out_e.dtype == torch.float64
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_c, grad_e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", FLOAT64_LAYERS[:-1])
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
def test_float64_csr_path_gradcheck(make, weight_dtype):
    layer = make()
    edge_index, weight = unique_graph(8, True, seed=9)
    adj = to_csr(edge_index, weight.to(weight_dtype), (8, 8))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(9),
                    dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x, adj), (x,))
    assert torch.autograd.gradgradcheck(lambda x: layer(x, adj), (x,))


def test_to_csr_value_dtypes():
    edge_index, weight = unique_graph(6, False, seed=1)
    for given, kept in [(torch.float64, torch.float64),
                        (torch.float32, torch.float32),
                        (torch.float16, torch.float32),
                        (torch.bfloat16, torch.float32),
                        (torch.long, torch.float32)]:
        adj = to_csr(edge_index, (10 * weight).to(given), (6, 6))
        assert adj.dtype == kept
        torch.testing.assert_close(
            adj.to_dense(), dense(edge_index, (10 * weight).to(given)
                                  .to(kept).float(), 6).to(kept))
    assert to_csr(edge_index, None, (6, 6)).dtype == torch.float32


def test_user_item_edges_by_hand():
    # 2 users, 3 items: items become nodes 2..4, both directions listed,
    # each with the edge's normalised weight (ones without one)
    from torch_geometric.data import HeteroData

    from mde_pyg.nn.sparse import user_item_edges

    data = HeteroData()
    data["user"].num_nodes = 2
    data["item"].num_nodes = 3
    store = data["user", "rates", "item"]
    store.edge_index = torch.tensor([[0, 0, 1], [0, 2, 2]])
    edge_index, weight = user_item_edges(data)
    assert edge_index.tolist() == [[0, 0, 1, 2, 4, 4], [2, 4, 4, 0, 0, 1]]
    assert weight.tolist() == [1.0] * 6
    # the ones are made on the edges' device (the meta device checks it)
    cpu, store.edge_index = store.edge_index, store.edge_index.to("meta")
    assert user_item_edges(data)[1].device.type == "meta"
    store.edge_index = cpu
    store.edge_weight = torch.tensor([0.5, 0.25, 0.125])
    edge_index, weight = user_item_edges(data)
    assert weight.tolist() == [0.5, 0.25, 0.125, 0.5, 0.25, 0.125]


def test_to_csr_of_a_bipartite_graph_is_its_adj_t():
    # size = (num_source, num_target): 5 sources -> 3 targets give a
    # [3, 5] adj_t, and adj_t @ x sums w_(j -> i) x_j into target row i
    edge_index = torch.tensor([[4, 0, 2, 1, 0, 3, 2],
                               [0, 2, 1, 0, 1, 2, 2]])
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    adj = to_csr(edge_index, weight, (5, 3))
    assert adj.shape == (3, 5)
    # by hand: row i lists (source, weight) of the edges into target i
    assert adj.to_dense().tolist() == [[0, 4, 0, 0, 1],
                                       [5, 0, 3, 0, 0],
                                       [2, 0, 7, 6, 0]]
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(csr_matmul(adj, x), adj.to_dense() @ x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_csr_path(dtype):
    # The CPU sparse kernels have no half-precision form: the products run
    # in float32. Over a float32 graph the result is float32 (as with
    # bf16 under autocast); over a graph of the same half dtype
    # (model.half()) it is cast back, as the edge_index path's dtype.
    n = 10
    edge_index, weight = unique_graph(n, True, seed=2)
    adj = to_csr(edge_index, weight, (n, n))
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(2))
    xh = x.to(dtype)
    def matrices(a):
        return [(LightGCNConv(), a),
                (SimpleGraphConv(symmetric=True), torch.eye(n) + a),
                (MultiHopPropagation(2, "sum"), torch.eye(n) + a + a @ a)]

    for layer, matrix in matrices(dense(edge_index, weight, n)):
        out, grad = value_and_grad(layer, xh, adj)
        assert out.dtype == torch.float32 and grad.dtype == dtype
        torch.testing.assert_close(out, matrix @ xh.float())
    # the graph's values rounded to the half dtype, the products in float32
    rounded = dense(edge_index, weight.to(dtype).float(), n)
    for layer, matrix in matrices(rounded):
        out, grad = value_and_grad(layer, xh, adj.to(dtype))
        out_e, _ = value_and_grad(layer, xh, edge_index, weight.to(dtype))
        assert out.dtype == grad.dtype == out_e.dtype == dtype
        torch.testing.assert_close(out, (matrix @ xh.float()).to(dtype))
        torch.testing.assert_close(out, out_e, rtol=2e-2, atol=2e-2)


def test_symmetry_check_of_non_canonical_csr_does_not_warn():
    # PyTorch warns once per process about a sparse constructor called
    # without check_invariants, so the check runs in a fresh process.
    import subprocess
    import sys

    code = """if True:
        import warnings
        import torch
        from mde_pyg.nn import LightGCNConv, to_csr
        from mde_pyg.nn.sparse import csr_is_symmetric, csr_tensor
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unsorted = csr_tensor(torch.tensor([0, 2, 3, 4]),
                                  torch.tensor([2, 1, 0, 0]),
                                  torch.tensor([2.0, 1.0, 1.0, 2.0]), (3, 3))
            assert csr_is_symmetric(unsorted)
            asymmetric = to_csr(torch.tensor([[0, 1, 1], [1, 2, 2]]),
                                torch.tensor([1.0, 2.0, 3.0]), (3, 3))
            assert not csr_is_symmetric(asymmetric)
            try:
                LightGCNConv()(torch.ones(3, 2), asymmetric)
            except ValueError:
                pass
            LightGCNConv(symmetric=False)(torch.ones(3, 2), asymmetric)
        print("ok")
    """
    result = subprocess.run([sys.executable, "-c", code],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("fused", [True, False])
def test_graph_buffers_keep_the_models_dtype(fused):
    # float64 weights in the data do not make a float32 model's graphs
    # float64 (to_csr keeps float64 for layers used on their own); a
    # replaced graph takes the dtype of the one it replaces
    from mde_pyg.nn.graphs import GraphBuffers

    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    weight = torch.tensor([0.5, 0.25, 2.0], dtype=torch.float64)
    graphs = GraphBuffers(fused)
    graphs.add("g", edge_index, weight, (3, 3))
    adj, w = graphs.get("g")
    assert (adj if fused else w).dtype == torch.float32
    graphs.double()
    graphs.set("g", edge_index, weight.float(), (3, 3))
    adj, w = graphs.get("g")
    assert (adj if fused else w).dtype == torch.float64
    dense = torch.zeros(3, 3, dtype=torch.float64)
    dense[edge_index[1], edge_index[0]] = weight  # adj_t: row = target
    if fused:
        assert torch.equal(adj.to_dense(), dense)
        graphs.set("g", edge_index, None, (3, 3))  # ones, in float64
        adj, _ = graphs.get("g")
        assert adj.dtype == torch.float64
        assert torch.equal(adj.to_dense(), (dense != 0).double())
    else:
        assert torch.equal(w, weight)
