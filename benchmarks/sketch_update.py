"""Policy-sketch training with sparse features, against the dense update it replaced, in one run.

    python benchmarks/sketch_update.py [--config configs/craft_sketch.yaml] [--from RUN_DIR] [--rounds 6]
        [--threads 1] [--set KEY=VALUE ...]

Three forms of the same continuing-rollout REINFORCE training, alternated on one agent, ``--rounds``
times ``--updates`` whole training iterations (rollout and update) each:

- ``sparse`` (``sparse_features``, session 23): the ticks' observations kept as their non-zero
  entries, the modules' and critics' first layers computed from those, acting and in the update;
- ``dense`` (the reference, sessions 17-22's update): dense observation rows, the acting pass's
  first-layer product ``x @ W₀[module]`` reused by the update (``StackedMLP.forward_keeping_product``);
- ``dense_recomputed`` (the code before session 17): the update recomputes that product.

Prints the seconds per iteration of each and the ratios reference / sparse (> 1: sparse is faster).
``--from RUN_DIR`` starts from a run's latest checkpoint (later curriculum levels, longer sketches);
``--set agent.curriculum=false agent.new_module_entropy=null agent.new_module_prior=uniform`` trains at
the longest sketches from the start, and ``--set agent.num_runs=5 env.kwargs.task_groups=5
env.num_envs=2560 --threads 2`` is the reproduction's ``--batched`` form. The last line is one JSON object.
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
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    source = Path(args.source) if args.source else None
    cfg = load_config(source / "config.yaml" if source else args.config,
                      ["device=cpu", "total_steps=1000000000000", "agent.max_episodes=0", "agent.sparse_features=true",
                       *args.set])
    seed_everything(cfg.seed)
    env = make_env(cfg.env, "cpu")
    agent = make_agent(cfg, env)
    if source:
        state = load_checkpoint(latest_checkpoint(source))
        env.load_state_dict(state["env"])
        agent.load_state_dict(state["agent"])
    agent.start(cfg.seed)
    if not agent.sparse:
        raise SystemExit(f"{cfg.agent.name}: this config has no sparse update (it needs the CPU, continuing rollouts, "
                         "update: reinforce, per-symbol modules and rollout_graph: eager)")
    agent.train_iteration()  # warm-up
    keeps = StackedMLP.keeps_product
    variants = ("dense_recomputed", "dense", "sparse")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for _ in range(args.rounds):
            for variant in variants:
                agent.sparse = variant == "sparse"  # read at every tick and update
                StackedMLP.keeps_product = (lambda self, x: False) if variant == "dense_recomputed" else keeps
                agent.train_iteration()  # one untimed iteration after each switch (allocator and caches warm to the form)
                start = time.perf_counter()
                for _ in range(args.updates):
                    agent.train_iteration()
                seconds[variant].append((time.perf_counter() - start) / args.updates)
    finally:
        StackedMLP.keeps_product = keeps
    median = {k: statistics.median(v) for k, v in seconds.items()}
    out = {"config": str(source or args.config), "set": args.set, "max_length": agent.max_length, "threads": args.threads,
           "num_envs": env.num_envs, "num_runs": agent.num_runs,
           "seconds_per_iteration": {k: [round(s, 4) for s in v] for k, v in seconds.items()},
           "ratio_of_medians": {k: round(median[k] / median["sparse"], 3) for k in ("dense", "dense_recomputed")},
           "ratio_of_minima": {k: round(min(seconds[k]) / min(seconds["sparse"]), 3) for k in ("dense", "dense_recomputed")}}
    for k, v in seconds.items():
        print(f"{k:>16}: {median[k] * 1e3:.0f} ms per iteration (median of {len(v)} rounds; min {min(v) * 1e3:.0f} ms)")
    for k in ("dense", "dense_recomputed"):
        print(f"{k} / sparse: {out['ratio_of_medians'][k]:.3f} (medians), {out['ratio_of_minima'][k]:.3f} (minima)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
