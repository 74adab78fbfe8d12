"""The length curriculum (Andreas et al. 2017, §3.3) on Craft's sketches, without an agent: where it
starts, when a round promotes (strictly above the threshold, over the tasks that were sampled), the
1 − success + 0.01 re-weighting, the last level, per-run counting, and its checkpoint entries."""

import math

import torch

from modrl.curriculum import LengthCurriculum
from modrl.envs.craft import CraftVectorEnv

TASKS = CraftVectorEnv.TASKS


def lengths(env):
    return {t: int(env.sketch_lengths[i]) for i, t in enumerate(TASKS)}


def end_round(cur, rates: dict[str, float], run: int = 0, episodes: int = 10) -> bool:
    """Count ``episodes`` episodes of each task in ``rates`` with that success, then end the round."""
    for name, rate in rates.items():
        task = torch.full((episodes,), TASKS.index(name))
        success = torch.arange(episodes) < round(rate * episodes)
        cur.count(task, torch.ones(episodes, dtype=torch.bool), success)
    promoted = False
    for _ in range(cur.updates_per_round):
        promoted = cur.end_update(run)
    return promoted


def test_it_starts_at_the_shortest_sketches_of_the_split_uniformly():
    env = CraftVectorEnv(8, split="train")
    cur = LengthCurriculum(env, updates_per_round=3)
    two = {t for t, n in lengths(env).items() if n == 2}
    assert cur.max_length == [2]  # Craft has no length-1 task
    assert {TASKS[i] for i in torch.nonzero(cur.allowed[0]).flatten().tolist()} == two
    assert torch.equal(env.task_weights > 0, cur.allowed[0]) and len(set(env.task_weights[cur.allowed[0]].tolist())) == 1


def test_a_round_promotes_only_when_every_sampled_task_is_above_the_threshold():
    env = CraftVectorEnv(8, split="train")
    cur = LengthCurriculum(env, updates_per_round=2, promote_threshold=0.8)
    two = [t for t, n in lengths(env).items() if n == 2]
    assert not cur.end_update()  # mid-round: nothing changes
    cur.round_updates[0] = 0
    # one task at exactly 0.8 (not above): re-weighted ∝ 1 − success + 0.01, counters cleared
    rates = {t: 0.9 for t in two} | {two[0]: 0.8}
    assert not end_round(cur, rates)
    expected = torch.zeros(len(TASKS))
    for t in two:
        expected[TASKS.index(t)] = 1 - rates[t] + 0.01
    assert torch.allclose(env.task_weights, expected / expected.sum()) and cur.max_length == [2]  # (normalised)
    assert float(cur.success.sum()) == 0 and cur.round_updates == [0]
    assert math.isclose(float(cur.last_success[0][TASKS.index(two[0])]), 0.8)
    # a task not sampled in the round neither blocks the promotion nor counts as a failure
    assert not math.isnan(float(cur.last_success[0][TASKS.index(two[1])]))
    assert end_round(cur, {t: 0.9 for t in two[1:]})
    assert math.isnan(float(cur.last_success[0][TASKS.index(two[0])]))
    assert cur.max_length == [3] and bool(cur.allowed[0, TASKS.index("make[bridge]")])
    assert float(env.task_weights[TASKS.index("make[bed]")]) == 0  # held out: never allowed


def test_the_longest_split_sketch_is_the_last_level_and_modules_enter_per_level():
    env = CraftVectorEnv(8, split="train")
    cur = LengthCurriculum(env, updates_per_round=1, promote_threshold=-1.0)  # promote after every sampled round
    split = {t for t in TASKS if t not in ("make[bed]", "make[axe]")}
    M = len(env.symbols)
    assert not bool(cur.entering(0, M).any())  # the first level: no trained module beside its modules
    first = {env.symbols[i] for i in torch.nonzero(cur.entering(0, M, first_level=True)).flatten().tolist()}
    assert first == {"get_wood", "get_grass", "make0", "make1", "make2"}  # new_module_first_level: all of them

    def sampled_round():
        return end_round(cur, {TASKS[i]: 0.0 for i in torch.nonzero(cur.allowed[0]).flatten().tolist()})

    levels = [cur.max_length[0]]
    while sampled_round():
        levels.append(cur.max_length[0])
        allowed = {TASKS[i] for i in torch.nonzero(cur.allowed[0]).flatten().tolist()}
        assert allowed == {t for t in split if lengths(env)[t] <= levels[-1]}
        if levels[-1] == 3:  # make[bridge] (get_iron, get_wood, make2) brings in get_iron alone
            assert {env.symbols[i] for i in torch.nonzero(cur.entering(0, M)).flatten().tolist()} == {"get_iron"}
    assert levels == sorted(set(levels)) and levels[-1] == max(lengths(env)[t] for t in split)
    assert not end_round(cur, {}) and not sampled_round()  # it stays at the last level


def test_runs_count_their_own_rows_and_promote_apart():
    env = CraftVectorEnv(8, split="train", task_groups=2)
    cur = LengthCurriculum(env, 2, updates_per_round=1)
    two = [t for t, n in lengths(env).items() if n == 2]
    task = torch.tensor([TASKS.index(t) for t in two for _ in range(2)])  # rows alternate run 0, run 1
    run_of_row = torch.arange(len(task)) % 2
    cur.count(task, torch.ones(len(task), dtype=torch.bool), run_of_row == 0, run_of_row)
    assert torch.equal(cur.success[0, 1], cur.success[1, 1]) and float(cur.success[1, 0].sum()) == 0
    assert cur.end_update(0) and not cur.end_update(1)
    assert cur.max_length == [3, 2]
    bridge = TASKS.index("make[bridge]")
    assert float(env.task_weights[0, bridge]) > 0 and float(env.task_weights[1, bridge]) == 0


def test_its_checkpoint_entries_restore_it():
    env = CraftVectorEnv(8, split="train", task_groups=2)
    cur = LengthCurriculum(env, 2, updates_per_round=5)
    cur.promote(1)
    cur.count(torch.tensor([0, 1]), torch.tensor([True, True]), torch.tensor([True, False]), torch.tensor([0, 1]))
    cur.end_update(0)
    other = LengthCurriculum(CraftVectorEnv(8, split="train", task_groups=2), 2, updates_per_round=5)
    other.load_state_dict(cur.state_dict())
    assert other.max_length == cur.max_length == [2, 3] and other.round_updates == [1, 0]
    assert torch.equal(other.success, cur.success) and torch.equal(other.allowed, cur.allowed)
    one = cur.run_state_dict(1)
    assert one["max_length"] == 3 and torch.equal(one["allowed_tasks"], cur.allowed[1])
