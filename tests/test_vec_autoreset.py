"""The batched-env contract: autoreset sequences of the three modes, modelled on Gymnasium's own
counting-env tests (tests/vector/test_autoreset_mode.py), plus episode statistics and errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from modrl.vec import EnvError, TorchVectorEnv


class CountingEnv(TorchVectorEnv):
    """obs = steps since reset; reward = action; terminates when the count reaches max_count[i]."""

    state_keys = ("count",)

    def __init__(self, max_count=(2, 3, 3), max_episode_steps=100, **kwargs):
        super().__init__(
            len(max_count),
            single_observation_space=gym.spaces.Discrete(100),
            single_action_space=gym.spaces.Discrete(5),
            max_episode_steps=max_episode_steps,
            **kwargs,
        )
        self.max_count = torch.tensor(max_count)
        self.count = torch.zeros(len(max_count), dtype=torch.int64)

    def _reset_state(self, mask, *, new_run):
        self.count = torch.where(mask, 0, self.count)

    def _step_state(self, actions):
        self.count = self.count + 1
        return actions.float(), self.count == self.max_count

    def _observe(self):
        return self.count.clone()


def _step(env, actions=(1, 2, 3)):
    obs, rew, term, trunc, info = env.step(torch.tensor(actions))
    return obs.tolist(), rew.tolist(), term.tolist(), trunc.tolist(), info


def test_metadata_holds_the_enum():
    for mode in AutoresetMode:
        env = CountingEnv(autoreset_mode=mode)
        assert env.metadata["autoreset_mode"] is mode
        assert CountingEnv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP  # class dict untouched
    assert CountingEnv(autoreset_mode="NextStep").autoreset_mode is AutoresetMode.NEXT_STEP


def test_next_step():
    env = CountingEnv(autoreset_mode=AutoresetMode.NEXT_STEP)
    obs, info = env.reset(seed=0)
    assert obs.tolist() == [0, 0, 0] and info == {}
    assert _step(env)[:4] == ([1, 1, 1], [1, 2, 3], [False] * 3, [False] * 3)
    assert _step(env)[:4] == ([2, 2, 2], [1, 2, 3], [True, False, False], [False] * 3)
    assert _step(env)[:4] == ([0, 3, 3], [0, 2, 3], [False, True, True], [False] * 3)
    assert _step(env)[:4] == ([1, 0, 0], [1, 0, 0], [False] * 3, [False] * 3)


def test_same_step():
    env = CountingEnv(autoreset_mode=AutoresetMode.SAME_STEP)
    assert env.reset(seed=0)[0].tolist() == [0, 0, 0]
    obs, rew, term, trunc, info = _step(env)
    assert (obs, rew, term, trunc) == ([1, 1, 1], [1, 2, 3], [False] * 3, [False] * 3)
    assert info["_final_obs"].tolist() == [False] * 3
    obs, rew, term, trunc, info = _step(env)
    assert (obs, rew, term, trunc) == ([0, 2, 2], [1, 2, 3], [True, False, False], [False] * 3)
    assert info["_final_obs"].tolist() == [True, False, False]
    assert info["final_obs"][0].item() == 2
    obs, rew, term, trunc, info = _step(env)
    assert (obs, rew, term, trunc) == ([1, 0, 0], [1, 2, 3], [False, True, True], [False] * 3)
    assert info["_final_obs"].tolist() == [False, True, True]
    assert info["final_obs"][1:].tolist() == [3, 3]
    obs, rew, term, trunc, info = _step(env)
    assert (obs, rew, term, trunc) == ([0, 1, 1], [1, 2, 3], [True, False, False], [False] * 3)
    assert info["final_obs"][0].item() == 2


def test_disabled():
    env = CountingEnv(autoreset_mode=AutoresetMode.DISABLED)
    assert env.reset(seed=0)[0].tolist() == [0, 0, 0]
    assert _step(env)[:4] == ([1, 1, 1], [1, 2, 3], [False] * 3, [False] * 3)
    obs, rew, term, trunc, info = _step(env)
    assert (obs, rew, term, trunc) == ([2, 2, 2], [1, 2, 3], [True, False, False], [False] * 3)
    assert "final_obs" not in info
    with pytest.raises(EnvError, match=r"finished sub-envs \[0\]"):
        env.step(torch.tensor([1, 2, 3]))
    obs, info = env.reset(options={"reset_mask": np.array([True, False, False])})
    assert obs.tolist() == [0, 2, 2] and info == {}
    assert _step(env)[:4] == ([1, 3, 3], [1, 2, 3], [False, True, True], [False] * 3)
    obs, _ = env.reset(options={"reset_mask": torch.tensor([False, True, True])})
    assert obs.tolist() == [1, 0, 0]
    assert _step(env)[:4] == ([2, 1, 1], [1, 2, 3], [True, False, False], [False] * 3)


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_truncation_is_not_termination(mode):
    env = CountingEnv(max_count=(10, 10), max_episode_steps=3, autoreset_mode=mode)
    env.reset(seed=0)
    for _ in range(2):
        _, _, term, trunc, _ = _step(env, (0, 0))
        assert term == [False, False] and trunc == [False, False]
    _, _, term, trunc, info = _step(env, (0, 0))
    assert term == [False, False] and trunc == [True, True]
    assert info["_episode"].tolist() == [True, True]
    assert info["episode"]["l"].tolist() == [3, 3]


def test_termination_wins_over_truncation_at_the_cap():
    env = CountingEnv(max_count=(3, 9), max_episode_steps=3)
    env.reset(seed=0)
    _step(env, (0, 0)), _step(env, (0, 0))
    _, _, term, trunc, _ = _step(env, (0, 0))
    assert term == [True, False] and trunc == [False, True]


def test_episode_statistics():
    env = CountingEnv(max_count=(2, 3))
    env.reset(seed=0)
    _, _, _, _, info = _step(env, (1, 4))
    assert info["_episode"].tolist() == [False, False]
    _, _, _, _, info = _step(env, (3, 4))
    assert info["_episode"].tolist() == [True, False]
    assert info["episode"]["r"][0].item() == 4.0 and info["episode"]["l"][0].item() == 2
    assert info["episode"]["success"].tolist() == [True, False]
    assert info["episode"]["t"][0].item() >= 0.0
    _, _, _, _, info = _step(env, (1, 4))
    assert info["_episode"].tolist() == [False, True]
    assert info["episode"]["r"][1].item() == 12.0  # the return restarted for env 0 but not env 1


def test_bad_actions_are_rejected_with_a_clear_message():
    env = CountingEnv()
    env.reset(seed=0)
    with pytest.raises(EnvError, match=r"action 5 of env 1 is out of range"):
        env.step(torch.tensor([0, 5, 0]))
    with pytest.raises(EnvError, match=r"out of range"):
        env.step(torch.tensor([0, 0, -1]))
    with pytest.raises(EnvError, match=r"shape \(3,\)"):
        env.step(torch.tensor([0, 1]))
    with pytest.raises(EnvError, match="integers"):
        env.step(torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(EnvError, match="reset_mask"):
        env.reset(options={"reset_mask": np.array([1, 0, 0])})
    # numpy and list actions are accepted
    env.step(np.array([0, 1, 2]))
    env.step([0, 1, 2])


def test_state_dict_round_trip():
    env = CountingEnv()
    env.reset(seed=3)
    _step(env)
    state = env.state_dict()
    after = [_step(env)[0] for _ in range(4)]
    env.load_state_dict(state)
    assert [_step(env)[0] for _ in range(4)] == after
    with pytest.raises(EnvError, match="num_envs"):
        CountingEnv(max_count=(2, 3)).load_state_dict(state)
