"""Checks shared by the envs layer: integer arguments, step actions and agent-encodable
spaces."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

SUPPORTED_SPACES = (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """Return ``value`` as an int, or raise ValueError unless it is an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def check_step(done: bool, action: Any, action_space: spaces.Space) -> int:
    """Return ``action`` as an int for a step: RuntimeError if the episode is finished,
    ValueError if the action is not in ``action_space``."""
    if done:
        raise RuntimeError("step() called on a finished episode; call reset() first")
    action = int(action)
    if not action_space.contains(action):
        raise ValueError(f"invalid action {action} for {action_space}")
    return action


def is_supported_space(space: spaces.Space) -> bool:
    """Whether an agent can encode ``space``: Discrete, MultiDiscrete, Box, or a flat Dict
    of those."""
    if isinstance(space, spaces.Dict):
        return all(isinstance(sub, SUPPORTED_SPACES) for sub in space.spaces.values())
    return isinstance(space, SUPPORTED_SPACES)


def check_observation_space(space: spaces.Space, env_id: str) -> None:
    """Raise ValueError if an agent could not encode observations from ``space``."""
    if not is_supported_space(space):
        raise ValueError(
            f"{env_id} has observation space {space}, which agents cannot encode; supported "
            "are Discrete, MultiDiscrete, Box and a flat Dict of those. Wrap the env to "
            "convert it."
        )
