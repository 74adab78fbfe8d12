"""The policy-sketch update with the acting pass's first-layer product reused, against recomputing it.

    python benchmarks/sketch_update.py [--config configs/craft_sketch.yaml] [--from RUN_DIR] [--rounds 6]

Continuing rollouts keep each tick's ``x @ W₀[module]`` (``StackedMLP.forward_keeping_product``)
and the REINFORCE update reuses it instead of recomputing its widest matmul (1076 → 128 per
sample on Craft). This trains one agent and alternates, ``--rounds`` times, ``--updates`` whole
training iterations (rollout and update) with the product reused and as many with it recomputed
(the reference, the code before session 17), and prints the seconds per iteration of each and
their ratio (reference / reused: > 1 is faster). ``--from RUN_DIR`` starts from a run's latest
checkpoint (later curriculum levels, longer sketches). One thread; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import modrl  # noqa: F401
from modrl.checkpoint import latest_checkpoint, load_checkpoint
from modrl.config import load_config
from modrl.inventory import StackedMLP
from modrl.perf import configure_cpu_allocator
from modrl.trainer import make_agent, make_env, seed_everything

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "craft_sketch.yaml"))
    p.add_argument("--from", dest="source", default=None, help="start from this run's latest checkpoint")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--updates", type=int, default=5, help="training iterations per round and variant")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    source = Path(args.source) if args.source else None
    cfg = load_config(source / "config.yaml" if source else args.config,
                      ["device=cpu", "total_steps=1000000000000", "agent.max_episodes=0"])
    seed_everything(cfg.seed)
    env = make_env(cfg.env, "cpu")
    agent = make_agent(cfg, env)
    if source:
        state = load_checkpoint(latest_checkpoint(source))
        env.load_state_dict(state["env"])
        agent.load_state_dict(state["agent"])
    agent.start(cfg.seed)
    agent.train_iteration()  # warm-up
    keeps = StackedMLP.keeps_product
    seconds: dict[str, list[float]] = {"reused": [], "recomputed": []}
    try:
        for _ in range(args.rounds):
            for variant in ("recomputed", "reused"):
                StackedMLP.keeps_product = keeps if variant == "reused" else (lambda self, x: False)
                start = time.perf_counter()
                for _ in range(args.updates):
                    agent.train_iteration()
                seconds[variant].append((time.perf_counter() - start) / args.updates)
    finally:
        StackedMLP.keeps_product = keeps
    median = {k: statistics.median(v) for k, v in seconds.items()}
    out = {"config": str(source or args.config), "max_length": agent.max_length, "threads": args.threads,
           "seconds_per_iteration": {k: [round(s, 4) for s in v] for k, v in seconds.items()},
           "ratio_of_medians": round(median["recomputed"] / median["reused"], 3),
           "ratio_of_minima": round(min(seconds["recomputed"]) / min(seconds["reused"]), 3)}
    for k, v in seconds.items():
        print(f"{k:>10}: {median[k] * 1e3:.0f} ms per iteration (median of {len(v)} rounds; min {min(v) * 1e3:.0f} ms)")
    print(f"reference (recomputed) / reused: {out['ratio_of_medians']:.3f} (medians), {out['ratio_of_minima']:.3f} (minima)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
