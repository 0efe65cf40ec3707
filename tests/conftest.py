"""Shared fixtures: the real data folder beside the project, tiny graphs."""

import os
import os.path as osp

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The real data: $MDE_PYG_DATA, or ../shared/data beside the project root.
SHARED_DATA = osp.abspath(os.environ.get("MDE_PYG_DATA") or osp.join(
    osp.dirname(ROOT), "shared", "data"))
LFM2K = osp.join(SHARED_DATA, "lfm2k")
BABY_GRAPH = osp.join(SHARED_DATA, "baby_graph")
LFM2K_MODALITIES = {"text": "all-MiniLM-L6-v2.npy", "audio": "vggish.npy"}


def require_folder(path: str) -> None:
    """Skip the calling test when a real-data folder is absent."""
    if not osp.isdir(path):
        pytest.skip(f"real data folder '{path}' is absent (it lives in "
                    f"../shared/data beside the project root, or set "
                    f"MDE_PYG_DATA to the folder holding lfm2k/)")


def _real_data_line() -> str:
    if osp.isdir(LFM2K):
        return f"real data: {SHARED_DATA}"
    return (f"real data: none at {SHARED_DATA}, so the tests that read it "
            f"skip (set MDE_PYG_DATA to the folder holding lfm2k/)")


def pytest_report_header(config) -> str:
    """Say up front whether the real-data tests can run."""
    return _real_data_line()


def pytest_terminal_summary(terminalreporter) -> None:
    """Say it again at the end when they could not (also under ``-q``)."""
    if not osp.isdir(LFM2K):
        terminalreporter.write_line(_real_data_line())


@pytest.fixture(autouse=True)
def single_thread():
    """Run tests on one thread: the tensors are tiny, and more threads only
    add contention on a small shared machine."""
    num = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num)


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """Run the tests not marked ``cuda`` as on a machine without a GPU.

    The CLI (and the scripts it runs) trains on CUDA by default when a GPU
    is present, and two CUDA runs differ in the last bits, which the exact
    comparisons of the CPU tests do not allow; the ``cuda`` cases compare
    within tolerances instead. (A module-scoped fixture is set up before
    this one, so it passes ``--device cpu`` itself.)
    """
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # for subprocesses


@pytest.fixture
def lfm2k_path() -> str:
    require_folder(LFM2K)
    return LFM2K


@pytest.fixture
def synthetic_graphs():
    """A small synthetic dataset with every graph built."""
    from mde_pyg.data import SyntheticMultiModal
    from mde_pyg.transforms import MultiModalGraphs

    torch.manual_seed(0)
    return SyntheticMultiModal(num_users=60, num_items=40,
                               interactions_per_user=8,
                               pre_transform=MultiModalGraphs(k_user=5,
                                                              k_item=4))[0]


@pytest.fixture
def tiny_folder(tmp_path):
    """A 4-user, 5-item folder in MMRec's layout with two modalities."""
    # MMRec layout. Train popularity of items 0..4: 4, 3, 2, 1, 0.
    rows = [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 3, 0), (1, 0, 0), (1, 1, 0),
            (1, 2, 0), (2, 0, 0), (2, 1, 0), (3, 0, 0),
            (3, 2, 1), (2, 4, 1), (0, 4, 2)]
    path = tmp_path / "tiny"
    path.mkdir()
    lines = ["userID\titemID\tx_label"] + [f"{u}\t{i}\t{s}" for u, i, s in rows]
    (path / "tiny.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    np.save(path / "text.npy", rng.normal(size=(5, 4)).astype(np.float32))
    np.save(path / "image.npy", rng.normal(size=(5, 3)).astype(np.float32))
    return path
