"""Training end to end: learning tests, TensorBoard events, checkpoints, exact resume,
non-finite losses, Ctrl-C, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from modrl.algorithm import NonFiniteLossError
from modrl.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from modrl.cli import main
from modrl.config import load_config
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.evaluation import evaluate
from modrl.trainer import make_agent, make_env, seed_everything, train

FOURROOMS = Path(__file__).resolve().parent.parent / "configs" / "fourrooms_ppo.yaml"


def tiny(tmp_path, *extra, total=4096):
    """A few-iteration run: 16 envs × 32 steps = 512 env steps per iteration."""
    return load_config(
        FOURROOMS,
        [
            f"run_root={tmp_path}",
            f"total_steps={total}",
            "env.num_envs=16",
            "agent.num_steps=32",
            "eval_episodes=20",
            "progress=false",
            *extra,
        ],
    )


def _train_and_evaluate(overrides):
    cfg = load_config(FOURROOMS, overrides)
    seed_everything(cfg.seed)
    env = make_env(cfg.env, "cpu")
    agent = make_agent(cfg, env)
    agent.start(cfg.seed)
    while agent.iteration < agent.num_iterations:
        agent.train_iteration()
    eval_env = make_env(cfg.env, "cpu", num_envs=250)
    return evaluate(agent, eval_env, 1000, seed=12345)


@pytest.mark.slow
def test_ppo_solves_four_rooms():
    # A uniformly random policy succeeds in 24% of episodes (mean length 86) under the 100-step cap.
    result = _train_and_evaluate(["seed=1", "total_steps=65536", "env.num_envs=64", "agent.num_steps=64"])
    assert result["episodes"] == 1000
    assert result["success_rate"] >= 0.9, result
    assert result["length_mean"] <= 30, result


@pytest.mark.slow
def test_reinforce_solves_four_rooms():
    result = _train_and_evaluate(["seed=1", "agent.name=reinforce", "total_steps=300000", "env.num_envs=64"])
    assert result["success_rate"] >= 0.9, result


def test_run_directory_events_and_checkpoints(tmp_path):
    run_dir = train(tiny(tmp_path, "checkpoint_every=2"))
    assert run_dir.parent == tmp_path and run_dir.name.startswith("FourRooms-v0__fourrooms_ppo__1__")
    assert (run_dir / "config.yaml").is_file() and (run_dir / "command.txt").is_file()

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    required = {
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/success_rate",
        "charts/SPS",
        "charts/learning_rate",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "eval/train/success_rate",
    }
    assert required <= tags, required - tags
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    assert steps == [512 * i for i in range(1, 9)]  # keyed by env steps
    assert all(e.value > 0 for e in acc.Scalars("charts/SPS"))
    assert "hyperparameters/text_summary" in acc.Tags()["tensors"]

    ckpts = list_checkpoints(run_dir)
    assert [p.name for p in ckpts] == ["step_2048.pt", "step_3072.pt", "step_4096.pt"]  # keep_checkpoints=3
    state = torch.load(ckpts[-1], weights_only=True)
    assert state["global_step"] == 4096 and state["config"]["agent"]["name"] == "ppo"
    result = json.loads((run_dir / "eval" / "train.json").read_text())
    assert result["episodes"] == 20 and result["global_step"] == 4096


@pytest.mark.parametrize("agent", ["ppo", "reinforce", "option_critic"])
def test_resume_continues_exactly(tmp_path, agent):
    extra = ("checkpoint_every=100", f"agent.name={agent}", "eval_episodes=0")
    full = train(tiny(tmp_path / "full", *extra))
    part = train(tiny(tmp_path / "part", *extra), max_iterations=3)
    assert load_checkpoint(latest_checkpoint(part))["global_step"] == 3 * 512
    resumed = train(resume=part)
    assert resumed == part
    a, b = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(part))
    assert a["global_step"] == b["global_step"] == 4096
    for name, tensor in a["agent"]["policy"].items():
        assert torch.equal(tensor, b["agent"]["policy"][name]), name
    for key in ("pos", "goal", "_elapsed"):
        assert torch.equal(a["env"][key], b["env"][key]), key
    # The TensorBoard curve continues without duplicated steps.
    acc = EventAccumulator(str(part), size_guidance={"scalars": 0})
    acc.Reload()
    # (sorted: two writers of one test process can share a timestamp, and file names then sort
    # by a counter; a real resume is a later process)
    assert sorted(e.step for e in acc.Scalars("losses/policy_loss")) == [512 * i for i in range(1, 9)]


def test_resume_with_a_larger_budget_trains_on(tmp_path, capsys):
    run = train(tiny(tmp_path, "checkpoint_every=100", "eval_episodes=0", "total_steps=2048"))
    assert load_checkpoint(latest_checkpoint(run))["global_step"] == 2048
    assert main(["train", "--resume", str(run), "--set", "agent.learning_rate=1.0"]) == 2
    assert "only the budget can change" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--set", "total_steps=4096"]) == 0
    assert load_checkpoint(latest_checkpoint(run))["global_step"] == 4096
    assert yaml.safe_load((run / "config.yaml").read_text())["total_steps"] == 4096


def test_progress_lines_for_background_and_parallel_runs(tmp_path, capsys):
    run = train(tiny(tmp_path, "progress=true", "progress_every=1e-9", "eval_episodes=0", "total_steps=2048"))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"{run.name}: ")]
    assert len(lines) == 4  # one per iteration at this interval, each named by its run
    assert lines[0].startswith(f"{run.name}: 512 / 2,048 steps (25.0%), ")
    assert lines[-1].startswith(f"{run.name}: 2,048 / 2,048 steps (100.0%), ") and "SPS=" in lines[-1]
    # a resume may change how progress is shown (and the budget), nothing else
    train(resume=run, budget=["total_steps=3072", "progress=false"])
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(f"{run.name}: ")]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = FourRoomsVectorEnv._step_state
    calls = {"n": 0}

    def poisoned(self, actions):
        reward, terminated = original(self, actions)
        calls["n"] += 1
        if calls["n"] > 3 * 32:  # from the 4th iteration on
            reward = reward + float("nan")
        return reward, terminated

    monkeypatch.setattr(FourRoomsVectorEnv, "_step_state", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at env step 1536.*last good checkpoint is .*step_1536.pt"):
        train(tiny(tmp_path, "checkpoint_every=1"))
    run_dir = next(tmp_path.iterdir())
    last = load_checkpoint(latest_checkpoint(run_dir))
    assert last["global_step"] == 1536
    assert all(torch.isfinite(t).all() for t in last["agent"]["policy"].values())


def test_cli_train_eval_list_bench(tmp_path, capsys):
    assert main(["train", str(FOURROOMS), "--set", f"run_root={tmp_path}", "--set", "total_steps=1024", "--set", "env.num_envs=16",
                 "--set", "agent.num_steps=32", "--set", "eval_episodes=0", "--set", "progress=false"]) == 0
    run_dir = next(tmp_path.iterdir())
    assert "TensorBoard logs in" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--episodes", "0"]) == 2  # not a NaN result over the good one
    assert "episodes must be a positive int, got 0" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--episodes", "30"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 30 and 0.0 <= result["success_rate"] <= 1.0
    assert (run_dir / "eval" / "train.json").is_file()

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "modrl/FourRooms-v0" in out and "ppo" in out and "reinforce" in out and "fourrooms_ppo.yaml" in out
    assert "Policy sketches (Andreas, Klein & Levine 2017): modular" in out  # each with its first sentence
    assert all(len(line) <= 120 for line in out.splitlines() if line.startswith("  "))

    assert main(["bench", "modrl/FourRooms-v0", "--num-envs", "64", "--steps", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_per_s"] > 0


def test_cli_missing_run_and_checkpoint_errors(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "not a modrl run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["bench", "modrl/Nope-v0"]) == 2
    assert "unknown batched environment" in capsys.readouterr().err
    craft = str(FOURROOMS.parent / "craft_sketch.yaml")
    assert main(["train", craft, "--set", f"run_root={tmp_path}", "env.num_envs=0"]) == 2
    assert "config key 'env.num_envs': must be >= 1, got 0" in capsys.readouterr().err
    assert main(["train", craft, "--set", f"run_root={tmp_path}", "env.kwargs.split=tarin"]) == 2
    assert "config section 'env': unknown split 'tarin'" in capsys.readouterr().err
    assert main(["train", str(FOURROOMS), "--set", f"run_root={tmp_path}", "total_steps=-1"]) == 2
    assert "config key 'total_steps': must be >= 1, got -1" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_a_checkpoint(tmp_path, signum):
    """Ctrl-C and SIGTERM (timeout, a scheduler) both finish the iteration, save and exit 128 + signal;
    a repeated SIGTERM does not abort the save; the run then resumes."""
    cmd = [sys.executable, "-m", "modrl.cli", "train", str(FOURROOMS), "--set", f"run_root={tmp_path}", "--set", "total_steps=100000000",
           "--set", "env.num_envs=16", "--set", "agent.num_steps=32", "--set", "checkpoint_every=1000000"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 60
        for line in proc.stderr:
            if "run directory" in line or time.time() > deadline:
                break
        time.sleep(1.0)
        proc.send_signal(signum)
        if signum == signal.SIGTERM:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, err
    assert ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM") + " — saving a checkpoint" in err
    assert "continue with: modrl train --resume" in err
    run_dir = next(tmp_path.iterdir())
    step = load_checkpoint(latest_checkpoint(run_dir))["global_step"]
    assert step > 0
    assert main(["train", "--resume", str(run_dir), "--set", f"total_steps={step + 16 * 32}"]) == 0
    assert load_checkpoint(latest_checkpoint(run_dir))["global_step"] == step + 16 * 32


def test_a_checkpoint_that_does_not_fit_is_named(tmp_path, capsys):
    """A checkpoint whose tensors do not fit what its config builds (e.g. from an older version with
    another module count): eval and resume say which file and what, without a torch traceback."""
    run_dir = train(load_config(FOURROOMS, [f"run_root={tmp_path}", "total_steps=2048", "env.num_envs=16",
                                            "agent.num_steps=32", "eval_episodes=0", "progress=false"]))
    path = latest_checkpoint(run_dir)
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state["agent"]["policy"].items() if v.dim() == 2)
    state["agent"]["policy"][name] = state["agent"]["policy"][name][:-1]  # one row fewer
    torch.save(state, path)
    for argv in (["eval", str(run_dir), "--episodes", "8"], ["train", "--resume", str(run_dir), "--set", "total_steps=4096"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{path}: the checkpoint does not fit" in err and "size mismatch" in err and "Traceback" not in err
