"""Length-2 Maze success against env steps: the budget of the CI learning test, for any init.

    python -m modrl.experiments.maze_ci_budget --init unit_scaling --steps 3 6 10 12

Trains ``configs/maze_sketch.yaml`` (``agent.init`` from ``--init``) once, and each time the run
passes one of ``--steps`` (millions of env steps) evaluates it the way
``tests/test_sketch.py::test_policy_sketches_learn_the_maze`` does: the four length-2 tasks, 1,000
episodes, evaluation seed 3. Prints one line per mark with the training time so far.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modrl.config import load_config
from modrl.envs.maze import MazeVectorEnv
from modrl.evaluation import evaluate
from modrl.trainer import make_agent, make_env, seed_everything

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "maze_sketch.yaml"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init", default="torch", choices=["torch", "unit_scaling"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=float, nargs="+", default=[3, 4, 5, 6], help="millions of env steps")
    args = p.parse_args(argv)

    marks = sorted(int(m * 1e6) for m in args.steps)
    cfg = load_config(CONFIG, [f"total_steps={marks[-1]}", f"agent.init={args.init}", f"seed={args.seed}"])
    seed_everything(args.seed)
    agent = make_agent(cfg, make_env(cfg.env, "cpu"))
    agent.start(args.seed)
    length_two = [t for t in agent.env.task_names if len(t) == len("go[LL]")]
    trained, mark = 0.0, 0
    while not agent.finished:
        start = time.time()
        agent.train_iteration()
        trained += time.time() - start
        if mark < len(marks) and agent.global_step >= marks[mark]:
            result = evaluate(agent, MazeVectorEnv(500, tasks=length_two), 1000, seed=3)
            print(f"init={args.init} seed={args.seed} env_steps={agent.global_step:,} "
                  f"length-2 success={result['success_rate']:.3f} training={trained:.0f} s", flush=True)
            mark += 1


if __name__ == "__main__":
    main()
