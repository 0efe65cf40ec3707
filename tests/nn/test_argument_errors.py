"""Bad arguments to the layers and models: the error names the argument
as the caller spelled it, says what was wrong and how to fix it."""

import re

import pytest
import torch

from mde_pyg.models import DRAGON, FREEDOM, MDE, SAND
from mde_pyg.models.encoder import check_modality_weights
from mde_pyg.nn import PreferenceFusion


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
