"""Batched Four Rooms simulation throughput vs the minigrid package, measured in the same run.

    python benchmarks/env_throughput.py [--device cpu|cuda] [--sizes 1 64 1024 4096 16384]

modrl: ``modrl/FourRooms-v0`` batched on torch tensors, random actions drawn on the device.
Reference: ``minigrid``'s ``MiniGrid-FourRooms-v0`` in a Gymnasium ``SyncVectorEnv`` of
``--ref-envs`` envs with random actions (``action_space.sample()``), the protocol of
``../shared/reference/performance.md`` §5. The last line is one JSON object; ``ratio`` compares
modrl at ``--ratio-at`` envs (default 4096) with the reference.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import gymnasium as gym
import minigrid  # noqa: F401  (registers MiniGrid-*)
import torch

from modrl.cli import bench_env


def minigrid_steps_per_s(num_envs: int, seconds: float) -> float:
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("MiniGrid-FourRooms-v0") for _ in range(num_envs)])
    envs.reset(seed=0)
    envs.action_space.seed(0)
    for _ in range(20):
        envs.step(envs.action_space.sample())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(envs.action_space.sample())
        steps += num_envs
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 4096, 16384])
    p.add_argument("--steps", type=int, default=300, help="batched steps timed per size")
    p.add_argument("--ref-envs", type=int, default=16)
    p.add_argument("--ref-seconds", type=float, default=5.0)
    p.add_argument("--ratio-at", type=int, default=4096)
    args = p.parse_args()

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, device {args.device}")
    ref = minigrid_steps_per_s(args.ref_envs, args.ref_seconds)
    print(f"minigrid MiniGrid-FourRooms-v0 SyncVectorEnv x{args.ref_envs}: {ref:,.0f} steps/s")
    results = {}
    for n in args.sizes:
        steps = max(args.steps, 20) if n >= 64 else max(args.steps, 2000)
        results[n] = bench_env("modrl/FourRooms-v0", n, args.device, steps)
        print(f"modrl/FourRooms-v0 x{n:>6}: {results[n]:>14,.0f} steps/s  ({results[n] / ref:,.0f}x minigrid)")
    at = args.ratio_at if args.ratio_at in results else max(results)
    print(
        json.dumps(
            {
                "env": "modrl/FourRooms-v0",
                "device": args.device,
                "num_envs": at,
                "steps_per_s": round(results[at]),
                "reference": f"minigrid MiniGrid-FourRooms-v0 SyncVectorEnv x{args.ref_envs}",
                "reference_steps_per_s": round(ref),
                "ratio": round(results[at] / ref, 1),
                "by_num_envs": {str(k): round(v) for k, v in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
