"""The sketch-length curriculum of policy sketches (Andreas, Klein & Levine 2017, §3.3, Algorithm 2).

Training starts on the tasks whose sketches are shortest and unlocks longer ones as the short ones
are learned:

- the allowed tasks are the split's tasks with sketch length ≤ ℓ_max (ℓ_max starts at the shortest
  length the split has: Craft has no length-1 task);
- a round is ``updates_per_round`` updates; it counts each allowed task's successes and episodes;
- at a round's end, if every allowed task that was sampled succeeded more often than
  ``promote_threshold`` (0.8) and a longer sketch exists, ℓ_max rises to the next length the split
  has and the new level's first round samples its tasks uniformly; otherwise the next round samples
  them ∝ 1 − success + 0.01.

:class:`LengthCurriculum` keeps this for R independent runs sharing one batched env (``num_runs``;
row i is run i mod R, each run samples its tasks as env task group r). It sets the env's task
distribution itself; what else a promotion changes (the agent's milestone checkpoints, entropy
coefficients, optimiser restarts) is the caller's, on :meth:`end_update` returning True.
"""

from __future__ import annotations

from typing import Any

import torch


class LengthCurriculum:
    """``allowed`` [R, tasks] bool, ``max_length`` (ℓ_max per run), ``round_updates`` (per run),
    ``success`` [R, 2, tasks] float64 (the current round's successes and episodes per task) and
    ``last_success`` (per run: each task's success over the last round that ended, NaN where it was
    not sampled; None before the first). ``enabled=False``: every split task from the start, ℓ_max
    the longest sketch; rounds then only delimit the statistics."""

    def __init__(self, env, runs: int = 1, *, enabled: bool = True, updates_per_round: int = 500,
                 promote_threshold: float = 0.8):
        self.env, self.runs, self.enabled = env, runs, enabled
        self.updates_per_round, self.promote_threshold = updates_per_round, promote_threshold
        tasks, dev = len(env.task_names), env.device
        self.split = (env.task_weights if runs == 1 else env.task_weights[0]) > 0  # the split's tasks
        self.longest = int(env.sketch_lengths[self.split].max())
        self.allowed = torch.ones(runs, tasks, dtype=torch.bool, device=dev)
        self.max_length = [0 if enabled else int(env.sketch_lengths.max())] * runs
        self.round_updates = [0] * runs
        self.success = torch.zeros(runs, 2, tasks, dtype=torch.float64, device=dev)
        self.last_success: list[torch.Tensor | None] = [None] * runs
        if enabled:
            for r in range(runs):
                self.promote(r)

    def _set_tasks(self, run: int, weights: torch.Tensor) -> None:
        """Run ``run``'s next episodes sample their tasks ∝ ``weights``."""
        if self.runs == 1:
            self.env.set_task_distribution(weights)
        else:
            self.env.set_task_distribution(weights, group=run)

    def promote(self, run: int = 0) -> int:
        """Raise run ``run``'s ℓ_max to the next length some split task has, allow those tasks
        (sampled uniformly) and restart the round; returns the new ℓ_max."""
        lengths = self.env.sketch_lengths
        length = self.max_length[run] + 1
        while not bool((self.split & (lengths <= length)).any()):
            length += 1
        self.max_length[run] = length
        self.allowed[run] = self.split & (lengths <= length)
        self._set_tasks(run, self.allowed[run].float())
        self.round_updates[run] = 0
        self.success[run].zero_()
        return length

    def count(self, task: torch.Tensor, ended: torch.Tensor, success: torch.Tensor,
              run_of_row: torch.Tensor | None = None) -> None:
        """Add the episodes that ended (``ended`` [n] bool, each with its ``task`` and ``success``)
        to their runs' rounds (``run_of_row``: each row's run; None: run 0). Tensor code only: it
        runs inside the captured rollout."""
        if run_of_row is None:
            self.success[0, 0].index_add_(0, task, (ended & success).double())
            self.success[0, 1].index_add_(0, task, ended.double())
        else:  # success[run of the row, successes | episodes, task]
            tasks = self.success.shape[-1]
            at = run_of_row * (2 * tasks) + task
            self.success.view(-1).index_add_(0, at, (ended & success).double())
            self.success.view(-1).index_add_(0, at + tasks, ended.double())

    def end_update(self, run: int = 0) -> bool:
        """One update of run ``run`` is done; at the end of its round, promote or re-weight the tasks
        (the module docstring). True when ℓ_max rose."""
        self.round_updates[run] += 1
        if self.round_updates[run] < self.updates_per_round:
            return False
        successes, episodes = self.success[run]
        if self.enabled:
            rate = torch.where(episodes > 0, successes / episodes.clamp_min(1), 0.0)
            self.last_success[run] = torch.where(episodes > 0, rate, float("nan"))
            current = self.allowed[run] & (episodes > 0)
            if (bool(current.any()) and float(rate[current].min()) > self.promote_threshold
                    and self.max_length[run] < self.longest):
                self.promote(run)
                return True
            self._set_tasks(run, torch.where(self.allowed[run], (1 - rate) + 0.01, 0.0).float())
        self.round_updates[run] = 0
        self.success[run].zero_()
        return False

    def entering(self, run: int, num_symbols: int, *, first_level: bool = False) -> torch.Tensor:
        """Bool per symbol: used by run ``run``'s current level's sketches and by no shorter allowed
        one (the modules this level brings in). At the first level, where none is trained yet: all
        False, or with ``first_level`` every symbol the level uses."""
        lengths, sketches = self.env.sketch_lengths, self.env.sketches
        allowed, dev = self.allowed[run], self.allowed.device

        def used(tasks: torch.Tensor) -> torch.Tensor:
            symbols = sketches[tasks].flatten()  # padded with −1
            return torch.zeros(num_symbols, dtype=torch.bool, device=dev).index_fill_(0, symbols[symbols >= 0], True)

        earlier = allowed & (lengths < self.max_length[run])
        if not bool(earlier.any()):
            return used(allowed) if first_level else torch.zeros(num_symbols, dtype=torch.bool, device=dev)
        return used(allowed) & ~used(earlier)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """With one run each entry is that run's (``max_length`` an int, ``round_success`` [2, tasks],
        ``allowed_tasks`` [tasks]); with R > 1, one per run (lists, tensors with a leading run dim)."""
        one = self.runs == 1
        return {
            "max_length": self.max_length[0] if one else list(self.max_length),
            "round_updates": self.round_updates[0] if one else list(self.round_updates),
            "round_success": (self.success[0] if one else self.success).clone(),
            "allowed_tasks": (self.allowed[0] if one else self.allowed).clone(),
        }

    def run_state_dict(self, run: int) -> dict[str, Any]:
        """Run ``run``'s entries as a one-run curriculum's :meth:`state_dict`."""
        return {"max_length": self.max_length[run], "round_updates": self.round_updates[run],
                "round_success": self.success[run].clone(), "allowed_tasks": self.allowed[run].clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The entries of :meth:`state_dict` (the env's task weights are restored by the caller)."""
        R, dev = self.runs, self.allowed.device
        per_run = (lambda v: [int(x) for x in v]) if R > 1 else (lambda v: [int(v)])
        self.max_length = per_run(state["max_length"])
        self.round_updates = per_run(state["round_updates"])
        self.success = state["round_success"].to(dev).view(R, 2, -1).clone()
        self.allowed = state["allowed_tasks"].to(dev).view(R, -1).clone()
