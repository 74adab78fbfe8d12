"""Sparse feature rows (``modrl/sparse.py``) against the dense inventory on one update's rows.

    python benchmarks/sparse_rows.py [--num-envs 2560] [--ticks 25] [--runs 5] [--threads 2] [--repeats 5]

Collects ``--ticks`` ticks of real Craft observations from ``--num-envs`` envs (random actions; the
shape of one update of the reproduction's ``--batched`` form: 2,560 envs × 25 ticks, five runs),
then times, on those rows, forward and backward (weight gradient) of:

- the modules' inventory (``runs`` × 8 modules, 1076 → 128 → 6, rows sorted by module as the update
  gathers them): dense rows (``grouped_mm``; the reference) against ``SparseRows``, and the first
  layer alone through ``embedding_bag``'s own backward, and through the dense ``x[seg]ᵀ · g[seg]``;
- the critics (``runs`` × 50 linear heads, rows in rollout order): dense (the reference: rows
  gathered by head, ``grouped_mm``) against ``SparseRows``.

Prints milliseconds (median of ``--repeats``) and the ratios reference / sparse (> 1: sparse is
faster), and the modules' gradients of both against a float64 computation. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import modrl  # noqa: F401
from modrl.envs.craft import CraftVectorEnv
from modrl.inventory import Grouping, StackedMLP, rows_by_module
from modrl.perf import configure_cpu_allocator
from modrl.sparse import SparseRows, sparse_rows_matmul


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, default=2560)
    p.add_argument("--ticks", type=int, default=25)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    torch.manual_seed(0)

    env = CraftVectorEnv(args.num_envs, split="train")
    obs, _ = env.reset(seed=0)
    ticks = []
    for _ in range(args.ticks):
        ticks.append(obs)
        obs, *_ = env.step(torch.randint(0, 5, (args.num_envs,)))
    x = torch.cat(ticks)  # [B, 1076], rollout order
    B, D = x.shape
    rows = SparseRows.cat([SparseRows.of(t) for t in ticks])
    modules, heads = 8 * args.runs, 50 * args.runs
    module = torch.randint(0, modules, (B,))
    head = torch.randint(0, heads, (B,))

    # the modules: the update's rows sorted by module
    policy = StackedMLP(modules, D, 6, hidden=128, num_layers=2, mode="grouped")
    order = rows_by_module(torch.arange(B), module)
    sorted_module = module.index_select(0, order)
    grouping = Grouping.presorted(sorted_module, modules)
    g = torch.randn(B, 6)

    def policy_dense():
        policy.zero_grad(set_to_none=True)
        policy(x.index_select(0, order), sorted_module, grouping).backward(g)  # the gather is part of the dense update

    def policy_sparse():
        policy.zero_grad(set_to_none=True)
        policy(rows.select(order), sorted_module, grouping).backward(g)

    # both against the float64 per-segment forward (the definition): dense and sparse round differently
    reference = StackedMLP(modules, D, 6, hidden=128, num_layers=2, mode="segments").double()
    reference.load_state_dict({k: v.double() for k, v in policy.state_dict().items()})
    reference(x.index_select(0, order).double(), sorted_module, grouping).backward(g.double())
    exact = [q.grad for q in reference.parameters()]

    def error(fn):
        """The largest error relative to each tensor's largest entry, and how many entries exceed 1e-5: a
        hidden unit of one row at the ReLU's boundary can fall on either side under either rounding."""
        fn()
        errs = [(q.grad - e).abs() / e.abs().max().clamp_min(1e-12) for q, e in zip(policy.parameters(), exact)]
        return {"max": max(float(r.max()) for r in errs), "entries_over_1e-5": sum(int((r > 1e-5).sum()) for r in errs)}

    errors = {"dense": error(policy_dense), "sparse": error(policy_sparse)}

    # the first layer alone: W₀ [M, D, 128] on the sorted rows
    w0 = torch.randn(modules, D, 128, requires_grad=True)
    g0 = torch.randn(B, 128)
    xs, sel = x.index_select(0, order), rows.select(order)
    key = sorted_module.index_select(0, sel.row.long()) * D + sel.col.long()

    def first_embedding_bag():
        w0.grad = None
        F.embedding_bag(key, w0.reshape(-1, 128), sel.offsets().long(), mode="sum",
                        per_sample_weights=sel.val).backward(g0)

    def first_dense_grad():
        F.grouped_mm(xs.t(), g0, offs=grouping.offsets)  # x[seg]ᵀ · g[seg] (the product itself reused)

    def first_sparse():
        w0.grad = None
        sparse_rows_matmul(sel, sorted_module, w0).backward(g0)

    # the critics: linear heads, rows in rollout order
    critics = StackedMLP(heads, D, 1, hidden=D, num_layers=1, mode="grouped")
    gv = torch.randn(B, 1)

    def critics_dense():
        critics.zero_grad(set_to_none=True)
        live = rows_by_module(torch.arange(B), head)
        h = head.index_select(0, live)
        critics(x.index_select(0, live), h, Grouping.presorted(h, heads)).backward(gv)

    def critics_sparse():
        critics.zero_grad(set_to_none=True)
        critics(rows, head).backward(gv)

    ms = {
        "modules_dense": timed(policy_dense, args.repeats),
        "modules_sparse": timed(policy_sparse, args.repeats),
        "first_layer_embedding_bag_backward": timed(first_embedding_bag, args.repeats),
        "first_layer_dense_weight_gradient": timed(first_dense_grad, args.repeats),
        "first_layer_sparse": timed(first_sparse, args.repeats),
        "critics_dense": timed(critics_dense, args.repeats),
        "critics_sparse": timed(critics_sparse, args.repeats),
    }
    out = {
        "rows": B, "entries_per_row": round(rows.val.numel() / B, 1), "modules": modules, "heads": heads,
        "threads": args.threads, "ms": {k: round(v, 1) for k, v in ms.items()},
        "ratio_modules": round(ms["modules_dense"] / ms["modules_sparse"], 2),
        "ratio_critics": round(ms["critics_dense"] / ms["critics_sparse"], 2),
        "ratio_first_layer_embedding_bag": round(ms["first_layer_embedding_bag_backward"] / ms["first_layer_sparse"], 2),
        "ratio_first_layer_dense_gradient_only": round(ms["first_layer_dense_weight_gradient"] / ms["first_layer_sparse"], 2),
        "max_relative_gradient_error_vs_float64": errors,
    }
    for k, v in ms.items():
        print(f"{k:>36}: {v:7.1f} ms")
    print(f"modules dense / sparse: {out['ratio_modules']}; critics dense / sparse: {out['ratio_critics']}; "
          f"first layer, embedding_bag's backward / ours: {out['ratio_first_layer_embedding_bag']}, "
          f"dense weight gradient alone / ours (forward and backward): {out['ratio_first_layer_dense_gradient_only']}")
    print("modules' gradients against float64 (max error relative to each tensor's largest entry; entries over 1e-5): "
          + ", ".join(f"{k} {v['max']:.1e} ({v['entries_over_1e-5']} of {sum(q.numel() for q in policy.parameters()):,})"
                      for k, v in errors.items()))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
