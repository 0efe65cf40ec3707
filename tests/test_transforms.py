import math
import warnings

import numpy as np
import pytest
import torch
from device_params import DEVICES
from torch_geometric.data import HeteroData

from mde_pyg.data import make_synthetic
from mde_pyg.transforms import (
    CO_OCCURS,
    ItemKNNGraph,
    MultiModalGraphs,
    NormalizeUserItem,
    UserCoOccurrenceGraph,
    knn_cosine,
    row_blocks,
    softmax_per_row,
    topk_per_row,
    topk_positions_per_row,
)


def hand_graph():
    # users 0..3, items 0..3; R:
    # u0: i0 i1 i2 | u1: i0 i1 | u2: i2 | u3: i3
    data = HeteroData()
    data["user"].num_nodes = 4
    data["item"].num_nodes = 4
    data["user", "rates", "item"].edge_index = torch.tensor(
        [[0, 0, 0, 1, 1, 2, 3], [0, 1, 2, 0, 1, 2, 3]])
    data["item"].x_a = torch.tensor(
        [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.05]])
    return data


@pytest.mark.parametrize("device", DEVICES)
def test_user_cooccurrence_of_data_on_any_device(device):
    # counted on the CPU and stored there, as ItemKNNGraph stores its edges
    want = UserCoOccurrenceGraph(k=40)(hand_graph())[CO_OCCURS]
    got = UserCoOccurrenceGraph(k=40)(hand_graph().to(device))[CO_OCCURS]
    assert torch.equal(got.edge_index, want.edge_index)
    assert torch.equal(got.edge_weight, want.edge_weight)


def test_softmax_per_row_by_hand_on_its_inputs_device():
    row, value = torch.tensor([2, 0, 2, 2]), torch.tensor([1.0, 7.0, 2.0, 1.0])
    z = 2 * math.exp(1) + math.exp(2)
    assert softmax_per_row(row, value, 3).tolist() == pytest.approx(
        [math.exp(1) / z, 1.0, math.exp(2) / z, math.exp(1) / z])
    # every buffer on the inputs' device (the meta device checks it here)
    out = softmax_per_row(row.to("meta"), value.to("meta"), 3)
    assert out.device.type == "meta" and out.shape == (4,)


def test_normalize_user_item():
    data = NormalizeUserItem()(hand_graph())
    w = data["user", "rates", "item"].edge_weight
    deg_u = [3, 3, 3, 2, 2, 1, 1]
    deg_i = [2, 2, 2, 2, 2, 2, 1]
    expected = [1 / math.sqrt(a * b) for a, b in zip(deg_u, deg_i)]
    assert torch.allclose(w, torch.tensor(expected))
    rev = data["item", "rated_by", "user"]
    assert torch.equal(rev.edge_weight, w)
    assert torch.equal(rev.edge_index,
                       data["user", "rates", "item"].edge_index.flip(0))


def test_user_cooccurrence_topk_and_softmax():
    data = UserCoOccurrenceGraph(k=1)(hand_graph())
    store = data["user", "co_occurs", "user"]
    pairs = sorted(zip(store.edge_index[1].tolist(),
                       store.edge_index[0].tolist()))
    # u0 shares 2 items with u1 and 1 with u2 -> keeps u1; u1 -> u0;
    # u2 -> u0; u3 shares nothing -> no edge.
    assert pairs == [(0, 1), (1, 0), (2, 0)]
    assert torch.allclose(store.edge_weight, torch.ones(3))

    data = UserCoOccurrenceGraph(k=40)(hand_graph())
    store = data["user", "co_occurs", "user"]
    got = {(int(t), int(s)): float(w) for s, t, w in zip(
        store.edge_index[0], store.edge_index[1], store.edge_weight)}
    z = math.exp(2) + math.exp(1)
    assert got[(0, 1)] == pytest.approx(math.exp(2) / z)
    assert got[(0, 2)] == pytest.approx(math.exp(1) / z)
    assert got[(1, 0)] == pytest.approx(1.0)
    assert got[(2, 0)] == pytest.approx(1.0)
    assert 3 not in store.edge_index[1].tolist()


def test_user_cooccurrence_softmax_of_large_counts():
    # users 0 and 1 share items 0-99, and both share items 0-59 with user
    # 2: counts 100 and 60, whose exponentials overflow float32 (e^100 >
    # 3.4e38) unless shifted by the row's maximum. User 0 keeps
    # softmax([100, 60]) = [1, e^-40] / (1 + e^-40); user 2 [1/2, 1/2].
    data = HeteroData()
    data["user"].num_nodes = 3
    data["item"].num_nodes = 100
    user = torch.cat([torch.zeros(100), torch.ones(100), torch.full((60,), 2)])
    item = torch.cat([torch.arange(100), torch.arange(100), torch.arange(60)])
    data["user", "rates", "item"].edge_index = torch.stack([user.long(),
                                                            item])
    store = UserCoOccurrenceGraph(k=40)(data)[CO_OCCURS]
    got = {(int(t), int(s)): float(w) for s, t, w in zip(
        store.edge_index[0], store.edge_index[1], store.edge_weight)}
    small = math.exp(-40) / (1 + math.exp(-40))
    assert got == pytest.approx({(0, 1): 1 - small, (0, 2): small,
                                 (1, 0): 1 - small, (1, 2): small,
                                 (2, 0): 0.5, (2, 1): 0.5}, rel=1e-6)


def test_row_blocks_greedy_within_budget():
    work = np.array([3, 1, 1, 5, 2, 0, 2])
    assert row_blocks(work, 5) == [(0, 3), (3, 4), (4, 7)]
    # A row over the budget is a block of its own; empty input, no block.
    assert row_blocks(work, 2) == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7)]
    assert row_blocks(np.array([]), 4) == []
    with pytest.raises(ValueError, match="'budget'"):
        row_blocks(work, 0)


def test_user_cooccurrence_blocks_give_the_same_graph():
    data = make_synthetic(300, 80, modalities={"a": 4},
                          interactions_per_user=12, seed=3)
    whole = UserCoOccurrenceGraph(k=5, block_pairs=2**40)(data.clone())
    one_user = UserCoOccurrenceGraph(k=5, block_pairs=1)(data.clone())
    a, b = whole[CO_OCCURS], one_user[CO_OCCURS]
    assert a.edge_index.size(1) == 5 * 300
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_weight, b.edge_weight)
    # The hand graph's counts, user by user.
    hand = UserCoOccurrenceGraph(k=40, block_pairs=1)(hand_graph())
    got = sorted(zip(hand[CO_OCCURS].edge_index[1].tolist(),
                     hand[CO_OCCURS].edge_index[0].tolist()))
    assert got == [(0, 1), (0, 2), (1, 0), (2, 0)]
    with pytest.raises(ValueError, match="'block_pairs'"):
        UserCoOccurrenceGraph(block_pairs=0)


def test_item_knn_graph_hand():
    data = ItemKNNGraph(k=1)(hand_graph())
    store = data["item", "similar_a", "item"]
    nbr = dict(zip(store.edge_index[1].tolist(),
                   store.edge_index[0].tolist()))
    assert nbr == {0: 1, 1: 0, 2: 1, 3: 2}
    assert torch.allclose(store.edge_weight, torch.ones(4))
    data = ItemKNNGraph(k=2)(hand_graph())
    assert torch.allclose(data["item", "similar_a", "item"].edge_weight,
                          torch.full((8,), 0.5))
    data = ItemKNNGraph(k=1, include_self=True)(hand_graph())
    store = data["item", "similar_a", "item"]
    assert torch.equal(store.edge_index[0], store.edge_index[1])
    # k beyond the other items: every other item, with a warning
    with pytest.warns(UserWarning, match=r"ItemKNNGraph\(k=5\): modality "
                      r"'a' has 4 items, so each item gets all 3 other items"):
        data = ItemKNNGraph(k=5)(hand_graph())
    store = data["item", "similar_a", "item"]
    assert sorted(zip(store.edge_index[1].tolist(),
                      store.edge_index[0].tolist())) == \
        [(i, j) for i in range(4) for j in range(4) if i != j]
    # with include_self an item is one of its own k: k = 4 items is every
    # item, itself included, without a warning; weights 1/4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = ItemKNNGraph(k=4, include_self=True)(hand_graph())
    store = data["item", "similar_a", "item"]
    assert sorted(zip(store.edge_index[1].tolist(),
                      store.edge_index[0].tolist())) == \
        [(i, j) for i in range(4) for j in range(4)]
    assert torch.allclose(store.edge_weight, torch.full((16,), 0.25))
    with pytest.warns(UserWarning, match=r"has 4 items, so each item gets "
                      r"all 4 items as neighbours"):
        ItemKNNGraph(k=5, include_self=True)(hand_graph())


@pytest.mark.parametrize("include_self", [False, True])
def test_chunked_knn_equals_dense(include_self):
    torch.manual_seed(0)
    x = torch.randn(103, 16)
    xn = torch.nn.functional.normalize(x, dim=-1)
    sim = xn @ xn.t()
    if not include_self:
        sim.fill_diagonal_(float("-inf"))
    expected = sim.topk(5, dim=-1).indices
    for chunk in (1, 7, 103):
        got = knn_cosine(x, 5, include_self, chunk_size=chunk)
        assert torch.equal(got, expected)


def test_knn_cosine_never_forms_the_n_by_n_matrix():
    # METHOD.md §1: the kNN graph is computed in chunks, never |I| x |I|
    from torch.overrides import TorchFunctionMode

    class Largest(TorchFunctionMode):
        numel = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                Largest.numel = max(Largest.numel, out.numel())
            return out

    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    budget = 256 * 4 * 512  # bytes: panels of 256 x 512 float32
    with Largest():
        got = knn_cosine(x, 10, chunk_size=256, max_chunk_bytes=budget)
    assert got.shape == (2000, 10)
    assert Largest.numel * 4 <= budget  # not 2000 x 2000 = 4e6


def test_knn_errors():
    with pytest.raises(ValueError, match="'k' must be in"):
        knn_cosine(torch.randn(3, 2), 3)
    with pytest.raises(ValueError, match="has no item features"):
        ItemKNNGraph(modalities=["nope"])(hand_graph())


def test_multimodal_graphs_on_synthetic(synthetic_graphs):
    data = synthetic_graphs
    assert set(data.edge_types) >= {
        ("user", "co_occurs", "user"), ("item", "similar_image", "item"),
        ("item", "similar_text", "item")}
    # Every item has exactly k_item = 4 neighbours, none itself.
    ei = data["item", "similar_text", "item"].edge_index
    assert torch.equal(torch.bincount(ei[1]), torch.full((40,), 4))
    assert not (ei[0] == ei[1]).any()
    # Co-occurrence weights sum to one per user that has neighbours.
    store = data["user", "co_occurs", "user"]
    sums = torch.zeros(60).index_add_(0, store.edge_index[1],
                                      store.edge_weight)
    has = torch.bincount(store.edge_index[1], minlength=60) > 0
    assert torch.allclose(sums[has], torch.ones(int(has.sum())))
    assert str(MultiModalGraphs()).startswith("MultiModalGraphs(")


def test_normalize_features():
    from mde_pyg.transforms import NormalizeFeatures

    data = hand_graph()
    data["item"].x_b = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0],
                                     [5.0, 12.0]])
    out = NormalizeFeatures("l2", modalities=["b"])(data)
    assert torch.allclose(out["item"].x_b[0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(out["item"].x_b.norm(dim=1), torch.ones(4))
    raw = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 70.0], [7.0, 90.0]])
    data["item"].x_b = raw.clone()
    out = NormalizeFeatures("standardize", modalities=["b"])(data)
    z = (raw - raw.mean(0)) / raw.std(0)
    assert torch.allclose(out["item"].x_b,
                          torch.nn.functional.normalize(z, dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="'method' must be one of"):
        NormalizeFeatures("minmax")


def test_standardize_zeroes_constant_and_noise_columns():
    from mde_pyg.transforms import NormalizeFeatures

    def standardize(x, **kwargs):
        data = hand_graph()
        data["item"].x_b = x.clone()
        return NormalizeFeatures("standardize", ["b"], **kwargs)(
            data)["item"].x_b

    # a constant column is 0; the other has z = -1, 0, 1 (population std)
    out = standardize(torch.tensor([[1.0, 2.0], [1.0, 4.0], [1.0, 6.0],
                                    [1.0, 4.0]]))
    assert out.tolist() == [[0.0, -1.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    # one item: every column constant, a zero row (no NaN)
    data = hand_graph()
    data["item"].num_nodes = 1
    data["item"].x_b = torch.tensor([[3.0, 4.0]])
    assert NormalizeFeatures("standardize", ["b"])(data)["item"].x_b \
        .tolist() == [[0.0, 0.0]]
    # a column of rounding noise (std 1e-8 against 1 and 2): scaled to unit
    # variance with min_std=0, zeroed with min_std=1e-4
    signal = torch.tensor([[0.0, 1.0], [2.0, 3.0], [1.0, -1.0], [-3.0, 1.0]])
    noise = torch.tensor([[1e-8], [-1e-8], [1e-8], [-1e-8]])
    x = torch.cat([signal[:, :1], noise, signal[:, 1:]], dim=1)
    z = (signal - signal.mean(0)) / signal.std(0, correction=0)
    unit = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])  # the noise's z
    assert torch.allclose(standardize(x), torch.nn.functional.normalize(
        torch.cat([z[:, :1], unit, z[:, 1:]], dim=1), dim=1), atol=1e-5)
    zeroed = standardize(x, min_std=1e-4)
    assert zeroed[:, 1].tolist() == [0.0] * 4
    assert torch.allclose(zeroed[:, [0, 2]],
                          torch.nn.functional.normalize(z, dim=1), atol=1e-6)
    assert repr(NormalizeFeatures("standardize", min_std=1e-4)) == \
        "NormalizeFeatures('standardize', min_std=0.0001)"
    for bad in (-0.1, 1.0, True, "1e-4"):
        with pytest.raises(ValueError, match=r"'min_std' must be a number in "
                           r"\[0, 1\)"):
            NormalizeFeatures("standardize", min_std=bad)
    with pytest.raises(ValueError, match=r"NormalizeFeatures: modality 'c' "
                       r"has no item features 'x_c'; available: \["):
        NormalizeFeatures(modalities=["c"])(hand_graph())


def assert_same_knn(got, x, k, include_self):
    # Same neighbours as a dense float32 top-k, up to float32 near-ties: at
    # every rank the similarity of the returned item equals the reference.
    xn = torch.nn.functional.normalize(x.float(), dim=-1)
    sim = xn @ xn.t()
    if not include_self:
        sim.fill_diagonal_(float("-inf"))
    expected = sim.topk(k, dim=-1)
    assert got.shape == (x.size(0), k)
    assert torch.allclose(sim.gather(1, got), expected.values, atol=1e-6,
                          rtol=0)
    assert not (got.sort(1).values.diff(dim=1) == 0).any()  # no repeats
    # Off near-ties the indices are the same.
    assert (got == expected.indices).all(1).float().mean() > 0.95


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("include_self", [False, True])
@pytest.mark.parametrize("chunk,budget", [
    (None, 2**28),  # one tile
    (64, 2**28),  # 64-row blocks, full-width panels
    (96, 96 * 4 * 160),  # 96 x 160 panels, partial at the ends
    (33, 33 * 4 * 50),  # odd sizes: no grouping, padded panels
])
def test_knn_cosine_equals_dense(device, precision, include_self, chunk,
                                 budget):
    torch.manual_seed(1)
    x = torch.randn(613, 24, device=device)
    for k in (1, 7):
        got = knn_cosine(x, k, include_self, chunk_size=chunk,
                         max_chunk_bytes=budget, precision=precision)
        assert got.device == x.device
        assert_same_knn(got.cpu(), x.cpu(), k, include_self)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_cosine_grouped_pruning(device):
    # Blocks of 512 x 2048 columns use groups of 32 entries in the pruning
    # pass; every row must still get its exact neighbours.
    torch.manual_seed(2)
    x = torch.randn(2000, 16, device=device)
    for precision in ("fp32", "bf16"):
        got = knn_cosine(x, 10, chunk_size=512, max_chunk_bytes=512 * 4 * 2048,
                         precision=precision)
        assert_same_knn(got.cpu(), x.cpu(), 10, False)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_cosine_bf16_near_ties_fall_back(device, monkeypatch):
    # More copies of a row than bf16 candidates, differing by far less than
    # bfloat16 resolves (but far more than float32 does): the bf16 pass
    # cannot rank them, so their certificate fails and those rows are
    # recomputed in float32.
    import mde_pyg.transforms as transforms

    redone = []
    knn_rows = transforms._knn_rows

    def spy(x, rows, *args):
        redone.append(rows.numel())
        return knn_rows(x, rows, *args)

    monkeypatch.setattr(transforms, "_knn_rows", spy)
    torch.manual_seed(3)
    x = torch.randn(10, 32).repeat_interleave(40, dim=0)  # 40 > 3k + 8
    x = torch.cat([x + 1e-2 * torch.randn_like(x), torch.randn(200, 32)])
    got = knn_cosine(x.to(device), 5, precision="bf16", chunk_size=128)
    assert 400 <= sum(redone) < 600  # the random rows are certified
    assert_same_knn(got.cpu(), x, 5, False)
    # The neighbours of a copy are copies of the same row.
    assert torch.equal(got[:400].cpu() // 40,
                       torch.arange(400)[:, None].expand(-1, 5) // 40)


def test_knn_cosine_bf16_certificate_catches_ties_at_the_cut():
    # Eight queries e_c, each with 40 items at cosines in (0.9962, 0.9978):
    # bfloat16 rounds every one of those similarities to 255/256, so which
    # 3k + 8 of them become candidates is arbitrary, and the best item is
    # often left out. The exact similarities of the candidates then all
    # exceed the last candidate's bf16 value (255/256 = 0.99609), and only
    # the certificate's error terms (bf16 rounding, 2^-8 of the value)
    # send these rows to the float32 fallback.
    gen = torch.Generator().manual_seed(0)
    d, rows = 32, []
    for c in range(8):
        axis = torch.zeros(d, dtype=torch.float64)
        axis[c] = 1.0
        cos = 0.9962 + 0.0016 * torch.rand(40, 1, generator=gen,
                                           dtype=torch.float64)
        perp = torch.randn(40, d, generator=gen, dtype=torch.float64)
        perp[:, :8] = 0.0  # orthogonal to every query
        perp = torch.nn.functional.normalize(perp, dim=1)
        rows += [axis[None], cos * axis + (1 - cos**2).sqrt() * perp]
    x = torch.cat(rows).float()
    queries = torch.arange(0, 8 * 41, 41)
    assert torch.equal((x[queries].bfloat16() @ x.t().bfloat16()).float()
                       .view(8, 8, 41)[range(8), range(8), 1:].unique(),
                       torch.tensor([255 / 256]))
    xn = torch.nn.functional.normalize(x.double(), dim=-1)
    sim = xn @ xn.t()
    sim.fill_diagonal_(float("-inf"))
    for k in (1, 2):
        got = knn_cosine(x, k, precision="bf16")
        # the queries' exact neighbours, by a float64 brute force
        assert torch.equal(got[queries], sim[queries].topk(k).indices)
        assert_same_knn(got, x, k, False)


@pytest.mark.parametrize("device", DEVICES)
def test_knn_cosine_bf16_panels_reduce_in_float32_on_cuda(device,
                                                          monkeypatch):
    # cuBLAS may reduce split-K partial sums of bf16 products in bf16 unless
    # told not to, an error the certificate does not bound: the bf16 panels
    # are multiplied with that off, and the caller's setting comes back.
    import mde_pyg.transforms as transforms

    matmul = torch.backends.cuda.matmul
    during = []
    topk_blocks = transforms._topk_blocks

    def spy(*args):
        during.append(matmul.allow_bf16_reduced_precision_reduction)
        return topk_blocks(*args)

    monkeypatch.setattr(transforms, "_topk_blocks", spy)
    torch.manual_seed(5)
    x = torch.randn(300, 16, device=device)
    before = matmul.allow_bf16_reduced_precision_reduction
    assert before  # PyTorch's default
    got = knn_cosine(x, 5, precision="bf16")
    assert during == [device == "cpu"]  # the flag is cuBLAS's alone
    assert matmul.allow_bf16_reduced_precision_reduction == before
    assert_same_knn(got.cpu(), x.cpu(), 5, False)


def test_float32_bf16_reductions_restores_the_callers_setting():
    # the flag is global state, read and set without a GPU
    from mde_pyg.transforms import _float32_bf16_reductions

    matmul = torch.backends.cuda.matmul

    def setting():  # newer torch also holds whether split-K may be used
        return (matmul.allow_bf16_reduced_precision_reduction,
                getattr(matmul,
                        "allow_bf16_reduced_precision_reduction_split_k", None))

    states = [False, True]
    if setting()[1] is not None:
        states.append((False, False))
    try:
        for state in states:
            matmul.allow_bf16_reduced_precision_reduction = state
            saved = setting()
            with pytest.raises(KeyError):
                with _float32_bf16_reductions(torch.device("cuda")):
                    assert setting()[0] is False
                    raise KeyError  # restored on the way out of an error too
            assert setting() == saved
    finally:
        matmul.allow_bf16_reduced_precision_reduction = True


def test_knn_cosine_all_candidates():
    # With at most 3k + 8 other items every item is a bf16 candidate.
    torch.manual_seed(4)
    x = torch.randn(12, 5)
    for include_self in (False, True):
        k = 11 if not include_self else 12
        got = knn_cosine(x, k, include_self, precision="bf16")
        assert_same_knn(got, x, k, include_self)


def test_knn_cosine_precision_error():
    with pytest.raises(ValueError, match="'precision' must be one of"):
        knn_cosine(torch.randn(5, 2), 2, precision="fp16")


def test_topk_positions_grouped_by_row_ties_towards_smaller_col():
    edge_index = torch.tensor([[3, 1, 2, 0, 4], [0, 0, 0, 0, 1]])
    weight = torch.tensor([0.5, 0.2, 0.5, 0.2, 1.0])
    kept = topk_positions_per_row(edge_index[1], edge_index[0], weight, 2, 3)
    assert kept.tolist() == [2, 0, 3, 4]  # (2, 3 at 0.5), then 0 < 1
    mask = topk_per_row(edge_index[1], edge_index[0], weight, 2, 3)
    assert mask.tolist() == [True, False, True, True, True]


def test_user_cooccurrence_holds_at_most_block_pairs_at_once(monkeypatch):
    # the docstring: memory grows with the block, not with the number of
    # co-occurring pairs. Each block's product R_block R^T holds at most
    # block_pairs entries (a single heavier user excepted).
    import scipy.sparse as sp

    data = make_synthetic(300, 80, modalities={"a": 4},
                          interactions_per_user=12, seed=3)
    held, product = [], sp.csr_matrix.__matmul__

    def counted(a, b):
        out = product(a, b)
        held.append((a.shape[0], out.nnz))
        return out

    monkeypatch.setattr(sp.csr_matrix, "__matmul__", counted)
    budget = 2000
    UserCoOccurrenceGraph(k=5, block_pairs=budget)(data)
    assert sum(rows for rows, _ in held) == 300  # every user, in blocks
    assert len(held) > 10  # the full product holds 300 x ~300 pairs
    assert all(nnz <= budget or rows == 1 for rows, nnz in held)
