"""Memory-length task in the spirit of bsuite's ``memory_len`` (Osband et al. 2020).

At t = 0 the agent sees a random context of ``num_bits`` bits. The next
observations carry no context, only the normalised time remaining. At
t = ``memory_length`` the observation names one of the bits (the query) and the
agent must answer with that bit's value: +1 if right, -1 if wrong, and the
episode terminates. All other rewards are 0, every episode lasts
``memory_length + 1`` steps, and guessing earns 0 on average.

Observation, float32 of shape (1 + 2 * num_bits,):
``[time_remaining, context (num_bits), query (num_bits)]`` where
``time_remaining = 1 - t / memory_length`` (1 at the start, 0 at the query, as
in bsuite), the context entries are the bits as +1/-1 at t = 0 and 0 otherwise,
and the query entries are a one-hot of the queried bit at t = ``memory_length``
and 0 otherwise. The terminal observation is all zeros.

Actions: ``Discrete(2)``, the answer; it is ignored before the query.
At the end of every episode ``info["success"]`` says whether the answer was right.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from xlstm_rl.envs.validation import check_int, check_step

MAX_MEMORY_LENGTH = 1_000_000
MAX_NUM_BITS = 1024


class MemoryLengthEnv(gym.Env[np.ndarray, int]):
    """Remember ``num_bits`` bits for ``memory_length`` steps; see the module docstring."""

    metadata = {"render_modes": []}

    def __init__(self, memory_length: int = 10, num_bits: int = 1) -> None:
        self.memory_length = check_int("memory_length", memory_length, 0, MAX_MEMORY_LENGTH)
        self.num_bits = check_int("num_bits", num_bits, 1, MAX_NUM_BITS)
        self.max_steps = self.memory_length + 1  # every episode lasts exactly this long
        self.observation_space = spaces.Box(
            -1.0, 1.0, shape=(1 + 2 * self.num_bits,), dtype=np.float32
        )
        self.action_space = spaces.Discrete(2)

        self._context = np.zeros(self.num_bits, dtype=np.int64)
        self._query = 0
        self._t = 0
        self._done = True

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        # With memory_length = 0 context and query arrive together: no memory needed.
        obs[0] = 1.0 - self._t / self.memory_length if self.memory_length else 0.0
        if self._t == 0:
            obs[1 : 1 + self.num_bits] = 2.0 * self._context - 1.0
        if self._t == self.memory_length:
            obs[1 + self.num_bits + self._query] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._context = self.np_random.integers(2, size=self.num_bits)
        self._query = int(self.np_random.integers(self.num_bits))
        self._t = 0
        self._done = False
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = check_step(self._done, action, self.action_space)
        if self._t < self.memory_length:
            self._t += 1
            return self._observation(), 0.0, False, False, {}
        self._done = True
        success = action == int(self._context[self._query])
        reward = 1.0 if success else -1.0
        terminal_obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        return terminal_obs, reward, True, False, {"success": success}
