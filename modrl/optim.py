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

``RunAdam`` is torch's Adam for parameters that stack R independent runs along dim 0 (the
sketch agent's ``num_runs``): one step count per run, so that one run's optimiser can be
restarted (``restart(run)``: its moments and step count start again) without touching the others.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam


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


class RunAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015, Alg. 1; torch's update) with one step count per run: every parameter's
    dim 0 stacks ``num_runs`` runs' slices, run-major (run r owns rows [r·k, (r+1)·k))."""

    def __init__(self, params: Iterable, num_runs: int, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"RunAdam: invalid lr={lr}, betas={betas} or eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, num_runs=num_runs))
        for group in self.param_groups:
            for p in group["params"]:
                if p.shape[0] % num_runs:
                    raise ValueError(f"RunAdam: a parameter of shape {tuple(p.shape)} does not stack {num_runs} runs along dim 0")

    @property
    def num_runs(self) -> int:
        return self.defaults["num_runs"]  # in defaults: kept by state_dict, copies and pickling

    @torch.no_grad()
    def step(self, closure=None):
        """torch's Adam (its functional form, fused where the device supports it) on each run's slice
        of every parameter as a tensor of its own, with that run's step count."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        R = self.num_runs
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(R, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                for out, t in ((params, p), (grads, p.grad), (exp_avgs, state["exp_avg"]), (exp_avg_sqs, state["exp_avg_sq"])):
                    out.extend(t.view(R, -1).unbind(0))  # views: the update writes into the stacked tensors
                steps.extend(state["step"].unbind(0))
            if not params:
                continue
            beta1, beta2 = group["betas"]
            kwargs = dict(amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0, eps=group["eps"], maximize=False)
            fused = params[0].device.type in ("cpu", "cuda") and params[0].dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=False, fused=fused, **kwargs)
        return loss

    def restart(self, run: int) -> None:
        """Run ``run``'s moments and step count start again (Adam's bias-corrected first steps)."""
        for state in self.state.values():
            if state:
                state["step"][run] = 0
                state["exp_avg"].view(self.num_runs, -1)[run] = 0
                state["exp_avg_sq"].view(self.num_runs, -1)[run] = 0


def inventory_param_groups(model: torch.nn.Module) -> list[dict]:
    """``model``'s trainable parameters as ModuleAdam groups: those of its stacked inventories
    (every ``StackedMLP``: policy inventories, value heads, routers) with ``stacked=True``."""
    from modrl.inventory import StackedMLP

    stacked = {id(p) for m in model.modules() if isinstance(m, StackedMLP) for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in stacked], "stacked": True},
              {"params": [p for p in params if id(p) not in stacked], "stacked": False}]
    return [g for g in groups if g["params"]]
