"""A small, obviously-correct single-env Maze written from the spec (../shared/reference/
craft_and_sketches.md §3 and the original ``worlds/light.py``) in plain Python, for lock-step tests
of the batched env. It takes its layout from the batched env: map generation is tested separately."""

from __future__ import annotations

import math

from modrl.envs.maze import ROOM, SKETCHES, TASKS

MOVES = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}


class ReferenceMaze:
    def __init__(self, env, i, max_steps=100):
        walls = env.walls[i].tolist()
        self.walls = {(x, y) for x in range(len(walls)) for y in range(len(walls)) if walls[x][y]}
        self.doors = [tuple(d) for d, v in zip(env.door_pos[i].tolist(), env.door_valid[i].tolist()) if v]
        # keys: position -> the door it opens
        self.keys = {tuple(k): tuple(d) for k, d, on in zip(env.key_pos[i].tolist(), env.door_pos[i].tolist(),
                                                             env.key_present[i].tolist()) if on}
        self.x, self.y = env.pos[i].tolist()
        self.goal_room = tuple(env.goal_room[i].tolist())
        self.task = TASKS[int(env.task[i])]
        self.pointer = 0
        self.steps = 0
        self.max_steps = max_steps

    def step(self, action):
        """Return (reward, terminated, truncated)."""
        self.steps += 1
        if action in MOVES:
            dx, dy = MOVES[action]
            nx, ny = self.x + dx, self.y + dy
            locked = (nx, ny) in self.doors and (nx, ny) in self.keys.values()
            if (nx, ny) not in self.walls and not locked:
                self.x, self.y = nx, ny
        elif action == 4:
            self.keys.pop((self.x, self.y), None)
        elif action == 5:
            self.pointer += 1
            if self.pointer >= len(SKETCHES[self.task]):
                inside = (self.x // ROOM, self.y // ROOM) == self.goal_room
                return (1.0 if inside else 0.0), True, False
        return 0.0, False, self.steps >= self.max_steps

    def features(self):
        out = [0.0] * 12
        x, y = self.x, self.y
        rx, ry = x // ROOM, y // ROOM
        on_wall_line = x % ROOM == 0 or y % ROOM == 0

        def add(offset, ox, oy):
            strength = max(10 - math.sqrt((x - ox) ** 2 + (y - oy) ** 2), 0) / 10
            for channel, on in enumerate((ox <= x, ox >= x, oy <= y, oy >= y)):
                if on:
                    out[offset + channel] += strength

        for dx, dy in self.doors:
            if rx not in ((dx + 1) // ROOM, (dx - 1) // ROOM) or ry not in ((dy + 1) // ROOM, (dy - 1) // ROOM):
                continue
            if (x, y) != (dx, dy) and on_wall_line:
                continue
            add(0 if (dx, dy) in self.keys.values() else 4, dx, dy)
        for kx, ky in self.keys:
            if (kx // ROOM, ky // ROOM) == (rx, ry) and not on_wall_line:
                add(8, kx, ky)
        return out
