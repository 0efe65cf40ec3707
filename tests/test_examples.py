import json
import os.path as osp
import subprocess
import sys

from mde_pyg.runs import load_run
from mde_pyg.train import Evaluator

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_amazon_baby_example_on_another_folder(lfm2k_path, tmp_path):
    # The example's run is one that load_run (and mde-pyg recommend)
    # reloads: its weights give the metrics the example reported.
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, osp.join(ROOT, "examples", "amazon_baby.py"),
         "--data", lfm2k_path, "--modality", "text=all-MiniLM-L6-v2.npy",
         "--modality", "audio=vggish.npy", "--max-epochs", "1",
         "--output", str(out)],
        capture_output=True, text=True, check=True)
    result = json.loads((out / "results.json").read_text())
    assert f"{result['test']['recall@20']:.4f}" in done.stdout
    model, data = load_run(out)
    assert Evaluator(data, "test")(model) == result["test"]
