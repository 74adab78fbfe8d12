"""``modrl table``: several runs' evaluations side by side with the mean and its 95% t-interval, read
from the ``eval/<split>.json`` files ``modrl eval`` writes; clear errors for paths without runs or
runs without the evaluation."""

import json
import math
import statistics
from pathlib import Path

import pytest

from modrl.cli import main
from modrl.tables import mean_ci, t95

CRAFT = str(Path(__file__).resolve().parents[1] / "configs" / "craft_sketch.yaml")


def test_t_quantiles_match_students_t():
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 60), 80, 100, 200, 1000]:
        assert abs(t95(df) - stats.t.ppf(0.975, df)) < 6e-4, df


def test_mean_ci_is_the_t_interval_over_runs():
    values = [0.563, 0.638, 0.699]
    mean, half = mean_ci(values)
    assert math.isclose(mean, statistics.fmean(values))
    assert math.isclose(half, 4.303 * statistics.stdev(values) / math.sqrt(3))
    assert mean_ci([0.5]) == (0.5, 0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short Craft runs (seeds 1, 2), each evaluated on its split; a third never evaluated."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (1, 2, 3):
        assert main(["train", CRAFT, "--set", f"run_root={root}", f"seed={seed}", "total_steps=800", "env.num_envs=16",
                     "agent.rollout_steps=25", "eval_episodes=0", "torch_threads=1"]) == 0
    found = sorted(root.iterdir(), key=lambda p: p.name)
    for run in found[:2]:
        assert main(["eval", str(run), "--episodes", "40"]) == 0
    return root, found


def test_table_of_evaluated_runs(runs, capsys):
    root, (a, b, unevaluated) = runs
    capsys.readouterr()
    assert main(["table", str(a), str(b), "--json", "--split", "train"]) == 0
    [table] = json.loads(capsys.readouterr().out)
    evals = [json.loads((r / "eval" / "train.json").read_text()) for r in (a, b)]
    assert table["split"] == "train" and [r["seed"] for r in table["runs"]] == [1, 2]
    mean, half = mean_ci([e["success_rate"] for e in evals])
    assert math.isclose(table["success"]["mean"], mean) and math.isclose(table["success"]["ci95"], half)
    for task in evals[0]["per_task"]:
        per_run = [e["per_task"][task]["success_rate"] for e in evals if task in e["per_task"]]
        assert math.isclose(table["per_task"][task]["mean"], statistics.fmean(per_run))
    assert main(["table", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "| **mean ± 95% CI** (2 runs)" in text and a.name in text and "make[plank]" in text
    assert "40 episodes" in text and "sampled actions" in text


def test_table_errors_name_the_missing_evaluation(runs, capsys):
    root, (a, _, unevaluated) = runs
    capsys.readouterr()
    assert main(["table", str(a), str(unevaluated), "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "no eval/train.json" in err and f"modrl eval {unevaluated} --split train" in err
    assert main(["table", str(root)]) == 2  # the folder's third run has no evaluation in common
    assert "no evaluation in common" in capsys.readouterr().err
    assert main(["table", str(root / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["table", str(a / "eval")]) == 2
    assert "no modrl run directory" in capsys.readouterr().err


def test_eval_of_several_runs_prints_one_result_each_then_their_table(runs, capsys, tmp_path):
    _, (a, b, _) = runs
    capsys.readouterr()
    assert main(["eval", str(a), str(b), "--episodes", "20", "--split", "heldout"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["split"] for r in lines] == ["heldout", "heldout"] and all(r["episodes"] == 20 for r in lines)
    assert "`heldout`: 2 run(s)" in err and "| **mean ± 95% CI** (2 runs)" in err and "make[bed]" in err
    # a bad run among them is named before any evaluation runs
    assert main(["eval", str(a), str(tmp_path / "nope"), "--episodes", "20"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nope" in err
    assert main(["eval", str(a), str(b), "--checkpoint", "x.pt"]) == 2
    assert "evaluate one run with it" in capsys.readouterr().err
