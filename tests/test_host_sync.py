"""The host-sync audit, and what it says of a training tick: with ``static_shapes`` the sketch worlds' steps and
the continuing sketch rollout's ticks read nothing on the host (a CUDA graph could replay them)."""

from pathlib import Path

import pytest
import torch

from modrl.config import load_config
from modrl.envs.craft import CraftVectorEnv
from modrl.envs.maze import MazeVectorEnv
from modrl.host_sync import HostSyncAudit
from modrl.inventory import default_mode
from modrl.trainer import make_agent, make_env, seed_everything
from modrl.vec import EnvError


def test_the_audit_finds_host_reads_and_their_lines():
    x = torch.tensor([0.0, 1.0, 2.0])
    tolist = torch.Tensor.tolist
    with HostSyncAudit() as audit:
        torch.nonzero(x)
        bool((x > 1).any())
        x[x > 0]
        x.tolist()
        y = x * 2 + 1  # elementwise: no host read
    ops = {op for op, _ in audit.sites}
    assert ops == {"aten::nonzero", "aten::_local_scalar_dense", "aten::index (boolean mask)", "Tensor.tolist"}
    assert torch.Tensor.tolist is tolist  # unwrapped again on exit
    assert all(site.startswith("tests/test_host_sync.py:") for _, site in audit.sites)
    assert y.shape == (3,)


@pytest.mark.parametrize("world", [CraftVectorEnv, MazeVectorEnv])
def test_sketch_worlds_step_without_host_reads_with_static_shapes(world):
    actions = torch.randint(0, 6, (40, 64), generator=torch.Generator().manual_seed(0))
    counts = {}
    for static in (False, True):
        env = world(64, split="all", static_shapes=static)
        env.check_actions = False  # the range check reads the host by design (trainers turn it off)
        env.reset(seed=0)
        with HostSyncAudit() as audit:
            for a in actions:  # random STOPs end episodes: resets happen in most steps
                env.step(a)
        counts[static] = audit
    assert counts[True].count == 0, counts[True].sites
    assert {op for op, _ in counts[False].sites} == {"aten::nonzero"}  # the CPU path finds the reset rows


@pytest.mark.parametrize("runs", [1, 5])
def test_sketch_rollout_ticks_read_nothing_on_the_host(runs):
    # The ticks a CUDA graph captures (SketchAgent._ticks) read nothing on the host; the continuing
    # rollout around them reads once per update (the episode counts), whatever its number of ticks.
    # (sparse_features, a CPU-only speed-up, reads each tick's non-zero count: off, as it is under a
    # captured rollout.) The inventories in the mode a CUDA device picks for acting (float32: no
    # grouped_mm): 8 modules and 50 critic heads a run; also five runs side by side.
    for ticks in (2, 6):
        extra = [f"agent.num_runs={runs}", f"env.kwargs.task_groups={runs}"] if runs > 1 else []
        cfg = load_config(Path(__file__).parents[1] / "configs" / "craft_sketch.yaml", [
            "env.num_envs=40", "env.kwargs.static_shapes=true", f"agent.rollout_steps={ticks}", "agent.sparse_features=false",
            *extra])
        seed_everything(1)
        agent = make_agent(cfg, make_env(cfg.env, "cpu"))
        for net in (agent.policy["subpolicies"].net, agent.policy["critics"].net):
            net.mode = default_mode("cuda", grouped_mm=False, num_modules=net.num_modules, grad=False)
        agent.start(1)
        with HostSyncAudit() as audit:
            agent._ticks()
        assert audit.count == 0, audit.sites
        with HostSyncAudit() as audit:
            agent._rollout_continuing()
        assert audit.count <= 1, audit.sites


def test_static_shapes_must_be_a_bool():
    with pytest.raises(EnvError, match="static_shapes must be true, false or null"):
        CraftVectorEnv(4, static_shapes="yes")
