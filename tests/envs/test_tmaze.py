import numpy as np
import pytest

from xlstm_rl.envs import TMAZE_ID, make_env


def run_episode(env, choose, seed=None):
    """Play one episode, turning by ``choose(cue)`` at the junction.

    Returns (return, length, terminated, last info, observations)."""
    obs, _ = env.reset(seed=seed)
    cue = int(np.argmax(obs[:2]))
    observations, total, length = [obs], 0.0, 0
    while True:
        at_junction = obs[3] == 1.0
        action = choose(cue) if at_junction else 0
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        total += reward
        length += 1
        if terminated or truncated:
            return total, length, terminated, info, observations


@pytest.mark.parametrize("corridor_length", [1, 5, 37])
def test_optimal_policy_always_wins_and_wrong_turn_always_loses(corridor_length):
    env = make_env(TMAZE_ID, corridor_length=corridor_length)
    for episode in range(20):
        ret, length, terminated, info, _ = run_episode(env, lambda cue: cue, seed=episode)
        assert (ret, length, terminated, info["success"]) == (1.0, corridor_length + 1, True, True)
        ret, length, terminated, info, _ = run_episode(env, lambda cue: 1 - cue, seed=episode)
        assert (ret, length, terminated, info["success"]) == (
            -1.0,
            corridor_length + 1,
            True,
            False,
        )


def test_cue_only_visible_at_first_step_and_both_cues_occur():
    env = make_env(TMAZE_ID, corridor_length=6)
    cues = set()
    for seed in range(30):
        _, _, _, _, observations = run_episode(env, lambda cue: cue, seed=seed)
        first = observations[0]
        assert first[:2].sum() == 1.0 and first[2] == 1.0
        cues.add(int(np.argmax(first[:2])))
        for t, obs in enumerate(observations[1:-1], start=1):
            assert obs[:2].sum() == 0.0
            assert (obs[2], obs[3]) == ((1.0, 0.0) if t < 6 else (0.0, 1.0))
        assert not observations[-1].any()
    assert cues == {0, 1}


def test_ten_thousand_long_corridor():
    env = make_env(TMAZE_ID, corridor_length=10_000)
    obs, _ = env.reset(seed=3)
    cue = int(np.argmax(obs[:2]))
    for _ in range(10_000):
        obs, reward, terminated, truncated, _ = env.step(0)
        assert not (terminated or truncated) and reward == 0.0
    assert obs[3] == 1.0
    _, reward, terminated, _, info = env.step(cue)
    assert (reward, terminated, info["success"]) == (1.0, True, True)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, None, 10**7])
def test_bad_corridor_length_raises(bad):
    with pytest.raises(ValueError, match="corridor_length"):
        make_env(TMAZE_ID, corridor_length=bad)


def test_active_variant_needs_forward_and_truncates_at_step_cap():
    env = make_env(TMAZE_ID, corridor_length=3, passive=False, step_penalty=0.01)
    assert env.action_space.n == 3
    obs, _ = env.reset(seed=0)
    cue = int(np.argmax(obs[:2]))
    obs, reward, *_ = env.step(cue)  # turning in the corridor does not advance
    assert obs[2] == 1.0 and reward == pytest.approx(-0.01)
    for _ in range(3):
        obs, reward, *_ = env.step(2)
        assert reward == 0.0
    assert obs[3] == 1.0
    _, reward, terminated, truncated, info = env.step(cue)
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)

    env.reset(seed=0)
    for step in range(1, 9):  # default cap 2 * (corridor_length + 1)
        _, _, terminated, truncated, info = env.step(0)
        assert not terminated and truncated == (step == 8)
    assert info["success"] is False
    with pytest.raises(RuntimeError):
        env.step(0)


def test_random_policy_averages_zero_and_seeding_is_deterministic():
    def returns(seed):
        env = make_env(TMAZE_ID, corridor_length=5)
        env.action_space.seed(seed)
        rets = []
        env.reset(seed=seed)
        for _ in range(400):
            ret, *_ = run_episode(env, lambda cue: int(env.action_space.sample()))
            rets.append(ret)
        return rets

    assert returns(7) == returns(7)
    assert returns(7) != returns(8)
    assert abs(np.mean(returns(7))) < 0.15
