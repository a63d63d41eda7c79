import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium.spaces import Discrete

from xlstm_rl.envs import (
    MEMORY_LENGTH_ID,
    TMAZE_ID,
    episode_info,
    final_observations,
    make_vector_env,
)


def test_same_step_autoreset_exposes_final_obs_and_episode_stats():
    envs = make_vector_env(TMAZE_ID, 4, seed=0, corridor_length=3)
    obs, _ = envs.reset()
    cues = np.argmax(obs[:, :2], axis=1)
    assert obs.shape == (4, 4)
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = envs.step(np.zeros(4, dtype=np.int64))
        assert not terminated.any() and "_episode" not in infos and "final_obs" not in infos
        assert final_observations(envs, obs, infos) is obs
    actions = cues.copy()
    actions[0] = 1 - cues[0]  # env 0 turns the wrong way
    obs, rewards, terminated, truncated, infos = envs.step(actions)

    assert terminated.all() and not truncated.any()
    np.testing.assert_array_equal(rewards, [-1.0, 1.0, 1.0, 1.0])
    # the returned obs already belong to the next episodes: cue visible, in corridor
    assert (obs[:, :2].sum(axis=1) == 1).all() and (obs[:, 2] == 1).all()
    assert infos["_final_obs"].all()
    assert all(not final.any() for final in infos["final_obs"])  # terminal obs are zeros
    np.testing.assert_array_equal(final_observations(envs, obs, infos), np.zeros((4, 4)))
    np.testing.assert_array_equal(infos["episode"]["r"], [-1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(infos["episode"]["l"], [4, 4, 4, 4])
    np.testing.assert_array_equal(infos["final_info"]["success"], [False, True, True, True])
    assert episode_info(infos)[0] == {"env": 0, "return": -1.0, "length": 4, "success": False}
    # statistics restart with the new episodes
    for _ in range(4):
        obs, rewards, terminated, truncated, infos = envs.step(np.zeros(4, dtype=np.int64))
    assert list(infos["episode"]["l"]) == [4, 4, 4, 4]
    envs.close()


def test_episodes_ending_at_different_steps():
    envs = make_vector_env(MEMORY_LENGTH_ID, 2, seed=1, memory_length=2)
    envs.reset()
    envs.step(np.zeros(2, dtype=np.int64))
    envs.step(np.zeros(2, dtype=np.int64))
    *_, infos = envs.step(np.zeros(2, dtype=np.int64))
    episodes = episode_info(infos)
    assert [ep["length"] for ep in episodes] == [3, 3]
    assert all(ep["return"] == (1.0 if ep["success"] else -1.0) for ep in episodes)
    envs.close()


def rollout(seed, steps=60, **kwargs):
    envs = make_vector_env(MEMORY_LENGTH_ID, 3, seed=seed, memory_length=1, **kwargs)
    obs, _ = envs.reset()
    trace = [obs.copy()]
    for _ in range(steps):
        obs, rewards, *_ = envs.step(envs.action_space.sample())
        trace += [obs.copy(), rewards.copy()]
    envs.close()
    return np.concatenate([t.reshape(-1) for t in trace])


def test_seeding_is_deterministic_and_sub_envs_differ():
    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))
    envs = make_vector_env(MEMORY_LENGTH_ID, 8, seed=0, memory_length=1, num_bits=4)
    obs, _ = envs.reset()
    assert len({row.tobytes() for row in obs}) > 1  # seed + i, not one seed for all
    envs.close()


def test_asynchronous_matches_sync():
    np.testing.assert_array_equal(rollout(3, steps=10), rollout(3, steps=10, asynchronous=True))


def test_minigrid_vector_env_dict_final_obs():
    pytest.importorskip("minigrid")
    envs = make_vector_env("MiniGrid-MemoryS7-v0", 2, seed=0, agent_view_size=3, max_steps=5)
    obs, _ = envs.reset()
    assert obs["image"].shape == (2, 3, 3, 3) and obs["direction"].shape == (2,)
    for _ in range(5):
        obs, _, terminated, truncated, infos = envs.step(np.full(2, 0))  # turn left: never done
    assert truncated.all() and not terminated.any()
    final = final_observations(envs, obs, infos)
    assert final["image"].shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(final["image"][1], infos["final_obs"][1]["image"])
    assert [ep["success"] for ep in episode_info(infos)] == [False, False]
    envs.close()


def test_restricted_actions_in_async_vector_env():
    # the action table crosses to the worker processes
    pytest.importorskip("minigrid")
    envs = make_vector_env(
        "MiniGrid-MemoryS7-v0", 2, seed=0, asynchronous=True, agent_view_size=3, actions=[2]
    )
    assert envs.single_action_space == Discrete(1)
    envs.reset()
    before = envs.unwrapped.call("agent_pos")
    envs.step(np.zeros(2, dtype=np.int64))  # the env's 2: forward
    assert [tuple(p) for p in envs.unwrapped.call("agent_pos")] == [(x + 1, y) for x, y in before]
    envs.close()


def test_env_module_in_vector_env(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.delitem(sys.modules, "envs_plugin_module", raising=False)
    envs = make_vector_env(
        "xlstm_rl_test/Countdown-v0", 2, env_module="envs_plugin_module", length=1
    )
    envs.reset()
    *_, infos = envs.step(np.zeros(2, dtype=np.int64))
    assert [ep["success"] for ep in episode_info(infos)] == [None, None]
    envs.close()


def test_bad_num_envs_and_unknown_id():
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env(TMAZE_ID, 0)
    with pytest.raises(ValueError, match="unknown env id"):
        make_vector_env("xlstm_rl/Nope-v0", 2)
