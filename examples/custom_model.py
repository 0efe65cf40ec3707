r"""Build a new multi-modal recommender from mde-pyg's layers.

The model below is not one of the package's: per modality :math:`m`, item
:math:`i` enters the graph as :math:`\mathbf{e}_i + \mathbf{W}_m
\mathbf{x}_{m,i}` (its ID embedding plus a linear projection of its
features), users as their ID embedding; a LightGCN
(:class:`~mde_pyg.nn.LightGCNConv`, a PyG ``MessagePassing`` layer, on
``edge_index``) propagates each modality's view; node-level preferences
(:class:`~mde_pyg.nn.PreferenceFusion`) fuse the views of users and of
items; and MDE's MDA and MSA losses, weighted per node by
:class:`~mde_pyg.nn.NodeLevelTradeoff`, are added to BPR on the batch's
items. Subclassing :class:`~mde_pyg.models.Recommender` (``get_embedding``
and ``loss``) is all that :class:`~mde_pyg.train.Trainer`,
:class:`~mde_pyg.train.Evaluator` and :func:`~mde_pyg.train.recommend`
need.

.. code-block:: bash

    python examples/custom_model.py                    # synthetic data
    python examples/custom_model.py --data ../shared/data/lfm2k \
        --modality text=all-MiniLM-L6-v2.npy --modality audio=vggish.npy
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.cli import (
    UsageError,
    format_metrics,
    load_data,
    parse_assignments,
)
from mde_pyg.data import modality_names
from mde_pyg.losses import MDALoss, MSALoss, embedding_bpr_loss, l2_reg
from mde_pyg.models import Recommender, build_model
from mde_pyg.nn import LightGCNConv, NodeLevelTradeoff, PreferenceFusion
from mde_pyg.nn.sparse import user_item_edges
from mde_pyg.train import Trainer, recommend, seed_everything


class MultiViewLightGCN(Recommender):
    """LightGCN over one feature-enriched view per modality, fused by
    node-level preferences, with MDE's modality losses.

    Args:
        data (HeteroData): A dataset with item features ``x_<modality>``
            and the normalised user-item graph.
        embedding_dim (int, optional): Width of every view.
            (default: :obj:`64`)
        num_layers (int, optional): LightGCN hops. (default: :obj:`2`)
        lambda_1 (float, optional): MDA weight. (default: :obj:`0.01`)
        lambda_2 (float, optional): MSA weight. (default: :obj:`0.01`)
        reg_weight (float, optional): L2 on the batch's ID embeddings.
            (default: :obj:`1e-4`)
    """

    def __init__(self, data: HeteroData, embedding_dim: int = 64,
                 num_layers: int = 2, lambda_1: float = 0.01,
                 lambda_2: float = 0.01, reg_weight: float = 1e-4) -> None:
        super().__init__(data["user"].num_nodes, data["item"].num_nodes)
        self.modalities = modality_names(data)
        for m in self.modalities:  # buffers follow the model's device
            # detached: the data's tensor, without its autograd history
            self.register_buffer(f"x_{m}",
                                 data["item"][f"x_{m}"].detach().float(),
                                 persistent=False)
        edge_index, edge_weight = user_item_edges(data)
        self.register_buffer("edge_index", edge_index, persistent=False)
        self.register_buffer("edge_weight", edge_weight, persistent=False)

        self.embedding = nn.Embedding(self.num_users + self.num_items,
                                      embedding_dim)
        self.project = nn.ModuleDict({
            m: nn.Linear(getattr(self, f"x_{m}").size(1), embedding_dim)
            for m in self.modalities})
        self.conv = LightGCNConv()
        self.num_layers = num_layers
        self.user_fusion = PreferenceFusion(self.num_users, self.modalities)
        self.item_fusion = PreferenceFusion(self.num_items, self.modalities)
        self.tradeoff = NodeLevelTradeoff()
        self.mda, self.msa = MDALoss(lambda_1), MSALoss(lambda_2, tau=0.2)
        self.reg_weight = reg_weight
        nn.init.xavier_uniform_(self.embedding.weight)

    def views(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Return each modality's propagated ``(users, items)`` views."""
        users, items = {}, {}
        ego_user, ego_item = self.embedding.weight.split(
            [self.num_users, self.num_items])
        for m in self.modalities:
            x = torch.cat([ego_user,
                           ego_item + self.project[m](getattr(self, f"x_{m}"))])
            layers = [x]
            for _ in range(self.num_layers):
                x = self.conv(x, self.edge_index, self.edge_weight)
                layers.append(x)
            out = torch.stack(layers).mean(dim=0)  # LightGCN's layer mean
            users[m], items[m] = out.split([self.num_users, self.num_items])
        return users, items

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the fused user and item representations."""
        users, items = self.views()
        return self.user_fusion(users)[0], self.item_fusion(items)[0]

    def loss(self, user: Tensor, pos: Tensor,
             neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """BPR on the fused scores, MDA and MSA on the batch's positive
        items' views (weighted by their preference gap), L2 on the batch.
        """
        users, items = self.views()
        u = self.user_fusion({m: x[user] for m, x in users.items()}, user)[0]
        i_pos, pref = self.item_fusion(
            {m: x[pos] for m, x in items.items()}, pos)
        i_neg = self.item_fusion({m: x[neg] for m, x in items.items()},
                                 neg)[0]
        w_d, w_a = self.tradeoff(pref)
        pos_views = {m: x[pos] for m, x in items.items()}
        ego = self.embedding.weight
        parts = {
            "bpr": embedding_bpr_loss(u, i_pos, i_neg),
            "mda": self.mda(pos_views, w_d),
            "msa": self.msa(pos_views, w_a),
            "reg": self.reg_weight * l2_reg(ego[user],
                                            ego[pos + self.num_users],
                                            ego[neg + self.num_users]),
        }
        return self.sum_parts(parts)


def compare(data: HeteroData, max_epochs: int = 100, patience: int = 20,
            seed: int = 0) -> dict[str, dict]:
    """Train the custom model, LightGCN and MostPop the same way; return
    each one's :meth:`~mde_pyg.train.Trainer.fit` result.
    """
    results = {}
    for name in ("custom", "lightgcn", "mostpop"):
        seed_everything(seed)
        model = (MultiViewLightGCN.from_data(data) if name == "custom"
                 else build_model(name, data))
        results[name] = Trainer(model, data, max_epochs=max_epochs,
                                patience=patience, seed=seed,
                                progress=False).fit()
    return results


def main() -> None:
    """Compare the custom model with LightGCN and MostPop, then show the
    custom model's top-5 for two users.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", metavar="FOLDER",
                        help="a dataset in MMRec's layout (default: the "
                             "embedded synthetic data)")
    parser.add_argument("--modality", action="append", default=[],
                        metavar="NAME=FILE", help="a modality of --data and "
                        "its .npy file (repeat; default: the folder's "
                        "image_feat.npy and text_feat.npy)")
    parser.add_argument("--max-epochs", type=int, default=100,
                        help="at most this many epochs, early stopping "
                             "after 20 without a better valid Recall@20 "
                             "(default: 100)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initialisation and sampling "
                             "(default: 0)")
    args = parser.parse_args()
    try:  # bad input is one line and exit status 2, as in mde-pyg
        if args.modality and args.data is None:
            raise UsageError("--modality needs --data FOLDER (the synthetic "
                             "data has its own modalities)")
        modalities = parse_assignments(args.modality, "--modality") or None
        data = (load_data(dataset="synthetic", feature_norm="standardize")
                if args.data is None else
                load_data(data=args.data, modalities=modalities,
                          feature_norm="standardize"))
    except UsageError as error:
        parser.error(str(error))

    results = compare(data, args.max_epochs, seed=args.seed)
    print("test metrics at each model's best valid Recall@20 epoch:")
    for name, result in results.items():
        print(f"  {name}: best epoch {result['best_epoch']} (from 0) of "
              f"{len(result['history'])} run")
    print(format_metrics({name: r["test"] for name, r in results.items()},
                         ks=(10, 20)))
    items, _ = recommend(results["custom"]["model"], data,
                         torch.tensor([0, 1]), k=5)
    for user, row in zip((0, 1), items.tolist()):
        print(f"user {user}: top-5 unseen items {row}")


if __name__ == "__main__":
    main()
