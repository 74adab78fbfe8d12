"""REINFORCE with a learned state-value baseline (Williams 1992; Sutton & Barto 2018, §13.4) over a
batched env: one gradient step per rollout on
``−log π(a_t|s_t)·(G_t − b(s_t)) − c_H·H[π(·|s_t)] + c_V·(G_t − b(s_t))²``,
with ``G_t`` the discounted return to the episode's end. Episodes still running when the rollout
stops are bootstrapped with the baseline (``bootstrap_cutoff``); set ``num_steps`` ≥ the episode
cap and ``bootstrap_cutoff: false`` for pure Monte-Carlo returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from modrl.algorithm import OnPolicyAlgorithm, check_finite, make_adam
from modrl.networks import ActorCritic, categorical_log_prob
from modrl.rollout import Rollout, collect, discounted_returns


@dataclass
class ReinforceConfig:
    num_steps: int = 64
    """Rollout length per environment."""
    gamma: float = 0.99
    learning_rate: float = 3e-3
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    bootstrap_cutoff: bool = True
    """Bootstrap episodes cut by the rollout's end with the baseline b(s_T)."""
    norm_adv: bool = True
    """Normalise G − b over the batch (a common variance reduction; off for the textbook rule)."""
    hidden_size: int = 64
    num_layers: int = 2
    activation: Literal["tanh", "relu"] = "tanh"
    tabulate_obs: bool = True
    """With a Discrete observation space, run the networks once per possible observation and look
    the batch up (same function and gradients; see ``ActorCritic``)."""

    RANGES: ClassVar[dict[str, str]] = {
        "num_steps": ">= 1", "gamma": "[0, 1]", "ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0",
        "hidden_size": ">= 1", "num_layers": ">= 1"}
    """Bounds of the numeric keys (``modrl.config.check_ranges``)."""


class Reinforce(OnPolicyAlgorithm):
    def __init__(self, cfg: ReinforceConfig, env, total_steps: int):
        super().__init__(env, total_steps, cfg.num_steps * env.num_envs)
        self.cfg = cfg
        self.policy = ActorCritic(
            env.single_observation_space, env.single_action_space, cfg.hidden_size, cfg.num_layers, cfg.activation, cfg.tabulate_obs
        )
        self.policy.to(self.device)
        self.optimizer = make_adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.rollout = Rollout.allocate(cfg.num_steps, env)

    def train_iteration(self) -> dict[str, float]:
        cfg, policy, r = self.cfg, self.policy, self.rollout
        self.obs = collect(self.env, policy, r, self.obs, self.stats, cfg.gamma)
        with torch.no_grad():
            last = policy.value(self.obs) if cfg.bootstrap_cutoff else torch.zeros_like(r.values[0])
            returns = discounted_returns(r.rewards, r.dones, last, cfg.gamma).flatten()

        obs, actions = r.obs.flatten(0, 1), r.actions.flatten()
        log_prob, entropy = categorical_log_prob(policy.logits(obs), actions)
        baseline = policy.value(obs)
        adv = returns - baseline.detach()
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = -(log_prob * adv).mean()
        v_loss = 0.5 * ((returns - baseline) ** 2).mean()
        entropy_loss = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
        check_finite({"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}, self.global_step)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        self.optimizer.step()

        self.iteration += 1
        pg, v, ent = torch.stack([pg_loss, v_loss, entropy_loss]).tolist()
        return {"losses/policy_loss": pg, "losses/value_loss": v, "losses/entropy": ent}
