"""Deliberation-cost sweep on Four Rooms (Harb et al. 2018): option duration vs return for
η ∈ {0, 0.01, 0.02, 0.05}, A2OC settings (``configs/fourrooms_a2oc.yaml``), ``--runs``
independent runs per η trained side by side (one env each).

    python -m modrl.experiments.deliberation_sweep --runs 20 --steps 50000 --out docs/

Writes ``deliberation_sweep.json``; prints one line per η.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from modrl.agents.option_critic import OptionCritic
from modrl.config import load_config
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.evaluation import evaluate

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fourrooms_a2oc.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    rows = []
    for eta in args.etas:
        cfg = load_config(CONFIG)  # a clear ConfigError if the repository's configs/ is not there
        agent_cfg = cfg.agent
        agent_cfg.deliberation_cost = eta
        agent_cfg.num_runs = args.runs
        torch.manual_seed(args.seed)
        env = FourRoomsVectorEnv(args.runs, max_episode_steps=cfg.env.kwargs.get("max_episode_steps", 1000))
        agent = OptionCritic(agent_cfg, env, total_steps=10**12)
        agent.start(args.seed)
        start = time.time()
        iterations = args.steps // agent_cfg.num_steps
        for i in range(iterations):
            agent.train_iteration()
            if i == iterations - iterations // 5:
                agent.log_extras()  # reset the option statistics: measure the last fifth of training
        extras = agent.log_extras()
        result = evaluate(agent, FourRoomsVectorEnv(args.runs * 10, max_episode_steps=1000), args.runs * 50, seed=args.seed + 1)
        row = {
            "eta": eta,
            "option_duration": extras.get("options/duration"),
            "termination_rate": extras.get("options/termination_rate"),
            "eval_episode_length": result["length_mean"],
            "eval_success": result["success_rate"],
            "eval_discounted_return_proxy": 0.99 ** result["length_mean"],
            "wall_seconds": time.time() - start,
        }
        rows.append(row)
        print(f"eta {eta:<5}: option duration {row['option_duration']:.2f} steps, eval episode length "
              f"{row['eval_episode_length']:.1f}, success {row['eval_success']:.3f} ({row['wall_seconds']:.0f} s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "deliberation_sweep.json").write_text(json.dumps({"runs": args.runs, "steps": args.steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
