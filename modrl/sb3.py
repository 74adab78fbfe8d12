"""A modrl batched environment as a stable-baselines3 ``VecEnv``: one batched ``step`` for all envs.

``gymnasium.make("modrl/...")`` gives SB3 one environment at a time (:class:`modrl.vec.SingleEnvView`),
and a ``DummyVecEnv`` of those pays a batched step's fixed cost per environment and per step.
:class:`SB3VecEnv` hands SB3 the whole :class:`~modrl.vec.TorchVectorEnv` instead. The MDP is the
same; SB3's conventions are kept: with autoreset ``SAME_STEP`` (modrl's default) the returned
observation of a finished env is already the next episode's first, and its info carries
``terminal_observation``, ``TimeLimit.truncated`` (so PPO bootstraps truncated episodes),
``is_success`` and the Monitor-style ``episode`` statistics that fill SB3's ``rollout/ep_*`` logs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from modrl.vec import EnvError, TorchVectorEnv, _tree_map


def silent_logger():
    """An SB3 logger without outputs, for ``model.set_logger``: without one, every ``learn()`` calls
    SB3's ``configure()``, which leaves an empty ``SB3-<date>`` folder in the temp directory even
    with ``verbose=0``."""
    from stable_baselines3.common.logger import Logger

    return Logger(folder=None, output_formats=[])


def _numpy(obs):
    return _tree_map(lambda t: t.cpu().numpy(), obs)


class SB3VecEnv(VecEnv):
    """stable-baselines3 view of a batched modrl environment (autoreset ``SAME_STEP``)."""

    def __init__(self, env: TorchVectorEnv):
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise EnvError(f"SB3VecEnv needs autoreset SAME_STEP (SB3's convention), got {env.autoreset_mode}")
        self.env = env
        self._actions: torch.Tensor | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self):
        """Reset every env; SB3's ``seed(s)`` seeds the batched env's generator with the first seed."""
        obs, _ = self.env.reset(seed=self._seeds[0])
        self._reset_seeds()
        self._reset_options()
        return _numpy(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(np.asarray(actions), device=self.env.device)

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = (terminated | truncated).cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = _numpy(info["final_obs"])
            stats = {k: info["episode"][k].cpu().numpy() for k in ("r", "l", "t", "success")}
            cut = (truncated & ~terminated).cpu().numpy()
            for i in np.flatnonzero(done):
                infos[i] = {
                    "terminal_observation": _tree_map(lambda a: a[i], final) if isinstance(final, dict) else final[i],
                    "TimeLimit.truncated": bool(cut[i]),
                    "is_success": bool(stats["success"][i]),
                    "episode": {"r": float(stats["r"][i]), "l": int(stats["l"][i]), "t": float(stats["t"][i])},
                }
        return _numpy(obs), reward.cpu().numpy().astype(np.float32), done, infos

    def close(self) -> None:
        self.env.close()

    # The batched env is one object: attributes and methods are shared by all its envs.
    def _count(self, indices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.env, attr_name)] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        if self._count(indices) != self.num_envs:
            raise EnvError("SB3VecEnv shares its attributes across envs: set_attr on a subset is not supported")
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * self._count(indices)
