import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mde_pyg.train.sampler import NegativeSampler


@st.composite
def interactions(draw):
    num_users = draw(st.integers(1, 6))
    num_items = draw(st.integers(2, 12))
    rows = []
    for u in range(num_users):
        # Up to num_items - 1 positives, so that a negative always exists.
        items = draw(st.sets(st.integers(0, num_items - 1),
                             max_size=num_items - 1))
        rows += [(u, i) for i in items]
    edge_index = torch.tensor(rows, dtype=torch.long).view(-1, 2).t()
    return edge_index, num_users, num_items


def positives(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


@settings(max_examples=60, deadline=None)
@given(interactions(), st.integers(0, 2**31), st.sampled_from([0, 1, 10]))
def test_never_a_train_positive(graph, seed, max_rounds):
    edge_index, num_users, num_items = graph
    sampler = NegativeSampler(edge_index, num_items, num_users, seed=seed,
                              max_rounds=max_rounds)
    user = torch.arange(num_users).repeat(20)
    neg = sampler.sample(user)
    assert neg.shape == user.shape and neg.dtype == torch.long
    assert int(neg.min()) >= 0 and int(neg.max()) < num_items
    pos = positives(edge_index)
    assert not any((u, i) in pos for u, i in zip(user.tolist(), neg.tolist()))


def assert_uniform(counts, items, draws):
    """Each of ``items`` drawn ``draws / len(items)`` times within 5
    binomial standard deviations: at 400,000 draws over 4 items that is
    1.4% of the mean, so a sampler 2% off uniform fails."""
    p = 1.0 / len(items)
    bound = 5 * (draws * p * (1 - p)) ** 0.5
    assert (counts[items].double() - draws * p).abs().max() < bound


DRAWS = 400_000


@pytest.mark.parametrize("max_rounds", [0, 1, 10])
def test_uniform_over_non_positives(max_rounds):
    # User 0 rated items {0, 2, 3, 5} of 8: its negatives {1, 4, 6, 7} are
    # equally likely. The rejection rounds (max_rounds > 0) and the exact
    # fallback (0, or the draws still positive after the rounds) must both
    # be uniform.
    edge_index = torch.tensor([[0, 0, 0, 0], [0, 2, 3, 5]])
    sampler = NegativeSampler(edge_index, num_items=8, seed=1,
                              max_rounds=max_rounds)
    neg = sampler.sample(torch.zeros(DRAWS, dtype=torch.long))
    counts = torch.bincount(neg, minlength=8)
    assert counts[[0, 2, 3, 5]].sum() == 0
    assert_uniform(counts, [1, 4, 6, 7], DRAWS)


@pytest.mark.parametrize("max_rounds", [0, 10])
def test_repeated_train_pairs_count_once(max_rounds):
    # As test_uniform_over_non_positives, with the pairs (0, 2) and (0, 5)
    # listed twice and user 1 after them: user 0 has 4 positives, not 6,
    # so its negatives are still {1, 4, 6, 7}. User 1 rated {1, 6}: its
    # negatives are {0, 2, 3, 4, 5, 7}.
    edge_index = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 1],
                               [5, 0, 2, 3, 5, 2, 6, 1, 6]])
    sampler = NegativeSampler(edge_index, num_items=8, seed=2,
                              max_rounds=max_rounds)
    assert str(sampler) == "NegativeSampler(2 users, 8 items, 6 positives)"
    for user, pos, neg in ((0, [0, 2, 3, 5], [1, 4, 6, 7]),
                           (1, [1, 6], [0, 2, 3, 4, 5, 7])):
        drawn = sampler.sample(torch.full((DRAWS,), user))
        counts = torch.bincount(drawn, minlength=8)
        assert counts[pos].sum() == 0
        assert_uniform(counts, neg, DRAWS)


def test_seeded_and_state_roundtrip():
    edge_index = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    user = torch.tensor([0, 1, 2, 2, 1, 0])
    a = NegativeSampler(edge_index, 6, seed=3)
    b = NegativeSampler(edge_index, 6, seed=3)
    assert torch.equal(a.sample(user), b.sample(user))
    state = a.state_dict()
    first = a.sample(user)
    a.load_state_dict(state)
    assert torch.equal(a.sample(user), first)
    assert a.sample(user.view(2, 3)).shape == (2, 3)
    assert str(a) == "NegativeSampler(3 users, 6 items, 4 positives)"


def test_user_with_every_item_raises():
    edge_index = torch.tensor([[0, 0, 0, 1], [0, 1, 2, 0]])
    with pytest.raises(ValueError, match=r"1 user\(s\) interacted with all 3"):
        NegativeSampler(edge_index, num_items=3)
    with pytest.raises(ValueError, match="Item ids"):
        NegativeSampler(edge_index, num_items=2)


def test_sampling_for_an_unknown_user_is_refused():
    edge_index = torch.tensor([[0, 0, 1, 2], [0, 1, 2, 3]])
    sampler = NegativeSampler(edge_index, 6)
    with pytest.raises(ValueError, match=r"'user' has ids outside \[0, 3\) "
                       r"\(the users of the sampler's interactions\): "
                       r"\[3, -1\]"):
        sampler.sample(torch.tensor([0, 3, 2, -1]))
    assert sampler.sample(torch.tensor([], dtype=torch.long)).numel() == 0
