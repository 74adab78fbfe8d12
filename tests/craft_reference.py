"""A small, obviously-correct single-env Craft written from the spec (../shared/reference/
craft_and_sketches.md §1) in plain Python, for lock-step tests of the batched env. It takes its
initial state from the batched env: map generation is tested separately by invariants."""

from __future__ import annotations

from modrl.envs.craft import KIND, KINDS, NUM_KINDS, RECIPES, SKETCHES, SIZE, TASKS, goal_item

MOVES = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}


class ReferenceCraft:
    def __init__(self, grid, pos, facing, inventory, task, max_steps=100):
        self.grid = [[int(grid[x][y]) for y in range(SIZE)] for x in range(SIZE)]
        self.x, self.y = int(pos[0]), int(pos[1])
        self.facing = int(facing)
        self.inventory = [int(v) for v in inventory]
        self.task = TASKS[int(task)]
        self.pointer = 0
        self.steps = 0
        self.max_steps = max_steps

    def step(self, action):
        """Return (reward, terminated, truncated)."""
        self.steps += 1
        if action in MOVES:
            self.facing = action
            dx, dy = MOVES[action]
            if self.grid[self.x + dx][self.y + dy] == 0:
                self.x, self.y = self.x + dx, self.y + dy
        elif action == 4:
            dx, dy = MOVES[self.facing]
            fx, fy = self.x + dx, self.y + dy
            kind = self.grid[fx][fy]
            name = KINDS[kind - 1] if kind else None
            if name in ("workshop0", "workshop1", "workshop2"):
                for output, shop, needs in RECIPES:
                    if shop == name and all(self.inventory[KIND[k]] >= c for k, c in needs.items()):
                        for k, c in needs.items():
                            self.inventory[KIND[k]] -= c
                        self.inventory[KIND[output]] += 1
            elif name == "water":
                if self.inventory[KIND["bridge"]] > 0:
                    self.inventory[KIND["bridge"]] -= 1
                    self.grid[fx][fy] = 0
            elif name == "stone":
                if self.inventory[KIND["axe"]] > 0:
                    self.grid[fx][fy] = 0
            elif name is not None and name != "boundary":
                self.inventory[kind] += 1
                self.grid[fx][fy] = 0
        elif action == 5:
            self.pointer += 1
            if self.pointer >= len(SKETCHES[self.task]):
                held = self.inventory[KIND[goal_item(self.task)]] > 0
                return (1.0 if held else 0.0), True, False
        return 0.0, False, self.steps >= self.max_steps

    def features(self):
        """The original 1076 features: local 5×5 one-hot, coarse 5×5 max-pool, inventory, facing, 0."""
        def one_hot(x, y):
            v = [0.0] * NUM_KINDS
            if 0 <= x < SIZE and 0 <= y < SIZE and self.grid[x][y]:
                v[self.grid[x][y]] = 1.0
            return v

        local = []
        for dx in range(-2, 3):
            for dy in range(-2, 3):
                local += one_hot(self.x + dx, self.y + dy)
        coarse = []
        for bx in range(5):
            for by in range(5):
                v = [0.0] * NUM_KINDS
                for ix in range(5):
                    for iy in range(5):
                        cell = one_hot(self.x - 12 + 5 * bx + ix, self.y - 12 + 5 * by + iy)
                        v = [max(a, b) for a, b in zip(v, cell)]
                coarse += v
        facing = [0.0] * 4
        facing[self.facing] = 1.0
        return local + coarse + [float(v) for v in self.inventory] + facing + [0.0]
