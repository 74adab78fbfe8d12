"""Adam with one step count and one pair of moments per module of a stacked inventory.

An inventory stores its modules as slices of stacked tensors (``[num_modules, ...]``,
``modrl/inventory.py``) so that they run as one grouped matmul. torch's Adam keeps one step count
per tensor, which makes the stack behave differently from separate modules in two ways:

- a module that receives no gradient for a while still counts steps, so when it is first used its
  moments start at zero under an old step count and the bias correction (Kingma & Ba 2015, Alg. 1,
  m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)) no longer offsets the zero start: its first steps are
  several times the learning rate (measured 2.5–4.8× on the sketch agent, docs/results.md);
- a module that stops being used keeps moving on its decaying first moment.

``ModuleAdam`` restores the semantics of one Adam per module, i.e. of separate parameters whose
gradient is ``None`` while unused: in a tensor marked ``stacked``, a slice (index along dim 0)
whose gradient is all zero this step is left untouched (no step, no moment decay, no update); the
others take Adam's step with their own step count. Tensors not marked ``stacked`` get torch's Adam
exactly. (A used slice whose gradient is exactly zero everywhere counts as unused.)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class ModuleAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with per-slice step counts in param groups with ``stacked=True``.

    ``params``: param groups as for any torch optimiser; a group's ``stacked`` flag (default
    False) says its tensors hold one module per index along dim 0.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, stacked: bool = False):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"ModuleAdam: invalid lr={lr}, betas={betas} or eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, stacked=stacked))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                slices = p.shape[0] if group["stacked"] else 1
                if not state:
                    state["step"] = torch.zeros(slices, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                shape = (slices,) + (1,) * (p.dim() - 1) if group["stacked"] else (1,) * p.dim()
                used = grad.reshape(slices, -1).ne(0).any(1) if group["stacked"] else torch.ones(1, dtype=torch.bool, device=p.device)
                state["step"] += used
                step, mask = state["step"].view(shape), used.view(shape)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.copy_(torch.where(mask, m.lerp(grad, 1 - beta1), m))
                v.copy_(torch.where(mask, v.mul(beta2).addcmul_(grad, grad, value=1 - beta2), v))
                t = step.clamp(min=1)  # unused slices never stepped: any positive t, masked below
                bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                # torch's Adam: p −= lr / bias1 · m / (√v / √bias2 + eps)
                update = m / bias1 / (v.sqrt() / bias2.sqrt() + group["eps"])
                p.sub_(torch.where(mask, update, torch.zeros((), device=p.device)) * group["lr"])
        return loss


def inventory_param_groups(model: torch.nn.Module) -> list[dict]:
    """``model``'s trainable parameters as ModuleAdam groups: those of its stacked inventories
    (every ``StackedMLP``: policy inventories, value heads, routers) with ``stacked=True``."""
    from modrl.inventory import StackedMLP

    stacked = {id(p) for m in model.modules() if isinstance(m, StackedMLP) for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in stacked], "stacked": True},
              {"params": [p for p in params if id(p) not in stacked], "stacked": False}]
    return [g for g in groups if g["params"]]
