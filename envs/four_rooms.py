"""Four Rooms, batched, as in the option-critic paper (Bacon, Harb & Precup 2017, §5; Sutton,
Precup & Singh 1999).

- 13×13 grid, 104 free cells numbered row-major (the observation is that cell index);
- actions up, down, left, right; the intended move happens with probability 2/3, otherwise one of
  the other three directions uniformly (1/9 each); a move into a wall leaves the agent in place.
  One move per step: the original code's double move (jeanharb/option_critic#11) is not copied;
- reward +1 on reaching the goal, which terminates the episode; 0 otherwise;
- the goal starts in the east hallway (cell 62, row 7 col 9); the start cell is uniform over the
  other 103 cells;
- ``goal_switch_episode``: at that episode index (counted per env from 0 since the seeded reset)
  the goal moves to a uniform cell of the lower-right room or its west hallway (cells 68–72,
  78–82, 88–93, 99–103) and stays there: the paper's transfer experiment (switch at episode 1000).

Each env row is an independent run, so a batch of N envs with a goal switch is N independent
runs of the paper's experiment.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from modrl.vec import EnvError, TorchVectorEnv

LAYOUT = """\
#############
#     #     #
#     #     #
#           #
#     #     #
#     #     #
## ####     #
#     ### ###
#     #     #
#     #     #
#           #
#     #     #
#############"""

#: (row, col) steps of the actions up, down, left, right
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))
EAST_HALLWAY = 62
LOWER_RIGHT_CELLS = (*range(68, 73), *range(78, 83), *range(88, 94), *range(99, 104))


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Free cells as (row, col) in row-major order, and the next-cell table [cell, action]."""
    grid = np.array([[c == "#" for c in row] for row in LAYOUT.splitlines()])
    cells = np.argwhere(~grid)  # row-major
    index = -np.ones(grid.shape, dtype=np.int64)
    index[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
    nxt = np.empty((len(cells), 4), dtype=np.int64)
    for i, (r, c) in enumerate(cells):
        for a, (dr, dc) in enumerate(MOVES):
            nxt[i, a] = index[r + dr, c + dc] if not grid[r + dr, c + dc] else i
    return cells, nxt


CELLS, NEXT_CELL = _tables()
NUM_CELLS = len(CELLS)  # 104


class FourRoomsVectorEnv(TorchVectorEnv):
    """Batched Four Rooms; see the module docstring. Observation: the agent's cell in [0, 104)."""

    metadata = {**TorchVectorEnv.metadata, "render_modes": ["ansi"]}
    state_keys = ("pos", "goal", "episode_index")

    def __init__(
        self,
        num_envs: int = 1,
        *,
        goal: int = EAST_HALLWAY,
        goal_switch_episode: int | None = None,
        slip_prob: float = 1 / 3,
        max_episode_steps: int = 1000,
        device: str | torch.device = "cpu",
        autoreset_mode=None,
        render_mode: str | None = None,
    ):
        if not 0 <= goal < NUM_CELLS:
            raise EnvError(f"goal must be a cell index in [0, {NUM_CELLS}), got {goal}")
        if not 0.0 <= slip_prob <= 1.0:
            raise EnvError(f"slip_prob must be in [0, 1], got {slip_prob}")
        if goal_switch_episode is not None and goal_switch_episode < 1:
            raise EnvError(f"goal_switch_episode must be >= 1 or None, got {goal_switch_episode}")
        super().__init__(
            num_envs,
            single_observation_space=gym.spaces.Discrete(NUM_CELLS),
            single_action_space=gym.spaces.Discrete(4),
            max_episode_steps=max_episode_steps,
            device=device,
            render_mode=render_mode,
            **({"autoreset_mode": autoreset_mode} if autoreset_mode is not None else {}),
        )
        self.initial_goal = goal
        self.goal_switch_episode = goal_switch_episode
        self.slip_prob = slip_prob
        dev = self.device
        self._next_cell = torch.as_tensor(NEXT_CELL, device=dev).flatten()
        self._switch_cells = torch.as_tensor(LOWER_RIGHT_CELLS, device=dev)
        self.pos = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self.goal = torch.full((num_envs,), goal, dtype=torch.int64, device=dev)
        #: index of the current episode of each env since the seeded reset (-1 before the first)
        self.episode_index = torch.full((num_envs,), -1, dtype=torch.int64, device=dev)

    @staticmethod
    def cells() -> np.ndarray:
        """(row, col) of each observation index, for images over the grid."""
        return CELLS

    def _reset_state(self, mask: torch.Tensor, *, new_run: bool) -> None:
        n = self.num_envs
        if new_run:
            self.goal.fill_(self.initial_goal)
            self.episode_index.fill_(-1)
        self.episode_index = self.episode_index + mask.long()
        if self.goal_switch_episode is not None:
            switch = mask & (self.episode_index == self.goal_switch_episode)
            new_goal = self._switch_cells[self.randint(0, len(LOWER_RIGHT_CELLS), (n,))]
            self.goal = torch.where(switch, new_goal, self.goal)
        # Uniform over the 103 non-goal cells: draw k in [0, 103) and skip the goal.
        k = self.randint(0, NUM_CELLS - 1, (n,))
        start = k + (k >= self.goal).long()
        self.pos = torch.where(mask, start, self.pos)

    def _step_state(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.num_envs
        slip = self.rand(n) < self.slip_prob
        other = (actions + self.randint(1, 4, (n,))) % 4
        move = torch.where(slip, other, actions)
        self.pos = self._next_cell[self.pos * 4 + move]
        at_goal = self.pos == self.goal
        return at_goal.float(), at_goal

    def _observe(self) -> torch.Tensor:
        return self.pos.clone()

    def _render_ansi(self, index: int) -> str:
        rows = [list(r) for r in LAYOUT.splitlines()]
        gr, gc = CELLS[int(self.goal[index])]
        ar, ac = CELLS[int(self.pos[index])]
        rows[gr][gc] = "G"
        rows[ar][ac] = "A"
        return "\n".join("".join(r) for r in rows)
