"""Several independent runs in one batch (``agent.num_runs``): each run's update depends on its own
rows only, each run has its own curriculum and optimiser clock, and each run is saved, evaluated
and refused for resume as its own run directory."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from modrl.agents.sketch import PolicySketches, SketchConfig
from modrl.envs.craft import TASKS, CraftVectorEnv
from modrl.optim import RunAdam
from modrl.sparse import SparseRows

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BATCHED = dict(rollout_steps=6, optimizer="adam", grad_scaling="norm", advantage="gae", critic="task_step",
               restart_optimizer=True, new_module_entropy=0.01, new_module_prior="stop_bias", init="unit_scaling")


def make(runs=2, envs_per_run=16, **cfg):
    env = CraftVectorEnv(runs * envs_per_run, split="train", task_groups=runs)
    agent = PolicySketches(SketchConfig(num_runs=runs, **{**BATCHED, **cfg}), env, total_steps=10**9)
    agent.start(0)
    return agent


def run_slices(agent, run):
    M, H = agent.num_symbols, agent.critic_heads
    return {k: v[run * (M if k.startswith("subpolicies.") else H):][: (M if k.startswith("subpolicies.") else H)].clone()
            for k, v in agent.policy.state_dict().items()}


@pytest.mark.parametrize("sparse", [False, True])
def test_a_runs_update_depends_on_its_own_rows_only(monkeypatch, sparse):
    agent = make(sparse_features=sparse)
    agent.train_iteration()  # optimiser state, entropy coefficients: past the first step
    buf = agent._ticks()
    other = agent.run_of_row == 1
    changed = {**buf, "reward": torch.where(other, 1.0 - buf["reward"], buf["reward"]),
               "action": torch.where(other, (buf["action"] + 1) % 6, buf["action"])}
    # and run 1's observations: other features (with sparse features, another number of entries)
    if sparse:
        assert "obs" not in buf
        changed["obs_rows"] = [SparseRows.of(torch.where(other[:, None], x.to_dense() + x.to_dense().roll(1, 1), x.to_dense()))
                               for x in buf["obs_rows"]]
        assert sum(x.val.numel() for x in changed["obs_rows"]) != sum(x.val.numel() for x in buf["obs_rows"])
    else:
        changed["obs"] = torch.where(other[:, None], buf["obs"] + buf["obs"].roll(1, 2), buf["obs"])
    after = []
    for b in (buf, changed):
        twin = copy.deepcopy(agent)
        monkeypatch.setattr(twin, "_rollout_continuing", lambda b=b: {k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()})
        twin.train_iteration()
        after.append((run_slices(twin, 0), run_slices(twin, 1)))
    (a0, a1), (b0, b1) = after
    for k in a0:
        assert torch.equal(a0[k], b0[k]), k  # run 0: bit for bit the same update
    assert any(not torch.equal(a1[k], b1[k]) for k in a1)  # run 1 saw other data


def test_each_run_has_its_own_curriculum_and_optimizer_clock():
    agent = make(updates_per_round=1)
    agent.train_iteration()
    assert agent.curriculum.max_length == [2, 2]
    agent.curriculum.success[0] = torch.stack([torch.ones(len(TASKS)), torch.ones(len(TASKS))])  # run 0: every task solved
    agent.curriculum.success[1] = torch.stack([torch.zeros(len(TASKS)), torch.ones(len(TASKS))])  # run 1: none
    agent.curriculum.round_updates = [0, 0]
    steps = [s["step"].flatten().tolist() for s in agent.optimizer.state.values()]
    agent._curriculum_step()
    assert agent.curriculum.max_length == [3, 2]
    w = agent.env.task_weights
    assert float(w[0, TASKS.index("make[bridge]")]) > 0 and float(w[1, TASKS.index("make[bridge]")]) == 0
    M = agent.num_symbols
    assert bool(agent._entering[:M].any()) and not bool(agent._entering[M:].any())  # get_iron enters run 0 only
    for state, before in zip(agent.optimizer.state.values(), steps):
        assert state["step"].flatten().tolist() == [0.0, before[1]]  # run 0's Adam restarted, run 1's not


def test_run_adam_is_torch_adam_per_run_and_restarts_one_run():
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)  # 2 runs × 2 modules
    ref = [w.detach()[:2].clone().requires_grad_(), w.detach()[2:].clone().requires_grad_()]
    opt, refs = RunAdam([w], 2, lr=0.1), [torch.optim.Adam([r], lr=0.1) for r in ref]
    for step in range(5):
        g = torch.randn(4, 3)
        if step == 3:
            opt.restart(1)
            refs[1] = torch.optim.Adam([ref[1]], lr=0.1)
        w.grad, ref[0].grad, ref[1].grad = g.clone(), g[:2].clone(), g[2:].clone()
        opt.step()
        refs[0].step(), refs[1].step()
        assert torch.allclose(w.detach(), torch.cat([r.detach() for r in ref]), atol=1e-5)  # float32 rounding


def test_num_runs_needs_matching_task_groups_and_supported_settings():
    env = CraftVectorEnv(32, split="train")
    with pytest.raises(ValueError, match="task_groups = 2"):
        PolicySketches(SketchConfig(num_runs=2, **BATCHED), env, total_steps=1000)
    env = CraftVectorEnv(33, split="train", task_groups=3)
    with pytest.raises(ValueError, match="divisible by 2"):
        PolicySketches(SketchConfig(num_runs=2, **BATCHED), CraftVectorEnv(33, split="train", task_groups=2), total_steps=1000)
    with pytest.raises(ValueError, match="num_runs > 1 supports rollout_steps > 0"):
        PolicySketches(SketchConfig(num_runs=3, **{**BATCHED, "rollout_steps": 0}), env, total_steps=1000)


def test_each_run_is_saved_evaluated_and_not_resumable_alone(tmp_path, capsys):
    from modrl.checkpoint import latest_checkpoint, load_checkpoint
    from modrl.cli import main
    from modrl.config import ConfigError, load_config
    from modrl.trainer import train

    cfg = load_config(CONFIGS / "craft_sketch.yaml", [
        f"run_root={tmp_path}", "env.num_envs=32", "env.kwargs.task_groups=2", "agent.num_runs=2", "agent.rollout_steps=5",
        "agent.max_episodes=40", "agent.sparse_features=true", "eval_episodes=20", "progress=false", "checkpoint_every=2",
        "agent.promote_threshold=-1.0", "agent.updates_per_round=1"])  # a promotion every update
    run = train(cfg)
    from modrl.evaluation import evaluate_run

    for r in (0, 1):  # each run's promotions are kept in its own directory, as that run's state alone
        assert {p.name for p in (run / f"run_{r}" / "checkpoints").glob("length_*.pt")} >= {"length_3.pt", "length_4.pt"}
        assert evaluate_run(run / f"run_{r}", episodes=16, checkpoint=run / f"run_{r}" / "checkpoints" / "length_3.pt")["episodes"] == 16
    assert not list((run / "checkpoints").glob("length_*.pt"))
    for r in (0, 1):
        sub = run / f"run_{r}"
        state = load_checkpoint(latest_checkpoint(sub))
        assert state["agent"]["episodes"] >= 40 and state["trained_in"] == str(run)
        assert state["config"]["agent"]["num_runs"] == 1 and state["config"]["env"]["num_envs"] == 16
        assert json.loads((sub / "eval" / "heldout.json").read_text())["episodes"] == 20  # the final evaluation
    batched = load_checkpoint(latest_checkpoint(run))["agent"]
    assert batched["runs_saved"] == [True, True] and len(batched["episodes"]) == 2
    assert main(["eval", str(run / "run_1"), "--episodes", "16", "--split", "heldout"]) == 0  # an ordinary run directory
    assert main(["eval", str(run), "--episodes", "16"]) != 0
    assert "evaluate each from its own run directory" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="cannot be resumed alone"):
        train(resume=run / "run_0")


def test_reproduction_script_batched_trains_runs_side_by_side_and_resumes(tmp_path, capsys):
    from modrl.experiments.sketch_reproduction import main as reproduce

    args = ["--batched", "--seeds", "3", "4", "--eval-episodes", "32", "--num-envs", "16", "--threads", "1",
            "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path), "--set", "agent.rollout_steps=5"]
    reproduce([*args, "--episodes", "32", "--adaptation-episodes", "16"])
    summary = json.loads((tmp_path / "craft_sketch_batched_reproduction.json").read_text())
    assert summary["batched"] and [r["run_index"] for r in summary["rows"]] == [0, 1]
    (batched,) = {r["batched_run"] for r in summary["rows"]}
    assert [r["run"] for r in summary["rows"]] == [f"{batched}/run_0", f"{batched}/run_1"]
    for row in summary["rows"]:
        assert row["episodes"] >= 32 and set(row["zero_shot_per_task"]) == {"make[bed]", "make[axe]"}
        assert set(row["adaptation_per_task"]) == {"make[bed]", "make[axe]"}
    assert [r["adaptation_seed"] for r in summary["rows"]] == [3, 4]  # the runs' adaptations are seeded apart
    assert sorted(p.name.split("__")[2] for p in (tmp_path / "runs").glob("Craft-v0__craft_adaptation__*")) == ["3", "4"]
    assert "2 runs, 32 episodes each" in capsys.readouterr().out
    reproduce([*args, "--episodes", "64"])  # a larger budget resumes the batched run; each run is saved again
    again = json.loads((tmp_path / "craft_sketch_batched_reproduction.json").read_text())["rows"]
    assert {r["batched_run"] for r in again} == {batched} and all(r["episodes"] >= 64 for r in again)
    assert len(list((tmp_path / "runs").glob("Craft-v0__craft_sketch__3__*"))) == 1
    configs = sorted((tmp_path / "runs").glob("Craft-v0__craft_sketch__3__*/run_*/config.yaml"))
    assert len(configs) == 2  # and each says the budget it was saved at, as its checkpoint does
    assert all(yaml.safe_load(c.read_text())["agent"]["max_episodes"] == 64 for c in configs)


def test_the_budgets_are_per_run():
    env = CraftVectorEnv(32, split="train", task_groups=2)
    agent = PolicySketches(SketchConfig(num_runs=2, **BATCHED), env, total_steps=16 * 6 * 3)  # 3 updates of each run
    agent.start(0)
    updates = 0
    while not agent.finished:
        agent.train_iteration()
        updates += 1
    assert updates == 3 and agent.global_step == 32 * 6 * 3  # counted over the batch
