import json
import os
import stat

import pytest
import torch

from mde_pyg.files import atomic_path, atomic_save, atomic_write_json


def test_atomic_path_replaces_only_when_complete(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_path(path) as tmp:
        assert not path.exists()  # nothing under the name while writing
        with open(tmp, "w") as f:
            f.write("first")
    assert path.read_text() == "first"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open()
    with pytest.raises(RuntimeError, match="stop"):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("stop")
    assert path.read_text() == "first"  # the previous version stays
    path.chmod(0o640)  # a mode of the user's own is kept on rewriting
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("second")
    assert path.read_text() == "second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_atomic_save_and_json_round_trip(tmp_path):
    state = {"epoch": 3, "w": torch.arange(4.0)}
    atomic_save(state, tmp_path / "last.pt")
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], state["w"])
    atomic_write_json({"recall@20": 0.25}, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text()) == {
        "recall@20": 0.25}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt",
                                                          "results.json"]


def test_atomic_path_cleans_up_on_interrupt_and_syncs_file_and_folder(
        tmp_path, monkeypatch):
    # files.py: "flushed to disk and renamed ... a crash, an error or Ctrl-C
    # leaves the previous version (or nothing) in place": Ctrl-C leaves no
    # .tmp file, and the file, then its folder, are synced
    from mde_pyg import files

    path = tmp_path / "out.txt"
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    synced, real = [], os.fsync

    def spy(fd):
        synced.append(os.fstat(fd).st_mode)
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    files.atomic_write_text("x", path)
    assert path.read_text() == "x"
    assert [stat.S_ISREG(m) for m in synced] == [True, False]
    assert stat.S_ISDIR(synced[1])


def test_identity_cache_keeps_the_last_size_objects():
    from mde_pyg._cache import IdentityCache

    calls = []
    for size in (1, 2):
        cache = IdentityCache(size=size)
        a, b = torch.zeros(2), torch.ones(2)
        for x in (a, a, b, a):
            cache.get(x, lambda t, size=size: calls.append(size)
                      or float(t.sum()))
        # size 1 forgets a when b comes; size 2 keeps both
        assert calls.count(size) == (3 if size == 1 else 2)
        assert len(cache) == size
        a.add_(1)  # changed in place: computed again (was 0.0)
        assert cache.get(a, lambda t: float(t.sum())) == 2.0
