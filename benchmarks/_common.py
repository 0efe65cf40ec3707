"""Helpers shared by the benchmark scripts: machine info and result files."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import sys
import tempfile

import torch


def machine_header(device: str = "cpu") -> str:
    """Describe the machine, versions and date as Markdown lines."""
    import torch_geometric

    from mde_pyg.typing import WITH_TORCH_SPARSE

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"- date: {now:%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"torch_geometric {torch_geometric.__version__}, torch_sparse "
        f"{'yes' if WITH_TORCH_SPARSE else 'no'}",
        f"- command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`",
    ]
    if device.startswith("cuda") and torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name()}")
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown_table(header: list, rows: list) -> str:
    """Render rows (lists of cells) as a Markdown table."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
