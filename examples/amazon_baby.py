r"""Train MDE on Amazon Baby and compare with Table I of the MDE paper.

Zhou, Zhan and Wang, "Modality Discrimination Enhancement for Multi-modal
Recommendation" (2025), https://arxiv.org/abs/2502.18481.

The data is MMRec's processed Amazon Baby (``baby.inter``,
``image_feat.npy``, ``text_feat.npy``), downloaded into ``--root`` by
:class:`mde_pyg.data.AmazonBaby` (needs ``gdown``); offline, the error names
the files to place in ``<root>/raw``. Any other folder in MMRec's layout
works with ``--data``::

    python examples/amazon_baby.py --root data/baby
    python examples/amazon_baby.py --data ../shared/data/lfm2k \
        --modality text=all-MiniLM-L6-v2.npy --modality audio=vggish.npy

Settings follow the paper: d = 64, batch 2048, Adam with lr 1e-3, L = 2,
k_u = 40, k_i = 10, early stopping on validation Recall@20 (patience 20, at
most 1000 epochs), test metrics of the best validation epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mde_pyg.cli import (
    UsageError,
    check_output_is_free,
    format_metrics,
    load_data_source,
    parse_assignments,
    train_model,
)

#: Table I of the paper, MDE on Amazon Baby (Top-5).
PAPER_BABY = {
    "recall@5": 0.0414,
    "precision@5": 0.0091,
    "map@5": 0.0219,
    "ndcg@5": 0.0273,
}


def check_features_named(data: str | None, modality: dict) -> None:
    """Refuse a ``--data`` folder with neither ``--modality`` nor MMRec's
    default feature files: MDE needs item features of two modalities.
    """
    if data is None or modality or not Path(data).is_dir():
        return  # a missing folder is named by the loader
    from mde_pyg.data import DEFAULT_MODALITIES

    if not any((Path(data) / name).is_file()
               for name in DEFAULT_MODALITIES.values()):
        files = ", ".join(DEFAULT_MODALITIES.values())
        raise UsageError(
            f"'{data}' holds none of MMRec's feature files ({files}); name "
            f"each modality's .npy with --modality NAME=FILE (MDE needs two "
            f"or more). A folder of interactions alone, such as "
            f"shared/data/baby_graph, has no features to train MDE on; "
            f"benchmarks/speed.py times it with random ones")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--root", default="data/baby",
        help="AmazonBaby root folder (default: data/baby)")
    add("--data", metavar="FOLDER", help="another dataset in MMRec's layout")
    add("--modality", action="append", default=[], metavar="NAME=FILE",
        help="a modality of --data and its .npy file (repeatable)")
    add("--inter-file", help="the .inter file in --data")
    add("--feature-norm", choices=("none", "l2", "standardize"),
        help="rescale the model inputs (default: none on Amazon Baby, as "
             "MMRec; standardize for --data, whose raw feature scales may "
             "differ by orders of magnitude)")
    add("--lambda-1", type=float, default=0.01,
        help="MDA weight (default: 0.01)")
    add("--lambda-2", type=float, default=0.01,
        help="MSA weight (default: 0.01)")
    add("--tau", type=float, default=0.2,
        help="MSA temperature (default: 0.2)")
    add("--reg-weight", type=float, default=1e-4,
        help="L2 weight lambda (default: 1e-4)")
    add("--embedding-dim", type=int, default=64, help="d (default: 64)")
    add("--lr", type=float, default=1e-3, help="Adam's (default: 1e-3)")
    add("--batch-size", type=int, default=2048, help="default: 2048")
    add("--max-epochs", type=int, default=1000, help="default: 1000")
    add("--patience", type=int, default=20,
        help="epochs without a better valid Recall@20 (default: 20)")
    add("--seed", type=int, default=0, help="default: 0")
    add("--device", default=None, help="default: cuda when available")
    add("--precision", default="fp32", choices=("fp32", "bf16"),
        help="bf16 autocast for training (default: fp32)")
    add("--output", help="run folder (default: runs/amazon_baby, or "
        "runs/<name of --data>)")
    add("--resume", action="store_true",
        help="continue the run in --output")
    add("--overwrite", action="store_true",
        help="train again into an --output that holds a run (refused "
             "otherwise)")
    add("--plot", action="store_true",
        help="draw the validation curve into --output (needs matplotlib)")
    args = parser.parse_args()
    if args.output is None:  # one folder per dataset, none trained over
        args.output = ("runs/amazon_baby" if args.data is None else
                       f"runs/{Path(args.data).resolve().name}")
    try:
        args.modality = parse_assignments(args.modality, "--modality")
        # before the data is read: a held run is refused in seconds
        check_output_is_free(args.output, args.resume, args.overwrite,
                             model="mde")
        check_features_named(args.data, args.modality)
    except UsageError as error:
        parser.error(str(error))
    return args


def main() -> None:
    args = parse_args()
    import torch

    from mde_pyg import tune_cpu_allocator

    tune_cpu_allocator()  # reuse freed host memory (as `mde-pyg train`)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.data is None:
        source = dict(dataset="baby", root=args.root,
                      feature_norm=args.feature_norm or "none")
    else:
        source = dict(data=args.data, modality=args.modality,
                      inter_file=args.inter_file,
                      feature_norm=args.feature_norm or "standardize")
    source.update(k_user=40, k_item=10)
    data = load_data_source(source)
    print(data)

    hparams = dict(
        embedding_dim=args.embedding_dim,
        num_layers=2,
        lambda_1=args.lambda_1,
        lambda_2=args.lambda_2,
        tau=args.tau,
        reg_weight=args.reg_weight,
    )
    result = train_model(
        "mde", data, args.output, hparams=hparams, resume=args.resume,
        overwrite=args.overwrite, plot=args.plot, lr=args.lr,
        batch_size=args.batch_size, max_epochs=args.max_epochs,
        patience=args.patience, seed=args.seed, device=device,
        precision=args.precision,
        # for mde-pyg recommend and load_run:
        extra_config={"data": {**source, "cwd": os.getcwd()}},
    )

    print(f"\nbest epoch {result['best_epoch']} (counted from 0; valid "
          f"recall@20 {result['valid']['recall@20']:.4f}); test metrics of "
          f"that epoch:")
    rows = {"MDE test (mde-pyg)": result["test"]}
    if args.data is None:
        rows = {"MDE test (paper)": PAPER_BABY, **rows}
    print(format_metrics(rows, ks=(5, 10, 20)))
    print(f"results in {Path(args.output) / 'results.json'}")


if __name__ == "__main__":
    try:
        main()
    except UsageError as error:  # e.g. Amazon Baby missing while offline
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted; rerun with --resume to continue from the last "
                 "finished epoch (if none had finished, nothing was written)")
