"""Deliberation-cost sweep on Four Rooms (Harb et al. 2018): option duration vs return for
η ∈ {0, 0.01, 0.02, 0.05}, A2OC settings (``configs/fourrooms_a2oc.yaml``). Every η gets ``--runs``
independent runs (one env each), and all η × runs train side by side in one batched agent (the
per-run η of ``deliberation_costs``), so the sweep costs about as much as one η.

    python -m modrl.experiments.deliberation_sweep --runs 20 --steps 1000000 --out docs/

Option statistics are measured over the last fifth of training; the evaluation runs ``--eval-episodes``
episodes per η with sampled actions. Writes ``deliberation_sweep.json``; prints one line per η.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from modrl.agents.option_critic import OptionCritic
from modrl.config import load_config
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.evaluation import evaluate

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fourrooms_a2oc.yaml"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05])
    p.add_argument("--runs", type=int, default=20, help="independent runs per η")
    p.add_argument("--steps", type=int, default=1_000_000, help="env steps per run")
    p.add_argument("--eval-episodes", type=int, default=1000, help="evaluation episodes per η")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the tensors are tiny: 1 is fastest)")
    p.add_argument("--progress-every", type=float, default=60.0, help="seconds between progress lines")
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    if args.runs < 1 or args.steps < 1:
        p.error("--runs and --steps must be positive")

    torch.set_num_threads(args.threads)
    cfg = load_config(CONFIG)  # a clear ConfigError if the repository's configs/ is not there
    etas, runs = args.etas, args.runs
    total_runs = len(etas) * runs
    agent_cfg = cfg.agent
    agent_cfg.num_runs = total_runs
    agent_cfg.deliberation_costs = [eta for eta in etas for _ in range(runs)]  # run r has η[r // runs]
    max_steps = cfg.env.kwargs.get("max_episode_steps", 1000)
    torch.manual_seed(args.seed)
    agent = OptionCritic(agent_cfg, FourRoomsVectorEnv(total_runs, max_episode_steps=max_steps), total_steps=10**12)
    agent.start(args.seed)

    start = last = time.time()
    iterations = max(1, args.steps // agent_cfg.num_steps)
    measure_from = iterations - max(1, iterations // 5)
    for i in range(iterations):
        if i == measure_from:  # measure the option statistics over the last fifth of training
            agent.option_duration_per_run()
            agent.log_extras()
        agent.train_iteration()
        if time.time() - last > args.progress_every:
            last = time.time()
            done = (i + 1) / iterations
            print(f"[{last - start:6.0f} s] {(i + 1) * agent_cfg.num_steps:,} / {args.steps:,} steps per run "
                  f"({done:.0%}), ~{(last - start) * (1 - done) / done / 60:.1f} min left", file=sys.stderr, flush=True)
    train_seconds = time.time() - start
    duration = agent.option_duration_per_run().view(len(etas), runs)

    eval_env = FourRoomsVectorEnv(total_runs * 10, max_episode_steps=1000)  # row i → run i mod R
    group = (torch.arange(eval_env.num_envs) % total_runs) // runs
    result = evaluate(agent, eval_env, args.eval_episodes * len(etas), seed=args.seed + 1, groups=group)
    rows = []
    for g, eta in enumerate(etas):
        d = duration[g]
        ev = result["per_group"][g]
        row = {
            "eta": eta,
            "option_duration": float(d.nanmean()),
            "option_duration_runs": [round(float(x), 3) for x in d],
            "eval_episodes": ev["episodes"],
            "eval_episode_length": ev["length_mean"],
            "eval_success": ev["success_rate"],
            "eval_success_ci95": ev["success_ci95"],
            "eval_discounted_return_proxy": agent_cfg.gamma ** ev["length_mean"],
        }
        rows.append(row)
        print(f"eta {eta:<5}: option duration {row['option_duration']:.2f} steps (runs "
              f"{float(d.min()):.2f}–{float(d.max()):.2f}), eval episode length {row['eval_episode_length']:.1f}, "
              f"success {row['eval_success']:.3f}")
    print(f"{total_runs} runs × {iterations * agent_cfg.num_steps:,} steps in {train_seconds / 60:.1f} min")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"runs": runs, "steps": iterations * agent_cfg.num_steps, "seed": args.seed,
               "train_seconds": train_seconds, "rows": rows}
    (out / "deliberation_sweep.json").write_text(json.dumps(summary, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
