"""``benchmarks/gpu_suite.sh``: usage and its refusal without a GPU."""

import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

SCRIPT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                  "benchmarks", "gpu_suite.sh")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None,
                                reason="bash is not installed")


def run(*args, tmp_path):
    env = {"PATH": osp.dirname(sys.executable) + ":/usr/bin:/bin"}
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path)


def test_usage_names_the_stages(tmp_path):
    for args in ([], ["speed"], ["bogus", str(tmp_path / "out")]):
        result = run(*args, tmp_path=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("\n  bash benchmarks/gpu_suite.sh "
                                        "STAGE OUT [DATA]")
        assert "core | tests | speed | accuracy-paper | accuracy-more | " \
            "all" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_refuses_without_cuda_before_writing(tmp_path):
    result = run("speed", str(tmp_path / "out"), tmp_path=tmp_path)
    assert result.returncode == 1
    assert "torch sees no CUDA device" in result.stderr
    assert list((tmp_path / "out").iterdir()) == []
