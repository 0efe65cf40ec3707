"""Where the tests look for the real data, and what they say without it."""

import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_mde_pyg_data_moves_the_real_data_and_a_miss_is_reported(tmp_path):
    # MDE_PYG_DATA names the folder holding lfm2k/; without it there, the
    # tests that read it skip and the run says so at its end, under -q
    env = {**os.environ, "MDE_PYG_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_readme.py::test_data_snippet"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert (f"real data: none at {tmp_path}, so the tests that read it skip "
            f"(set MDE_PYG_DATA to the folder holding lfm2k/)") in done.stdout
