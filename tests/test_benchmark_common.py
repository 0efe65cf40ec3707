"""``benchmarks/_common.py``: result files name the code behind them."""

import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)),
                            "benchmarks"))
common = pytest.importorskip("_common")

pytestmark = pytest.mark.skipif(shutil.which("git") is None,
                                reason="git is not installed")


def git(root, *args):
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
        cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def test_code_version_names_the_commit_and_local_changes(tmp_path):
    assert common.code_version(str(tmp_path)) == \
        "unknown (not a git checkout)"
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "speed.txt").write_text("1\n")
    (tmp_path / "README.md").write_text("readme\n")
    git(tmp_path, "add", "a.py", "README.md", "benchmarks")
    git(tmp_path, "commit", "-q", "-m", "one")
    sha = git(tmp_path, "rev-parse", "--short=10", "HEAD")
    (tmp_path / "untracked.md").write_text("results\n")  # not code
    (tmp_path / "scratch.py").write_text("y = 1\n")  # nor untracked files
    assert common.code_version(str(tmp_path)) == sha
    # a table rewritten by an earlier run, or an edited README, is not code
    (results / "speed.txt").write_text("2\n")
    (tmp_path / "README.md").write_text("edited\n")
    assert common.code_version(str(tmp_path)) == sha
    (tmp_path / "a.py").write_text("x = 2\n")
    assert common.code_version(str(tmp_path)) == \
        f"{sha} + uncommitted changes"
    # a header names the version taken at the start of a run when given,
    # else this checkout's
    assert "- code: git 0123abcd45\n" in common.machine_header(
        code="0123abcd45") + "\n"
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    try:
        head = git(root, "rev-parse", "--short=10", "HEAD")
    except subprocess.CalledProcessError:
        head = "unknown"
    assert f"- code: git {head}" in common.machine_header()


def test_machine_header_names_the_threads_the_work_ran_with():
    # this process's torch threads, unless the runs were children with
    # their own (accuracy.py's pool)
    import torch

    own = common.machine_header(code="x")
    assert f"cores, torch threads {torch.get_num_threads()}\n" in own
    pool = common.machine_header(code="x",
                                 threads="1 per run, 2 runs at a time")
    assert "cores, torch threads 1 per run, 2 runs at a time\n" in pool


def test_machine_header_names_the_host_allocator_when_asked():
    def allocator(text):
        return [line for line in text.splitlines()
                if line.startswith("- host allocator")]

    assert allocator(common.machine_header(code="x")) == []
    assert allocator(common.machine_header(code="x", system_malloc=True)) \
        == ["- host allocator: glibc defaults (--system-malloc)"]
    assert allocator(common.machine_header(code="x", system_malloc=False)) \
        == ["- host allocator: glibc keeping freed memory "
            "(mde_pyg.tune_cpu_allocator)"]


@pytest.mark.skipif(not osp.exists("/proc/self/status"),
                    reason="no /proc (not Linux)")
def test_peak_rss_is_in_mib():
    peak = common.peak_rss_mib()
    with open("/proc/self/status") as f:  # VmHWM: the peak, in kB
        hwm = next(int(line.split()[1]) for line in f
                   if line.startswith("VmHWM:"))
    assert peak == pytest.approx(hwm / 1024, rel=0.05)


def test_markdown_table():
    assert common.markdown_table(["model", "s"], [["mde", 1.5], ["bm3", 2]]) \
        == "| model | s |\n|---|---|\n| mde | 1.5 |\n| bm3 | 2 |"


def test_run_child_returns_the_last_json_line_or_none(capsys):
    ok = common.run_child([sys.executable, "-c",
                           "print('warming up'); print('{\"a\": 1}'); "
                           "print('{\"a\": 2}')"], "ok")
    assert ok == {"a": 2}
    assert common.run_child([sys.executable, "-c",
                             "import sys; print('{\"a\": 1}'); "
                             "sys.exit('out of memory')"], "mde @ 10") is None
    assert capsys.readouterr().out == "mde @ 10: failed\nout of memory\n\n"


def test_baby_shape_data_has_the_real_graph(tmp_path):
    # ids 0..2 and 0..3; MMRec's x_label 0 train, 1 valid, 2 test
    rows = [(0, 3, 0), (0, 1, 0), (1, 0, 0), (2, 2, 0), (1, 3, 1),
            (2, 0, 2)]
    (tmp_path / "baby_graph.inter").write_text("\n".join(
        ["userID\titemID\tx_label"] + [f"{u}\t{i}\t{s}" for u, i, s in rows]
    ) + "\n")
    data, _ = common.baby_shape_data(str(tmp_path), graphs=False)
    assert (data["user"].num_nodes, data["item"].num_nodes) == (3, 4)
    assert data["item"].x_image.shape == (4, 4096)
    assert data["item"].x_text.shape == (4, 384)
    store = data["user", "rates", "item"]
    assert store.edge_index.tolist() == [[0, 0, 1, 2], [1, 3, 0, 2]]
    assert store.val_edge_index.tolist() == [[1], [3]]
    assert store.test_edge_index.tolist() == [[2], [0]]
    assert torch.equal(data["item", "rated_by", "user"].edge_index,
                       store.edge_index.flip(0))


def test_write_results_never_replaces_a_table_by_failures(tmp_path, capsys):
    out = tmp_path / "table.md"
    out.write_text("committed\n")
    with pytest.raises(SystemExit, match="every row failed \\(a, b\\)"):
        common.write_results(str(out), "| a | failed |\n", 0, ["a", "b"], "x")
    assert out.read_text() == "committed\n"  # left as it was
    with pytest.raises(SystemExit, match="1 row\\(s\\) failed \\(b\\)"):
        common.write_results(str(out), "| a | 1.0 |\n| b | failed |\n", 1,
                             ["b"], "x")
    assert out.read_text() == "| a | 1.0 |\n| b | failed |\n"
    common.write_results(str(out), "| a | 2.0 |\n", 1, [], "x")  # no exit
    assert out.read_text() == "| a | 2.0 |\n"
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_check_models_names_the_unknown_ones(capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="x.py")
    common.check_models(parser, ["mde", "lightgcn"])  # registered: no exit
    with pytest.raises(SystemExit) as info:
        common.check_models(parser, ["mde", "nope", "dragn"])
    assert info.value.code == 2
    assert "unknown model(s) ['nope', 'dragn']" in capsys.readouterr().err


def test_write_atomic_leaves_no_temporary_file_when_writing_fails(tmp_path):
    out = tmp_path / "table.md"
    out.write_text("committed\n")
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: no encoding
        common.write_atomic(str(out), "| a | \udc80 |\n")
    assert out.read_text() == "committed\n"  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
    common.write_atomic(str(out), "| a | 1.0 |\n")
    assert out.read_text() == "| a | 1.0 |\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_the_header_command_pastes_into_a_shell(monkeypatch):
    import shlex

    argv = ["benchmarks/accuracy.py", "--rows", "^(mde|dragon)$",
            "--data", "my data"]
    monkeypatch.setattr(sys, "argv", argv)
    line = next(line for line in common.machine_header(code="x").splitlines()
                if line.startswith("- command: "))
    assert shlex.split(line[len("- command: `"):-1]) == ["python", *argv]
