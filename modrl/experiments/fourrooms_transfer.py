"""Four Rooms transfer (Bacon et al. 2017, Fig. 3): steps to the goal per episode, goal moved from
the east hallway into the lower-right room after ``--switch`` episodes; option-critic with 4 and 8
options vs actor-critic without options. Every agent is ``--runs`` independent runs trained side
by side: one env per run, and every parameter has a leading run dimension.

    python -m modrl.experiments.fourrooms_transfer --runs 100 --episodes 2000 --out docs/

Writes ``fourrooms_transfer.json`` (mean steps per episode for each agent) and, when matplotlib
is installed, ``fourrooms_transfer.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from modrl.agents.option_critic import OptionCritic, OptionCriticConfig
from modrl.envs.four_rooms import FourRoomsVectorEnv

AGENTS = {
    "option-critic, 4 options": dict(num_options=4),
    "option-critic, 8 options": dict(num_options=8),
    "actor-critic (no options)": dict(num_options=1, learn_termination=False),
}


def run_agent(name: str, overrides: dict, runs: int, episodes: int, switch: int, seed: int, max_steps: int,
              max_seconds: float):
    """Train ``runs`` independent agents until each has finished ``episodes`` episodes (or
    ``max_seconds`` have passed); return the [runs, episodes] steps-per-episode table, NaN where a
    run had not reached that episode."""
    torch.manual_seed(seed)
    env = FourRoomsVectorEnv(runs, goal_switch_episode=switch, max_episode_steps=max_steps)
    cfg = OptionCriticConfig(num_runs=runs, num_steps=1, **overrides)
    agent = OptionCritic(cfg, env, total_steps=10**12)
    agent.start(seed)
    lengths = torch.full((runs, episodes), float("nan"))
    finished = torch.zeros(runs, dtype=torch.long)
    start, last_print, steps = time.time(), 0.0, 0
    rows = torch.arange(runs)
    original_update = env.step

    def step_and_record(actions):
        out = original_update(actions)
        info = out[4]
        done = info["_episode"]
        idx = finished.clamp(max=episodes - 1)
        record = done & (finished < episodes)
        lengths[rows[record], idx[record]] = info["episode"]["l"][record].float()
        finished.add_(record.long())
        return out

    env.step = step_and_record
    while int(finished.min()) < episodes and time.time() - start < max_seconds:
        agent.train_iteration()
        steps += runs
        if time.time() - last_print > 30:
            last_print = time.time()
            print(f"  {name}: {steps / runs:,.0f} steps per run, slowest run at episode {int(finished.min())}, "
                  f"{time.time() - start:.0f} s", file=sys.stderr)
    return lengths, time.time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--episodes", type=int, default=2000)
    p.add_argument("--switch", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=3600.0, help="wall-time budget per agent")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the tensors are tiny: 1 is fastest)")
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"runs": args.runs, "episodes": args.episodes, "switch": args.switch, "seed": args.seed, "agents": {}}
    for i, (name, overrides) in enumerate(AGENTS.items()):
        lengths, seconds = run_agent(name, overrides, args.runs, args.episodes, args.switch, args.seed + i,
                                     args.max_steps, args.max_seconds)
        reached = (~lengths.isnan()).sum(0)  # runs that reached each episode
        mean = lengths.nanmean(0)
        window = lambda a, b: mean[a:b][reached[a:b] == args.runs].mean().item()  # noqa: E731  (all runs only)
        before, after, end = window(args.switch - 100, args.switch), window(args.switch, args.switch + 100), window(-100, None)
        results["agents"][name] = {
            "mean_steps_per_episode": [None if math.isnan(x) else round(x, 2) for x in mean.tolist()],
            "runs_reaching_episode": reached.tolist(),
            "last_100_before_switch": before, "first_100_after_switch": after, "last_100": end,
            "wall_seconds": seconds, "all_runs_finished": bool(reached[-1] == args.runs),
        }
        print(f"{name}: {before:.1f} steps/episode before the switch, {after:.1f} in the 100 episodes after, "
              f"{end:.1f} at the end ({seconds:.0f} s; {int(reached[-1])}/{args.runs} runs reached the last episode)")
        (out / "fourrooms_transfer.json").write_text(json.dumps(results) + "\n")  # after every agent
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results["agents"].items():
        ax.plot(r["mean_steps_per_episode"], label=name, linewidth=1)
    ax.axvline(args.switch, color="grey", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("episode")
    ax.set_ylabel(f"steps to goal (mean over {args.runs} runs)")
    ax.set_title("Four Rooms: goal moved at episode %d" % args.switch)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fourrooms_transfer.png", dpi=120)


if __name__ == "__main__":
    main()
