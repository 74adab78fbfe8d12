"""Halting: one mechanism for every stop decision — an option's termination β_ω(s) (Bacon et al.
2017), a sketch sub-policy's STOP action (Andreas et al. 2017), a router's HALT (Rosenbaum et al.
2018; Chang et al. 2019) and a layout's ``<eos>`` (Hu et al. 2017).

At step t of a module's run the halting probability is λ_t (a sigmoid of a halting logit, or the
probability of a STOP/HALT action). A step cap forces the stop after ``max_steps``; forced stops are
flagged so that learners can leave them out (the sketch agent never trains on its forced STOPs).

Three ways to train the decision:

- **sampled** (:meth:`Halting.sample`): the stop is an action inside REINFORCE/PPO, with the
  log-probability of the sampled bit; an optional per-step ponder cost τ (Graves 2016, ACT) is
  subtracted from the reward of every step the computation continues (:meth:`Halting.ponder_cost`);
- **differentiable** (:func:`halting_distribution`, :func:`expected_loss`, :func:`kl_to_geometric`):
  PonderNet (Banino et al. 2021, eqs. 2–6): p_n = λ_n ∏_{j<n} (1 − λ_j), the loss
  Σ_n p_n L_n + β·KL(p ‖ Geometric(λ_p));
- **supervised** (:func:`supervised_loss`): binary cross-entropy on termination bits from traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class HaltDecision:
    halt: torch.Tensor
    """bool [N]: the run stops after this step (by choice or by the cap)."""
    forced: torch.Tensor
    """bool [N]: stopped by the step cap although the module chose to continue."""
    log_prob: torch.Tensor
    """float [N]: log-probability of the module's own choice (stop or continue)."""
    prob: torch.Tensor
    """float [N]: λ_t, the probability of stopping at this step."""


class Halting:
    """Stop decisions with a step cap; see the module docstring.

    ``max_steps``: the cap (None: no cap). ``ponder_cost``: τ, the reward cost of each step taken
    without stopping (0: none).
    """

    def __init__(self, max_steps: int | None = None, ponder_cost: float = 0.0):
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
        self.max_steps = max_steps
        self.ponder_cost_per_step = ponder_cost

    def at_cap(self, steps_taken: torch.Tensor) -> torch.Tensor:
        """bool [N]: this step (the ``steps_taken + 1``-th of the run) is the last one allowed."""
        if self.max_steps is None:
            return torch.zeros_like(steps_taken, dtype=torch.bool)
        return steps_taken + 1 >= self.max_steps

    def apply_cap(self, chosen: torch.Tensor, steps_taken: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the module's own stop choice (e.g. its STOP action) to ``(halt, forced)``."""
        cap = self.at_cap(steps_taken)
        return chosen | cap, cap & ~chosen

    def sample(
        self, halt_logit: torch.Tensor, steps_taken: torch.Tensor, deterministic: bool = False
    ) -> HaltDecision:
        """Sample a sigmoid stop decision λ_t = σ(logit), then apply the cap."""
        prob = torch.sigmoid(halt_logit)
        chosen = prob > 0.5 if deterministic else torch.rand_like(prob) < prob
        halt, forced = self.apply_cap(chosen, steps_taken)
        return HaltDecision(halt, forced, bernoulli_log_prob(halt_logit, chosen), prob)

    def ponder_cost(self, continued: torch.Tensor) -> torch.Tensor:
        """Reward to add at a step: −τ where the computation continued past it."""
        return -self.ponder_cost_per_step * continued.float()


def bernoulli_log_prob(logit: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
    """log σ(logit) where ``bit`` else log(1 − σ(logit)), computed stably."""
    return torch.where(bit, F.logsigmoid(logit), F.logsigmoid(-logit))


def halting_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    """PonderNet eq. 3: p_n = λ_n ∏_{j<n} (1 − λ_j) over the last dimension (N steps); the last
    step takes all remaining mass (the cap forces the stop), so each row sums to 1."""
    lambdas = torch.cat([lambdas[..., :-1], torch.ones_like(lambdas[..., -1:])], dim=-1)
    survive = torch.cumprod(1 - lambdas, dim=-1)
    before = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)
    return lambdas * before


def expected_loss(p: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """PonderNet eq. 5's reconstruction term: E_{n∼p}[L_n] = Σ_n p_n L_n, averaged over the batch."""
    return (p * losses).sum(-1).mean()


def geometric_prior(lambda_p: float, num_steps: int, device=None) -> torch.Tensor:
    """Geometric(λ_p) truncated at ``num_steps`` and renormalised: p_G(n) ∝ λ_p (1 − λ_p)^(n−1)."""
    n = torch.arange(num_steps, device=device, dtype=torch.float32)
    prior = lambda_p * (1 - lambda_p) ** n
    return prior / prior.sum()


def kl_to_geometric(p: torch.Tensor, lambda_p: float) -> torch.Tensor:
    """PonderNet eq. 6's regulariser KL(p ‖ p_G), averaged over the batch."""
    prior = geometric_prior(lambda_p, p.shape[-1], p.device)
    return (p * (torch.log(p.clamp_min(1e-12)) - torch.log(prior))).sum(-1).mean()


def expected_steps(p: torch.Tensor) -> torch.Tensor:
    """E[n] under the halting distribution (1-based), per row."""
    n = torch.arange(1, p.shape[-1] + 1, device=p.device, dtype=p.dtype)
    return (p * n).sum(-1)


def supervised_loss(halt_logit: torch.Tensor, bits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of halting logits against termination bits from traces (masked mean)."""
    loss = F.binary_cross_entropy_with_logits(halt_logit, bits.float(), reduction="none")
    if mask is None:
        return loss.mean()
    mask = mask.float()
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)

