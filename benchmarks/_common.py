"""Helpers shared by the benchmark scripts: machine info and result files."""

from __future__ import annotations

import datetime
import os
import resource
import shlex
import subprocess
import sys

import torch


def code_version(root: str | None = None) -> str:
    """Return the git commit of the code being measured.

    ``<sha>`` for a clean tree, ``<sha> + uncommitted changes`` when a
    tracked file differs, ``unknown (not a git checkout)`` outside a
    repository: a result file names the code that produced it. Markdown
    files and ``benchmarks/results/`` are not code: a table written by an
    earlier run of a session does not mark the next run's code as changed.

    Args:
        root (str, optional): The checkout. (default: this project's)
    """
    if root is None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--",
                    ".", ":(exclude)*.md", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{sha} + uncommitted changes" if dirty else sha


def machine_header(device: str = "cpu", system_malloc: bool | None = None,
                   code: str | None = None,
                   threads: str | None = None) -> str:
    """Describe the machine, versions and date as Markdown lines.

    ``system_malloc`` (when not :obj:`None`) adds which host allocator
    setting the children ran with. ``code`` is :func:`code_version` taken
    when the run started (taken now when :obj:`None`), so that editing
    the checkout during a long run does not mislabel its results.
    ``threads`` describes the threads the measured work ran with where
    that is not this process's (children run in a pool, say).
    """
    from mde_pyg.env import environment

    env = environment(device)
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"- date: {now:%Y-%m-%d %H:%M} UTC",
        f"- machine: {env['cpu']}, {env['cores']} cores, torch threads "
        f"{threads or env['torch_threads']}",
        f"- python {env['python']}, torch {env['torch']}, "
        f"torch_geometric {env['torch_geometric']}, torch_sparse "
        f"{'yes' if env['torch_sparse'] else 'no'}",
        f"- command: `{shlex.join(['python'] + sys.argv)}`",
        f"- code: git {code or code_version()}",
    ]
    if system_malloc is not None:
        lines.append("- host allocator: " + (
            "glibc defaults (--system-malloc)" if system_malloc else
            "glibc keeping freed memory (mde_pyg.tune_cpu_allocator)"))
    if "gpu" in env:
        lines.append(f"- GPU: {env['gpu']}")
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


def run_child(cmd: list, label: str) -> dict | None:
    """Run one benchmark child process; return the JSON dict it printed last.

    A child that fails is reported (``label`` and the end of its stderr)
    and gives :obj:`None`, so the parent can go on with the next one.
    """
    import json
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{label}: failed\n{proc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(proc.stdout.splitlines()[-1])


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename
    (:func:`mde_pyg.files.atomic_write_text`).

    A failed write (a full disk, text that cannot be encoded, an
    interrupt) removes the temporary file and leaves ``path`` as it was.
    """
    from mde_pyg.files import atomic_write_text

    atomic_write_text(text, path)


def baby_shape_data(folder: str, seed: int = 0, graphs: bool = True):
    """Amazon Baby's real interaction graph with random features of the
    real shapes (image 4096-d, text 384-d), all graphs built.

    Returns:
        ``(data, seconds to build the graphs)``.
    """
    import time

    import numpy as np
    from torch_geometric.data import HeteroData

    from mde_pyg.data.mmrec import RATED_BY, RATES, _edge_index, read_inter
    from mde_pyg.transforms import MultiModalGraphs

    user, item, split = read_inter(os.path.join(folder, "baby_graph.inter"))
    num_users, num_items = int(user.max()) + 1, int(item.max()) + 1
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["user"].num_nodes = num_users
    data["item"].num_nodes = num_items
    data["item"].x_image = torch.rand(num_items, 4096, generator=gen)
    data["item"].x_text = torch.randn(num_items, 384, generator=gen)
    names = ("edge_index", "val_edge_index", "test_edge_index")
    for code, name in enumerate(names):
        keep = split == code
        data[RATES][name] = _edge_index(user[keep], item[keep], num_items)
    data[RATED_BY].edge_index = data[RATES].edge_index.flip(0)
    del np
    start = time.perf_counter()
    if graphs:
        data = MultiModalGraphs()(data)
    return data, time.perf_counter() - start


def write_results(out: str, text: str, ok: int, failed: list,
                  script: str) -> None:
    """Write a results table atomically, unless every row failed.

    With no row measured, ``out`` is left as it was (a committed table is
    never replaced by one of failures). When some rows failed (marked
    ``failed`` in ``text``), the file is written and the script exits with
    status 1 naming them, so that a run with failures never looks clean.

    Args:
        out (str): The results file.
        text (str): Its content.
        ok (int): Number of rows measured.
        failed (list): Labels of the rows that failed.
        script (str): The script's name, for the messages.
    """
    import sys

    if ok == 0:
        sys.exit(f"{script}: every row failed ({', '.join(failed)}); their "
                 f"errors are printed above; '{out}' is left as it was")
    write_atomic(out, text)
    print(f"wrote {out}")
    if failed:
        sys.exit(f"{script}: {len(failed)} row(s) failed ({', '.join(failed)})"
                 f", marked 'failed' in '{out}'; their errors are printed "
                 f"above")


def check_models(parser, models: list) -> None:
    """Exit through ``parser.error`` when a name in ``models`` is not a
    registered model, before any run starts.
    """
    from mde_pyg.models import available_models

    unknown = [m for m in models if m not in available_models()]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from "
                     f"{available_models()}")
