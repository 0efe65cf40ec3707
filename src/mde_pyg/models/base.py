"""The interface every recommender in :mod:`mde_pyg.models` implements."""

from __future__ import annotations

import inspect
import numbers
import operator
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from mde_pyg.data.mmrec import check_data
from mde_pyg.metrics import rank_top_k

#: Ranges of the hyper-parameters several models share, checked by
#: :meth:`Recommender.check_hparams`: name -> (bound, whether the bound
#: itself is allowed).
HPARAM_RANGES: dict[str, tuple[float, bool]] = {
    **dict.fromkeys(
        ("embedding_dim", "latent_dim", "distance_dim", "head_hidden_dim",
         "head_out_dim", "estimator_hidden_dim", "num_hyperedges", "k_user"),
        (1, True)),
    **dict.fromkeys(
        ("num_layers", "item_graph_layers", "num_ui_layers", "num_mm_layers",
         "num_hyper_layers", "num_routing"),
        (0, True)),
    **dict.fromkeys(
        ("reg_weight", "cl_weight", "lambda_1", "lambda_2", "ssl_alpha",
         "ureg"),
        (0, True)),
    **dict.fromkeys(("tau", "temperature", "ssl_temp"), (0, False)),
}


def plain_values(value: Any) -> Any:
    """Return ``value`` with NumPy scalars, 0-d tensors and other numbers
    made Python ``bool``, ``int`` or ``float``, paths strings, tuples made
    lists, and
    objects other than strings, ``None``, lists and string-keyed dicts made
    their ``repr``:
    values that JSON and ``torch.load(weights_only=True)`` both read back
    equal.

    Args:
        value (Any): Hyper-parameters, e.g. ``{"tau": np.float32(0.2)}``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return plain_values(value.item())  # a NumPy scalar, a 0-d tensor
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain_values(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain_values(v) for k, v in value.items()}
    return repr(value)


def check_batch(fn: str, user: Tensor) -> None:
    """Raise a :class:`ValueError` naming ``fn`` when the batch ``user`` is
    empty, for a loss whose shapes would fail on it before a loss function
    could say so (the loss functions refuse empty batches themselves).
    """
    if user.numel() == 0:
        raise ValueError(f"{fn}: 'user' is an empty batch: a mean over no "
                         f"rows is NaN; skip the step when a batch has no "
                         f"rows")


def check_user_ids(user: Tensor | Sequence[int], num_users: int,
                   arg: str = "'user'") -> Tensor:
    """Return the user ids ``user``, a ``[B]`` integer tensor with ids in
    ``[0, num_users)``, as :obj:`torch.long`; else raise a
    :class:`TypeError` (not a ``[B]`` integer tensor) or a
    :class:`ValueError` listing the first ids out of range.

    Args:
        user (torch.Tensor or Sequence[int]): The user ids.
        num_users (int): The number of users.
        arg (str, optional): How messages name the argument.
            (default: ``"'user'"``)
    """
    user = torch.as_tensor(user)
    if user.is_floating_point() or user.is_complex() or \
            user.dtype == torch.bool or user.dim() != 1:
        raise TypeError(f"{arg} takes a [B] tensor of integer user ids (one "
                        f"user: torch.tensor([u])), got {user.dtype} of "
                        f"shape {tuple(user.shape)}")
    bad = user[(user < 0) | (user >= num_users)]
    if bad.numel() > 0:
        raise ValueError(
            f"{arg} has ids outside [0, {num_users}) (the number of users): "
            f"{bad[:5].tolist()}{' ...' if bad.numel() > 5 else ''}")
    return user.long()


def check_k(k: int, num_items: int) -> int:
    """Return ``k``, the items to rank per user, or raise a
    :class:`ValueError` unless it is an integer in ``[1, num_items]``.
    """
    try:
        if isinstance(k, bool):
            raise TypeError
        value = operator.index(k)  # Python, NumPy and PyTorch integers
    except TypeError:
        value = None
    if value is None or not 1 <= value <= num_items:
        raise ValueError(f"'k' must be an integer in [1, {num_items}] (the "
                         f"number of items), got {k!r}")
    return value


def gather_rows(x: Tensor, *index: Tensor) -> tuple[Tensor, ...]:
    """Return the rows of ``x`` at each of ``index``, in one gather.

    One :meth:`~torch.Tensor.index_select` per matrix and step: its
    backward is a single ``index_add`` into ``x``'s gradient, several
    times faster on CPU than the accumulating scatter of ``x[idx]``, done
    once instead of once per index.

    Args:
        x (torch.Tensor): A ``[N, ...]`` matrix, e.g. all item embeddings.
        *index (torch.Tensor): Row ids, e.g. the batch's ``pos`` and
            ``neg``.
    """
    rows = x.index_select(0, torch.cat(index) if len(index) > 1
                          else index[0])
    return rows.split([i.numel() for i in index])


# id(x) -> (x._version, x cast to bfloat16), see _autocast_input; an
# entry is dropped when x is freed (tensors compare elementwise, so a
# WeakKeyDictionary cannot hold them)
_BF16_COPIES: dict[int, tuple[int, Tensor]] = {}


def _autocast_input(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Return ``x``, or its cached bfloat16 copy where ``fn`` would cast
    its input to bfloat16 anyway.

    That is where ``fn`` is an :class:`~torch.nn.Linear` and bfloat16
    autocast is on for ``x``'s device, and ``x`` is a float32 matrix
    without gradient (a feature buffer). Autocast casts the gathered rows
    before the product; gathering rows of the bfloat16 copy instead moves
    half the bytes and skips the cast, with bitwise the same product and
    weight gradient. The copy is made once per tensor and version (an
    in-place change of ``x`` makes a new one) and freed with ``x``.
    """
    device = x.device.type
    if not (isinstance(fn, nn.Linear) and x.dtype == torch.float32
            and not x.requires_grad and not x.is_inference()
            and torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.bfloat16):
        return x
    key = id(x)
    cached = _BF16_COPIES.get(key)
    if cached is None:
        weakref.finalize(x, _BF16_COPIES.pop, key, None)
    if cached is None or cached[0] != x._version:
        cached = (x._version, x.detach().to(torch.bfloat16))
        _BF16_COPIES[key] = cached
    return cached[1]


def map_rows(fn: Callable[[Tensor], Tensor], x: Tensor,
             index: Tensor) -> Tensor:
    """Return ``fn(x[index])`` for a row-wise ``fn``, e.g. an
    :class:`~torch.nn.Linear` projection of the batch's item features.

    On CPU each distinct row is gathered and mapped once and the result
    expanded by the inverse index: a batch of 2048 positive and 2048
    negative items of Amazon Baby names about 2,900 distinct items, so
    the gather and the product shrink by 30 %. Values are equal; the
    gradient of a repeated row is summed by the expanding gather's
    backward instead of by the product. On other devices ``fn`` runs on
    the gathered rows as they are, because :func:`torch.unique` waits for
    the device there.

    Under bfloat16 autocast, an :class:`~torch.nn.Linear` ``fn`` gathers
    from a bfloat16 copy of ``x`` kept for the next call (half of ``x``'s
    memory again, freed with ``x``): the same values, with half the
    gather and no per-step cast. On CPU the distinct rows are then padded
    to a multiple of 128 (or left as ``index``, if that is fewer), since
    oneDNN builds a bfloat16 kernel for every new number of rows.

    Args:
        fn (Callable): A function applied to each row independently.
        x (torch.Tensor): A ``[N, F]`` matrix, e.g. item features.
        index (torch.Tensor): Row ids ``[B]``, possibly repeated.
    """
    x = _autocast_input(fn, x)
    if x.device.type != "cpu":
        return fn(x.index_select(0, index))
    rows, inverse = torch.unique(index, return_inverse=True)
    if (torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        # oneDNN builds a bfloat16 kernel per row count (about 4 ms at
        # Baby's shape); padding to a multiple of 128 keeps a few
        pad = -rows.numel() % 128
        if rows.numel() + pad >= index.numel():
            return fn(x.index_select(0, index))
        rows = torch.cat([rows, rows.new_zeros(pad)])
    return fn(x.index_select(0, rows)).index_select(0, inverse)


class Recommender(nn.Module):
    r"""Base class of the recommenders trained by
    :class:`mde_pyg.train.Trainer`.

    A subclass calls ``super().__init__(num_users, num_items)`` and
    implements :meth:`get_embedding` (or overrides :meth:`scorer`) and
    :meth:`loss`. The trainer relies on the following contract only:

    * ``num_users`` and ``num_items``: the sizes it ranks (set by
      ``__init__``).

    * ``loss(user, pos, neg) -> (total, parts)``: ``user``, ``pos`` and
      ``neg`` are :obj:`LongTensor` batches of BPR triples; ``total`` is the
      scalar to minimise and ``parts`` a dict of detached scalar tensors for
      logging (``"bpr"``, ``"reg"``, ...).
    * ``scorer()``: returns a function mapping a batch of user ids to their
      scores over all items (``[batch, num_items]``); the default computes
      :meth:`get_embedding` once and scores by inner product.
    * ``on_epoch_start(epoch)``: per-epoch work such as re-sampling a pruned
      graph (default: nothing).
    * ``uses_negatives``: :obj:`False` for models that ignore ``neg``, so
      that the trainer may skip negative sampling.
    * ``reads_features``: :obj:`False` for models of the interactions
      alone, which ``mde-pyg train`` then notes need no feature files
      (``--no-features``); a subclass of such a model that reads features
      sets it back to :obj:`True`.
    * optionally ``estimator_parameters()`` and ``estimator_step(user, pos,
      neg)``: parameters fitted by a second optimiser, on the loss that
      ``estimator_step`` returns, before each main step (SAND's CLUB
      estimators).

    Building, saving and reloading (:meth:`from_data`, :func:`~mde_pyg
    .models.build_model`, :func:`~mde_pyg.train.grid_search`,
    :func:`~mde_pyg.runs.load_run`) rely on the constructor's form, as in
    the shipped models and ``examples/custom_model.py``:

    .. code-block:: python

        class MyModel(Recommender):
            def __init__(self, data: HeteroData, embedding_dim: int = 64,
                         reg_weight: float = 1e-4) -> None:
                super().__init__(data["user"].num_nodes,
                                 data["item"].num_nodes)
                ...

    that is, ``__init__(self, data, **hparams)``: the dataset first, then
    every hyper-parameter as a keyword argument with a default (read by
    :meth:`default_hparams` and :meth:`check_hparams`, recorded in
    ``hparams``). A constructor of another form (as this base class's
    ``num_users, num_items``) needs its own :meth:`from_data`, which sets
    ``hparams`` to the keyword arguments it takes; without ``hparams`` its
    runs train, but :func:`~mde_pyg.runs.load_run` cannot rebuild them.

    Args:
        num_users (int): Number of users.
        num_items (int): Number of items.
    """

    uses_negatives: bool = True

    #: Whether the model reads item features ``x_<modality>`` (see above).
    reads_features: bool = True

    #: Constructor arguments added after the model first shipped, with the
    #: value that builds the model as before (the same parameters):
    #: :func:`mde_pyg.runs.load_run` fills them in where a run's
    #: ``results.json`` does not record them, so that older runs reload.
    legacy_hparams: dict[str, Any] = {}

    #: Constructor arguments whose default (:obj:`None`) means "take it
    #: from the data" (DualGNN's ``k_user``, the k of its graph); ``hparams``
    #: records the value used (:meth:`resolved_hparams`).
    resolved_hparam_names: tuple[str, ...] = ()

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items

    @classmethod
    def from_data(cls, data: HeteroData, **hparams: Any) -> Recommender:
        """Build the model for the graphs in ``data`` (see
        :class:`mde_pyg.transforms.MultiModalGraphs`).

        The hyper-parameters are checked first (:meth:`check_hparams`),
        then ``data`` (:func:`mde_pyg.data.mmrec.check_data`: feature rows
        and edge ids within the node counts). All of the constructor's
        hyper-parameters, the defaults filled in, are kept as
        plain Python values in the model's ``hparams`` attribute, which
        :class:`~mde_pyg.train.Trainer` records in its checkpoints (a
        resumed run must have the same ones).
        """
        cls.check_hparams(hparams)
        check_data(data)
        model = cls(data, **hparams)
        model.hparams = plain_values({**cls.default_hparams(), **hparams,
                                      **model.resolved_hparams()})
        return model

    def resolved_hparams(self) -> dict[str, Any]:
        """Return the arguments of :attr:`resolved_hparam_names` as used
        (attributes of the same names), so that ``hparams`` records the
        value taken from the data and a run is rebuilt with it.
        """
        return {name: plain_values(getattr(self, name))
                for name in self.resolved_hparam_names}

    @classmethod
    def default_hparams(cls) -> dict[str, Any]:
        """Return the constructor's keyword arguments and their defaults."""
        params = list(inspect.signature(cls.__init__).parameters.values())
        return {p.name: p.default for p in params[2:]  # self, data
                if p.default is not inspect.Parameter.empty}

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Raise a :class:`ValueError` naming the first bad value in
        ``hparams``, before anything is built.

        A value must have the type of its constructor default (:obj:`True`
        or :obj:`False` for a flag, an integer for an integer, a number for
        a float) and lie in its range of :data:`HPARAM_RANGES` (a positive
        ``embedding_dim``, a positive ``tau``, ``num_layers >= 0``, ...);
        :obj:`None` passes where it is the constructor's default. Names the
        constructor does not take are left to it.

        Args:
            hparams (Mapping[str, Any]): Constructor keyword arguments.
        """
        params = inspect.signature(cls.__init__).parameters
        for name, value in hparams.items():
            default = params[name].default if name in params else None
            if value is None and name in params and default is None:
                continue  # the constructor's own "not given"
            flag = isinstance(default, bool)
            # the annotation first: "dropout: float = 0" takes 0.1
            annotation = str(params[name].annotation) if name in params \
                else ""
            integer = (isinstance(default, int) and not flag
                       and "float" not in annotation)
            numeric = integer or isinstance(default, float) or (
                name in HPARAM_RANGES)
            if flag and not isinstance(value, bool):
                raise ValueError(
                    f"'{name}' must be True or False, got {value!r}")
            if numeric and (isinstance(value, bool)
                            or not isinstance(value, numbers.Real)):
                raise ValueError(f"'{name}' must be a number, got {value!r}")
            if integer and not isinstance(value, numbers.Integral):
                raise ValueError(f"'{name}' must be an integer, got {value!r}")
            if name in HPARAM_RANGES:
                bound, inclusive = HPARAM_RANGES[name]
                if not (value >= bound if inclusive else value > bound):
                    sign = ">=" if inclusive else ">"
                    raise ValueError(
                        f"'{name}' must be {sign} {bound}, got {value}")

    def get_embedding(self) -> tuple[Tensor, Tensor]:
        """Return the final ``(user, item)`` representations."""
        raise NotImplementedError

    def loss(
        self, user: Tensor, pos: Tensor, neg: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the training objective of a batch and its logged parts.

        Args:
            user (torch.Tensor): User ids ``[B]``.
            pos (torch.Tensor): Their positive item ids ``[B]``.
            neg (torch.Tensor): Sampled negative item ids ``[B]`` (the
                positives again for a model whose ``uses_negatives`` is
                :obj:`False`).

        Returns:
            ``(total, parts)``: the scalar loss to minimise and a dict of
            detached scalars that the :class:`~mde_pyg.train.Trainer`
            averages over the epoch and logs (``{}`` to log none);
            :meth:`sum_parts` builds both from a dict of terms. The
            trainer also takes a bare scalar ``total``.
        """
        raise NotImplementedError

    @staticmethod
    def sum_parts(parts: dict[str, Tensor]
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(sum of parts, detached parts)``, what :meth:`loss`
        returns.
        """
        total = sum(parts.values())
        return total, {k: v.detach() for k, v in parts.items()}

    def on_epoch_start(self, epoch: int) -> None:
        """Hook called by the trainer before each epoch (default: no-op)."""

    def forward(self, user: Tensor, item: Tensor) -> Tensor:
        r"""Score the pairs ``(user[n], item[n])``: :math:`y_{u,i} =
        \langle \mathbf{e}_u, \mathbf{e}_i \rangle`.
        """
        user_emb, item_emb = self.get_embedding()
        return (user_emb[user] * item_emb[item]).sum(dim=-1)

    @torch.no_grad()
    def scorer(self) -> Callable[[Tensor], Tensor]:
        """Return a function from user ids to scores over all items.

        The embeddings are computed once here, so that a full-ranking
        evaluation over many user batches propagates the graph only once.
        They are those of the model's current mode: call it in evaluation
        mode (``model.eval()``), as the evaluator and :meth:`recommend` do,
        since dropout, noise and pruned graphs belong to training.
        """
        user_emb, item_emb = self.get_embedding()
        item_t = item_emb.t().contiguous()

        def score(user: Tensor) -> Tensor:
            return user_emb[user] @ item_t

        return score

    @torch.no_grad()
    def recommend(
        self,
        user: Tensor,
        k: int = 20,
        exclude: Tensor | None = None,
    ) -> Tensor:
        r"""Return the top-``k`` item ids of each user in ``user``, scored
        in evaluation mode (the model's mode is restored after).

        Nothing is left out unless ``exclude`` says so, so the users' own
        training items can come back: :func:`mde_pyg.train.recommend`
        leaves out the train split's items by default.

        Args:
            user (torch.Tensor): User ids in ``[0, num_users)``, shape
                ``[B]``.
            k (int, optional): Number of items per user. (default: :obj:`20`)
            exclude (torch.Tensor, optional): Pairs ``[2, E]`` of
                (position in ``user``, item id) never to recommend, e.g. the
                users' training items. (default: :obj:`None`)

        A user with fewer than ``k`` items left after ``exclude`` gets
        excluded ones in the last positions; :func:`mde_pyg.train.recommend`
        marks those positions ``-1`` instead.

        Returns:
            The item ids ``[B, k]``, best first, on the model's device
            (:func:`mde_pyg.train.recommend` returns CPU tensors).
        """
        k = check_k(k, self.num_items)
        if exclude is not None and not (
                isinstance(exclude, Tensor) and exclude.dim() == 2
                and exclude.size(0) == 2 and not exclude.is_floating_point()):
            raise TypeError(
                f"'exclude' takes (position in 'user', item id) pairs as a "
                f"[2, E] integer tensor, got {type(exclude).__name__}"
                f"{tuple(exclude.shape) if isinstance(exclude, Tensor) else ''}"
                f"; to leave out the items of a split, call "
                f"mde_pyg.train.recommend(model, data, user, k, "
                f"exclude=('train',))")
        from mde_pyg.train.evaluator import evaluation_mode

        user = check_user_ids(user, self.num_users)
        # dropout, noise and pruned graphs are training's; the scores are
        # in the model's own precision, whatever autocast the caller runs
        with evaluation_mode(self):
            scores = self.scorer()(user)
        if exclude is not None:
            scores[exclude[0], exclude[1]] = float("-inf")
        return rank_top_k(scores, k)[1]  # equal scores: the smaller id first

    def extra_repr_parts(self) -> list[str]:
        """Model-specific ``key=value`` items appended to ``repr``."""
        return []

    def __repr__(self) -> str:
        parts = [f"{self.num_users} users", f"{self.num_items} items"]
        if getattr(self, "modalities", None):
            parts.append(f"modalities={self.modalities}")
        if getattr(self, "embedding_dim", None):
            parts.append(f"dim={self.embedding_dim}")
        parts += self.extra_repr_parts()
        return f"{self.__class__.__name__}({', '.join(parts)})"
