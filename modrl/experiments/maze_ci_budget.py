"""Length-2 Maze success against env steps: the budget of the CI learning test, for any init.

    python -m modrl.experiments.maze_ci_budget --init unit_scaling --steps 3 6 10 12

Trains ``configs/maze_sketch.yaml`` (``agent.init`` from ``--init``) once, and each time the run
passes one of ``--steps`` (millions of env steps) evaluates it on the four length-2 tasks (1,000
episodes, evaluation seed 3). ``tests/test_sketch.py::test_policy_sketches_learn_the_maze`` is
:func:`length_two_success` at one mark. Prints one line per mark with the training time so far.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch

from modrl.config import load_config
from modrl.envs.maze import MazeVectorEnv
from modrl.evaluation import evaluate
from modrl.experiments.sketch_reproduction import CONFIGS
from modrl.trainer import make_agent, make_env, seed_everything


def length_two_success(init: str, seed: int, marks: list[int], threads: int = 1) -> Iterator[tuple[int, float, float]]:
    """Train maze_sketch.yaml with ``agent.init=init`` up to the last of ``marks`` (env steps);
    at each mark yield (env steps, length-2 success rate, training seconds so far).

    Runs on ``threads`` torch threads (restored afterwards): float reductions, hence the run,
    depend on the thread count, so the same call gives the same number whatever the machine's core
    count (not across CPUs whose float kernels differ: docs/results.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield from _length_two_success(init, seed, sorted(marks))
    finally:
        torch.set_num_threads(previous)


def _length_two_success(init: str, seed: int, marks: list[int]) -> Iterator[tuple[int, float, float]]:
    cfg = load_config(CONFIGS / "maze_sketch.yaml", [f"total_steps={marks[-1]}", f"agent.init={init}", f"seed={seed}"])
    seed_everything(seed)
    agent = make_agent(cfg, make_env(cfg.env, "cpu"))
    agent.start(seed)
    length_two = [t for t in agent.env.task_names if len(t) == len("go[LL]")]
    trained, mark = 0.0, 0
    while not agent.finished:
        start = time.time()
        agent.train_iteration()
        trained += time.time() - start
        if mark < len(marks) and agent.global_step >= marks[mark]:
            result = evaluate(agent, MazeVectorEnv(500, tasks=length_two), 1000, seed=3)
            yield agent.global_step, result["success_rate"], trained
            mark += 1


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="torch", help="agent.init: torch or unit_scaling")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=float, nargs="+", default=[3, 4, 5, 6], help="millions of env steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CI test uses 1)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")

    marks = [int(m * 1e6) for m in args.steps]
    for steps, success, seconds in length_two_success(args.init, args.seed, marks, args.threads):
        print(f"init={args.init} seed={args.seed} threads={args.threads} env_steps={steps:,} "
              f"length-2 success={success:.3f} training={seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
