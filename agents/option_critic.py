"""Option-critic (Bacon, Harb & Precup 2017) and A2OC with a deliberation cost (Harb et al. 2018),
batched over envs and over independent runs.

K options, each an intra-option softmax policy π_ω(a|s) and a sigmoid termination β_ω(s); a
critic Q_Ω(s, ω); a policy over options that is a softmax over Q_Ω (the tabular paper's code) or
ε-greedy on it (the deep versions). Options are a module inventory indexed by the active option;
the policy over options is the router; ``CallAndReturn`` decides exactly where an option
terminated or an episode restarted. Per update (``num_steps`` env steps; 1 = the paper's online
updates), with G_t the n-step return bootstrapped with U(s', ω) = (1 − β_ω(s'))Q_Ω(s', ω) + β_ω(s')V(s'):

- critic: ½ (G_t − Q_Ω(s_t, ω_t))² (intra-option Q-learning when num_steps = 1, §4 of the paper);
- intra-option policy gradient (Theorem 1): −log π_ω(a_t|s_t) · (G_t − Q_Ω(s_t, ω_t)) − c_H·H;
- termination gradient (Theorem 2): β_ω(s)·(Q_Ω(s, ω) − V(s) + ξ + η), at the arrival state
  s_{t+1} of the option that was executing (convention ``arrival``, the paper's), or one step later
  at s_t with ω_{t−1} (convention ``shifted``, ShangtongZhang/DeepRL), first step of episodes masked;
- deliberation cost η (A2OC): subtracted from the reward at every switch, added to the advantage.
  V = max Q_Ω (``value: max``), or (1 − ε)·max Q_Ω + ε·mean Q_Ω (``value: epsilon``, A2OC).

``num_runs`` splits the env rows into R independent agents (row i → run i mod R; every parameter
has a leading run dimension, so runs never share a gradient): the paper's curves average many
independent runs, and here they all train in one batch. With a ``Discrete`` observation and
``hidden_size: 0`` the features are the one-hot state, so every head is a table (the paper's
Four Rooms learner); otherwise a per-run MLP trunk, trained by the critic only.

``lr_intra`` is in the units of the original tabular code, whose update omits the 1/temperature
factor of ∇log softmax(θ/τ); the SGD step on θ is therefore lr_intra·τ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modrl.algorithm import OnPolicyAlgorithm, check_finite
from modrl.controller import CallAndReturn
from modrl.halting import Halting
from modrl.inventory import StackedMLP
from modrl.metrics import ModularityMetrics


@dataclass
class OptionCriticConfig:
    num_options: int = 4
    num_runs: int = 1
    """Independent agents trained side by side; num_envs must be a multiple."""
    num_steps: int = 1
    """Env steps per update (1: online updates, as the tabular paper)."""
    gamma: float = 0.99
    optimizer: Literal["sgd", "rmsprop", "adam"] = "sgd"
    lr_critic: float = 0.5
    lr_intra: float = 0.25
    lr_term: float = 0.25
    temperature: float = 0.01
    """τ of the intra-option softmax π_ω = softmax(θ/τ)."""
    option_policy: Literal["softmax", "epsilon_greedy"] = "softmax"
    option_temperature: float = 0.01
    """τ of the softmax over Q_Ω (``option_policy: softmax``)."""
    epsilon: float = 0.1
    """ε of the ε-greedy policy over options, and of ``value: epsilon``."""
    value: Literal["max", "epsilon"] = "max"
    """V(s) in targets and advantages: max Q_Ω (option-critic) or the ε-greedy expectation (A2OC)."""
    termination_reg: float = 0.0
    """ξ, the margin added to the termination advantage."""
    deliberation_cost: float = 0.0
    """η: subtracted from the reward at each switch and added to the termination advantage."""
    entropy_coef: float = 0.0
    baseline: bool = True
    """Subtract Q_Ω(s, ω) in the intra-option policy gradient."""
    termination_convention: Literal["arrival", "shifted"] = "arrival"
    learn_termination: bool = True
    """False: options never terminate by themselves (with num_options: 1, flat actor-critic)."""
    max_option_steps: int | None = None
    """Force a termination after this many steps (None: no cap)."""
    hidden_size: int = 0
    """0: tabular one-hot features (Discrete observations); > 0: a per-run MLP trunk of this width."""
    max_grad_norm: float | None = None


class OptionCriticNet(nn.Module):
    """Per-run Q_Ω heads and option inventory (intra-option logits, β logits).

    Tabular (``hidden_size: 0``, Discrete observations): three tables with a leading run
    dimension — Q [R, S, K], θ [R, K, S, A], ϑ [R, K, S] — read by one gather each; "features" are
    the state indices. Otherwise a per-run MLP trunk feeds stacked linear heads (module inventories
    indexed by run, and by run × option for the options).
    """

    def __init__(self, obs_space: gym.Space, num_actions: int, cfg: OptionCriticConfig):
        super().__init__()
        R, K, A = cfg.num_runs, cfg.num_options, num_actions
        self.R, self.K, self.A = R, K, A
        self.one_hot = isinstance(obs_space, gym.spaces.Discrete)
        in_dim = int(obs_space.n) if self.one_hot else int(np.prod(obs_space.shape))
        self.in_dim = in_dim
        self.tabular = cfg.hidden_size == 0
        if self.tabular:
            if not self.one_hot:
                raise ValueError("hidden_size: 0 (tabular) needs a Discrete observation space")
            S = in_dim
            self.q_table = nn.Parameter(torch.zeros(R * S, K))
            self.intra_table = nn.Parameter(torch.zeros(R * K * S, A))
            self.beta_table = nn.Parameter(torch.zeros(R * K * S))
        else:
            H = cfg.hidden_size
            self.trunk = StackedMLP(R, in_dim, H, num_layers=1, final_activation=True)
            self.q = StackedMLP(R, H, K, num_layers=1)
            self.intra = StackedMLP(R * K, H, A, num_layers=1)
            self.beta = StackedMLP(R * K, H, 1, num_layers=1)

    def critic_parameters(self) -> list[nn.Parameter]:
        return [self.q_table] if self.tabular else [*self.trunk.parameters(), *self.q.parameters()]

    def intra_parameters(self) -> list[nn.Parameter]:
        return [self.intra_table] if self.tabular else list(self.intra.parameters())

    def beta_parameters(self) -> list[nn.Parameter]:
        return [self.beta_table] if self.tabular else list(self.beta.parameters())

    def features(self, obs: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        if self.tabular:
            return obs.long()
        x = F.one_hot(obs.long(), self.in_dim).float() if self.one_hot else obs.reshape(obs.shape[0], -1).float()
        return self.trunk(x, run)

    def detach_actor(self, feat: torch.Tensor) -> torch.Tensor:
        """Actor and termination heads see the trunk's features without training it."""
        return feat if self.tabular else feat.detach()

    def q_values(self, feat: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        if self.tabular:
            return self.q_table.index_select(0, run * self.in_dim + feat)
        return self.q(feat, run)

    def intra_logits(self, feat: torch.Tensor, run: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        if self.tabular:
            return self.intra_table.index_select(0, (run * self.K + option) * self.in_dim + feat)
        return self.intra(feat, run * self.K + option)

    def beta_logit(self, feat: torch.Tensor, run: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        if self.tabular:
            return self.beta_table.index_select(0, (run * self.K + option) * self.in_dim + feat)
        return self.beta(feat, run * self.K + option).squeeze(-1)


class OptionCritic(OnPolicyAlgorithm):
    def __init__(self, cfg: OptionCriticConfig, env, total_steps: int):
        super().__init__(env, total_steps, cfg.num_steps * env.num_envs)
        if not isinstance(env.single_action_space, gym.spaces.Discrete):
            raise ValueError("option-critic needs a Discrete action space")
        if env.num_envs % cfg.num_runs:
            raise ValueError(f"num_envs ({env.num_envs}) must be a multiple of num_runs ({cfg.num_runs})")
        self.cfg = cfg
        n, dev = env.num_envs, self.device
        self.run = torch.arange(n, device=dev) % cfg.num_runs
        self.policy = OptionCriticNet(env.single_observation_space, int(env.single_action_space.n), cfg).to(dev)
        net = self.policy
        groups = [
            {"params": net.critic_parameters(), "lr": cfg.lr_critic},
            {"params": net.intra_parameters(), "lr": cfg.lr_intra * cfg.temperature},
            {"params": net.beta_parameters(), "lr": cfg.lr_term},
        ]
        opt_cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[cfg.optimizer]
        self.optimizer = opt_cls(groups, lr=cfg.lr_critic)
        self.controller = CallAndReturn(n, Halting(cfg.max_option_steps), cfg.gamma, dev)
        self.metrics = ModularityMetrics(1, cfg.num_options, device=dev)
        self.prev_option = torch.zeros(n, dtype=torch.long, device=dev)
        self.episode_start = torch.ones(n, dtype=torch.bool, device=dev)
        self._termination_counts = None
        T = cfg.num_steps
        obs_shape, obs_dtype = env.single_observation_space.shape, (torch.long if net.one_hot else torch.float32)
        self.buf = {
            "obs": torch.zeros((T, n, *obs_shape), dtype=obs_dtype, device=dev),
            "arrival": torch.zeros((T, n, *obs_shape), dtype=obs_dtype, device=dev),
            "option": torch.zeros((T, n), dtype=torch.long, device=dev),
            "prev_option": torch.zeros((T, n), dtype=torch.long, device=dev),
            "episode_start": torch.zeros((T, n), dtype=torch.bool, device=dev),
            "action": torch.zeros((T, n), dtype=torch.long, device=dev),
            "reward": torch.zeros((T, n), device=dev),
            "done": torch.zeros((T, n), dtype=torch.bool, device=dev),
            "terminated": torch.zeros((T, n), dtype=torch.bool, device=dev),
        }

    # ------------------------------------------------------------------ the policy over options
    def value(self, q: torch.Tensor) -> torch.Tensor:
        if self.cfg.value == "epsilon":
            eps = self.cfg.epsilon
            return (1 - eps) * q.max(-1).values + eps * q.mean(-1)
        return q.max(-1).values

    def choose_options(self, q: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        cfg = self.cfg
        if deterministic:
            return q.argmax(-1)
        if cfg.option_policy == "softmax":
            return torch.multinomial((q / cfg.option_temperature).softmax(-1), 1).squeeze(-1)
        greedy = q.argmax(-1)
        random = torch.randint(0, cfg.num_options, greedy.shape, device=q.device)
        return torch.where(torch.rand(greedy.shape, device=q.device) < cfg.epsilon, random, greedy)

    def sample_action(self, feat, run, option, deterministic: bool = False) -> torch.Tensor:
        """An action of each env's active option, from π_ω = softmax(θ/τ)."""
        logits = self.policy.intra_logits(feat, run, option) / self.cfg.temperature
        return logits.argmax(-1) if deterministic else torch.multinomial(logits.softmax(-1), 1).squeeze(-1)

    def terminations(self, next_obs, done, info, run, option):
        """At the arrival state s' (the final observation where the episode ended): its features,
        β_ω(s') and the sampled stop of each env's option (never, without learned terminations)."""
        arrival = torch.where(done.view(-1, *([1] * (next_obs.dim() - 1))), info["final_obs"], next_obs)
        feat = self.policy.features(arrival, run)
        if not self.cfg.learn_termination:
            return arrival, feat, torch.zeros(done.shape, device=self.device), torch.zeros_like(done)
        beta = torch.sigmoid(self.policy.beta_logit(feat, run, option))
        return arrival, feat, beta, torch.rand_like(beta) < beta

    def u_value(self, q: torch.Tensor, beta: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        """U(s', ω) = (1 − β_ω(s')) Q_Ω(s', ω) + β_ω(s') V(s') (value upon arrival)."""
        return (1 - beta) * q.gather(-1, option[:, None]).squeeze(-1) + beta * self.value(q)

    # ------------------------------------------------------------------ rollout + update
    @torch.no_grad()
    def _rollout(self) -> None:
        cfg, net, ctrl, env, run, b = self.cfg, self.policy, self.controller, self.env, self.run, self.buf
        for t in range(cfg.num_steps):
            obs = self.obs
            feat = net.features(obs, run)
            need = ctrl.needs_decision
            ctrl.decide(self.choose_options(net.q_values(feat, run)))
            self.metrics.record_decisions(torch.zeros_like(ctrl.active), ctrl.active, need)
            option = ctrl.active
            action = self.sample_action(feat, run, option)
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated | truncated
            arrival, f_arrival, beta, stop = self.terminations(next_obs, done, info, run, option)
            # deliberation cost at a switch (not at the episode's end), bootstrap on truncation
            reward_train = reward - cfg.deliberation_cost * (stop & ~done).float()
            u = self.u_value(net.q_values(f_arrival, run), beta, option)
            reward_train = reward_train + cfg.gamma * torch.where(truncated, u, 0.0)
            transition, halt, _ = ctrl.step(stop, reward, terminated, truncated)
            self.metrics.record_step(transition)
            self._count_terminations(arrival, halt & ~done)

            b["obs"][t], b["arrival"][t], b["option"][t], b["action"][t] = obs, arrival, option, action
            b["prev_option"][t], b["episode_start"][t] = self.prev_option, self.episode_start
            b["reward"][t], b["done"][t], b["terminated"][t] = reward_train, done, terminated
            self.stats.update(info)
            self.prev_option = option
            self.episode_start = done
            self.obs = next_obs

    def train_iteration(self) -> dict[str, float]:
        self._rollout()
        terms = self.loss_terms()
        # Each run's update averages its own transitions (its envs × num_steps) at per-transition
        # learning rates: with one env per run and num_steps 1 this is the paper's online rule.
        per_run = self.cfg.num_steps * (self.env.num_envs // self.cfg.num_runs)
        loss = (terms["critic"] + terms["policy"] + terms["termination"]).sum() / per_run
        check_finite({k: terms[k].mean() for k in ("critic", "policy", "termination")}, self.global_step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.iteration += 1
        mask = terms["termination_mask"]
        out = {
            "losses/value_loss": terms["critic"].mean(),
            "losses/policy_loss": terms["policy"].mean(),
            "losses/termination_loss": terms["termination"].mean(),
            "losses/entropy": terms["entropy"].mean(),
            "options/beta": (terms["beta"] * mask).sum() / mask.sum().clamp_min(1),
        }
        return dict(zip(out, torch.stack([v.detach() for v in out.values()]).tolist()))

    def loss_terms(self) -> dict[str, torch.Tensor]:
        """Per-transition losses of the stored rollout (flattened [T·N]); see the module docstring."""
        cfg, net, run, b = self.cfg, self.policy, self.run, self.buf
        T = cfg.num_steps
        runs = run.repeat(T)

        # n-step returns G_t, bootstrapped with U(s_T, ω_{T−1}) at the rollout's end
        with torch.no_grad():
            f_last = net.features(b["arrival"][-1], run)
            beta_last = torch.sigmoid(net.beta_logit(f_last, run, b["option"][-1]))
            if not cfg.learn_termination:
                beta_last = torch.zeros_like(beta_last)
            running = self.u_value(net.q_values(f_last, run), beta_last, b["option"][-1])
            returns = torch.zeros_like(b["reward"])
            for t in reversed(range(T)):
                running = b["reward"][t] + cfg.gamma * (~b["done"][t]).float() * running
                returns[t] = running
            returns = returns.flatten()

        obs, option, action = b["obs"].flatten(0, 1), b["option"].flatten(), b["action"].flatten()
        done = b["done"].flatten()
        feat = net.features(obs, runs)
        q = net.q_values(feat, runs)
        q_taken = q.gather(-1, option[:, None]).squeeze(-1)
        critic = 0.5 * (returns - q_taken) ** 2

        actor_feat = net.detach_actor(feat)
        log_probs = (net.intra_logits(actor_feat, runs, option) / cfg.temperature).log_softmax(-1)
        log_prob = log_probs.gather(-1, action[:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        advantage = (returns - q_taken).detach() if cfg.baseline else returns
        policy = -log_prob * advantage - cfg.entropy_coef * entropy

        margin = cfg.termination_reg + cfg.deliberation_cost
        if cfg.termination_convention == "arrival":
            # β_{ω_t}(s_{t+1}) · (Q_Ω(s_{t+1}, ω_t) − V(s_{t+1}) + ξ + η); none when s_{t+1} ended the episode
            with torch.no_grad():
                f_next = net.features(b["arrival"].flatten(0, 1), runs)
                q_next = net.q_values(f_next, runs)
                adv_term = q_next.gather(-1, option[:, None]).squeeze(-1) - self.value(q_next) + margin
            beta = torch.sigmoid(net.beta_logit(f_next, runs, option))
            mask = (~done).float()
        else:
            # β_{ω_{t−1}}(s_t) · (Q_Ω(s_t, ω_{t−1}) − V(s_t) + ξ + η); none at an episode's first step
            prev = b["prev_option"].flatten()
            with torch.no_grad():
                adv_term = q.detach().gather(-1, prev[:, None]).squeeze(-1) - self.value(q.detach()) + margin
            beta = torch.sigmoid(net.beta_logit(net.detach_actor(feat), runs, prev))
            mask = (~b["episode_start"].flatten()).float()
        termination = beta * adv_term * mask if cfg.learn_termination else torch.zeros_like(beta)
        return {"critic": critic, "policy": policy, "termination": termination, "entropy": entropy,
                "beta": beta.detach(), "termination_mask": mask, "returns": returns}

    def log_extras(self) -> dict[str, Any]:
        """Option metrics for the logger (scalars, the usage heatmap, the termination map)."""
        summary = self.metrics.summary()
        out: dict[str, Any] = {k: v for k, v in summary.items() if isinstance(v, float)}
        if "options/duration" in out:
            out["options/collapsed_to_primitive"] = float(out["options/duration"] < 1.5)
        out["options/usage_matrix"] = summary["usage_matrix"]
        term_map = self._termination_map()
        if term_map is not None:
            out["options/termination_map"] = term_map
        return out

    def _count_terminations(self, arrival: torch.Tensor, terminated_option: torch.Tensor) -> None:
        if not self.policy.one_hot:
            return
        if self._termination_counts is None:
            self._termination_counts = torch.zeros(2, self.policy.in_dim, device=self.device)
        self._termination_counts[0].index_add_(0, arrival.long(), terminated_option.float())
        self._termination_counts[1].index_add_(0, arrival.long(), torch.ones_like(terminated_option, dtype=torch.float))

    def _termination_map(self):
        """Where options terminate: the fraction of arrivals in each cell that ended the option,
        as an image over the env's grid (envs that expose ``CELLS``, e.g. Four Rooms)."""
        cells = getattr(type(self.env), "cells", None)
        if self._termination_counts is None or cells is None:
            return None
        ended, visits = self._termination_counts
        rate = torch.where(visits > 0, ended / visits.clamp_min(1), 0.0).cpu()
        coords = torch.as_tensor(cells())
        image = torch.zeros(int(coords[:, 0].max()) + 2, int(coords[:, 1].max()) + 2)
        image[coords[:, 0], coords[:, 1]] = rate
        self._termination_counts.zero_()
        return image

    # ------------------------------------------------------------------ evaluation and checkpoints
    def make_actor(self, num_envs: int) -> OptionActor:
        return OptionActor(self, num_envs)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(controller=self.controller.state_dict(), prev_option=self.prev_option.clone(),
                     episode_start=self.episode_start.clone())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.prev_option = state["prev_option"].to(self.device)
        self.episode_start = state["episode_start"].to(self.device)


class OptionActor:
    """Call-and-return execution of a trained option-critic for evaluation (its own controller)."""

    def __init__(self, agent: OptionCritic, num_envs: int):
        self.agent = agent
        self.run = torch.arange(num_envs, device=agent.device) % agent.cfg.num_runs
        self.controller = CallAndReturn(num_envs, Halting(agent.cfg.max_option_steps), agent.cfg.gamma, agent.device)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        a, net = self.agent, self.agent.policy
        feat = net.features(obs, self.run)
        self.controller.decide(a.choose_options(net.q_values(feat, self.run), deterministic))
        return a.sample_action(feat, self.run, self.controller.active, deterministic)

    @torch.no_grad()
    def observe(self, next_obs: torch.Tensor, reward, terminated, truncated, info) -> None:
        done = terminated | truncated
        *_, stop = self.agent.terminations(next_obs, done, info, self.run, self.controller.active)
        self.controller.step(stop, reward, terminated, truncated)
