"""Batched compositional environments (installed as ``modrl.envs``).

Each environment is registered twice under one id: ``gymnasium.make(id)`` gives a one-env numpy
view (env checker, stable-baselines3) and ``gymnasium.make_vec(id, num_envs,
vectorization_mode="vector_entry_point", device=...)`` the batched torch env.
"""

from __future__ import annotations

import gymnasium as gym

from modrl.envs.craft import CraftVectorEnv
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.envs.maze import MazeVectorEnv
from modrl.vec import single_env_factory

#: env id -> batched class, for ``modrl list`` and ``modrl bench``
REGISTRY: dict[str, type] = {
    "modrl/FourRooms-v0": FourRoomsVectorEnv,
    "modrl/Craft-v0": CraftVectorEnv,
    "modrl/CraftMaze-v0": MazeVectorEnv,
}


def _register_all() -> None:
    for env_id, vec_cls in REGISTRY.items():
        if env_id in gym.registry:
            continue
        gym.register(env_id, entry_point=single_env_factory(vec_cls), vector_entry_point=vec_cls)


_register_all()

__all__ = ["CraftVectorEnv", "FourRoomsVectorEnv", "MazeVectorEnv", "REGISTRY"]
