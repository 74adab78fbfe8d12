"""Call-and-return control of modules over a batch of environments (DESIGN.md, "call and return").

A router *calls* a module for an env; the module acts at every step until it halts (its own
STOP/termination, or the step cap), then control *returns* to the router, which decides again.
The same mechanism runs options (Bacon et al. 2017), sketch sub-policies (Andreas et al. 2017) and
routed computations (Rosenbaum et al. 2018).

:class:`CallAndReturn` holds, for N envs at once, each env's active module, the steps taken inside
it and whether it needs a decision. Decisions are written only for the envs that need one (episode
start, or the previous module stopped), with masked writes — never a Python loop over envs. For the
router's learner it emits, at every step, the SMDP transitions of the module runs that ended
(Sutton, Precup & Singh 1999): the choice, the reward discounted over the run
Σ_{k<d} γ^k r_{t0+k}, the duration d, and whether the stop was forced or the episode ended.

It works with ``SAME_STEP`` autoreset: an env whose episode ended at step t needs a decision at
t + 1, on the first observation of its next episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modrl.halting import Halting


@dataclass
class SMDPTransition:
    """The module runs that ended at this step; every field is valid where ``completed``."""

    completed: torch.Tensor  # bool [N]
    choice: torch.Tensor  # long [N]: the module that ran
    reward: torch.Tensor  # float [N]: Σ_{k<d} γ^k r over the run
    duration: torch.Tensor  # long [N]: d, steps the module ran
    decision_step: torch.Tensor  # long [N]: controller step at which the module was chosen
    forced: torch.Tensor  # bool [N]: stopped by the step cap, not by its own choice
    terminated: torch.Tensor  # bool [N]: the episode terminated (no bootstrap after the run)
    truncated: torch.Tensor  # bool [N]: the episode was truncated (bootstrap)


class CallAndReturn:
    """Batched call-and-return controller; see the module docstring."""

    def __init__(self, num_envs: int, halting: Halting | None = None, gamma: float = 0.99, device=None):
        self.num_envs = num_envs
        self.halting = halting or Halting()
        self.gamma = gamma
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        n, dev = num_envs, self.device
        self.active = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.steps_in_module = torch.zeros(n, dtype=torch.long, device=dev)
        self.needs_decision = torch.ones(n, dtype=torch.bool, device=dev)
        self.decision_step = torch.zeros(n, dtype=torch.long, device=dev)
        self._run_reward = torch.zeros(n, device=dev)
        self._run_discount = torch.ones(n, device=dev)
        self.t = torch.zeros((), dtype=torch.long, device=dev)  # a tensor: a captured tick advances it too

    def decide(self, choice: torch.Tensor) -> torch.Tensor:
        """Write ``choice`` for the envs that need a decision; return that mask (for the learner)."""
        need = self.needs_decision
        self.active = torch.where(need, choice.long(), self.active)
        self.steps_in_module = torch.where(need, 0, self.steps_in_module)
        self.decision_step = torch.where(need, self.t, self.decision_step)
        self._run_reward = torch.where(need, 0.0, self._run_reward)
        self._run_discount = torch.where(need, 1.0, self._run_discount)
        self.needs_decision = torch.zeros_like(need)
        return need

    def step(
        self, chosen_stop: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor
    ) -> tuple[SMDPTransition, torch.Tensor, torch.Tensor]:
        """Account one env step: ``chosen_stop`` is each active module's own stop decision at this
        step (STOP action or sampled β). Return ``(transition, halt, forced)``: the runs that
        ended, and which modules halted (forced: by the cap)."""
        halt, forced = self.halting.apply_cap(chosen_stop, self.steps_in_module)
        self._run_reward = self._run_reward + self._run_discount * reward
        self._run_discount = self._run_discount * self.gamma
        self.steps_in_module = self.steps_in_module + 1
        done = terminated | truncated
        completed = halt | done
        transition = SMDPTransition(
            completed=completed,
            choice=self.active.clone(),
            reward=self._run_reward.clone(),
            duration=self.steps_in_module.clone(),
            decision_step=self.decision_step.clone(),
            forced=forced & completed,
            terminated=terminated & completed,
            truncated=truncated & completed,
        )
        self.needs_decision = completed
        self.t += 1  # in place
        return transition, halt, forced

    def state_dict(self) -> dict:
        return {
            "active": self.active.clone(),
            "steps_in_module": self.steps_in_module.clone(),
            "needs_decision": self.needs_decision.clone(),
            "decision_step": self.decision_step.clone(),
            "run_reward": self._run_reward.clone(),
            "run_discount": self._run_discount.clone(),
            "t": int(self.t),
        }

    def load_state_dict(self, state: dict) -> None:
        self.active = state["active"].to(self.device)
        self.steps_in_module = state["steps_in_module"].to(self.device)
        self.needs_decision = state["needs_decision"].to(self.device)
        self.decision_step = state["decision_step"].to(self.device)
        self._run_reward = state["run_reward"].to(self.device)
        self._run_discount = state["run_discount"].to(self.device)
        self.t = torch.tensor(int(state["t"]), device=self.device)
