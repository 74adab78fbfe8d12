"""The policy-sketch rollout captured in a CUDA graph against the same rollout run eagerly.

    python benchmarks/rollout_graph.py [--device cuda] [--num-envs 512 4096] [--updates 20]

For each ``--num-envs``: builds the ``configs/craft_sketch.yaml`` agent (continuing rollouts of 25
ticks) twice from one seed, ``agent.rollout_graph=eager`` and then ``cuda`` (``emulate`` on a CPU,
where the timing only checks the script: emulation is slower than eager), runs 2 warm-up updates
(the graph's warm-up and capture), then times ``--updates`` updates with the device synchronised
around each rollout. Prints per configuration the ms per rollout and per update, env steps/s, and
the ratio eager / captured (the reference measured in the same run); the last line is one JSON
object. Issue 4's GPU target (5 seeds × 3M episodes in 15 min on one H100) needs ~16.7k episodes/s
in all: ``episodes_per_s`` here is one process's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import modrl  # noqa: F401
from modrl.config import load_config
from modrl.perf import configure_cpu_allocator
from modrl.trainer import make_agent, make_env, seed_everything

ROOT = Path(__file__).resolve().parent.parent


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(device: str, num_envs: int, graph: str, updates: int, extra: list[str]) -> dict:
    cfg = load_config(ROOT / "configs" / "craft_sketch.yaml", [
        f"device={device}", f"env.num_envs={num_envs}", "env.kwargs.static_shapes=true",
        f"agent.rollout_graph={graph}", "total_steps=1000000000000", "agent.max_episodes=0", *extra])
    seed_everything(cfg.seed)
    agent = make_agent(cfg, make_env(cfg.env, cfg.device))
    agent.start(cfg.seed)
    rollout = agent._rollout_continuing
    spent = [0.0]

    def timed_rollout():
        _sync(device)
        start = time.perf_counter()
        out = rollout()
        _sync(device)
        spent[0] += time.perf_counter() - start
        return out

    agent._rollout_continuing = timed_rollout
    for _ in range(2):  # eager warm-up, then (with a graph) the capture
        agent.train_iteration()
    spent[0], steps0, episodes0 = 0.0, agent.global_step, agent.episodes
    _sync(device)
    start = time.perf_counter()
    for _ in range(updates):
        agent.train_iteration()  # ends with a host read of the losses
    _sync(device)
    wall = time.perf_counter() - start
    return {
        "num_envs": num_envs, "rollout_graph": graph, "updates": updates,
        "ms_per_rollout": round(1000 * spent[0] / updates, 2), "ms_per_update": round(1000 * wall / updates, 2),
        "env_steps_per_s": round((agent.global_step - steps0) / wall),
        "episodes_per_s": round((agent.episodes - episodes0) / wall),
        "captures": agent._graph.captures if agent._graph is not None else 0,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-envs", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of craft_sketch.yaml")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    captured = "cuda" if torch.device(args.device).type == "cuda" else "emulate"
    rows = []
    for n in args.num_envs:
        eager = measure(args.device, n, "eager", args.updates, args.set)
        graph = measure(args.device, n, captured, args.updates, args.set)
        for row in (eager, graph):
            print(f"{n:6d} envs  {row['rollout_graph']:8s} rollout {row['ms_per_rollout']:8.2f} ms  update "
                  f"{row['ms_per_update']:8.2f} ms  {row['env_steps_per_s']:>10,} env steps/s  "
                  f"{row['episodes_per_s']:>8,} episodes/s", flush=True)
        ratio = {"num_envs": n, "rollout_speedup": round(eager["ms_per_rollout"] / graph["ms_per_rollout"], 2),
                 "update_speedup": round(eager["ms_per_update"] / graph["ms_per_update"], 2)}
        print(f"{n:6d} envs  eager / {captured}: rollout {ratio['rollout_speedup']}x, update {ratio['update_speedup']}x", flush=True)
        rows += [eager, graph, ratio]
    result = {"device": args.device, "rows": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
