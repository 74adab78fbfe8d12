"""Modularity metrics: what makes runs comparable across routers (Pfeiffer et al. 2023, §9's call
for benchmarking routing methods; the option metrics of Harb et al. 2018).

From the (task, module) pairs of routing decisions and the runs the controller completed:

- usage matrix U[t, m] (decisions), as a TensorBoard heatmap image and per-module scalars;
- effective number of modules exp(H(p(m))) (1 = one module used, M = uniform use);
- mutual information I(task; module) in nats (0 = routing ignores the task, log M at most);
- option duration (mean and histogram), termination rate (runs ended per env step), the share of
  forced stops, halting depth;
- per module: mean duration of its runs and the share of its runs that stopped on their first step
  by their own choice (``modules/immediate_stop/<name>``): near 1, the module has become a no-op
  whose work its neighbours in the sequence absorbed (what stalls the Craft curriculum, see
  docs/results.md);
- a module-collapse indicator in [0, 1]: 1 − (effective − 1)/(M − 1), 1 when one module takes
  every decision; and ``router/dominant_share``, the largest module's share.

Counters live on the device; reading them is one host sync (:meth:`ModularityMetrics.summary`).
"""

from __future__ import annotations

import math

import torch

from modrl.controller import SMDPTransition
from modrl.logger import Heatmap, write_heatmap


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of a distribution over the last dimension."""
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def effective_modules(counts: torch.Tensor) -> float:
    """exp(H) of the module marginal of a [T, M] (or [M]) count table."""
    marginal = counts.reshape(-1, counts.shape[-1]).sum(0)
    total = marginal.sum()
    return float(torch.exp(entropy(marginal / total))) if total > 0 else float("nan")


def mutual_information(counts: torch.Tensor) -> float:
    """I(task; module) in nats from a [T, M] table of joint counts."""
    total = counts.sum()
    if total <= 0:
        return float("nan")
    joint = counts / total
    outer = joint.sum(1, keepdim=True) * joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (torch.log(joint[nz]) - torch.log(outer[nz]))).sum())


def collapse(counts: torch.Tensor) -> float:
    """1 when a single module takes every decision, 0 when all M are used equally."""
    m = counts.shape[-1]
    if m < 2:
        return 0.0
    return 1.0 - (effective_modules(counts) - 1.0) / (m - 1.0)


class ModularityMetrics:
    """Accumulates routing and halting statistics between two :meth:`summary` calls."""

    def __init__(self, num_tasks: int, num_modules: int, max_duration: int = 100, device=None, module_names=None):
        self.num_tasks, self.num_modules, self.max_duration = num_tasks, num_modules, max_duration
        self.module_names = list(module_names) if module_names else [str(m) for m in range(num_modules)]
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self.usage = torch.zeros(num_tasks, num_modules, dtype=torch.float64, device=dev)
        self.durations = torch.zeros(max_duration + 1, dtype=torch.float64, device=dev)  # last bin: ≥ max
        self.totals = torch.zeros(5, dtype=torch.float64, device=dev)  # runs, forced, env steps, depth sum, depth count
        self.module_runs = torch.zeros(num_modules, 3, dtype=torch.float64, device=dev)  # runs, steps, immediate stops

    def record_decisions(self, task: torch.Tensor, choice: torch.Tensor, mask: torch.Tensor) -> None:
        """Count the decisions ``choice`` (module indices; HALT and others ≥ M are ignored) where ``mask``."""
        keep = mask & (choice >= 0) & (choice < self.num_modules)
        flat = task.long() * self.num_modules + choice.long().clamp(0, self.num_modules - 1)
        self.usage.view(-1).index_add_(0, flat, keep.double())

    def record_step(self, transition: SMDPTransition) -> None:
        """Count one env step of N envs and the module runs that completed at it."""
        done = transition.completed.double()
        bins = transition.duration.clamp(max=self.max_duration)
        self.durations.index_add_(0, bins, done)
        own = transition.completed & (transition.choice >= 0) & (transition.choice < self.num_modules)
        per_run = torch.stack([own.double(), transition.duration.double() * own,
                               (own & (transition.duration == 1) & ~transition.forced).double()], -1)
        self.module_runs.index_add_(0, transition.choice.clamp(0, self.num_modules - 1), per_run)
        self.totals += torch.stack(
            [done.sum(), (transition.forced.double() * done).sum(), done.new_full((), float(done.numel())),
             done.new_zeros(()), done.new_zeros(())]
        )

    def record_depth(self, depth: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Halting depth of finished routed computations (number of modules applied before HALT)."""
        m = torch.ones_like(depth, dtype=torch.float64) if mask is None else mask.double()
        self.totals[3] += (depth.double() * m).sum()
        self.totals[4] += m.sum()

    def summary(self, reset: bool = True) -> dict:
        """Scalars under DESIGN.md's tags, plus ``usage_matrix`` (row-normalised [T, M] on the CPU)."""
        usage, durations = self.usage.cpu(), self.durations.cpu()
        runs, forced, steps, depth_sum, depth_count = self.totals.tolist()
        out: dict = {}
        total = usage.sum()
        if total > 0:
            marginal = usage.sum(0) / total
            out["router/effective_modules"] = effective_modules(usage)
            out["router/mi_task_module"] = mutual_information(usage)
            out["router/collapse"] = collapse(usage)
            out["router/dominant_share"] = float(marginal.max())
            for m, name in enumerate(self.module_names):
                out[f"modules/usage/{name}"] = float(marginal[m])
        if runs > 0:
            bins = torch.arange(len(durations), dtype=torch.float64)
            out["options/duration"] = float((durations * bins).sum() / runs)
            out["options/forced_stop_rate"] = forced / runs
            out["options/termination_rate"] = runs / steps if steps else float("nan")
        for m, (m_runs, m_steps, m_immediate) in enumerate(self.module_runs.tolist()):
            if m_runs > 0:
                out[f"modules/duration/{self.module_names[m]}"] = m_steps / m_runs
                out[f"modules/immediate_stop/{self.module_names[m]}"] = m_immediate / m_runs
        if depth_count > 0:
            out["halting/depth"] = depth_sum / depth_count
        rows = usage.sum(1, keepdim=True)
        out["usage_matrix"] = torch.where(rows > 0, usage / rows.clamp_min(1e-30), 0.0).float()
        out["duration_histogram"] = durations.float()
        if reset:
            self.usage.zero_()
            self.durations.zero_()
            self.totals.zero_()
            self.module_runs.zero_()
        return out

    def usage_heatmap(self, summary: dict, task_names=None) -> Heatmap:
        """A summary's usage matrix (each task's decisions, as shares over the modules) with its labels."""
        tasks = list(task_names) if task_names is not None else [str(t) for t in range(self.usage.shape[0])]
        return Heatmap(summary["usage_matrix"], tasks, self.module_names, corner="task \\ module")

    def log(self, writer, step: int, summary: dict | None = None) -> dict:
        """Write a summary to a ``SummaryWriter``: scalars, the task × module heatmap, the durations."""
        summary = summary if summary is not None else self.summary()
        for tag, value in summary.items():
            if isinstance(value, float) and math.isfinite(value):
                writer.add_scalar(tag, value, step)
        write_heatmap(writer, "router/usage_matrix", self.usage_heatmap(summary), step)
        hist = summary["duration_histogram"]
        if hist.sum() > 0:
            values = torch.repeat_interleave(torch.arange(len(hist)), hist.long())
            writer.add_histogram("options/duration_hist", values, step)
        return summary


class SubgoalMetrics:
    """Subgoal success: how often a module run does its symbol's job, per symbol and per slot (a
    (task, sketch step)) — the sub-policies of Andreas et al. (2017, §3) each own one subgoal.

    A run of symbol s achieved its subgoal when ``targets[s] · (features at its end − features at
    its start)`` has a positive entry (the env's ``subgoal_targets`` and ``subgoal_features``, e.g.
    Craft's ``get_wood``: wood count rose; ``make1``: one of workshop 1's products rose); symbols
    with no target (``defined`` False) and choices past the symbols (a controller's TERMINATE) are
    not counted. Only each symbol's target features are kept and compared (Craft: at most 3 of 21).
    Each slot serves one symbol (``slot_symbol``), so the per-symbol counts are sums of slots'.
    Counters live on the device and are updated in place (a captured rollout replays them);
    :meth:`summary` reads and resets them.
    """

    def __init__(self, targets: torch.Tensor, defined: torch.Tensor, slot_symbol: torch.Tensor, num_envs: int):
        S, dev = targets.shape[0], targets.device
        width = max(1, int((targets != 0).sum(1).max()))
        index = torch.zeros(S + 1, width, dtype=torch.long)  # row S: the uncounted choices
        sign = torch.zeros(S + 1, width)
        for sym in range(S):
            features = torch.nonzero(targets[sym].cpu()).flatten()
            index[sym, : len(features)] = features
            sign[sym, : len(features)] = targets[sym].cpu()[features]
        self.index, self.sign = index.to(dev), sign.to(dev)
        self.counted = torch.cat([defined.bool(), defined.new_zeros(1, dtype=torch.bool)]).to(dev)
        self.num_symbols = S
        self.slot_symbol = slot_symbol.to(dev)  # [num_slots]
        self.by_slot = torch.zeros(len(slot_symbol), 2, dtype=torch.float64, device=dev)  # achieved, runs
        self.start = torch.zeros(num_envs, width, device=dev)  # each env's running module's target features at its start
        self.slot = torch.zeros(num_envs, dtype=torch.long, device=dev)

    def _row(self, symbol: torch.Tensor) -> torch.Tensor:
        S = self.num_symbols
        return torch.where((symbol >= 0) & (symbol < S), symbol, S)

    def begin(self, mask: torch.Tensor, slot: torch.Tensor, symbol: torch.Tensor, features: torch.Tensor) -> None:
        """Modules of ``symbol`` start where ``mask``, in ``slot``, from the state summarised by ``features``."""
        at_start = features.gather(1, self.index.index_select(0, self._row(symbol)))
        self.start.copy_(torch.where(mask[:, None], at_start, self.start))
        self.slot.copy_(torch.where(mask, slot, self.slot))

    def end(self, completed: torch.Tensor, symbol: torch.Tensor, features: torch.Tensor) -> None:
        """The runs of ``symbol`` that ended where ``completed``, at the state summarised by ``features``."""
        row = self._row(symbol)
        delta = features.gather(1, self.index.index_select(0, row)) - self.start
        achieved = (delta * self.sign.index_select(0, row) > 0).any(-1)
        counted = completed & self.counted.index_select(0, row)
        self.by_slot.view(-1).index_add_(0, torch.cat([self.slot * 2, self.slot * 2 + 1]),
                                         torch.cat([counted & achieved, counted]).double())

    def table(self, symbols, slots: dict[int, str] | None = None) -> dict[str, dict[str, float]]:
        """``{name: {"runs", "success_rate"}}`` for each symbol and each named slot with runs."""
        by_slot = self.by_slot.cpu()
        by_symbol = torch.zeros(self.num_symbols, 2, dtype=torch.float64).index_add_(0, self.slot_symbol.cpu(), by_slot)
        rows = [*zip(symbols, by_symbol.tolist())]
        rows += [(name, by_slot[slot].tolist()) for slot, name in (slots or {}).items()]
        return {name: {"runs": int(runs), "success_rate": achieved / runs} for name, (achieved, runs) in rows if runs > 0}

    def summary(self, symbols, slots: dict[int, str] | None = None, reset: bool = True) -> dict[str, float]:
        """``subgoals/<symbol>/success_rate`` and, for the ``slots`` named (slot → ``<task>/<k>_<symbol>``),
        ``subgoals/<name>/success_rate``, for those with runs since the last summary."""
        out = {f"subgoals/{name}/success_rate": r["success_rate"] for name, r in self.table(symbols, slots).items()}
        if reset:
            self.by_slot.zero_()
        return out
