"""Policy-sketch reproduction (Andreas, Klein & Levine 2017, Table 1): per seed, train the modular
agent on the training tasks, then measure multitask success (the training tasks), zero-shot
success (the held-out sketches, chained from the trained modules) and, optionally, adaptation (a
learned router over the trained modules on the held-out tasks, no sketch); mean ± 95% CI over seeds.

    python -m modrl.experiments.sketch_reproduction --seeds 1 2 3 4 5 --episodes 3000000 \\
        --adaptation-episodes 500000 --parallel 2 --out docs/

Every run is an ordinary run directory under ``--run-root`` (TensorBoard logs, checkpoints,
``eval/*.json``), so a run can be inspected, resumed or re-evaluated on its own. A seed whose run
directory already exists there (same env, experiment and seed) is resumed to the budget, or only
evaluated if it has reached it, so the reproduction can be run in pieces: stop it with Ctrl-C or
SIGTERM (``timeout``, a scheduler's pre-emption), and each run in training saves a checkpoint; run
the same command again. Adaptation runs are resumed the same way; one keeps the modules it started
from even if its training run was extended since (delete it to adapt the new modules). Writes
``<out>/<experiment>_reproduction.json`` (the config's experiment name, e.g.
``craft_sketch_fast_reproduction.json``) and prints a Markdown table.

``--batched`` trains the runs side by side in one process instead (``agent.num_runs`` = the number
of seeds, ``--num-envs`` or the config's envs per run; seeded with the first seed, so its runs are
new draws, not the unbatched seeds' runs), using every core (``--threads``) for ops R times wider,
then evaluates (and adapts) the runs ``--parallel`` at a time from their run directories
(``<batched run>/run_<r>/``). Rows are labelled by run, ``seed`` being the batch's seed; run r's
adaptation is seeded with the r-th seed (``adaptation_seed``); the summary is
``<out>/<experiment>_batched_reproduction.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from modrl.config import load_config
from modrl.tables import mean_ci

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
def existing_run(cfg) -> Path | None:
    """The newest run directory under ``cfg``'s run root with its env, experiment and seed, the
    same env and agent settings (the episode budget aside) and a checkpoint, if any."""
    import yaml

    from modrl.config import run_config_from_dict, to_dict
    from modrl.trainer import run_dir_name

    def settings(d: dict) -> dict:
        agent = {k: v for k, v in d["agent"].items() if k != "max_episodes"}
        return {"env": d["env"], "agent": agent, "seed": d["seed"], "device": d["device"]}

    def resolved(path: Path) -> dict:  # keys added since the run was made take their defaults
        return to_dict(run_config_from_dict(yaml.safe_load(path.read_text())))

    prefix = run_dir_name(cfg).rsplit("__", 1)[0] + "__"
    wanted = settings(to_dict(cfg))
    runs = [d for d in Path(cfg.run_root).glob(f"{prefix}*")
            if (d / "checkpoints").is_dir() and any((d / "checkpoints").glob("*.pt"))
            and (d / "config.yaml").is_file() and settings(resolved(d / "config.yaml")) == wanted]
    return max(runs, key=lambda d: d.stat().st_mtime) if runs else None


def train_or_resume(cfg) -> tuple[Path, dict]:
    """Train ``cfg`` to its episode budget (``agent.max_episodes``), resuming its existing run
    (:func:`existing_run`) if there is one; returns the run directory and its final checkpoint."""
    from modrl.checkpoint import latest_checkpoint, load_checkpoint
    from modrl.trainer import train

    episodes = cfg.agent.max_episodes
    budget = f"agent.max_episodes={episodes}"
    run = existing_run(cfg)
    if run is None:
        run = train(cfg)
    elif _least(load_checkpoint(latest_checkpoint(run))["agent"]["episodes"]) < episodes:
        print(f"sketch_reproduction: seed {cfg.seed}: resuming {run}", flush=True)
        train(resume=run, budget=[budget, f"progress={cfg.progress}", f"progress_every={cfg.progress_every}"])
    return run, load_checkpoint(latest_checkpoint(run))


def _least(episodes) -> int:
    """A checkpoint's training episodes: of its one run, or of its least advanced (``num_runs``)."""
    return min(int(e) for e in episodes) if isinstance(episodes, list) else int(episodes)


def _common(job: dict, num_envs: int | None = None) -> list[str]:
    """The overrides every run of a job gets: seed, run root, threads, progress, envs."""
    num_envs = job["num_envs"] if num_envs is None else num_envs
    return [f"seed={job['seed']}", f"run_root={job['run_root']}", "eval_episodes=0", f"progress={job['progress_every'] > 0}",
            f"progress_every={job['progress_every']}", f"torch_threads={job['threads']}",
            *([f"env.num_envs={num_envs}"] if num_envs else [])]


def run_seed(job: dict) -> dict:
    """Train one seed, evaluate it, and adapt it when asked; returns its row (in a worker process)."""
    import torch

    torch.set_num_threads(job["threads"])
    cfg = load_config(job["config"], [*_common(job), f"agent.max_episodes={job['episodes']}", *job["overrides"]])
    run, state = train_or_resume(cfg)
    return evaluate_seed(job, run, state)


def train_batched(job: dict, runs: int) -> Path:
    """Train ``runs`` runs side by side in one process (``agent.num_runs``), resuming an existing
    batched run; returns its directory (the runs' own directories are ``run_<r>/`` inside)."""
    import torch

    torch.set_num_threads(job["threads"])
    per_run = job["num_envs"] or load_config(job["config"], job["overrides"]).env.num_envs
    cfg = load_config(job["config"], [*_common(job, per_run * runs), f"agent.max_episodes={job['episodes']}", *job["overrides"],
                                      f"agent.num_runs={runs}", f"env.kwargs.task_groups={runs}"])
    run, _ = train_or_resume(cfg)
    return run


def evaluate_batched_run(job: dict) -> dict:
    """Evaluate (and adapt) one run of a batched training from its run directory (a worker process)."""
    import torch

    from modrl.checkpoint import latest_checkpoint, load_checkpoint

    torch.set_num_threads(job["threads"])
    run = Path(job["run_dir"])
    row = evaluate_seed(job, run, load_checkpoint(latest_checkpoint(run)))
    row.update(batched_run=job["batched_run"], run_index=job["run_index"])
    return row


def evaluate_seed(job: dict, run: Path, state: dict) -> dict:
    """A trained run's row: multitask and zero-shot success, no-op sketch steps, and adaptation when asked."""
    from modrl.evaluation import evaluate_run

    seed = job["seed"]
    seconds = state.get("train_seconds")  # summed over resumes (absent in checkpoints before it was recorded)
    row = {
        "seed": seed,
        "run": str(run),
        "episodes": int(state["agent"]["episodes"]),
        "env_steps": int(state["global_step"]),
        "train_seconds": round(seconds, 1) if seconds else None,
        "env_steps_per_s": round(int(state["global_step"]) / seconds) if seconds else None,
        "max_length": int(state["agent"]["max_length"]),
    }
    multitask = evaluate_run(run, episodes=job["eval_episodes"], split="train")
    row["multitask"] = multitask["success_rate"]
    row["multitask_per_task"] = {t: r["success_rate"] for t, r in multitask["per_task"].items()}
    if job["heldout"]:
        zero_shot = evaluate_run(run, episodes=job["eval_episodes"], split="heldout")
        row["zero_shot"] = zero_shot["success_rate"]
        row["zero_shot_per_task"] = {t: r["success_rate"] for t, r in zero_shot["per_task"].items()}
        # each held-out sketch step's subgoal success (e.g. make[bed]/3_make1: the last module's job done)
        row["zero_shot_subgoals"] = {k: r["success_rate"] for k, r in zero_shot.get("subgoals", {}).items() if "/" in k}
    if load_config(job["config"], job["overrides"]).env.id == "modrl/Craft-v0":  # which sketch steps' modules have become no-ops (sketch_trace)
        from modrl.experiments.sketch_trace import no_op_steps

        row["no_op_steps"] = no_op_steps(run)
    if job["adaptation_episodes"]:
        adapt_job = {**job, "seed": job.get("adaptation_seed", seed)}  # a batched run's runs: a seed each
        adapt_cfg = load_config(job["adaptation_config"], [*_common(adapt_job), f"agent.init_modules={run}",
                                                           f"agent.max_episodes={job['adaptation_episodes']}"])
        adapt_run, adapt_state = train_or_resume(adapt_cfg)
        adapted = evaluate_run(adapt_run, episodes=job["eval_episodes"], split="heldout")
        seconds = adapt_state.get("train_seconds")
        row.update(adaptation=adapted["success_rate"], adaptation_run=str(adapt_run), adaptation_seed=adapt_job["seed"],
                   adaptation_per_task={t: r["success_rate"] for t, r in adapted["per_task"].items()},
                   adaptation_episodes=int(adapt_state["agent"]["episodes"]),
                   adaptation_seconds=round(seconds, 1) if seconds else None)
    return row


def map_in_processes(fn, jobs: list[dict], processes: int) -> list:
    """``[fn(job) for job in jobs]``, in ``processes`` spawned workers when > 1.

    A stop reaches every worker: Ctrl-C from the terminal signals them all, and a SIGTERM sent to
    this process alone is passed on. Workers in training save a checkpoint and stop
    (``TrainingStopped``); jobs not yet started are dropped; the stop is re-raised here as the
    ``SystemExit`` of its signal. A second Ctrl-C aborts."""
    if processes <= 1:
        return [fn(job) for job in jobs]
    stopped: list[int] = []
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(fn, job) for job in jobs]

        def handle(signum, frame):
            if stopped and signum == signal.SIGINT:
                raise KeyboardInterrupt
            if not stopped:
                stopped.append(signum)
                for future in futures:
                    future.cancel()  # the jobs not started
                if signum == signal.SIGTERM:  # a terminal's Ctrl-C has already reached the workers
                    for child in multiprocessing.active_children():
                        os.kill(child.pid, signal.SIGTERM)

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            wait(futures)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if stopped:
        raise SystemExit(128 + stopped[0])
    return [future.result() for future in futures]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIGS / "craft_sketch.yaml"))
    p.add_argument("--adaptation-config", default=str(CONFIGS / "craft_adaptation.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--episodes", type=int, default=3_000_000, help="training episodes per seed (the paper: 3M)")
    p.add_argument("--eval-episodes", type=int, default=10_000)
    p.add_argument("--adaptation-episodes", type=int, default=0, help="0: no adaptation runs")
    p.add_argument("--parallel", type=int, default=1, help="seeds trained at once (with --batched: runs evaluated at once)")
    p.add_argument("--batched", action="store_true",
                   help="train the seeds' runs side by side in one process (agent.num_runs), then evaluate each")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per seed (0: 1 with --parallel > 1, else torch's default); a run's "
                        "numbers depend on its thread count, so keep it when resuming or comparing seeds")
    p.add_argument("--num-envs", type=int, default=0, help="envs per run (training and adaptation); 0: the configs'")
    p.add_argument("--progress-every", type=float, default=60.0,
                   help="seconds between each run's one-line progress reports (0: none)")
    p.add_argument("--run-root", default="runs")
    p.add_argument("--out", default="docs")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of --config")
    args = p.parse_args(argv)
    if args.threads < 0:
        p.error(f"--threads must be >= 0, got {args.threads}")
    if args.episodes < 1 or args.eval_episodes < 1 or args.adaptation_episodes < 0:
        p.error("--episodes and --eval-episodes must be >= 1, --adaptation-episodes >= 0")
    from modrl.cli import user_errors

    with user_errors("sketch_reproduction"):
        reproduce(args)


def reproduce(args: argparse.Namespace) -> None:
    """Train, evaluate and summarise as ``main``'s arguments say."""
    from modrl.trainer import make_env

    cfg = load_config(args.config, args.set)  # fail early on a bad config or override
    env = make_env(cfg.env, "cpu", num_envs=1)
    longest = int(env.sketch_lengths[env.task_weights > 0].max())  # the split's longest sketch
    heldout = "heldout" in getattr(env, "SPLITS", {}) and cfg.env.kwargs.get("split") == "train"
    import torch

    threads = args.threads or (1 if args.parallel > 1 and not args.batched else torch.get_num_threads())
    jobs = [{"seed": s, "config": args.config, "overrides": args.set, "episodes": args.episodes,
             "eval_episodes": args.eval_episodes, "heldout": heldout, "run_root": args.run_root,
             "adaptation_episodes": args.adaptation_episodes, "adaptation_config": args.adaptation_config,
             "threads": threads, "num_envs": args.num_envs, "progress_every": args.progress_every} for s in args.seeds]
    start = time.time()
    try:
        if args.batched:
            batched = train_batched(jobs[0], len(jobs))
            eval_threads = max(1, threads // max(1, args.parallel))
            jobs = [{**jobs[0], "threads": eval_threads, "run_dir": str(batched / f"run_{r}"), "batched_run": str(batched),
                     "run_index": r, "adaptation_seed": job["seed"]} for r, job in enumerate(jobs)]
            rows = map_in_processes(evaluate_batched_run, jobs, args.parallel)
        else:
            rows = map_in_processes(run_seed, jobs, args.parallel)
    except SystemExit as e:  # TrainingStopped, here or in a worker: the runs in training saved checkpoints
        if e.code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            print(f"sketch_reproduction: stopped by {signal.Signals(e.code - 128).name}; training runs are checkpointed "
                  "(an evaluation under way is redone): run the same command again to continue", file=sys.stderr, flush=True)
        raise
    wall = time.time() - start

    summary = {"config": args.config, "overrides": args.set, "episodes_per_seed": args.episodes,
               "eval_episodes": args.eval_episodes, "seeds": args.seeds, "wall_seconds": round(wall, 1),
               "parallel": args.parallel, "threads_per_seed": threads, "batched": args.batched, "rows": rows}
    summary["seeds_short_of_the_longest_sketch"] = sum(r["max_length"] < longest for r in rows)
    label = (lambda r: f"run {r['run_index']}") if args.batched else (lambda r: f"seed {r['seed']}")
    no_ops = {label(r): sorted({s["module"] for s in r["no_op_steps"]}) for r in rows if r.get("no_op_steps")}
    lines = ["| measure | mean ± 95% CI over seeds | per seed |", "|---|---|---|"]
    for key in ("multitask", "zero_shot", "adaptation"):
        values = [r[key] for r in rows if key in r]
        if values:
            mean, half = mean_ci(values)
            summary[key] = {"mean": mean, "ci95": half}
            lines.append(f"| {key} | {mean:.3f} ± {half:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{cfg.experiment}_{'batched_' if args.batched else ''}reproduction.json"
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    how = f"side by side in one process, seed {args.seeds[0]}" if args.batched else f"{args.parallel} at once"
    print(f"{len(rows)} {'runs' if args.batched else 'seeds'}, {args.episodes:,} episodes each, {wall / 60:.1f} min wall time "
          f"({how}); curriculum: {summary['seeds_short_of_the_longest_sketch']} run(s) did not reach the longest sketches")
    from modrl.evaluation import subgoal_steps

    for r in rows:  # which held-out sketch step fails: each step's subgoal success (its module did its job)
        for task in r.get("zero_shot_per_task", {}):
            steps = subgoal_steps(r.get("zero_shot_subgoals", {}), task)
            if steps:
                print(f"{label(r)}: zero-shot {task} {r['zero_shot_per_task'][task]:.3f}; subgoals "
                      + " → ".join(f"{name} {v:.2f}" for name, v in steps))
    for name, modules in no_ops.items():  # a module that STOPs at once, its job absorbed by a neighbour
        print(f"{name}: no-op module(s) {', '.join(modules)} (sketch steps they leave within 1.5 ticks: "
              f"python -m modrl.experiments.sketch_trace RUN --task TASK)")


if __name__ == "__main__":
    main()
