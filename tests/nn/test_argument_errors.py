"""Bad arguments to the layers and models: the error names the argument
as the caller spelled it, says what was wrong and how to fix it."""

import re

import pytest
import torch

from mde_pyg.models import DRAGON, FREEDOM, MDE, SAND
from mde_pyg.models.encoder import check_modality_weights
from mde_pyg.nn import (
    EdgeWeightedPropagation,
    LightGCNConv,
    MultiHopPropagation,
    PreferenceFusion,
    SimpleGraphConv,
    to_csr,
)


def _msg(text: str) -> str:
    return re.escape(text)


def test_fusion_mode_named_as_passed(synthetic_graphs):
    # directly: the layer's own argument
    with pytest.raises(ValueError, match=_msg(
            "'mode' must be 'concat' (the weighted modalities side by side) "
            "or 'sum' (added up), got 'avg'")):
        PreferenceFusion(4, ["v", "t"], mode="avg")
    # through MDE: the model's argument, not the layer's
    with pytest.raises(ValueError, match=_msg(
            "'fusion' must be 'concat' (the weighted modalities side by "
            "side) or 'sum' (added up), got 'avg'")):
        MDE(synthetic_graphs, fusion="avg")


def test_fixed_preference_named_as_passed(synthetic_graphs):
    with pytest.raises(ValueError, match=_msg(
            "'fixed_preference' must hold 2 non-negative numbers summing to "
            "1, one per modality ['v', 't'], got [0.5, 0.6]")):
        PreferenceFusion(4, ["v", "t"], fixed_preference=[0.5, 0.6])
    with pytest.raises(ValueError, match=_msg(
            "'fixed_preference' must hold 2 non-negative numbers summing to "
            "1, one per modality ['v', 't'], got [0.5, 'a']")):
        PreferenceFusion(4, ["v", "t"], fixed_preference=[0.5, "a"])
    with pytest.raises(ValueError, match="got \\[nan, 1.0\\]"):
        PreferenceFusion(4, ["v", "t"], fixed_preference=[float("nan"), 1.0])
    names = ["image", "text"]
    for bad in ([0.5, 0.6], [1.0]):
        with pytest.raises(ValueError, match=_msg(
                f"'global_preference' must hold 2 non-negative numbers "
                f"summing to 1, one per modality {names}, got {bad}")):
            MDE(synthetic_graphs, tradeoff="global", global_preference=bad)


@pytest.mark.parametrize("bad, shown", [
    ([0.5, "a"], "got [0.5, 'a']"),
    (0.5, "got 0.5; pass e.g. [0.5, 0.5]"),
    ("ab", "got 'ab'; pass e.g. [0.5, 0.5]"),
    ({"image": 0.5, "text": "a"}, "got {'image': 0.5, 'text': 'a'}"),
    ({"image": 0.5, "text": -0.5}, "got {'image': 0.5, 'text': -0.5}"),
])
def test_mde_global_preference_not_numbers(synthetic_graphs, bad, shown):
    with pytest.raises(ValueError, match="^'global_preference' must .*"
                       + _msg(shown)):
        MDE(synthetic_graphs, tradeoff="global", global_preference=bad)


def test_valid_preferences_unchanged(synthetic_graphs):
    fusion = PreferenceFusion(4, ["v", "t"], fixed_preference=(0.3, 0.7))
    assert torch.equal(fusion.fixed, torch.tensor([0.3, 0.7]))
    by_name = MDE(synthetic_graphs, tradeoff="global",
                  global_preference={"text": 0.8, "image": 0.2})
    by_order = MDE(synthetic_graphs, tradeoff="global",
                   global_preference=[0.2, 0.8])
    assert torch.equal(by_name.item_fusion.fixed, torch.tensor([0.2, 0.8]))
    assert torch.equal(by_order.user_fusion.fixed, torch.tensor([0.2, 0.8]))


@pytest.mark.parametrize("model", [DRAGON, SAND, FREEDOM])
def test_modality_weights_not_a_mapping(synthetic_graphs, model):
    with pytest.raises(ValueError, match=_msg(
            "'modality_weights' must be a mapping from each modality "
            "['image', 'text'] to a non-negative weight, got [1.0]; pass "
            "e.g. {'image': 0.1, 'text': 0.9}")):
        model(synthetic_graphs, modality_weights=[1.0])


@pytest.mark.parametrize("bad", [{"image": "a", "text": 1.0},
                                 {"image": float("nan"), "text": 1.0},
                                 {"image": -1.0, "text": 1.0}])
def test_modality_weights_not_numbers(bad):
    with pytest.raises(ValueError, match=_msg(
            f"'modality_weights' must be non-negative numbers with a "
            f"positive sum, got {bad}")):
        check_modality_weights(bad, ["image", "text"])
    assert check_modality_weights({"text": 3, "image": 1},
                                  ["image", "text"]) == {"image": 1.0,
                                                         "text": 3.0}


def test_sum_fusion_of_different_widths_named():
    x = {"v": torch.ones(3, 4), "t": torch.ones(3, 2)}
    with pytest.raises(ValueError, match=_msg(
            "mode='sum' adds the modalities up, so they must have one "
            "width, got widths {'v': 4, 't': 2}; use mode='concat', or "
            "project the modalities to one width first")):
        PreferenceFusion(3, ["v", "t"], mode="sum")(x)


# The propagation layers: a bad input names the layer the caller built,
# the argument and both sizes, instead of a raw torch error.

_EDGES = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 2]])  # directed, 3 nodes


@pytest.mark.parametrize("cls", [LightGCNConv, SimpleGraphConv,
                                 MultiHopPropagation])
def test_conv_edge_weight_of_wrong_length(cls):
    for bad in (torch.rand(3), torch.rand(4, 1)):
        with pytest.raises(ValueError, match=_msg(
                f"{cls.__name__}: 'edge_weight' has shape "
                f"{tuple(bad.shape)} but 'edge_index' has 4 edges; pass "
                f"one weight per edge, of shape (4,)")):
            cls()(torch.randn(3, 4), _EDGES, bad)


@pytest.mark.parametrize("cls", [LightGCNConv, SimpleGraphConv,
                                 MultiHopPropagation])
def test_conv_x_must_be_a_matrix(cls):
    for bad in (torch.randn(3), torch.randn(2, 3, 4)):
        with pytest.raises(ValueError, match=_msg(
                f"{cls.__name__}: 'x' must be a node feature matrix [N, d] "
                f"(one row per node), got shape {tuple(bad.shape)}; for one "
                f"feature per node pass x.view(-1, 1)")):
            cls()(bad, _EDGES)


@pytest.mark.parametrize("cls", [LightGCNConv, SimpleGraphConv,
                                 MultiHopPropagation])
def test_conv_sparse_graph_of_other_size_than_x(cls):
    adj = to_csr(_EDGES, None, (3, 3))
    layer = cls(symmetric=False)
    with pytest.raises(ValueError, match=_msg(
            f"{cls.__name__}: the sparse graph has shape (3, 3) (adj_t, "
            f"[num_target, num_source]), so 'x' must have 3 rows, one per "
            f"source node, but it has 4; build the graph over the nodes of "
            f"'x', to_csr(edge_index, edge_weight, (4, num_target))")):
        layer(torch.randn(4, 4), adj)


def test_multi_hop_needs_a_square_graph():
    # (source 4 nodes, target 3): LightGCNConv takes one step over it
    adj = to_csr(_EDGES, None, (4, 3))
    x = torch.randn(4, 2)
    assert LightGCNConv(symmetric=False)(x, adj).shape == (3, 2)
    with pytest.raises(ValueError, match=_msg(
            "MultiHopPropagation: the sparse graph has shape (3, 4), but "
            "each hop propagates the previous hop's output over it again, "
            "so it must be square [N, N]; for one step over a bipartite "
            "graph use LightGCNConv")):
        MultiHopPropagation(2, symmetric=False)(x, adj)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_multi_hop_symmetry_error_names_multi_hop(dropout):
    # the inner LightGCNConv checks the graph, but the message names the
    # module the caller built, fused (no dropout) or hop by hop
    adj = to_csr(_EDGES, None, (3, 3))
    layer = MultiHopPropagation(2).train()
    with pytest.raises(ValueError, match="^" + _msg(
            "MultiHopPropagation(symmetric=True) got a CSR graph of shape "
            "(3, 3) that is not symmetric; its backward would use the "
            "graph as its own transpose and give wrong gradients: pass "
            "symmetric=False")):
        layer(torch.randn(3, 2), adj, dropout=dropout)
    # the layer used directly still names itself
    with pytest.raises(ValueError, match="^" + _msg(
            "LightGCNConv(symmetric=True) got a CSR graph")):
        LightGCNConv()(torch.randn(3, 2), adj)


def test_edge_weighted_propagation_names_its_inputs():
    for fused in (True, False):
        graph = EdgeWeightedPropagation(_EDGES, (3, 4), fused)
        with pytest.raises(ValueError, match=_msg(
                "EdgeWeightedPropagation: 'edge_weight' has shape (3,) but "
                "the graph has 4 edges; pass one weight per edge, of shape "
                "(4,), in the order of the 'edge_index' the layer was "
                "built with")):
            graph(torch.randn(3, 2), torch.rand(3))
        with pytest.raises(ValueError, match=_msg(
                "EdgeWeightedPropagation: 'x' has shape (4, 2), but the "
                "graph has 3 source nodes (size=(3, 4)); pass one row per "
                "source node, [3, F]")):
            graph(torch.randn(4, 2), torch.rand(4))
        with pytest.raises(ValueError, match=_msg(
                "EdgeWeightedPropagation: 'x_dst' has shape (3, 2), but "
                "the graph has 4 target nodes (size=(3, 4)); pass one row "
                "per target node, [4, F]")):
            graph.edge_dot(torch.randn(3, 2), torch.randn(3, 2))
        with pytest.raises(ValueError, match=_msg(
                "EdgeWeightedPropagation: 'x_src' has 2 columns but 'x_dst' "
                "has 5; pass rows of one width F")):
            graph.edge_dot(torch.randn(3, 2), torch.randn(4, 5))


def test_conv_valid_input_values_unchanged():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen)
    weight = torch.rand(4, generator=gen)
    # A[target, source] = w: out = A x
    a = torch.zeros(3, 3).index_put_((_EDGES[1], _EDGES[0]), weight,
                                     accumulate=True)
    adj = to_csr(_EDGES, weight, (3, 3))
    for graph in ((_EDGES, weight), (adj,)):
        conv = LightGCNConv(symmetric=False)
        torch.testing.assert_close(conv(x, *graph), a @ x)
        torch.testing.assert_close(SimpleGraphConv()(x, *graph), x + a @ x)
        hops = MultiHopPropagation(2, symmetric=False)(x, *graph)
        torch.testing.assert_close(hops, (x + a @ x + a @ a @ x) / 3)
    graph = EdgeWeightedPropagation(_EDGES, (3, 3))
    torch.testing.assert_close(graph(x, weight), a @ x)


# Modality name lists: a string or a repeated name is refused when built.

def test_fusion_modalities_as_a_string():
    with pytest.raises(TypeError, match=_msg(
            "PreferenceFusion: 'modalities' must be a list of modality "
            "names, got the string 'text', whose characters would be taken "
            "as names; pass a list of names, e.g. ['text']")):
        PreferenceFusion(3, "text")
    with pytest.raises(TypeError, match=_msg(
            "PreferenceFusion: 'modalities' must be a list of modality "
            "names, got int; pass e.g. ['image', 'text']")):
        PreferenceFusion(3, 2)


@pytest.mark.parametrize("names, twice", [(["a", "a"], "a"),
                                          (["v", "t", "v"], "v")])
def test_fusion_modalities_named_twice(names, twice):
    with pytest.raises(ValueError, match=_msg(
            f"PreferenceFusion: 'modalities' names '{twice}' more than "
            f"once, in {names}; pass each modality once")):
        PreferenceFusion(3, names)


def test_fusion_modalities_empty_and_valid():
    with pytest.raises(ValueError, match=_msg(
            "PreferenceFusion: 'modalities' is empty; pass at least one "
            "modality name, e.g. ['image', 'text']")):
        PreferenceFusion(3, [])
    # one modality stays accepted (its preference is 1), a tuple too
    x = torch.randn(3, 2)
    fused, pref = PreferenceFusion(3, ["text"])({"text": x})
    assert torch.equal(fused, x) and torch.equal(pref, torch.ones(3, 1))
    fusion = PreferenceFusion(3, ("v", "t"), mode="sum")
    assert fusion.modalities == ["v", "t"]
    fused, _ = fusion({"v": x, "t": 3 * x})
    torch.testing.assert_close(fused, 2 * x)
