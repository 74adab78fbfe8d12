"""What the policy-sketch worlds share (Andreas, Klein & Levine 2017): a fixed list of tasks, each
with a sketch over a set of sub-task (module) symbols, splits of the tasks, a task distribution settable
between updates, and the sketch pointer that STOP moves (reward on the STOP that passes the last
sketch step with the goal satisfied; optionally a TERMINATE action for sketch-free controllers).

``task_groups=G`` gives the rows G independent task distributions (row i samples from group
i mod G, each set with ``set_task_distribution(..., group=g)``): independent runs — each with its
own curriculum — can then share one batched env.

A world (``CraftVectorEnv``, ``MazeVectorEnv``) subclasses :class:`SketchTaskEnv` with class
attributes ``TASKS``, ``SKETCH_SETS`` (name → {task: sketch}), ``SPLITS`` (and optionally
``SYMBOL_ORDER``), and implements
``_world_step(actions)`` (primitive actions), ``_goal_satisfied()`` and ``_observe(rows=None)`` (every
row, or only ``rows``: after an autoreset only the reset rows are observed again).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from modrl.vec import EnvError, TorchVectorEnv


class SketchTaskEnv(TorchVectorEnv):
    """Tasks, sketches, splits and the STOP / TERMINATE protocol over a batched world.

    Actions: the world's ``num_world_actions`` primitive actions, then STOP (moves the env's sketch
    pointer; past the sketch's last step it ends the episode, rewarded 1 when the goal is
    satisfied), then TERMINATE with ``terminate_action`` (ends the episode, same reward; STOP then
    never ends it). ``env.task`` and ``info["task"]`` hold each env's task index.

    Subgoals: each symbol's job, read off the world's state. ``subgoal_features()`` ``[N, F]``
    summarises each env's state (Craft: the inventory counts; Maze: the room) and ``info
    ["subgoal_features"]`` the same at the step's end, before an autoreset; ``subgoal_targets``
    ``[S, F]`` holds each symbol's signed features (+1: should rise, −1: should fall; Craft's
    ``get_wood`` +1 on wood, ``make1`` +1 on each of workshop 1's products; Maze's ``left`` −1 on
    the room's x). A module run of symbol s achieved its subgoal when ``targets[s] · Δfeatures`` has
    a positive entry over the run; ``subgoal_defined[s]`` is False for symbols with no target (e.g.
    Maze's independent-set symbols, whole walks).
    """

    TASKS: tuple[str, ...] = ()
    SKETCH_SETS: dict[str, dict[str, tuple[str, ...]]] = {}
    SPLITS: dict[str, tuple[str, ...]] = {}
    SYMBOL_ORDER: dict[str, tuple[str, ...]] = {}
    """Per sketch set, the order of the module symbols (default: order of first appearance)."""
    WORLD = "sketch"

    def __init__(
        self,
        num_envs: int,
        *,
        num_world_actions: int,
        observation_space: gym.Space,
        split: str,
        tasks: list[str] | None,
        sketch_set: str,
        terminate_action: bool,
        max_episode_steps: int,
        device,
        autoreset_mode,
        render_mode,
        static_shapes: bool | None = None,
        task_groups: int = 1,
    ):
        if tasks is None:
            if split not in self.SPLITS:
                raise EnvError(f"unknown split {split!r}; splits: {', '.join(self.SPLITS)}")
            tasks = list(self.SPLITS[split])
        unknown = [t for t in tasks if t not in self.TASKS]
        if unknown:
            raise EnvError(f"unknown {self.WORLD} tasks {unknown}; tasks: {', '.join(self.TASKS)}")
        if sketch_set not in self.SKETCH_SETS:
            raise EnvError(f"unknown sketch_set {sketch_set!r}; sketch sets: {', '.join(self.SKETCH_SETS)}")
        if not isinstance(num_envs, int) or num_envs < 1:
            raise EnvError(f"num_envs must be a positive int, got {num_envs!r}")
        if not (isinstance(task_groups, int) and 1 <= task_groups <= num_envs):
            raise EnvError(f"task_groups must be an integer in [1, num_envs = {num_envs}], got {task_groups!r}")
        self.stop_action = num_world_actions
        self.terminate_action = terminate_action
        super().__init__(
            num_envs,
            single_observation_space=observation_space,
            single_action_space=gym.spaces.Discrete(num_world_actions + 1 + int(terminate_action)),
            max_episode_steps=max_episode_steps,
            device=device,
            render_mode=render_mode,
            static_shapes=static_shapes,
            **({"autoreset_mode": autoreset_mode} if autoreset_mode is not None else {}),
        )
        dev = self.device
        self.task_names = self.TASKS
        sketches = self.SKETCH_SETS[sketch_set]
        symbols = list(self.SYMBOL_ORDER.get(sketch_set, ()))
        for task in self.TASKS:  # then in order of first appearance
            for symbol in sketches[task]:
                if symbol not in symbols:  # (go[LL] once listed left twice: a fifth, dead module)
                    symbols.append(symbol)
        self.symbols = tuple(symbols)
        longest = max(len(s) for s in sketches.values())
        table = torch.full((len(self.TASKS), longest), -1, dtype=torch.long)
        for i, task in enumerate(self.TASKS):
            table[i, : len(sketches[task])] = torch.tensor([self.symbols.index(s) for s in sketches[task]])
        self.sketches = table.to(dev)  # [T, L] symbol indices, −1 padded
        self.sketch_lengths = torch.tensor([len(sketches[t]) for t in self.TASKS], device=dev)
        self.task = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.pointer = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.task_groups = task_groups
        self.task_group = torch.arange(num_envs, device=dev) % task_groups  # row i samples with group i mod G
        # [T], or [G, T] with task groups
        self.task_weights = torch.zeros(*((task_groups,) if task_groups > 1 else ()), len(self.TASKS), device=dev)
        self.set_task_distribution(tasks)
        targets = torch.zeros(len(self.symbols), self.NUM_SUBGOAL_FEATURES)
        for i, symbol in enumerate(self.symbols):
            for feature, sign in self._subgoal_target(symbol).items():
                targets[i, feature] = sign
        self.subgoal_targets = targets.to(dev)
        self.subgoal_defined = (targets != 0).any(1).to(dev)

    # ------------------------------------------------------------------ subgoals
    NUM_SUBGOAL_FEATURES = 1

    def _subgoal_target(self, symbol: str) -> dict[int, int]:
        """The signed features of ``symbol``'s subgoal ({feature: ±1}; empty: none defined)."""
        return {}

    def subgoal_features(self) -> torch.Tensor:
        """float [N, NUM_SUBGOAL_FEATURES]: the state summary the subgoals are judged on."""
        return torch.zeros(self.num_envs, self.NUM_SUBGOAL_FEATURES, device=self.device)

    def _step_info(self) -> dict[str, torch.Tensor]:
        return {"subgoal_features": self.subgoal_features()}

    # ------------------------------------------------------------------ tasks
    def set_task_distribution(self, tasks_or_weights, group: int | None = None) -> None:
        """Sample new episodes' tasks from a list of task names (uniform), or from weights over
        all tasks (a tensor or a {name: weight} dict; e.g. the curriculum's 1 − success + 0.01).

        With ``task_groups`` G > 1 (independent runs sharing one batch, row i in group i mod G):
        ``group`` sets one group's distribution, ``None`` every group's; a ``[G, T]`` tensor sets
        each group's at once."""
        T, G = len(self.TASKS), self.task_groups
        if group is not None and not (isinstance(group, int) and 0 <= group < G):
            raise EnvError(f"group must be an integer in [0, task_groups = {G}), got {group!r}")
        if isinstance(tasks_or_weights, torch.Tensor) and G > 1 and group is None and tasks_or_weights.shape == (G, T):
            for g in range(G):
                self.set_task_distribution(tasks_or_weights[g], g)
            return
        weights = torch.zeros(T, device=self.device)
        if isinstance(tasks_or_weights, torch.Tensor):
            if tasks_or_weights.shape != (T,):
                shapes = f"({T},)" + (f" or ({G}, {T})" if G > 1 and group is None else "")
                raise EnvError(f"task weights must have shape {shapes}, got {tuple(tasks_or_weights.shape)}")
            weights = tasks_or_weights.to(self.device, torch.float32).clone()
        else:
            items = tasks_or_weights.items() if isinstance(tasks_or_weights, dict) else ((t, 1.0) for t in tasks_or_weights)
            for name, w in items:
                if name not in self.TASKS:
                    raise EnvError(f"unknown {self.WORLD} task {name!r}")
                weights[self.TASKS.index(name)] = float(w)
        if not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise EnvError("task weights must be non-negative with a positive sum")
        target = self.task_weights if G == 1 or group is None else self.task_weights[group]
        target.copy_(weights / weights.sum())  # in place: a captured rollout reads this tensor

    def _sample_tasks(self, k: int, rows: torch.Tensor | None) -> torch.Tensor:
        """Tasks for the ``k`` rows being drawn (``rows``, or every row when None), each from its group's weights."""
        if self.task_groups == 1:
            weights = self.task_weights.expand(k, -1)
        else:
            weights = self.task_weights.index_select(0, self.task_group if rows is None else self.task_group.index_select(0, rows))
        return torch.multinomial(weights, 1, generator=self.generator).squeeze(-1)

    # ------------------------------------------------------------------ dynamics
    def _world_step(self, actions: torch.Tensor) -> None:
        """Apply the primitive actions (ids below ``stop_action``; others leave the world unchanged)."""
        raise NotImplementedError

    def _goal_satisfied(self) -> torch.Tensor:
        """bool [N]: each env's task goal holds in its current state."""
        raise NotImplementedError

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._world_step(actions)
        stop = actions == self.stop_action
        self.pointer = self.pointer + stop.long()
        if self.terminate_action:  # sketch-free control: only TERMINATE ends the episode
            finished = actions == self.stop_action + 1
        else:
            finished = stop & (self.pointer >= self.sketch_lengths[self.task])
        return (finished & self._goal_satisfied()).float(), finished

    def _observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The observation of every row, or of the rows ``rows`` only."""
        raise NotImplementedError

    def _observe_reset(self, obs: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        # observe only the reset rows (_reset_state already syncs with the host to find them,
        # so finding them again costs little); with static shapes, every row again
        if self.static_shapes:
            return super()._observe_reset(obs, reset)
        rows = torch.nonzero(reset).squeeze(-1)
        return obs if rows.numel() == 0 else obs.index_copy(0, rows, self._observe(rows))

    def _success(self, reward: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        return reward > 0

    def _episode_info(self) -> dict[str, torch.Tensor]:
        return {"task": self.task.clone()}  # the task of the episode that ended

    def step(self, actions):
        obs, reward, terminated, truncated, info = super().step(actions)
        info["task"] = self.task.clone()
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed=None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        info["task"] = self.task.clone()
        return obs, info
