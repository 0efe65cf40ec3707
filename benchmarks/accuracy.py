r"""Accuracy of every model on an MMRec-format dataset, selected on valid.

For each model: a small grid search (the grids are stated in ``GRIDS``
below), each point one ``mde-pyg train`` run with seed 0, selected on
VALID recall@20 only (the first point on ties, as ``mde-pyg train
--grid``); then the winning configuration is re-trained with the other
seeds. The table reports test recall / ndcg / precision / map at 10 and 20
as mean ± std over seeds, at each run's best-valid epoch. Runs, grid points
included, go in parallel subprocesses (``--jobs``). No number is tuned on
test.

Writes ``benchmarks/results/accuracy_<name>.md`` and keeps every run's
``results.json`` under ``--work``.

Usage::

    python benchmarks/accuracy.py --data ../shared/data/lfm2k \\
        --modality text=all-MiniLM-L6-v2.npy --modality audio=vggish.npy
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)

#: Small grids per model (model arguments; ``lr`` goes to the trainer).
GRIDS = {
    "mostpop": {},
    "lightgcn": {"reg_weight": [1e-4, 1e-3]},
    "vbpr": {"reg_weight": [1e-4, 1e-3]},
    "mmgcn": {"reg_weight": [1e-4, 1e-3]},
    "grcn": {"reg_weight": [1e-4, 1e-3]},
    "dualgnn": {"reg_weight": [1e-4, 1e-3]},
    # MMRec's only SLMRec regulariser is Adam's weight decay (1e-4)
    "slmrec": {"ssl_alpha": [0.1, 0.5], "weight_decay": [1e-4]},
    # MMRec's tuned Baby and Sports values (it gives no grid)
    "lgmrec": {"keep_rate": [0.5, 0.4], "alpha": [0.3, 0.6]},
    "freedom": {"reg_weight": [1e-4, 1e-3]},
    "dragon": {"reg_weight": [1e-4, 1e-3]},
    "bm3": {"reg_weight": [1e-1, 1e-2]},  # MMRec's grid (EmbLoss scale)
    "sand": {"distance": ["club", "l2"]},
    "mde": {"lambda_1": [1e-2, 1e-1], "lambda_2": [1e-2, 1e-1]},
}

#: The full grids the papers suggest (``--grids paper``); MDE's is METHOD.md's
#: (36 runs, then the winner's seeds: about 100 minutes on 2 CPU cores with
#: ``--jobs 2 --threads 1``).
PAPER_GRIDS = {
    "mde": {"lambda_1": [1e-3, 1e-2, 1e-1], "lambda_2": [1e-3, 1e-2, 1e-1],
            "tau": [0.2, 0.5], "reg_weight": [1e-4, 1e-3]},
}

#: Ablations and variants: name -> (model, fixed arguments, grid). MDE's
#: are METHOD.md's (defaults, no grid); GRCN's runs MMRec's routing, which
#: never reaches the users, against the paper's default here.
VARIANTS = {
    "mde w/o MDA": ("mde", {"use_mda": False}, {}),
    "mde w/o MSA": ("mde", {"use_msa": False}, {}),
    "mde w/o NLT": ("mde", {"use_nlt": False}, {}),
    "mde variant B (learned trade-off)": ("mde", {"tradeoff": "learned"},
                                          {}),
    # MDA and MSA over the batch's distinct nodes, on MDE's grid
    "mde, distinct batch nodes (unique_nodes)": ("mde",
                                                 {"unique_nodes": True},
                                                 GRIDS["mde"]),
    "grcn, MMRec routing (num_routing=0)": ("grcn", {"num_routing": 0},
                                            GRIDS["grcn"]),
}

#: MDE's Fig. 2 variant A, one row per weight: the first modality's fixed
#: preference ``w`` for every node, the others sharing ``1 - w`` (the paper
#: sweeps the text modality's weight). With two modalities, 0.5 is the
#: equal preference, where the gap and so MDA's weight are 0.
VARIANT_A_WEIGHTS = (0.2, 0.4, 0.5, 0.6, 0.8)

METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "precision@10",
           "precision@20", "map@10", "map@20"]


def stale(cached: dict, args, model: str, seed: int,
          params: dict) -> str | None:
    """Say how a cached ``results.json`` differs from the run asked for
    (model, seed, data, modalities, feature norm, precision, epochs,
    patience, every model argument with today's defaults, the trainer's
    arguments asked for), or return :obj:`None` if it is that run.
    """
    from mde_pyg.models import get_model_class
    from mde_pyg.models.base import plain_values
    from mde_pyg.train.grid import split_params

    config = cached.get("config") or {}
    source = config.get("data") or {}
    folder = source.get("data")
    if folder is not None:
        folder = osp.abspath(osp.join(source.get("cwd", "."), folder))
    modality = dict(item.split("=", 1) for item in args.modality or [])
    asked = {"model": (cached.get("model"), model),
             "seed": (config.get("seed"), seed),
             "data": (folder, osp.abspath(args.data)),
             "modalities": (source.get("modality") or {}, modality),
             "feature norm": (source.get("feature_norm"), args.feature_norm),
             "feature min std": (source.get("feature_min_std", 0.0),
                                 args.feature_min_std),
             "precision": (config.get("precision"),
                           args.precision or "fp32"),
             "device": (_device_type(config.get("device")),
                        _device_type(args.device)),
             "max epochs": (config.get("max_epochs"), args.max_epochs),
             "patience": (config.get("patience"), args.patience)}
    model_params, trainer_params = split_params(params)
    for key, value in trainer_params.items():
        asked[key] = (config.get(key), value)
    # a default changed since, or an argument added, is another run too
    recorded = config.get("model_hparams") or {}
    cls = get_model_class(model)
    expected = plain_values({**cls.default_hparams(), **model_params})
    resolved = cls.resolved_hparam_names
    for key in sorted(set(expected) | set(recorded)):
        if key not in recorded:
            return f"records no model argument '{key}'"
        if key in resolved and expected.get(key) is None:
            continue  # taken from the data (resolved_hparams), as recorded
        asked[key] = (recorded[key], expected.get(key))
    for what, (was, want) in asked.items():
        if was != want:
            return f"has {what} {was!r}, not {want!r}"
    return None


def _device_type(device: str | None) -> str | None:
    """``"cuda"`` for ``"cuda:1"``: a run's s / epoch depends on the kind of
    device it ran on (the table names one), not on which GPU it was.
    """
    return None if device is None else device.split(":", 1)[0]


def variant_a_rows(names: list[str]) -> dict:
    """The variant A rows of :data:`VARIANT_A_WEIGHTS` for the modalities
    ``names`` (in data order), as :data:`VARIANTS` entries.
    """
    first, rest = names[0], names[1:]
    rows = {}
    for w in VARIANT_A_WEIGHTS:
        preference = {first: w, **{m: round((1 - w) / len(rest), 6)
                                   for m in rest}}
        rows[f"mde variant A ({first} {w})"] = (
            "mde", {"tradeoff": "global", "global_preference": preference},
            {})
    return rows


def train(args, model: str, output: str, seed: int, params: dict) -> dict:
    """Run one ``mde-pyg train`` with ``params`` (``--set``) and return its
    ``results.json``.
    """
    path = osp.join(output, "results.json")
    if osp.exists(path) and not args.rerun:
        with open(path) as f:
            cached = json.load(f)
        reason = stale(cached, args, model, seed, params)
        if reason is None:
            return cached
        print(f"re-training {output}: its results.json {reason}", flush=True)
    cmd = [sys.executable, "-m", "mde_pyg", "train", "--model", model,
           "--data", args.data, "--seed", str(seed), "--output", output,
           "--no-progress", "--overwrite", "--feature-norm", args.feature_norm,
           "--max-epochs", str(args.max_epochs),
           "--patience", str(args.patience)]
    if args.feature_min_std:
        cmd += ["--feature-min-std", str(args.feature_min_std)]
    if args.device:
        cmd += ["--device", args.device]
    if args.precision:
        cmd += ["--precision", args.precision]
    for item in args.modality or []:
        cmd += ["--modality", item]
    for key, value in params.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else value
        cmd += ["--set", f"{key}={text}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} seed {seed} failed:\n"
                           f"{proc.stderr[-3000:]}")
    with open(path) as f:
        return json.load(f)


def slug(label: str) -> str:
    """Folder name of a table row: ``"mde w/o MDA"`` -> ``"mde_wo_MDA"``."""
    name = re.sub(r"[^\w-]+", "_", label.replace("/", "").replace(".", ""))
    return name.strip("_")


class ModelRuns:
    """The runs of one table row: every grid point with seed 0, each its
    own ``mde-pyg train`` (so that grid points run in parallel), then the
    point selected on valid with the other seeds.

    Grid point ``i`` trains in ``<work>/<slug>/grid/run_<i>`` in the order
    of :class:`sklearn.model_selection.ParameterGrid` (that of
    ``mde-pyg train --grid``); seed ``s > 0`` in ``<work>/<slug>/seed<s>``.
    """

    def __init__(self, args, label: str, model: str, fixed: dict,
                 grid: dict) -> None:
        from sklearn.model_selection import ParameterGrid

        self.args, self.label = args, label
        self.model, self.fixed = model, fixed
        self.base = osp.join(args.work, slug(label))
        self.points = list(ParameterGrid(grid)) if grid else [{}]
        self.params: dict | None = None
        self.results: list = []

    def grid_jobs(self) -> list:
        """``(function, arguments)`` of every grid point's run."""
        return [(train, (self.args, self.model,
                         osp.join(self.base, "grid", f"run_{i:03d}"), 0,
                         {**self.fixed, **point}))
                for i, point in enumerate(self.points)]

    def seed_jobs(self, grid_results: list) -> list:
        """Select on valid and return the other seeds' runs."""
        from mde_pyg.train import best_index

        best = best_index(grid_results)
        self.params = {**self.fixed, **self.points[best]}
        self.results = [grid_results[best]]
        return [(train, (self.args, self.model,
                         osp.join(self.base, f"seed{seed}"), seed,
                         self.params))
                for seed in self.args.seeds[1:]]


def summarise(results: list) -> dict:
    """Mean and std over seeds of each test metric, and seconds/epoch."""
    out = {}
    for key in METRICS:
        values = [r["test"][key] for r in results]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = (statistics.mean(values), std)
    seconds = [statistics.mean(e["seconds"] for e in r["history"])
               for r in results if r.get("history")]
    out["seconds"] = statistics.mean(seconds) if seconds else float("nan")
    out["epochs"] = statistics.mean(r["best_epoch"] for r in results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, metavar="FOLDER",
                        help="an MMRec-format dataset folder (its .inter "
                             "file and feature .npy files)")
    parser.add_argument("--modality", action="append", metavar="NAME=FILE",
                        help="a modality and its feature file in --data "
                             "(repeat per modality; default: the "
                             "folder's image/text files)")
    parser.add_argument("--models", nargs="+", default=list(GRIDS),
                        metavar="MODEL",
                        help="models to run (default: every model of "
                             "GRIDS)")
    parser.add_argument("--variants", nargs="*", default=None,
                        metavar="MODEL",
                        help="also run the ablations and variants in "
                             "VARIANTS (of the MODELs named, else all)")
    parser.add_argument("--rows", default=None, metavar="REGEX",
                        help="run only the rows whose label matches")
    parser.add_argument("--no-grid", action="store_true",
                        help="defaults only (no grid search)")
    parser.add_argument("--grids", choices=["small", "paper"],
                        default="small",
                        help="'paper': PAPER_GRIDS where a model has one")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        metavar="SEED",
                        help="seeds of the selected configuration; the "
                             "grid runs with seed 0, which is always "
                             "included (default: 0 1 2)")
    parser.add_argument("--device", default=None,
                        help="passed to mde-pyg train (default: cuda if "
                             "available, else cpu)")
    parser.add_argument("--precision", default=None,
                        choices=("fp32", "bf16"), help="default: fp32")
    parser.add_argument("--feature-norm", default="standardize",
                        choices=("none", "l2", "standardize"),
                        help="default: standardize")
    parser.add_argument("--feature-min-std", type=float, default=0.0,
                        metavar="X", help="passed to mde-pyg train: with "
                        "standardize, zero rounding-noise columns "
                        "(default: 0)")
    parser.add_argument("--max-epochs", type=int, default=1000,
                        help="epochs per run at most (default: 1000)")
    parser.add_argument("--patience", type=int, default=20,
                        help="early stopping: epochs without a better "
                             "valid recall@20 (default: 20)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at a time (default: 1)")
    parser.add_argument("--threads", type=int, default=2,
                        help="OMP threads per run (default: 2)")
    parser.add_argument("--work", default="runs/accuracy", metavar="FOLDER",
                        help="where each run's folder goes; a run whose "
                             "results.json matches its arguments is "
                             "reused (default: runs/accuracy)")
    parser.add_argument("--rerun", action="store_true",
                        help="re-train runs that --work already holds")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="the Markdown table (default: benchmarks/"
                             "results/accuracy_<dataset>.md)")
    args = parser.parse_args()
    from _common import check_models
    from mde_pyg.data.mmrec import find_inter_file

    check_models(parser, args.models)

    try:  # once here, rather than once per failing run
        find_inter_file(args.data)
    except (OSError, ValueError) as error:
        parser.error(f"--data: {error}")
    from _common import code_version

    args.code = code_version()  # before any edit during the run
    if args.device is None:  # resolved once, so the table names it
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.seeds = list(dict.fromkeys([0, *args.seeds]))  # 0 first, once

    grids = dict(GRIDS)
    if args.grids == "paper":
        grids.update(PAPER_GRIDS)
    jobs = [(m, m, {}, {} if args.no_grid else grids.get(m, {}))
            for m in args.models]
    if args.variants is not None:
        from mde_pyg.data.mmrec import DEFAULT_MODALITIES

        names = ([item.split("=", 1)[0] for item in args.modality]
                 if args.modality else list(DEFAULT_MODALITIES))
        variants = {**VARIANTS, **variant_a_rows(names)}
        jobs += [(label, model, fixed, {} if args.no_grid else grid)
                 for label, (model, fixed, grid) in variants.items()
                 if not args.variants or model in args.variants]
    if args.rows is not None:
        jobs = [job for job in jobs if re.search(args.rows, job[0])]
        if not jobs:
            parser.error(f"--rows '{args.rows}' matches no row")
    rows = [ModelRuns(args, *job) for job in jobs]
    done = []
    with ThreadPoolExecutor(args.jobs) as pool:
        # future -> (row, stage, the futures of that stage); a row's seeds
        # are submitted once all of its grid points are done
        pending = {}

        def submit(row, stage, calls):
            futures = [pool.submit(fn, *call) for fn, call in calls]
            for future in futures:
                pending[future] = (row, stage, futures)

        for row in rows:
            submit(row, "grid", row.grid_jobs())
        failed = set()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                row, stage, group = pending.pop(future)
                if future.exception() is not None and row not in failed:
                    failed.add(row)
                    print(future.exception(), flush=True)
                if row in failed or any(f in pending for f in group):
                    continue
                results = [f.result() for f in group]
                if stage == "grid":
                    seeds = row.seed_jobs(results)
                    if seeds:
                        submit(row, "seeds", seeds)
                        continue
                else:
                    row.results += results
                done.append((row.label, row.params, row.results))
                write_table(args, sorted(done,
                                         key=lambda d: order(jobs, d[0])))
    if failed:
        sys.exit(f"accuracy.py: {len(failed)} of {len(rows)} rows failed "
                 f"({', '.join(row.label for row in rows if row in failed)})"
                 f"; their errors are printed above")


def order(jobs: list, label: str) -> int:
    """Position of ``label`` in the job list (table order)."""
    return [job[0] for job in jobs].index(label)


def write_table(args, done: list) -> None:
    """Write the Markdown table of the runs finished so far."""
    from _common import machine_header, markdown_table, write_atomic

    rows = []
    for label, params, results in done:
        summary = summarise(results)
        # one run has no spread to show
        cells = [f"{summary[k][0]:.4f}" + (f" ± {summary[k][1]:.4f}"
                                          if len(results) > 1 else "")
                 for k in METRICS]
        shown = {k: v for k, v in params.items() if k != "seed"}
        rows.append([label, *cells, f"{summary['seconds']:.1f}",
                     f"{summary['epochs']:.0f}",
                     json.dumps(shown) if shown else "defaults"])
    name = osp.basename(osp.normpath(args.data))
    header = ["model", *METRICS, "s / epoch", "best epoch",
              "selected on valid"]
    machine = machine_header(
        args.device, code=args.code,
        threads=f"{args.threads} per run, {args.jobs} runs at a time")
    min_std = (f" (min std {args.feature_min_std})"
               if args.feature_min_std else "")
    more = f" and seeds {args.seeds[1:]}" if len(args.seeds) > 1 else ""
    selection = ("Every model with its defaults (--no-grid: no search), "
                 f"seed 0{more}" if args.no_grid else
                 f"Hyper-parameters selected on VALID recall@20 with seed 0 "
                 f"({args.grids} grids in `benchmarks/accuracy.py`)"
                 + (f", then re-trained with seeds {args.seeds[1:]}"
                    if len(args.seeds) > 1 else ""))
    seeds = (f"{len(args.seeds)} seeds, mean ± std" if len(args.seeds) > 1
             else "1 seed")
    text = (f"# Test accuracy on {name} ({seeds})\n\n{machine}\n\n"
            f"Modalities: {args.modality}; feature norm: "
            f"{args.feature_norm}{min_std}; precision: "
            f"{args.precision or 'fp32'}. "
            f"{selection}; test metrics at each "
            f"run's best "
            f"valid epoch; early stopping patience {args.patience}, at most "
            f"{args.max_epochs} epochs. s / epoch includes the validation "
            f"pass.\n\n{markdown_table(header, rows)}\n")
    out = args.output or osp.join(HERE, "results", f"accuracy_{name}.md")
    write_atomic(out, text)
    print(f"wrote {out} ({len(rows)} rows)", flush=True)


if __name__ == "__main__":
    main()
