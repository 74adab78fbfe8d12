"""Option-critic: the termination gradient on a hand-computed example, the intra-option policy
gradient against the exact gradient, the two termination conventions, and learning Four Rooms."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from modrl.agents.option_critic import OptionCritic, OptionCriticConfig
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.evaluation import evaluate
from modrl.vec import TorchVectorEnv

S = 104  # Four Rooms states
CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"


def make_agent(num_envs=1, steps=1, **cfg):
    env = FourRoomsVectorEnv(num_envs)
    agent = OptionCritic(OptionCriticConfig(num_steps=steps, **cfg), env, total_steps=10**9)
    agent.start(0)
    return agent


def fill(agent, **fields):
    for key, value in fields.items():
        agent.buf[key].copy_(torch.as_tensor(value).reshape(agent.buf[key].shape))


def test_termination_gradient_sign_and_magnitude():
    # Option 0 arrives in state 5 where Q_Ω(5, ·) = [1, 2]: option 0 is worse by 1, the margin is 0.1,
    # so the advantage is 1 − 2 + 0.1 = −0.9 and ∂/∂ϑ [σ(ϑ)·A] at ϑ = 0 is σ'(0)·A = −0.225.
    agent = make_agent(num_options=2, termination_reg=0.1, lr_term=0.5)
    with torch.no_grad():
        agent.policy.q_table[5] = torch.tensor([1.0, 2.0])
    fill(agent, obs=[4], arrival=[5], option=[0], action=[0], reward=[0.0], done=[False], terminated=[False])
    terms = agent.loss_terms()
    (grad,) = torch.autograd.grad(terms["termination"].sum(), agent.policy.beta_table)
    idx = 0 * S + 5  # (run 0 · K + option 0) · S + state 5
    assert grad[idx].item() == pytest.approx(-0.225)
    assert torch.count_nonzero(grad) == 1
    # one SGD step raises the worse option's termination logit by lr · 0.225 (it should stop more)
    before = agent.policy.beta_table[idx].item()
    sgd = torch.optim.SGD([agent.policy.beta_table], lr=0.5)
    sgd.zero_grad()
    agent.loss_terms()["termination"].sum().backward()
    sgd.step()
    assert agent.policy.beta_table[idx].item() - before == pytest.approx(0.5 * 0.225)
    # the better option, arriving in the same state, is pushed to continue instead
    fill(agent, option=[1])
    (grad,) = torch.autograd.grad(agent.loss_terms()["termination"].sum(), agent.policy.beta_table)
    assert grad[1 * S + 5].item() == pytest.approx(0.25 * (2 - 2 + 0.1))


class OneStepBandit(TorchVectorEnv):
    """One state, three actions with fixed rewards; every episode ends after one step."""

    REWARD = torch.tensor([1.0, 0.0, 0.5])

    def __init__(self, num_envs):
        super().__init__(num_envs, single_observation_space=gym.spaces.Discrete(1),
                         single_action_space=gym.spaces.Discrete(3), max_episode_steps=10)

    def _reset_state(self, mask, *, new_run):
        pass

    def _step_state(self, actions):
        return self.REWARD[actions], torch.ones(self.num_envs, dtype=torch.bool)

    def _observe(self):
        return torch.zeros(self.num_envs, dtype=torch.long)


def test_intra_option_policy_gradient_matches_the_exact_gradient():
    torch.manual_seed(0)
    n = 200_000
    env = OneStepBandit(n)
    cfg = OptionCriticConfig(num_options=1, learn_termination=False, temperature=1.0, baseline=True)
    agent = OptionCritic(cfg, env, total_steps=10**9)
    with torch.no_grad():
        agent.policy.intra_table.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
        agent.policy.q_table.fill_(0.4)  # a baseline does not bias the estimator
    agent.start(0)
    agent._rollout()
    terms = agent.loss_terms()
    (estimate,) = torch.autograd.grad(terms["policy"].mean(), agent.policy.intra_table)
    theta = agent.policy.intra_table.detach().clone().requires_grad_(True)
    objective = (theta[0].softmax(-1) * OneStepBandit.REWARD).sum()  # J = Σ_a π(a) r(a) = Q_Ω(s, ω)
    (exact,) = torch.autograd.grad(-objective, theta)
    pi = theta[0].softmax(-1).detach()
    stderr = (OneStepBandit.REWARD - 0.4).abs().max() * pi.sqrt() / math.sqrt(n)  # loose bound per coordinate
    assert ((estimate[0] - exact[0]).abs() < 5 * stderr + 1e-4).all(), (estimate, exact)


def test_arrival_and_shifted_conventions_agree_on_a_scripted_trajectory():
    torch.manual_seed(3)
    agent = make_agent(steps=4, num_options=3, termination_reg=0.05)
    with torch.no_grad():
        agent.policy.q_table.normal_()
        agent.policy.beta_table.normal_()
    states, options = [10, 11, 12, 22, 23], [2, 2, 0, 1]
    fill(agent, obs=states[:4], arrival=states[1:], option=options, prev_option=[0] + options[:3],
         episode_start=[True, False, False, False], action=[0, 1, 2, 3], reward=[0.0] * 4,
         done=[False] * 4, terminated=[False] * 4)
    arrival = agent.loss_terms()["termination"]
    agent.cfg.termination_convention = "shifted"
    shifted = agent.loss_terms()["termination"]
    assert shifted[0].item() == 0.0  # the episode's first step has no previous option
    torch.testing.assert_close(arrival[:3], shifted[1:])  # the same samples, one step later
    g_arrival = torch.autograd.grad(arrival[:3].sum(), agent.policy.beta_table)[0]
    agent_terms = agent.loss_terms()["termination"]
    g_shifted = torch.autograd.grad(agent_terms[1:].sum(), agent.policy.beta_table)[0]
    torch.testing.assert_close(g_arrival, g_shifted)


def test_arrival_convention_skips_terminal_arrivals():
    agent = make_agent(num_options=2)
    fill(agent, obs=[4], arrival=[5], option=[0], action=[0], reward=[1.0], done=[True], terminated=[True])
    assert agent.loss_terms()["termination"].item() == 0.0


def test_option_critic_learns_four_rooms_without_collapsing():
    torch.manual_seed(0)
    env = FourRoomsVectorEnv(16, max_episode_steps=100)
    agent = OptionCritic(OptionCriticConfig(num_options=4, lr_critic=1.0, lr_intra=1.0), env, total_steps=10**9)
    agent.start(1)
    for _ in range(6000):  # 96k env steps
        agent.train_iteration()
    extras = agent.log_extras()
    result = evaluate(agent, FourRoomsVectorEnv(250, max_episode_steps=100), 1000, seed=7)
    assert result["success_rate"] >= 0.9, result  # random policy: 0.24
    assert result["length_mean"] <= 30, result
    assert extras["options/duration"] > 1.5 and extras["options/collapsed_to_primitive"] == 0.0, extras


def test_independent_runs_do_not_share_updates():
    agent = make_agent(num_envs=4, num_runs=4, num_options=2)
    fill(agent, obs=[[1, 1, 1, 1]], arrival=[[2, 2, 2, 2]], option=[[0, 0, 0, 0]], action=[[0, 0, 0, 0]],
         reward=[[1.0, 0.0, 0.0, 0.0]], done=[[True, False, False, False]], terminated=[[True, False, False, False]])
    terms = agent.loss_terms()
    (grad,) = torch.autograd.grad(terms["critic"].sum(), agent.policy.q_table)
    rows = grad.view(4, S, 2)[:, 1, 0]
    assert rows[0].item() == pytest.approx(-1.0) and (rows[1:] == 0).all()  # only run 0 saw a reward


def test_per_run_deliberation_costs_charge_each_run_its_own_eta():
    # A2OC: η is subtracted from the reward at a switch and added to the termination advantage. With
    # one η per run (the batched sweep), run r is charged η_r and nothing else changes: the same seed
    # gives the same rollout, so the buffers differ exactly by η_r at the switches.
    etas = [0.0, 0.5, 0.25]
    rollouts = {}
    for costs in (None, etas):
        torch.manual_seed(3)
        agent = make_agent(num_envs=6, steps=64, num_runs=3, num_options=2, deliberation_costs=costs)
        agent._rollout()
        rollouts[costs is None] = agent, {k: v.clone() for k, v in agent.buf.items()}, agent.targets()
    (_, b0, t0), (_, b1, t1) = rollouts[True], rollouts[False]
    assert torch.equal(b0["action"], b1["action"]) and torch.equal(b0["option"], b1["option"])
    eta = torch.tensor(etas)[torch.arange(6) % 3]
    charge = b0["reward"] - b1["reward"]  # [T, N]: η_r at a switch, 0 elsewhere
    switched = charge != 0
    assert torch.allclose(charge[switched], eta.expand_as(charge)[switched])
    assert not switched[:, eta == 0].any() and switched[:, eta > 0].sum() > 10
    # The switches are the option changes within an episode (the option that followed a termination
    # may be drawn again, so a switch need not change the option).
    changed = (b0["option"][1:] != b0["option"][:-1]) & ~b0["done"][:-1]
    assert not changed[:, eta > 0].logical_and(~switched[:-1, eta > 0]).any()
    assert torch.allclose(t1["adv_term"] - t0["adv_term"], eta.repeat(64), atol=1e-6)


def test_deliberation_costs_need_one_entry_per_run():
    with pytest.raises(ValueError, match="one per run"):
        OptionCriticConfig(num_runs=2, deliberation_costs=[0.0, 0.01, 0.02])


def test_option_durations_per_run_pool_to_the_logged_duration():
    torch.manual_seed(0)
    agent = make_agent(num_envs=8, steps=50, num_runs=4, num_options=4)
    agent.train_iteration()
    per_run = agent.option_duration_per_run(reset=False)
    runs, steps = agent.run_options.unbind(-1)
    assert per_run.shape == (4,) and (per_run >= 1).all()
    assert float(steps.sum() / runs.sum()) == pytest.approx(agent.log_extras()["options/duration"])
    agent.option_duration_per_run()
    assert agent.option_duration_per_run().isnan().all()  # reset: nothing completed since


def test_evaluation_groups_split_the_episodes_by_env_row():
    agent = make_agent(num_envs=4, num_runs=2, num_options=2)
    env = FourRoomsVectorEnv(8, max_episode_steps=50)
    group = torch.tensor([0, 1] * 4)
    result = evaluate(agent, env, 200, seed=1, groups=group)
    per_group = result["per_group"]
    assert sorted(per_group) == [0, 1] and sum(g["episodes"] for g in per_group.values()) == 200
    pooled = sum(g["success_rate"] * g["episodes"] for g in per_group.values()) / 200
    assert pooled == pytest.approx(result["success_rate"])
    with pytest.raises(ValueError, match="one label per env row"):
        evaluate(agent, env, 10, seed=1, groups=torch.zeros(3, dtype=torch.long))


def test_ppoc_surrogates_equal_the_policy_gradient_at_the_rollout_policy():
    # PPOC: at the policy that collected the data every ratio is 1, so the clipped surrogates of the
    # intra-option policies and of the learned π_Ω have the plain policy gradient's gradient.
    torch.manual_seed(0)
    agent = make_agent(num_envs=8, steps=8, option_policy="learned", temperature=1.0, update="ppo", gae_lambda=0.95)
    with torch.no_grad():  # a non-uniform starting point
        agent.policy.q_table.normal_()
        agent.policy.intra_table.normal_()
        agent.policy.omega_table.normal_()
    agent._rollout()
    targets = agent.targets()
    assert agent.buf["decision"][0].all()  # every env chose an option at its first step
    ppo = agent.loss_terms(targets)
    agent.cfg.update = "a2c"
    plain = agent.loss_terms(targets)
    for key, table in (("policy", agent.policy.intra_table), ("option_policy", agent.policy.omega_table)):
        (a,) = torch.autograd.grad(ppo[key].sum(), table)
        (b,) = torch.autograd.grad(plain[key].sum(), table, retain_graph=True)
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0
    # a small step against the π_Ω loss raises Σ over decisions of (Q_Ω(s, ω) − V(s)) · log π_Ω(ω|s)
    decided = agent.buf["decision"].flatten()
    adv = targets["adv_option"][decided]
    assert (adv > 0).any() and (adv < 0).any()

    def objective():
        obs, option = agent.buf["obs"].flatten()[decided], agent.buf["option"].flatten()[decided]
        log_pi = agent.policy.option_logits(obs, torch.zeros_like(obs)).log_softmax(-1)
        return (adv * log_pi.gather(-1, option[:, None]).squeeze(-1)).sum()

    (g,) = torch.autograd.grad(plain["option_policy"].sum(), agent.policy.omega_table)
    before = objective().item()
    with torch.no_grad():
        agent.policy.omega_table -= 1e-3 * g
    assert objective().item() > before


def test_ppoc_learns_four_rooms():
    from modrl.config import load_config
    from modrl.trainer import make_agent as build, make_env

    cfg = load_config(CONFIGS / "fourrooms_ppoc.yaml", ["total_steps=200000", "env.kwargs.max_episode_steps=100"])
    torch.manual_seed(0)
    agent = build(cfg, make_env(cfg.env, "cpu"))
    agent.start(1)
    while not agent.finished:
        agent.train_iteration()
    extras = agent.log_extras()
    result = evaluate(agent, FourRoomsVectorEnv(250, max_episode_steps=100), 1000, seed=7)
    assert result["success_rate"] >= 0.95, result  # random policy: 0.24
    assert result["length_mean"] <= 35, result
    assert extras["options/duration"] > 1.5, extras


def test_deliberation_sweep_reports_every_eta(tmp_path):
    from modrl.experiments import deliberation_sweep

    threads = torch.get_num_threads()
    try:
        rows = deliberation_sweep.main(["--runs", "2", "--steps", "500", "--eval-episodes", "20", "--etas", "0", "0.05",
                                        "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # the sweep sets its own
    assert [r["eta"] for r in rows] == [0.0, 0.05]
    assert all(math.isfinite(r["option_duration"]) and r["option_duration"] >= 1 and r["eval_episodes"] == 20 for r in rows)
    assert (tmp_path / "deliberation_sweep.json").exists()
