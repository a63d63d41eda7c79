"""Wrappers that turn third-party observations into spaces an agent can encode.

Agents encode Discrete, MultiDiscrete, Box, and flat Dicts of those (see
``validation.is_supported_space``). These wrappers convert what POPGym and
MiniGrid return into that form and add ``info["success"]`` where the env has a
notion of success but does not report it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from xlstm_rl.envs.validation import SUPPORTED_SPACES


class FlattenTupleObservation(gym.ObservationWrapper):
    """Flatten a Tuple observation space.

    A Tuple of Discrete / one-dimensional MultiDiscrete spaces becomes one
    MultiDiscrete (POPGym's Autoencode gives ``Tuple(Discrete(2), Discrete(4))``,
    which becomes ``MultiDiscrete([2, 4])``). Any other Tuple of supported
    spaces becomes a Dict keyed "0", "1", ... in tuple order.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Tuple):
            raise TypeError(f"FlattenTupleObservation needs a Tuple space, got {space}")
        members = space.spaces
        self._discrete = all(
            isinstance(sub, spaces.Discrete)
            or (isinstance(sub, spaces.MultiDiscrete) and sub.nvec.ndim == 1)
            for sub in members
        )
        if self._discrete:
            nvec, start = [], []
            for sub in members:
                if isinstance(sub, spaces.Discrete):
                    nvec.append(int(sub.n))
                    start.append(int(sub.start))
                else:
                    nvec.extend(int(n) for n in sub.nvec)
                    start.extend(int(s) for s in sub.start)
            self.observation_space = spaces.MultiDiscrete(nvec, start=start, dtype=np.int64)
        else:
            for sub in members:
                if not isinstance(sub, SUPPORTED_SPACES):
                    raise ValueError(f"cannot flatten {space}: member {sub} is not supported")
            self.observation_space = spaces.Dict({str(i): sub for i, sub in enumerate(members)})

    def observation(self, observation: tuple) -> Any:
        if self._discrete:
            return np.concatenate([np.asarray(o, dtype=np.int64).reshape(-1) for o in observation])
        return {str(i): o for i, o in enumerate(observation)}


class MiniGridObservation(gym.ObservationWrapper):
    """Keep MiniGrid's ``image`` and ``direction``; drop the mission string.

    The result is ``Dict(direction=Discrete(4), image=Box(0, 255, (view, view, 3),
    uint8))``. The image is not pixels: its channels are MiniGrid's object type,
    colour and state indices (small integers), so encode it as categorical or
    scale by the largest index, not by 255.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        source = env.observation_space
        if not isinstance(source, spaces.Dict) or "image" not in source.spaces:
            raise TypeError(f"MiniGridObservation needs MiniGrid's Dict space, got {source}")
        self.observation_space = spaces.Dict(
            {"direction": source["direction"], "image": source["image"]}
        )

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        return {"direction": observation["direction"], "image": observation["image"]}


class CopyInfoArrays(gym.Wrapper):
    """Return fresh copies of the arrays in ``info``.

    POPGym's CountRecall returns one counts array in every info and updates it
    in place (MultiarmedBandit shares one array between its infos), so infos
    kept from earlier steps would change; gymnasium's env checker warns about it.
    """

    @staticmethod
    def _copy(info: dict[str, Any]) -> dict[str, Any]:
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in info.items()}

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._copy(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._copy(info)


class EpisodeSuccess(gym.Wrapper):
    """Add ``info["success"]`` on the last step of each episode: terminated with reward > 0.

    Suits tasks such as MiniGrid, where only reaching the goal is rewarded and
    running out of time ends the episode by truncation with reward 0.
    """

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = {**info, "success": bool(terminated and reward > 0)}
        return obs, reward, terminated, truncated, info
