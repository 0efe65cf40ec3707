"""Epoch time and peak memory as the dataset grows (synthetic data).

For each number of interactions (20 per user, items = users / 4, features
image 128-d and text 64-d), builds the graphs and times one training epoch
(:meth:`mde_pyg.train.Trainer.train_epoch`, after a warm-up epoch) of each
model, each size and model in a fresh subprocess so that its peak memory
is its own. Writes ``benchmarks/results/scaling_<device>.md`` and a PNG
plot beside it.

With ``--max-steps N``, an epoch of more than ``N`` batches is not run
whole: after a warm-up of ``N`` batches, the process times the start of an
epoch with its first batch (shuffle, negatives, one step: ``T1``) and
then with its first ``1 + N`` batches (``T2``), and reports
``T1 + (batches - 1) (T2 - T1) / N`` seconds per epoch. The table says
which epochs were timed whole.

With ``--candidates C``, each synthetic user chooses its items among ``C``
random ones instead of all items (``make_synthetic(candidates=C)``), so
that drawing the data costs O(users x C) instead of O(users x items):
what keeps the exact draw to a few million interactions.

Usage::

    python benchmarks/scaling.py --interactions 10000 100000 1000000
    python benchmarks/scaling.py --interactions 1000000 3000000 \
        --max-steps 50 --output benchmarks/results/scaling_cpu_large.md
    python benchmarks/scaling.py --interactions 1000000 3000000 10000000 \
        --max-steps 50 --candidates 1000 \
        --output benchmarks/results/scaling_cpu_10m.md
"""

from __future__ import annotations

import argparse
import json
import math
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
#: Fewest interactions a row may ask for: 50 users (the least
#: :func:`run_one` draws) x 20 interactions each.
MIN_INTERACTIONS = 1_000
sys.path.insert(0, HERE)


def _seconds(fn, device: str) -> float:
    import torch

    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def epoch_estimate(first: float, longer: float, steps: int,
                   batches: int) -> float:
    """Seconds of a ``batches``-batch epoch from the seconds of its start
    with 1 batch (``first``) and with ``1 + steps`` batches (``longer``):
    the per-epoch work once, every batch at the mean step time.
    """
    if steps < 1:
        raise ValueError(f"'steps' must be >= 1, got {steps}")
    return first + (batches - 1) * (longer - first) / steps


def run_one(model_name: str, interactions: int, device: str,
            max_steps: int | None = None,
            candidates: int | None = None) -> dict:
    """Build the synthetic data and graphs of one size and time one epoch
    of ``model_name``; return the table's row as a dict.
    """
    import torch

    from _common import peak_rss_mib
    from mde_pyg.data import make_synthetic
    from mde_pyg.models import build_model
    from mde_pyg.train import Trainer
    from mde_pyg.transforms import MultiModalGraphs

    per_user = 20
    num_users = max(interactions // per_user, 50)
    num_items = max(num_users // 4, 100)
    data = make_synthetic(num_users, num_items,
                          modalities={"image": 128, "text": 64},
                          interactions_per_user=per_user, seed=0,
                          candidates=candidates)
    start = time.perf_counter()  # the graphs only, not the data's draw
    data = MultiModalGraphs()(data)
    graphs = time.perf_counter() - start
    torch.manual_seed(0)
    model = build_model(model_name, data)
    trainer = Trainer(model, data, device=device, progress=False)
    batches = math.ceil(trainer.train_user.numel() / trainer.batch_size)
    whole = max_steps is None or batches <= max_steps
    trainer.train_epoch(max_batches=None if whole else max_steps)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if whole:
        epoch = _seconds(trainer.train_epoch, device)
    else:
        first = _seconds(lambda: trainer.train_epoch(max_batches=1), device)
        longer = _seconds(
            lambda: trainer.train_epoch(max_batches=1 + max_steps), device)
        epoch = epoch_estimate(first, longer, max_steps, batches)
    out = {"model": model_name, "interactions": interactions,
           "users": num_users, "items": num_items,
           "train_edges": int(data["user", "rates", "item"].num_edges),
           "epoch": epoch, "batches": batches,
           "timed_batches": batches if whole else 1 + max_steps,
           "graphs": graphs, "peak_rss_mib": peak_rss_mib()}
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, nargs="+",
                        default=[10_000, 100_000, 1_000_000], metavar="N",
                        help="sizes of the synthetic datasets, in "
                             "interactions (default: 10^4 10^5 10^6)")
    parser.add_argument("--models", nargs="+", default=["lightgcn", "mde"],
                        metavar="MODEL",
                        help="default: lightgcn mde")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (default: cpu)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="time epochs of more batches from their first "
                        "1 + MAX_STEPS batches (see the module docstring)")
    parser.add_argument("--candidates", type=int, default=None,
                        help="each user chooses among CANDIDATES random "
                        "items (see the module docstring)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="the Markdown table, with its plot beside it "
                             "as .png (default: benchmarks/results/"
                             "scaling_<device>.md)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="do not call mde_pyg.tune_cpu_allocator")
    args = parser.parse_args()
    from _common import check_models

    check_models(parser, args.models)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f"--max-steps must be >= 1, got {args.max_steps}")
    if min(args.interactions) < MIN_INTERACTIONS:
        parser.error(f"--interactions must be >= {MIN_INTERACTIONS:,} "
                     f"(the smallest synthetic set: 50 users x 20), got "
                     f"{min(args.interactions)}")
    from _common import code_version

    args.code = code_version()  # before any edit during the run
    if args.child is not None:
        if not args.system_malloc:
            from mde_pyg import tune_cpu_allocator

            tune_cpu_allocator()
        name, size = args.child
        print(json.dumps(run_one(name, int(size), args.device,
                                 args.max_steps, args.candidates)))
        return

    from _common import machine_header, markdown_table, run_child, write_results

    results, failed = [], []
    for size in args.interactions:
        for name in args.models:
            cmd = [sys.executable, __file__, "--child", name, str(size),
                   "--device", args.device]
            if args.max_steps is not None:
                cmd += ["--max-steps", str(args.max_steps)]
            if args.candidates is not None:
                cmd += ["--candidates", str(args.candidates)]
            if args.system_malloc:
                cmd.append("--system-malloc")
            res = run_child(cmd, f"{name} @ {size}")
            if res is None:
                failed.append((name, size))
                continue
            results.append(res)
            print(json.dumps(res), flush=True)

    rows = [[r["model"], f"{r['interactions']:,}", f"{r['users']:,}",
             f"{r['items']:,}", f"{r['train_edges']:,}",
             f"{r['epoch']:.2f}", _timed_cell(r), f"{r['graphs']:.1f}",
             f"{r.get('peak_gpu_mib', r['peak_rss_mib']):.0f}"]
            for r in results]
    rows += [[name, f"{size:,}", "failed"] + [""] * 6
             for name, size in failed]
    header = ["model", "interactions", "users", "items", "train edges",
              "s / epoch", "batches timed", "graph build s",
              "peak GPU MiB" if args.device.startswith("cuda")
              else "peak RSS MiB"]
    stem = osp.join(HERE, "results",
                    f"scaling_{args.device.split(':')[0]}")
    out = args.output or f"{stem}.md"
    png = osp.splitext(out)[0] + ".png"
    if results:
        plot(results, png, args.device)
    machine = machine_header(args.device, args.system_malloc,
                             code=args.code)
    text = (f"# Scaling with the number of interactions ({args.device})\n\n"
            f"{machine}\n\n"
            f"Synthetic data "
            f"(`mde_pyg.data.make_synthetic`, 20 interactions per user"
            f"{_candidates_note(args.candidates)}, "
            f"items = users / 4, image 128-d + text 64-d), all graphs "
            f"built, batch 2048, one epoch after a warm-up epoch"
            f"{_partial_note(args.max_steps)}.\n\n"
            f"{markdown_table(header, rows)}\n\n![scaling]"
            f"({osp.basename(png)})\n")
    write_results(out, text, len(results),
                  [f"{name} @ {size:,}" for name, size in failed],
                  "scaling.py")


def _timed_cell(result: dict) -> str:
    """``"all 391"`` for an epoch timed whole, else ``"51 of 1,172"``."""
    if result["timed_batches"] >= result["batches"]:
        return f"all {result['batches']:,}"
    return f"{result['timed_batches']:,} of {result['batches']:,}"


def _candidates_note(candidates: int | None) -> str:
    """How the users chose their items, for the table's text."""
    if candidates is None:
        return ""
    return f" chosen among {candidates:,} random items each"


def _partial_note(max_steps: int | None) -> str:
    if max_steps is None:
        return ""
    return (f"; an epoch of more than {max_steps} batches is estimated "
            f"after a warm-up of {max_steps} batches as T1 + (batches - 1)"
            f" (T2 - T1) / {max_steps}, from the seconds T1 of an epoch's "
            f"start with its first batch (shuffle, negatives, one step) and"
            f" T2 with its first {1 + max_steps}")


def plot(results: list, path: str, device: str) -> None:
    """Epoch time and peak memory against interactions, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    key = "peak_gpu_mib" if device.startswith("cuda") else "peak_rss_mib"
    for name in sorted({r["model"] for r in results}):
        rs = [r for r in results if r["model"] == name]
        xs = [r["interactions"] for r in rs]
        axes[0].loglog(xs, [r["epoch"] for r in rs], "o-", label=name)
        axes[1].loglog(xs, [r[key] for r in rs], "o-", label=name)
    axes[0].set(xlabel="interactions", ylabel="seconds / epoch")
    axes[1].set(xlabel="interactions", ylabel="peak memory (MiB)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"mde-pyg scaling ({device})")
    fig.tight_layout()
    from mde_pyg.files import atomic_path

    with atomic_path(path) as tmp:  # no half-written or leftover image
        fig.savefig(tmp, dpi=110, format="png")


if __name__ == "__main__":
    main()
