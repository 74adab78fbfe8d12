"""Halting: the cap, sampled decisions, PonderNet's expected loss against Monte Carlo, supervision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from modrl.halting import (
    Halting,
    bernoulli_log_prob,
    expected_loss,
    expected_steps,
    geometric_prior,
    halting_distribution,
    kl_to_geometric,
    supervised_loss,
)


def test_forced_halting_at_the_cap_is_flagged():
    h = Halting(max_steps=3)
    steps = torch.tensor([0, 1, 2, 2, 7])
    chosen = torch.tensor([False, False, False, True, False])
    halt, forced = h.apply_cap(chosen, steps)
    assert halt.tolist() == [False, False, True, True, True]
    assert forced.tolist() == [False, False, True, False, True]  # a chosen stop at the cap is not forced
    halt, forced = Halting().apply_cap(chosen, steps)  # no cap
    assert halt.tolist() == chosen.tolist() and not forced.any()
    with pytest.raises(ValueError):
        Halting(max_steps=0)


def test_sampled_decisions_and_their_log_probs():
    torch.manual_seed(0)
    h = Halting(max_steps=100)
    logit = torch.full((20000,), 0.5)
    d = h.sample(logit, torch.zeros(20000, dtype=torch.long))
    assert abs(d.halt.float().mean().item() - torch.sigmoid(torch.tensor(0.5)).item()) < 0.02
    expected = torch.where(d.halt, F.logsigmoid(logit), F.logsigmoid(-logit))
    torch.testing.assert_close(d.log_prob, expected)
    assert not d.forced.any()
    det = h.sample(torch.tensor([-1.0, 1.0]), torch.zeros(2, dtype=torch.long), deterministic=True)
    assert det.halt.tolist() == [False, True]
    torch.testing.assert_close(bernoulli_log_prob(torch.tensor([0.0]), torch.tensor([True])), torch.tensor([math.log(0.5)]))


def test_ponder_cost():
    h = Halting(ponder_cost=0.01)
    torch.testing.assert_close(h.ponder_cost(torch.tensor([True, False])), torch.tensor([-0.01, 0.0]))


def test_halting_distribution_sums_to_one_and_forces_the_last_step():
    lambdas = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 0.3, 0.2]])
    p = halting_distribution(lambdas)
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    torch.testing.assert_close(p[0], torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(p[1], torch.tensor([0.0, 0.0, 1.0]))  # never halts: the cap takes it all
    torch.testing.assert_close(p[2], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(expected_steps(p[:1]), torch.tensor([1.75]))


def test_differentiable_expected_loss_matches_monte_carlo():
    torch.manual_seed(1)
    B, N, trials = 4, 6, 200_000
    lambdas = torch.rand(B, N) * 0.6 + 0.1
    losses = torch.rand(B, N) * 3
    p = halting_distribution(lambdas)
    # Monte Carlo: run each computation, halting at step n with probability λ_n (forced at N).
    halted_at = torch.full((trials, B), N - 1)
    alive = torch.ones(trials, B, dtype=torch.bool)
    for n in range(N - 1):
        stop = alive & (torch.rand(trials, B) < lambdas[:, n])
        halted_at[stop] = n
        alive &= ~stop
    mc = losses.gather(1, halted_at.T).mean(1)  # [B]
    exact = (p * losses).sum(-1)
    stderr = losses.gather(1, halted_at.T).std(1) / math.sqrt(trials)
    assert ((mc - exact).abs() < 4 * stderr + 1e-6).all(), (mc, exact)
    torch.testing.assert_close(expected_loss(p, losses), exact.mean())


def test_kl_to_geometric_prior():
    prior = geometric_prior(0.3, 5)
    torch.testing.assert_close(prior.sum(), torch.tensor(1.0))
    assert kl_to_geometric(prior.unsqueeze(0), 0.3).abs() < 1e-6
    assert kl_to_geometric(torch.tensor([[1.0, 0, 0, 0, 0]]), 0.3) > 0.1
    # the regulariser is differentiable through the halting probabilities
    lam = torch.full((2, 5), 0.5, requires_grad=True)
    kl_to_geometric(halting_distribution(lam), 0.3).backward()
    assert lam.grad is not None and torch.isfinite(lam.grad).all()


def test_supervised_loss_is_masked_bce():
    logits = torch.tensor([2.0, -1.0, 0.5])
    bits = torch.tensor([1, 0, 1])
    torch.testing.assert_close(supervised_loss(logits, bits), F.binary_cross_entropy_with_logits(logits, bits.float()))
    mask = torch.tensor([True, False, True])
    expected = F.binary_cross_entropy_with_logits(logits[mask], bits[mask].float())
    torch.testing.assert_close(supervised_loss(logits, bits, mask), expected)
