"""Policy-sketch training throughput on Craft, and the 5-seed reproduction time it projects.

    python benchmarks/sketch_throughput.py [--config configs/craft_sketch.yaml] [--device cpu|cuda]
        [--from RUN_DIR] [--seconds 30] [--set KEY=VALUE ...]

Trains the config's agent for ``--seconds`` (after one warm-up update) and counts training
episodes and env steps per wall-clock second, updates included, with the share spent in rollouts.
``--from RUN_DIR`` starts from a run's latest checkpoint (its curriculum level, its episode
lengths): rates at the first curriculum level are not those of a whole run (longer sketches make
longer episodes later). Issue 4's targets are for the whole 5-seed reproduction (5 × 3M
episodes): under 1 hour on a 2-core CPU, under 15 minutes on one H100. The projection assumes
``--parallel`` processes (default: 2 on CPU, 5 on a GPU) each keep this rate, in ceil(5 / parallel)
rounds as the reproduction script schedules them — measure it with that many processes running at
once (on a GPU, with the CUDA MPS daemon) before quoting it. With ``--set agent.num_runs=5
env.kwargs.task_groups=5 env.num_envs=2560`` (the reproduction's ``--batched`` form) one process
trains all five (give it every core: ``--threads 2``). There is no reference implementation
to time against in the same run (the original is TensorFlow 1); the ratio printed is to the target.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import modrl  # noqa: F401
from modrl.checkpoint import latest_checkpoint, load_checkpoint
from modrl.config import load_config
from modrl.perf import configure_cpu_allocator
from modrl.trainer import make_agent, make_env, seed_everything

ROOT = Path(__file__).resolve().parent.parent
TARGET_MINUTES = {"cpu": 60.0, "cuda": 15.0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "craft_sketch.yaml"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--from", dest="source", default=None, help="start from this run's latest checkpoint")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a seed per core: 1)")
    p.add_argument("--parallel", type=int, default=None, help="processes sharing the machine in the projection")
    p.add_argument("--episodes", type=int, default=3_000_000, help="episodes per seed (the paper's budget)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    source = Path(args.source) if args.source else None
    config = source / "config.yaml" if source else args.config
    cfg = load_config(config, [f"device={args.device}", "total_steps=1000000000000", "agent.max_episodes=0", *args.set])
    seed_everything(cfg.seed)
    env = make_env(cfg.env, cfg.device)
    agent = make_agent(cfg, env)
    if source:
        state = load_checkpoint(latest_checkpoint(source))
        env.load_state_dict(state["env"])
        agent.load_state_dict(state["agent"])
    else:
        agent.start(cfg.seed)

    rollout_seconds = 0.0
    name = "_rollout_continuing" if cfg.agent.rollout_steps else "_rollout"
    rollout = getattr(agent, name)

    def timed_rollout():
        nonlocal rollout_seconds
        start = time.perf_counter()
        out = rollout()
        rollout_seconds += time.perf_counter() - start
        return out

    setattr(agent, name, timed_rollout)
    agent.train_iteration()  # warm-up (ends with a host read of the losses: timing is synchronous)
    rollout_seconds, episodes0, steps0, updates = 0.0, agent.episodes, agent.global_step, 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        agent.train_iteration()
        updates += 1
    wall = time.perf_counter() - start
    eps = (agent.episodes - episodes0) / wall
    kind = torch.device(cfg.device).type
    runs = getattr(agent, "num_runs", 1)
    parallel = args.parallel or (1 if runs > 1 else 2 if kind == "cpu" else 5)
    seed_minutes = args.episodes * runs / eps / 60  # with num_runs: the minutes of the process's R runs
    # the reproduction script's pool runs the seeds `parallel` at a time, each at this rate, so 5 seeds take
    # ceil(5 / parallel) rounds (with 2 at a time the fifth runs alone: 3 rounds, not 2.5); with
    # num_runs R the seeds run R to a process (--batched: R = 5, one process)
    five_seeds = math.ceil(5 / (parallel * runs)) * seed_minutes
    result = {
        "config": str(config), "device": cfg.device, "num_envs": env.num_envs, "num_runs": runs, "threads": args.threads,
        "curriculum_level": agent.max_length,
        "updates": updates, "episodes_per_s": round(eps), "env_steps_per_s": round((agent.global_step - steps0) / wall),
        "rollout_share": round(rollout_seconds / wall, 3), "minutes_per_process": round(seed_minutes, 1),
        "parallel": parallel, "projected_5_seed_minutes": round(five_seeds, 1),
        "target_minutes": TARGET_MINUTES.get(kind), "ratio_to_target": round(five_seeds / TARGET_MINUTES.get(kind, five_seeds), 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
