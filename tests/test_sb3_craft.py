"""The stable-baselines3 reference baseline on Craft (modrl/experiments/sb3_craft.py)."""

import json

import pytest


@pytest.mark.parametrize("vec", ["batched", "gym"])
def test_sb3_craft_reference_runs(tmp_path, vec):
    """The SB3 reference baseline trains on Craft (batched, or single envs from gymnasium.make) and
    reports per-task success."""
    from modrl.experiments.sb3_craft import main

    out = main(["--steps", "512", "--n-steps", "64", "--eval-episodes", "40", "--vec", vec, "--out", str(tmp_path)])
    assert out["env_steps"] == 512 and out["eval_episodes"] == 40 and out["vec"] == vec
    assert set(out["per_task"]) <= {"make[plank]", "make[stick]", "make[cloth]", "make[rope]", "make[bridge]",
                                    "make[shears]", "get[gold]", "get[gem]"}
    assert json.loads((tmp_path / "sb3_craft.json").read_text())["multitask"] == out["multitask"]
