"""Result tables over runs: several runs' evaluations side by side, with the mean over runs and its
95% Student-t interval (docs/results.md's form: mean ± 95% CI over seeds).

``modrl table PATH ...`` reads each run's ``eval/<split>.json`` (written by ``modrl eval``), so runs
trained apart — ``modrl train CONFIG --set seed=S`` for several S, or the ``run_<r>/`` directories
of a batched run — are summarised like ``sketch_reproduction``'s own table::

    modrl eval RUN --episodes 10000                       # for each run: eval/train.json
    modrl table runs/Craft-v0__craft_option_critic__*      # per-task success, mean ± 95% CI
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

#: two-sided 95% Student-t quantiles by degrees of freedom (Cornish–Fisher beyond)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042}


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df in T95:
        return T95[df]
    z = 1.959963984540054  # Cornish–Fisher expansion about the normal quantile (error < 1e-4 for df > 30)
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over runs (0 for a single run)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


class TableError(ValueError):
    """A path that is no run, or a run without the evaluation asked for."""


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories (with a ``config.yaml``) among ``paths``; a folder that is no run is searched
    for runs below it (e.g. ``runs/``, or a batched run's ``run_<r>/``)."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise TableError(f"not a directory: {p}")
        if (p / "config.yaml").is_file() and not (p / "run_0").is_dir():
            found = [p]
        else:  # a folder of runs (a batched run's directory holds its runs as run_<r>/)
            found = sorted(c.parent for c in p.rglob("config.yaml") if not (c.parent / "run_0").is_dir())
            if not found:
                raise TableError(f"no modrl run directory (with a config.yaml) in {p}")
        runs.extend(r for r in found if r not in runs)
    return runs


def read_evaluations(runs: list[Path], split: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{split: [one row per run]}``: each run's ``eval/<split>.json`` with the run's seed and
    experiment; ``split`` None: every split all the runs were evaluated on."""
    import yaml

    if split is None:
        common = set.intersection(*({f.stem for f in (r / "eval").glob("*.json")} for r in runs))
        if not common:
            raise TableError("the runs have no evaluation in common (run `modrl eval RUN` on each; "
                             + ", ".join(f"{r.name}: {sorted(f.stem for f in (r / 'eval').glob('*.json')) or 'none'}" for r in runs) + ")")
        splits = sorted(common)
    else:
        splits = [split]
    tables: dict[str, list[dict[str, Any]]] = {}
    for s in splits:
        rows = []
        for run in runs:
            path = run / "eval" / f"{s}.json"
            if not path.is_file():
                raise TableError(f"{run}: no {path.relative_to(run)} (run `modrl eval {run} --split {s}` first)")
            result = json.loads(path.read_text())
            cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
            # the run's training seed (the evaluation's own seed is eval_seed)
            rows.append({**result, "eval_seed": result.get("seed"), "run": run, "seed": cfg.get("seed"),
                         "experiment": cfg.get("experiment")})
        tables[s] = rows
    return tables


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean, half = mean_ci(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {half:.3f}"


def markdown_table(split: str, rows: list[dict[str, Any]]) -> str:
    """One row per run (its per-task and overall success) and a last row of means ± 95% CI."""
    tasks = list(dict.fromkeys(t for r in rows for t in r.get("per_task", {})))
    head = ["run", "seed", "env steps", *tasks, "success"]
    lines = [f"`{split}`: {len(rows)} run(s), " + ", ".join(sorted({f'{r["episodes"]:,} episodes' for r in rows}))
             + (", greedy actions" if any(r.get("deterministic") for r in rows) else ", sampled actions"),
             "", "| " + " | ".join(head) + " |", "|---|---:|---:|" + "---|" * (len(tasks) + 1)]
    for r in rows:
        per_task = r.get("per_task", {})
        cells = [f"{per_task[t]['success_rate']:.3f}" if t in per_task else "—" for t in tasks]
        lines.append(f"| {r['run'].name} | {r['seed']} | {r.get('global_step', 0):,} | " + " | ".join(cells)
                     + f" | {r['success_rate']:.3f} |")
    means = [_cell([r["per_task"][t]["success_rate"] for r in rows if t in r.get("per_task", {})]) for t in tasks]
    lines.append(f"| **mean ± 95% CI** ({len(rows)} runs) | | | " + " | ".join(means)
                 + f" | **{_cell([r['success_rate'] for r in rows])}** |")
    experiments = sorted({str(r["experiment"]) for r in rows})
    if len(experiments) > 1:
        lines.append(f"\nnote: the runs come from different experiments ({', '.join(experiments)})")
    return "\n".join(lines)


def summary(split: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table as data: per run, and the mean and 95% half-width per task and overall."""
    tasks = list(dict.fromkeys(t for r in rows for t in r.get("per_task", {})))
    overall = mean_ci([r["success_rate"] for r in rows])
    return {
        "split": split,
        "runs": [{"run": str(r["run"]), "seed": r["seed"], "global_step": r.get("global_step"), "episodes": r["episodes"],
                  "success_rate": r["success_rate"],
                  "per_task": {t: v["success_rate"] for t, v in r.get("per_task", {}).items()}} for r in rows],
        "success": {"mean": overall[0], "ci95": overall[1]},
        "per_task": {t: dict(zip(("mean", "ci95"), mean_ci([r["per_task"][t]["success_rate"] for r in rows
                                                            if t in r.get("per_task", {})]))) for t in tasks},
    }
