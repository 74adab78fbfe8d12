"""Four Rooms as in the option-critic paper: layout, dynamics, goal switch, seeding, Gymnasium and
stable-baselines3 conformance."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import modrl  # noqa: F401
from modrl.envs.four_rooms import CELLS, EAST_HALLWAY, LOWER_RIGHT_CELLS, NEXT_CELL, NUM_CELLS, FourRoomsVectorEnv
from modrl.vec import EnvError

UP, DOWN, LEFT, RIGHT = range(4)


def cell(row, col):
    return int(np.flatnonzero((CELLS[:, 0] == row) & (CELLS[:, 1] == col))[0])


def test_layout_matches_the_paper():
    assert NUM_CELLS == 104
    rooms = {
        "upper-left": ((CELLS[:, 0] <= 5) & (CELLS[:, 1] <= 5)).sum(),
        "upper-right": ((CELLS[:, 0] <= 6) & (CELLS[:, 1] >= 7)).sum(),
        "lower-left": ((CELLS[:, 0] >= 7) & (CELLS[:, 1] <= 5)).sum(),
        "lower-right": ((CELLS[:, 0] >= 8) & (CELLS[:, 1] >= 7)).sum(),
    }
    assert rooms == {"upper-left": 25, "upper-right": 30, "lower-left": 25, "lower-right": 20}
    assert tuple(CELLS[EAST_HALLWAY]) == (7, 9) and EAST_HALLWAY == 62
    hallways = [(3, 6), (6, 2), (7, 9), (10, 6)]
    assert all(cell(*h) >= 0 for h in hallways)
    # the goal candidates after the switch: the lower-right room and its west hallway
    assert sorted(LOWER_RIGHT_CELLS) == sorted(
        [cell(r, c) for r in range(8, 12) for c in range(7, 12)] + [cell(10, 6)]
    )


def test_moves_and_walls():
    assert NEXT_CELL[EAST_HALLWAY, UP] == cell(6, 9)
    assert NEXT_CELL[EAST_HALLWAY, DOWN] == cell(8, 9)
    assert NEXT_CELL[EAST_HALLWAY, LEFT] == EAST_HALLWAY  # wall: stay
    assert NEXT_CELL[EAST_HALLWAY, RIGHT] == EAST_HALLWAY
    assert NEXT_CELL[cell(3, 5), RIGHT] == cell(3, 6)  # into the west-east hallway
    assert NEXT_CELL[cell(1, 1), UP] == cell(1, 1)


def _one_step_from(start, action, n=90_000, slip_prob=1 / 3, seed=0):
    env = FourRoomsVectorEnv(n, goal=0, slip_prob=slip_prob)
    env.reset(seed=seed)
    env.pos = torch.full((n,), start, dtype=torch.long)
    obs, *_ = env.step(torch.full((n,), action))
    return obs


def test_slip_distribution_is_two_thirds_then_one_ninth_each():
    start = cell(2, 3)  # all four neighbours free
    obs = _one_step_from(start, UP)
    n = obs.numel()
    expected = {cell(1, 3): 2 / 3, cell(3, 3): 1 / 9, cell(2, 2): 1 / 9, cell(2, 4): 1 / 9}
    assert set(obs.unique().tolist()) == set(expected)
    for target, p in expected.items():
        freq = (obs == target).float().mean().item()
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (target, freq, p)


def test_one_move_per_step_even_after_a_slip():
    # The original code could move twice in one step (jeanharb/option_critic#11); never here.
    start = cell(2, 3)
    obs = _one_step_from(start, RIGHT)
    r, c = CELLS[obs.numpy()].T
    assert (np.abs(r - 2) + np.abs(c - 3) == 1).all()


def test_start_is_uniform_over_non_goal_cells():
    env = FourRoomsVectorEnv(103 * 400, goal=EAST_HALLWAY)
    obs, _ = env.reset(seed=1)
    counts = torch.bincount(obs, minlength=NUM_CELLS)
    assert counts[EAST_HALLWAY] == 0
    others = torch.cat([counts[:EAST_HALLWAY], counts[EAST_HALLWAY + 1 :]]).float()
    assert others.min() > 0.7 * 400 and others.max() < 1.3 * 400


def test_reward_and_termination_at_the_goal():
    env = FourRoomsVectorEnv(1, slip_prob=0.0, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    env.pos = torch.tensor([cell(6, 9)])
    obs, reward, term, trunc, info = env.step(torch.tensor([DOWN]))
    assert obs.item() == EAST_HALLWAY and reward.item() == 1.0 and term.item() and not trunc.item()
    assert info["episode"]["success"].item()


def test_goal_switch_at_the_given_episode():
    env = FourRoomsVectorEnv(400, goal_switch_episode=3, max_episode_steps=1)
    env.reset(seed=0)  # episode 0
    goals = [env.goal.clone()]
    for _ in range(4):  # every step ends an episode (cap 1): episodes 1, 2, 3, 4
        env.step(torch.zeros(400, dtype=torch.long))
        goals.append(env.goal.clone())
    assert all((g == EAST_HALLWAY).all() for g in goals[:3])
    switched = goals[3]
    assert torch.isin(switched, torch.tensor(LOWER_RIGHT_CELLS)).all()
    assert len(switched.unique()) > 10  # drawn per env
    assert torch.equal(goals[4], switched)  # the goal stays moved
    env.reset(seed=0)  # a seeded reset is a new run: the goal is back
    assert (env.goal == EAST_HALLWAY).all()


def _trajectory(seed, n=32, steps=200):
    env = FourRoomsVectorEnv(n, max_episode_steps=20)
    obs, _ = env.reset(seed=seed)
    actions = torch.randint(0, 4, (steps, n), generator=torch.Generator().manual_seed(7))
    out = [obs]
    for a in actions:
        obs, reward, term, trunc, _ = env.step(a)
        out += [obs, reward, term, trunc]
    return out


def test_same_seed_same_trajectory():
    a, b, c = _trajectory(5), _trajectory(5), _trajectory(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_policy_sampling_does_not_perturb_the_env():
    # The env draws from its own generator, not the global one.
    torch.manual_seed(0)
    a = _trajectory(5)
    torch.manual_seed(123)
    torch.rand(1000)
    b = _trajectory(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_single_env_view_passes_the_env_checker_without_warnings():
    env = gym.make("modrl/FourRooms-v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space and isinstance(obs, np.integer)


def test_make_vec_returns_the_batched_env():
    env = gym.make_vec("modrl/FourRooms-v0", num_envs=16, vectorization_mode="vector_entry_point", max_episode_steps=50)
    assert isinstance(env, FourRoomsVectorEnv)
    assert env.num_envs == 16 and env.max_episode_steps == 50 and env.device == torch.device("cpu")
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert env.observation_space.shape == (16,) and env.action_space.shape == (16,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16,) and obs.dtype == torch.int64


def test_ansi_render():
    env = gym.make("modrl/FourRooms-v0", render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.count("A") == 1 and text.count("G") == 1 and len(text.splitlines()) == 13


def test_bad_constructor_arguments():
    with pytest.raises(EnvError, match="goal"):
        FourRoomsVectorEnv(1, goal=200)
    with pytest.raises(EnvError, match="slip_prob"):
        FourRoomsVectorEnv(1, slip_prob=2.0)
    with pytest.raises(EnvError, match="render_mode"):
        FourRoomsVectorEnv(1, render_mode="human")


def test_stable_baselines3_trains_on_the_single_env():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from modrl.sb3 import silent_logger

    env = gym.make("modrl/FourRooms-v0", max_episode_steps=50)
    sb3_check_env(env)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.set_logger(silent_logger())
    model.learn(256)
    action, _ = model.predict(env.reset(seed=0)[0])
    assert env.action_space.contains(int(action))


def test_sb3_sees_success_at_episode_end():
    # gym.make's max_episode_steps is a TimeLimit outside the view; is_success must still be there.
    env = gym.make("modrl/FourRooms-v0", max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(0)
        assert info["is_success"] is terminated
        if terminated or truncated:
            break
    assert terminated or truncated
