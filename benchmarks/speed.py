"""Speed and memory at the Amazon Baby shape, with the dense-work floor.

Uses the real Baby interaction graph (``../shared/data/baby_graph``: 19,445
users, 7,050 items, 118,551 train edges) with random item features of the
real shapes (image 4096-d, text 384-d), d = 64, batch 2048. For each model,
in a fresh subprocess (so that peak memory is its own), it reports:

* graph build time (user-item normalisation, co-occurrence, kNN);
* seconds per training epoch (:meth:`mde_pyg.train.Trainer.train_epoch`,
  the mean of ``--epochs`` epochs after one warm-up epoch);
* the floor: the unavoidable dense work of one epoch, measured in the same
  process: forward + backward of the model's feature projections over all
  items and of its sparse propagation products, times the number of
  batches; and the ratio epoch / floor;
* seconds of one full-ranking evaluation of all test users;
* peak memory (RSS on CPU, allocated on CUDA).

Writes ``benchmarks/results/speed_<device>.md``.

Usage::

    python benchmarks/speed.py --models mde lightgcn --device cpu
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import subprocess
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)
DEFAULT_DATA = osp.join(osp.dirname(osp.dirname(HERE)), "shared", "data",
                        "baby_graph")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, repeat=3):
    """Median seconds of ``fn()`` over ``repeat`` runs after a warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def floor_step_seconds(model, device, precision: str) -> float:
    """Forward + backward of the model's projections and sparse products.

    Looks the pieces up on the model: every ``nn.Linear`` applied to raw
    item features (an input width equal to a modality's width) and every
    graph of its ``graphs`` container, propagated ``num_layers`` times per
    modality for the user-item graph and once for the others. Only the
    matrix products are counted, not losses or element-wise work.
    """
    import contextlib

    import torch

    from mde_pyg.nn.sparse import csr_matmul

    features = {m: getattr(model, f"x_{m}") for m in
                getattr(model, "modalities", [])
                if hasattr(model, f"x_{m}")}
    widths = {x.size(1): x for x in features.values()}
    projections, seen = [], set()
    for module in model.modules():  # MLPs first: they hold their Linear
        if isinstance(module, torch.nn.Sequential) and isinstance(
                module[0], torch.nn.Linear) and \
                module[0].in_features in widths:
            projections.append((module, widths[module[0].in_features]))
            seen.add(id(module[0]))
    for module in model.modules():  # then single linear projections
        if isinstance(module, torch.nn.Linear) and id(module) not in seen \
                and module.in_features in widths:
            projections.append((module, widths[module.in_features]))
    dim = 64
    graphs = []
    container = getattr(model, "graphs", None)
    num_mod = max(len(features), 1)
    if container is not None:
        for name in container.names:
            adj, _ = container.get(name)
            if not isinstance(adj, torch.Tensor) or adj.layout != \
                    torch.sparse_csr:
                continue
            hops = 2 * num_mod if name == "user_item" else 1
            graphs.append((adj, hops))
    cast = (torch.autocast(device.type, dtype=torch.bfloat16)
            if precision == "bf16" else contextlib.nullcontext())

    def step():
        outs = []
        with cast:
            for module, x in projections:
                outs.append(module(x).float().sum())
        for adj, hops in graphs:
            h = torch.randn(adj.size(1), dim, device=device,
                            requires_grad=True)
            out = h
            for _ in range(hops):
                out = csr_matmul(adj, out, adj)
            outs.append(out.sum())
        if outs:
            torch.stack(outs).sum().backward()

    return _timed(step, device)


def run_one(args) -> dict:
    import torch

    from _common import baby_shape_data, peak_rss_mib
    from mde_pyg.models import build_model
    from mde_pyg.train import Trainer

    torch.manual_seed(0)
    device = torch.device(args.device)
    data, graph_seconds = baby_shape_data(args.data)
    model = build_model(args.child, data)
    trainer = Trainer(model, data, batch_size=args.batch_size,
                      device=device, precision=args.precision,
                      progress=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    num_batches = -(-data["user", "rates", "item"].edge_index.size(1)
                    // args.batch_size)
    epoch = floor = 0.0
    if trainer.optimizer is not None:  # MostPop has nothing to train
        trainer.train_epoch()  # warm-up
        times = []
        for _ in range(args.epochs):
            _sync(device)
            start = time.perf_counter()
            trainer.train_epoch()
            _sync(device)
            times.append(time.perf_counter() - start)
        epoch = sum(times) / len(times)
        floor = floor_step_seconds(model, device, args.precision) * \
            num_batches
    evaluation = _timed(lambda: trainer.test_evaluator(model), device, 2)
    out = {"model": args.child, "epoch": epoch, "floor": floor,
           "step": epoch / num_batches,
           "eval": evaluation, "graphs": graph_seconds,
           "peak_rss_mib": peak_rss_mib()}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["mostpop", "lightgcn", "vbpr", "freedom",
                                 "dragon", "bm3", "sand", "mde"])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32",
                        choices=["fp32", "bf16"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--output", default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not osp.isdir(args.data):
        sys.exit(f"The Baby graph folder '{args.data}' is absent: pass "
                 f"--data FOLDER holding baby_graph.inter")

    if args.child is not None:
        print(json.dumps(run_one(args)))
        return

    from _common import machine_header, markdown_table, write_atomic

    rows = []
    for name in args.models:
        cmd = [sys.executable, __file__, "--child", name, "--data",
               args.data, "--device", args.device, "--precision",
               args.precision, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            rows.append([name, "failed", "", "", "", "", "", ""])
            continue
        res = json.loads(proc.stdout.splitlines()[-1])
        memory = (f"{res['peak_gpu_mib']:.0f} (GPU)" if "peak_gpu_mib" in res
                  else f"{res['peak_rss_mib']:.0f}")
        ratio = (res["epoch"] / res["floor"] if res["floor"] > 1e-3
                 else None)
        rows.append([name, f"{res['epoch']:.2f}", f"{res['step']:.3f}",
                     f"{res['floor']:.2f}",
                     "-" if ratio is None else f"{ratio:.2f}",
                     f"{res['eval']:.2f}", f"{res['graphs']:.1f}", memory])
        print(" | ".join(rows[-1]), flush=True)
    header = ["model", "s / epoch", "s / step", "floor s / epoch",
              "epoch / floor",
              "s / full eval", "graph build s", "peak MiB"]
    text = (f"# Speed at the Amazon Baby shape ({args.device}, "
            f"{args.precision})\n\n{machine_header(args.device)}\n\n"
            f"19,445 users x 7,050 items, 118,551 train edges, random "
            f"features image 4096-d + text 384-d, d = 64, batch "
            f"{args.batch_size}; epoch = mean of {args.epochs} after a "
            f"warm-up. Floor = forward + backward of the model's feature "
            f"projections and sparse propagation products, times the "
            f"batches per epoch.\n\n{markdown_table(header, rows)}\n")
    out = args.output or osp.join(
        HERE, "results", f"speed_{args.device.split(':')[0]}_"
        f"{args.precision}.md")
    write_atomic(out, text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
