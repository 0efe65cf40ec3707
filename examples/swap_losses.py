r"""Add MDE's and SAND's losses to PyG's own LightGCN.

The losses of :mod:`mde_pyg.losses` (and SAND's modules in
:mod:`mde_pyg.nn`) need nothing from :mod:`mde_pyg.models`: this example
trains :class:`torch_geometric.nn.models.LightGCN`, unchanged, in a
training loop of its own, and compares four variants on the test split
(at the epoch of best validation Recall@20, stopping after ``--patience``
epochs without a better one):

* ``lightgcn``: PyG's LightGCN with its BPR ``recommendation_loss``;
* ``content``: the same, scoring items by
  :math:`\mathbf{e}_i + \frac{1}{|\mathcal{M}|}\sum_m \mathbf{W}_m
  \mathbf{x}_{m,i}` (per-modality linear projections of the raw features
  added to the LightGCN item embeddings; features standardised), BPR
  only;
* ``mde``: ``content`` plus :class:`~mde_pyg.losses.MDALoss` and
  :class:`~mde_pyg.losses.MSALoss` on the per-modality item views
  :math:`\mathbf{e}_i + \mathbf{W}_m \mathbf{x}_{m,i}` of the batch's
  positive items;
* ``sand``: ``content`` with the raw features first split into generic and
  unique parts, plus SAND's SoloSim and CLUB distancing losses
  (:class:`~mde_pyg.nn.SeparateAlignDistance`; the CLUB estimator takes
  its own Adam steps).

.. code-block:: bash

    python examples/swap_losses.py                     # synthetic data
    python examples/swap_losses.py --data ../shared/data/lfm2k \
        --modality text=all-MiniLM-L6-v2.npy --modality audio=vggish.npy
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn.models import LightGCN

from mde_pyg.cli import UsageError, parse_assignments, read_folder
from mde_pyg.data import (
    RATES,
    SyntheticMultiModal,
    modality_features,
)
from mde_pyg.losses import MDALoss, MSALoss
from mde_pyg.nn import SeparateAlignDistance
from mde_pyg.train import Evaluator, NegativeSampler
from mde_pyg.train.trainer import parse_device

VARIANTS = ("lightgcn", "content", "mde", "sand")


class LightGCNWithContent(nn.Module):
    """PyG's LightGCN plus optional per-modality content projections.

    Args:
        num_users (int): Users.
        features (dict[str, Tensor]): Raw item features per modality.
        edge_index (Tensor): The ``(U+I)``-node train graph, both
            directions.
        dim (int): Embedding width.
        num_layers (int): LightGCN hops.
        content (bool): Add the projected features to the item embeddings.
        sand (SeparateAlignDistance, optional): Split the features first.
    """

    def __init__(self, num_users: int, features: dict[str, Tensor],
                 edge_index: Tensor, dim: int, num_layers: int,
                 content: bool, sand: SeparateAlignDistance | None = None
                 ) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = next(iter(features.values())).size(0)
        self.modalities = list(features)
        self.gcn = LightGCN(num_users + self.num_items, dim, num_layers)
        self.register_buffer("edge_index", edge_index)
        for m, x in features.items():
            self.register_buffer(f"x_{m}", x)
        self.projection = nn.ModuleDict({
            m: nn.Linear(x.size(1), dim) for m, x in features.items()
        }) if content else None
        self.sand = sand

    def features(self) -> dict[str, Tensor]:
        """Return the item inputs of the projections (split for SAND)."""
        x = {m: getattr(self, f"x_{m}") for m in self.modalities}
        return x if self.sand is None else self.sand.split(x)

    def embed(self) -> tuple[Tensor, Tensor, dict[str, Tensor], dict]:
        """Return users, items, item views per modality, SAND inputs."""
        out = self.gcn.get_embedding(self.edge_index)
        user, item = out[:self.num_users], out[self.num_users:]
        if self.projection is None:
            return user, item, {}, {}
        x = self.features()
        content = {m: self.projection[m](x[m]) for m in self.modalities}
        views = {m: item + c for m, c in content.items()}
        item = item + torch.stack(list(content.values())).mean(0)
        return user, item, views, x

    @torch.no_grad()
    def scorer(self):
        """Return a function from user ids to scores over all items."""
        user, item, _, _ = self.embed()
        return lambda u: user[u] @ item.t()


def standardize(x: Tensor) -> Tensor:
    """Standardise each feature column, then L2-normalise each row.

    Raw features differ in scale by orders of magnitude (VGGish rows have
    norms near 1500, MiniLM rows norm 1); without this the content of one
    modality swamps the item embeddings.
    """
    x = x.float()
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-8)
    return F.normalize(x, dim=-1)


def load(args: argparse.Namespace) -> HeteroData:
    """Load the MMRec folder of ``--data`` or the synthetic default.

    Raises:
        UsageError: A ``--modality`` that is not ``NAME=FILE``, or given
            without ``--data``; a folder or file that cannot be read.
    """
    if args.data is None:
        if args.modality:
            raise UsageError("--modality needs --data FOLDER (the synthetic "
                             "data has its own modalities)")
        # the data stays the same across --seed: only training varies
        return SyntheticMultiModal(num_users=600, num_items=400, seed=0)[0]
    return read_folder(args.data, modalities=parse_assignments(
        args.modality, "--modality") or None)  # none: the folder's default


def run(variant: str, data: HeteroData, args: argparse.Namespace
        ) -> dict[str, float]:
    """Train one variant until ``args.patience`` epochs bring no better
    valid Recall@20 (or ``args.epochs`` have run); return the test metrics
    of the best valid epoch, that epoch (from 0) and the epochs run.
    """
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    num_users = data["user"].num_nodes
    user, item = data[RATES].edge_index
    edge_index = torch.stack([torch.cat([user, item + num_users]),
                              torch.cat([item + num_users, user])])
    features = {m: standardize(x) for m, x in modality_features(data).items()}
    sand = None
    if variant == "sand":
        sand = SeparateAlignDistance({m: x.size(1)
                                      for m, x in features.items()})
    model = LightGCNWithContent(num_users, features, edge_index, args.dim,
                                args.layers, variant != "lightgcn",
                                sand).to(device)
    estimator = list(sand.estimator_parameters()) if sand else []
    est_ids = {id(p) for p in estimator}
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if id(p) not in est_ids], lr=args.lr)
    est_optimizer = (torch.optim.Adam(estimator, lr=args.lr)
                     if estimator else None)
    mda, msa = MDALoss(args.lambda_1), MSALoss(args.lambda_2, args.tau)

    generator = torch.Generator().manual_seed(args.seed)
    sampler = NegativeSampler(data[RATES].edge_index, model.num_items,
                              num_users, generator=generator)
    valid = Evaluator(data, "valid", ks=(20,))
    test = Evaluator(data, "test", ks=(20,))
    best = {"valid": -1.0, "test": {}, "epoch": -1}
    for epoch in range(args.epochs):
        perm = torch.randperm(user.numel(), generator=generator)
        users, pos = user[perm], item[perm]
        neg = sampler.sample(users)
        for start in range(0, users.numel(), args.batch_size):
            u = users[start:start + args.batch_size].to(device)
            p = pos[start:start + args.batch_size].to(device)
            n = neg[start:start + args.batch_size].to(device)
            items = p.unique()
            if est_optimizer is not None:
                est_optimizer.zero_grad()
                with torch.no_grad():
                    x_split = model.features()
                sand.estimator_loss(x_split, items).backward()
                est_optimizer.step()
            optimizer.zero_grad()
            user_emb, item_emb, views, x = model.embed()
            pos_score = (user_emb[u] * item_emb[p]).sum(-1)
            neg_score = (user_emb[u] * item_emb[n]).sum(-1)
            loss = model.gcn.recommendation_loss(
                pos_score, neg_score, node_id=torch.cat(
                    [u, p + num_users, n + num_users]),
                lambda_reg=args.reg)
            if variant == "mde":
                batch_views = {m: v[items] for m, v in views.items()}
                loss = loss + mda(batch_views) + msa(batch_views)
            if variant == "sand":
                loss = loss + sum(sand.losses(x, items).values())
            loss.backward()
            optimizer.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            score = valid(model)["recall@20"]
            if score > best["valid"]:
                best = {"valid": score, "test": test(model), "epoch": epoch}
            elif epoch - best["epoch"] >= args.patience:
                break  # the protocol's early stop, counted in epochs
    return {"epoch": best["epoch"], "epochs_run": epoch + 1,
            "valid_recall@20": best["valid"], **best["test"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="an MMRec folder (default: "
                        "synthetic data, 600 users x 400 items drawn with "
                        "seed 0)")
    parser.add_argument("--modality", action="append", default=[],
                        metavar="NAME=FILE", help="a modality feature file "
                        "of --data (repeat)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        choices=VARIANTS, help="default: all four")
    parser.add_argument("--epochs", "--max-epochs", type=int, default=1000,
                        help="at most this many epochs; the test metrics "
                             "are those of the best valid epoch (default: "
                             "1000)")
    parser.add_argument("--patience", type=int, default=20,
                        help="stop after this many epochs without a better "
                             "valid Recall@20 (default: 20)")
    parser.add_argument("--eval-every", type=int, default=2,
                        help="epochs between validations (default: 2)")
    parser.add_argument("--batch-size", type=int, default=2048,
                        help="default: 2048")
    parser.add_argument("--dim", type=int, default=64,
                        help="embedding width (default: 64)")
    parser.add_argument("--layers", type=int, default=2,
                        help="LightGCN hops (default: 2)")
    parser.add_argument("--lr", type=float, help="default: 1e-3 with "
                        "--data (the paper's), 1e-2 on the small synthetic "
                        "data, which converges in about 50 epochs at it "
                        "and about 300 at 1e-3")
    parser.add_argument("--reg", type=float, default=1e-4,
                        help="PyG's lambda_reg of recommendation_loss "
                             "(default: 1e-4)")
    parser.add_argument("--lambda-1", type=float, default=0.01,
                        help="MDA weight (default: 0.01)")
    parser.add_argument("--lambda-2", type=float, default=0.01,
                        help="MSA weight (default: 0.01)")
    parser.add_argument("--tau", type=float, default=0.2,
                        help="MSA temperature (default: 0.2)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initialisation, sampling and "
                             "dropout, not of the synthetic data (default: "
                             "0)")
    args = parser.parse_args()
    if args.lr is None:
        args.lr = 1e-2 if args.data is None else 1e-3
    for name in ("epochs", "patience", "eval_every", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got "
                         f"{getattr(args, name)}")

    try:  # bad input is one line and exit status 2, as in mde-pyg
        parse_device(args.device, "--device")
        data = load(args)
    except (UsageError, ValueError) as error:
        parser.error(str(error))
    print(f"{data['user'].num_nodes} users, {data['item'].num_nodes} items, "
          f"modalities {list(modality_features(data))}")
    # test metrics at the epoch (counted from 0) of best valid Recall@20
    print(f"{'variant':<10} {'epochs':>6} {'best epoch':>10} "
          f"{'valid R@20':>10} {'test R@20':>10} {'test N@20':>10} "
          f"{'seconds':>8}")
    for variant in args.variants:
        start = time.perf_counter()
        result = run(variant, data, args)
        print(f"{variant:<10} {result['epochs_run']:>6} "
              f"{result['epoch']:>10} "
              f"{result['valid_recall@20']:>10.4f} "
              f"{result['recall@20']:>10.4f} {result['ndcg@20']:>10.4f} "
              f"{time.perf_counter() - start:>8.1f}")


if __name__ == "__main__":
    main()
