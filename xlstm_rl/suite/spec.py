"""Suite files: a matrix of cores x environments x seeds over one shared training config.

A suite YAML (see ``configs/suites/``) has these keys:

- ``name``, ``description``: what the suite is for, shown in the report.
- ``cores``: core names (``xlstm_rl.cores.CORES``); ``seeds``: ints.
- ``base``: a ``TrainConfig`` mapping shared by every run (budget, PPO settings, ...).
- ``envs``: entries ``{name, id, kwargs, overrides}``; ``name`` names the env's
  folder and table row, ``kwargs`` go to ``make_env`` and ``overrides`` are dotted
  config keys for this env only (``ppo.rollout_len: 101``).
- ``core_overrides``: ``{core: {dotted key: value}}`` for one core only.
- ``mmer_window``: updates averaged before MMER takes its max (default 10).
- ``solve``: ``{metric, threshold}``: a run solves its env when the seed-mean final
  evaluation ``metric`` is >= ``threshold`` (default success_rate >= 0.9).
- ``horizon``: an env kwarg (``corridor_length``); the report then gives, per core,
  the largest value of it that the core solves.

A run's config is ``base``, then the env's id and kwargs, the core's name, the
env's overrides, the core's overrides, the command line's overrides, and the seed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlstm_rl.config import ConfigError, apply_overrides, load_config, load_yaml

SUITE_KEYS = (
    "name",
    "description",
    "cores",
    "seeds",
    "base",
    "envs",
    "core_overrides",
    "mmer_window",
    "solve",
    "horizon",
)
ENV_KEYS = ("name", "id", "kwargs", "overrides")
SOLVE_METRICS = ("success_rate", "return_mean")  # final eval keys the report reads
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class EnvEntry:
    name: str
    id: str
    kwargs: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)


@dataclass
class RunSpec:
    """One training run of the matrix, and the folder it lives in."""

    env: str
    core: str
    seed: int
    config: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.env}/{self.core}/seed{self.seed}"

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.env / self.core / f"seed{self.seed}"


@dataclass
class SuiteSpec:
    name: str
    cores: list[str]
    seeds: list[int]
    envs: list[EnvEntry]
    base: dict = field(default_factory=dict)
    description: str = ""
    core_overrides: dict = field(default_factory=dict)
    mmer_window: int = 10
    solve: dict = field(default_factory=lambda: {"metric": "success_rate", "threshold": 0.9})
    horizon: str | None = None

    def __post_init__(self):
        _check(bool(self.cores) and bool(self.seeds), "a suite needs cores and seeds")
        _check(bool(self.envs), "a suite needs at least one env")
        _check(SAFE_NAME.match(self.name) is not None, f"bad suite name {self.name!r}")
        names = [e.name for e in self.envs]
        _check(len(set(names)) == len(names), f"env names must be unique, got {names}")
        for name in names:
            _check(
                SAFE_NAME.match(name) is not None, f"env name {name!r} is not a safe folder name"
            )
        _check(self.mmer_window >= 1, f"mmer_window must be >= 1, got {self.mmer_window}")
        unknown = set(self.core_overrides) - set(self.cores)
        _check(not unknown, f"core_overrides for cores not in the suite: {sorted(unknown)}")
        _check(
            set(self.solve) == {"metric", "threshold"},
            f"solve must have keys metric and threshold, got {sorted(self.solve)}",
        )
        _check(
            self.solve["metric"] in SOLVE_METRICS,
            f"solve.metric must be one of {SOLVE_METRICS}, got {self.solve['metric']!r}",
        )
        threshold = self.solve["threshold"]
        _check(
            isinstance(threshold, int | float)
            and not isinstance(threshold, bool)
            and math.isfinite(threshold),
            f"solve.threshold must be a finite number, got {threshold!r}",
        )
        if self.horizon is not None:
            for env in self.envs:
                _check(
                    self.horizon in env.kwargs,
                    f"horizon {self.horizon!r} is not among env {env.name!r}'s kwargs",
                )

    def runs(self, overrides: dict[str, Any] | None = None) -> list[RunSpec]:
        """Every run of the matrix, env-major, each config checked by ``load_config``."""
        runs = []
        for env in self.envs:
            for core in self.cores:
                for seed in self.seeds:
                    data = copy.deepcopy(self.base)
                    data.setdefault("env", {})
                    data["env"]["id"] = env.id
                    data["env"]["kwargs"] = dict(env.kwargs)
                    data.setdefault("core", {})["name"] = core
                    data = apply_overrides(data, env.overrides)
                    data = apply_overrides(data, self.core_overrides.get(core, {}))
                    data = apply_overrides(data, overrides or {})
                    data["seed"] = seed
                    spec = RunSpec(env.name, core, seed, data)
                    try:  # a bad key or value fails here, before any run starts
                        load_config(data)
                    except ConfigError as e:
                        raise ConfigError(f"suite: run {spec.key}: {e}") from None
                    runs.append(spec)
        return runs

    def subset(
        self,
        envs: list[str] | None = None,
        cores: list[str] | None = None,
        seeds: list[int] | None = None,
    ) -> SuiteSpec:
        """The same suite restricted to some envs (by name), cores and seeds.

        None keeps all; a name not in the suite is a ConfigError listing the valid ones.
        """

        def pick(kind: str, chosen, valid: list) -> list:
            if chosen is None:
                return list(valid)
            unknown = [c for c in chosen if c not in valid]
            _check(not unknown, f"{kind} {unknown} not in suite {self.name!r}; valid: {valid}")
            return [v for v in valid if v in chosen]

        env_names = pick("envs", envs, [e.name for e in self.envs])
        kept_cores = pick("cores", cores, self.cores)
        return dataclasses.replace(
            self,
            envs=[e for e in self.envs if e.name in env_names],
            cores=kept_cores,
            seeds=pick("seeds", seeds, self.seeds),
            core_overrides={k: v for k, v in self.core_overrides.items() if k in kept_cores},
        )

    def env_entry(self, name: str) -> EnvEntry:
        return next(e for e in self.envs if e.name == name)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"suite: {message}")


def _list_of(key: str, value: Any, kind: type) -> list:
    """``value`` if it is a list of ``kind`` (bools are not ints); ConfigError naming ``key``."""
    _check(isinstance(value, list), f"{key} must be a list of {kind.__name__}s, got {value!r}")
    for item in value:
        _check(
            isinstance(item, kind) and not isinstance(item, bool),
            f"{key} must be a list of {kind.__name__}s, got {item!r} in {value!r}",
        )
    return list(value)


def _mapping(key: str, value: Any) -> dict:
    _check(isinstance(value, dict), f"{key} must be a mapping, got {value!r}")
    return value


def suite_from_dict(data: dict[str, Any]) -> SuiteSpec:
    _check(isinstance(data, dict), "a suite file must be a mapping")
    unknown = set(data) - set(SUITE_KEYS)
    _check(not unknown, f"unknown keys {sorted(unknown)}; valid: {', '.join(SUITE_KEYS)}")
    envs = []
    for entry in _list_of("envs", data.get("envs") or [], dict):
        bad = set(entry) - set(ENV_KEYS)
        _check(not bad, f"unknown env keys {sorted(bad)}; valid: {', '.join(ENV_KEYS)}")
        _check(isinstance(entry.get("id"), str), f"env entry {entry} needs an id (a string)")
        name = entry.get("name") or entry["id"].replace("/", "-")
        _check(isinstance(name, str), f"env name must be a string, got {name!r}")
        kwargs = _mapping(f"env {name!r} kwargs", entry.get("kwargs") or {})
        overrides = _mapping(f"env {name!r} overrides", entry.get("overrides") or {})
        envs.append(EnvEntry(name, entry["id"], kwargs, overrides))
    fields = {k: v for k, v in data.items() if k != "envs" and v is not None}
    fields["cores"] = _list_of("cores", fields.get("cores", []), str)
    fields["seeds"] = _list_of("seeds", fields.get("seeds", []), int)
    for key in ("base", "core_overrides", "solve"):
        if key in fields:
            _mapping(key, fields[key])
    for core, overrides in fields.get("core_overrides", {}).items():
        _mapping(f"core_overrides of {core!r}", overrides)
    mmer_window = fields.get("mmer_window", 1)
    _check(
        isinstance(mmer_window, int) and not isinstance(mmer_window, bool),
        f"mmer_window must be an int, got {mmer_window!r}",
    )
    fields.setdefault("name", "suite")
    _check(isinstance(fields["name"], str), f"name must be a string, got {fields['name']!r}")
    return SuiteSpec(envs=envs, **fields)


def load_suite(path: str | os.PathLike) -> SuiteSpec:
    """A SuiteSpec from a YAML file; ConfigError naming the file (and the line, for YAML
    that does not parse) and the problem if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"suite file not found: {path}")
    data = load_yaml(path)
    try:
        return suite_from_dict(data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
