"""modrl.sb3.SB3VecEnv: a batched env under stable-baselines3's VecEnv conventions."""

import numpy as np
import pytest
import torch

from modrl.envs.craft import CraftVectorEnv
from modrl.envs.four_rooms import FourRoomsVectorEnv
from modrl.sb3 import SB3VecEnv, silent_logger
from modrl.vec import EnvError


def test_steps_follow_sb3_conventions():
    """Same trajectory as the batched env itself; finished envs carry terminal_observation,
    TimeLimit.truncated, is_success and episode statistics, the others an empty info."""
    kwargs = dict(split="train", task_in_obs=True, sketch_set="independent", max_episode_steps=6)
    venv, ref = SB3VecEnv(CraftVectorEnv(16, **kwargs)), CraftVectorEnv(16, **kwargs)
    venv.seed(7)
    obs, (ref_obs, _) = venv.reset(), ref.reset(seed=7)
    np.testing.assert_array_equal(obs, ref_obs.numpy())
    rng = np.random.default_rng(0)
    finished = 0
    for _ in range(20):
        actions = rng.integers(0, venv.action_space.n, size=16)
        venv.step_async(actions)
        obs, reward, done, infos = venv.step_wait()
        ref_obs, ref_reward, terminated, truncated, ref_info = ref.step(torch.as_tensor(actions))
        np.testing.assert_array_equal(obs, ref_obs.numpy())
        np.testing.assert_array_equal(reward, ref_reward.numpy())
        np.testing.assert_array_equal(done, (terminated | truncated).numpy())
        assert obs.dtype == np.float32 and reward.dtype == np.float32 and done.dtype == bool
        for i, info in enumerate(infos):
            if not done[i]:
                assert info == {}
                continue
            finished += 1
            np.testing.assert_array_equal(info["terminal_observation"], ref_info["final_obs"][i].numpy())
            assert info["TimeLimit.truncated"] == bool(truncated[i] and not terminated[i])
            assert info["is_success"] == bool(ref_info["episode"]["success"][i])
            assert info["episode"]["l"] == int(ref_info["episode"]["l"][i])
    assert finished >= 16  # every env hit the 6-step cap at least once


def test_needs_same_step_autoreset_and_shares_attributes():
    from gymnasium.vector import AutoresetMode

    with pytest.raises(EnvError, match="SAME_STEP"):
        SB3VecEnv(FourRoomsVectorEnv(4, autoreset_mode=AutoresetMode.NEXT_STEP))
    venv = SB3VecEnv(FourRoomsVectorEnv(4))
    assert venv.get_attr("num_envs") == [4] * 4 and venv.get_attr("num_envs", indices=[1, 2]) == [4, 4]
    assert venv.env_is_wrapped(object) == [False] * 4
    with pytest.raises(EnvError, match="subset"):
        venv.set_attr("render_mode", None, indices=[0])


def test_sb3_ppo_learns_four_rooms_through_the_adapter():
    """SB3 PPO on 32 batched Four Rooms envs reaches the fixed goal (a learning test)."""
    from stable_baselines3 import PPO

    from modrl.evaluation import evaluate
    from modrl.experiments.sb3_craft import SB3Agent

    venv = SB3VecEnv(FourRoomsVectorEnv(32, max_episode_steps=100))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=512, n_epochs=4, learning_rate=1e-3, seed=0, device="cpu")
    model.set_logger(silent_logger())
    model.learn(60_000)
    result = evaluate(SB3Agent(model), FourRoomsVectorEnv(100, max_episode_steps=100), 200, seed=1)
    print(f"SB3 PPO through SB3VecEnv, Four Rooms success: {result['success_rate']:.3f}")
    assert result["success_rate"] >= 0.9, result
