"""Reference baseline for Craft (policy-sketches paper's task set): stable-baselines3 PPO, a flat
task-conditioned policy, trained on the single-env Craft through ``gymnasium.make``.

By default SB3 steps the batched env through :class:`modrl.sb3.SB3VecEnv` (one batched step for all
``--envs``); ``--vec gym`` gives it a ``DummyVecEnv`` of ``gymnasium.make("modrl/Craft-v0")`` single
envs instead — the same MDP, each env stepped on its own (measured ~500 steps/s with 8 envs).

The flat policy sees the task as a one-hot (``task_in_obs``) and uses the ``independent`` sketch set
(one symbol per task), so a single STOP with the goal item held ends an episode successfully — the
same 100-step cap and reward as the sketch agent, without a sketch. Evaluation runs the trained SB3
policy on the batched env (sampled actions) and reports per-task success with Wilson intervals.

    python -m modrl.experiments.sb3_craft --steps 2000000 --out docs/

Writes ``sb3_craft.json``; prints progress while training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

import modrl.envs  # noqa: F401  (registers the environments)
from modrl.envs.craft import CraftVectorEnv
from modrl.evaluation import evaluate

ENV_KWARGS = dict(split="train", task_in_obs=True, sketch_set="independent")


class SB3Agent:
    """Adapter: an SB3 model acting on the batched env's observations (for ``modrl.evaluation.evaluate``)."""

    def __init__(self, model):
        self.model = model

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action, _ = self.model.predict(obs.cpu().numpy(), deterministic=deterministic)
        return torch.as_tensor(action, device=obs.device)


def main(argv: list[str] | None = None) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from modrl.sb3 import SB3VecEnv, silent_logger

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2_000_000, help="env steps of SB3 training")
    p.add_argument("--envs", type=int, default=8, help="number of envs SB3 steps at once")
    p.add_argument("--vec", choices=["batched", "gym"], default="batched",
                   help="batched: modrl.sb3.SB3VecEnv; gym: DummyVecEnv of gymnasium.make single envs")
    p.add_argument("--n-steps", type=int, default=2048, help="SB3 rollout length per env (its default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--eval-episodes", type=int, default=10_000)
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)

    class Progress(BaseCallback):
        def __init__(self):
            super().__init__()
            self.last = time.time()

        def _on_step(self) -> bool:
            if time.time() - self.last > 30:
                self.last = time.time()
                print(f"  sb3 PPO on Craft: {self.num_timesteps:,} / {args.steps:,} steps, "
                      f"{self.num_timesteps / (time.time() - start):,.0f} steps/s", file=sys.stderr)
            return True

    if args.vec == "batched":
        venv = SB3VecEnv(CraftVectorEnv(args.envs, **ENV_KWARGS))
    else:
        venv = make_vec_env(lambda: gym.make("modrl/Craft-v0", **ENV_KWARGS), n_envs=args.envs, seed=args.seed)
    model = PPO("MlpPolicy", venv, n_steps=args.n_steps, batch_size=min(64, args.n_steps * args.envs),
                seed=args.seed, verbose=0, device="cpu")
    model.set_logger(silent_logger())
    start = time.time()
    model.learn(total_timesteps=args.steps, callback=Progress())
    train_seconds = time.time() - start
    env = CraftVectorEnv(min(1000, args.eval_episodes), **ENV_KWARGS)
    result = evaluate(SB3Agent(model), env, args.eval_episodes, seed=args.seed + 1_000_003)
    out = {
        "baseline": "stable-baselines3 PPO MlpPolicy, task one-hot in the observation, independent sketch set",
        "env_steps": int(model.num_timesteps), "sb3_envs": args.envs, "vec": args.vec, "n_steps": args.n_steps, "seed": args.seed,
        "train_seconds": round(train_seconds, 1), "env_steps_per_s": round(model.num_timesteps / train_seconds),
        "multitask": result["success_rate"], "multitask_ci95": result["success_ci95"],
        "per_task": {t: r["success_rate"] for t, r in sorted(result["per_task"].items())},
        "eval_episodes": result["episodes"],
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "sb3_craft.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
