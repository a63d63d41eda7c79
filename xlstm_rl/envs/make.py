"""Build single and vectorised environments by gymnasium id.

Ids come from three places: our tasks (``xlstm_rl/TMaze-v0``,
``xlstm_rl/MemoryLength-v0``, registered on import of ``xlstm_rl.envs``),
POPGym (``popgym-*``) and MiniGrid (``MiniGrid-*``, ``BabyAI-*``), whose packages
are imported only when one of their ids is asked for, and any module of the
user's that registers envs on import (``env_module="my.module"``, or the id
written gymnasium-style as ``"my.module:MyEnv-v0"``).

Every env comes back with an observation space an agent can encode (Discrete,
MultiDiscrete, Box, or a flat Dict of those); see ``wrappers`` for the
conversions applied.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array, iterate

from xlstm_rl.envs.validation import check_int, check_observation_space
from xlstm_rl.envs.wrappers import (
    CopyInfoArrays,
    EpisodeSuccess,
    FlattenTupleObservation,
    MiniGridObservation,
)

# id prefix -> the package that registers those ids when imported
SUITE_PACKAGES = {"popgym-": "popgym", "MiniGrid-": "minigrid", "BabyAI-": "minigrid"}


class EnvModuleError(ImportError, ValueError):
    """An env module that cannot be imported (a ValueError too: a bad config value)."""


class EnvArgumentError(TypeError, ValueError):
    """A keyword argument the env does not take (a ValueError too: a bad config value)."""


def import_env_module(name: str) -> None:
    """Import ``name`` so that the envs it registers with gymnasium can be made."""
    try:
        importlib.import_module(name)
    except ImportError as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name == name.split(".")[0]:
            # console scripts do not search the current directory, unlike python -m
            hint = (
                "; it must be importable from the Python path (for a module in the current "
                "directory: PYTHONPATH=. xlstm-rl ..., or python -m xlstm_rl.cli ...)"
            )
        raise EnvModuleError(f"could not import env_module {name!r}: {e}{hint}") from e


def _import_suite(env_id: str) -> None:
    for prefix, package in SUITE_PACKAGES.items():
        if env_id.startswith(prefix):
            try:
                importlib.import_module(package)
            except ImportError as e:
                raise ImportError(
                    f"{env_id} needs the {package!r} package: pip install 'xlstm-rl[envs]'"
                ) from e


def _unknown_id_error(env_id: str) -> ValueError:
    for package in sorted(set(SUITE_PACKAGES.values())):
        try:  # register the optional suites so their ids can be suggested
            importlib.import_module(package)
        except ImportError:
            pass
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.6)
    ours = sorted(i for i in gym.registry if i.startswith("xlstm_rl/"))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(
        f"unknown env id {env_id!r}.{hint} Known families: ours ({', '.join(ours)}), "
        "POPGym ('popgym-RepeatPreviousEasy-v0', ...), MiniGrid ('MiniGrid-MemoryS9-v0', "
        "...). For an env registered by your own module, pass env_module='your.module' "
        "or the id 'your.module:EnvName-v0'."
    )


def resolve_env_id(env_id: str, env_module: str | None = None) -> str:
    """Import whatever registers ``env_id`` and return the bare id; ValueError if unknown."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a str, got {type(env_id).__name__}")
    if env_module is not None:
        import_env_module(env_module)
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        import_env_module(module)
    _import_suite(env_id)
    if env_id not in gym.registry:
        raise _unknown_id_error(env_id)
    return env_id


def _make(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    """gym.make, with a keyword the env does not take reported with the ones it does."""
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" not in str(e):
            raise
        raise EnvArgumentError(f"{env_id}: {e}; {_accepted_kwargs(env_id)}") from e


def _accepted_kwargs(env_id: str) -> str:
    try:
        entry = gym.spec(env_id).entry_point
        target = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
        params = inspect.signature(target).parameters.values()
    except Exception:  # noqa: BLE001 - only a hint; the error itself is already clear
        return "see the env's documentation for its arguments"
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    more = any(p.kind == p.VAR_KEYWORD for p in params)
    return f"it takes: {', '.join(names) or 'no named arguments'}" + (
        " (and more, passed on to its base class)" if more else ""
    )


def _is_minigrid(env: gym.Env) -> bool:
    return type(env.unwrapped).__module__.split(".")[0] == "minigrid"


class _ActionTable:
    """Agent action j -> env action ``table[j]`` (a class, so the env stays picklable)."""

    def __init__(self, table: list[int]) -> None:
        self.table = table

    def __call__(self, action: Any) -> int:
        return self.table[int(action)]


def restrict_actions(env: gym.Env, actions: list[int], env_id: str = "env") -> gym.Env:
    """``env`` with its Discrete action space cut down to ``actions``, in that order.

    The agent's action j is the env's ``actions[j]``: MiniGrid Memory with ``[0, 1, 2]``
    keeps turn left, turn right and forward (Pleines et al. use these three; the other
    four do nothing there). ValueError for another kind of space, an empty or repeated
    list, or an action the env does not have.
    """
    space = env.action_space
    if not isinstance(space, spaces.Discrete):
        raise ValueError(f"{env_id}: env.actions needs a Discrete action space, got {space}")
    valid = range(int(space.start), int(space.start + space.n))
    if (
        not isinstance(actions, list | tuple)
        or not actions
        or any(isinstance(a, bool) or not isinstance(a, int | np.integer) for a in actions)
    ):
        raise ValueError(f"{env_id}: env.actions must be a non-empty list of ints, got {actions!r}")
    bad = [a for a in actions if a not in valid]
    if bad or len(set(actions)) != len(actions):
        raise ValueError(
            f"{env_id}: env.actions must be distinct actions of {space} (ints in "
            f"[{valid.start}, {valid.stop - 1}]), got {list(actions)}"
        )
    table = [int(a) for a in actions]
    return gym.wrappers.TransformAction(env, _ActionTable(table), spaces.Discrete(len(table)))


def _merge_kwargs(env_kwargs: dict[str, Any] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    if env_kwargs is None:
        return kwargs
    if not isinstance(env_kwargs, dict):
        raise TypeError(f"env_kwargs must be a dict, got {type(env_kwargs).__name__}")
    both = sorted(set(env_kwargs) & set(kwargs))
    if both:
        raise ValueError(f"env keyword(s) {both} given both in env_kwargs and as keywords")
    return {**env_kwargs, **kwargs}


def make_env(
    env_id: str,
    *,
    env_module: str | None = None,
    actions: list[int] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Make one env by id, with keyword arguments passed to gymnasium.make.

    ``actions``: keep only these actions of a Discrete action space, in this order
    (``restrict_actions``); None keeps them all. The env's own keyword arguments come
    as ``**kwargs`` or as the dict ``env_kwargs`` (configs pass it, so that an env
    keyword named ``actions`` or ``env_module`` reaches the env).

    MiniGrid envs get ``Dict(direction, image)`` observations (mission dropped)
    and ``info["success"]`` at episode end; ``agent_view_size`` (odd, >= 3;
    MiniGrid's default 7) sets the image size. Tuple observations (POPGym's
    Autoencode) are flattened. An unknown id raises ValueError with close
    matches; an unknown keyword raises ``EnvArgumentError`` (a TypeError and a ValueError)
    naming it and the keywords the env takes. POPGym
    envs get fresh info arrays each step (``CopyInfoArrays``).
    """
    kwargs = _merge_kwargs(env_kwargs, kwargs)
    env_id = resolve_env_id(env_id, env_module)
    if env_id.startswith(("MiniGrid-", "BabyAI-")) and "agent_view_size" in kwargs:
        view = kwargs["agent_view_size"]
        if isinstance(view, bool) or not isinstance(view, int) or view < 3 or view % 2 == 0:
            raise ValueError(f"agent_view_size must be an odd int >= 3, got {view!r}")
    if env_id.startswith("popgym-"):
        # Copy info arrays before gymnasium's env checker sees them; see CopyInfoArrays.
        check = not kwargs.pop("disable_env_checker", False)
        env = CopyInfoArrays(_make(env_id, {"disable_env_checker": True, **kwargs}))
        if check:
            env = gym.wrappers.PassiveEnvChecker(env)
    else:
        env = _make(env_id, kwargs)
    if _is_minigrid(env):
        env = EpisodeSuccess(MiniGridObservation(env))
    if isinstance(env.observation_space, spaces.Tuple):
        env = FlattenTupleObservation(env)
    check_observation_space(env.observation_space, env_id)
    if actions is not None:
        env = restrict_actions(env, actions, env_id)
    return env


class _SeedFirstReset(gym.vector.VectorWrapper):
    """Use ``seed`` for the first reset when the caller gives none."""

    def __init__(self, env: VectorEnv, seed: int) -> None:
        super().__init__(env)
        self._first_seed: int | None = seed

    def reset(self, *, seed: int | list[int | None] | None = None, options: Any = None):
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        return self.env.reset(seed=seed, options=options)


def make_vector_env(
    env_id: str,
    num_envs: int,
    *,
    seed: int = 0,
    asynchronous: bool | None = None,
    env_module: str | None = None,
    actions: list[int] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> VectorEnv:
    """Make ``num_envs`` copies of ``make_env(env_id, **kwargs)`` as one vector env.

    Seeding: the first ``reset()`` (without a seed) seeds sub-env i with
    ``seed + i``, and the batched action space is seeded with ``seed``, so runs
    are deterministic given ``seed``.

    ``actions`` restricts a Discrete action space, and ``env_kwargs`` joins
    ``kwargs``, as in ``make_env``.

    ``asynchronous``: True runs each sub-env in its own process
    (``AsyncVectorEnv``); False or None (auto) steps them in this process
    (``SyncVectorEnv``). Auto picks sync for every id: our tasks and POPGym step
    in microseconds and MiniGrid in ~0.2 ms, and on 2 cores 8 async MiniGrid
    envs stepped slower (4.4k vs 5.9k steps/s) than sync ones.

    Autoreset is ``AutoresetMode.SAME_STEP``: when sub-env i ends an episode,
    ``step`` returns the *next* episode's first observation in row i and
    ``terminated[i] or truncated[i]`` is True. The infos the agent reads:

    - ``infos["final_obs"][i]``: the true last observation of the finished
      episode (an object array, None in rows that did not finish), with mask
      ``infos["_final_obs"]``. Bootstrap truncated episodes from it;
      ``final_observations`` batches it back into ``obs``'s layout.
    - ``infos["episode"]["r"][i]``, ``["l"][i]``, ``["t"][i]``: return, length
      and wall time of the finished episode, with mask ``infos["_episode"]``
      (from gymnasium's vector ``RecordEpisodeStatistics``).
    - ``infos["final_info"]["success"][i]``, mask
      ``infos["final_info"]["_success"]``: whether it succeeded, for envs that
      report it (ours and MiniGrid; not POPGym).

    ``episode_info(infos)`` gathers these per finished episode. Keys are absent
    on steps where no sub-env finished.
    """
    num_envs = check_int("num_envs", num_envs, 1, 1 << 16)
    seed = check_int("seed", seed, 0, 2**63 - 1 - num_envs)
    # Resolve in this process too, so an unknown id fails here and not in a worker.
    resolve_env_id(env_id, env_module)
    env_fn = functools.partial(
        make_env,
        env_id,
        env_module=env_module,
        actions=actions,
        env_kwargs=_merge_kwargs(env_kwargs, kwargs),
    )
    vector_cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    envs = vector_cls([env_fn] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    return gym.wrappers.vector.RecordEpisodeStatistics(_SeedFirstReset(envs, seed))


def episode_info(infos: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per episode that ended on this step of a ``make_vector_env`` env.

    Each has ``env`` (sub-env index), ``return``, ``length`` and ``success``
    (bool, or None where the env does not report it).
    """
    if "_episode" not in infos:
        return []
    final_info = infos.get("final_info", {})
    success, has_success = final_info.get("success"), final_info.get("_success")
    episodes = []
    for i in np.flatnonzero(infos["_episode"]):
        known = success is not None and bool(has_success[i])
        episodes.append(
            {
                "env": int(i),
                "return": float(infos["episode"]["r"][i]),
                "length": int(infos["episode"]["l"][i]),
                "success": bool(success[i]) if known else None,
            }
        )
    return episodes


def final_observations(envs: VectorEnv, obs: Any, infos: dict[str, Any]) -> Any:
    """``obs`` with each finished sub-env's row replaced by its episode's final observation.

    This is the observation to bootstrap a truncated episode's value from.
    ``obs`` itself is returned when no sub-env finished; otherwise a new batch.
    """
    mask = infos.get("_final_obs")
    if mask is None or not np.any(mask):
        return obs
    rows = list(iterate(envs.observation_space, obs))
    for i in np.flatnonzero(mask):
        rows[i] = infos["final_obs"][i]
    space = envs.single_observation_space
    return concatenate(space, rows, create_empty_array(space, len(rows)))
