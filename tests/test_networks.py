"""Networks: the tabulated actor-critic (run once per possible Discrete observation, rows looked up)
is the same function with the same gradients as running the networks on every sample."""

from __future__ import annotations

import copy

import gymnasium as gym
import torch

from modrl.networks import ActorCritic


def test_tabulated_actor_critic_matches_per_sample():
    torch.manual_seed(0)
    obs_space, act_space = gym.spaces.Discrete(13), gym.spaces.Discrete(4)
    tab = ActorCritic(obs_space, act_space, hidden=16, tabulate=True)
    plain = copy.deepcopy(tab)
    plain.table_size = 0
    obs = torch.randint(0, 13, (200,))
    obs[:3] = torch.tensor([4, 4, 4])  # repeated rows: their gradients must add up
    weights = torch.randn(200, 4)
    outs = []
    for net in (tab, plain):
        loss = (net.logits(obs) * weights).sum() + net.value(obs).pow(2).sum()
        net.zero_grad()
        loss.backward()
        outs.append((net.logits(obs).detach(), net.value(obs).detach(), [p.grad.clone() for p in net.parameters()]))
    (l1, v1, g1), (l2, v2, g2) = outs
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(v1, v2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # a batch smaller than the table falls back to the per-sample networks
    small = obs[:5]
    torch.testing.assert_close(tab.logits(small), plain.logits(small))
