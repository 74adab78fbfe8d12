"""The ``modrl`` command line.

    modrl train [CONFIG.yaml] [--set key=value ...]    train (no CONFIG: the default job)
    modrl train --resume RUN_DIR                       continue a run from its latest checkpoint
    modrl eval RUN_DIR ... [--episodes N]              evaluate runs' latest checkpoints
    modrl table PATH ... [--split S] [--json]          several runs' evaluations, mean ± 95% CI
    modrl bench ENV_ID [--num-envs N] [--device D]     random-action env steps/s
    modrl list                                         environments, agents and configs
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from modrl.algorithm import NonFiniteLossError
from modrl.checkpoint import CheckpointError
from modrl.config import RESUME_KEYS, ConfigError
from modrl.tables import TableError
from modrl.trainer import TrainingStopped
from modrl.vec import EnvError


def _configs_dir() -> Path | None:
    """The repository's ``configs/`` (next to the package in a source or editable install), or ./configs."""
    for candidate in (Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return None


def cmd_train(args) -> int:
    from modrl.config import load_config
    from modrl.trainer import train

    command = shlex.join(["modrl", *sys.argv[1:]])
    if args.resume:
        if args.config:
            raise ConfigError("--resume continues a run with its saved config; do not pass CONFIG with it")
        train(resume=args.resume, command=command, budget=args.set or None)
        return 0
    cfg = load_config(args.config, args.set)
    train(cfg, command=command)
    return 0


def cmd_eval(args) -> int:
    from modrl.checkpoint import latest_checkpoint
    from modrl.evaluation import evaluate_run, read_run_config

    if args.checkpoint and len(args.run_dirs) > 1:
        raise ConfigError("--checkpoint names one checkpoint file: evaluate one run with it")
    for run_dir in args.run_dirs:  # every run readable before the first (long) evaluation
        read_run_config(run_dir)
        if not args.checkpoint:
            latest_checkpoint(Path(run_dir))
    results = []
    for run_dir in args.run_dirs:
        result = evaluate_run(
            run_dir,
            episodes=args.episodes,
            split=args.split,
            deterministic=args.deterministic,
            checkpoint=args.checkpoint,
            device=args.device,
        )
        print(json.dumps(result), flush=True)  # one line per run
        results.append(result)
    if len(results) > 1:  # side by side, as `modrl table` shows them
        from modrl.tables import markdown_table, read_evaluations

        for split, rows in read_evaluations([Path(r) for r in args.run_dirs], results[0]["split"]).items():
            print(markdown_table(split, rows), file=sys.stderr)
    return 0


def cmd_table(args) -> int:
    from modrl.tables import find_runs, markdown_table, read_evaluations, summary

    tables = read_evaluations(find_runs(args.paths), args.split)
    if args.json:
        print(json.dumps([summary(split, rows) for split, rows in tables.items()]))
    else:
        print("\n\n".join(markdown_table(split, rows) for split, rows in tables.items()))
    return 0


def bench_env(env_id: str, num_envs: int, device: str, steps: int, warmup: int = 10) -> float:
    """Random-action steps/s of a batched modrl env (actions drawn on the device), with the CPU
    allocator set as ``modrl train`` sets it (glibc's default mmap threshold makes each step's fresh
    observation batch page-fault or not depending on the allocation history: 2x either way)."""
    import gymnasium as gym

    import modrl.envs  # noqa: F401
    from modrl.perf import configure_cpu_allocator

    configure_cpu_allocator()

    from modrl.trainer import registered_env_id

    env_id = registered_env_id(env_id)
    if env_id not in gym.registry or gym.registry[env_id].vector_entry_point is None:
        raise ConfigError(f"unknown batched environment {env_id!r}; see `modrl list`")
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", device=device)
    env.check_actions = False
    env.reset(seed=0)
    n_actions = int(env.single_action_space.n)
    gen = torch.Generator(device=env.device).manual_seed(1)
    actions = torch.randint(0, n_actions, (steps + warmup, num_envs), generator=gen, device=env.device)
    for t in range(warmup):
        env.step(actions[t])
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(warmup, warmup + steps):
        env.step(actions[t])
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * num_envs / (time.perf_counter() - start)


def cmd_bench(args) -> int:
    from modrl.trainer import check_device

    check_device(args.device)
    sps = bench_env(args.env_id, args.num_envs, args.device, args.steps)
    print(json.dumps({"env": args.env_id, "num_envs": args.num_envs, "device": args.device, "steps_per_s": round(sps)}))
    return 0


def _summary(doc: str | None, width: int = 96) -> str:
    """A docstring's first sentence (up to a full stop outside parentheses), shortened to ``width``
    characters at a word."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch == "." and text[i + 1:i + 2] in (" ", ""):
            text = text[:i]
            break
    return text if len(text) <= width else text[:width - 1].rsplit(" ", 1)[0] + " …"


def cmd_list(args) -> int:
    import gymnasium as gym

    import modrl.envs  # noqa: F401
    from modrl.agents import AGENTS

    print("environments (batched, gymnasium.make_vec(..., vectorization_mode='vector_entry_point')):")
    for env_id in sorted(k for k in gym.registry if k.startswith("modrl/")):
        module = gym.registry[env_id].vector_entry_point.__module__
        print(f"  {env_id:20s} {_summary(sys.modules[module].__doc__)}")
    print("agents:")
    for name, (_, cls) in AGENTS.items():
        print(f"  {name:20s} {_summary(sys.modules[cls.__module__].__doc__)}")
    configs = _configs_dir()
    print(f"configs ({configs}):" if configs else "configs: (no configs/ folder found)")
    for path in sorted(configs.glob("*.yaml")) if configs else []:
        print(f"  {path.name}")
    from modrl.config import DEFAULT_JOB

    print(f"default job (`modrl train` without a config): {DEFAULT_JOB}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modrl", description="Modular RL: train, evaluate and benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an agent from a YAML config (default job without one)")
    p.add_argument("config", nargs="?", help="YAML config file (see configs/); omitted: the default job, "
                   "policy sketches on Craft (modrl/default_job.yaml)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys, e.g. --set agent.learning_rate=1e-3 seed=2")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint "
                   "(with --set, only the budget and progress display may change: " + ", ".join(RESUME_KEYS) + ")")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's latest checkpoint (or several runs', then a table of them)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--split", default=None, help="task split to evaluate on (default: the run's own; heldout: zero-shot on held-out sketches)")
    p.add_argument("--deterministic", action="store_true", help="greedy actions instead of sampled ones")
    p.add_argument("--checkpoint", help="a specific checkpoint file instead of the latest")
    p.add_argument("--device", help="override the run's device")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("table", help="several runs' evaluations side by side, with the mean and its 95%% CI",
                       description="Per-task success of each run's eval/<split>.json (written by `modrl eval`), one row "
                       "per run, and the mean over runs with its 95%% Student-t interval, as a Markdown table.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, or folders searched for them (e.g. runs/)")
    p.add_argument("--split", default=None, help="the evaluation to read (default: every split all the runs have)")
    p.add_argument("--json", action="store_true", help="print the table as JSON instead")
    p.set_defaults(fn=cmd_table)

    p = sub.add_parser("bench", help="random-action simulation steps/s of a batched env")
    p.add_argument("env_id")
    p.add_argument("--num-envs", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=200, help="batched steps to time")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("list", help="list environments, agents and configs")
    p.set_defaults(fn=cmd_list)
    return parser


#: bad input — a config, a checkpoint, an action, a missing file — reported in one line naming it
USER_ERRORS = (ConfigError, CheckpointError, EnvError, TableError, FileNotFoundError, ValueError)


@contextmanager
def user_errors(prog: str):
    """For the experiment scripts: a ``USER_ERRORS`` exception becomes ``PROG: error: …`` and exit status 2,
    as in ``modrl``, instead of a traceback."""
    try:
        yield
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TrainingStopped as e:  # a checkpoint was saved; the trainer said how to continue
        return e.code
    except USER_ERRORS as e:
        print(f"modrl: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"modrl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("modrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
