"""Typed run configuration: dataclasses read from YAML, with ``--set key=value`` overrides.

A run is described by one :class:`RunConfig`. Its ``agent`` section names the algorithm
(``agent.name``) and holds that algorithm's own typed config (e.g. ``PPOConfig``); every other key
is checked against the dataclass fields. Unknown keys and values of the wrong type are rejected
with a :class:`ConfigError` naming the key. ``RunConfig()`` is the base every file fills in (PPO on
Four Rooms); the README's default job, run by ``modrl train`` without a file, is
``modrl/default_job.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration problem, with the dotted key that caused it in the message."""


@dataclass
class EnvConfig:
    id: str = "modrl/FourRooms-v0"
    """Gymnasium id of a batched modrl environment (see ``modrl list``)."""
    num_envs: int = 64
    """Number of environments stepped together as one batch."""
    kwargs: dict[str, Any] = field(default_factory=lambda: {"max_episode_steps": 100})
    """Keyword arguments of the environment's constructor."""

    RANGES: typing.ClassVar[dict[str, str]] = {"num_envs": ">= 1"}


@dataclass
class RunConfig:
    """One training run; unset keys take these defaults (PPO on Four Rooms)."""

    experiment: str = "fourrooms_ppo"
    """Name used in the run directory."""
    seed: int = 1
    """Seeds torch, numpy, random and the environment."""
    device: str = "cpu"
    """Torch device for the environment and the agent ("cpu", "cuda", "cuda:1")."""
    total_steps: int = 300_000
    """Environment steps (summed over the batch) to train for."""
    env: EnvConfig = field(default_factory=EnvConfig)
    agent: Any = None
    """Algorithm config; ``name`` picks the algorithm (``modrl list``)."""
    run_root: str = "runs"
    """Folder under which ``<env>__<experiment>__<seed>__<time>/`` run directories are made."""
    log_every: int = 1
    """Log to TensorBoard every this many iterations (episode statistics accumulate in between)."""
    checkpoint_every: int = 20
    """Write a checkpoint every this many iterations (and at the end, and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep on disk."""
    eval_episodes: int = 200
    """Episodes of the final evaluation, per split, written to ``eval/<split>.json`` (0 to skip)."""
    eval_splits: list[str] = field(default_factory=list)
    """Task splits the final evaluation covers, e.g. ``[train, heldout]`` on Craft (multitask and
    zero-shot success); empty: the run's own split."""
    torch_threads: int = 0
    """``torch.set_num_threads`` (0 leaves torch's default)."""
    progress: bool = True
    """Show a progress bar with steps/s."""
    progress_every: float = 0.0
    """Seconds between one-line progress reports (budget done, time, return, success, curriculum
    level) instead of the bar, for logs of background or parallel runs; 0: the bar."""
    tune_malloc: bool = True
    """Keep freed large CPU buffers for reuse (``modrl.perf``); faster, holds more memory."""

    RANGES: typing.ClassVar[dict[str, str]] = {
        "total_steps": ">= 1", "log_every": ">= 1", "checkpoint_every": ">= 1", "keep_checkpoints": ">= 1",
        "eval_episodes": ">= 0", "torch_threads": ">= 0", "progress_every": ">= 0"}

    def __post_init__(self):
        if self.agent is None:
            from modrl.agents.ppo import PPOConfig

            self.agent = PPOConfig()


def agent_registry() -> dict[str, tuple[type, type]]:
    from modrl.agents import AGENTS

    return AGENTS


def agent_name(agent_cfg: Any) -> str:
    for name, (cfg_cls, _) in agent_registry().items():
        if type(agent_cfg) is cfg_cls:
            return name
    raise ConfigError(f"unknown agent config type {type(agent_cfg).__name__}")


# ---------------------------------------------------------------------------- building from dicts
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where the YAML reading is ambiguous."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key '{key}': expected one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # YAML reads 1e6 as a string and 1.0e6 as a float: accept them when integral.
        try:
            as_float = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            as_float = None
        if as_float is not None and as_float.is_integer():
            return int(as_float)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported field type {_type_name(tp)}")


def _unknown_key(cls: type, key: str, full: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{full}'{hint}; valid keys here: {', '.join(names)}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise _unknown_key(cls, str(key), full)
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config section '{prefix or '<root>'}': {e}") from None
    check_ranges(obj, prefix)
    return obj


def check_ranges(obj: Any, prefix: str = "") -> None:
    """Check a config's numbers against its class's ``RANGES`` (key → ``"[lo, hi]"``, ``">= lo"`` or
    ``"> lo"``; a ``None`` value is not checked)."""
    for key, bound in getattr(type(obj), "RANGES", {}).items():
        value = getattr(obj, key)
        if value is None:
            continue
        if bound.startswith("["):
            lo, hi = (float(x) for x in bound.strip("[]").split(","))
            ok = lo <= value <= hi
        elif bound.startswith(">="):
            ok = value >= float(bound[2:])
        elif bound.startswith(">"):
            ok = value > float(bound[1:])
        else:
            raise AssertionError(f"{type(obj).__name__}.RANGES[{key!r}]: bad bound {bound!r}")
        if not ok:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"config key '{full}': must be {'in ' if bound.startswith('[') else ''}{bound}, got {value!r}")


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig`; the ``agent`` section is typed by its ``name``."""
    data = dict(data or {})
    agent = data.pop("agent", None)
    cfg = from_dict(RunConfig, data)
    agent = dict(agent or {})
    name = agent.pop("name", "ppo")
    registry = agent_registry()
    if name not in registry:
        raise ConfigError(f"config key 'agent.name': unknown agent {name!r}; available: {', '.join(registry)}")
    cfg.agent = from_dict(registry[name][0], agent, prefix="agent")
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (what a run directory stores as ``config.yaml``)."""
    data = dataclasses.asdict(cfg)
    data["agent"] = {"name": agent_name(cfg.agent), **dataclasses.asdict(cfg.agent)}
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    data = yaml.safe_load(yaml.safe_dump(data)) or {}
    parsed = []
    for item in overrides:
        if "=" not in item:
            hint = " (the config file goes before --set: modrl train CONFIG.yaml --set key=value ...)" if item.endswith((".yaml", ".yml")) else ""
            raise ConfigError(f"--set expects key=value, got {item!r}{hint}")
        key, raw = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(raw) if raw.strip() else ""))
    # Switching the algorithm starts its section afresh: the old one's keys would not fit.
    for key, value in parsed:
        if key == "agent.name" and (data.get("agent") or {}).get("name") != value:
            data["agent"] = {"name": value}
    for key, value in parsed:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = value
    return data


RESUME_KEYS = ("total_steps", "agent.max_episodes", "progress", "progress_every")
"""The keys ``modrl train --resume RUN --set`` may change: the budget, so a finished run can train
on, and how progress is shown."""


def resume_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply budget-only ``--set`` overrides to a run's saved config; any other key is an error."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if "=" in item and key not in RESUME_KEYS:
            raise ConfigError(f"--resume --set {key}: only the budget can change when a run resumes ({', '.join(RESUME_KEYS)})")
    return apply_overrides(data, overrides)


#: the README's default job: ``modrl train`` with no config file
DEFAULT_JOB = Path(__file__).with_name("default_job.yaml")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (the default job when ``path`` is None) and apply ``--set`` overrides."""
    path = DEFAULT_JOB if path is None else Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    if overrides:
        data = apply_overrides(data, overrides)
    return run_config_from_dict(data)
