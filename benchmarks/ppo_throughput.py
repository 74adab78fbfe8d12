"""End-to-end PPO training throughput: modrl vs stable-baselines3 on the same task, same run.

    python benchmarks/ppo_throughput.py [--device cpu|cuda] [--num-envs 4096] [--num-steps 16]

modrl: ``agents/ppo.py`` on batched ``modrl/FourRooms-v0`` (``--num-envs`` 4096 envs, 16-step
rollouts, 4 epochs × 4 minibatches, 64×64 actor and critic, ``--activation`` tanh by default).
Reference: stable-baselines3 ``PPO("MlpPolicy")`` (64×64 actor and critic, same activation) on the
single-env view ``gymnasium.make("modrl/FourRooms-v0")``, 8 envs in a ``DummyVecEnv``,
n_steps 128, batch 256, 4 epochs (the rl-zoo MiniGrid shape with modrl's epoch count).
Both count env steps per wall-clock second including the updates. The last line is one JSON
object with ``ratio`` = the median over ``--rounds`` alternating rounds of modrl / SB3, and
``per_sample_ratio`` for modrl with ``agent.tabulate_obs=false`` (the networks run on every sample
as in SB3, instead of once per possible observation — Four Rooms observations are 104 cells).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import torch

import modrl  # noqa: F401
from modrl.config import load_config
from modrl.perf import configure_cpu_allocator
from modrl.trainer import make_agent, make_env, seed_everything

FOURROOMS_PPO = Path(__file__).resolve().parent.parent / "configs" / "fourrooms_ppo.yaml"


class ModrlPPO:
    """modrl PPO kept alive across timing rounds."""

    def __init__(self, num_envs: int, num_steps: int, device: str, activation: str, tabulate: bool):
        cfg = load_config(FOURROOMS_PPO, [f"env.num_envs={num_envs}", f"agent.num_steps={num_steps}", "total_steps=1000000000000",
                                          f"device={device}", f"agent.activation={activation}", f"agent.tabulate_obs={tabulate}"])
        seed_everything(0)
        self.device = device
        self.agent = make_agent(cfg, make_env(cfg.env, device))
        self.agent.start(0)
        self.agent.train_iteration()  # warm-up

    def steps_per_s(self, seconds: float) -> float:
        agent = self.agent
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        start_step, start = agent.global_step, time.perf_counter()
        while time.perf_counter() - start < seconds:
            agent.train_iteration()  # ends with a host read of the losses, so timing is synchronous
        return (agent.global_step - start_step) / (time.perf_counter() - start)


class SB3PPO:
    """stable-baselines3 PPO kept alive across timing rounds."""

    def __init__(self, activation: str):
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from torch import nn

        from modrl.sb3 import silent_logger

        vec = make_vec_env(lambda: gym.make("modrl/FourRooms-v0", max_episode_steps=100), n_envs=8, seed=0)
        policy_kwargs = {"activation_fn": {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]}
        self.model = PPO("MlpPolicy", vec, n_steps=128, batch_size=256, n_epochs=4, seed=0, device="cpu", verbose=0,
                         policy_kwargs=policy_kwargs)
        self.model.set_logger(silent_logger())
        self.model.learn(1024)  # warm-up

    def steps_per_s(self, steps: int) -> float:
        start = time.perf_counter()
        self.model.learn(steps, reset_num_timesteps=False)
        return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", type=int, default=4096)
    p.add_argument("--num-steps", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0, help="modrl timing window per round")
    p.add_argument("--sb3-steps", type=int, default=8192, help="SB3 env steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--activation", choices=["tanh", "relu"], default="tanh",
                   help="hidden activation of both libraries' networks (tanh: SB3 MlpPolicy's default)")
    args = p.parse_args()

    configure_cpu_allocator()  # as `modrl train` does; applies to both libraries in this process
    sb3 = SB3PPO(args.activation)
    ours = ModrlPPO(args.num_envs, args.num_steps, args.device, args.activation, tabulate=True)
    # the same PPO with the networks run on every sample (as SB3 does) instead of once per cell
    per_sample = ModrlPPO(args.num_envs, args.num_steps, args.device, args.activation, tabulate=False)
    # Alternate in rounds, so that a slow spell of the machine hits all; report medians.
    refs, mods, plain, ratios, plain_ratios = [], [], [], [], []
    for r in range(args.rounds):
        refs.append(sb3.steps_per_s(args.sb3_steps))
        mods.append(ours.steps_per_s(args.seconds))
        plain.append(per_sample.steps_per_s(args.seconds))
        ratios.append(mods[-1] / refs[-1])
        plain_ratios.append(plain[-1] / refs[-1])
        print(f"round {r + 1}: stable-baselines3 {refs[-1]:,.0f} steps/s, modrl ({args.num_envs} envs, {args.device}) "
              f"{mods[-1]:,.0f} steps/s (ratio {ratios[-1]:.1f}x), networks per sample {plain[-1]:,.0f} steps/s "
              f"(ratio {plain_ratios[-1]:.1f}x)")
    ref, ours_sps, ratio = statistics.median(refs), statistics.median(mods), statistics.median(ratios)
    print(
        json.dumps(
            {
                "task": "modrl/FourRooms-v0 (cap 100)",
                "device": args.device,
                "num_envs": args.num_envs,
                "activation": args.activation,
                "steps_per_s": round(ours_sps),
                "reference": "stable-baselines3 PPO MlpPolicy, 8 envs",
                "reference_steps_per_s": round(ref),
                "ratio": round(ratio, 1),
                "ratios": [round(x, 1) for x in ratios],
                "per_sample_steps_per_s": round(statistics.median(plain)),
                "per_sample_ratio": round(statistics.median(plain_ratios), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
