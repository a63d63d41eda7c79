"""Environments: ``make_env`` / ``make_vector_env``, wrappers, and our memory tasks.

Importing this package registers our tasks with gymnasium:

- ``xlstm_rl/TMaze-v0`` (``TMazeEnv``; kwargs ``corridor_length``, ``passive``,
  ``max_steps``, ``step_penalty``)
- ``xlstm_rl/MemoryLength-v0`` (``MemoryLengthEnv``; kwargs ``memory_length``,
  ``num_bits``)

POPGym and MiniGrid ids are registered lazily by ``make_env``. This package never
imports ``xlstm_rl.cores`` or ``xlstm_rl.agents``.
"""

import gymnasium as gym

from xlstm_rl.envs.make import (
    episode_info,
    final_observations,
    import_env_module,
    make_env,
    make_vector_env,
    resolve_env_id,
    restrict_actions,
)
from xlstm_rl.envs.memory_length import MemoryLengthEnv
from xlstm_rl.envs.tmaze import TMazeEnv
from xlstm_rl.envs.validation import is_supported_space
from xlstm_rl.envs.wrappers import (
    CopyInfoArrays,
    EpisodeSuccess,
    FlattenTupleObservation,
    MiniGridObservation,
)

TMAZE_ID = "xlstm_rl/TMaze-v0"
MEMORY_LENGTH_ID = "xlstm_rl/MemoryLength-v0"

for _env_id, _entry_point in (
    (TMAZE_ID, "xlstm_rl.envs.tmaze:TMazeEnv"),
    (MEMORY_LENGTH_ID, "xlstm_rl.envs.memory_length:MemoryLengthEnv"),
):
    if _env_id not in gym.registry:  # re-imports (e.g. importlib.reload) must not warn
        gym.register(id=_env_id, entry_point=_entry_point)

__all__ = [
    "MEMORY_LENGTH_ID",
    "TMAZE_ID",
    "CopyInfoArrays",
    "EpisodeSuccess",
    "FlattenTupleObservation",
    "MemoryLengthEnv",
    "MiniGridObservation",
    "TMazeEnv",
    "episode_info",
    "final_observations",
    "import_env_module",
    "is_supported_space",
    "make_env",
    "make_vector_env",
    "resolve_env_id",
    "restrict_actions",
]
