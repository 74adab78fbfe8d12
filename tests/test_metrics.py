"""Modularity metrics on a collapsed router and a perfectly specialised one."""

from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from modrl.controller import SMDPTransition
from modrl.metrics import ModularityMetrics, collapse, effective_modules, mutual_information

T, M = 4, 4


def decisions(choice_of_task, repeats=50):
    task = torch.arange(T).repeat(repeats)
    return task, choice_of_task(task)


def test_collapsed_router():
    metrics = ModularityMetrics(T, M)
    task, choice = decisions(lambda t: torch.zeros_like(t))
    metrics.record_decisions(task, choice, torch.ones_like(task, dtype=torch.bool))
    s = metrics.summary()
    assert s["router/effective_modules"] == pytest.approx(1.0)
    assert s["router/mi_task_module"] == pytest.approx(0.0, abs=1e-9)
    assert s["router/collapse"] == pytest.approx(1.0)
    assert s["router/dominant_share"] == pytest.approx(1.0)
    assert s["modules/usage/0"] == pytest.approx(1.0) and s["modules/usage/3"] == 0.0


def test_specialised_router():
    metrics = ModularityMetrics(T, M)
    task, choice = decisions(lambda t: t)
    metrics.record_decisions(task, choice, torch.ones_like(task, dtype=torch.bool))
    s = metrics.summary()
    assert s["router/effective_modules"] == pytest.approx(4.0)
    assert s["router/mi_task_module"] == pytest.approx(math.log(4))
    assert s["router/collapse"] == pytest.approx(0.0, abs=1e-9)
    torch.testing.assert_close(s["usage_matrix"], torch.eye(4))


def test_uniform_random_router_has_no_mutual_information():
    counts = torch.full((T, M), 10.0)
    assert mutual_information(counts) == pytest.approx(0.0, abs=1e-9)
    assert effective_modules(counts) == pytest.approx(4.0)
    assert collapse(counts) == pytest.approx(0.0, abs=1e-9)


def test_masked_and_halt_decisions_are_not_counted():
    metrics = ModularityMetrics(2, 2)
    metrics.record_decisions(torch.tensor([0, 1, 1]), torch.tensor([0, 2, 1]), torch.tensor([True, True, False]))
    assert metrics.usage.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def _transition(completed, duration, forced):
    n = len(completed)
    z = torch.zeros(n, dtype=torch.bool)
    return SMDPTransition(torch.tensor(completed), torch.zeros(n, dtype=torch.long), torch.zeros(n),
                          torch.tensor(duration), torch.zeros(n, dtype=torch.long), torch.tensor(forced), z, z)


def test_durations_termination_rate_and_depth(tmp_path):
    metrics = ModularityMetrics(1, 2, max_duration=5)
    metrics.record_step(_transition([True, False, True], [2, 7, 9], [False, False, True]))
    metrics.record_step(_transition([False, True, False], [3, 4, 1], [False, False, False]))
    metrics.record_depth(torch.tensor([1, 3]))
    metrics.record_decisions(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([True, True]))
    writer = SummaryWriter(str(tmp_path))
    s = metrics.log(writer, step=100)
    writer.close()
    assert s["options/duration"] == pytest.approx((2 + 5 + 4) / 3)  # durations ≥ 5 fall in the last bin
    assert s["options/termination_rate"] == pytest.approx(3 / 6)
    assert s["options/forced_stop_rate"] == pytest.approx(1 / 3)
    assert s["halting/depth"] == pytest.approx(2.0)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "router/usage_matrix" in acc.Tags()["images"]
    image = acc.Images("router/usage_matrix")[-1]
    assert (image.width, image.height) == (2 * 16, 1 * 16)  # each entry a 16-pixel block, not one pixel
    assert "router/usage_matrix/table/text_summary" in acc.Tags()["tensors"]  # the labelled values
    assert "options/duration_hist" in acc.Tags()["histograms"]
    assert {"router/effective_modules", "modules/usage/0", "options/duration"} <= set(acc.Tags()["scalars"])
    assert metrics.summary()["usage_matrix"].sum() == 0  # reset after reading


def test_per_module_duration_and_immediate_stops():
    metrics = ModularityMetrics(1, 3, max_duration=15, module_names=["get_wood", "get_iron", "make0"])
    z = torch.zeros(4, dtype=torch.bool)
    done = torch.tensor([True, True, True, False])
    metrics.record_step(SMDPTransition(done, torch.tensor([1, 1, 0, 2]), torch.zeros(4), torch.tensor([1, 3, 1, 1]),
                                       torch.zeros(4, dtype=torch.long), torch.tensor([False, False, True, False]), z, z))
    s = metrics.summary()
    assert s["modules/duration/get_iron"] == pytest.approx(2.0)
    assert s["modules/immediate_stop/get_iron"] == pytest.approx(0.5)  # one of its two runs stopped at once
    assert s["modules/immediate_stop/get_wood"] == 0.0  # a forced stop is not the module's choice
    assert "modules/duration/make0" not in s  # its run has not ended
    assert "modules/duration/get_iron" not in metrics.summary()  # reset after reading


def test_sketch_agent_reports_a_module_that_stops_at_once():
    from modrl.agents.sketch import PolicySketches, SketchConfig
    from modrl.envs.craft import CraftVectorEnv

    env = CraftVectorEnv(32, split="train")
    agent = PolicySketches(SketchConfig(stop_bias=30.0, curriculum=False), env, total_steps=10_000)
    agent.start(0)
    agent._rollout()
    s = agent.metrics.summary()
    assert s["modules/immediate_stop/get_wood"] == pytest.approx(1.0)
    assert s["modules/duration/get_wood"] == pytest.approx(1.0)  # the STOP step is the run's one step


def test_a_heatmap_is_a_labelled_table_and_a_block_image():
    from modrl.logger import Heatmap, heatmap_image

    h = Heatmap(torch.tensor([[1.0, 0.0], [0.25, 0.75]]), ["make[plank]", "get[gold]"], ["get_wood", "make0"], "task \\ module")
    assert h.markdown().splitlines() == ["|task \\ module|get_wood|make0|", "|-|-|-|", "|make[plank]|1.00|0.00|",
                                         "|get[gold]|0.25|0.75|"]
    image = heatmap_image(h.values)
    assert image.shape == (32, 32) and image[16:, :16].eq(0.25).all() and image[:16, 16:].eq(0.0).all()
    assert heatmap_image(torch.rand(10, 400)).shape == (10, 400)  # big tables keep one pixel an entry


def test_subgoal_success_reads_the_world_state_over_each_module_run():
    from modrl.envs.craft import KIND, CraftVectorEnv
    from modrl.metrics import SubgoalMetrics

    env = CraftVectorEnv(4, split="train")
    sym = {name: i for i, name in enumerate(env.symbols)}
    symbols = torch.tensor([sym["get_wood"], sym["make1"], sym["make1"], sym["get_iron"]])
    slot_symbol = torch.tensor([sym["get_wood"], sym["make1"], sym["make1"], 0, 0, sym["get_iron"]])
    m = SubgoalMetrics(env.subgoal_targets, env.subgoal_defined, slot_symbol, num_envs=4)
    begun = torch.zeros(4, env.NUM_SUBGOAL_FEATURES)
    begun[1, KIND["wood"]] = 1.0  # row 1 starts holding a wood
    m.begin(torch.tensor([True, True, True, True]), torch.tensor([0, 1, 2, 5]), symbols, begun)
    end = begun.clone()
    end[0, KIND["wood"]] += 1  # row 0, get_wood: a wood picked up
    end[1, KIND["wood"]] -= 1  # row 1, make1: the wood made into a stick (workshop 1)
    end[1, KIND["stick"]] += 1
    end[2, KIND["plank"]] += 1  # row 2, make1: a plank — a workshop-0 product, not make1's job
    end[3, KIND["iron"]] += 1  # row 3, get_iron: done, but its module has not stopped yet
    m.end(torch.tensor([True, True, True, False]), symbols, end)
    s = m.summary(env.symbols, {0: "make[plank]/0_get_wood", 1: "make[stick]/1_make1", 2: "x/2_make1", 5: "y"})
    assert s == {"subgoals/get_wood/success_rate": 1.0, "subgoals/make1/success_rate": 0.5,
                 "subgoals/make[plank]/0_get_wood/success_rate": 1.0, "subgoals/make[stick]/1_make1/success_rate": 1.0,
                 "subgoals/x/2_make1/success_rate": 0.0}
    assert m.summary(env.symbols) == {}  # reset after reading
    m.end(torch.tensor([False, False, False, True]), symbols, end)  # now it stops
    assert m.summary(env.symbols, {5: "y"}) == {"subgoals/get_iron/success_rate": 1.0, "subgoals/y/success_rate": 1.0}
    halt = torch.full((4,), len(env.symbols))  # a choice past the symbols (a learned controller's TERMINATE)
    m.begin(torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.long), halt, begun)
    m.end(torch.ones(4, dtype=torch.bool), halt, end)
    assert m.summary(env.symbols) == {}  # is not a module run


def test_subgoal_targets_of_the_worlds():
    from modrl.envs.craft import KIND, CraftVectorEnv
    from modrl.envs.maze import MazeVectorEnv

    craft = CraftVectorEnv(2)
    target = dict(zip(craft.symbols, craft.subgoal_targets))
    assert target["get_gem"].nonzero().flatten().tolist() == [KIND["gem"]]
    assert sorted(target["make1"].nonzero().flatten().tolist()) == sorted(KIND[k] for k in ("stick", "bed", "shears"))
    indep = CraftVectorEnv(2, sketch_set="independent")
    assert dict(zip(indep.symbols, indep.subgoal_targets))["make_bed"].nonzero().flatten().tolist() == [KIND["bed"]]
    maze = MazeVectorEnv(2)
    assert dict(zip(maze.symbols, maze.subgoal_targets.tolist())) == {
        "left": [-1.0, 0.0], "down": [0.0, 1.0], "right": [1.0, 0.0], "up": [0.0, -1.0]}
    assert not MazeVectorEnv(2, sketch_set="independent").subgoal_defined.any()  # whole walks: no target


@pytest.mark.parametrize("sketch_set", ["paper", "independent"])
def test_each_symbol_is_one_module(sketch_set):
    from modrl.envs.craft import CraftVectorEnv
    from modrl.envs.maze import MazeVectorEnv

    for env in (CraftVectorEnv(2, sketch_set=sketch_set), MazeVectorEnv(2, sketch_set=sketch_set)):
        assert len(set(env.symbols)) == len(env.symbols) == int(env.sketches.max()) + 1, env.symbols
