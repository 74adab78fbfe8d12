"""Craft: lock-step against a plain-Python reference from the same spec, map generation, invariants
(hypothesis), tasks and splits, Gymnasium conformance."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

import modrl  # noqa: F401
from modrl.envs.craft import INDEPENDENT_SKETCHES, KIND, NUM_FEATURES, SKETCHES, SPLITS, TASKS, CraftVectorEnv, goal_item
from modrl.vec import EnvError

from craft_reference import ReferenceCraft


def references(env):
    return [
        ReferenceCraft(env.grid[i].tolist(), env.pos[i].tolist(), env.facing[i], env.inventory[i].tolist(), env.task[i])
        for i in range(env.num_envs)
    ]


def biased_actions(n, steps, seed):
    """Random actions that USE often (so recipes, water and stone get exercised) and STOP rarely."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor([0.17, 0.17, 0.17, 0.17, 0.3, 0.02])
    return torch.multinomial(probs.expand(n, -1), steps, replacement=True, generator=g).T


@pytest.mark.parametrize("seed, static_shapes", [(0, False), (1, False), (2, False), (0, True)])
def test_lock_step_with_the_reference(seed, static_shapes):
    # static_shapes: resets draw maps for every row and keep the masked ones (the running rows,
    # compared here, must not change)
    n = 24
    env = CraftVectorEnv(n, split="all", autoreset_mode=AutoresetMode.DISABLED, static_shapes=static_shapes)
    env.reset(seed=seed)
    refs = references(env)
    alive = [True] * n
    for t, actions in enumerate(biased_actions(n, 100, seed)):
        active = torch.tensor(alive)
        if not active.any():
            break
        # envs whose episode ended are reset and no longer compared
        obs, reward, terminated, truncated, _ = env.step(torch.where(active, actions, 0))
        for i in range(n):
            if not alive[i]:
                continue
            r, term, trunc = refs[i].step(int(actions[i]))
            assert reward[i].item() == r, (t, i)
            assert terminated[i].item() == term and truncated[i].item() == trunc, (t, i)
            assert env.grid[i].tolist() == refs[i].grid, (t, i)
            assert env.pos[i].tolist() == [refs[i].x, refs[i].y] and env.facing[i].item() == refs[i].facing
            assert env.inventory[i].tolist() == refs[i].inventory, (t, i)
            assert obs[i].tolist() == refs[i].features(), (t, i)
            if term or trunc:
                alive[i] = False
        done = terminated | truncated  # DISABLED autoreset: reset them before the next step
        if done.any():
            env.reset(options={"reset_mask": done})
    assert sum(alive) < n  # some episodes did end


@pytest.mark.parametrize("static_shapes", [False, True])
def test_same_step_autoreset_observes_the_new_episodes(static_shapes):
    # SAME_STEP re-observes only the rows it reset; every row must still read the current state
    env = CraftVectorEnv(64, split="all", static_shapes=static_shapes)
    obs, _ = env.reset(seed=3)
    resets = 0
    for actions in biased_actions(64, 150, seed=3):
        obs, _, terminated, truncated, info = env.step(actions)
        done = terminated | truncated
        resets += int(done.sum())
        assert torch.equal(obs, env._observe())
        assert torch.equal(info["final_obs"][~done], obs[~done])
    assert resets > 20


@pytest.mark.parametrize("static_shapes", [False, True])
def test_task_groups_sample_from_their_own_distributions(static_shapes):
    # two independent runs in one batch: even rows (group 0) only make[plank], odd rows only make[stick]
    env = CraftVectorEnv(32, task_groups=2, static_shapes=static_shapes)
    assert env.task_weights.shape == (2, len(TASKS))
    env.set_task_distribution(["make[plank]"], group=0)
    env.set_task_distribution({"make[stick]": 1.0}, group=1)
    obs, info = env.reset(seed=1)
    expected = torch.tensor([TASKS.index("make[plank]"), TASKS.index("make[stick]")]).repeat(16)
    resets = 0
    for actions in biased_actions(32, 120, seed=1):
        _, _, terminated, truncated, info = env.step(actions)
        resets += int((terminated | truncated).sum())
        assert torch.equal(info["task"], expected)
    assert resets > 10
    # a [G, T] tensor sets both groups at once; group=None with a [T] tensor sets every group
    weights = torch.zeros(2, len(TASKS))
    weights[0, TASKS.index("make[rope]")] = weights[1, TASKS.index("make[cloth]")] = 1.0
    env.set_task_distribution(weights)
    assert torch.equal(env.task_weights, weights)
    env.set_task_distribution(["make[axe]"])
    assert bool((env.task_weights[:, TASKS.index("make[axe]")] == 1).all())
    with pytest.raises(EnvError, match="group must be"):
        env.set_task_distribution(["make[plank]"], group=2)
    with pytest.raises(EnvError, match=r"shape \(10,\) or \(2, 10\)"):
        env.set_task_distribution(torch.ones(3, len(TASKS)))
    with pytest.raises(EnvError, match="task_groups"):
        CraftVectorEnv(4, task_groups=5)


def test_solving_a_task_by_hand_gives_the_reward():
    # make[plank]: get wood, use workshop0 — placed next to the agent by hand
    env = CraftVectorEnv(1, tasks=["make[plank]"], autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    grid = torch.zeros(10, 10, dtype=torch.uint8)
    grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = KIND["boundary"]
    grid[5, 4] = KIND["wood"]  # below the agent at (5, 5)
    grid[6, 5] = KIND["workshop0"]  # right of the agent
    env.grid = grid[None].clone()
    env.pos = torch.tensor([[5, 5]])
    for action, expect_inv in [(0, 0), (4, 1)]:  # face down (blocked by wood), USE: wood
        env.step(torch.tensor([action]))
        assert env.inventory[0, KIND["wood"]].item() == expect_inv
    env.step(torch.tensor([5]))  # STOP: sketch step 1 of 2 (get_wood) done
    env.step(torch.tensor([3]))  # face the workshop
    env.step(torch.tensor([4]))  # USE: plank ← wood
    assert env.inventory[0, KIND["plank"]].item() == 1 and env.inventory[0, KIND["wood"]].item() == 0
    _, reward, terminated, _, info = env.step(torch.tensor([5]))  # STOP past the last step
    assert reward.item() == 1.0 and terminated.item() and info["episode"]["success"].item()


def test_terminate_action_for_sketch_free_controllers():
    env = CraftVectorEnv(2, tasks=["make[plank]"], terminate_action=True, autoreset_mode=AutoresetMode.DISABLED)
    assert env.single_action_space.n == 7
    env.reset(seed=0)
    env.inventory[0, KIND["plank"]] = 1  # env 0 holds the goal item, env 1 does not
    for _ in range(3):  # STOPs are no-op ticks: past the sketch's length nothing ends
        _, reward, terminated, truncated, _ = env.step(torch.tensor([5, 5]))
        assert not terminated.any() and not truncated.any() and (reward == 0).all()
    _, reward, terminated, _, info = env.step(torch.tensor([6, 6]))  # TERMINATE
    assert terminated.tolist() == [True, True] and reward.tolist() == [1.0, 0.0]
    assert info["episode"]["success"].tolist() == [True, False]
    with pytest.raises(Exception, match="out of range|invalid|action"):
        CraftVectorEnv(1).step(torch.tensor([6]))  # no TERMINATE without the option


def test_one_use_can_fire_several_recipes_and_water_needs_a_bridge():
    env = CraftVectorEnv(1, split="all", autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    grid = torch.zeros(10, 10, dtype=torch.uint8)
    grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = KIND["boundary"]
    grid[5, 4] = KIND["workshop0"]
    grid[4, 5] = KIND["water"]
    env.grid, env.pos = grid[None].clone(), torch.tensor([[5, 5]])
    inv = torch.zeros(1, 21, dtype=torch.int32)
    inv[0, KIND["wood"]] = 1
    inv[0, KIND["grass"]] = 1
    inv[0, KIND["stick"]] = 1
    inv[0, KIND["iron"]] = 1
    env.inventory = inv
    env.step(torch.tensor([0]))
    env.step(torch.tensor([4]))  # workshop0: plank ← wood, axe ← stick + iron, rope ← grass, all at once
    held = {k: env.inventory[0, KIND[k]].item() for k in ("plank", "axe", "rope", "wood", "grass", "stick", "iron")}
    assert held == {"plank": 1, "axe": 1, "rope": 1, "wood": 0, "grass": 0, "stick": 0, "iron": 0}
    env.step(torch.tensor([2]))
    env.step(torch.tensor([4]))  # water without a bridge: nothing
    assert env.grid[0, 4, 5].item() == KIND["water"]
    env.inventory[0, KIND["bridge"]] = 1
    env.step(torch.tensor([4]))  # with a bridge: the water goes, the bridge is consumed
    assert env.grid[0, 4, 5].item() == 0 and env.inventory[0, KIND["bridge"]].item() == 0


@pytest.mark.parametrize("static_shapes", [False, True])
@pytest.mark.parametrize("task", ["get[gold]", "get[gem]", "make[plank]"])
def test_map_generation(task, static_shapes):
    env = CraftVectorEnv(256, tasks=[task], static_shapes=static_shapes)
    env.reset(seed=1)
    if static_shapes:  # a partial reset: new maps in the masked rows only, the others untouched
        before = {k: getattr(env, k).clone() for k in ("grid", "pos", "inventory")}
        env.inventory[:, KIND["wood"]] = 7
        mask = torch.arange(256) % 3 == 0
        env.reset(options={"reset_mask": mask})
        assert (env.inventory[~mask, KIND["wood"]] == 7).all() and (env.inventory[mask] == 0).all()
        assert torch.equal(env.grid[~mask], before["grid"][~mask]) and torch.equal(env.pos[~mask], before["pos"][~mask])
        assert not torch.equal(env.grid[mask], before["grid"][mask])
    grid = env.grid.long()
    count = lambda k: (grid == KIND[k]).flatten(1).sum(1)  # noqa: E731
    for k in ("iron", "grass", "wood"):
        assert (count(k) == 4).all()
    for k in ("workshop0", "workshop1", "workshop2"):
        assert (count(k) == 1).all()
    assert (grid[:, 0, :] == KIND["boundary"]).all() and (grid[:, :, -1] == KIND["boundary"]).all()
    assert (grid[torch.arange(256), env.pos[:, 0], env.pos[:, 1]] == 0).all()  # agent on a free cell
    if task in ("get[gold]", "get[gem]"):
        treasure, wall = (("gold", "water") if task == "get[gold]" else ("gem", "stone"))
        assert (count(treasure) == 1).all()
        xs = (grid == KIND[treasure]).long().argmax(1).argmax(-1)  # the treasure's y
        assert (xs == 1).all()
        inner = count(wall)
        assert ((inner == 3) | (inner == 5)).all()  # 5 in the middle columns, 3 beside the wall
    else:
        assert (count("gold") == 0).all() and (count("water") == 0).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 5), min_size=1, max_size=60))
def test_invariants(seed, actions):
    env = CraftVectorEnv(8, split="all")
    env.reset(seed=seed)
    for a in actions:
        before_grid, before_inv = env.grid.clone(), env.inventory.clone()
        env.step(torch.full((8,), a))
        assert (env.inventory >= 0).all()  # never negative
        walls = env.grid[torch.arange(8), env.pos[:, 0], env.pos[:, 1]]
        assert (walls == 0).all()  # the agent never stands inside anything
        if a != 4:  # only USE changes the map and the inventory (resets aside)
            same = (env._elapsed > 0)
            assert (env.grid[same] == before_grid[same]).all() and (env.inventory[same] == before_inv[same]).all()


def test_tasks_splits_and_distribution():
    assert len(TASKS) == 10 and SPLITS["heldout"] == ("make[bed]", "make[axe]") and len(SPLITS["train"]) == 8
    env = CraftVectorEnv(2000, split="heldout")
    env.reset(seed=0)
    held = {TASKS[i] for i in env.task.tolist()}
    assert held == {"make[bed]", "make[axe]"}
    env.set_task_distribution({"make[plank]": 1.0})
    env.reset()
    assert {TASKS[i] for i in env.task.tolist()} == {"make[plank]"}
    with pytest.raises(EnvError, match="unknown Craft task"):
        env.set_task_distribution(["make[cake]"])
    with pytest.raises(EnvError, match="unknown split"):
        CraftVectorEnv(1, split="test")
    assert env.sketches.shape == (10, 5) and env.sketch_lengths.tolist() == [len(SKETCHES[t]) for t in TASKS]
    assert [goal_item(t) for t in TASKS][:2] == ["plank", "stick"]


def test_sketches_match_the_original_data_files():
    import yaml
    from pathlib import Path

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "psketch" / "craft"
    if not data.is_dir():
        pytest.skip("../shared/data not present")
    hints = yaml.safe_load((data / "hints.yaml").read_text())
    assert {k: tuple(v) for k, v in hints.items()} == SKETCHES
    indep = yaml.safe_load((data / "hints.indep.yaml").read_text())
    assert {k: tuple(v) for k, v in indep.items()} == INDEPENDENT_SKETCHES
    env = CraftVectorEnv(2, sketch_set="independent")
    assert env.sketch_lengths.tolist() == [1] * 10 and env.sketches[:, 0].tolist() == list(range(10))


def test_gymnasium_views():
    env = gym.make("modrl/Craft-v0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    obs, _ = env.reset(seed=0)
    assert obs.shape == (NUM_FEATURES,) and NUM_FEATURES == 1076
    vec = gym.make_vec("modrl/Craft-v0", num_envs=8, vectorization_mode="vector_entry_point", task_in_obs=True)
    obs, info = vec.reset(seed=0)
    assert obs.shape == (8, 1086) and info["task"].shape == (8,)
