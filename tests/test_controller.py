"""Call-and-return semantics on hand-written sequences: decisions only where needed, forced stops
at the cap, SMDP rewards and durations, sketch pointers, and behaviour across autoreset."""

from __future__ import annotations

import torch

from modrl.controller import CallAndReturn
from modrl.halting import Halting
from modrl.routing import SketchRouter

F_, T_ = False, True


def b(*xs):
    return torch.tensor(xs, dtype=torch.bool)


def step(ctrl, stop, reward, term=(F_, F_, F_), trunc=(F_, F_, F_)):
    return ctrl.step(b(*stop), torch.tensor(reward, dtype=torch.float32), b(*term), b(*trunc))


def test_decisions_only_where_needed_and_smdp_rewards():
    ctrl = CallAndReturn(3, Halting(max_steps=3), gamma=0.5)
    assert ctrl.needs_decision.tolist() == [T_, T_, T_]  # episode start
    assert ctrl.decide(torch.tensor([0, 1, 2])).tolist() == [T_, T_, T_]
    assert ctrl.active.tolist() == [0, 1, 2]

    tr, halt, forced = step(ctrl, (F_, T_, F_), [1.0, 1.0, 1.0])
    assert tr.completed.tolist() == [F_, T_, F_] and halt.tolist() == [F_, T_, F_] and not forced.any()
    assert tr.choice[1] == 1 and tr.reward[1] == 1.0 and tr.duration[1] == 1 and tr.decision_step[1] == 0
    assert ctrl.needs_decision.tolist() == [F_, T_, F_]

    assert ctrl.decide(torch.tensor([7, 4, 7])).tolist() == [F_, T_, F_]  # only env 1 takes the choice
    assert ctrl.active.tolist() == [0, 4, 2]

    tr, _, _ = step(ctrl, (F_, F_, F_), [2.0, 10.0, 4.0])
    assert not tr.completed.any()
    # third step of envs 0 and 2: the cap (3) forces their stop; env 1 is at its second step
    tr, halt, forced = step(ctrl, (F_, F_, T_), [4.0, 0.0, 8.0])
    assert tr.completed.tolist() == [T_, F_, T_]
    assert forced.tolist() == [T_, F_, F_] and tr.forced.tolist() == [T_, F_, F_]  # env 2 chose to stop
    assert tr.duration.tolist()[0] == 3 and tr.duration.tolist()[2] == 3
    assert tr.reward[0].item() == 1.0 + 0.5 * 2.0 + 0.25 * 4.0  # Σ γ^k r over the run
    assert tr.reward[2].item() == 1.0 + 0.5 * 4.0 + 0.25 * 8.0
    assert tr.decision_step.tolist()[0] == 0
    assert ctrl.needs_decision.tolist() == [T_, F_, T_]


def test_episode_end_returns_control_across_autoreset():
    ctrl = CallAndReturn(2, Halting(max_steps=10), gamma=1.0)
    ctrl.decide(torch.tensor([3, 3]))
    step_ = lambda stop, r, term, trunc: ctrl.step(b(*stop), torch.tensor(r), b(*term), b(*trunc))  # noqa: E731
    tr, halt, _ = step_((F_, F_), [0.0, 0.0], (T_, F_), (F_, T_))
    # both episodes ended (terminated / truncated) while the module was still running
    assert tr.completed.tolist() == [T_, T_] and not halt.any()
    assert tr.terminated.tolist() == [T_, F_] and tr.truncated.tolist() == [F_, T_]
    assert ctrl.needs_decision.tolist() == [T_, T_]  # a fresh decision on the next episode's first obs
    ctrl.decide(torch.tensor([1, 2]))
    assert ctrl.steps_in_module.tolist() == [0, 0]
    tr, _, _ = step_((T_, F_), [5.0, 0.0], (F_, F_), (F_, F_))
    assert tr.reward[0] == 5.0 and tr.duration[0] == 1  # the accumulated reward restarted


def test_state_dict_round_trip():
    ctrl = CallAndReturn(3, Halting(max_steps=4))
    ctrl.decide(torch.tensor([0, 1, 2]))
    step(ctrl, (F_, T_, F_), [1.0, 2.0, 3.0])
    state = ctrl.state_dict()
    other = CallAndReturn(3, Halting(max_steps=4))
    other.load_state_dict(state)
    a, _, _ = step(ctrl, (T_, T_, T_), [1.0, 1.0, 1.0])
    b_, _, _ = step(other, (T_, T_, T_), [1.0, 1.0, 1.0])
    assert torch.equal(a.reward, b_.reward) and torch.equal(a.duration, b_.duration)


def test_sketch_router_drives_the_controller():
    # two envs, sketches [0, 1] and [2]; modules stop on their own at the given steps
    router = SketchRouter([[0, 1], [2]], num_envs=2, num_modules=3)
    ctrl = CallAndReturn(2, Halting(max_steps=5))
    router.start(torch.ones(2, dtype=torch.bool), torch.tensor([0, 1]))
    stops = [(F_, F_), (T_, F_), (F_, T_), (T_, F_)]
    trace, exhausted_trace = [], []
    for stop in stops:
        ctrl.decide(router.route().choice)
        trace.append(ctrl.active.tolist())
        tr, halt, _ = ctrl.step(b(*stop), torch.zeros(2), b(F_, F_), b(F_, F_))
        exhausted_trace.append(router.advance(halt).tolist())
    # env 1's one-step sketch is exhausted after its STOP: its next decision is HALT (= 3)
    assert trace == [[0, 2], [0, 2], [1, 2], [1, router.halt_index]]
    assert exhausted_trace == [[F_, F_], [F_, F_], [F_, T_], [T_, T_]]
