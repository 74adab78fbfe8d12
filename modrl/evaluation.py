"""Evaluating a trained run: a fixed number of episodes, split statically across the batch.

Each env row runs a fixed quota of episodes (``episodes // num_envs``, the first rows one more),
so short episodes are not over-represented (the bias SB3 #402 fixed in ``evaluate_policy``).
Results carry 95% confidence intervals (normal approximation; Wilson for success rates).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import yaml

from modrl.checkpoint import latest_checkpoint, load_checkpoint, load_fitting
from modrl.config import run_config_from_dict

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@contextlib.contextmanager
def seeded_sampling(seed: int, device: str | torch.device):
    """Seed torch's global RNG, which the agents sample actions from, for the ``with`` block;
    the caller's RNG state is restored afterwards (training continues unaffected)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def evaluate(agent, env, episodes: int, *, seed: int, deterministic: bool = False,
             groups: torch.Tensor | None = None) -> dict[str, Any]:
    """Run ``episodes`` episodes of ``agent`` on the SAME_STEP batched ``env``; return summary stats.
    ``seed`` seeds the env and the action sampling, so an evaluation is repeatable. ``groups`` (one
    integer label per env row, e.g. the η of an option-critic run) adds ``per_group`` statistics."""
    if groups is not None and tuple(groups.shape) != (env.num_envs,):
        raise ValueError(f"groups must have one label per env row: shape ({env.num_envs},), got {tuple(groups.shape)}")
    with seeded_sampling(seed, env.device):
        return _run_episodes(agent, env, episodes, seed=seed, deterministic=deterministic, groups=groups)


def _run_episodes(agent, env, episodes: int, *, seed: int, deterministic: bool, groups=None) -> dict[str, Any]:
    n = env.num_envs
    quota = torch.full((n,), episodes // n, dtype=torch.long, device=env.device)
    quota[: episodes % n] += 1
    finished = torch.zeros(n, dtype=torch.long, device=env.device)
    returns, lengths, successes, tasks, rows = [], [], [], [], []
    env.check_actions = False
    # Agents with call-and-return state (options) evaluate through an actor of their own.
    actor = agent.make_actor(n) if hasattr(agent, "make_actor") else None
    obs, reset_info = env.reset(seed=seed)
    if actor is not None and hasattr(actor, "start"):
        actor.start(reset_info)
    if actor is not None and hasattr(actor, "watch"):
        actor.watch(env)  # e.g. the sketch agent's subgoal success on this env
    max_steps = int(quota.max()) * env.max_episode_steps + 1
    for _ in range(max_steps):
        action = actor.act(obs, deterministic) if actor is not None else agent.act(obs, deterministic)
        obs, reward, terminated, truncated, info = env.step(action)
        if actor is not None:
            actor.observe(obs, reward, terminated, truncated, info)
        counted = info["_episode"] & (finished < quota)
        if bool(counted.any()):
            ep = info["episode"]
            returns.append(ep["r"][counted])
            lengths.append(ep["l"][counted].float())
            successes.append(ep["success"][counted].float())
            if "task" in ep:
                tasks.append(ep["task"][counted])
            if groups is not None:
                rows.append(counted.nonzero().squeeze(-1))
            finished += counted.long()
            if bool((finished >= quota).all()):
                break
    r, l, s = (torch.cat(x).double().cpu() if x else torch.zeros(0, dtype=torch.float64) for x in (returns, lengths, successes))
    count = int(r.numel())
    std = float(r.std()) if count > 1 else 0.0
    lo, hi = wilson_interval(float(s.sum()), count)
    per_task = {}
    if tasks:
        task = torch.cat(tasks).cpu()
        names = getattr(env, "task_names", None)
        for t in task.unique().tolist():
            sel = task == t
            k = int(sel.sum())
            lo_t, hi_t = wilson_interval(float(s[sel].sum()), k)
            per_task[names[t] if names else str(t)] = {"episodes": k, "success_rate": float(s[sel].mean()), "success_ci95": [lo_t, hi_t]}
    per_group = {}
    if groups is not None and rows:
        group = groups.cpu()[torch.cat(rows).cpu()]
        for g in group.unique().tolist():
            sel = group == g
            k = int(sel.sum())
            lo_g, hi_g = wilson_interval(float(s[sel].sum()), k)
            per_group[g] = {"episodes": k, "success_rate": float(s[sel].mean()), "success_ci95": [lo_g, hi_g],
                            "length_mean": float(l[sel].mean()), "return_mean": float(r[sel].mean())}
    subgoals = actor.subgoal_table() if actor is not None and hasattr(actor, "subgoal_table") else {}
    return {
        "episodes": count,
        **({"per_task": per_task} if per_task else {}),
        **({"per_group": per_group} if per_group else {}),
        **({"subgoals": subgoals} if subgoals else {}),
        "return_mean": float(r.mean()) if count else float("nan"),
        "return_ci95": Z95 * std / math.sqrt(count) if count else float("nan"),
        "success_rate": float(s.mean()) if count else float("nan"),
        "success_ci95": [lo, hi],
        "length_mean": float(l.mean()) if count else float("nan"),
        "deterministic": deterministic,
    }


def subgoal_steps(rates: dict[str, float], task: str) -> list[tuple[str, float]]:
    """``(symbol, success)`` of each sketch step of ``task`` from subgoal success rates keyed
    ``<task>/<k>_<symbol>`` (an evaluation's ``subgoals``), in step order; per-symbol keys are left out."""
    return [(key.split("/", 1)[1].split("_", 1)[1], rate) for key, rate in rates.items() if key.startswith(f"{task}/")]


def read_run_config(run_dir: str | Path):
    """The resolved config of a run directory (its ``config.yaml``)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"not a modrl run directory (no config.yaml): {run_dir}")
    return run_config_from_dict(yaml.safe_load(config_path.read_text()))


def evaluate_run(
    run_dir: str | Path,
    *,
    episodes: int = 1000,
    split: str | None = None,
    deterministic: bool = False,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Load a run's config and checkpoint, evaluate, write ``eval/<split>.json`` and TensorBoard
    ``eval/<split>/*`` scalars, print a summary, and return the results."""
    from torch.utils.tensorboard import SummaryWriter

    from modrl.trainer import check_device, make_agent, make_env, registered_env_id

    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive int, got {episodes!r}")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    runs = getattr(cfg.agent, "num_runs", 1)
    if runs > 1:
        raise ValueError(f"{run_dir} trained {runs} runs side by side (agent.num_runs); evaluate each from its own "
                         f"run directory, {run_dir}/run_<r>/ (written when the run reached its budget)")
    if device is not None:
        cfg.device = device
    check_device(cfg.device)
    ckpt_path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    ckpt = load_checkpoint(ckpt_path, map_location=cfg.device)
    if split is None:  # the run's own split (an adaptation run trains on the held-out tasks)
        split = cfg.env.kwargs.get("split", "train")
    overrides = {}
    if split != "train" or "split" in cfg.env.kwargs:
        import inspect

        env_cls = gym.registry[registered_env_id(cfg.env.id)].vector_entry_point
        if isinstance(env_cls, str):
            env_cls = gym.envs.registration.load_env_creator(env_cls)
        if "split" not in inspect.signature(env_cls).parameters:
            raise ValueError(f"--split {split}: {cfg.env.id} has no task splits")
        overrides["split"] = split
    env = make_env(cfg.env, cfg.device, num_envs=min(cfg.env.num_envs, episodes), **overrides)
    # a copy: the agent's curriculum rewrites the env's weights in place
    split_weights = env.task_weights.clone() if hasattr(env, "task_weights") else None
    agent = make_agent(cfg, env)
    if split_weights is not None:  # evaluate on the split's tasks, not the training curriculum's
        env.set_task_distribution(split_weights)
    load_fitting(agent.policy.load_state_dict, ckpt["agent"]["policy"], ckpt_path)
    agent.policy.eval()
    seed = cfg.seed + 1_000_003 if seed is None else seed
    result = evaluate(agent, env, episodes, seed=seed, deterministic=deterministic)
    result.update(split=split, checkpoint=str(ckpt_path), global_step=int(ckpt["global_step"]), env=cfg.env.id, seed=seed)

    out = run_dir / "eval" / f"{split}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    writer = SummaryWriter(str(run_dir))
    for key in ("return_mean", "success_rate", "length_mean"):
        writer.add_scalar(f"eval/{split}/{key}", result[key], result["global_step"])
    writer.close()
    lo, hi = result["success_ci95"]
    subgoals = {k: v["success_rate"] for k, v in result.get("subgoals", {}).items()}
    for name, r in result.get("per_task", {}).items():
        steps = "  ·  ".join(f"{symbol} {rate:.2f}" for symbol, rate in subgoal_steps(subgoals, name))
        print(f"  {name:16s} success {r['success_rate']:.3f} [{r['success_ci95'][0]:.3f}, {r['success_ci95'][1]:.3f}] "
              f"({r['episodes']} episodes)" + (f"   subgoals: {steps}" if steps else ""), file=sys.stderr)
    by_module = "  ·  ".join(f"{k} {rate:.2f}" for k, rate in subgoals.items() if "/" not in k)
    if by_module:
        print(f"  subgoal success by module: {by_module}", file=sys.stderr)
    print(
        f"modrl eval [{split}] {result['episodes']} episodes at step {result['global_step']:,}: "
        f"return {result['return_mean']:.3f} ± {result['return_ci95']:.3f}, "
        f"success {result['success_rate']:.3f} [{lo:.3f}, {hi:.3f}], length {result['length_mean']:.1f}  → {out}",
        file=sys.stderr,
    )
    return result
