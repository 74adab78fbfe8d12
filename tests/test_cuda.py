"""CUDA: the batched environments, the module inventory and the agents give the CPU's results on
the GPU. Skipped where torch sees no CUDA device (CI); on a GPU machine: ``pytest tests/test_cuda.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modrl.envs.craft import CraftVectorEnv
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.envs.maze import MazeVectorEnv
from modrl.inventory import StackedMLP

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ENVS = {
    "four_rooms": lambda n, device: FourRoomsVectorEnv(n, slip_prob=0.0, device=device),  # no randomness in step
    "craft": lambda n, device: CraftVectorEnv(n, split="train", device=device),
    "maze": lambda n, device: MazeVectorEnv(n, split="train", device=device),
}


@pytest.mark.parametrize("name", list(ENVS))
def test_env_steps_identically_on_cpu_and_cuda(name):
    """Same state, same actions: the same states, rewards and ends (observations to float rounding)
    for every env until its episode ends (the autoreset draws from each device's own generator, which differ)."""
    n = 256
    cpu, gpu = ENVS[name](n, "cpu"), ENVS[name](n, "cuda")
    cpu.reset(seed=0)
    gpu.reset(seed=0)
    for k in (*cpu.state_keys, "_elapsed", "_episode_return", "_done"):
        setattr(gpu, k, getattr(cpu, k).to("cuda"))
    world_actions = getattr(cpu, "num_world_actions", cpu.single_action_space.n)  # no STOP: no sketch step ends
    gen = torch.Generator().manual_seed(1)
    live = torch.ones(n, dtype=torch.bool)  # envs whose episode has not ended yet
    compared = 0
    for _ in range(60):
        a = torch.randint(0, world_actions, (n,), generator=gen)
        (obs, reward, terminated, truncated, _), out = cpu.step(a), gpu.step(a.to("cuda"))
        assert all(x.device.type == "cuda" for x in out[:4])
        for x, y in zip((reward, terminated, truncated), out[1:4]):
            assert torch.equal(x[live], y.cpu()[live])
        live &= ~(terminated | truncated)
        torch.testing.assert_close(obs[live], out[0].cpu()[live])  # Maze's sensors: sqrt, rounding may differ
        for k in cpu.state_keys:
            x, y = getattr(cpu, k), getattr(gpu, k).cpu()
            rows = live if x.shape[:1] == (n,) else slice(None)  # per-env tensors; shared ones whole
            assert torch.equal(x[rows], y[rows]), k
        compared += int(live.sum())
    assert compared >= 1000  # env-steps compared before their episodes ended


def test_inventory_forward_and_gradients_match_the_cpu():
    torch.manual_seed(0)
    inv = StackedMLP(8, 64, 6, hidden=128, num_layers=2)
    x = torch.randn(4096, 64)
    index = torch.randint(0, 8, (4096,))
    inv_gpu = StackedMLP(8, 64, 6, hidden=128, num_layers=2).cuda()
    inv_gpu.load_state_dict(inv.state_dict())
    out = inv(x, index)
    out_gpu = inv_gpu(x.cuda(), index.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(out)
    out.backward(g)
    out_gpu.backward(g.cuda())
    for p, q in zip(inv.parameters(), inv_gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("craft_sketch.yaml", ["agent.max_episodes=2048", "env.num_envs=256"]),
        ("craft_sketch.yaml", ["agent.max_episodes=2048", "env.num_envs=256", "agent.rollout_steps=25"]),
        ("craft_sketch.yaml", ["agent.max_episodes=4096", "env.num_envs=256", "agent.rollout_graph=cuda"]),
        ("fourrooms_option_critic.yaml", ["total_steps=20000"]),
        ("fourrooms_ppo.yaml", ["total_steps=20000"]),
    ],
    ids=["sketch", "sketch_continuing", "sketch_cuda_graph", "option_critic", "ppo"],
)
def test_training_resumes_and_evaluates_on_cuda(tmp_path, config, overrides):
    from modrl.config import load_config
    from modrl.evaluation import evaluate_run
    from modrl.trainer import train

    cfg = load_config(CONFIGS / config, [*overrides, "device=cuda", "eval_episodes=0", f"run_root={tmp_path}"])
    run_dir = train(cfg, max_iterations=3)  # stopped early, as an interrupted run
    train(resume=run_dir)
    result = evaluate_run(run_dir, episodes=64)
    assert 0.0 <= result["success_rate"] <= 1.0 and result["episodes"] >= 64


@pytest.mark.parametrize("runs", [1, 5])
def test_the_captured_rollout_replays_the_eager_one_on_cuda(runs):
    """``rollout_graph: cuda`` (the ticks captured in a CUDA graph: one eager warm-up, then capture,
    then replays) gives the eager rollout's worlds, episodes in progress, buffers and counters bit
    for bit. Rollouts only: the update's float atomics (index_add backward) are not deterministic.
    ``runs = 5``: five runs side by side (``agent.num_runs``), 50 modules, the 15-minute target's form."""
    from modrl.config import load_config
    from modrl.trainer import make_agent, make_env, seed_everything

    results = {}
    extra = [f"agent.num_runs={runs}", f"env.kwargs.task_groups={runs}", "env.num_envs=320"] if runs > 1 else ["env.num_envs=256"]
    for graph in ("eager", "cuda"):
        cfg = load_config(CONFIGS / "craft_sketch.yaml", ["device=cuda", *extra, f"agent.rollout_graph={graph}"])
        seed_everything(1)
        agent = make_agent(cfg, make_env(cfg.env, "cuda"))
        agent.start(1)
        for _ in range(4):
            buf = agent._rollout_continuing()
        state = {f"env.{k}": v for k, v in agent.env.state_dict().items() if isinstance(v, torch.Tensor)}
        state.update({f"buf.{k}": v for k, v in buf.items() if isinstance(v, torch.Tensor)})
        state.update(pointer=agent.router.pointer, task=agent.router.task, obs=agent.obs, active=agent.controller.active,
                     usage=agent.metrics.usage, stats=agent.stats.totals, round_success=agent.curriculum.success)
        results[graph] = {k: v.cpu().clone() for k, v in state.items()}
        results[graph]["episodes"] = torch.tensor(agent.episodes)
    assert agent._graph.captures == 1
    for k, v in results["eager"].items():
        assert torch.equal(v, results["cuda"][k]), k
