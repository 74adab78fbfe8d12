"""Craft, batched: the gridworld of *Modular Multitask RL with Policy Sketches* (Andreas, Klein &
Levine 2017, §5.1), with the semantics of the original ``worlds/craft.py`` (jacobandreas/psketch).

- 10×10 grid with a boundary ring, indexed [x, y] with y growing upwards; at most one kind per
  cell; the agent is not in the grid. Kinds are numbered from 1 (channel 0 is never set):
  boundary 1, workshop0–2 2–4, water 5, stone 6, iron 7, grass 8, wood 9, gold 10, gem 11, and the
  crafted items in a fixed order (the original's was Python 2 dict order): plank 12, stick 13,
  cloth 14, rope 15, bridge 16, bed 17, axe 18, shears 19, ladder 20.
- Actions DOWN 0, UP 1, LEFT 2, RIGHT 3, USE 4, and STOP 5 (the sketch sub-policies' STOP, which
  moves the env's sketch pointer). A move sets the facing direction and moves only into an empty
  cell. USE acts on the faced cell: pick up any non-environment kind; at a workshop fire, in
  recipe-file order, every recipe whose inputs are all held (one USE can craft several items);
  water needs a bridge and consumes it; stone needs an axe and keeps it.
- A fresh map per episode: 4 each of iron, grass, wood and the 3 workshops at uniform free cells,
  then the agent; for get[gold] / get[gem] first the treasure at (1 + U{0..7}, 1) inside a 3×3
  block of water / stone.
- Observation (1076 floats, the original features): a 5×5 one-hot window around the agent
  (x, y, kind order), a 25×25 window max-pooled to 5×5, inventory counts (21), facing one-hot (4),
  and a constant 0. ``task_in_obs`` appends a one-hot of the task (for sketch-free baselines).
- ``terminate_action``: for controllers that get no sketch (adaptation, the option-critic
  baseline): a 7th action TERMINATE (6) ends the episode, rewarded when the goal is held, and
  STOP never does (it is a no-op tick, as in the original's sketch-free model).
- ``static_shapes`` (default: on CUDA only; ``modrl/vec.py``): resets draw a map for every row and
  keep it where a row is reset, with no host sync; off, only the reset rows draw. Same distribution,
  different draws.
- ``sketch_set``: ``paper`` (the paper's sketches over 8 shared symbols) or ``independent`` (the
  original's ``hints.indep.yaml``: one symbol per task, so one STOP ends the episode).
- Reward 1 only on the step where the sketch pointer passes the task's last step (a STOP) with the
  goal item held; that step terminates the episode. 100 steps per episode, STOP steps counted
  (truncation).

Tasks are data: ``task_names``, their sketches, the splits ``train`` (8 tasks) and ``heldout``
(make[bed], make[axe]); ``set_task_distribution`` changes the task weights between updates
without rebuilding the env. The current task of each env is ``env.task`` and ``info["task"]``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from modrl.envs.sketch_tasks import SketchTaskEnv
from modrl.vec import TorchVectorEnv

KINDS = (
    "boundary", "workshop0", "workshop1", "workshop2", "water", "stone",
    "iron", "grass", "wood", "gold", "gem",
    "plank", "stick", "cloth", "rope", "bridge", "bed", "axe", "shears", "ladder",
)  # fmt: skip
KIND = {name: i + 1 for i, name in enumerate(KINDS)}
NUM_KINDS = len(KINDS) + 1  # 21 channels, channel 0 unused
GRABBABLE_FROM = KIND["iron"]  # kinds ≥ 7 can be picked up

#: recipes in the order of the original recipes.yaml: (output, workshop, {input: count})
RECIPES = (
    ("plank", "workshop0", {"wood": 1}),
    ("axe", "workshop0", {"stick": 1, "iron": 1}),
    ("rope", "workshop0", {"grass": 1}),
    ("stick", "workshop1", {"wood": 1}),
    ("bed", "workshop1", {"plank": 1, "grass": 1}),
    ("shears", "workshop1", {"stick": 1, "iron": 1}),
    ("cloth", "workshop2", {"grass": 1}),
    ("bridge", "workshop2", {"wood": 1, "iron": 1}),
    ("ladder", "workshop2", {"plank": 1, "stick": 1}),
)

#: module symbols of the sketches (the shared inventory of sub-policies)
SYMBOLS = ("get_wood", "get_grass", "get_iron", "get_gold", "get_gem", "make0", "make1", "make2")

#: the 10 tasks of the paper with their sketches (resources/craft/hints.yaml), goal item = task's item
SKETCHES = {
    "make[plank]": ("get_wood", "make0"),
    "make[stick]": ("get_wood", "make1"),
    "make[cloth]": ("get_grass", "make2"),
    "make[rope]": ("get_grass", "make0"),
    "make[bridge]": ("get_iron", "get_wood", "make2"),
    "make[bed]": ("get_wood", "make0", "get_grass", "make1"),
    "make[axe]": ("get_wood", "make1", "get_iron", "make0"),
    "make[shears]": ("get_wood", "make1", "get_iron", "make1"),
    "get[gold]": ("get_iron", "get_wood", "make2", "get_gold"),
    "get[gem]": ("get_wood", "make1", "get_iron", "make0", "get_gem"),
}
TASKS = tuple(SKETCHES)
SPLITS = {
    "all": TASKS,
    "heldout": ("make[bed]", "make[axe]"),
    "train": tuple(t for t in TASKS if t not in ("make[bed]", "make[axe]")),
}

DOWN, UP, LEFT, RIGHT, USE, STOP, TERMINATE = range(7)  # STOP / TERMINATE: see SketchTaskEnv
#: (dx, dy) of DOWN, UP, LEFT, RIGHT (y grows upwards)
DIRECTIONS = ((0, -1), (0, 1), (-1, 0), (1, 0))
SIZE = 10
NUM_FEATURES = 2 * 5 * 5 * NUM_KINDS + NUM_KINDS + 4 + 1  # 1076


SHOPS = ("workshop0", "workshop1", "workshop2")
SHOP0 = KIND["workshop0"]  # the workshops' kinds are consecutive


def _recipe_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """RECIPES by workshop, ``[workshop, slot, kind]`` int32: ``need`` (the inputs' counts) and
    ``gain`` (output one-hot − inputs) of each workshop's recipes in file order; a slot past a
    workshop's last recipe needs an impossible count, so it never fires."""
    by_shop = [[(out, needs) for out, shop, needs in RECIPES if shop == name] for name in SHOPS]
    slots = max(len(r) for r in by_shop)
    need = torch.zeros(len(SHOPS), slots, NUM_KINDS, dtype=torch.int32)
    gain = torch.zeros_like(need)
    for w, recipes in enumerate(by_shop):
        need[w, len(recipes):, 0] = torch.iinfo(torch.int32).max
        for j, (out, needs) in enumerate(recipes):
            for k, count in needs.items():
                need[w, j, KIND[k]] = count
            gain[w, j] = -need[w, j]
            gain[w, j, KIND[out]] += 1
    return need, gain


def goal_item(task: str) -> str:
    return task[task.index("[") + 1 : -1]


#: the original's ``hints.indep.yaml``: one symbol per task (the "independent" baseline, no sharing)
INDEPENDENT_SKETCHES = {task: (f"{task[: task.index('[')]}_{goal_item(task)}",) for task in TASKS}
SKETCH_SETS = {"paper": SKETCHES, "independent": INDEPENDENT_SKETCHES}


class CraftVectorEnv(SketchTaskEnv):
    """Batched Craft; see the module docstring."""

    metadata = {**TorchVectorEnv.metadata, "render_modes": ["ansi"]}
    state_keys = ("grid", "pos", "facing", "inventory", "task", "pointer", "task_weights")
    TASKS, SKETCH_SETS, SPLITS, SYMBOL_ORDER, WORLD = TASKS, SKETCH_SETS, SPLITS, {"paper": SYMBOLS}, "Craft"

    def __init__(
        self,
        num_envs: int = 1,
        *,
        split: str = "train",
        tasks: list[str] | None = None,
        task_in_obs: bool = False,
        sketch_set: str = "paper",
        terminate_action: bool = False,
        max_episode_steps: int = 100,
        device: str | torch.device = "cpu",
        autoreset_mode=None,
        render_mode: str | None = None,
        static_shapes: bool | None = None,
        task_groups: int = 1,
    ):
        self.task_in_obs = task_in_obs
        features = NUM_FEATURES + (len(TASKS) if task_in_obs else 0)
        super().__init__(
            num_envs,
            num_world_actions=5,
            observation_space=gym.spaces.Box(0.0, 255.0, (features,), np.float32),
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
        n, dev = num_envs, self.device
        self.goal_kind = torch.tensor([KIND[goal_item(t)] for t in TASKS], device=dev)
        self._directions = torch.tensor(DIRECTIONS, device=dev)
        self._recipe_need, self._recipe_gain = (t.to(dev) for t in _recipe_tables())
        # per-env state
        self.grid = torch.zeros(n, SIZE, SIZE, dtype=torch.uint8, device=dev)
        self.pos = torch.zeros(n, 2, dtype=torch.long, device=dev)
        self.facing = torch.zeros(n, dtype=torch.long, device=dev)
        self.inventory = torch.zeros(n, NUM_KINDS, dtype=torch.int32, device=dev)
        # constants for map generation and features
        ring = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
        ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = KIND["boundary"]
        self._ring = ring.to(dev)
        xs = torch.arange(SIZE, device=dev)
        self._cell_x = xs.view(SIZE, 1).expand(SIZE, SIZE).reshape(-1)
        self._cell_y = xs.view(1, SIZE).expand(SIZE, SIZE).reshape(-1)
        # per agent cell: the flat index of each local-window cell (−1 outside the grid), and the
        # coarse block (0–24) of every grid cell
        ax, ay = self._cell_x.view(-1, 1), self._cell_y.view(-1, 1)  # agent cell
        d = torch.arange(-2, 3, device=dev)
        wx, wy = ax[:, :, None] + d.view(1, 5, 1), ay[:, :, None] + d.view(1, 1, 5)  # [100, 5, 5]
        inside = (wx >= 0) & (wx < SIZE) & (wy >= 0) & (wy < SIZE)
        self._window_cells = torch.where(inside, wx * SIZE + wy, -1).view(SIZE * SIZE, 25)
        bx = (self._cell_x.view(1, -1) - ax + 12) // 5
        by = (self._cell_y.view(1, -1) - ay + 12) // 5
        self._cell_block = bx * 5 + by  # [agent cell, cell]
        self._placed = torch.tensor(
            [KIND["iron"]] * 4 + [KIND["grass"]] * 4 + [KIND["wood"]] * 4 + [KIND[f"workshop{i}"] for i in range(3)],
            dtype=torch.uint8, device=dev,
        )

    # ------------------------------------------------------------------ map generation
    def _reset_state(self, mask: torch.Tensor, *, new_run: bool) -> None:
        # new maps for the reset rows (a few % of the batch per step), or for all rows with static shapes
        rows, k = self._rows_to_draw(mask)
        dev = self.device
        if k == 0:
            return
        task = self._sample_tasks(k, rows)
        grid = self._ring.reshape(1, -1).repeat(k, 1)
        goal = self.goal_kind[task]
        # treasure inside a 3×3 block of water (gold) or stone (gem), on the row above the bottom wall
        treasure = (goal == KIND["gold"]) | (goal == KIND["gem"])
        tx = 1 + torch.randint(0, 8, (k,), generator=self.generator, device=dev)
        ty = torch.ones(k, dtype=torch.long, device=dev)
        wall = torch.where(goal == KIND["gold"], KIND["water"], KIND["stone"]).to(torch.uint8)
        near = ((self._cell_x - tx[:, None]).abs() <= 1) & ((self._cell_y - ty[:, None]).abs() <= 1)
        block = treasure[:, None] & near & (grid == 0)
        grid = torch.where(block, wall[:, None], grid)
        centre = (self._cell_x == tx[:, None]) & (self._cell_y == ty[:, None])
        grid = torch.where(treasure[:, None] & centre, goal[:, None].to(torch.uint8), grid)
        # 4 each of iron, grass, wood, the 3 workshops, then the agent, at uniform free cells:
        # the 16 top-scoring free cells under i.i.d. uniform scores are a uniform ordered sample
        # without replacement — the original's one-by-one placement, in one batched op
        scores = torch.rand(grid.shape, generator=self.generator, device=dev)
        cells = torch.where(grid == 0, scores, -1.0).topk(len(self._placed) + 1, dim=-1).indices
        grid = grid.scatter(1, cells[:, :-1], self._placed.expand(k, -1))
        agent = cells[:, -1]
        self._write_rows(mask, rows, grid=grid.view(k, SIZE, SIZE), pos=torch.stack([agent // SIZE, agent % SIZE], -1),
                         facing=DOWN, inventory=0, task=task, pointer=0)

    # ------------------------------------------------------------------ dynamics
    def _world_step(self, actions: torch.Tensor) -> None:
        n = self.num_envs
        move = actions < USE
        self.facing = torch.where(move, actions, self.facing)
        front = self.pos + self._directions[self.facing]
        front_flat = front[:, 0] * SIZE + front[:, 1]
        flat = self.grid.view(n, -1)
        front_kind = flat.gather(1, front_flat[:, None]).squeeze(1).long()
        # move into an empty cell
        self.pos = torch.where((move & (front_kind == 0))[:, None], front, self.pos)
        # USE on the faced cell
        use = actions == USE
        grab = use & (front_kind >= GRABBABLE_FROM)
        inv = self.inventory.scatter_add(1, front_kind[:, None], grab.int()[:, None])
        cross = use & (front_kind == KIND["water"]) & (inv[:, KIND["bridge"]] > 0)
        inv[:, KIND["bridge"]] -= cross.int()
        break_stone = use & (front_kind == KIND["stone"]) & (inv[:, KIND["axe"]] > 0)
        clear = grab | cross | break_stone
        flat = flat.scatter(1, front_flat[:, None], torch.where(clear, 0, front_kind).to(torch.uint8)[:, None])
        # at a workshop, its recipes in file order (an env faces one workshop: slot j is its j-th)
        at_shop = use & (front_kind >= SHOP0) & (front_kind < SHOP0 + len(SHOPS))
        shop = (front_kind - SHOP0).clamp(0, len(SHOPS) - 1)
        need, gain = self._recipe_need.index_select(0, shop), self._recipe_gain.index_select(0, shop)
        for j in range(need.shape[1]):
            fire = at_shop & (inv >= need[:, j]).all(-1)
            inv = inv + fire.int()[:, None] * gain[:, j]
        self.inventory = inv
        self.grid = flat.view(n, SIZE, SIZE)

    def _goal_satisfied(self) -> torch.Tensor:
        return self.inventory.gather(1, self.goal_kind[self.task][:, None]).squeeze(1) > 0

    # ------------------------------------------------------------------ observation
    NUM_SUBGOAL_FEATURES = NUM_KINDS

    def _subgoal_target(self, symbol: str) -> dict[int, int]:
        """``get_<item>`` / ``make_<item>``: that item's count rises; ``make<k>``: the count of one of
        workshop k's products rises."""
        verb, _, item = symbol.partition("_")
        if item in KIND:
            return {KIND[item]: 1}
        if verb.startswith("make") and verb[4:].isdigit() and f"workshop{verb[4:]}" in SHOPS:
            return {KIND[out]: 1 for out, shop, _ in RECIPES if shop == f"workshop{verb[4:]}"}
        return {}

    def subgoal_features(self) -> torch.Tensor:
        return self.inventory.float()

    def _observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The observation of every row, or of the rows ``rows`` only."""
        grid, pos, inventory, facing, task = self.grid, self.pos, self.inventory, self.facing, self.task
        if rows is not None:
            grid, pos, inventory, facing, task = (x.index_select(0, rows) for x in (grid, pos, inventory, facing, task))
        n = grid.shape[0]
        grid = grid.view(n, SIZE * SIZE).long()
        out = torch.zeros(n, self.single_observation_space.shape[0], device=self.device)
        window, blocks = 25 * NUM_KINDS, 25 * NUM_KINDS
        # local 5×5 window, flattened in (x, y, kind) order; outside the grid reads as empty
        pos_flat = pos[:, 0] * SIZE + pos[:, 1]
        cell = self._window_cells.index_select(0, pos_flat)  # [N, 25], −1 outside the grid
        kinds = grid.gather(1, cell.clamp(min=0)) * (cell >= 0)
        # (kind 0, empty, is not a feature: its slot is written 0 and stays 0)
        out[:, :window].view(n, 25, NUM_KINDS).scatter_(2, kinds[:, :, None], (kinds > 0).float()[:, :, None])
        # coarse map: the 25×25 window (± 12) max-pooled in 5×5 blocks; cell c falls in the
        # precomputed block _cell_block[agent cell, c]: mark (block, kind) pairs present
        block = self._cell_block.index_select(0, pos_flat)  # [N, 100]
        out[:, window : window + blocks].scatter_(1, block * NUM_KINDS + grid, (grid > 0).float())
        base = window + blocks
        out[:, base : base + NUM_KINDS] = inventory
        out[:, base + NUM_KINDS : base + NUM_KINDS + 4].scatter_(1, facing[:, None], 1.0)
        # then one constant 0, and the task one-hot when task_in_obs
        if self.task_in_obs:
            out[:, NUM_FEATURES:].scatter_(1, task[:, None], 1.0)
        return out

    def _render_ansi(self, index: int) -> str:
        chars = {0: ".", KIND["boundary"]: "#", KIND["water"]: "~", KIND["stone"]: "%",
                 KIND["workshop0"]: "0", KIND["workshop1"]: "1", KIND["workshop2"]: "2", KIND["gold"]: "$", KIND["gem"]: "*"}
        grid = self.grid[index].cpu().numpy()
        x, y = self.pos[index].tolist()
        lines = []
        for row_y in reversed(range(SIZE)):
            line = ""
            for col_x in range(SIZE):
                k = int(grid[col_x, row_y])
                ch = "@" if (col_x, row_y) == (x, y) else chars.get(k, KINDS[k - 1][0] if k else ".")
                line += ch
            lines.append(line)
        task = TASKS[int(self.task[index])]
        held = {KINDS[k - 1]: int(v) for k, v in enumerate(self.inventory[index].tolist()) if v and k}
        return "\n".join(lines) + f"\ntask {task}, step {int(self.pointer[index])}, inventory {held}"
