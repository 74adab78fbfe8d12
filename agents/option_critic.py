"""Option-critic (Bacon, Harb & Precup 2017), A2OC with a deliberation cost (Harb et al. 2018) and
PPOC (Klissarov et al. 2017), batched over envs and over independent runs.

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

PPOC (``option_policy: learned``, ``update: ppo``): π_Ω is a softmax policy of its own (the
router), trained at the ticks where it chose by ∇log π_Ω(ω|s)·(Q_Ω(s, ω) − V(s)) with
V = Σ π_Ω Q_Ω; the intra-option and π_Ω steps are PPO's clipped surrogates over epochs of
minibatches, with returns the λ-returns bootstrapped by U; terminations keep their gradient.

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
from typing import Any, ClassVar, Literal

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
    option_policy: Literal["softmax", "epsilon_greedy", "learned"] = "softmax"
    """π_Ω: a softmax over Q_Ω, ε-greedy on Q_Ω, or ``learned``: a softmax policy of its own trained
    by policy gradient on Q_Ω(s, ω) − V(s) with V = Σ_ω π_Ω(ω|s) Q_Ω(s, ω) (PPOC)."""
    option_temperature: float = 0.01
    """τ of the softmax over Q_Ω (``option_policy: softmax``)."""
    lr_option_policy: float = 0.25
    """Step size of the learned π_Ω (``option_policy: learned``)."""
    option_entropy_coef: float = 0.0
    """Entropy bonus of the learned π_Ω."""
    epsilon: float = 0.1
    """ε of the ε-greedy policy over options, and of ``value: epsilon``."""
    value: Literal["max", "epsilon"] = "max"
    """V(s) in targets and advantages: max Q_Ω (option-critic) or the ε-greedy expectation (A2OC)."""
    termination_reg: float = 0.0
    """ξ, the margin added to the termination advantage."""
    deliberation_cost: float = 0.0
    """η: subtracted from the reward at each switch and added to the termination advantage."""
    deliberation_costs: list[float] | None = None
    """η per run (``num_runs`` entries), overriding ``deliberation_cost``: a sweep over η trains
    all its values side by side in one batch."""
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
    update: Literal["a2c", "ppo"] = "a2c"
    """``a2c``: one gradient step per rollout; ``ppo``: PPO's clipped surrogate (Schulman et al.
    2017, eq. 7) for the intra-option policies and the learned π_Ω, over several epochs of
    minibatches (PPOC, Klissarov et al. 2017); terminations keep the plain termination gradient."""
    gae_lambda: float = 1.0
    """λ of the λ-return G^λ_t = r_t + γ[(1 − λ) U(s_{t+1}, ω_t) + λ G^λ_{t+1}]; 1: the n-step return."""
    ppo_epochs: int = 4
    ppo_minibatches: int = 4
    clip_coef: float = 0.2

    RANGES: ClassVar[dict[str, str]] = {
        "num_options": ">= 1", "num_runs": ">= 1", "num_steps": ">= 1", "gamma": "[0, 1]", "temperature": "> 0",
        "option_temperature": "> 0", "option_entropy_coef": ">= 0", "epsilon": "[0, 1]", "entropy_coef": ">= 0",
        "max_option_steps": ">= 1", "hidden_size": ">= 0", "max_grad_norm": "> 0", "gae_lambda": "[0, 1]",
        "ppo_epochs": ">= 1", "ppo_minibatches": ">= 1", "clip_coef": ">= 0"}
    """Bounds of the numeric keys (``modrl.config.check_ranges``)."""

    def __post_init__(self):
        if self.deliberation_costs is not None and len(self.deliberation_costs) != self.num_runs:
            raise ValueError(f"deliberation_costs has {len(self.deliberation_costs)} entries; "
                             f"it needs one per run (num_runs = {self.num_runs})")


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
            self.omega_table = nn.Parameter(torch.zeros(R * S, K)) if cfg.option_policy == "learned" else None
        else:
            H = cfg.hidden_size
            self.trunk = StackedMLP(R, in_dim, H, num_layers=1, final_activation=True)
            self.q = StackedMLP(R, H, K, num_layers=1)
            self.intra = StackedMLP(R * K, H, A, num_layers=1)
            self.beta = StackedMLP(R * K, H, 1, num_layers=1)
            self.omega = StackedMLP(R, H, K, num_layers=1) if cfg.option_policy == "learned" else None

    def critic_parameters(self) -> list[nn.Parameter]:
        return [self.q_table] if self.tabular else [*self.trunk.parameters(), *self.q.parameters()]

    def intra_parameters(self) -> list[nn.Parameter]:
        return [self.intra_table] if self.tabular else list(self.intra.parameters())

    def beta_parameters(self) -> list[nn.Parameter]:
        return [self.beta_table] if self.tabular else list(self.beta.parameters())

    def option_policy_parameters(self) -> list[nn.Parameter]:
        return [self.omega_table] if self.tabular else list(self.omega.parameters())

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

    def option_logits(self, feat: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """Logits of the learned policy over options π_Ω(·|s) (on the actor's detached features)."""
        if self.tabular:
            return self.omega_table.index_select(0, run * self.in_dim + feat)
        return self.omega(feat, run)

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
        etas = cfg.deliberation_costs if cfg.deliberation_costs is not None else [cfg.deliberation_cost] * cfg.num_runs
        self.eta = torch.tensor(etas, dtype=torch.float32, device=dev)[self.run]
        """η of each env's run."""
        self.policy = OptionCriticNet(env.single_observation_space, int(env.single_action_space.n), cfg).to(dev)
        net = self.policy
        groups = [
            {"params": net.critic_parameters(), "lr": cfg.lr_critic},
            {"params": net.intra_parameters(), "lr": cfg.lr_intra * cfg.temperature},
            {"params": net.beta_parameters(), "lr": cfg.lr_term},
        ]
        if cfg.option_policy == "learned":
            groups.append({"params": net.option_policy_parameters(), "lr": cfg.lr_option_policy})
        opt_cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[cfg.optimizer]
        self.optimizer = opt_cls(groups, lr=cfg.lr_critic)
        self.controller = CallAndReturn(n, Halting(cfg.max_option_steps), cfg.gamma, dev)
        self.metrics = ModularityMetrics(1, cfg.num_options, device=dev)
        self.run_options = torch.zeros(cfg.num_runs, 2, dtype=torch.float64, device=dev)
        """Per run since the last :meth:`option_duration_per_run`: options completed, their steps."""
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
            "decision": torch.zeros((T, n), dtype=torch.bool, device=dev),
            "action": torch.zeros((T, n), dtype=torch.long, device=dev),
            "reward": torch.zeros((T, n), device=dev),
            "done": torch.zeros((T, n), dtype=torch.bool, device=dev),
            "terminated": torch.zeros((T, n), dtype=torch.bool, device=dev),
        }

    # ------------------------------------------------------------------ the policy over options
    def value(self, q: torch.Tensor, feat: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """V(s) from Q_Ω(s, ·): max, the ε-greedy expectation, or Σ π_Ω Q_Ω under a learned π_Ω."""
        if self.cfg.option_policy == "learned":
            probs = self.policy.option_logits(self.policy.detach_actor(feat), run).softmax(-1)
            return (probs * q).sum(-1)
        if self.cfg.value == "epsilon":
            eps = self.cfg.epsilon
            return (1 - eps) * q.max(-1).values + eps * q.mean(-1)
        return q.max(-1).values

    def choose_options(self, q: torch.Tensor, feat: torch.Tensor, run: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        cfg = self.cfg
        if cfg.option_policy == "learned":
            logits = self.policy.option_logits(feat, run)
            return logits.argmax(-1) if deterministic else torch.multinomial(logits.softmax(-1), 1).squeeze(-1)
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

    def u_value(self, feat: torch.Tensor, run: torch.Tensor, beta: torch.Tensor, option: torch.Tensor) -> torch.Tensor:
        """U(s', ω) = (1 − β_ω(s')) Q_Ω(s', ω) + β_ω(s') V(s') (value upon arrival), from s' features."""
        q = self.policy.q_values(feat, run)
        return (1 - beta) * q.gather(-1, option[:, None]).squeeze(-1) + beta * self.value(q, feat, run)

    # ------------------------------------------------------------------ rollout + update
    @torch.no_grad()
    def _rollout(self) -> None:
        cfg, net, ctrl, env, run, b = self.cfg, self.policy, self.controller, self.env, self.run, self.buf
        for t in range(cfg.num_steps):
            obs = self.obs
            feat = net.features(obs, run)
            need = ctrl.needs_decision
            ctrl.decide(self.choose_options(net.q_values(feat, run), feat, run))
            self.metrics.record_decisions(torch.zeros_like(ctrl.active), ctrl.active, need)
            option = ctrl.active
            action = self.sample_action(feat, run, option)
            next_obs, reward, terminated, truncated, info = env.step(action)
            done = terminated | truncated
            arrival, f_arrival, beta, stop = self.terminations(next_obs, done, info, run, option)
            # deliberation cost at a switch (not at the episode's end), bootstrap on truncation
            reward_train = reward - self.eta * (stop & ~done).float()
            u = self.u_value(f_arrival, run, beta, option)
            reward_train = reward_train + cfg.gamma * torch.where(truncated, u, 0.0)
            transition, halt, _ = ctrl.step(stop, reward, terminated, truncated)
            self.metrics.record_step(transition)
            ended = transition.completed.double()
            self.run_options.index_add_(0, run, torch.stack([ended, transition.duration.double() * ended], -1))
            self._count_terminations(arrival, halt & ~done)

            b["obs"][t], b["arrival"][t], b["option"][t], b["action"][t] = obs, arrival, option, action
            b["prev_option"][t], b["episode_start"][t], b["decision"][t] = self.prev_option, self.episode_start, need
            b["reward"][t], b["done"][t], b["terminated"][t] = reward_train, done, terminated
            self.stats.update(info)
            self.prev_option = option
            self.episode_start = done
            self.obs = next_obs

    def train_iteration(self) -> dict[str, float]:
        cfg = self.cfg
        self._rollout()
        targets = self.targets()
        N = cfg.num_steps * self.env.num_envs
        if cfg.update == "a2c":
            batches = [None]
        else:
            size = max(1, N // cfg.ppo_minibatches)
            batches = [perm[i : i + size] for _ in range(cfg.ppo_epochs)
                       for perm in [torch.randperm(N, device=self.device)] for i in range(0, N, size)]
        for idx in batches:
            terms = self.loss_terms(targets, idx)
            # Each run's update averages its own transitions (its envs × num_steps, or its share of a
            # minibatch) at per-transition learning rates: with one env per run and num_steps 1 this is
            # the paper's online rule.
            per_run = (N if idx is None else idx.numel()) / cfg.num_runs
            loss = (terms["critic"] + terms["policy"] + terms["termination"] + terms["option_policy"]).sum() / per_run
            check_finite({k: terms[k].mean() for k in ("critic", "policy", "termination", "option_policy")}, self.global_step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
        self.iteration += 1
        mask = terms["termination_mask"]
        out = {
            "losses/value_loss": terms["critic"].mean(),
            "losses/policy_loss": terms["policy"].mean(),
            "losses/termination_loss": terms["termination"].mean(),
            "losses/option_policy_loss": terms["option_policy"].mean(),
            "losses/entropy": terms["entropy"].mean(),
            "losses/clipfrac": terms["clipfrac"],
            "options/beta": (terms["beta"] * mask).sum() / mask.sum().clamp_min(1),
        }
        return dict(zip(out, torch.stack([v.detach().float() for v in out.values()]).tolist()))

    @torch.no_grad()
    def targets(self) -> dict[str, torch.Tensor]:
        """What the update holds fixed, flattened [T·N]: λ-returns G^λ_t bootstrapped with
        U(s_{t+1}, ω_t), the termination advantages, and the rollout policy's log-probabilities (for
        PPO's ratios)."""
        cfg, net, run, b = self.cfg, self.policy, self.run, self.buf
        T, lam = cfg.num_steps, cfg.gae_lambda
        runs = run.repeat(T)
        option, action = b["option"].flatten(), b["action"].flatten()
        # U(s_{t+1}, ω_t) at every arrival state (β = 0 without learned terminations)
        f_next = net.features(b["arrival"].flatten(0, 1), runs)
        beta_next = torch.sigmoid(net.beta_logit(f_next, runs, option)) if cfg.learn_termination else torch.zeros(option.shape, device=self.device)
        q_next = net.q_values(f_next, runs)
        v_next = self.value(q_next, f_next, runs)
        u = ((1 - beta_next) * q_next.gather(-1, option[:, None]).squeeze(-1) + beta_next * v_next).view(T, -1)
        running = u[-1]
        returns = torch.zeros_like(b["reward"])
        for t in reversed(range(T)):
            running = b["reward"][t] + cfg.gamma * (~b["done"][t]).float() * ((1 - lam) * u[t] + lam * running)
            returns[t] = running
        feat = net.features(b["obs"].flatten(0, 1), runs)
        q = net.q_values(feat, runs)
        v = self.value(q, feat, runs)
        margin = cfg.termination_reg + self.eta.repeat(T)
        if cfg.termination_convention == "arrival":
            # β_{ω_t}(s_{t+1}) · (Q_Ω(s_{t+1}, ω_t) − V(s_{t+1}) + ξ + η); none when s_{t+1} ended the episode
            adv_term = q_next.gather(-1, option[:, None]).squeeze(-1) - v_next + margin
            term_mask = (~b["done"].flatten()).float()
        else:
            # β_{ω_{t−1}}(s_t) · (Q_Ω(s_t, ω_{t−1}) − V(s_t) + ξ + η); none at an episode's first step
            adv_term = q.gather(-1, b["prev_option"].flatten()[:, None]).squeeze(-1) - v + margin
            term_mask = (~b["episode_start"].flatten()).float()
        q_taken = q.gather(-1, option[:, None]).squeeze(-1)
        out = {"returns": returns.flatten(), "q_taken": q_taken, "adv_term": adv_term, "term_mask": term_mask,
               "adv_option": q_taken - v, "f_next": f_next}
        actor_feat = net.detach_actor(feat)
        out["old_log_prob"] = (net.intra_logits(actor_feat, runs, option) / cfg.temperature).log_softmax(-1).gather(-1, action[:, None]).squeeze(-1)
        if cfg.option_policy == "learned":
            out["old_option_log_prob"] = net.option_logits(actor_feat, runs).log_softmax(-1).gather(-1, option[:, None]).squeeze(-1)
        return out

    def loss_terms(self, targets: dict[str, torch.Tensor] | None = None, idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-transition losses of the stored rollout (flattened [T·N], or its rows ``idx``); see the
        module docstring. With ``update: ppo`` the policy terms are clipped surrogates."""
        cfg, net, b = self.cfg, self.policy, self.buf
        targets = self.targets() if targets is None else targets
        T = cfg.num_steps
        pick = (lambda x: x) if idx is None else (lambda x: x.index_select(0, idx))
        runs = pick(self.run.repeat(T))
        obs, option, action = pick(b["obs"].flatten(0, 1)), pick(b["option"].flatten()), pick(b["action"].flatten())
        returns = pick(targets["returns"])
        ppo = cfg.update == "ppo"

        feat = net.features(obs, runs)
        q = net.q_values(feat, runs)
        q_taken = q.gather(-1, option[:, None]).squeeze(-1)
        critic = 0.5 * (returns - q_taken) ** 2

        def surrogate(log_prob: torch.Tensor, old: torch.Tensor, advantage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """log π · A, or PPO's min(ρA, clip(ρ)A) with ρ = π/π_old; and the clipped fraction."""
            if not ppo:
                return log_prob * advantage, torch.zeros((), device=self.device)
            ratio = (log_prob - old).exp()
            clipped = ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
            return torch.min(ratio * advantage, clipped * advantage), ((ratio - 1).abs() > cfg.clip_coef).float().mean()

        actor_feat = net.detach_actor(feat)
        log_probs = (net.intra_logits(actor_feat, runs, option) / cfg.temperature).log_softmax(-1)
        log_prob = log_probs.gather(-1, action[:, None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        if ppo:  # advantages fixed at the rollout policy's critic
            advantage = returns - pick(targets["q_taken"]) if cfg.baseline else returns
        else:
            advantage = (returns - q_taken).detach() if cfg.baseline else returns
        gain, clipfrac = surrogate(log_prob, pick(targets["old_log_prob"]), advantage)
        policy = -gain - cfg.entropy_coef * entropy

        if cfg.termination_convention == "arrival":
            beta = torch.sigmoid(net.beta_logit(pick(targets["f_next"]), runs, option))
        else:
            beta = torch.sigmoid(net.beta_logit(actor_feat, runs, pick(b["prev_option"].flatten())))
        mask = pick(targets["term_mask"])
        termination = beta * pick(targets["adv_term"]) * mask if cfg.learn_termination else torch.zeros_like(beta)

        option_policy = torch.zeros_like(critic)
        if cfg.option_policy == "learned":  # at the ticks where π_Ω chose: ∇ log π_Ω(ω|s) · (Q_Ω(s, ω) − V(s))
            omega_log_probs = net.option_logits(actor_feat, runs).log_softmax(-1)
            omega_gain, _ = surrogate(omega_log_probs.gather(-1, option[:, None]).squeeze(-1),
                                      pick(targets["old_option_log_prob"]), pick(targets["adv_option"]))
            omega_entropy = -(omega_log_probs.exp() * omega_log_probs).sum(-1)
            option_policy = -(omega_gain + cfg.option_entropy_coef * omega_entropy) * pick(b["decision"].flatten()).float()
        return {"critic": critic, "policy": policy, "termination": termination, "option_policy": option_policy,
                "entropy": entropy, "beta": beta.detach(), "termination_mask": mask, "returns": returns,
                "clipfrac": clipfrac}

    def log_extras(self) -> dict[str, Any]:
        """Option metrics for the logger (scalars, the usage heatmap, the termination map)."""
        summary = self.metrics.summary()
        out: dict[str, Any] = {k: v for k, v in summary.items() if isinstance(v, float)}
        if "options/duration" in out:
            out["options/collapsed_to_primitive"] = float(out["options/duration"] < 1.5)
        out["options/usage_matrix"] = self.metrics.usage_heatmap(summary, ["all"])
        term_map = self._termination_map()
        if term_map is not None:
            out["options/termination_map"] = term_map
        return out

    def option_duration_per_run(self, reset: bool = True) -> torch.Tensor:
        """Mean option duration of each run [R] since the last call (NaN where none completed)."""
        runs, steps = self.run_options.cpu().clone().unbind(-1)
        if reset:
            self.run_options.zero_()
        return torch.where(runs > 0, steps / runs.clamp_min(1), float("nan"))

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
        self.controller.decide(a.choose_options(net.q_values(feat, self.run), feat, self.run, deterministic))
        return a.sample_action(feat, self.run, self.controller.active, deterministic)

    @torch.no_grad()
    def observe(self, next_obs: torch.Tensor, reward, terminated, truncated, info) -> None:
        done = terminated | truncated
        *_, stop = self.agent.terminations(next_obs, done, info, self.run, self.controller.active)
        self.controller.step(stop, reward, terminated, truncated)
