"""Per-sample routing through a module inventory vs a single module and vs a per-module loop.

    python benchmarks/inventory_throughput.py [--device cpu|cuda] [--batch 4096] [--width 128]

For M ∈ {4, 8, 16, 32} modules (one Linear(width, width) + ReLU each, the MLP transform of a
routing network) and a random module per sample, times ``StackedMLP.forward(x, index)`` (sort +
``grouped_mm`` + unsort) against:
- a single ``nn.Linear`` + ReLU on the whole batch (the cost floor: no routing at all);
- a per-module Python loop (``x[index == m]`` through module m, results scattered back);
- for M = 8 only, gathering one weight matrix per sample (``bmm``), the approach never to use.
Forward-only and forward+backward are both timed; the last line is one JSON object with
``ratio_vs_single`` and ``ratio_vs_loop`` (forward+backward, M = 8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from modrl.inventory import StackedMLP
from modrl.perf import configure_cpu_allocator


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after a warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--modules", type=int, nargs="+", default=[4, 8, 16, 32])
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    configure_cpu_allocator()
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    B, D = args.batch, args.width
    torch.manual_seed(0)
    x = torch.randn(B, D, device=device, dtype=dtype, requires_grad=True)
    single = nn.Linear(D, D).to(device, dtype)

    def fwd_bwd(f):
        return lambda: f().float().sum().backward()

    results = {}
    print(f"# batch {B}, width {D}, {args.device}, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'M':>3} {'single':>10} {'routed':>10} {'loop':>10}   (µs, forward | forward+backward)")
    for M in args.modules:
        inv = StackedMLP(M, D, D, hidden=D, num_layers=1, final_activation=True).to(device, dtype)
        loop = nn.ModuleList(nn.Linear(D, D) for _ in range(M)).to(device, dtype)
        index = torch.randint(0, M, (B,), device=device)

        def run_single():
            return torch.relu(single(x))

        def run_routed():
            return inv(x, index)

        def run_loop():
            out = torch.empty(B, D, device=device, dtype=dtype)
            for m in range(M):
                rows = index == m
                out[rows] = torch.relu(loop[m](x[rows]))
            return out

        row = {}
        for name, f in (("single", run_single), ("routed", run_routed), ("loop", run_loop)):
            with torch.no_grad():
                fwd = timed(f, device, args.repeats)
            both = timed(fwd_bwd(f), device, args.repeats)
            row[name] = (fwd, both)
        results[M] = row
        print(
            f"{M:>3} " + " ".join(f"{row[k][0] * 1e6:>10,.0f}" for k in ("single", "routed", "loop"))
            + " | " + " ".join(f"{row[k][1] * 1e6:>10,.0f}" for k in ("single", "routed", "loop"))
            + f"   routed/single {row['routed'][1] / row['single'][1]:.2f}x, loop/routed {row['loop'][1] / row['routed'][1]:.2f}x"
        )
        if M == 8:
            weights = inv.weights[0].detach()
            with torch.no_grad():
                gather = timed(lambda: torch.bmm(x.detach().unsqueeze(1), weights[index]), device, 3)
            print(f"    M=8 per-sample weight gather (bmm): {gather * 1e6:,.0f} µs forward "
                  f"({gather / row['single'][0]:.0f}x single)")
            results["gather"] = gather

    at = 8 if 8 in results else args.modules[0]
    r = results[at]
    print(json.dumps({
        "batch": B, "width": D, "modules": at, "device": args.device,
        "ratio_vs_single": round(r["routed"][1] / r["single"][1], 2),
        "ratio_vs_loop": round(r["routed"][1] / r["loop"][1], 2),
        "forward_ratio_vs_single": round(r["routed"][0] / r["single"][0], 2),
        "forward_ratio_vs_loop": round(r["routed"][0] / r["loop"][0], 2),
        "by_modules_ratio_vs_single": {str(m): round(results[m]["routed"][1] / results[m]["single"][1], 2) for m in args.modules},
    }))


if __name__ == "__main__":
    main()
