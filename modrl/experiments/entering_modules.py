"""Does a module that enters at a curriculum promotion learn its sub-task, or learn to STOP at once?

Policy sketches' curriculum (Andreas, Klein & Levine 2017, §3.3) brings a new module in beside
modules that are already trained (on Craft: ``get_iron`` at ℓ_max 3, first used by the bridge
sketch). From a run's ``checkpoints/length_<ℓ>.pt`` (written when ℓ_max rose to ℓ) this trains
``--draws`` continuations that differ only in their sampling seed, ``--updates`` updates each,
and reports per continuation the immediate-STOP share of each entering module
(:meth:`PolicySketches.entering_modules`) every ``--every`` updates, the success of the tasks new
at ℓ in each curriculum round, and the ℓ_max reached. ``--set`` overrides apply to the
continuations, so a remedy (``--set agent.new_module_entropy=0.01``) is compared with the run's
own settings from the same state.

    python -m modrl.experiments.entering_modules runs/Craft-v0__craft_sketch__3__... --level 3 \\
        --draws 4 --updates 120 [--set agent.new_module_entropy=0.01] [--parallel 2]

The last line is one JSON object (``--out FILE`` writes it too).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def continuation(run_dir: str | Path, level: int, draw: int, updates: int, every: int = 10,
                 overrides: tuple[str, ...] = (), threads: int = 1) -> dict[str, Any]:
    """Train ``updates`` updates from the run's ``length_<level>.pt`` with sampling seed ``draw``."""
    import torch

    from modrl.checkpoint import load_checkpoint
    from modrl.config import agent_name, load_config
    from modrl.perf import configure_cpu_allocator
    from modrl.trainer import make_agent, make_env

    torch.set_num_threads(threads)
    configure_cpu_allocator()
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"length_{level}.pt"
    if not path.exists():
        have = sorted(p.name for p in (run_dir / "checkpoints").glob("length_*.pt"))
        raise FileNotFoundError(f"{path} not found (the run has {', '.join(have) or 'no curriculum checkpoints'})")
    cfg = load_config(run_dir / "config.yaml", ["device=cpu", *overrides])
    if agent_name(cfg.agent) != "sketch":
        raise ValueError(f"{run_dir}: a policy-sketch run is needed, this one is {agent_name(cfg.agent)!r}")
    env = make_env(cfg.env, "cpu")
    agent = make_agent(cfg, env)
    state = load_checkpoint(path, map_location="cpu")
    env.load_state_dict(state["env"])
    agent.load_state_dict(state["agent"])
    torch.manual_seed(10_000 + draw)  # the continuations differ from here on
    symbols, tasks = list(env.symbols), list(env.task_names)
    entering = [symbols[i] for i in torch.nonzero(agent.entering_modules()).flatten().tolist()]
    new_tasks = [t for i, t in enumerate(tasks) if bool(agent.allowed_tasks[i]) and int(env.sketch_lengths[i]) == level]
    immediate: dict[str, list[float]] = {m: [] for m in entering}
    success: dict[str, list[float]] = {t: [] for t in new_tasks}
    agent.metrics.summary()  # start the module statistics afresh
    start = time.time()
    for u in range(1, updates + 1):
        agent.train_iteration()
        if agent.round_updates == 0:  # a round ended (promoted or re-weighted)
            for t in new_tasks:
                success[t].append(round(float(agent.last_round_success[tasks.index(t)]), 3))
        if u % every == 0:
            summary = agent.metrics.summary()
            for m in entering:
                immediate[m].append(round(summary.get(f"modules/immediate_stop/{m}", float("nan")), 3))
    return {"run": str(run_dir), "level": level, "draw": draw, "overrides": list(overrides), "updates": updates,
            "every": every, "entering": entering, "immediate_stop": immediate, "round_success": success,
            "max_length": agent.max_length, "episodes": agent.episodes, "seconds": round(time.time() - start, 1)}


def _star(args: tuple) -> dict[str, Any]:
    return continuation(*args)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a policy-sketch run directory with checkpoints/length_<level>.pt")
    p.add_argument("--level", type=int, default=3, help="the curriculum level to continue from (ℓ_max)")
    p.add_argument("--draws", type=int, default=4, help="continuations, sampling seeds 0..draws-1")
    p.add_argument("--updates", type=int, default=120)
    p.add_argument("--every", type=int, default=10, help="updates between immediate-STOP readings")
    p.add_argument("--parallel", type=int, default=1, help="continuations at once (one thread each)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the run's config")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.draws < 1 or args.updates < 1 or args.every < 1:
        p.error("--draws, --updates and --every must be >= 1")
    jobs = [(args.run, args.level, d, args.updates, args.every, tuple(args.set)) for d in range(args.draws)]
    from modrl.cli import user_errors
    from modrl.experiments.sketch_reproduction import map_in_processes

    with user_errors("entering_modules"):
        results = map_in_processes(_star, jobs, args.parallel)
    for r in results:
        for m, shares in r["immediate_stop"].items():
            print(f"draw {r['draw']}: {m} immediate STOP every {r['every']} updates: {shares}")
        for t, rates in r["round_success"].items():
            print(f"draw {r['draw']}: {t} success per round: {rates}")
        print(f"draw {r['draw']}: ℓ_max {r['max_length']} after {r['updates']} updates ({r['seconds']:.0f} s)")
    final = {m: [r["immediate_stop"][m][-1] for r in results] for m in results[0]["entering"]}
    out = {"run": args.run, "level": args.level, "overrides": args.set, "updates": args.updates,
           "final_immediate_stop": final, "continuations": results}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
