"""Routers: which module of the inventory runs (the *routing function* of Pfeiffer et al. 2023,
§4; in RL the router is a policy over the inventory, §8.1–8.2).

Hard routers share one interface::

    route(state, task, depth=None, deterministic=False) -> Route(choice, log_prob, entropy)
    evaluate(state, task, choice, depth=None) -> (log_prob, entropy)   # for stored choices

``choice`` is a module index in [0, M), or ``halt_index`` (= M) for HALT where the router has one.

- :class:`FixedRouter`: a task → module table (one or several modules per task).
- :class:`SketchRouter`: a per-env pointer into the task's sketch (Andreas et al. 2017), advanced
  when the running module STOPs; the sketch's end halts the episode-level programme.
- :class:`CategoricalRouter`: a learned categorical over modules (+ HALT), conditioned on any of
  observation features, task, hidden state and depth (Rosenbaum et al. 2018, routing networks;
  Chang et al. 2019, CRL), trained by REINFORCE/PPO on ``log_prob``; optional ε-greedy exploration.
- :class:`SoftRouter`: softmax mixture (MoE) or top-k with renormalised weights, with the
  Switch-Transformer load-balancing loss (Fedus et al. 2022, eq. 4).
- :class:`SkillAllocation`: a task × skill matrix relaxed with Gumbel-sigmoid (Polytropon, Ponti et
  al. 2023), aggregating the active modules by averaging their parameters or their outputs.

:func:`param_groups` gives routers their own learning rate (Rosenbaum et al. use 0.3× the modules').
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from modrl.inventory import StackedMLP


class Route(NamedTuple):
    choice: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor


class FixedRouter(nn.Module):
    """Task → module table: ``table[t]`` is a module index, or a row of K module indices."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.long))

    def route(self, state=None, task=None, depth=None, deterministic=False) -> Route:
        choice = self.table[task]
        zeros = torch.zeros(choice.shape[0], device=choice.device)
        return Route(choice, zeros, zeros)

    def evaluate(self, state, task, choice, depth=None):
        zeros = torch.zeros(choice.shape[0], device=choice.device)
        return zeros, zeros


class SketchRouter(nn.Module):
    """Per-env pointer into the task's sketch (a sequence of module indices, Andreas et al. 2017).

    ``start(mask, task)`` points the masked envs at the first step of their task's sketch;
    ``route`` returns the module under each env's pointer (``halt_index`` once the sketch is
    exhausted); ``advance(stopped)`` moves the pointer of the envs whose module STOPped and returns
    which sketches are now exhausted. All per-env state is tensors, updated by masked writes.
    """

    def __init__(self, sketches: list[list[int]], num_envs: int, num_modules: int, device=None):
        super().__init__()
        if any(len(s) == 0 for s in sketches):
            raise ValueError("every sketch needs at least one step")
        if any(not 0 <= m < num_modules for s in sketches for m in s):
            raise ValueError(f"sketch steps must be module indices in [0, {num_modules})")
        longest = max(len(s) for s in sketches)
        table = torch.full((len(sketches), longest + 1), num_modules, dtype=torch.long)
        for t, sketch in enumerate(sketches):
            table[t, : len(sketch)] = torch.tensor(sketch)
        self.halt_index = num_modules
        self.register_buffer("table", table.to(device))
        self.register_buffer("lengths", torch.tensor([len(s) for s in sketches], device=device))
        self.register_buffer("pointer", torch.zeros(num_envs, dtype=torch.long, device=device))
        self.register_buffer("task", torch.zeros(num_envs, dtype=torch.long, device=device))

    def start(self, mask: torch.Tensor, task: torch.Tensor) -> None:
        self.pointer = torch.where(mask, 0, self.pointer)
        self.task = torch.where(mask, task.long(), self.task)

    def current(self) -> torch.Tensor:
        return self.table[self.task, self.pointer.clamp(max=self.table.shape[1] - 1)]

    def route(self, state=None, task=None, depth=None, deterministic=False) -> Route:
        choice = self.current()
        zeros = torch.zeros(choice.shape[0], device=choice.device)
        return Route(choice, zeros, zeros)

    def evaluate(self, state, task, choice, depth=None):
        zeros = torch.zeros(choice.shape[0], device=choice.device)
        return zeros, zeros

    def advance(self, stopped: torch.Tensor) -> torch.Tensor:
        """Move the pointers of the envs whose module stopped; return bool [N]: sketch exhausted."""
        self.pointer = self.pointer + stopped.long()
        return self.exhausted()

    def exhausted(self) -> torch.Tensor:
        return self.pointer >= self.lengths[self.task]


class CategoricalRouter(nn.Module):
    """A learned hard router: a categorical over M modules (+ HALT) — a policy over the inventory.

    Inputs (any combination): ``obs_dim`` observation features, ``num_tasks`` (a task embedding),
    ``hidden_dim`` (the current hidden representation, detached as in the routing-networks
    library), ``max_depth`` (a depth embedding). With only a task input and ``hidden == 0`` it is
    the tabular per-task router of Rosenbaum et al. (2018). ``epsilon`` mixes a uniform choice into
    the behaviour policy; ``log_prob`` is then that of the mixture (what REINFORCE needs).
    """

    def __init__(
        self,
        num_modules: int,
        *,
        obs_dim: int = 0,
        num_tasks: int = 0,
        hidden_dim: int = 0,
        max_depth: int = 0,
        halt: bool = False,
        hidden: int = 64,
        epsilon: float = 0.0,
        detach_state: bool = True,
    ):
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        self.num_modules = num_modules
        self.num_choices = num_modules + int(halt)
        self.halt_index = num_modules if halt else None
        self.epsilon = epsilon
        self.detach_state = detach_state
        self.obs_dim, self.hidden_dim, self.num_tasks, self.max_depth = obs_dim, hidden_dim, num_tasks, max_depth
        self.tabular = hidden == 0
        if self.tabular:
            if obs_dim or hidden_dim:
                raise ValueError("a tabular router (hidden=0) takes only task and depth inputs")
            self.table = nn.Parameter(torch.zeros(max(num_tasks, 1), max(max_depth, 1), self.num_choices))
        else:
            in_dim = obs_dim + hidden_dim + (hidden if num_tasks else 0) + (hidden if max_depth else 0)
            if in_dim == 0:
                raise ValueError("a router needs at least one input (obs_dim, num_tasks, hidden_dim or max_depth)")
            self.task_embed = nn.Embedding(num_tasks, hidden) if num_tasks else None
            self.depth_embed = nn.Embedding(max_depth, hidden) if max_depth else None
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.num_choices))
            nn.init.zeros_(self.net[-1].weight)  # start uniform over the inventory
            nn.init.zeros_(self.net[-1].bias)

    def logits(self, state=None, task=None, depth=None, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.tabular:
            t = task if task is not None and self.num_tasks else None
            d = depth if depth is not None and self.max_depth else None
            n = next(x.shape[0] for x in (task, depth, state) if x is not None)
            t = t if t is not None else torch.zeros(n, dtype=torch.long, device=self.table.device)
            d = d if d is not None else torch.zeros(n, dtype=torch.long, device=self.table.device)
            logits = self.table[t, d]
        else:
            parts = []
            if self.obs_dim or self.hidden_dim:
                parts.append(state.detach() if self.detach_state else state)
            if self.task_embed is not None:
                parts.append(self.task_embed(task))
            if self.depth_embed is not None:
                parts.append(self.depth_embed(depth))
            logits = self.net(torch.cat(parts, -1))
        if valid is not None:
            logits = logits.masked_fill(~valid, float("-inf"))
        return logits

    def _log_probs(self, logits: torch.Tensor, valid: torch.Tensor | None):
        log_pi = logits.log_softmax(-1)
        if self.epsilon == 0.0:
            return log_pi, log_pi
        k = valid.sum(-1, keepdim=True) if valid is not None else torch.full_like(logits[:, :1], self.num_choices)
        uniform = torch.where(valid, -torch.log(k.float()), float("-inf")) if valid is not None else -torch.log(k.float()).expand_as(logits)
        behaviour = torch.logaddexp(log_pi + math.log1p(-self.epsilon), uniform + math.log(self.epsilon))
        return log_pi, behaviour

    def route(self, state=None, task=None, depth=None, deterministic=False, valid=None) -> Route:
        logits = self.logits(state, task, depth, valid)
        log_pi, log_behaviour = self._log_probs(logits, valid)
        if deterministic:
            choice = log_pi.argmax(-1)
        else:
            choice = torch.multinomial(log_behaviour.exp(), 1).squeeze(-1)
        entropy = -(log_pi.exp() * log_pi.masked_fill(log_pi == float("-inf"), 0.0)).sum(-1)
        return Route(choice, log_behaviour.gather(-1, choice[:, None]).squeeze(-1), entropy)

    def evaluate(self, state, task, choice, depth=None, valid=None):
        logits = self.logits(state, task, depth, valid)
        log_pi, log_behaviour = self._log_probs(logits, valid)
        entropy = -(log_pi.exp() * log_pi.masked_fill(log_pi == float("-inf"), 0.0)).sum(-1)
        return log_behaviour.gather(-1, choice.long()[:, None]).squeeze(-1), entropy


class SoftRouter(nn.Module):
    """Soft routing (mixture of experts): weights over all M modules (``top_k=None``) or over the
    top k, renormalised. ``forward`` returns ``(weights [B, M], aux_loss)``; ``aux_loss`` is the
    Switch-Transformer load-balancing loss M·Σ_i f_i·P_i (f_i: fraction of rows whose top choice
    is i; P_i: mean router probability of i), 1 when perfectly balanced."""

    def __init__(self, in_dim: int, num_modules: int, top_k: int | None = None):
        super().__init__()
        if top_k is not None and not 1 <= top_k <= num_modules:
            raise ValueError(f"top_k must be in [1, {num_modules}], got {top_k}")
        self.num_modules = num_modules
        self.top_k = top_k
        self.gate = nn.Linear(in_dim, num_modules)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = self.gate(x).softmax(-1)
        if self.top_k is None:
            weights = probs
        else:
            top, idx = probs.topk(self.top_k, dim=-1)
            weights = torch.zeros_like(probs).scatter(-1, idx, top / top.sum(-1, keepdim=True))
        first = F.one_hot(probs.argmax(-1), self.num_modules).float()
        aux = self.num_modules * (first.mean(0) * probs.mean(0)).sum()
        return weights, aux


def mixture(inventory: StackedMLP, x: torch.Tensor, weights: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Aggregate module outputs Σ_m w_m f_m(x). Dense (every module on every row) when ``top_k`` is
    None; otherwise only each row's k non-zero modules run, through the grouped forward."""
    if top_k is None:
        return torch.einsum("bm,mbd->bd", weights, inventory.forward_all(x))
    w, idx = weights.topk(top_k, dim=-1)
    out = 0.0
    for k in range(top_k):  # k ≤ a handful: a loop over slots, not over samples
        out = out + w[:, k : k + 1] * inventory(x, idx[:, k])
    return out


class SkillAllocation(nn.Module):
    """Polytropon's task × skill allocation (Ponti et al. 2023): logits Z [T, S]; during training
    a relaxed Bernoulli (Gumbel-sigmoid, temperature τ) per entry, at evaluation σ(Z) (or its
    rounding with ``hard``). A task uses a variable-size subset of the S skills (modules)."""

    def __init__(self, num_tasks: int, num_skills: int, temperature: float = 1.0):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_tasks, num_skills).uniform_(-1e-3, 1e-3))
        self.temperature = temperature

    def forward(self, task: torch.Tensor | None = None, hard: bool = False) -> torch.Tensor:
        """Allocation rows in [0, 1]^S for ``task`` [B] (or for every task when None)."""
        z = self.logits if task is None else self.logits[task]
        if self.training:
            u = torch.rand_like(z).clamp(1e-6, 1 - 1e-6)
            noise = torch.log(u) - torch.log1p(-u)  # logistic noise: a Gumbel-sigmoid
            a = torch.sigmoid((z + noise) / self.temperature)
        else:
            a = torch.sigmoid(z)
        if hard:
            a = a + ((a > 0.5).float() - a).detach()  # straight-through rounding
        return a

    @staticmethod
    def normalise(a: torch.Tensor) -> torch.Tensor:
        return a / a.sum(-1, keepdim=True).clamp_min(1e-6)

    def combine_outputs(self, inventory: StackedMLP, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Average of the active skills' outputs: Σ_s â_ts f_s(x) with â normalised over s."""
        return torch.einsum("bs,sbd->bd", self.normalise(self(task)), inventory.forward_all(x))

    def combine_parameters(self, inventory: StackedMLP, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Polytropon proper: each task's module has the average of its skills' parameters
        θ_t = Σ_s â_ts θ_s; rows run through their task's combined module (grouped by task)."""
        a = self.normalise(self())  # [T, S]
        params = [
            (torch.einsum("ts,sio->tio", a, w), torch.einsum("ts,so->to", a, b))
            for w, b in inventory.parameters_by_layer()
        ]
        return inventory(x, task, params=params)


def param_groups(model: nn.Module, lr: float, router_lr: float) -> list[dict]:
    """Optimiser groups: the parameters of every router in ``model`` at ``router_lr``, the rest at ``lr``."""
    router_types = (CategoricalRouter, SoftRouter, SkillAllocation)
    router_params = {id(p) for m in model.modules() if isinstance(m, router_types) for p in m.parameters()}
    routers = [p for p in model.parameters() if id(p) in router_params]
    others = [p for p in model.parameters() if id(p) not in router_params]
    return [g for g in ({"params": others, "lr": lr}, {"params": routers, "lr": router_lr}) if g["params"]]
