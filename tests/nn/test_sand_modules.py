import pytest
import torch

from mde_pyg.losses import club_upper_bound, neg_l2_distance, solo_sim_loss
from mde_pyg.nn import (
    CLUBEstimator,
    GenericUniqueSplit,
    ProjectionHead,
    SeparateAlignDistance,
    split_halves,
)


def test_split_halves_and_module():
    x = torch.arange(10.0).view(2, 5)
    gen, uni = split_halves(x)
    assert gen.tolist() == [[0, 1], [5, 6]]
    assert uni.tolist() == [[2, 3, 4], [7, 8, 9]]

    split = GenericUniqueSplit({"image": 6, "text": 4})
    gen = torch.Generator().manual_seed(0)
    x = {"image": torch.randn(3, 6, generator=gen),
         "text": torch.randn(3, 4, generator=gen)}
    out = split(x)
    assert out["image"].shape == (3, 6) and out["text"].shape == (3, 4)
    for m, t in x.items():  # x' = x W^T + b, a square map per modality
        lin = split.linear[m]
        assert lin.weight.shape == (t.size(1), t.size(1))
        assert torch.allclose(out[m], t @ lin.weight.t() + lin.bias,
                              atol=1e-6)
    assert str(split) == "GenericUniqueSplit({'image': 6, 'text': 4})"
    with pytest.raises(ValueError, match="at least 2"):
        GenericUniqueSplit({"x": 1})
    with pytest.raises(ValueError, match=r"GenericUniqueSplit: modality 'text' "
                       r"is missing from the input; give one \[N, d\] tensor "
                       r"per modality of \['image', 'text'\], got \['image'\]"):
        split({"image": x["image"]})
    with pytest.raises(ValueError, match=r"modality 'text' has width 5 but the "
                       r"split was built for 4 \(shape \(3, 5\)\)"):
        split({"image": x["image"], "text": torch.randn(3, 5)})


def test_projection_head():
    head = ProjectionHead(8, hidden_dim=16, out_dim=4)
    z = head(torch.randn(10, 8))
    assert z.shape == (10, 4)
    assert torch.allclose(z.norm(dim=-1), torch.ones(10), atol=1e-5)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear",
                     "BatchNorm1d", "ReLU", "Linear"]
    assert str(head) == "ProjectionHead(8, 16, 4)"


def _fit_club(x, y, steps=300):
    torch.manual_seed(0)
    club = CLUBEstimator(x.size(1), y.size(1), hidden_dim=16)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        club.learning_loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        return torch.stack([club(x, y) for _ in range(20)]).mean().item()


def test_club_bound_is_non_negative_and_tracks_dependence():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 4, generator=gen)
    dependent = x @ torch.randn(4, 4, generator=gen) + \
        0.1 * torch.randn(256, 4, generator=gen)
    independent = torch.randn(256, 4, generator=gen)
    bound_dep = _fit_club(x, dependent)
    bound_ind = _fit_club(x, independent)
    assert bound_dep >= 0 and bound_ind >= 0
    assert bound_dep > 1.0
    assert bound_ind < 0.2 * bound_dep

    club = CLUBEstimator(4, 4)
    assert club.mu[-1].out_features == 4
    assert isinstance(club.logvar[-1], torch.nn.Tanh)
    for _ in range(5):
        assert club(x, independent).item() >= 0


def test_separate_align_distance_losses():
    torch.manual_seed(0)
    dims = {"image": 12, "text": 8}
    x = {m: torch.randn(20, d) for m, d in dims.items()}
    sand = SeparateAlignDistance(dims, alpha=0.5, ureg=0.25, distance="l2",
                                 head_hidden_dim=16, head_out_dim=4,
                                 distance_dim=3)
    x_split = sand.split(x)
    assert {m: t.shape[1] for m, t in x_split.items()} == dims
    parts = sand.losses(x_split)
    assert set(parts) == {"solosim", "distance"}

    # Hand composition of the same terms.
    z = {m: sand.heads[m](split_halves(x_split[m])[0]) for m in dims}
    # text anchors, as the authors' Solosimloss(t_proj, v_proj)
    assert parts["solosim"].item() == pytest.approx(
        0.5 * solo_sim_loss(z["text"], z["image"], 0.2).item(), rel=1e-5)
    assert parts["solosim"].item() != pytest.approx(
        0.5 * solo_sim_loss(z["image"], z["text"], 0.2).item(), rel=1e-5)
    dist = []
    for m in dims:
        gen, uni = split_halves(x_split[m])
        dist.append(neg_l2_distance(sand.generic_map[m](gen),
                                    sand.unique_map[m](uni)))
    assert parts["distance"].item() == pytest.approx(
        0.25 * (dist[0] + dist[1]).item() / 2, rel=1e-5)
    assert list(sand.estimator_parameters()) == []
    assert sand.estimator_loss(x_split).item() == 0.0

    index = torch.tensor([0, 3, 5])
    batch = sand.losses(x_split, index)
    assert batch["solosim"].item() != pytest.approx(parts["solosim"].item())
    # the rows ``index`` only, through the heads (BatchNorm in training
    # mode: statistics of those rows), alpha = 0.5 x one pair's SoloSim
    rows = {m: split_halves(x_split[m][index]) for m in dims}
    z = {m: sand.heads[m](rows[m][0]) for m in dims}
    assert batch["solosim"].item() == pytest.approx(
        0.5 * solo_sim_loss(z["text"], z["image"], 0.2).item(), rel=1e-5)
    dist = [neg_l2_distance(sand.generic_map[m](rows[m][0]),
                            sand.unique_map[m](rows[m][1])) for m in dims]
    assert batch["distance"].item() == pytest.approx(
        0.25 * (dist[0] + dist[1]).item() / 2, rel=1e-5)
    # one row in training (a batch's last): nothing to contrast, no batch
    # statistics to take: SoloSim is 0, the distance that row's
    one = sand.losses(x_split, torch.tensor([3]))
    assert one["solosim"].item() == 0.0
    rows = {m: split_halves(x_split[m][3:4]) for m in dims}
    dist = [neg_l2_distance(sand.generic_map[m](rows[m][0]),
                            sand.unique_map[m](rows[m][1])) for m in dims]
    assert one["distance"].item() == pytest.approx(
        0.25 * (dist[0] + dist[1]).item() / 2, rel=1e-5)
    # in evaluation (running statistics) one row is a value, of the heads
    # in evaluation mode
    sand.eval()
    one = sand.losses(x_split, torch.tensor([3]))
    rows = {m: split_halves(x_split[m][3:4]) for m in dims}
    dist = [neg_l2_distance(sand.generic_map[m](rows[m][0]),
                            sand.unique_map[m](rows[m][1])) for m in dims]
    assert one["distance"].item() == pytest.approx(
        0.25 * (dist[0] + dist[1]).item() / 2, rel=1e-5)


def test_separate_align_distance_club_estimator_isolated():
    torch.manual_seed(0)
    dims = {"image": 12, "text": 8}
    x = {m: torch.randn(20, d) for m, d in dims.items()}
    sand = SeparateAlignDistance(dims, distance="club")
    x_split = sand.split(x)
    est = {id(p) for p in sand.estimator_parameters()}
    assert len(est) == 8  # one shared estimator, two 2-layer heads
    assert sand.estimator("image") is sand.estimator("text")
    assert sand.estimator("text").mu[0].out_features == 8

    sand.estimator_loss(x_split).backward()
    for p in sand.parameters():
        assert (p.grad is not None) == (id(p) in est)

    sand.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    parts = sand.losses(x_split)
    # ureg x the mean over modalities of half the bound, as the authors'
    # clamp(bound / 2) with their permutation drawn per call
    torch.manual_seed(1)
    halves = []
    for m, (a, b) in sand.distance_pairs(x_split).items():
        perm = torch.randperm(a.size(0))
        halves.append(0.5 * club_upper_bound(
            *sand.estimator(m).gaussian(a), b, perm))
    assert parts["distance"].item() == pytest.approx(
        0.006 * (halves[0] + halves[1]).item() / 2, rel=1e-5)
    sum(parts.values()).backward()
    assert sand.splitter.linear["image"].weight.grad is not None
    assert sand.generic_map["text"].weight.grad is not None
    with pytest.raises(ValueError, match="distance"):
        SeparateAlignDistance(dims, distance="mmd")
    with pytest.raises(ValueError, match="two"):
        SeparateAlignDistance({"image": 4})
    with pytest.raises(ValueError, match="'anchor' must be one of"):
        SeparateAlignDistance(dims, anchor="txt")
    assert SeparateAlignDistance({"a": 4, "b": 4}).anchor == "a"  # no text
    assert SeparateAlignDistance(dims, anchor="image").solo_sim_order == [
        "image", "text"]
    # one estimator per modality on request
    apart = SeparateAlignDistance(dims, shared_estimator=False)
    assert len(list(apart.estimator_parameters())) == 2 * 8
    assert apart.estimator("image") is not apart.estimator("text")
