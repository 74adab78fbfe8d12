"""The batched-environment contract: a ``gymnasium.vector.VectorEnv`` on torch tensors.

A subclass keeps its whole state in tensors of leading size ``num_envs`` and implements three
pure, batched pieces (no Python loop over environments, no host sync):

- ``_reset_state(mask)``: re-initialise the rows where ``mask`` is True (masked writes);
- ``_step_state(actions) -> (reward, terminated)``: advance every row by one step;
- ``_observe() -> obs``: the observation of every row;
- optionally ``_observe_reset(obs, reset) -> obs``: the observation after a SAME_STEP autoreset
  of the rows in ``reset`` (default: ``_observe()`` again; the sketch worlds re-observe only those rows).

A ``_reset_state`` that draws random state for the reset rows finds them with :meth:`_rows_to_draw`
and stores the draws with :meth:`_write_rows`: on a CPU only the reset rows draw (one host sync); with
``static_shapes`` (default on CUDA) every row draws and the reset rows keep theirs, so a step has
no host sync and fixed shapes (what a CUDA graph needs; ``modrl.host_sync`` checks it).

This base class does everything else the Gymnasium 1.x vector API asks for: the three
``AutoresetMode`` s (``SAME_STEP`` default, ``NEXT_STEP``, ``DISABLED`` with
``reset(options={"reset_mask": m})``), truncation at ``max_episode_steps`` (``make_vec`` adds no
``TimeLimit`` to a vector entry point), episode statistics, seeding of a private
``torch.Generator`` by ``reset(seed=...)``, action checking and state dicts for exact resume.

Info keys are always present, each with its ``_key`` mask (always-present keys avoid a host sync
to decide whether to add them):

- ``info["episode"] = {"r", "l", "t", "success"}`` and ``info["_episode"]``: statistics of the
  episodes that ended at this step;
- ``SAME_STEP`` only: ``info["final_obs"]`` (full batch, valid where ``info["_final_obs"]``).

:class:`SingleEnvView` is the one-env numpy view used by ``gymnasium.make`` (env checker,
stable-baselines3).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

Obs = torch.Tensor | dict[str, torch.Tensor]


class EnvError(ValueError):
    """Bad input to an environment (wrong action shape, action out of range, bad reset mask)."""


def _tree_map(fn, obs: Obs) -> Obs:
    if isinstance(obs, dict):
        return {k: fn(v) for k, v in obs.items()}
    return fn(obs)


class TorchVectorEnv(VectorEnv):
    """Base class of modrl's batched environments (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP, "torch": True}
    #: names of the tensor attributes holding the subclass's state (saved by :meth:`state_dict`)
    state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        num_envs: int,
        *,
        single_observation_space: gym.Space,
        single_action_space: gym.Space,
        max_episode_steps: int,
        device: str | torch.device = "cpu",
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        render_mode: str | None = None,
        static_shapes: bool | None = None,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise EnvError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise EnvError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in type(self).metadata["render_modes"]:
            raise EnvError(f"render_mode {render_mode!r} not in {type(self).metadata['render_modes']}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self.metadata = dict(type(self).metadata)
        self.metadata["autoreset_mode"] = AutoresetMode(autoreset_mode)
        self.autoreset_mode = self.metadata["autoreset_mode"]
        #: check actions' range (one host sync per step); trainers that sample valid actions turn it off
        self.check_actions = True
        #: resets draw state for every row and keep it where a row is reset, with no host sync (a step can
        #: then be captured in a CUDA graph); off, only the reset rows draw (default off on a CPU, where
        #: the one host sync is far cheaper than drawing N rows). See :meth:`_rows_to_draw`.
        if static_shapes is not None and not isinstance(static_shapes, bool):
            raise EnvError(f"static_shapes must be true, false or null (default: on CUDA), got {static_shapes!r}")
        self.static_shapes = self.device.type == "cuda" if static_shapes is None else static_shapes
        self.generator = torch.Generator(device=self.device)
        self._seeded = False

        n, dev = num_envs, self.device
        self._elapsed = torch.zeros(n, dtype=torch.int32, device=dev)
        self._episode_return = torch.zeros(n, dtype=torch.float32, device=dev)
        self._episode_start = torch.zeros(n, dtype=torch.float64, device=dev)
        # NEXT_STEP: ended at the previous step, reset at this one; DISABLED: ended, awaiting reset.
        self._done = torch.zeros(n, dtype=torch.bool, device=dev)
        self._all = torch.ones(n, dtype=torch.bool, device=dev)

    # ------------------------------------------------------------------ to implement
    def _reset_state(self, mask: torch.Tensor, *, new_run: bool) -> None:
        """Re-initialise the rows where ``mask``; ``new_run`` is True on a seeded full reset."""
        raise NotImplementedError

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance every row one step; return ``(reward float32[N], terminated bool[N])``."""
        raise NotImplementedError

    def _observe(self) -> Obs:
        raise NotImplementedError

    def _observe_reset(self, obs: Obs, reset: torch.Tensor) -> Obs:
        """The observation after the rows in ``reset`` were reset, given ``obs`` from just before
        (default: observe every row again; an env whose ``_reset_state`` already finds the reset
        rows on the host may observe only those)."""
        return self._observe()

    def _success(self, reward: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        """Whether an episode ending at this step solved its task (default: it terminated)."""
        return terminated

    def _episode_info(self) -> dict[str, torch.Tensor]:
        """Extra per-env fields of ``info["episode"]``, read before the autoreset (e.g. the task)."""
        return {}

    def _step_info(self) -> dict[str, torch.Tensor]:
        """Extra top-level fields of ``info``, read before the autoreset (e.g. a state summary of the
        step's end that a reset row's next observation no longer shows)."""
        return {}

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset all envs, or those in ``options["reset_mask"]`` (bool, shape ``(num_envs,)``).

        An int ``seed`` starts a new run: the private generator is re-seeded and per-run
        counters (e.g. Four Rooms' episode count for the goal switch) restart.
        """
        super().reset(seed=seed)
        if seed is not None or not self._seeded:
            if seed is None:
                seed = int(self.np_random.integers(2**62))
            self.generator.manual_seed(int(seed))
            self._seeded = True
            new_run = True
        else:
            new_run = False
        mask = self._all
        if options and options.get("reset_mask") is not None:
            mask = self._as_mask(options["reset_mask"])
            new_run = False
        self._reset_rows(mask, new_run=new_run)
        return self._observe(), {}

    def step(self, actions):
        actions = self._as_actions(actions)
        mode = self.autoreset_mode
        if mode == AutoresetMode.DISABLED and bool(self._done.any()):
            ended = torch.nonzero(self._done).flatten().tolist()
            raise EnvError(
                f"step() called on finished sub-envs {ended[:10]} with autoreset DISABLED; "
                "call reset(options={'reset_mask': mask}) for them first"
            )
        reward, terminated = self._step_state(actions)
        self._elapsed += 1
        truncated = (self._elapsed >= self.max_episode_steps) & ~terminated
        if mode == AutoresetMode.NEXT_STEP:
            # The rows that ended at the previous step ignore their action and reset now.
            resetting = self._done
            self._reset_rows(resetting, new_run=False)
            reward = torch.where(resetting, 0.0, reward)
            terminated = terminated & ~resetting
            truncated = truncated & ~resetting
        done = terminated | truncated
        self._episode_return += reward
        now = time.perf_counter()
        info: dict[str, Any] = {
            "episode": {
                "r": self._episode_return.clone(),
                "l": self._elapsed.clone(),
                "t": (now - self._episode_start).to(torch.float32),
                "success": self._success(reward, terminated) & done,
                **self._episode_info(),
            },
            "_episode": done,
            **self._step_info(),
        }
        obs = self._observe()
        if mode == AutoresetMode.SAME_STEP:
            info["final_obs"] = obs
            info["_final_obs"] = done
            self._reset_rows(done, new_run=False)
            obs = self._observe_reset(obs, done)
        else:
            self._done = done
        return obs, reward, terminated, truncated, info

    def render(self):
        if self.render_mode == "ansi":
            return "\n\n".join(self._render_ansi(i) for i in range(self.num_envs))
        return None

    def _render_ansi(self, index: int) -> str:
        raise NotImplementedError

    def close_extras(self, **kwargs):
        pass

    # ------------------------------------------------------------------ state for resume
    def state_dict(self) -> dict[str, Any]:
        """Tensors and primitives only (loadable with ``torch.load(weights_only=True)``)."""
        state = {k: getattr(self, k).clone() for k in self.state_keys}
        state.update(
            _elapsed=self._elapsed.clone(),
            _episode_return=self._episode_return.clone(),
            _done=self._done.clone(),
            generator=self.generator.get_state(),
            seeded=self._seeded,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in (*self.state_keys, "_elapsed", "_episode_return", "_done"):
            if k not in state:
                raise KeyError(f"environment state is missing {k!r}")
            current = getattr(self, k)
            if current.shape != state[k].shape:
                raise EnvError(
                    f"environment state {k!r} has shape {tuple(state[k].shape)}, expected {tuple(current.shape)} "
                    "(was the run saved with another num_envs?)"
                )
            setattr(self, k, state[k].to(current.device, current.dtype).clone())
        self.generator.set_state(state["generator"])
        self._seeded = bool(state["seeded"])
        self._episode_start = torch.full_like(self._episode_start, time.perf_counter())

    # ------------------------------------------------------------------ helpers
    def _rows_to_draw(self, mask: torch.Tensor) -> tuple[torch.Tensor | None, int]:
        """For ``_reset_state``: the rows to draw new state for, and how many. With ``static_shapes``
        ``(None, num_envs)``: every row draws and :meth:`_write_rows` keeps the masked ones. Otherwise
        the masked rows' indices (one host sync) and their count."""
        if self.static_shapes:
            return None, self.num_envs
        rows = torch.nonzero(mask).squeeze(-1)
        return rows, rows.numel()

    def _write_rows(self, mask: torch.Tensor, rows: torch.Tensor | None, **values) -> None:
        """Store freshly drawn state (``name=`` a tensor over the drawn rows, or a number for all of
        them) into the state attribute ``name``, in the reset rows only; ``rows`` from :meth:`_rows_to_draw`."""
        for name, value in values.items():
            old = getattr(self, name)
            if rows is None:
                new = torch.where(mask.view(-1, *[1] * (old.dim() - 1)), value, old)
            elif isinstance(value, torch.Tensor):
                new = old.index_copy(0, rows, value)
            else:
                new = old.index_fill(0, rows, value)
            setattr(self, name, new)

    def _reset_rows(self, mask: torch.Tensor, *, new_run: bool) -> None:
        self._reset_state(mask, new_run=new_run)
        self._elapsed = torch.where(mask, 0, self._elapsed)
        self._episode_return = torch.where(mask, 0.0, self._episode_return)
        self._episode_start = torch.where(mask, time.perf_counter(), self._episode_start)
        self._done = self._done & ~mask

    def _as_mask(self, mask) -> torch.Tensor:
        mask = torch.as_tensor(mask, device=self.device)
        if mask.dtype != torch.bool or mask.shape != (self.num_envs,):
            raise EnvError(
                f"reset_mask must be a bool array of shape ({self.num_envs},), "
                f"got dtype {mask.dtype} shape {tuple(mask.shape)}"
            )
        return mask

    def _as_actions(self, actions) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(np.asarray(actions), device=self.device)
        elif actions.device != self.device:
            actions = actions.to(self.device)
        space = self.single_action_space
        expected = (self.num_envs, *space.shape)
        if tuple(actions.shape) != expected:
            raise EnvError(f"actions must have shape {expected}, got {tuple(actions.shape)}")
        if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
            if actions.dtype.is_floating_point or actions.dtype == torch.bool:
                raise EnvError(f"actions must be integers for {space}, got dtype {actions.dtype}")
            if self.check_actions:
                low = torch.as_tensor(np.asarray(space.start), device=self.device)
                high = low + torch.as_tensor(np.asarray(space.n), device=self.device)
                bad = (actions < low) | (actions >= high)
                if bool(bad.any()):
                    i = int(torch.nonzero(bad.reshape(self.num_envs, -1).any(-1))[0])
                    raise EnvError(
                        f"action {actions[i].tolist()} of env {i} is out of range for {space} "
                        f"(valid: {int(low.min())}..{int(high.max()) - 1})"
                    )
            actions = actions.long()
        return actions

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) floats from the env's private generator."""
        return torch.rand(shape, generator=self.generator, device=self.device)

    def randint(self, low: int, high, shape: tuple[int, ...]) -> torch.Tensor:
        """Integers in ``[low, high)`` from the private generator; ``high`` may be a tensor."""
        if isinstance(high, torch.Tensor):
            u = torch.rand(shape, generator=self.generator, device=self.device)
            return low + (u * (high - low)).long()
        return torch.randint(low, high, shape, generator=self.generator, device=self.device)


class SingleEnvView(gym.Env):
    """One environment of a :class:`TorchVectorEnv` as a plain numpy ``gymnasium.Env``.

    This is what ``gymnasium.make("modrl/...")`` returns: it passes
    ``gymnasium.utils.env_checker.check_env`` and trains under stable-baselines3. The last step
    of an episode carries ``info["is_success"]`` (SB3's success-rate convention).
    """

    def __init__(self, vec_env: TorchVectorEnv):
        if vec_env.num_envs != 1 or vec_env.autoreset_mode != AutoresetMode.DISABLED:
            raise EnvError("SingleEnvView needs a vector env with num_envs=1 and autoreset DISABLED")
        self.vec = vec_env
        self.observation_space = vec_env.single_observation_space
        self.action_space = vec_env.single_action_space
        self.render_mode = vec_env.render_mode
        # No "torch" flag here: this view speaks numpy.
        self.metadata = {"render_modes": list(vec_env.metadata["render_modes"]), "render_fps": 4}

    @staticmethod
    def _to_numpy(obs: Obs):
        # ``arr[()]`` turns a 0-d array into a numpy scalar (np.int64 for Discrete spaces).
        return _tree_map(lambda t: t[0].cpu().numpy()[()], obs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=seed)
        return self._to_numpy(obs), {}

    def step(self, action):
        batched = torch.as_tensor(np.asarray(action), device=self.vec.device).reshape(1, *self.action_space.shape)
        obs, reward, terminated, truncated, info = self.vec.step(batched)
        # On every step (False until the step that solves the task), so that an episode cut by a
        # TimeLimit wrapper outside this view still reports is_success at its last step.
        out_info = {"is_success": bool(info["episode"]["success"][0])}
        return self._to_numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out_info

    def render(self):
        return self.vec.render()


def single_env_factory(vec_cls: type[TorchVectorEnv]):
    """An ``entry_point`` for ``gymnasium.register`` building a :class:`SingleEnvView` of ``vec_cls``."""

    def make(**kwargs) -> SingleEnvView:
        kwargs.pop("num_envs", None)
        kwargs["autoreset_mode"] = AutoresetMode.DISABLED
        return SingleEnvView(vec_cls(num_envs=1, **kwargs))

    make.__name__ = f"make_single_{vec_cls.__name__}"
    return make
