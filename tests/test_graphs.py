"""Captured regions (``modrl/graphs.py``), emulated on the CPU: replays give what eager code gives,
Python runs only at capture, state rebound inside a region carries over, what a graph cannot
replay is refused with the line that did it, and the sketch agent's captured rollout trains bit for
bit like the eager one (so a CUDA device can capture it)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from modrl.config import load_config
from modrl.graphs import CapturedRegion, CaptureError
from modrl.trainer import make_agent, make_env, seed_everything

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "craft_sketch.yaml"


class Counter:
    def __init__(self):
        self.x = torch.zeros(3)
        self.step = torch.ones(3)
        self.python_calls = 0

    def tick(self):
        self.x = self.x * 2 + self.step  # rebound, functional style
        self.python_calls += 1
        return {"doubled": self.x * 2}


def test_replays_carry_state_and_run_python_once():
    c = Counter()
    region = CapturedRegion(c.tick, [c], emulate=True)
    x0 = c.x
    outs = [region()["doubled"].clone() for _ in range(4)]
    expected, x = [], torch.zeros(3)
    for _ in range(4):
        x = x * 2 + 1
        expected.append(x * 2)
    for got, want in zip(outs, expected):
        assert torch.equal(got, want)
    assert c.x is x0 and torch.equal(c.x, x)  # the new value went into the tensor held at capture
    assert c.python_calls == 1 and region.captures == 1
    c.step.fill_(0.5)  # updated in place outside the region: the replay reads it
    assert torch.equal(region()["doubled"], (x * 2 + 0.5) * 2)


def test_an_attribute_replaced_outside_is_captured_again():
    c = Counter()
    region = CapturedRegion(c.tick, [c], emulate=True)
    region()
    region()
    c.step = torch.full((3,), 10.0)  # replaced, not updated in place: the old graph would read the old tensor
    assert torch.equal(region()["doubled"], (3 * 2 + 10) * 2 * torch.ones(3))
    assert region.captures == 2


@pytest.mark.parametrize("body, message", [
    (lambda c: bool(c.x.sum() > 0), "aten::_local_scalar_dense at tests/test_graphs.py"),
    (lambda c: c.x.tolist(), "Tensor.tolist"),
    (lambda c: torch.nonzero(c.x), "aten::nonzero"),
    (lambda c: c.x[c.x > 0], r"aten::index \(boolean mask\)"),
    (lambda c: c.x + torch.tensor([1.0, 2.0, 3.0]), "made from Python data"),
    (lambda c: setattr(c, "fresh", torch.ones(2)), "created inside a captured region"),
    (lambda c: setattr(c, "x", torch.ones(5)), "Counter.x changed"),
])
def test_what_a_graph_cannot_replay_is_refused(body, message):
    c = Counter()
    region = CapturedRegion(lambda: body(c), [c], emulate=True)
    with pytest.raises(CaptureError, match=message):
        region()
    assert torch.Tensor.tolist.__name__ == "tolist"  # unwrapped again


def test_a_cuda_graph_needs_a_cuda_device():
    c = Counter()
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(CaptureError, match="needs its state on a CUDA device"):
        CapturedRegion(c.tick, [c])


def _agent(graph: str, **overrides):
    extra = [f"{k if k.startswith('env.') else 'agent.' + k}={v}" for k, v in overrides.items()]
    cfg = load_config(CONFIG, ["env.num_envs=32", "env.kwargs.static_shapes=true", "agent.rollout_steps=4",
                               f"agent.rollout_graph={graph}", "agent.sparse_features=false", *extra])  # eager only
    seed_everything(1)
    agent = make_agent(cfg, make_env(cfg.env, "cpu"))
    for net in (agent.policy["subpolicies"].net, agent.policy["critics"].net):
        net.mode = "dense"  # what a CUDA device runs in float32 (no grouped_mm): the same Python path
    agent.start(1)
    return agent


def _state(agent) -> dict:
    state = {f"policy.{k}": v for k, v in agent.policy.state_dict().items()}
    state.update({f"env.{k}": v for k, v in agent.env.state_dict().items()})
    state.update({f"controller.{k}": v for k, v in agent.controller.state_dict().items()})
    for i, slot in enumerate(agent.optimizer.state.values()):
        state.update({f"optimizer.{i}.{k}": v for k, v in slot.items()})
    state.update(pointer=agent.router.pointer, task=agent.router.task, obs=agent.obs, stats=agent.stats.totals,
                 usage=agent.metrics.usage, durations=agent.metrics.durations, runs=agent.metrics.module_runs,
                 round_success=agent.curriculum.success, episodes=agent.run_episodes, steps=agent.global_step,
                 max_length=agent.curriculum.max_length, rng=torch.get_rng_state(), subgoals=agent.subgoals.by_slot,
                 subgoal_start=agent.subgoals.start)
    return state


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        same = torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        assert same, k


@pytest.mark.parametrize("runs", [1, 2])
def test_the_captured_sketch_rollout_trains_like_the_eager_one(runs):
    # 6 updates, curriculum rounds of 2, new task weights after the third (changed between replays):
    # parameters, optimiser, worlds, episodes in progress, metrics and RNG equal bit for bit
    # (runs = 2: two independent runs in the batch, agent.num_runs).
    states = {}
    extra = {"num_runs": 2, "env.kwargs.task_groups": 2} if runs == 2 else {}
    for graph in ("eager", "emulate"):  # one after the other: both draw from torch's global generator
        agent = _agent(graph, updates_per_round=2, **extra)
        for i in range(6):
            agent.train_iteration()
            if i == 2:  # as a curriculum round does: new task weights, written in place
                agent.env.set_task_distribution(torch.tensor([4.0, 1, 1, 1, 0, 0, 0, 0, 0, 0]))
        states[graph] = _state(agent)
    _assert_same(states["eager"], states["emulate"])
    assert agent._graph.captures == 1


def test_a_resumed_run_captures_again_and_continues_the_run():
    reference = _agent("emulate")
    for _ in range(3):
        reference.train_iteration()
    agent = _agent("emulate")
    agent.train_iteration()
    saved = copy.deepcopy(agent.state_dict()), agent.env.state_dict(), torch.get_rng_state()
    agent.train_iteration()  # replays mutate the captured state in place: the saved copies must not move
    agent.load_state_dict(saved[0])  # rebinds the episodes in progress: the next update captures again
    agent.env.load_state_dict(saved[1])
    torch.set_rng_state(saved[2])
    for _ in range(2):
        agent.train_iteration()
    _assert_same(_state(reference), _state(agent))
    assert agent._graph.captures == 2


def test_rollout_graph_needs_what_it_captures():
    cfg = load_config(CONFIG, ["env.num_envs=8", "agent.rollout_graph=cuda"])
    with pytest.raises(ValueError, match="static_shapes"):
        make_agent(cfg, make_env(cfg.env, "cpu"))
    cfg = load_config(CONFIG, ["env.num_envs=8", "env.kwargs.static_shapes=true", "agent.rollout_graph=cuda"])
    with pytest.raises(ValueError, match="needs a CUDA device"):
        make_agent(cfg, make_env(cfg.env, "cpu"))
    cfg = load_config(CONFIG, ["env.num_envs=8", "env.kwargs.static_shapes=true", "agent.rollout_steps=0",
                               "agent.rollout_graph=emulate"])
    with pytest.raises(ValueError, match="needs rollout_steps"):
        make_agent(cfg, make_env(cfg.env, "cpu"))
