"""Configs: every shipped YAML loads, the default job matches its YAML, bad keys and types are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from modrl.agents.ppo import PPOConfig
from modrl.agents.reinforce import ReinforceConfig
from modrl.cli import main
from modrl.config import ConfigError, RunConfig, load_config, to_dict

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
FOURROOMS = Path(__file__).parent.parent / "configs" / "fourrooms_ppo.yaml"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)


def test_default_job_is_policy_sketches_on_craft_with_a_zero_shot_evaluation():
    from modrl.agents.sketch import SketchConfig

    cfg = load_config(None)
    assert cfg.env.id == "modrl/Craft-v0" and isinstance(cfg.agent, SketchConfig)
    assert cfg.eval_splits == ["train", "heldout"] and cfg.eval_episodes > 0
    # the reproduction config at a smaller episode budget
    full = to_dict(load_config(FOURROOMS.parent / "craft_sketch.yaml"))
    quick = to_dict(cfg)
    assert quick["env"] == full["env"]
    assert {k: v for k, v in quick["agent"].items() if k != "max_episodes"} == \
        {k: v for k, v in full["agent"].items() if k != "max_episodes"}
    assert 0 < quick["agent"]["max_episodes"] < full["agent"]["max_episodes"]
    assert to_dict(RunConfig())["env"]["id"] == "modrl/FourRooms-v0"  # unset keys: PPO on Four Rooms


def test_overrides_are_typed():
    cfg = load_config(FOURROOMS, ["agent.learning_rate=1e-3", "env.num_envs=8", "total_steps=1e4", "env.kwargs.goal=5"])
    assert cfg.agent.learning_rate == 1e-3 and isinstance(cfg.agent.learning_rate, float)
    assert cfg.env.num_envs == 8 and cfg.total_steps == 10_000
    assert cfg.env.kwargs == {"max_episode_steps": 100, "goal": 5}
    assert cfg.agent.target_kl is None
    assert load_config(FOURROOMS, ["agent.target_kl=0.02"]).agent.target_kl == 0.02


def test_switching_the_agent_starts_its_section_afresh():
    cfg = load_config(FOURROOMS, ["agent.name=reinforce", "agent.learning_rate=0.01"])
    assert isinstance(cfg.agent, ReinforceConfig) and cfg.agent.learning_rate == 0.01
    assert isinstance(load_config(FOURROOMS).agent, PPOConfig)


@pytest.mark.parametrize(
    "text, message",
    [
        ("totl_steps: 5\n", r"unknown config key 'totl_steps' \(did you mean 'total_steps'\?\)"),
        ("agent: {name: ppo, lerning_rate: 0.1}\n", r"unknown config key 'agent.lerning_rate'.*learning_rate"),
        ("env: {num_envs: many}\n", r"config key 'env.num_envs': expected an integer, got 'many'"),
        ("env: {num_envs: 2.5}\n", r"config key 'env.num_envs': expected an integer"),
        ("agent: {name: ppo, anneal_lr: 1}\n", r"config key 'agent.anneal_lr': expected true/false"),
        ("agent: {name: ppo, learning_rate: fast}\n", r"config key 'agent.learning_rate': expected a number"),
        ("agent: {name: sarsa}\n", r"config key 'agent.name': unknown agent 'sarsa'"),
        ("env: [1, 2]\n", r"config key 'env': expected a mapping"),
        ("- 1\n- 2\n", r"top level must be a mapping"),
        ("total_steps: -1\n", r"config key 'total_steps': must be >= 1, got -1"),
        ("agent: {name: ppo, gamma: 1.5}\n", r"config key 'agent.gamma': must be in \[0, 1\], got 1.5"),
        ("agent: {name: sketch, hidden_size: 0}\n", r"config key 'agent.hidden_size': must be >= 1, got 0"),
        ("agent: {name: sketch, promote_threshold: 80}\n", r"config key 'agent.promote_threshold': must be in \[-1, 1\]"),
        ("agent: {name: option_critic, temperature: 0}\n", r"config key 'agent.temperature': must be > 0, got 0"),
        ("agent: {name: reinforce, ent_coef: -0.1}\n", r"config key 'agent.ent_coef': must be >= 0, got -0.1"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["agent.learning_rate"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_without_a_traceback(tmp_path, capsys):
    code = main(["train", str(write(tmp_path, "seed: one\n"))])
    err = capsys.readouterr().err
    assert code == 2
    assert "modrl: error: config key 'seed': expected an integer, got 'one'" in err
    assert "Traceback" not in err


def test_cli_rejects_unknown_env_and_bad_env_kwargs(tmp_path, capsys):
    assert main(["train", str(FOURROOMS), "--set", "env.id=modrl/Nope-v0", "--set", f"run_root={tmp_path}"]) == 2
    assert "unknown environment 'modrl/Nope-v0'" in capsys.readouterr().err
    assert main(["train", str(FOURROOMS), "--set", "env.kwargs.colour=red", "--set", f"run_root={tmp_path}"]) == 2
    assert "env.kwargs" in capsys.readouterr().err
    assert main(["train", str(FOURROOMS), "--set", "env.kwargs.goal=500", f"run_root={tmp_path}"]) == 2  # one --set, several keys
    assert "goal must be a cell index" in capsys.readouterr().err
    assert main(["train", "--set", "seed=2", "configs/fourrooms_ppo.yaml"]) == 2
    assert "the config file goes before --set" in capsys.readouterr().err


def test_every_range_names_a_numeric_key_and_none_is_not_checked():
    import dataclasses

    from modrl.agents import AGENTS
    from modrl.config import check_ranges

    from modrl.config import EnvConfig

    for cls in [RunConfig, EnvConfig, *(c for c, _ in AGENTS.values())]:
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        for key in cls.RANGES:
            assert key in fields and ("int" in fields[key] or "float" in fields[key]), (cls.__name__, key)
    cfg = load_config(None, ["agent.new_module_entropy=null"])  # the default job: sketch; null = off
    assert cfg.agent.new_module_entropy is None
    check_ranges(cfg.agent, "agent")
