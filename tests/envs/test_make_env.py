import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from xlstm_rl.envs import is_supported_space, make_env

POPGYM_EASY = [
    "RepeatPrevious",
    "RepeatFirst",
    "Autoencode",
    "CountRecall",
    "PositionOnlyCartPole",
    "HigherLower",
    "Concentration",
    "Battleship",
]
PLUGIN_DIR = str(Path(__file__).parent)


def step_through(env, steps, seed=0):
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        if terminated or truncated:
            obs, _ = env.reset()
    return obs


@pytest.mark.parametrize("name", POPGYM_EASY)
def test_popgym_easy_envs_have_supported_spaces_and_step(name):
    pytest.importorskip("popgym")
    env = make_env(f"popgym-{name}Easy-v0")
    assert is_supported_space(env.observation_space)
    assert not isinstance(env.observation_space, spaces.Dict)
    step_through(env, 120)


def test_popgym_autoencode_tuple_is_flattened():
    pytest.importorskip("popgym")
    env = make_env("popgym-AutoencodeEasy-v0")
    assert env.observation_space == spaces.MultiDiscrete([2, 4])
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.int64 and obs.shape == (2,)


@pytest.mark.parametrize("env_id", ["MiniGrid-MemoryS9-v0", "MiniGrid-MemoryS13Random-v0"])
def test_minigrid_memory_dict_observation_and_success(env_id):
    pytest.importorskip("minigrid")
    env = make_env(env_id, agent_view_size=3)
    space = env.observation_space
    assert set(space.spaces) == {"direction", "image"}
    assert space["image"] == spaces.Box(0, 255, (3, 3, 3), np.uint8)
    assert space["direction"] == spaces.Discrete(4)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert space.contains(obs)
        if terminated or truncated:
            assert info["success"] == (terminated and reward > 0)
            env.reset()
        else:
            assert "success" not in info


def test_minigrid_default_view_and_bad_view():
    pytest.importorskip("minigrid")
    assert make_env("MiniGrid-MemoryS7-v0").observation_space["image"].shape == (7, 7, 3)
    with pytest.raises(ValueError, match="agent_view_size"):
        make_env("MiniGrid-MemoryS7-v0", agent_view_size=4)


def test_minigrid_memory_with_three_actions():
    pytest.importorskip("minigrid")
    env = make_env("MiniGrid-MemoryS7-v0", agent_view_size=3, actions=[2, 0, 1])
    assert env.action_space == spaces.Discrete(3)
    env.reset(seed=0)
    position = tuple(env.unwrapped.agent_pos)
    env.step(1)  # the env's 0: turn left, no move
    assert env.unwrapped.agent_dir == 3 and tuple(env.unwrapped.agent_pos) == position
    env.step(2)  # the env's 1: turn right
    assert env.unwrapped.agent_dir == 0
    env.step(0)  # the env's 2: forward, along the hallway
    assert tuple(env.unwrapped.agent_pos) == (position[0] + 1, position[1])


@pytest.mark.parametrize(
    "actions, message",
    [
        ([], "non-empty list of ints"),
        ([0, "1"], "non-empty list of ints"),
        ([0, 2], r"distinct actions of Discrete\(2\) \(ints in \[0, 1\]\), got \[0, 2\]"),
        ([1, 1], "distinct actions"),
    ],
)
def test_bad_action_lists_name_the_valid_actions(actions, message):
    with pytest.raises(ValueError, match=message):
        make_env("xlstm_rl/TMaze-v0", actions=actions)


def test_actions_need_a_discrete_action_space():
    pytest.importorskip("popgym")
    with pytest.raises(ValueError, match="needs a Discrete action space, got MultiDiscrete"):
        make_env("popgym-BattleshipEasy-v0", actions=[0])


class _TakesActions(gym.Env):
    """An env whose own keywords are called ``actions`` and ``env_module``."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, actions=2, env_module="none"):
        self.action_space = spaces.Discrete(actions)
        self.env_module = env_module

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


TAKES_ACTIONS = "xlstm_rl_test/TakesActions-v0"
if TAKES_ACTIONS not in gym.registry:
    gym.register(TAKES_ACTIONS, entry_point=_TakesActions)


def test_env_keywords_named_like_make_envs_own_reach_the_env():
    from xlstm_rl.config import EnvConfig
    from xlstm_rl.envs import make_vector_env

    config = EnvConfig(id=TAKES_ACTIONS, kwargs={"actions": 5, "env_module": "mine"})
    env = config.make()
    assert env.action_space == spaces.Discrete(5) and env.unwrapped.env_module == "mine"
    config.actions = [4, 0]  # the subset, on top of the env's own five
    assert config.make().action_space == spaces.Discrete(2)
    vector = make_vector_env(TAKES_ACTIONS, 2, env_kwargs={"actions": 3})
    assert vector.single_action_space == spaces.Discrete(3)
    vector.close()
    # the same keyword both ways is refused, not silently resolved
    with pytest.raises(ValueError, match=r"env keyword\(s\) \['corridor_length'\] given both"):
        make_env("xlstm_rl/TMaze-v0", env_kwargs={"corridor_length": 3}, corridor_length=4)


def test_unknown_id_names_it_and_suggests_close_matches():
    with pytest.raises(ValueError) as excinfo:
        make_env("xlstm_rl/TMase-v0")
    message = str(excinfo.value)
    assert "'xlstm_rl/TMase-v0'" in message and "xlstm_rl/TMaze-v0" in message
    assert "env_module" in message and "popgym" in message.lower()


def test_unknown_popgym_id_suggests_the_right_one():
    pytest.importorskip("popgym")
    with pytest.raises(ValueError, match="popgym-RepeatPreviousEasy-v0"):
        make_env("popgym-RepeatPrevEasy-v0")


def test_unknown_kwarg_names_it_and_the_ones_the_env_takes():
    with pytest.raises(TypeError, match="unexpected keyword argument 'corridor'") as error:
        make_env("xlstm_rl/TMaze-v0", corridor=5)
    assert isinstance(error.value, ValueError)  # a bad config value: the CLI's one-line error
    assert "it takes: corridor_length, passive, max_steps" in str(error.value)


def test_env_module_registers_user_envs(monkeypatch):
    monkeypatch.syspath_prepend(PLUGIN_DIR)
    monkeypatch.delitem(sys.modules, "envs_plugin_module", raising=False)
    env = make_env("xlstm_rl_test/Countdown-v0", env_module="envs_plugin_module", length=2)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[1:3] == (1.0, True)
    # gymnasium's "module:EnvId" spelling works too
    assert make_env("envs_plugin_module:xlstm_rl_test/Countdown-v0").spec.id == (
        "xlstm_rl_test/Countdown-v0"
    )


def test_missing_env_module_is_an_import_error():
    with pytest.raises(ImportError, match="no_such_env_module") as error:
        make_env("xlstm_rl/TMaze-v0", env_module="no_such_env_module")
    assert isinstance(error.value, ValueError)  # a bad config value: the CLI's one-line error
    assert "PYTHONPATH=." in str(error.value)  # the console script does not search the cwd


def test_tuple_of_box_and_discrete_becomes_dict():
    class TupleEnv(gym.Env):
        observation_space = spaces.Tuple((spaces.Box(-1, 1, (2,)), spaces.Discrete(3)))
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

    from xlstm_rl.envs import FlattenTupleObservation

    env = FlattenTupleObservation(TupleEnv())
    assert isinstance(env.observation_space, spaces.Dict)
    assert env.observation_space.contains(env.reset(seed=0)[0])
