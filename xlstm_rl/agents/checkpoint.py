"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds plain data only (tensors, numbers, strings, lists, dicts): the
config, model and optimiser state, the update and step counters, the RNG states
of torch, numpy and Python, the collector's carry (observations, previous
actions, recurrent state) and the environments' state.

Environments cannot be pickled safely, so their state is stored as a recipe to
rebuild it: ``EpisodeRecorder`` keeps, for each sub-env, the RNG state (or seed)
its current episode was reset with and the actions taken since; restoring resets
each sub-env that way and replays the actions. That is exact for envs whose
randomness comes from ``self.np_random`` (gymnasium's convention; ours, POPGym and
MiniGrid follow it). It needs a ``SyncVectorEnv``; with asynchronous envs a
resumed run starts fresh episodes instead (``restore_envs`` returns False).
"""

from __future__ import annotations

import copy
import os
import pickle
import random
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv, VectorEnv
from gymnasium.wrappers.vector import RecordEpisodeStatistics

FORMAT = "xlstm-rl-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A file that is not a readable xlstm-rl checkpoint."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint file at ``path``: the file itself, a run folder's checkpoint.pt, or a
    suite run folder's train/checkpoint.pt."""
    path = Path(path)
    if path.is_dir():
        for inside in (path / "checkpoint.pt", path / "train" / "checkpoint.pt"):
            if inside.is_file():
                return inside
        raise FileNotFoundError(f"no checkpoint.pt (nor train/checkpoint.pt) in the folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (no arbitrary pickle); CheckpointError if it is damaged.

    ``path`` is the file or the run folder holding it (``<log_dir>/<name>``)."""
    path = checkpoint_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds (OSError, RuntimeError, UnpicklingError...)
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt, or not written by "
            f"xlstm-rl): {_load_error_detail(e, path)}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if isinstance(payload, dict):
            keys = sorted(map(str, payload))
            what = f"a dict with keys {keys[:8]}{' ...' if len(keys) > 8 else ''}"
        else:
            what = f"a {type(payload).__name__}"
        raise CheckpointError(
            f"{path} is not an xlstm-rl checkpoint: it holds {what}, where an xlstm-rl "
            f"checkpoint is a dict with format {FORMAT!r}, config, model and training state"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}, this xlstm-rl reads {VERSION}"
        )
    missing = [key for key in ("config", "model") if not isinstance(payload.get(key), dict)]
    if missing:
        raise CheckpointError(f"{path} lacks its {' and '.join(missing)} (a damaged checkpoint)")
    return payload


def checkpoint_config(payload: dict[str, Any], path: str | os.PathLike):
    """The TrainConfig stored in a loaded checkpoint; CheckpointError naming the file if
    this xlstm-rl cannot use it (a key it does not know, a core or env it does not have)."""
    from xlstm_rl.config import load_config  # config imports nothing from agents

    try:
        return load_config(payload["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: its config cannot be used here: {e}") from e


def load_weights(module: Any, state: Any, path: str | os.PathLike, what: str = "model") -> None:
    """``module.load_state_dict(state)`` (a network or an optimiser); CheckpointError naming
    the file when the stored weights do not fit what the stored config builds."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = " ".join(lines[:3])
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        raise CheckpointError(
            f"{path}: its {what} state does not fit the network its config builds "
            f"(a damaged or hand-edited checkpoint): {detail}"
        ) from e


def _load_error_detail(e: Exception, path: Path) -> str:
    """The part of torch.load's error that says what is wrong with the file.

    For a file its safe unpickler refuses, torch's message opens with advice to load
    with ``weights_only=False``, which would run the file's code; xlstm-rl writes
    plain data only, so that advice never applies to one of its checkpoints."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n")[0]
        reason = reason.split(". ")[0].strip().rstrip(".")  # not torch's allowlist advice
        return (
            f"not a file of plain data that torch.load(weights_only=True) reads ({reason}); "
            "xlstm-rl checkpoints hold only tensors, numbers, strings, lists and dicts"
        )
    if isinstance(e, EOFError):
        return "the file ends before its data does (empty or cut short)"
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        head = None
    # torch.save writes a zip archive (or, in its legacy format, a pickle: protocol 2+)
    if head and not head.startswith((b"PK\x03\x04", b"\x80")):
        return f"not a file torch.save wrote (it begins {head!r})"
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def rng_states() -> dict[str, Any]:
    """The global RNG states of torch, numpy and Python, as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


class EpisodeRecorder(gym.Wrapper):
    """Remembers how the current episode began and the actions since, to rebuild it."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.reset_seed = seed
        # The RNG state the reset will draw from (unless a seed replaces it).
        self.reset_rng = None if seed is not None else copy.deepcopy(self._rng().state)
        self.actions: list[np.ndarray] = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any):
        self.actions.append(np.array(action, copy=True))
        return self.env.step(action)

    def _rng(self):
        return self.env.unwrapped.np_random.bit_generator

    def snapshot(self) -> dict[str, Any]:
        actions = torch.from_numpy(np.stack(self.actions)) if self.actions else None
        return {"seed": self.reset_seed, "rng": self.reset_rng, "actions": actions}

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot["seed"] is None:
            self._rng().state = snapshot["rng"]
        self.reset(seed=snapshot["seed"])
        for action in [] if snapshot["actions"] is None else snapshot["actions"].numpy():
            self.step(action[()])  # 0-d arrays back to numpy scalars, as the vector env passes


def _base(envs: VectorEnv) -> VectorEnv:
    return envs.unwrapped


def _statistics(envs: VectorEnv) -> RecordEpisodeStatistics | None:
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, RecordEpisodeStatistics):
            return envs
        envs = envs.env
    return None


def record_episodes(envs: VectorEnv) -> bool:
    """Wrap each sub-env in an EpisodeRecorder (before the first reset); False if not sync."""
    base = _base(envs)
    if not isinstance(base, SyncVectorEnv):
        return False
    base.envs = [EpisodeRecorder(env) for env in base.envs]
    return True


def env_snapshot(envs: VectorEnv) -> dict[str, Any] | None:
    """The envs' state as plain data, or None when they are not recorded."""
    base = _base(envs)
    if not isinstance(base, SyncVectorEnv) or not all(
        isinstance(env, EpisodeRecorder) for env in base.envs
    ):
        return None
    stats = _statistics(envs)
    return {
        "episodes": [env.snapshot() for env in base.envs],
        "returns": None if stats is None else torch.as_tensor(stats.episode_returns),
        "lengths": None if stats is None else torch.as_tensor(stats.episode_lengths),
        "prev_dones": None if stats is None else torch.as_tensor(stats.prev_dones),
    }


def restore_envs(envs: VectorEnv, snapshot: dict[str, Any] | None) -> bool:
    """Rebuild the envs' state from ``env_snapshot``; False (state untouched) if impossible."""
    base = _base(envs)
    if snapshot is None or env_snapshot(envs) is None:
        return False
    if len(snapshot["episodes"]) != len(base.envs):
        raise CheckpointError(
            f"checkpoint has {len(snapshot['episodes'])} envs, this run {len(base.envs)}"
        )
    for env, episode in zip(base.envs, snapshot["episodes"]):
        env.restore(episode)
    stats = _statistics(envs)
    if stats is not None and snapshot["returns"] is not None:
        stats.episode_returns = snapshot["returns"].numpy().copy()
        stats.episode_lengths = snapshot["lengths"].numpy().copy()
        stats.prev_dones = snapshot["prev_dones"].numpy().copy()
    return True
