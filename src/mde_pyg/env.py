"""What a run ran on: versions, processor, threads and GPU."""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_name() -> str:
    """Return the processor's model name (from ``/proc/cpuinfo`` on Linux,
    else what :mod:`platform` knows).
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str | None = None) -> dict[str, Any]:
    """Return the versions and the machine a run uses, as plain values.

    Recorded in ``results.json`` by ``mde-pyg train`` and in the headers
    of the benchmark tables, so that every figure says what produced it.

    Args:
        device (str, optional): The run's device; a CUDA device adds the
            GPU's name. (default: :obj:`None`)
    """
    import torch
    import torch_geometric

    from mde_pyg import __version__
    from mde_pyg.typing import WITH_TORCH_SCATTER, WITH_TORCH_SPARSE

    env = {
        "mde_pyg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "torch_sparse": WITH_TORCH_SPARSE,
        "torch_scatter": WITH_TORCH_SCATTER,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if (device is not None and str(device).startswith("cuda")
            and torch.cuda.is_available()):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env
