"""On-device rollout storage, advantage/return estimators and episode statistics.

Everything is a preallocated ``[T, N, ...]`` tensor on the env's device; nothing loops over envs.
Conventions: ``dones[t]`` is True when the episode ended *at* step t (terminated or truncated);
with ``SAME_STEP`` autoreset ``obs[t + 1]`` is then the next episode's first observation.
Truncated episodes are bootstrapped by folding ``γ·V(final_obs)`` into ``rewards[t]``
(stable-baselines3's treatment, SB3 #633), so the estimators below only see "the episode ended".
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from modrl.networks import ActorCritic, sample_categorical


@dataclass
class Rollout:
    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(cls, num_steps: int, env: gym.vector.VectorEnv) -> Rollout:
        t, n, dev = num_steps, env.num_envs, env.device
        space = env.single_observation_space
        obs_dtype = torch.float32 if isinstance(space, gym.spaces.Box) else torch.long
        return cls(
            obs=torch.zeros((t, n, *space.shape), dtype=obs_dtype, device=dev),
            actions=torch.zeros((t, n), dtype=torch.long, device=dev),
            log_probs=torch.zeros((t, n), device=dev),
            rewards=torch.zeros((t, n), device=dev),
            dones=torch.zeros((t, n), dtype=torch.bool, device=dev),
            values=torch.zeros((t, n), device=dev),
        )

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]


class EpisodeStats:
    """Sums over the episodes that ended (from ``info["episode"]``), kept on device; one sync to read."""

    def __init__(self, device: torch.device):
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)

    def update(self, info: dict) -> None:
        done, ep = info["_episode"], info["episode"]
        d = done.double()
        self.totals += torch.stack(
            [d.sum(), (ep["r"].double() * d).sum(), (ep["l"].double() * d).sum(), (ep["success"].double() * d).sum()]
        )

    def add(self, count, return_sum, length_sum, success_sum) -> None:
        """Add sums over episodes counted by the caller (e.g. one episode per env per update)."""
        self.totals += torch.stack([torch.as_tensor(x, dtype=torch.float64, device=self.totals.device)
                                    for x in (count, return_sum, length_sum, success_sum)])

    def pop(self) -> dict[str, float]:
        """CleanRL-named means since the last call (empty when no episode ended); resets the sums."""
        count, ret, length, success = self.totals.tolist()
        self.totals.zero_()
        if count == 0:
            return {}
        return {
            "charts/episodic_return": ret / count,
            "charts/episodic_length": length / count,
            "charts/success_rate": success / count,
            "charts/episodes": count,
        }


@torch.no_grad()
def collect(env, policy: ActorCritic, rollout: Rollout, obs: torch.Tensor, stats: EpisodeStats, gamma: float):
    """Fill ``rollout`` with ``rollout.num_steps`` batched steps of ``policy``; return the next obs."""
    for t in range(rollout.num_steps):
        action, log_prob, _ = sample_categorical(policy.logits(obs))
        value = policy.value(obs)
        next_obs, reward, terminated, truncated, info = env.step(action)
        # Bootstrap on truncation, not on termination.
        reward = reward + gamma * torch.where(truncated, policy.value(info["final_obs"]), 0.0)
        rollout.obs[t] = obs
        rollout.actions[t] = action
        rollout.log_probs[t] = log_prob
        rollout.rewards[t] = reward
        rollout.dones[t] = terminated | truncated
        rollout.values[t] = value
        stats.update(info)
        obs = next_obs
    return obs


def gae(rollout: Rollout, next_value: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16); returns ``(advantages, returns)``."""
    return generalized_advantages(rollout.rewards, rollout.values, rollout.dones, next_value, gamma, lam)


def generalized_advantages(rewards, values, dones, next_value, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over ``[T, N]`` tensors: ``dones[t]`` cuts the bootstrap after step t, ``next_value`` is
    the value after the last step. Returns ``(advantages, λ-returns)``."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        next_v = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        live = (~dones[t]).float()
        delta = rewards[t] + gamma * next_v * live - values[t]
        last = delta + gamma * lam * live * last
        advantages[t] = last
    return advantages, advantages + values


def discounted_returns(rewards: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor, gamma: float):
    """Monte-Carlo returns ``G_t = r_t + γ G_{t+1}`` cut at episode ends; ``last_value`` bootstraps
    episodes still running when the rollout stops (pass zeros for pure Monte-Carlo)."""
    returns = torch.zeros_like(rewards)
    running = last_value
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * (~dones[t]).float() * running
        returns[t] = running
    return returns
