"""``benchmarks/scaling.py``: epochs timed in part are scaled correctly."""

import os.path as osp
import subprocess
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)),
                            "benchmarks"))
scaling = pytest.importorskip("scaling")


def test_epoch_estimate_counts_the_epoch_start_once():
    # 2 s for the start with one batch, 12 s with 1 + 10 batches: 1 s a
    # batch, 1 s of per-epoch work; 100 batches take 1 + 100 s.
    assert scaling.epoch_estimate(2.0, 12.0, 10, 100) == pytest.approx(101)
    assert scaling.epoch_estimate(2.0, 12.0, 10, 1) == pytest.approx(2)
    with pytest.raises(ValueError, match="'steps'"):
        scaling.epoch_estimate(2.0, 12.0, 0, 100)


def test_run_one_times_part_of_a_long_epoch():
    # 10^4 interactions: 500 users, 8,000 train edges, 4 batches of 2048.
    part = scaling.run_one("lightgcn", 10_000, "cpu", max_steps=2)
    assert (part["users"], part["train_edges"]) == (500, 8000)
    assert (part["batches"], part["timed_batches"]) == (4, 3)
    assert scaling._timed_cell(part) == "3 of 4"
    whole = scaling.run_one("lightgcn", 10_000, "cpu", max_steps=4)
    assert (whole["batches"], whole["timed_batches"]) == (4, 4)
    assert scaling._timed_cell(whole) == "all 4"


def test_max_steps_below_one_is_refused():
    out = subprocess.run([sys.executable, scaling.__file__, "--max-steps",
                          "0"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--max-steps must be >= 1, got 0" in out.stderr


def test_fewer_interactions_than_the_smallest_set_are_refused(tmp_path):
    out = subprocess.run([sys.executable, scaling.__file__, "--interactions",
                          "0", "--output", str(tmp_path / "s.md")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "--interactions must be >= 1,000" in out.stderr
    assert not any(tmp_path.iterdir())


def test_candidates_reach_the_synthetic_draw(monkeypatch):
    import mde_pyg.data

    calls = []
    draw = mde_pyg.data.make_synthetic

    def recording(*args, **kwargs):
        calls.append(kwargs["candidates"])
        return draw(*args, **kwargs)

    monkeypatch.setattr(mde_pyg.data, "make_synthetic", recording)
    row = scaling.run_one("lightgcn", 10_000, "cpu", max_steps=1,
                          candidates=40)
    assert calls == [40]
    assert (row["users"], row["train_edges"]) == (500, 8000)
    assert scaling._candidates_note(40) == " chosen among 40 random items each"
    assert scaling._candidates_note(None) == ""
