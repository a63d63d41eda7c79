import numpy as np
import pytest

from xlstm_rl.envs import MEMORY_LENGTH_ID, make_env


def answer_from(first_obs, query_obs, num_bits):
    context = first_obs[1 : 1 + num_bits] > 0
    query = int(np.argmax(query_obs[1 + num_bits :]))
    return int(context[query])


@pytest.mark.parametrize("memory_length,num_bits", [(0, 1), (1, 1), (10, 1), (25, 4)])
def test_correct_answer_wins_wrong_answer_loses(memory_length, num_bits):
    env = make_env(MEMORY_LENGTH_ID, memory_length=memory_length, num_bits=num_bits)
    assert env.observation_space.shape == (1 + 2 * num_bits,)
    for seed in range(20):
        for flip, expected in ((0, 1.0), (1, -1.0)):
            first, _ = env.reset(seed=seed)
            assert first[0] == (1.0 if memory_length else 0.0)
            assert set(np.abs(first[1 : 1 + num_bits])) == {1.0}
            obs = first
            for t in range(1, memory_length + 1):
                obs, reward, terminated, truncated, _ = env.step(0)
                assert (reward, terminated, truncated) == (0.0, False, False)
                assert obs[0] == pytest.approx(1.0 - t / memory_length)
                assert not obs[1 : 1 + num_bits].any()
                assert obs[1 + num_bits :].sum() == (1.0 if t == memory_length else 0.0)
            answer = answer_from(first, obs, num_bits) ^ flip
            _, reward, terminated, truncated, info = env.step(answer)
            assert (reward, terminated, truncated) == (expected, True, False)
            assert info["success"] == (expected > 0)


def test_contexts_and_queries_vary_and_seeding_is_deterministic():
    env = make_env(MEMORY_LENGTH_ID, memory_length=2, num_bits=3)
    firsts = [env.reset(seed=seed)[0].tobytes() for seed in range(40)]
    assert len(set(firsts)) > 4
    assert firsts == [env.reset(seed=seed)[0].tobytes() for seed in range(40)]


@pytest.mark.parametrize("kwargs", [{"memory_length": -1}, {"num_bits": 0}, {"num_bits": 1.5}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make_env(MEMORY_LENGTH_ID, **kwargs)
