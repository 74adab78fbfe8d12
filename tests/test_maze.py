"""Maze (the policy-sketches paper's rooms-and-doors world): lock-step against a plain-Python
reference, map generation as specified, hand-solved task, registration and the env checker."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from maze_reference import ReferenceMaze

from modrl.envs.maze import PATHS, ROOM, SKETCHES, TASKS, MazeVectorEnv, walk


@pytest.mark.parametrize("static_shapes", [False, True])
def test_lock_step_with_the_reference(static_shapes):
    # static_shapes: resets draw boards for every row and keep the reset ones; the others must not change
    n = 48
    env = MazeVectorEnv(n, split="all", autoreset_mode=AutoresetMode.DISABLED, static_shapes=static_shapes)
    env.reset(seed=0)
    refs = [ReferenceMaze(env, i) for i in range(n)]
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.22, 0.22, 0.22, 0.22, 0.1, 0.02])  # USE often (keys), STOP rarely
    ended = 0
    for t in range(300):
        actions = torch.multinomial(probs.expand(n, -1), 1, generator=g).squeeze(-1)
        obs, reward, terminated, truncated, _ = env.step(actions)
        for i in range(n):
            r, term, trunc = refs[i].step(int(actions[i]))
            assert reward[i].item() == r and terminated[i].item() == term and truncated[i].item() == trunc, (t, i)
            assert env.pos[i].tolist() == [refs[i].x, refs[i].y], (t, i)
            present = {tuple(k) for k, on in zip(env.key_pos[i].tolist(), env.key_present[i].tolist()) if on}
            assert present == set(refs[i].keys), (t, i)
            torch.testing.assert_close(obs[i], torch.tensor(refs[i].features()), msg=f"step {t} env {i}")
        done = terminated | truncated
        if done.any():
            ended += int(done.sum())
            env.reset(options={"reset_mask": done})
            for i in torch.nonzero(done).flatten().tolist():
                refs[i] = ReferenceMaze(env, i)
    assert ended > n  # many episodes ended and restarted


@pytest.mark.parametrize("static_shapes", [False, True])
def test_same_step_autoreset_observes_the_new_episodes(static_shapes):
    # SAME_STEP re-observes only the rows it reset; every row must still read the current state
    env = MazeVectorEnv(64, static_shapes=static_shapes)
    obs, _ = env.reset(seed=3)
    g = torch.Generator().manual_seed(3)
    probs = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.1, 0.1])  # STOP often, so that episodes end
    resets = 0
    for _ in range(150):
        obs, _, terminated, truncated, info = env.step(torch.multinomial(probs.expand(64, -1), 1, generator=g).squeeze(-1))
        done = terminated | truncated
        resets += int(done.sum())
        assert torch.equal(obs, env._observe())
        assert torch.equal(info["final_obs"][~done], obs[~done])
    assert resets > 20


@pytest.mark.parametrize("static_shapes", [False, True])
def test_map_generation_follows_the_original(static_shapes):
    env = MazeVectorEnv(4000, split="all", autoreset_mode=AutoresetMode.DISABLED, static_shapes=static_shapes)
    env.reset(seed=1)
    locked = total = 0
    for i in range(0, 4000, 7):
        path = PATHS[int(env.task[i])]
        x, y = env.pos[i].tolist()
        assert x % ROOM == ROOM // 2 and y % ROOM == ROOM // 2  # the centre of the start room
        start = (x // ROOM, y // ROOM)
        rooms = [start] + [(start[0] + dx, start[1] + dy) for dx, dy in walk(path)]
        assert tuple(env.goal_room[i].tolist()) == rooms[-1]
        # the board: the walk's bounding box padded by 0 or 1 room per side
        free = ~env.walls[i]
        width = (int(free.any(1).nonzero().max()) + 1) // ROOM
        height = (int(free.any(0).nonzero().max()) + 1) // ROOM
        xs, ys = [r[0] for r in rooms], [r[1] for r in rooms]
        assert 0 <= min(xs) <= 1 and 0 <= width - 1 - max(xs) <= 1
        assert 0 <= min(ys) <= 1 and 0 <= height - 1 - max(ys) <= 1
        doors = [tuple(d) for d, v in zip(env.door_pos[i].tolist(), env.door_valid[i].tolist()) if v]
        assert len(doors) == len(set(doors)) and len(doors) <= len(path) + min(width, height) * (width > 1 and height > 1)
        keyed = {tuple(d): tuple(k) for d, k, on in zip(env.door_pos[i].tolist(), env.key_pos[i].tolist(),
                                                         env.key_present[i].tolist()) if on}
        for (ax, ay), (bx, by) in zip(rooms, rooms[1:]):
            door = (ROOM * ax + ROOM // 2 + (bx - ax) * ROOM // 2, ROOM * ay + ROOM // 2 + (by - ay) * ROOM // 2)
            assert door in doors and not env.walls[i][door].item()  # the wall between them is open there
            total += 1
            if door in keyed:
                locked += 1
                kx, ky = keyed[door]
                assert (kx // ROOM, ky // ROOM) == (ax, ay)  # the key is in the room it is opened from
                assert -1 <= kx - (ROOM * ax + ROOM // 2) <= 2 and -1 <= ky - (ROOM * ay + ROOM // 2) <= 2
        # every non-door cell of a wall line is a wall
        for cx in range(0, ROOM * width + 1, ROOM):
            for cy in range(ROOM * height + 1):
                assert env.walls[i][cx, cy].item() == ((cx, cy) not in doors)
    assert 0.44 < locked / total < 0.56  # each door locked with p = 0.5 (key collisions aside)


def test_solving_a_task_by_hand_and_locked_doors():
    env = MazeVectorEnv(1, tasks=["go[LL]"], autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    # a hand-made layout: 3×1 rooms, start in the right room, the middle-right door locked
    walls = torch.ones(31, 31, dtype=torch.bool)
    for rx in range(3):
        walls[ROOM * rx + 1 : ROOM * rx + ROOM, 1:ROOM] = False
    walls[6, 3] = walls[12, 3] = False
    env.walls = walls[None]
    env.pos = torch.tensor([[15, 3]])
    env.goal_room = torch.tensor([[0, 0]])
    env.door_valid = torch.zeros(1, 8, dtype=torch.bool)
    env.door_valid[0, :2] = True
    env.door_pos = torch.zeros(1, 8, 2, dtype=torch.long)
    env.door_pos[0, 0] = torch.tensor([12, 3])
    env.door_pos[0, 1] = torch.tensor([6, 3])
    env.key_pos = torch.zeros(1, 8, 2, dtype=torch.long)
    env.key_pos[0, 0] = torch.tensor([14, 3])
    env.key_present = torch.zeros(1, 8, dtype=torch.bool)
    env.key_present[0, 0] = True
    for _ in range(5):  # LEFT until the locked door stops us at x = 13
        env.step(torch.tensor([2]))
    assert env.pos[0].tolist() == [13, 3]
    env.step(torch.tensor([3]))  # back onto the key
    obs, *_ = env.step(torch.tensor([4]))  # USE: pick it up; the door is now open
    assert not env.key_present[0, 0] and obs[0, 0:4].sum() == 0 and obs[0, 4:8].sum() > 0
    for _ in range(20):  # through both doors to the left wall
        env.step(torch.tensor([2]))
    assert env.pos[0].tolist() == [1, 3]
    _, reward, terminated, _, _ = env.step(torch.tensor([5]))  # STOP: left (1 of 2)
    assert not terminated[0]
    _, reward, terminated, _, info = env.step(torch.tensor([5]))  # STOP: left (2 of 2), in the goal room
    assert terminated[0] and reward[0] == 1.0 and info["episode"]["success"][0]


def test_registration_checker_and_sketch_data():
    import yaml
    from pathlib import Path

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gym.make("modrl/CraftMaze-v0").unwrapped)
    assert [str(w.message) for w in caught] == []
    vec = gym.make_vec("modrl/CraftMaze-v0", num_envs=8, vectorization_mode="vector_entry_point")
    obs, info = vec.reset(seed=0)
    assert obs.shape == (8, 12) and set(info["task"].tolist()) <= set(range(10))
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "psketch" / "light"
    if not data.is_dir():
        pytest.skip("../shared/data not present")
    assert {k: tuple(v) for k, v in yaml.safe_load((data / "hints.yaml").read_text()).items()} == SKETCHES
    assert set(TASKS) == set(SKETCHES)
