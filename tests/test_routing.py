"""Routers: REINFORCE through a router is unbiased; a learned router finds the task → module table;
fixed, sketch, soft, top-k and skill-allocation routing semantics."""

from __future__ import annotations

import math

import pytest
import torch

from modrl.inventory import StackedMLP
from modrl.routing import (
    CategoricalRouter,
    FixedRouter,
    SketchRouter,
    SkillAllocation,
    SoftRouter,
    mixture,
    param_groups,
)

REWARD = torch.tensor([1.0, 0.2, -0.5, 0.7, 0.0])


@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_reinforce_router_gradient_is_unbiased_on_a_bandit(epsilon):
    torch.manual_seed(0)
    router = CategoricalRouter(4, num_tasks=1, halt=True, hidden=0, epsilon=epsilon)  # tabular, 5 choices
    with torch.no_grad():
        router.table.normal_()
    n = 400_000
    task = torch.zeros(n, dtype=torch.long)
    route = router.route(task=task)
    per_sample = REWARD[route.choice] * route.log_prob  # score-function estimator of ∇E[r]
    estimate = torch.autograd.grad(per_sample.mean(), router.table)[0][0, 0]
    # Exact gradient of the expected reward under the behaviour policy (1−ε)π + ε·uniform.
    logits = router.table[0, 0]
    behaviour = (1 - epsilon) * logits.softmax(-1) + epsilon / 5
    exact = torch.autograd.grad((behaviour * REWARD).sum(), router.table)[0][0, 0]
    # per-coordinate standard error of the estimator
    grads = REWARD[route.choice, None] * (torch.nn.functional.one_hot(route.choice, 5) - logits.softmax(-1))
    stderr = ((1 - epsilon) * grads).std(0) / math.sqrt(n) if epsilon else grads.std(0) / math.sqrt(n)
    assert ((estimate - exact).abs() < 5 * stderr + 1e-4).all(), (estimate, exact, stderr)


@pytest.mark.parametrize("hidden", [0, 32], ids=["tabular", "mlp"])
def test_learned_router_finds_the_task_module_table(hidden):
    torch.manual_seed(0)
    target = torch.tensor([3, 0, 4, 1, 3])
    router = CategoricalRouter(5, num_tasks=5, halt=True, hidden=hidden)
    opt = torch.optim.Adam(router.parameters(), lr=0.1 if hidden == 0 else 0.02)
    for _ in range(150):
        task = torch.randint(0, 5, (256,))
        route = router.route(task=task)
        reward = (route.choice == target[task]).float()
        loss = -((reward - reward.mean()) * route.log_prob).mean() - 0.001 * route.entropy.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    greedy = router.route(task=torch.arange(5), deterministic=True).choice
    assert greedy.tolist() == target.tolist()


def test_router_inputs_valid_masks_and_evaluate():
    router = CategoricalRouter(3, obs_dim=6, num_tasks=2, hidden_dim=4, max_depth=3, halt=True, hidden=16)
    state = torch.randn(8, 10)
    task, depth = torch.randint(0, 2, (8,)), torch.randint(0, 3, (8,))
    valid = torch.ones(8, 4, dtype=torch.bool)
    valid[:, 3] = False  # HALT not allowed here
    route = router.route(state, task, depth, valid=valid)
    assert (route.choice < 3).all() and router.halt_index == 3
    log_prob, entropy = router.evaluate(state, task, route.choice, depth, valid=valid)
    torch.testing.assert_close(log_prob, route.log_prob)
    torch.testing.assert_close(entropy, torch.full((8,), math.log(3)))  # zero-initialised head: uniform
    with pytest.raises(ValueError):
        CategoricalRouter(3)  # no inputs


def test_fixed_router_table():
    router = FixedRouter([2, 0, 1])
    assert router.route(task=torch.tensor([0, 2, 1, 0])).choice.tolist() == [2, 1, 0, 2]
    multi = FixedRouter([[0, 1], [2, 3]])
    assert multi.route(task=torch.tensor([1])).choice.tolist() == [[2, 3]]


def test_sketch_router_pointer_advance_and_end():
    router = SketchRouter([[0, 1, 2], [2], [1, 1]], num_envs=3, num_modules=3)
    router.start(torch.ones(3, dtype=torch.bool), torch.tensor([0, 1, 2]))
    assert router.route().choice.tolist() == [0, 2, 1]
    assert router.advance(torch.tensor([True, False, True])).tolist() == [False, False, False]
    assert router.route().choice.tolist() == [1, 2, 1]
    assert router.advance(torch.tensor([True, True, True])).tolist() == [False, True, True]
    assert router.route().choice.tolist() == [2, 3, 3]  # exhausted sketches route to HALT (= 3)
    router.start(torch.tensor([False, True, False]), torch.tensor([0, 0, 0]))  # env 1 restarts on task 0
    assert router.route().choice.tolist() == [2, 0, 3]
    assert router.exhausted().tolist() == [False, False, True]
    with pytest.raises(ValueError):
        SketchRouter([[0, 5]], num_envs=1, num_modules=3)


def test_soft_and_top_k_mixtures():
    torch.manual_seed(0)
    inv = StackedMLP(4, 6, 3, hidden=8, num_layers=2)
    x = torch.randn(10, 6)
    soft = SoftRouter(6, 4)
    weights, aux = soft(x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    dense = mixture(inv, x, weights)
    manual = sum(weights[:, m : m + 1] * inv(x, torch.full((10,), m)) for m in range(4))
    torch.testing.assert_close(dense, manual, rtol=1e-5, atol=1e-5)
    top2 = SoftRouter(6, 4, top_k=2)
    top2.load_state_dict(soft.state_dict())
    w2, _ = top2(x)
    assert ((w2 > 0).sum(-1) == 2).all()
    torch.testing.assert_close(w2.sum(-1), torch.ones(10))
    torch.testing.assert_close(mixture(inv, x, w2, top_k=2), mixture(inv, x, w2), rtol=1e-5, atol=1e-5)
    # load balancing: uniform probabilities with balanced top choices give the minimum, 1
    with torch.no_grad():
        soft.gate.weight.zero_()
        soft.gate.bias.zero_()
    _, aux_uniform = soft(x)
    assert aux_uniform.item() == pytest.approx(1.0)


def test_skill_allocation_averages_parameters_or_outputs():
    torch.manual_seed(0)
    inv = StackedMLP(3, 5, 2, hidden=8, num_layers=2)
    alloc = SkillAllocation(num_tasks=2, num_skills=3).eval()
    with torch.no_grad():
        alloc.logits.copy_(torch.tensor([[20.0, -20.0, -20.0], [20.0, -20.0, 20.0]]))
    x = torch.randn(6, 5)
    task = torch.tensor([0, 1, 0, 1, 0, 1])
    # task 0 uses skill 0 only: its combined module is module 0
    out = alloc.combine_parameters(inv, x, task)
    torch.testing.assert_close(out[task == 0], inv(x[task == 0], torch.zeros(3, dtype=torch.long)), rtol=1e-4, atol=1e-4)
    # task 1 averages skills 0 and 2: parameter average for combine_parameters, output average for combine_outputs
    both = alloc.combine_outputs(inv, x, task)
    mean_out = 0.5 * (inv(x, torch.zeros(6, dtype=torch.long)) + inv(x, torch.full((6,), 2)))
    torch.testing.assert_close(both[task == 1], mean_out[task == 1], rtol=1e-4, atol=1e-4)
    (w0, b0), (w1, b1) = inv.parameters_by_layer()
    avg = StackedMLP(1, 5, 2, hidden=8, num_layers=2)
    with torch.no_grad():
        for p, (w, b) in zip(avg.parameters_by_layer(), inv.parameters_by_layer()):
            p[0].copy_(0.5 * (w[0] + w[2]).unsqueeze(0))
            p[1].copy_(0.5 * (b[0] + b[2]).unsqueeze(0))
    torch.testing.assert_close(out[task == 1], avg(x[task == 1], torch.zeros(3, dtype=torch.long)), rtol=1e-4, atol=1e-4)
    # training mode samples a relaxed allocation in (0, 1) and is differentiable
    fresh = SkillAllocation(num_tasks=2, num_skills=3).train()
    a = fresh(task)
    assert ((a > 0) & (a < 1)).all()
    a.sum().backward()
    assert fresh.logits.grad is not None


def test_param_groups_give_routers_their_own_rate():
    model = torch.nn.ModuleDict({"inv": StackedMLP(2, 3, 3), "router": CategoricalRouter(2, num_tasks=2, hidden=8)})
    groups = param_groups(model, lr=1e-3, router_lr=3e-4)
    assert [g["lr"] for g in groups] == [1e-3, 3e-4]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for p in model["router"].parameters())
