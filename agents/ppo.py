"""Proximal Policy Optimisation (Schulman et al. 2017, "PPO", clipped objective eq. 7) over a
batched env, with the implementation details of CleanRL's ``ppo.py``: GAE (eq. 11), advantage
normalisation per minibatch, optional value clipping, entropy bonus, global gradient-norm clipping,
linear learning-rate annealing, optional early stop on approximate KL; truncated episodes are
bootstrapped, terminated ones are not (see ``modrl.rollout``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from modrl.algorithm import OnPolicyAlgorithm, check_finite, make_adam
from modrl.networks import ActorCritic, categorical_log_prob
from modrl.rollout import Rollout, collect, gae


@dataclass
class PPOConfig:
    num_steps: int = 64
    """Rollout length per environment; one iteration = num_steps × num_envs env steps."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 2.5e-3
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run."""
    update_epochs: int = 4
    num_minibatches: int = 4
    clip_coef: float = 0.2
    clip_vloss: bool = False
    """Clip the value loss as in the original PPO code."""
    norm_adv: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    """Stop the epochs early when the approximate KL exceeds this."""
    hidden_size: int = 64
    num_layers: int = 2
    activation: Literal["tanh", "relu"] = "tanh"
    tabulate_obs: bool = True
    """With a Discrete observation space, run the networks once per possible observation and look
    the batch up (same function and gradients; see ``ActorCritic``)."""

    RANGES: ClassVar[dict[str, str]] = {
        "num_steps": ">= 1", "gamma": "[0, 1]", "gae_lambda": "[0, 1]", "update_epochs": ">= 1", "num_minibatches": ">= 1",
        "clip_coef": ">= 0", "ent_coef": ">= 0", "vf_coef": ">= 0", "max_grad_norm": "> 0", "target_kl": "> 0",
        "hidden_size": ">= 1", "num_layers": ">= 1"}
    """Bounds of the numeric keys (``modrl.config.check_ranges``)."""


class PPO(OnPolicyAlgorithm):
    def __init__(self, cfg: PPOConfig, env, total_steps: int):
        super().__init__(env, total_steps, cfg.num_steps * env.num_envs)
        if self.steps_per_iteration % cfg.num_minibatches:
            raise ValueError(
                f"num_steps × num_envs = {self.steps_per_iteration} must be divisible by num_minibatches = {cfg.num_minibatches}"
            )
        self.cfg = cfg
        self.policy = ActorCritic(
            env.single_observation_space, env.single_action_space, cfg.hidden_size, cfg.num_layers, cfg.activation, cfg.tabulate_obs
        )
        self.policy.to(self.device)
        self.optimizer = make_adam(self.policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.rollout = Rollout.allocate(cfg.num_steps, env)

    def train_iteration(self) -> dict[str, float]:
        cfg, policy = self.cfg, self.policy
        if cfg.anneal_lr:
            lr = cfg.learning_rate * (1.0 - self.iteration / self.num_iterations)
            self.optimizer.param_groups[0]["lr"] = lr

        # 1. Roll out the current policy.
        self.obs = collect(self.env, policy, self.rollout, self.obs, self.stats, cfg.gamma)
        with torch.no_grad():
            advantages, returns = gae(self.rollout, policy.value(self.obs), cfg.gamma, cfg.gae_lambda)

        # 2. Flatten the batch and run minibatch epochs of the clipped objective.
        r = self.rollout
        b_obs = r.obs.flatten(0, 1)
        b_actions, b_log_probs, b_values = r.actions.flatten(), r.log_probs.flatten(), r.values.flatten()
        b_adv, b_returns = advantages.flatten(), returns.flatten()
        batch = b_actions.shape[0]
        minibatch = batch // cfg.num_minibatches
        logs = []
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(batch, device=self.device)
            for start in range(0, batch, minibatch):
                idx = perm[start : start + minibatch]
                mb_obs = b_obs.index_select(0, idx)
                new_log_prob, entropy = categorical_log_prob(policy.logits(mb_obs), b_actions[idx])
                new_value = policy.value(mb_obs)
                log_ratio = new_log_prob - b_log_probs[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()  # http://joschu.net/blog/kl-approx.html
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

                adv = b_adv[idx]
                if cfg.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()

                if cfg.clip_vloss:
                    v_clipped = b_values[idx] + (new_value - b_values[idx]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((new_value - b_returns[idx]) ** 2, (v_clipped - b_returns[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_value - b_returns[idx]) ** 2).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
                check_finite({"policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}, self.global_step)

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                logs.append(torch.stack([pg_loss, v_loss, entropy_loss, approx_kl, clipfrac]).detach())
            if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
                break

        self.iteration += 1
        pg, v, ent, kl, clipfrac = torch.stack(logs).mean(0).tolist()
        var_y = b_returns.var()
        explained_var = float(1 - (b_returns - b_values).var() / var_y) if float(var_y) > 0 else float("nan")
        return {
            "losses/policy_loss": pg,
            "losses/value_loss": v,
            "losses/entropy": ent,
            "losses/approx_kl": kl,
            "losses/clipfrac": clipfrac,
            "losses/explained_variance": explained_var,
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
