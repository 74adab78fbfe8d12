"""Learning algorithms (installed as ``modrl.agents``), one per file, each with a typed config.

``AGENTS`` maps the ``agent`` name used in configs to ``(ConfigClass, AgentClass)``.
"""

from __future__ import annotations

from modrl.agents.option_critic import OptionCritic, OptionCriticConfig
from modrl.agents.ppo import PPO, PPOConfig
from modrl.agents.reinforce import Reinforce, ReinforceConfig
from modrl.agents.sketch import PolicySketches, SketchConfig

AGENTS: dict[str, tuple[type, type]] = {
    "ppo": (PPOConfig, PPO),
    "reinforce": (ReinforceConfig, Reinforce),
    "option_critic": (OptionCriticConfig, OptionCritic),
    "sketch": (SketchConfig, PolicySketches),
}

__all__ = ["AGENTS", "PPO", "PPOConfig", "Reinforce", "ReinforceConfig", "OptionCritic", "OptionCriticConfig", "PolicySketches",
           "SketchConfig"]
