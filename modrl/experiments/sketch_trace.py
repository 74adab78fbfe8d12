"""What each sketch step of a trained Craft or Maze run accomplishes: a per-module trace.

Policy sketches (Andreas, Klein & Levine 2017) only say *which* module runs at each step; nothing
forces ``get_iron`` to fetch iron. A run can succeed on its training tasks with a shifted
decomposition (one module a no-op, its neighbour doing both jobs), which then fails on a new
sketch or a new map. This runs one episode per env along a task's sketch with the run's modules
(sampled actions, as in evaluation) and reports, per sketch step, how many episodes reach it,
the ticks spent in it, and what holds when it stops: the items held (Craft), or the room the agent
is in relative to the start room (Maze; ``(1, 0)``: one room right, ``(0, -1)``: one up), for the
last step the room where the episode ended.

    python -m modrl.experiments.sketch_trace runs/Craft-v0__craft_sketch_fast__1__... --task "get[gold]"

:func:`no_op_steps` lists the steps whose module stops within 1.5 ticks on average (the
reproduction script reports them per seed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def trace(run_dir: str | Path, task: str, *, episodes: int = 2000, seed: int = 5,
          checkpoint: str | Path | None = None) -> dict[str, Any]:
    """One episode per env on ``task``; per sketch step: reached, mean ticks in it, items held after it.
    ``checkpoint``: a checkpoint file of the run (e.g. ``checkpoints/length_3.pt``) instead of the latest."""
    from modrl.checkpoint import latest_checkpoint, load_checkpoint
    from modrl.envs.craft import KINDS
    from modrl.evaluation import read_run_config, seeded_sampling
    from modrl.trainer import make_agent, make_env

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    env = make_env(cfg.env, "cpu", num_envs=episodes, split="all")
    world = getattr(env, "WORLD", None)
    if world not in ("Craft", "Maze"):
        raise ValueError(f"{cfg.env.id}: the trace reads Craft's inventory or Maze's rooms")
    maze = world == "Maze"
    if task not in env.task_names:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(env.task_names)}")
    agent = make_agent(cfg, env)
    agent.policy.load_state_dict(load_checkpoint(Path(checkpoint) if checkpoint else latest_checkpoint(run_dir),
                                                 map_location="cpu")["agent"]["policy"])
    t = list(env.task_names).index(task)
    weights = torch.zeros(len(env.task_names))
    weights[t] = 1
    env.set_task_distribution(weights)
    sketch = [env.symbols[i] for i in env.sketches[t].tolist() if i >= 0]
    steps, n = len(sketch), episodes

    actor = agent.make_actor(n)
    obs, info = env.reset(seed=seed)
    actor.start(info)
    alive = torch.ones(n, dtype=torch.bool)
    ticks_in = torch.zeros(n, dtype=torch.long)
    reached = torch.zeros(steps, dtype=torch.long)
    reached[0] = n
    ticks = torch.zeros(steps, dtype=torch.long)
    if maze:
        from collections import Counter

        from modrl.envs.maze import ROOM

        start_room = env.pos // ROOM
        rooms = [Counter() for _ in range(steps)]  # room offsets where step k stops (or its episode ends)
    else:
        held = torch.zeros(steps, env.inventory.shape[1], dtype=torch.long)  # items held when step k stops
    success = torch.zeros(n, dtype=torch.bool)
    with seeded_sampling(seed, "cpu"):  # repeatable action sampling
        for _ in range(env.max_episode_steps + 1):
            before = env.pointer.clone()
            pos = env.pos.clone() if maze else None  # where an ending episode is (its last STOP does not move)
            obs, reward, terminated, truncated, info = env.step(actor.act(obs))
            actor.observe(obs, reward, terminated, truncated, info)
            done = terminated | truncated
            ticks_in += alive.long()
            advanced = alive & ~done & (env.pointer != before)
            for k in range(steps):
                left = advanced & (before == k)  # step k stopped and the next one starts
                ended = alive & done & (before == k)  # the episode ended during step k
                if k + 1 < steps:
                    reached[k + 1] += int(left.sum())
                ticks[k] += int(ticks_in[left | ended].sum())
                if maze:
                    where = torch.cat([env.pos[left] // ROOM - start_room[left], pos[ended] // ROOM - start_room[ended]])
                    rooms[k].update(map(tuple, where.tolist()))
                else:
                    held[k] += (env.inventory[left] > 0).sum(0)
            ticks_in[advanced] = 0
            success |= alive & done & (reward > 0)
            alive &= ~done
            if not bool(alive.any()):
                break

    rows = []
    for k, symbol in enumerate(sketch):
        m = max(int(reached[k]), 1)
        row = {"step": k, "module": symbol, "reached": round(int(reached[k]) / n, 3), "mean_ticks": round(float(ticks[k]) / m, 2)}
        if maze:  # the three commonest rooms, as fractions of the episodes that reached the step
            row["room_after"] = {f"({dx}, {dy})": round(c / m, 3) for (dx, dy), c in rooms[k].most_common(3)}
        else:
            stopped = int(reached[k + 1]) if k + 1 < steps else 0
            row["held_after"] = {KINDS[i - 1]: round(float(held[k, i]) / stopped, 3) for i in range(1, held.shape[1])
                                 if stopped and held[k, i] >= 0.01 * stopped}  # the last step ends the episode: none
        rows.append(row)
    return {"run": str(run_dir), "task": task, "episodes": n, "success_rate": float(success.float().mean()), "steps": rows}


def no_op_steps(run_dir: str | Path, tasks=None, *, episodes: int = 500, max_ticks: float = 1.5, seed: int = 5,
                checkpoint: str | Path | None = None) -> list[dict[str, Any]]:
    """The sketch steps of ``tasks`` (default: the run's training split) whose module stops within
    ``max_ticks`` ticks on average: a module that has become a no-op there, its job absorbed by a
    neighbour (what stalls the Craft curriculum and breaks zero-shot sketches that need the module)."""
    from modrl.evaluation import read_run_config
    from modrl.trainer import make_env

    if tasks is None:
        cfg = read_run_config(Path(run_dir))
        env = make_env(cfg.env, "cpu", num_envs=1)
        tasks = [t for t, w in zip(env.task_names, env.task_weights.tolist()) if w > 0]
    found = []
    for task in tasks:
        result = trace(run_dir, task, episodes=episodes, seed=seed, checkpoint=checkpoint)
        for r in result["steps"]:
            if r["reached"] >= 0.5 and r["mean_ticks"] <= max_ticks:
                found.append({"task": task, "step": r["step"], "module": r["module"], "mean_ticks": r["mean_ticks"]})
    return found


def markdown(result: dict[str, Any]) -> str:
    maze = "room_after" in result["steps"][0]
    after = "room when it stops (from the start room)" if maze else "held when it stops"
    lines = [f"{result['task']}: {result['episodes']} episodes, success {result['success_rate']:.3f}", "",
             f"| step | module | reached | ticks in it | {after} |", "|---:|---|---:|---:|---|"]
    for r in result["steps"]:
        what = r["room_after"] if maze else r["held_after"]
        shown = ", ".join(f"{k} {v:.2f}" for k, v in what.items()) or "(episode ends)"
        lines.append(f"| {r['step']} | {r['module']} | {r['reached']:.3f} | {r['mean_ticks']:.1f} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a Craft or Maze run directory")
    parser.add_argument("--task", action="append", required=True, help="a task name, e.g. 'get[gold]' (repeatable)")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--checkpoint", help="a checkpoint file of the run (e.g. RUN/checkpoints/length_3.pt); "
                        "default: the latest")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for task in args.task:
        try:
            result = trace(args.run, task, episodes=args.episodes, seed=args.seed, checkpoint=args.checkpoint)
        except (FileNotFoundError, ValueError) as e:  # no run, no checkpoint, unknown task, not Craft or Maze
            parser.exit(2, f"sketch_trace: error: {e}\n")
        print(json.dumps(result) if args.json else markdown(result) + "\n")


if __name__ == "__main__":
    main()
