"""Maze, batched: the rooms-and-doors world of *Modular Multitask RL with Policy Sketches* (Andreas,
Klein & Levine 2017, §5.1, "maze"), with the semantics of the original ``worlds/light.py``.

- Rooms of 6×6 cells; walls on every 6th row and column; a board of (6·rooms_x + 1) × (6·rooms_y + 1)
  cells (here padded with walls to 31 × 31, the largest board the 10 tasks produce).
- A task ``go[<path>]`` is a walk through rooms (L: x − 1, R: x + 1, U: y − 1, D: y + 1); its
  bounding box, padded by U{0, 1} rooms on each side, is the board; the agent starts at the centre
  of the start room and must be in the walk's last room when the final STOP fires.
- Doors: one per walk step at the wall's midpoint, locked with p = 0.5; then min(rooms_x, rooms_y)
  extra doors (none when rooms_x or rooms_y is 1), each joining a random room (x ≤ rooms_x − 2,
  y ≤ rooms_y − 2) to its right or lower neighbour unless that door exists, locked with p = 0.5.
  A locked door's key lies at the centre of the room it was opened from, offset by U{−1..2} per
  axis; two keys on one cell keep only the later door's (the original's dict), leaving the earlier
  door open. A locked door blocks movement until its key is picked up.
- Actions DOWN (y − 1), UP (y + 1), LEFT, RIGHT, USE (pick up the key under the agent), then STOP
  (and TERMINATE) as in every sketch world (``envs/sketch_tasks.py``).
- Observation: 12 distance sensors, strength max(10 − Euclidean distance, 0)/10 summed per group
  and direction (object at ≤ x, ≥ x, ≤ y, ≥ y): locked doors [0:4], open doors [4:8] (both only in
  the two rooms a door joins, and on the door cell itself), keys [8:12] (only inside the key's
  room; none on wall or door cells).

Tasks, sketches (symbols left/right/up/down) and the independent sketch set are the original's
``resources/light/hints*.yaml``. There is no held-out split in the paper's maze experiments.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from modrl.envs.sketch_tasks import SketchTaskEnv
from modrl.vec import TorchVectorEnv

ROOM = 6
MAX_ROOMS = 5
BOARD = ROOM * MAX_ROOMS + 1  # 31
PATHS = ("LL", "LD", "RD", "UL", "UR", "URU", "DRU", "LLD", "RDD", "LUR")
TASKS = tuple(f"go[{p}]" for p in PATHS)
_WORD = {"L": "left", "R": "right", "U": "up", "D": "down"}
SKETCHES = {f"go[{p}]": tuple(_WORD[c] for c in p) for p in PATHS}
INDEPENDENT_SKETCHES = {f"go[{p}]": ("_".join(_WORD[c] for c in p),) for p in PATHS}
SKETCH_SETS = {"paper": SKETCHES, "independent": INDEPENDENT_SKETCHES}
SPLITS = {"all": TASKS, "train": TASKS}
STEP = {"L": (-1, 0), "R": (1, 0), "U": (0, -1), "D": (0, 1)}
DOWN, UP, LEFT, RIGHT, USE = range(5)
MOVES = ((0, -1), (0, 1), (-1, 0), (1, 0), (0, 0), (0, 0), (0, 0))  # + USE, STOP, TERMINATE
MAX_PATH = max(len(p) for p in PATHS)
MAX_DOORS = MAX_PATH + MAX_ROOMS
NUM_FEATURES = 12


def cell(xy: torch.Tensor) -> torch.Tensor:
    """Board cell index x · BOARD + y of positions ``[..., 2]`` (equal cells ⇔ equal positions)."""
    return xy[..., 0] * BOARD + xy[..., 1]


def walk(path: str) -> list[tuple[int, int]]:
    """Rooms visited after each step of ``path``, relative to the start room."""
    x = y = 0
    rooms = []
    for c in path:
        x, y = x + STEP[c][0], y + STEP[c][1]
        rooms.append((x, y))
    return rooms


class MazeVectorEnv(SketchTaskEnv):
    """Batched Maze; see the module docstring."""

    metadata = {**TorchVectorEnv.metadata, "render_modes": ["ansi"]}
    state_keys = ("walls", "pos", "goal_room", "door_pos", "door_valid", "key_pos", "key_present",
                  "task", "pointer", "task_weights")
    TASKS, SKETCH_SETS, SPLITS, WORLD = TASKS, SKETCH_SETS, SPLITS, "Maze"

    def __init__(
        self,
        num_envs: int = 1,
        *,
        split: str = "train",
        tasks: list[str] | None = None,
        sketch_set: str = "paper",
        terminate_action: bool = False,
        max_episode_steps: int = 100,
        device: str | torch.device = "cpu",
        autoreset_mode=None,
        render_mode: str | None = None,
        static_shapes: bool | None = None,
        task_groups: int = 1,
    ):
        super().__init__(
            num_envs,
            num_world_actions=5,
            observation_space=gym.spaces.Box(0.0, float(MAX_DOORS), (NUM_FEATURES,), np.float32),  # ≤ 1 per object
            split=split,
            tasks=tasks,
            sketch_set=sketch_set,
            terminate_action=terminate_action,
            max_episode_steps=max_episode_steps,
            device=device,
            autoreset_mode=autoreset_mode,
            render_mode=render_mode,
            static_shapes=static_shapes,
            task_groups=task_groups,
        )
        n, dev, D = num_envs, self.device, MAX_DOORS
        # per task: the walk's steps, their count, and its room bounding box (start room included)
        steps = torch.zeros(len(TASKS), MAX_PATH, 2, dtype=torch.long)
        box = torch.zeros(len(TASKS), 4, dtype=torch.long)  # l, r, u, d
        for t, p in enumerate(PATHS):
            steps[t, : len(p)] = torch.tensor([STEP[c] for c in p])
            xs, ys = zip((0, 0), *walk(p))
            box[t] = torch.tensor([min(xs), max(xs), min(ys), max(ys)])
        self._steps, self._box = steps.to(dev), box.to(dev)
        self._path_len = torch.tensor([len(p) for p in PATHS], device=dev)
        self._moves = torch.tensor(MOVES, device=dev)
        self._later = torch.triu(torch.ones(D, D, dtype=torch.bool, device=dev), diagonal=1)  # [i, j]: door j after door i
        coords = torch.arange(BOARD, device=dev)
        self._x = coords.view(BOARD, 1).expand(BOARD, BOARD)
        self._y = coords.view(1, BOARD).expand(BOARD, BOARD)
        # per-env state
        self.walls = torch.ones(n, BOARD, BOARD, dtype=torch.bool, device=dev)
        self.pos = torch.zeros(n, 2, dtype=torch.long, device=dev)
        self.goal_room = torch.zeros(n, 2, dtype=torch.long, device=dev)
        self.door_pos = torch.zeros(n, D, 2, dtype=torch.long, device=dev)
        self.door_valid = torch.zeros(n, D, dtype=torch.bool, device=dev)
        self.key_pos = torch.zeros(n, D, 2, dtype=torch.long, device=dev)
        self.key_present = torch.zeros(n, D, dtype=torch.bool, device=dev)  # = the door is locked

    # ------------------------------------------------------------------ map generation
    def _reset_state(self, mask: torch.Tensor, *, new_run: bool) -> None:
        rows, k = self._rows_to_draw(mask)  # the reset rows, or every row with static shapes
        dev, g = self.device, self.generator
        if k == 0:
            return
        task = self._sample_tasks(k, rows)

        def coin(*shape):  # U{0, 1}
            return torch.randint(0, 2, shape, generator=g, device=dev)

        box = self._box[task]
        pad = coin(k, 4)
        left, right = box[:, 0] - pad[:, 0], box[:, 1] + pad[:, 1]
        up, down = box[:, 2] - pad[:, 2], box[:, 3] + pad[:, 3]
        rooms = torch.stack([right - left + 1, down - up + 1], -1)  # [k, 2]
        init = torch.stack([-left, -up], -1)
        size = ROOM * rooms  # the last wall line of the board
        x, y = self._x[None], self._y[None]
        walls = (x % ROOM == 0) | (y % ROOM == 0) | (x > size[:, 0, None, None]) | (y > size[:, 1, None, None])

        # necessary doors: one per walk step, from room p_j to p_j + step_j
        steps = self._steps[task]  # [k, P, 2]
        room_before = torch.cumsum(steps, 1) - steps  # p_j relative to the start room
        centre = ROOM * (init[:, None] + room_before) + ROOM // 2
        nec_valid = torch.arange(MAX_PATH, device=dev)[None] < self._path_len[task][:, None]
        nec_door = centre + ROOM // 2 * steps
        nec_key = centre + torch.randint(0, ROOM // 2 + 1, (k, MAX_PATH, 2), generator=g, device=dev) - 1
        # extra doors: a random room (≤ rooms − 2 on both axes) to its right or lower neighbour
        corner = (torch.rand(k, MAX_ROOMS, 2, generator=g, device=dev) * (rooms[:, None] - 1)).long()
        right_door = coin(k, MAX_ROOMS).bool()
        direction = torch.stack([right_door.long(), (~right_door).long()], -1)
        ex_centre = ROOM * corner + ROOM // 2
        ex_door = ex_centre + ROOM // 2 * direction
        ex_key = ex_centre + torch.randint(0, ROOM // 2 + 1, (k, MAX_ROOMS, 2), generator=g, device=dev) - 1
        attempts = torch.minimum(rooms[:, 0], rooms[:, 1]) * ((rooms > 1).all(-1)).long()
        door = torch.cat([nec_door, ex_door], 1)
        key = torch.cat([nec_key, ex_key], 1)
        door_cell, key_cell = cell(door), cell(key)  # [k, D]
        valid = torch.cat([nec_valid, torch.zeros(k, MAX_ROOMS, dtype=torch.bool, device=dev)], 1)
        for i in range(MAX_ROOMS):  # an extra door is skipped when it already exists
            j = MAX_PATH + i
            exists = ((door_cell[:, :j] == door_cell[:, j : j + 1]) & valid[:, :j]).any(-1)
            valid[:, j] = (i < attempts) & ~exists
        locked = valid & (torch.rand(k, MAX_DOORS, generator=g, device=dev) < 0.5)
        # keys on one cell: the later door's key replaces the earlier's (that door stays open)
        same = (key_cell[:, :, None] == key_cell[:, None, :]) & locked[:, None, :]
        locked = locked & ~(same & self._later).any(-1)
        # open the door cells
        opened = torch.zeros(k, BOARD * BOARD, device=dev).scatter_add(1, door_cell, valid.float()) > 0
        walls = walls & ~opened.view(k, BOARD, BOARD)

        self._write_rows(mask, rows, walls=walls, pos=ROOM * init + ROOM // 2,
                         goal_room=init + steps.sum(1),  # the walk's last room
                         door_pos=door, door_valid=valid, key_pos=key, key_present=locked, task=task, pointer=0)

    # ------------------------------------------------------------------ dynamics
    def _world_step(self, actions: torch.Tensor) -> None:
        # positions compared as board cells (x · BOARD + y): one [N, D] op instead of [N, D, 2] ones
        n = self.num_envs
        target = self.pos + self._moves[actions]
        target_cell = cell(target)
        wall = self.walls.reshape(n, -1).gather(1, target_cell[:, None]).squeeze(1)
        # a locked door (its key not picked up yet) blocks the move
        locked_door = ((cell(self.door_pos) == target_cell[:, None]) & self.door_valid & self.key_present).any(-1)
        blocked = wall | locked_door
        self.pos = torch.where(blocked[:, None], self.pos, target)
        # USE picks up the key under the agent (USE does not move, so the order does not matter)
        on_key = cell(self.key_pos) == cell(self.pos)[:, None]
        self.key_present = self.key_present & ~(on_key & (actions == USE)[:, None])

    def _goal_satisfied(self) -> torch.Tensor:
        return (self.pos // ROOM == self.goal_room).all(-1)

    # ------------------------------------------------------------------ observation
    NUM_SUBGOAL_FEATURES = 2

    def _subgoal_target(self, symbol: str) -> dict[int, int]:
        """``left`` / ``right`` / ``up`` / ``down``: the room's x falls / rises, its y falls / rises
        (U is y − 1); the independent set's whole-walk symbols have none."""
        return {"left": {0: -1}, "right": {0: 1}, "up": {1: -1}, "down": {1: 1}}.get(symbol, {})

    def subgoal_features(self) -> torch.Tensor:
        return (self.pos // ROOM).float()  # the room, [x, y]

    def _observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The observation of every row, or of the rows ``rows`` only.

        Computed with the batch as the innermost (contiguous) dimension — coordinates ``[2, ·, N]`` —
        so that every elementwise op runs over long rows, not over pairs of coordinates as with
        ``[N, D, 2]``; the sums over objects run in object order, as they would over ``[N, D, 4]``,
        so the features are bit for bit those of that layout."""
        pos, door, valid, key, locked = self.pos, self.door_pos, self.door_valid, self.key_pos, self.key_present
        if rows is not None:
            pos, door, valid, key, locked = (x.index_select(0, rows) for x in (pos, door, valid, key, locked))
        D = door.shape[1]
        pos = pos.t().contiguous()[:, None]  # [2, 1, N]
        obj = torch.cat([door, key], 1).permute(2, 1, 0).contiguous()  # [2, 2D, N]: doors, then keys
        valid, locked = valid.t(), locked.t()  # [D, N]
        room = pos // ROOM
        on_line = (pos % ROOM == 0).any(0)  # [1, N]: a wall line (or a door cell)
        delta = (obj - pos).float()
        strength = (10 - delta.pow(2).sum(0).sqrt()).clamp_min(0) / 10  # [2D, N]
        sides = torch.stack([obj[0] <= pos[0], obj[0] >= pos[0], obj[1] <= pos[1], obj[1] >= pos[1]])  # [4, 2D, N]

        def sensors(part: slice, active: torch.Tensor) -> torch.Tensor:
            """Σ over the objects ``part`` of strength · [obj_x ≤ x, obj_x ≥ x, obj_y ≤ y, obj_y ≥ y] → [4, N]."""
            return torch.where(sides[:, part], strength[part] * active.float(), 0.0).sum(1)

        door, key = obj[:, :D], obj[:, D:]
        joins = ((room == (door + 1) // ROOM) | (room == (door - 1) // ROOM)).all(0)  # [D, N]: the two rooms
        at_door = (door == pos).all(0)
        seen = valid & joins & (at_door | ~on_line)
        key_seen = locked & (key // ROOM == room).all(0) & ~on_line
        doors, keys = slice(0, D), slice(D, 2 * D)
        return torch.cat([sensors(doors, seen & locked), sensors(doors, seen & ~locked), sensors(keys, key_seen)]).t().contiguous()

    def _render_ansi(self, index: int) -> str:
        """Rows are y (growing downwards, so the sketch's "up" is up), columns x; @ agent, k key,
        $ locked door, # wall."""
        walls = self.walls[index].cpu()
        keys = {tuple(p) for p, on in zip(self.key_pos[index].tolist(), self.key_present[index].tolist()) if on}
        locked = {tuple(d) for d, v, on in zip(self.door_pos[index].tolist(), self.door_valid[index].tolist(),
                                               self.key_present[index].tolist()) if v and on}
        free = ~walls
        width = int(free.any(1).nonzero().max()) + 2
        height = int(free.any(0).nonzero().max()) + 2
        x0, y0 = self.pos[index].tolist()

        def char(x: int, y: int) -> str:
            if (x, y) == (x0, y0):
                return "@"
            return "k" if (x, y) in keys else "$" if (x, y) in locked else "#" if walls[x, y] else "."

        lines = ["".join(char(x, y) for x in range(width)) for y in range(height)]
        return "\n".join(lines) + f"\ntask {TASKS[int(self.task[index])]}, goal room {self.goal_room[index].tolist()}"
