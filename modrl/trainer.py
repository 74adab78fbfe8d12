"""The training run: config → env + algorithm → iterations, with TensorBoard logs, atomic
checkpoints, exact resume, a checkpointed stop on Ctrl-C or SIGTERM, and a stop on non-finite losses.

Run directory ``<run_root>/<env>__<experiment>__<seed>__<unix time>/``:
``config.yaml`` (resolved), ``command.txt``, TensorBoard events, ``checkpoints/step_<N>.pt`` (the
newest few) and ``checkpoints/<milestone>.pt`` (e.g. ``length_3.pt``, see ``pop_milestone``),
``eval/train.json``. An agent that trains several independent runs in one batch (the sketch
agent's ``num_runs``) also writes each run, when it reaches its budget, to ``run_<r>/`` inside
it: an ordinary run directory (``config.yaml`` of a one-run agent, a checkpoint, ``eval/``) that
``modrl eval`` and the analysis scripts read as any other, but that cannot be resumed on its own.
"""

from __future__ import annotations

import importlib
import os
import random
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml

import modrl.envs  # noqa: F401  (registers the environments)
from modrl.algorithm import NonFiniteLossError, OnPolicyAlgorithm
from modrl.checkpoint import (checkpoint_dir, latest_checkpoint, load_checkpoint, load_fitting, save_atomic, save_checkpoint,
                              save_text_atomic)
from modrl.config import (ConfigError, RunConfig, agent_name, agent_registry, load_config, resume_overrides,
                          run_config_from_dict, to_dict)
from modrl.logger import Progress, RunLogger
from modrl.perf import configure_cpu_allocator
from modrl.vec import EnvError

CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def registered_env_id(env_id: str) -> str:
    """``env.id`` as registered. Gymnasium's ``"module:id"`` form (an env your own module registers,
    e.g. ``lineworld:lineworld/LineWorld-v0``, docs/guide.md) imports ``module`` first — found on the
    path or in the working directory — and names ``id``."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    if os.getcwd() not in sys.path:  # the `modrl` script, unlike `python -m`, does not look there
        sys.path.append(os.getcwd())
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise  # the module was found; something it imports was not
        raise ConfigError(f"config key 'env.id': no module {module!r} to import (it should register {name!r}); "
                          f"searched the Python path and {os.getcwd()}") from None
    return name


def make_env(env_cfg, device: str, num_envs: int | None = None, **overrides: Any):
    """The batched env of a config (``gymnasium.make_vec`` with the vector entry point)."""
    env_id = registered_env_id(env_cfg.id)
    if env_id not in gym.registry:
        modrl_ids = [k for k in gym.registry if k.startswith("modrl/")]
        raise ConfigError(f"config key 'env.id': unknown environment {env_id!r}; modrl envs: {', '.join(modrl_ids)} "
                          "(an env of your own: 'module:id', the module registering it)")
    if gym.registry[env_id].vector_entry_point is None:
        raise ConfigError(f"config key 'env.id': {env_id!r} has no batched (vector_entry_point) implementation")
    kwargs = {**env_cfg.kwargs, **overrides}
    try:
        return gym.make_vec(
            env_id,
            num_envs=num_envs or env_cfg.num_envs,
            vectorization_mode="vector_entry_point",
            device=device,
            **kwargs,
        )
    except TypeError as e:
        raise ConfigError(f"config key 'env.kwargs': {e}") from None
    except EnvError as e:  # a bad value of env.num_envs or env.kwargs
        raise ConfigError(f"config section 'env': {e}") from None


def make_agent(cfg: RunConfig, env) -> OnPolicyAlgorithm:
    _, agent_cls = agent_registry()[agent_name(cfg.agent)]
    try:
        return agent_cls(cfg.agent, env, cfg.total_steps)
    except ValueError as e:
        raise ConfigError(f"config section 'agent': {e}") from None


def run_dir_name(cfg: RunConfig) -> str:
    env = cfg.env.id.split(":")[-1].split("/")[-1]
    return f"{env}__{cfg.experiment}__{cfg.seed}__{int(time.time())}"


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"config key 'device': {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device': {device!r} requested but CUDA is not available on this machine")


class TrainingStopped(SystemExit):
    """Training was stopped by a signal before its budget, after saving a checkpoint (``train``).

    A ``SystemExit`` with the shell's code for that signal (130 for SIGINT, 143 for SIGTERM), so a
    script that trains and then evaluates stops there instead of evaluating an unfinished run; the
    run continues with ``modrl train --resume``. It pickles with its fields, so it crosses a process
    pool."""

    def __init__(self, code: int, run_dir: str = "", checkpoint: str = ""):
        super().__init__(code)
        self.run_dir, self.checkpoint = run_dir, checkpoint


class _StopRequest:
    """A stop request from a signal: finish the current iteration, save, stop (``TrainingStopped``).

    SIGINT (Ctrl-C) and SIGTERM (``timeout``, a batch scheduler's pre-emption, ``kill``) both ask
    for it; a second Ctrl-C stops at once (``KeyboardInterrupt``, no checkpoint). A repeated SIGTERM
    changes nothing: the first one's checkpoint is on its way."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not in the main thread
            self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        again = "Ctrl-C again" if signum == signal.SIGINT else "Ctrl-C"
        print(f"\nmodrl: {how} — saving a checkpoint after this iteration ({again} to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def _checkpoint_state(cfg: RunConfig, agent: OnPolicyAlgorithm, env, train_seconds: float) -> dict[str, Any]:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": CHECKPOINT_FORMAT,
        "global_step": agent.global_step,
        "train_seconds": train_seconds,  # wall time spent training, summed over resumes
        "config": to_dict(cfg),
        "agent": agent.state_dict(),
        "env": env.state_dict(),
        "rng": rng,
    }


def _one_run(cfg: RunConfig, agent: OnPolicyAlgorithm, run_dir: Path, run: int, train_seconds: float) -> tuple[Path, dict]:
    """Run ``run`` of a several-run agent as a run directory of its own, ``run_dir/run_<r>/``
    (config of a one-run agent, command), and its checkpoint state (see the module docstring)."""
    runs = agent.num_runs
    single = to_dict(cfg)
    single["agent"]["num_runs"] = 1
    single["env"]["num_envs"] = cfg.env.num_envs // runs
    single["env"]["kwargs"] = {k: v for k, v in single["env"]["kwargs"].items() if k != "task_groups"}
    sub = run_dir / f"run_{run}"
    sub.mkdir(exist_ok=True)
    # written each time: a resume may have raised the budget since (the checkpoint's config says the same)
    save_text_atomic(sub / "config.yaml", yaml.safe_dump(single, sort_keys=False))
    if not (sub / "command.txt").is_file():
        (sub / "command.txt").write_text(f"# run {run} of the {runs} runs trained side by side in {run_dir}\n"
                                          + (run_dir / "command.txt").read_text())
    state = agent.run_state_dict(run)
    return sub, {"format": CHECKPOINT_FORMAT, "global_step": int(state["steps"]), "train_seconds": train_seconds,
                 "config": single, "agent": state, "trained_in": str(run_dir), "run": run}


def save_finished_runs(cfg: RunConfig, agent: OnPolicyAlgorithm, run_dir: Path, train_seconds: float) -> list[Path]:
    """Write each run of a several-run agent that reached its budget since the last call to
    ``run_dir/run_<r>/`` (see the module docstring); return their directories."""
    if getattr(agent, "num_runs", 1) == 1 or not hasattr(agent, "pop_finished_runs"):
        return []
    saved = []
    for r in agent.pop_finished_runs():
        sub, state = _one_run(cfg, agent, run_dir, r, train_seconds)
        save_checkpoint(sub, state["global_step"], state)
        print(f"modrl: run {r} of {agent.num_runs} reached its budget ({state['agent']['episodes']:,} episodes); "
              f"saved as {sub}", file=sys.stderr)
        saved.append(sub)
    return saved


def save_milestone(cfg: RunConfig, agent: OnPolicyAlgorithm, env, run_dir: Path, milestone, train_seconds: float) -> Path:
    """``checkpoints/<name>.pt`` of the run; for a milestone ``(r, name)`` of a several-run agent,
    ``run_<r>/checkpoints/<name>.pt`` with that run's state alone."""
    if isinstance(milestone, tuple):
        run, name = milestone
        sub, state = _one_run(cfg, agent, run_dir, run, train_seconds)
        return save_atomic(state, checkpoint_dir(sub) / f"{name}.pt")
    return save_atomic(_checkpoint_state(cfg, agent, env, train_seconds), checkpoint_dir(run_dir) / f"{milestone}.pt")


#: what the final evaluation of a task split measures (Andreas et al. 2017, Table 1)
SPLIT_MEANING = {"train": "multitask (the training tasks)", "heldout": "zero-shot (held-out sketches, trained modules)"}


def train(
    cfg: RunConfig | None = None,
    *,
    resume: str | Path | None = None,
    command: str | None = None,
    max_iterations: int | None = None,
    budget: list[str] | None = None,
) -> Path:
    """Train from ``cfg`` in a new run directory, or continue the run in ``resume``; return the run dir.

    ``max_iterations`` stops after that many iterations of this call (a checkpoint is saved) and
    returns, as an interrupted run would; used by tests of resume. A Ctrl-C or SIGTERM saves a
    checkpoint after the current iteration and raises :class:`TrainingStopped`. ``budget``: ``key=value`` overrides of the
    resumed run's budget (``RESUME_KEYS``), written back to its ``config.yaml``.
    """
    ckpt = None
    if resume is not None:
        run_dir = Path(resume)
        ckpt_path = latest_checkpoint(run_dir)
        ckpt = load_checkpoint(ckpt_path)
        if "trained_in" in ckpt:
            raise ConfigError(f"{run_dir} is run {ckpt['run']} of the runs trained side by side in {ckpt['trained_in']}, "
                              "saved when it reached its budget; it cannot be resumed alone (resume that run instead)")
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{ckpt_path}: checkpoint format {ckpt.get('format')} is not {CHECKPOINT_FORMAT}")
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
        if budget:
            data = resume_overrides(data, budget)
        cfg = run_config_from_dict(data)
        if budget:
            save_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    elif cfg is None:
        cfg = load_config(None)
    check_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.tune_malloc:
        configure_cpu_allocator()

    seed_everything(cfg.seed)
    env = make_env(cfg.env, cfg.device)
    splits = getattr(env, "SPLITS", {})
    unknown = [s for s in cfg.eval_splits if s not in splits]
    if unknown:
        raise ConfigError(f"config key 'eval_splits': {cfg.env.id} has no split {unknown[0]!r}; "
                          f"its splits: {', '.join(splits) or 'none'}")
    agent = make_agent(cfg, env)

    if ckpt is None:
        run_dir = Path(cfg.run_root) / run_dir_name(cfg)
        suffix = 0
        while run_dir.exists():  # two runs started within the same second
            suffix += 1
            run_dir = Path(cfg.run_root) / f"{run_dir_name(cfg)}_{suffix}"
        run_dir.mkdir(parents=True)
        save_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (run_dir / "command.txt").write_text((command or shlex.join(sys.argv)) + "\n")
        agent.start(cfg.seed)
        logger = RunLogger(run_dir)
        logger.hyperparameters(to_dict(cfg))
    else:
        load_fitting(env.load_state_dict, ckpt["env"], ckpt_path)
        load_fitting(agent.load_state_dict, ckpt["agent"], ckpt_path)
        torch.set_rng_state(ckpt["rng"]["torch"])
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        # Drop events logged after this checkpoint by the interrupted process (steps > checkpoint).
        logger = RunLogger(run_dir, purge_step=agent.global_step + 1)
        print(f"modrl: resuming {run_dir} from env step {agent.global_step:,}", file=sys.stderr)

    print(f"modrl: run directory {run_dir}", file=sys.stderr)
    print(f"modrl: TensorBoard logs in {run_dir}  (view: tensorboard --logdir {run_dir.parent})", file=sys.stderr)
    done_so_far, planned, unit = agent.progress
    progress = Progress(planned, initial=done_so_far, enabled=cfg.progress, unit=unit,
                        every=cfg.progress_every, name=run_dir.name)
    start_step, start_time = agent.global_step, time.perf_counter()
    seconds_before = float(ckpt.get("train_seconds", 0.0)) if ckpt is not None else 0.0
    done_here = 0
    saved_at = -1

    def train_seconds() -> float:  # summed over resumes
        return seconds_before + time.perf_counter() - start_time

    def save() -> Path:
        nonlocal saved_at
        saved_at = agent.global_step
        return save_checkpoint(run_dir, agent.global_step, _checkpoint_state(cfg, agent, env, train_seconds()),
                               cfg.keep_checkpoints)

    try:
        with _StopRequest() as stop:
            while not agent.finished:
                progress_before = agent.progress[0]
                metrics = agent.train_iteration()
                done_here += 1
                if agent.iteration % cfg.log_every == 0 or agent.finished:
                    metrics.update(agent.stats.pop())
                    metrics.update(agent.log_extras())
                    metrics["charts/SPS"] = (agent.global_step - start_step) / (time.perf_counter() - start_time)
                    logger.scalars(metrics, agent.global_step)
                progress.update(agent.progress[0] - progress_before, metrics)
                if agent.iteration % cfg.checkpoint_every == 0:
                    save()
                while (milestone := agent.pop_milestone()) is not None:
                    save_milestone(cfg, agent, env, run_dir, milestone, train_seconds())
                save_finished_runs(cfg, agent, run_dir, train_seconds())
                if stop.requested or (max_iterations is not None and done_here >= max_iterations):
                    path = save() if saved_at != agent.global_step else latest_checkpoint(run_dir)
                    progress.close()
                    print(f"modrl: stopped at env step {agent.global_step:,}; checkpoint {path}", file=sys.stderr)
                    print(f"modrl: continue with: modrl train --resume {run_dir}", file=sys.stderr)
                    if stop.requested:
                        raise TrainingStopped(128 + stop.signum, str(run_dir), str(path))
                    return run_dir
    except NonFiniteLossError as e:
        progress.close()
        try:
            last = latest_checkpoint(run_dir)
            kept = f"the last good checkpoint is {last}"
        except FileNotFoundError:
            kept = "no checkpoint had been written yet"
        raise NonFiniteLossError(f"{e}; training stopped, {kept}") from None
    finally:
        logger.close()

    progress.close()
    if getattr(agent, "num_runs", 1) > 1:  # runs that had not reached their budget by total_steps
        agent.end_runs()
        save_finished_runs(cfg, agent, run_dir, train_seconds())
    if saved_at != agent.global_step:
        save()
    if cfg.eval_episodes > 0:
        from modrl.evaluation import evaluate_run

        runs = getattr(agent, "num_runs", 1)
        for each in [run_dir] if runs == 1 else [run_dir / f"run_{r}" for r in range(runs)]:
            results = [evaluate_run(each, episodes=cfg.eval_episodes, split=split) for split in cfg.eval_splits or [None]]
            if len(results) > 1 or runs > 1:
                print(f"modrl: final evaluation{'' if runs == 1 else ' of ' + each.name}, {cfg.eval_episodes} episodes "
                      "per split (sampled actions):", file=sys.stderr)
                for r in results:
                    lo, hi = r["success_ci95"]
                    print(f"  {r['split']:10s} {len(r.get('per_task', {})):2d} tasks  success {r['success_rate']:.3f} [{lo:.3f}, {hi:.3f}]"
                          f"  {SPLIT_MEANING.get(r['split'], '')}", file=sys.stderr)
    print(f"modrl: done, {agent.global_step:,} env steps in {run_dir}", file=sys.stderr)
    return run_dir
