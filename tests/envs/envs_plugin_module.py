"""A user module that registers an env on import, for the env_module tests."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

PLUGIN_ID = "xlstm_rl_test/Countdown-v0"


class CountdownEnv(gym.Env):
    """Observes the steps left; terminates with reward 1 after ``length`` steps."""

    def __init__(self, length: int = 3):
        self.length = length
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._t = 0

    def _obs(self):
        return np.array([1.0 - self._t / self.length], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        done = self._t == self.length
        return self._obs(), float(done), done, False, {}


if PLUGIN_ID not in gym.registry:
    gym.register(id=PLUGIN_ID, entry_point=CountdownEnv)
