"""T-maze memory task after Ni et al. 2023, "When do transformers shine in RL?".

The agent starts at the bottom of a corridor of ``corridor_length`` cells that
ends in a junction. At t = 0 it sees a cue, left or right, drawn at random;
afterwards the cue is gone. At the junction it must turn the way the cue
pointed: the right turn gives +1, the wrong one -1, and the episode terminates.
The credit-assignment gap is therefore ``corridor_length`` steps, and a policy
that guesses earns 0 on average.

Observation, float32 of shape (4,):
``[cue_left, cue_right, in_corridor, at_junction]``; the two cue entries are 0
after t = 0, and all four are 0 in the terminal observation. The position along
the corridor is not observed, as in the paper.

Passive variant (default, the paper's "passive T-maze"): the agent advances one
cell each step whatever it does, so every episode lasts ``corridor_length + 1``
steps. Actions are ``Discrete(2)``: 0 = left, 1 = right; only the action taken at
the junction matters.

Active variant (``passive=False``): actions are ``Discrete(3)``: 0 = left,
1 = right, 2 = forward. The agent must choose forward to advance; turning inside
the corridor, or going forward at the junction, leaves it in place. The episode
is truncated after ``max_steps`` steps (default ``2 * (corridor_length + 1)``).

``step_penalty`` (default 0) is subtracted on every step on which the agent does
not advance, the paper's incentive to move; in the passive variant the agent
always advances, so it has no effect there.

At the end of every episode ``info["success"]`` says whether it turned correctly.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from xlstm_rl.envs.validation import check_int, check_step

LEFT, RIGHT, FORWARD = 0, 1, 2
MAX_CORRIDOR_LENGTH = 1_000_000


class TMazeEnv(gym.Env[np.ndarray, int]):
    """Passive (default) or active T-maze; see the module docstring."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        corridor_length: int = 10,
        passive: bool = True,
        max_steps: int | None = None,
        step_penalty: float = 0.0,
    ) -> None:
        self.corridor_length = check_int("corridor_length", corridor_length, 1, MAX_CORRIDOR_LENGTH)
        self.passive = bool(passive)
        episode_length = self.corridor_length + 1
        if max_steps is None:
            max_steps = episode_length if self.passive else 2 * episode_length
        self.max_steps = check_int("max_steps", max_steps, episode_length, 2**62)
        if not (np.isfinite(step_penalty) and step_penalty >= 0):
            raise ValueError(f"step_penalty must be finite and >= 0, got {step_penalty!r}")
        self.step_penalty = float(step_penalty)

        self.observation_space = spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        self.action_space = spaces.Discrete(2 if self.passive else 3)

        self._cue = LEFT
        self._position = 0
        self._steps = 0
        self._done = True

    def _observation(self) -> np.ndarray:
        obs = np.zeros(4, dtype=np.float32)
        if self._steps == 0:
            obs[self._cue] = 1.0
        if self._position < self.corridor_length:
            obs[2] = 1.0
        else:
            obs[3] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(2))
        self._position = 0
        self._steps = 0
        self._done = False
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = check_step(self._done, action, self.action_space)
        self._steps += 1

        if self._position == self.corridor_length and action in (LEFT, RIGHT):
            self._done = True
            success = action == self._cue
            reward = 1.0 if success else -1.0
            return np.zeros(4, dtype=np.float32), reward, True, False, {"success": success}

        reward = 0.0
        if self.passive or (action == FORWARD and self._position < self.corridor_length):
            self._position += 1
        else:
            reward = -self.step_penalty
        truncated = self._steps >= self.max_steps
        self._done = truncated
        info = {"success": False} if truncated else {}
        return self._observation(), reward, False, truncated, info
