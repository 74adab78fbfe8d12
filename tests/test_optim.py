"""ModuleAdam: a stacked tensor behaves like one torch Adam per module (slice along dim 0)."""

import copy

import pytest
import torch

from modrl.inventory import StackedMLP, ValueHeads
from modrl.optim import ModuleAdam, inventory_param_groups


def _schedule(steps: int, modules: int, seed: int = 0) -> list[torch.Tensor]:
    """Per step, which modules get a gradient: module 2 only from step 6 on, module 1 stops at 4."""
    g = torch.Generator().manual_seed(seed)
    used = []
    for t in range(steps):
        u = torch.rand(modules, generator=g) < 0.7
        u[2] = t >= 6
        u[1] = u[1] & (t < 4)
        used.append(u)
    return used


def test_stacked_tensor_matches_one_torch_adam_per_module():
    torch.manual_seed(0)
    modules, steps, lr = 4, 20, 1e-2
    stacked = torch.nn.Parameter(torch.randn(modules, 3, 5))
    separate = [torch.nn.Parameter(stacked.detach()[k].clone()) for k in range(modules)]
    ours = ModuleAdam([{"params": [stacked], "stacked": True}], lr=lr)
    reference = [torch.optim.Adam([p], lr=lr) for p in separate]
    g = torch.Generator().manual_seed(1)
    for used in _schedule(steps, modules):
        grads = torch.randn(modules, 3, 5, generator=g)
        stacked.grad = grads * used[:, None, None]  # unused modules: a zero slice, as a grouped matmul gives
        ours.step()
        for k in range(modules):
            separate[k].grad = grads[k].clone() if used[k] else None  # unused: no gradient at all
            reference[k].step()
    for k in range(modules):
        torch.testing.assert_close(stacked.detach()[k], separate[k].detach(), rtol=1e-5, atol=1e-6)


def test_torch_adam_on_a_stack_differs_where_modules_are_unused():
    torch.manual_seed(0)
    modules, lr = 4, 1e-2
    init = torch.randn(modules, 3, 5)
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours, plain = ModuleAdam([{"params": [a], "stacked": True}], lr=lr), torch.optim.Adam([b], lr=lr)
    g = torch.Generator().manual_seed(1)
    for used in _schedule(20, modules):
        grads = torch.randn(modules, 3, 5, generator=g) * used[:, None, None]
        a.grad, b.grad = grads.clone(), grads.clone()
        ours.step()
        plain.step()
    # module 1 (unused after step 4) drifts on its first moment under torch's Adam, not under ours
    assert not torch.allclose(a.detach()[1], b.detach()[1])
    # module 2 (first used at step 6): its first step under ours is lr per coordinate, as for a fresh Adam
    x = torch.nn.Parameter(torch.zeros(3, 1, 2))
    opt = ModuleAdam([{"params": [x], "stacked": True}], lr=lr)
    for t in range(1000):  # module 0 alone for 1,000 steps, then module 2 appears
        x.grad = torch.zeros_like(x)
        x.grad[0] = 0.1
        if t == 999:
            x.grad[2] = 0.1
        opt.step()
    assert float(x.detach()[2].abs().max()) == pytest.approx(lr, rel=1e-4)
    assert float(x.detach()[1].abs().max()) == 0.0  # never used, never moved


def test_unstacked_group_is_torch_adam_and_state_round_trips():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 2))
    b = torch.nn.Parameter(a.detach().clone())
    ours, plain = ModuleAdam([a], lr=3e-3), torch.optim.Adam([b], lr=3e-3)
    for _ in range(5):
        grad = torch.randn(6, 2)
        grad[1] = 0  # not stacked: a zero row is still stepped, as in torch's Adam
        a.grad, b.grad = grad.clone(), grad.clone()
        ours.step()
        plain.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    # a checkpointed state continues identically
    c = torch.nn.Parameter(a.detach().clone())
    resumed = ModuleAdam([c], lr=3e-3)
    resumed.load_state_dict(copy.deepcopy(ours.state_dict()))  # as a checkpoint would
    grad = torch.randn(6, 2)
    a.grad, c.grad = grad.clone(), grad.clone()
    ours.step()
    resumed.step()
    assert torch.equal(a.detach(), c.detach())


def test_inventory_param_groups_mark_stacked_modules():
    model = torch.nn.ModuleDict({"inv": StackedMLP(3, 4, 2, 8, 2), "critic": ValueHeads(5, 4), "extra": torch.nn.Linear(4, 1)})
    groups = inventory_param_groups(model)
    stacked = next(g for g in groups if g["stacked"])
    assert {id(p) for p in stacked["params"]} == {id(p) for n, p in model.named_parameters() if not n.startswith("extra")}
    assert {id(p) for p in next(g for g in groups if not g["stacked"])["params"]} == {id(p) for p in model["extra"].parameters()}


def test_invalid_hyper_parameters_are_named():
    with pytest.raises(ValueError, match="lr"):
        ModuleAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
