"""Time and peak memory of the chunked item kNN graph builder.

Runs :class:`mde_pyg.transforms.ItemKNNGraph` (k=10) on random features
(d=384 by default) for each item count and each ``--precision`` of
:func:`mde_pyg.transforms.knn_cosine`, each in a fresh subprocess so that its
peak memory is its own, and writes a Markdown table to
``benchmarks/results/knn_graph_<device>.md``. ``--baseline`` also times the
plain row-chunk scan (one ``[chunk, N]`` product and top-k per chunk, the
builder's float32 fallback) for comparison.

Usage::

    python benchmarks/knn_graph.py --items 10000 100000 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)

BASELINE = "row-chunk fp32"


def run_one(num_items: int, dim: int, k: int, device: str,
            method: str) -> dict:
    import torch
    from torch_geometric.data import HeteroData

    from _common import peak_rss_mib
    from mde_pyg.transforms import ItemKNNGraph, _knn_rows

    torch.manual_seed(0)
    data = HeteroData()
    data["item"].x_text = torch.randn(num_items, dim, device=device)
    base = peak_rss_mib()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if method == BASELINE:
        x = torch.nn.functional.normalize(data["item"].x_text, dim=-1)
        nbr = _knn_rows(x, torch.arange(num_items, device=device), k, False,
                        2**28)
        edges = nbr.numel()
    else:
        ItemKNNGraph(k, precision=method)(data)
        edges = int(data["item", "similar_text", "item"].num_edges)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {"items": num_items, "seconds": seconds,
           "peak_rss_mib": peak_rss_mib(), "input_rss_mib": base,
           "edges": edges}
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _bytes(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps a digit before
    the point (a 2,000^2 matrix is 15 MiB, not "0 GiB").
    """
    units = ("B", "KiB", "MiB", "GiB")
    step = 0
    while size >= 1024 and step < len(units) - 1:
        size, step = size / 1024, step + 1
    return f"{size:,.0f} {units[step]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+",
                        default=[10_000, 100_000, 1_000_000], metavar="N",
                        help="numbers of random items (default: 10^4 10^5 "
                             "10^6)")
    parser.add_argument("--dim", type=int, default=384,
                        help="feature width (default: 384, a text "
                             "embedding's)")
    parser.add_argument("--k", type=int, default=10,
                        help="neighbours per item (default: 10)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (default: cpu)")
    parser.add_argument("--precision", nargs="+", default=["fp32"],
                        choices=["fp32", "bf16"],
                        help="precision(s) of knn_cosine to time")
    parser.add_argument("--baseline", action="store_true",
                        help="also time the plain row-chunk scan")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="the Markdown table (default: benchmarks/"
                             "results/knn_graph_<device>.md)")
    args = parser.parse_args()
    from _common import code_version

    args.code = code_version()  # before any edit during the run

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(run_one(args.child, args.dim, args.k, args.device,
                                 args.method)))
        return

    from _common import machine_header, markdown_table, run_child, write_results

    methods = list(args.precision) + ([BASELINE] if args.baseline else [])
    rows, failed = [], []
    for num in args.items:
        for method in methods:
            cmd = [sys.executable, __file__, "--child", str(num), "--dim",
                   str(args.dim), "--k", str(args.k), "--device",
                   args.device, "--method", method]
            if args.threads is not None:
                cmd += ["--threads", str(args.threads)]
            res = run_child(cmd, f"{method} @ {num:,}")
            if res is None:
                failed.append(f"{method} @ {num:,}")
                rows.append([f"{num:,}", method, "failed", "", ""]
                            + ([""] if args.device.startswith("cuda") else []))
                continue
            row = [f"{num:,}", method, f"{res['seconds']:.2f}",
                   f"{res['peak_rss_mib']:.0f}",
                   f"{res['peak_rss_mib'] - res['input_rss_mib']:.0f}"]
            if "peak_gpu_mib" in res:
                row.append(f"{res['peak_gpu_mib']:.0f}")
            rows.append(row)
            print(" | ".join(row), flush=True)
    header = ["items", "precision", "seconds", "peak RSS MiB",
              "RSS above input MiB"]
    if args.device.startswith("cuda"):
        header.append("peak GPU MiB")
    machine = machine_header(args.device, code=args.code)
    text = (f"# Item kNN graph build (k={args.k}, d={args.dim}, "
            f"{args.device})\n\n{machine}\n\n"
            f"{markdown_table(header, rows)}\n\nA dense {args.items[-1]:,}^2 "
            f"float32 similarity matrix would need "
            f"{_bytes(4 * args.items[-1] ** 2)}.\n")
    out = args.output or osp.join(HERE, "results",
                                  f"knn_graph_{args.device.split(':')[0]}.md")
    write_results(out, text, len(rows) - len(failed), failed, "knn_graph.py")


if __name__ == "__main__":
    main()
