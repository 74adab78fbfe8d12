"""End-to-end PPO training throughput: modrl vs stable-baselines3 on the same task, same run.

    python benchmarks/ppo_throughput.py [--device cpu|cuda] [--num-envs 1024]

modrl: ``agents/ppo.py`` on batched ``modrl/FourRooms-v0`` (``--num-envs`` envs, 32-step
rollouts, 4 epochs × 4 minibatches, 64×64 actor and critic, ``--activation`` tanh by default).
Reference: stable-baselines3 ``PPO("MlpPolicy")`` (64×64 actor and critic, same activation) on the
single-env view ``gymnasium.make("modrl/FourRooms-v0")``, 8 envs in a ``DummyVecEnv``,
n_steps 128, batch 256, 4 epochs (the rl-zoo MiniGrid shape with modrl's epoch count).
Both count env steps per wall-clock second including the updates. The last line is one JSON
object with ``ratio`` = modrl / SB3.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import torch

import modrl  # noqa: F401
from modrl.config import load_config
from modrl.perf import configure_cpu_allocator
from modrl.trainer import make_agent, make_env, seed_everything


def modrl_ppo_steps_per_s(num_envs: int, num_steps: int, device: str, seconds: float, activation: str) -> float:
    cfg = load_config(None, [f"env.num_envs={num_envs}", f"agent.num_steps={num_steps}", "total_steps=1000000000000",
                             f"device={device}", f"agent.activation={activation}"])
    seed_everything(0)
    env = make_env(cfg.env, device)
    agent = make_agent(cfg, env)
    agent.start(0)
    agent.train_iteration()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start_step, start = agent.global_step, time.perf_counter()
    while time.perf_counter() - start < seconds:
        agent.train_iteration()  # ends with a host read of the losses, so timing is synchronous
    return (agent.global_step - start_step) / (time.perf_counter() - start)


def sb3_ppo_steps_per_s(steps: int, activation: str) -> float:
    from stable_baselines3 import PPO
    from torch import nn
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env(lambda: gym.make("modrl/FourRooms-v0", max_episode_steps=100), n_envs=8, seed=0)
    policy_kwargs = {"activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]}
    model = PPO("MlpPolicy", vec, n_steps=128, batch_size=256, n_epochs=4, seed=0, device="cpu", verbose=0,
                policy_kwargs=policy_kwargs)
    model.learn(1024)  # warm-up
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", type=int, default=1024)
    p.add_argument("--num-steps", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="modrl timing window")
    p.add_argument("--sb3-steps", type=int, default=8192)
    p.add_argument("--activation", choices=["tanh", "relu"], default="tanh",
                   help="hidden activation of both libraries' networks (tanh: SB3 MlpPolicy's default)")
    args = p.parse_args()

    configure_cpu_allocator()  # as `modrl train` does; applies to both libraries in this process
    ref = sb3_ppo_steps_per_s(args.sb3_steps, args.activation)
    print(f"stable-baselines3 PPO, 8 envs: {ref:,.0f} steps/s")
    ours = modrl_ppo_steps_per_s(args.num_envs, args.num_steps, args.device, args.seconds, args.activation)
    print(f"modrl PPO, {args.num_envs} envs on {args.device}: {ours:,.0f} steps/s ({ours / ref:,.1f}x)")
    print(
        json.dumps(
            {
                "task": "modrl/FourRooms-v0 (cap 100)",
                "device": args.device,
                "num_envs": args.num_envs,
                "activation": args.activation,
                "steps_per_s": round(ours),
                "reference": "stable-baselines3 PPO MlpPolicy, 8 envs",
                "reference_steps_per_s": round(ref),
                "ratio": round(ours / ref, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
