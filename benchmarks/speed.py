"""Speed and memory at the Amazon Baby shape, with the dense-work floor.

Uses the real Baby interaction graph (``../shared/data/baby_graph``: 19,445
users, 7,050 items, 118,551 train edges) with random item features of the
real shapes (image 4096-d, text 384-d), d = 64, batch 2048. For each model,
in a fresh subprocess (so that peak memory is its own), it reports:

* graph build time (user-item normalisation, co-occurrence, kNN);
* seconds per training epoch (the model's ``on_epoch_start`` and
  :meth:`mde_pyg.train.Trainer.train_epoch`, the mean of ``--epochs``
  epochs after one warm-up epoch);
* the floor: the dense work of one epoch, measured in the same process:
  the products one training step of the model computes (every
  ``nn.Linear`` call on its real input and every fused sparse propagation
  product, a fused multi-hop propagation as one call, recorded by
  :class:`ProductRecorder`), replayed forward + backward on their own
  (the fastest of 3 replays) before the first timed epoch and after each
  one, times the number of batches; and the ratio epoch / floor, each
  epoch against the faster of the replays beside it
  (:func:`paired_floors`), averaged over the epochs. It measures what the
  step adds around its products (losses, indexing, optimiser, Python).
  The recorded products are listed under the table;
* the other dense products: those of the same step outside the floor
  (each blocked logsumexp of a similarity product in a loss, exp
  included, and every other dense matrix product outside ``nn.Linear``),
  replayed the same way, and the ratio epoch / (floor + other): what the
  step adds around all of its products, where a model compares the batch
  with many rows by design (LGMRec's hypergraph loss against all users
  and items, SLMRec's in-batch softmaxes);
* seconds of one full-ranking evaluation of all test users;
* peak memory (RSS on CPU, allocated on CUDA).

Writes ``benchmarks/results/speed_<device>_<precision>.md``. With
``--profile STEPS`` it instead profiles ``STEPS`` training steps of each
model with :mod:`torch.profiler` and prints the operators with the most
self time (the table the optimisation work started from).

Usage::

    python benchmarks/speed.py --models mde lightgcn --device cpu
    python benchmarks/speed.py --models lightgcn --profile 20
"""

from __future__ import annotations

import argparse
import json
import os.path as osp
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


def _timed(fn, device, repeat=3, reduce="median"):
    """Seconds of ``fn()`` over ``repeat`` runs after a warm-up: their
    ``"median"`` or their ``"min"``.
    """
    fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0] if reduce == "min" else times[len(times) // 2]


def _dense_product_mode(records: list, inside: list):
    """Return a :class:`torch.overrides.TorchFunctionMode` that appends
    ``("mm", (function, args, kwargs), grad)`` to ``records`` for every
    dense matrix product called outside ``nn.Linear`` (``@``, ``matmul``,
    ``mm``, ``addmm``, ``bmm``, keyword arguments such as ``beta``
    included), e.g. the ``[B, B]`` logits of an in-batch loss or LGMRec's
    hypergraph products; not while ``inside`` is non-empty (a recorded
    loss product is running), nor for sparse operands (recorded as
    propagation products) or an ``out=`` buffer.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    products = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                torch.mm, torch.Tensor.mm, torch.addmm, torch.Tensor.addmm,
                torch.bmm, torch.Tensor.bmm}

    def leaf(a):
        return (a.detach().requires_grad_(a.requires_grad)
                if isinstance(a, torch.Tensor) else a)

    class DenseProductMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            tensors = [a for a in (*args, *kwargs.values())
                       if isinstance(a, torch.Tensor)]
            if (func in products and not inside and "out" not in kwargs
                    and all(t.layout == torch.strided for t in tensors)):
                grad = torch.is_grad_enabled() and any(
                    t.requires_grad for t in tensors)
                records.append(("mm", (func, tuple(map(leaf, args)),
                                       {k: leaf(v) for k, v in
                                        kwargs.items()}), grad))
            return func(*args, **kwargs)

    return DenseProductMode()


class ProductRecorder:
    """Record the dense and sparse products of one training step.

    Inside the ``with`` block, every call of an :class:`torch.nn.Linear` of
    the model (module and input) and every fused CSR product
    (:func:`mde_pyg.nn.sparse.csr_matmul`: adjacency, its transpose and the
    dense input; each fused multi-hop propagation,
    :func:`~mde_pyg.nn.sparse.csr_hops`, in ``hops``, replayed as the
    model computes it) is recorded, and so is every product over a graph with
    learnt edge weights (:func:`~mde_pyg.nn.sparse.weighted_csr_matmul`
    and :func:`~mde_pyg.nn.sparse.csr_edge_dot`, GRCN's refined graph,
    in ``weighted``), so :meth:`replay` can run exactly those
    products again, each on its own recorded input: forward, then, for the
    calls made with gradients enabled, backward with a fixed random output
    gradient (weight gradients, and input gradients where the model's
    input required them). Losses, indexing, element-wise work and
    optimiser steps are left out. The floor is the model's products as
    the model computes them: :meth:`describe` lists them, so a redundant
    product would show there.

    Outside the floor, in ``others``, it records each blocked logsumexp
    of a similarity product (:class:`mde_pyg.losses._BoundedLogSumExp`,
    the contrastive losses) and every other dense matrix product outside
    ``nn.Linear`` (:func:`_dense_product_mode`), which
    ``replay(part="other")`` runs the same way.
    """

    def __init__(self, model):
        self.model = model
        self.linears: list = []
        self.products: list = []
        self.hops: list = []
        self.weighted: list = []
        self.others: list = []
        self._handles: list = []
        self._forward = None
        self._hops_forward = None
        self._weighted_forward: dict = {}
        self._logsumexp_forward = None
        self._mode = None

    def __enter__(self):
        import torch

        from mde_pyg.nn import sparse

        def on_linear(module, inputs, output):
            x = inputs[0]
            self.linears.append(
                (module, x.detach().requires_grad_(x.requires_grad),
                 torch.is_grad_enabled()))

        for module in self.model.modules():
            if isinstance(module, torch.nn.Linear):
                self._handles.append(module.register_forward_hook(on_linear))
        self._forward = sparse._CSRMatmul.forward

        def forward(ctx, adj, adj_transposed, x):
            self.products.append(
                (adj, adj_transposed, x.detach().requires_grad_(),
                 ctx.needs_input_grad[2]))
            return self._forward(ctx, adj, adj_transposed, x)

        sparse._CSRMatmul.forward = staticmethod(forward)
        self._hops_forward = sparse._CSRHops.forward

        def hops(ctx, x, adj, adj_transposed, num_layers, reduce):
            self.hops.append((adj, adj_transposed, x.detach().requires_grad_(),
                              num_layers, reduce, ctx.needs_input_grad[0]))
            return self._hops_forward(ctx, x, adj, adj_transposed,
                                      num_layers, reduce)

        sparse._CSRHops.forward = staticmethod(hops)

        for name, kind in (("_EdgeWeightedMatmul", "matmul"),
                           ("_EdgeDot", "dot")):
            function = getattr(sparse, name)
            self._weighted_forward[name] = function.forward

            def weighted(ctx, a, b, graph, kind=kind, name=name):
                self.weighted.append(
                    (kind, graph, a.detach().requires_grad_(),
                     b.detach().requires_grad_(),
                     ctx.needs_input_grad[0] or ctx.needs_input_grad[1]))
                return self._weighted_forward[name](ctx, a, b, graph)

            function.forward = staticmethod(weighted)

        from mde_pyg import losses

        self._logsumexp_forward = losses._BoundedLogSumExp.forward
        inside = []  # a recorded loss product is running: skip its mm

        def logsumexp(ctx, a, b, bound, columns):
            self.others.append(
                ("logsumexp", (a.detach().requires_grad_(),
                               b.detach().requires_grad_(), bound, columns),
                 ctx.needs_input_grad[0] or ctx.needs_input_grad[1]))
            inside.append(True)
            try:
                return self._logsumexp_forward(ctx, a, b, bound, columns)
            finally:
                inside.pop()

        losses._BoundedLogSumExp.forward = staticmethod(logsumexp)
        self._mode = _dense_product_mode(self.others, inside)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        from mde_pyg.nn import sparse

        for handle in self._handles:
            handle.remove()
        sparse._CSRMatmul.forward = staticmethod(self._forward)
        sparse._CSRHops.forward = staticmethod(self._hops_forward)
        for name, forward in self._weighted_forward.items():
            getattr(sparse, name).forward = staticmethod(forward)
        from mde_pyg import losses

        losses._BoundedLogSumExp.forward = staticmethod(
            self._logsumexp_forward)
        self._mode.__exit__(*exc)
        return False

    def describe(self) -> str:
        """One line listing the recorded products and their shapes."""
        def mark(grad):
            return "" if grad else " (no grad)"

        linears = [f"{list(x.shape)}@{list(m.weight.shape[::-1])}"
                   f"{mark(grad)}" for m, x, grad in self.linears]
        products = [f"{adj.size(0)}x{adj.size(1)} nnz {adj._nnz()}"
                    f"@{x.size(1)}{mark(grad)}"
                    for adj, _, x, grad in self.products]
        for adj, _, x, num_layers, reduce, grad in self.hops:
            products += [f"{adj.size(0)}x{adj.size(1)} nnz {adj._nnz()}"
                         f"@{x.size(1)} (hop {i + 1}/{num_layers}, "
                         f"{reduce}){mark(grad)}"
                         for i in range(num_layers)]
        for kind, graph, _, b, grad in self.weighted:
            rows, cols = graph.shape[::-1]
            what = "learnt weights" if kind == "matmul" else "edge dot"
            products.append(f"{rows}x{cols} nnz {graph.col.numel()}"
                            f"@{b.size(1)} ({what}){mark(grad)}")
        others = []
        for kind, args, grad in self.others:
            if kind == "logsumexp":
                a, b, _, columns = args
                what = "rows and columns" if columns else "rows"
                others.append(f"{list(a.shape)}@{list(b.shape[::-1])} "
                              f"(logsumexp of {what}){mark(grad)}")
            else:  # the two matrices: the last operands of two dims
                a, b = [t for t in (*args[1], *args[2].values())
                        if getattr(t, "dim", lambda: 0)() >= 2][-2:]
                others.append(f"{list(a.shape)}@{list(b.shape)}"
                              f"{mark(grad)}")
        return (f"{len(linears)} linear: {', '.join(linears) or '-'}; "
                f"{len(products)} sparse: {', '.join(products) or '-'}; "
                f"{len(others)} other dense: {', '.join(others) or '-'}")

    def replay(self, device, precision: str, repeat: int = 5,
               part: str = "floor") -> float:
        """Seconds of forward + backward of the recorded products: the
        fastest of ``repeat`` runs, since a floor is the least time the
        products need (a transient slowdown of the shared machine during
        one short replay would otherwise inflate it, where an epoch
        averages over its many steps).

        ``part="floor"`` replays the feature projections and propagation
        products (the floor), ``part="other"`` the other dense products:
        each blocked logsumexp of a product in a loss
        (:func:`mde_pyg.losses._logsumexp_of_product`, its exp included,
        as the loss computes it) and each other dense matrix product
        outside ``nn.Linear``.
        """
        import contextlib

        import torch

        from mde_pyg.losses import _BoundedLogSumExp
        from mde_pyg.nn.sparse import (
            csr_edge_dot,
            csr_hops,
            csr_matmul,
            weighted_csr_matmul,
        )

        calls = []  # (function of no arguments, its leaf inputs, grad)
        if part == "floor":
            calls += [(lambda m=m, x=x: m(x), [x], grad)
                      for m, x, grad in self.linears]
            calls += [(lambda a=a, a_t=a_t, x=x: csr_matmul(a, x, a_t),
                       [x], grad) for a, a_t, x, grad in self.products]
            calls += [(lambda a=a, a_t=a_t, x=x, n=n, r=r:
                       csr_hops(a, x, n, r, a_t), [x], grad)
                      for a, a_t, x, n, r, grad in self.hops]
            for kind, graph, a, b, grad in self.weighted:
                fn = weighted_csr_matmul if kind == "matmul" else \
                    csr_edge_dot
                calls.append((lambda fn=fn, g=graph, a=a, b=b: fn(g, a, b),
                              [a, b], grad))
        elif part == "other":
            for kind, args, grad in self.others:
                if kind == "logsumexp":
                    # the column sums are only back-propagated where used
                    def fn(args=args):
                        out = _BoundedLogSumExp.apply(*args)
                        return out if args[3] else out[:1]
                    leaves = list(args[:2])
                else:
                    def fn(args=args):
                        return args[0](*args[1], **args[2])
                    leaves = [t for t in (*args[1], *args[2].values())
                              if isinstance(t, torch.Tensor)]
                calls.append((fn, leaves, grad))
        else:
            raise ValueError(f"'part' must be 'floor' or 'other', got "
                             f"'{part}'")
        if not calls:
            return 0.0
        cast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if precision == "bf16" else contextlib.nullcontext())

        def forward():
            outs = []
            for fn, _, grad in calls:
                with cast, torch.set_grad_enabled(grad):
                    out = fn()
                outs += list(out) if isinstance(out, tuple) else [out]
            return outs

        grads = [torch.randn_like(out) for out in forward()]

        def step():
            self.model.zero_grad(set_to_none=True)
            for _, leaves, _ in calls:
                for x in leaves:
                    x.grad = None
            pairs = [(o, g) for o, g in zip(forward(), grads)
                     if o.requires_grad]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs],
                                        [g for _, g in pairs])

        seconds = _timed(step, device, repeat, reduce="min")
        self.model.zero_grad(set_to_none=True)
        return seconds


def paired_floors(replays: list[tuple[float, float]]
                  ) -> tuple[list[float], list[float]]:
    """Return each timed epoch's ``(floor, other)`` seconds from replays
    taken before the first epoch and after each one (``len(epochs) + 1``
    pairs): for epoch ``i``, the faster of the replays just before and
    just after it, each part on its own.

    So an epoch is compared with products timed within seconds of it: on
    a shared machine whose speed drifts over minutes, one floor timed
    once for all epochs can come out slower than the epochs themselves.
    """
    if len(replays) < 2:
        raise ValueError(f"need a replay before and after each epoch, got "
                         f"{len(replays)}")
    pairs = list(zip(replays[:-1], replays[1:]))
    return ([min(a[0], b[0]) for a, b in pairs],
            [min(a[1], b[1]) for a, b in pairs])


def mean_ratio(epochs: list[float], floors: list[float]) -> float | None:
    """Return the mean over the epochs of ``epoch / floor``, each epoch
    against its own (paired) floor, or :obj:`None` where a floor is below
    a millisecond (nothing to compare with, as MostPop's).
    """
    if not epochs or min(floors) < 1e-3:
        return None
    return sum(t / f for t, f in zip(epochs, floors)) / len(epochs)


def _ratio_cell(ratio: float | None) -> str:
    """A ratio as the table prints it."""
    return "-" if ratio is None else f"{ratio:.2f}"


def record_products(model, trainer, batch_size: int) -> ProductRecorder:
    """Record the products of one training step on the first train batch:
    ``model.estimator_step`` (when the model has one) and ``model.loss``,
    without the optimiser steps.
    """
    device = trainer.device
    user = trainer.train_user[:batch_size]
    pos = trainer.train_item[:batch_size]
    neg = trainer.sampler.sample(user) if model.uses_negatives else pos
    batch = (user.to(device), pos.to(device), neg.to(device))
    model.train()
    with ProductRecorder(model) as recorder, trainer._autocast():
        if trainer.estimator_optimizer is not None:
            model.estimator_step(*batch)
        model.loss(*batch)
    return recorder


def _setup(args):
    """Return ``(device, data, graph seconds, model, trainer)`` for the
    model ``args.child`` at the Baby shape.
    """
    import torch

    from _common import baby_shape_data
    from mde_pyg.models import build_model
    from mde_pyg.train import Trainer

    torch.manual_seed(0)
    device = torch.device(args.device)
    data, graph_seconds = baby_shape_data(args.data)
    model = build_model(args.child, data)
    trainer = Trainer(model, data, batch_size=args.batch_size,
                      device=device, precision=args.precision,
                      progress=False)
    return device, data, graph_seconds, model, trainer


def run_one(args) -> dict:
    """Time one model; return its row as a dict."""
    import torch

    from _common import peak_rss_mib

    device, data, graph_seconds, model, trainer = _setup(args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    num_batches = -(-data["user", "rates", "item"].edge_index.size(1)
                    // args.batch_size)
    epoch = floor = other = 0.0
    ratios = {"floor": None, "all": None}
    products = "-"
    if trainer.optimizer is not None:  # MostPop has nothing to train
        model.on_epoch_start(0)
        trainer.train_epoch()  # warm-up
        recorder = record_products(model, trainer, args.batch_size)
        products = recorder.describe()

        def replay():  # (floor, other) seconds per epoch, now
            return tuple(recorder.replay(device, args.precision, repeat=3,
                                         part=part) * num_batches
                         for part in ("floor", "other"))

        epochs, replays = [], [replay()]
        for i in range(1, args.epochs + 1):
            _sync(device)
            start = time.perf_counter()
            model.on_epoch_start(i)  # e.g. FREEDOM's graph pruning
            trainer.train_epoch()
            _sync(device)
            epochs.append(time.perf_counter() - start)
            replays.append(replay())
        epoch = sum(epochs) / len(epochs)
        floors, others = paired_floors(replays)
        floor = sum(floors) / len(floors)
        other = sum(others) / len(others)
        ratios = {"floor": mean_ratio(epochs, floors),
                  "all": mean_ratio(epochs, [f + o for f, o in
                                             zip(floors, others)])}
    evaluation = _timed(lambda: trainer.test_evaluator(model), device, 2)
    out = {"model": args.child, "epoch": epoch, "floor": floor,
           "other": other, "ratios": ratios, "products": products,
           "step": epoch / num_batches,
           "eval": evaluation, "graphs": graph_seconds,
           "peak_rss_mib": peak_rss_mib()}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_profile(args) -> None:
    """Print the top operators of ``args.profile`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    device, _, _, _, trainer = _setup(args)
    keep = args.profile * args.batch_size  # an "epoch" of STEPS batches
    trainer.train_user = trainer.train_user[:keep]
    trainer.train_item = trainer.train_item[:keep]
    trainer.train_epoch()  # warm-up
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        start = time.perf_counter()
        trainer.train_epoch()
        _sync(device)
        seconds = time.perf_counter() - start
    sort = ("self_cuda_time_total" if device.type == "cuda"
            else "self_cpu_time_total")
    print(f"{args.child}: {seconds / args.profile:.4f} s / step under the "
          f"profiler")
    print(prof.key_averages().table(
        sort_by=sort, row_limit=25, max_name_column_width=40,
        max_shapes_column_width=70))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        default=["mostpop", "lightgcn", "vbpr", "mmgcn",
                                 "grcn", "dualgnn", "slmrec", "lgmrec",
                                 "freedom", "dragon", "bm3", "sand", "mde"],
                        help="models to time, each in its own process "
                             "(default: all)")
    parser.add_argument("--data", default=DEFAULT_DATA, metavar="FOLDER",
                        help="the folder of baby_graph.inter (default: "
                             "../shared/data/baby_graph beside the project)")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (default: cpu)")
    parser.add_argument("--precision", default="fp32",
                        choices=["fp32", "bf16"],
                        help="bf16: autocast (default: fp32)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="timed epochs per model, after one warm-up "
                             "epoch (default: 2)")
    parser.add_argument("--batch-size", type=int, default=2048,
                        help="default: 2048, the paper's")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="the Markdown table (default: benchmarks/"
                             "results/speed_<device>_<precision>.md)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="do not call mde_pyg.tune_cpu_allocator")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="profile STEPS training steps per model "
                             "instead of timing (prints, writes nothing)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from _common import check_models

    check_models(parser, args.models)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error(f"--epochs and --batch-size must be >= 1, got "
                     f"{args.epochs} and {args.batch_size}")
    from _common import code_version

    args.code = code_version()  # before any edit during the run
    if not osp.isfile(osp.join(args.data, "baby_graph.inter")):
        sys.exit(f"'{osp.join(args.data, 'baby_graph.inter')}' is absent: "
                 f"pass --data FOLDER holding the Baby graph's "
                 f"baby_graph.inter")

    if not args.system_malloc:
        from mde_pyg import tune_cpu_allocator

        tune_cpu_allocator()
    if args.profile > 0:
        for name in args.models:
            args.child = name
            run_profile(args)
        return
    if args.child is not None:
        print(json.dumps(run_one(args)))
        return

    from _common import machine_header, markdown_table, run_child, write_results

    rows, products, failed = [], [], []
    for name in args.models:
        cmd = [sys.executable, __file__, "--child", name, "--data",
               args.data, "--device", args.device, "--precision",
               args.precision, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size)]
        if args.system_malloc:
            cmd.append("--system-malloc")
        res = run_child(cmd, name)
        if res is None:
            rows.append([name, "failed"] + [""] * 8)
            failed.append(name)
            continue
        products.append(f"- {name}: {res['products']}")
        memory = (f"{res['peak_gpu_mib']:.0f} (GPU)" if "peak_gpu_mib" in res
                  else f"{res['peak_rss_mib']:.0f}")
        rows.append([name, f"{res['epoch']:.2f}", f"{res['step']:.3f}",
                     f"{res['floor']:.2f}", _ratio_cell(res["ratios"]["floor"]),
                     f"{res['other']:.2f}",
                     _ratio_cell(res["ratios"]["all"]),
                     f"{res['eval']:.2f}", f"{res['graphs']:.1f}", memory])
        print(" | ".join(rows[-1]), flush=True)
    header = ["model", "s / epoch", "s / step", "floor s / epoch",
              "epoch / floor", "other products s / epoch",
              "epoch / (floor + other)",
              "s / full eval", "graph build s", "peak MiB"]
    machine = machine_header(args.device, args.system_malloc,
                             code=args.code)
    text = (f"# Speed at the Amazon Baby shape ({args.device}, "
            f"{args.precision})\n\n"
            f"{machine}\n\n"
            f"19,445 users x 7,050 items, 118,551 train edges, random "
            f"features image 4096-d + text 384-d, d = 64, batch "
            f"{args.batch_size}; epoch = mean of {args.epochs} after a "
            f"warm-up. Floor = the products of one training step (every "
            f"nn.Linear call and sparse propagation product, recorded "
            f"from the model and listed below), replayed forward + "
            f"backward (the fastest of 3 replays) before the first timed "
            f"epoch and after each, times the batches per epoch; each "
            f"epoch is compared with the faster of the replays just "
            f"before and after it, and the ratios are the mean over the "
            f"epochs of these paired ratios. Floor s / epoch is the mean "
            f"of the epochs' floors. Other products = the step's dense "
            f"products outside the floor (each blocked logsumexp of a "
            f"similarity product in a loss, with its exp, and every "
            f"other dense matrix product outside nn.Linear), replayed "
            f"the same way: work a "
            f"model does by design that the floor does not count.\n\n"
            f"{markdown_table(header, rows)}\n\n"
            f"Products per step ([rows, in]@[in, out] for nn.Linear, "
            f"rows x cols nnz @ width for the sparse products, [B, d]@"
            f"[d, N] for the other dense products):\n\n"
            + "\n".join(products) + "\n")
    out = args.output or osp.join(
        HERE, "results", f"speed_{args.device.split(':')[0]}_"
        f"{args.precision}.md")
    write_results(out, text, len(rows) - len(failed), failed, "speed.py")


if __name__ == "__main__":
    main()
