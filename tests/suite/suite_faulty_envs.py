"""Envs that fail on purpose, for the suite runner's failure tests (registered on import)."""

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class FaultyEnv(gym.Env):
    """A trivial env that misbehaves from step ``after`` of its life on: ``fault`` says how."""

    def __init__(self, fault: str = "raise", after: int = 3):
        self.fault, self.after = fault, after
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._steps, self._t = 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        self._steps += 1
        self._t += 1
        reward = 0.0
        if self._steps >= self.after:
            if self.fault == "raise":
                raise RuntimeError("faulty env: step failed on purpose")
            if self.fault == "exit":
                os._exit(3)  # a hard crash: no exception, no result written
            reward = float("nan")
        return np.zeros(2, dtype=np.float32), reward, self._t == 4, False, {}


if "xlstm_rl_test/Faulty-v0" not in gym.registry:
    gym.register(id="xlstm_rl_test/Faulty-v0", entry_point=FaultyEnv)
