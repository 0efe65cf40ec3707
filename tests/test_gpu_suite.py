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


def test_names_the_modules_a_stage_lacks_before_anything_runs(tmp_path):
    # hide two modules the tests import, as on a GPU image without them
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['hypothesis'] = None\n"
        "sys.modules['yaml'] = None\n")
    env = {"PATH": osp.dirname(sys.executable) + ":/usr/bin:/bin",
           "PYTHONPATH": str(hide), "CUDA_VISIBLE_DEVICES": ""}

    def suite(stage):
        return subprocess.run(["bash", SCRIPT, stage, str(tmp_path / "out")],
                              capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    for stage in ("core", "tests"):
        result = suite(stage)
        assert result.returncode == 1
        assert result.stderr == (
            "gpu_suite.sh: python3 lacks hypothesis, yaml; install them, or "
            "carry their wheels to a machine without a registry\n")
    assert list((tmp_path / "out").iterdir()) == []
    # the speed stage needs neither, so it goes on to the CUDA check
    result = suite("speed")
    assert result.returncode == 1
    assert "python3 lacks" not in result.stderr
    assert "torch sees no CUDA device" in result.stderr
