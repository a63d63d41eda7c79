"""Evaluation: the random-policy floor that suite reports put beside each environment, and
evaluate_checkpoint on files and run folders."""

import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from tests.agents.conftest import tiny_config
from xlstm_rl.agents import evaluation as evaluation_module
from xlstm_rl.agents import train
from xlstm_rl.agents.evaluation import (
    EVAL_SEED_OFFSET,
    evaluate_checkpoint,
    evaluate_policy,
    evaluate_random,
    policy_from_checkpoint,
)


def test_random_floor_on_the_tmaze_is_chance_and_reproducible():
    floor = evaluate_random("xlstm_rl/TMaze-v0", 400, seed=3, env_kwargs={"corridor_length": 5})
    assert floor["episodes"] == 400 and floor["first_seed"] == 3 + EVAL_SEED_OFFSET
    assert floor["length_mean"] == 6.0  # the passive maze always lasts corridor + 1 steps
    # a coin flip per episode: success ~ Binomial(400, 0.5), 4 sd = 0.1
    assert abs(floor["success_rate"] - 0.5) < 0.1
    assert floor["return_mean"] == pytest.approx(2 * floor["success_rate"] - 1)
    again = evaluate_random("xlstm_rl/TMaze-v0", 400, seed=3, env_kwargs={"corridor_length": 5})
    assert again == floor


def test_random_floor_uses_the_success_rule_of_evaluation():
    # POPGym's RepeatPrevious reports no success: success = return > 0, never by chance
    floor = evaluate_random("popgym-RepeatPreviousEasy-v0", 20)
    assert floor["success_rate"] == 0.0 and -1.0 <= floor["return_mean"] < -0.3


def test_random_floor_rejects_bad_input():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_random("xlstm_rl/TMaze-v0", 0)
    with pytest.raises(ValueError, match="unknown env id"):
        evaluate_random("NoSuchEnv-v0", 1)


def test_evaluate_checkpoint_reads_run_folders_and_checks_its_arguments(tmp_path):
    config = tiny_config(tmp_path, total_steps=4 * 16 * 2, eval_episodes=0)
    result = train(config, progress=False)
    # the run folder stands for its checkpoint.pt; a run without evaluations gets 100
    assert evaluate_checkpoint(result.run_dir)["episodes"] == 100
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*31\), got -1"):
        evaluate_checkpoint(result.checkpoint, seed=-1)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda\\[:N\\]'"):
        evaluate_checkpoint(result.checkpoint, device="gpu0")
    # a suite run's folder holds the run under train/
    suite_run = tmp_path / "suite_run"
    (suite_run / "train").mkdir(parents=True)
    shutil.copy(result.checkpoint, suite_run / "train" / "checkpoint.pt")
    assert evaluate_checkpoint(suite_run, episodes=2)["episodes"] == 2
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt .* in the folder"):
        evaluate_checkpoint(tmp_path)


def test_env_actions_reach_training_evaluation_and_the_floor(tmp_path):
    # the active maze with forward only: the junction is reached but never turned at
    kwargs = {"corridor_length": 3, "passive": False, "max_steps": 6}
    floor = evaluate_random("xlstm_rl/TMaze-v0", 5, env_kwargs=kwargs, actions=[2])
    assert floor["success_rate"] == 0.0 and floor["length_mean"] == 6.0
    result = train(tiny_config(tmp_path, **{"env.actions": [2]}), progress=False)
    evaluation = evaluate_checkpoint(result.checkpoint, episodes=5)
    assert evaluation["success_rate"] == 0.0 and evaluation["length_mean"] == 6.0
    # with left, right and forward the random floor does turn, on about half the episodes
    assert evaluate_random("xlstm_rl/TMaze-v0", 200, env_kwargs=kwargs)["success_rate"] > 0.05


def test_an_episode_that_never_ends_is_cut_at_the_step_cap(tmp_path):
    # forward only in the active maze: stuck at the junction until max_steps (here 10**9)
    kwargs = {"corridor_length": 3, "passive": False, "max_steps": 10**9}
    with pytest.warns(UserWarning, match="3 of 3 evaluation episodes .* max_episode_steps=50"):
        floor = evaluate_random(
            "xlstm_rl/TMaze-v0", 3, env_kwargs=kwargs, actions=[2], max_episode_steps=50
        )
    assert floor["cut"] == 3 and floor["length_mean"] == 50.0 and floor["success_rate"] == 0.0
    result = train(tiny_config(tmp_path, **{"env.actions": [2]}), progress=False)
    policy, config = policy_from_checkpoint(result.checkpoint)
    config.env.kwargs["max_steps"] = 10**9
    with pytest.warns(UserWarning, match="5 of 5 evaluation episodes") as record:
        evaluation = evaluate_policy(policy, config, 5, max_episode_steps=40)
    assert evaluation["cut"] == 5 and evaluation["length_mean"] == 40.0
    assert record[0].filename == __file__  # the warning names the caller's line
    # episodes that end by themselves are not cut, however close to the cap
    config.env.kwargs["max_steps"] = 6
    assert evaluate_policy(policy, config, 5, max_episode_steps=6)["cut"] == 0
    assert evaluate_checkpoint(result.checkpoint, episodes=2)["cut"] == 0
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_episode_steps must be an int >= 1, 'auto' or"):
            evaluate_policy(policy, config, 1, max_episode_steps=bad)


class _Forever(gym.Env):
    """Never terminates or truncates, declares no step limit, pays +0.01 a step."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.01, False, False, {}


FOREVER = "xlstm_rl_test/Forever-v0"
if FOREVER not in gym.registry:
    gym.register(FOREVER, entry_point=_Forever)


def test_a_cut_episode_counts_as_failed_whatever_its_return():
    # the env reports no success, so the rule would be return > 0: a cut is still a failure
    with pytest.warns(UserWarning, match="4 of 4 evaluation episodes") as record:
        floor = evaluate_random(FOREVER, 4, max_episode_steps=50)
    assert floor["cut"] == 4 and floor["return_mean"] == pytest.approx(0.5)
    assert floor["success_rate"] == 0.0 and floor["max_episode_steps"] == 50
    assert record[0].filename == __file__


def test_the_default_cap_is_never_shorter_than_the_envs_own_limit(monkeypatch):
    monkeypatch.setattr(evaluation_module, "MAX_EPISODE_STEPS", 20)
    kwargs = {"corridor_length": 30}  # passive: every episode lasts 31 steps
    floor = evaluate_random("xlstm_rl/TMaze-v0", 2, env_kwargs=kwargs)
    assert floor["cut"] == 0 and floor["length_mean"] == 31.0
    assert floor["max_episode_steps"] == 31
    memory = evaluate_random("xlstm_rl/MemoryLength-v0", 2, env_kwargs={"memory_length": 25})
    assert memory["cut"] == 0 and memory["length_mean"] == 26.0
    # an int is the cap as given; an env with no limit of its own gets MAX_EPISODE_STEPS
    with pytest.warns(UserWarning, match="2 of 2 evaluation episodes"):
        assert (
            evaluate_random("xlstm_rl/TMaze-v0", 2, env_kwargs=kwargs, max_episode_steps=20)["cut"]
            == 2
        )
    with pytest.warns(UserWarning, match="max_episode_steps=20 steps"):
        assert evaluate_random(FOREVER, 1)["length_mean"] == 20.0


def test_a_sampled_evaluation_repeats_and_puts_the_callers_random_state_back(tmp_path):
    result = train(tiny_config(tmp_path), progress=False)
    policy, config = policy_from_checkpoint(result.checkpoint)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    sampled = [
        evaluate_policy(policy, config, 32, deterministic=False, per_episode=True)["per_episode"]
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    assert torch.equal(torch.get_rng_state(), before)
    # the barely trained policy turns either way at the junction: the samples do vary
    assert 0 < sum(sampled[0]["successes"]) < 32
