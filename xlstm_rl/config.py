"""Training configuration: small nested dataclasses, loaded from YAML over the defaults.

A config is a ``TrainConfig``; ``load_config`` builds one from a dataclass, a nested
dict, or a YAML path, then applies ``--a.b value`` style overrides. Every section
checks itself in ``__post_init__``, types first, then values. An unknown key or a
value of the wrong type is a ``ConfigError`` that names the key (and lists the valid
ones), never a silent default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALGOS = ("ppo", "a2c")


class ConfigError(ValueError):
    """A config key that does not exist, or a value it cannot take."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_types(section: Any, name: str) -> None:
    """Coerce each field to its annotated type (ConfigError naming it if impossible);
    nested sections given as dicts are built from them."""
    prefix = f"{name}." if name else ""
    for key, hint in typing.get_type_hints(type(section)).items():
        value = getattr(section, key)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                setattr(section, key, from_dict(hint, value, f"{prefix}{key}."))
        else:
            setattr(section, key, _coerce(prefix + key, value, hint))


@dataclass
class EnvConfig:
    """Which environment, how many copies, and the keyword arguments for ``make_env``."""

    id: str = "xlstm_rl/TMaze-v0"
    num_envs: int = 16
    module: str | None = None  # imported first, so a user's own envs register
    kwargs: dict = field(default_factory=dict)
    asynchronous: bool | None = None  # None: make_vector_env decides (sync for cheap envs)
    # keep only these actions of a Discrete action space, in this order (agent action j is
    # the env's actions[j]); e.g. [0, 1, 2] (turn left, turn right, forward) for MiniGrid
    # Memory, whose other four actions do nothing there. None: all of them
    actions: list | None = None

    def __post_init__(self):
        _check_types(self, "env")
        _require(bool(self.id), "env.id must be a non-empty gymnasium id")
        _require(self.num_envs >= 1, f"env.num_envs must be >= 1, got {self.num_envs}")
        # the list's entries are checked against the env's action space when it is made

    def make(self):
        """One env of this config (``make_env`` with its id, module, actions and kwargs)."""
        from xlstm_rl.envs import make_env

        return make_env(
            self.id, env_module=self.module, actions=self.actions, env_kwargs=self.kwargs
        )


@dataclass
class CoreConfig:
    """The memory core: a name for ``build_core``, its width, and core-specific options."""

    name: str = "mlstm"
    hidden_size: int = 64
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        _check_types(self, "core")
        from xlstm_rl.cores import CORES, option_names  # the registry: register_core'd count

        _require(self.name in CORES, f"core.name must be one of {sorted(CORES)}, got {self.name!r}")
        _require(self.hidden_size >= 1, f"core.hidden_size must be >= 1, got {self.hidden_size}")
        # names here, before any env is made; their values when the core is built
        valid = option_names(self.name)
        unknown = [] if valid is None else sorted(set(self.options) - set(valid))
        _require(
            not unknown,
            f"core.options: unknown option(s) {unknown} for core {self.name!r}; valid: {valid}",
        )


@dataclass
class PolicyConfig:
    """Encoder and inputs around the core.

    ``embedding_size`` None encodes discrete observations one-hot; an int gives each
    discrete component a learned embedding of that size. ``prev_action`` and
    ``prev_reward`` feed the previous step's action and reward to the core (POPGym's
    convention), zeroed at episode starts. The actor and the critic each read the
    core's output through ``head_layers`` tanh layers of ``head_hidden`` units
    (0 layers: linear heads). ``shared_core`` False gives the critic a core of its own
    (same name and options as ``core``; sb3-contrib RecurrentPPO's default), so the
    value loss trains only that one and the policy loss only the actor's; the encoder
    stays shared.
    """

    prev_action: bool = False
    prev_reward: bool = False
    encoder_size: int = 64
    embedding_size: int | None = None
    cnn_channels: int = 32
    head_hidden: int = 64
    head_layers: int = 2
    shared_core: bool = True

    def __post_init__(self):
        _check_types(self, "policy")
        _require(
            self.encoder_size >= 1, f"policy.encoder_size must be >= 1, got {self.encoder_size}"
        )
        _require(
            self.embedding_size is None or self.embedding_size >= 1,
            f"policy.embedding_size must be None or >= 1, got {self.embedding_size}",
        )
        _require(
            self.cnn_channels >= 1, f"policy.cnn_channels must be >= 1, got {self.cnn_channels}"
        )
        _require(self.head_layers >= 0, f"policy.head_layers must be >= 0, got {self.head_layers}")
        _require(self.head_hidden >= 1, f"policy.head_hidden must be >= 1, got {self.head_hidden}")


@dataclass
class PPOConfig:
    """Rollout and update hyperparameters, CleanRL's names.

    A2C (``algo: a2c``) reads rollout_len, gamma, gae_lambda, ent_coef, vf_coef,
    max_grad_norm, lr, adam_eps, anneal_lr, norm_adv and bptt_len; it makes one update
    over the whole rollout, so epochs, num_minibatches, clip_coef, clip_vloss and
    target_kl do not apply to it. Minibatches are sets of environments: ``num_envs``
    must divide by ``num_minibatches``.
    """

    rollout_len: int = 128
    epochs: int = 4
    num_minibatches: int = 4
    bptt_len: int | None = None  # None: backpropagate through the whole rollout
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    lr: float = 2.5e-4
    adam_eps: float = 1e-5  # CleanRL's; long memories need smaller (docs/results.md)
    anneal_lr: bool = True
    target_kl: float | None = None  # stop the update after an epoch whose mean approx_kl exceeds it
    norm_adv: bool = True

    def __post_init__(self):
        _check_types(self, "ppo")
        _require(self.rollout_len >= 1, f"ppo.rollout_len must be >= 1, got {self.rollout_len}")
        _require(self.epochs >= 1, f"ppo.epochs must be >= 1, got {self.epochs}")
        _require(
            self.num_minibatches >= 1,
            f"ppo.num_minibatches must be >= 1, got {self.num_minibatches}",
        )
        _require(
            self.bptt_len is None or self.bptt_len >= 1,
            f"ppo.bptt_len must be None or >= 1, got {self.bptt_len}",
        )
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"ppo.{name} must be in [0, 1], got {value}")
        for name in ("clip_coef", "ent_coef", "vf_coef", "max_grad_norm", "lr"):
            value = getattr(self, name)
            _require(value >= 0.0, f"ppo.{name} must be >= 0, got {value}")
            if name != "max_grad_norm":  # inf there: no clipping
                _require(math.isfinite(value), f"ppo.{name} must be finite, got {value}")
        _require(self.lr > 0.0, f"ppo.lr must be > 0, got {self.lr}")
        _require(self.adam_eps > 0.0, f"ppo.adam_eps must be > 0, got {self.adam_eps}")
        _require(
            self.target_kl is None or self.target_kl > 0,
            f"ppo.target_kl must be None or > 0, got {self.target_kl}",
        )


@dataclass
class TrainConfig:
    """Everything one training run needs; see ``configs/*.yaml`` for examples."""

    algo: str = "ppo"
    env: EnvConfig = field(default_factory=EnvConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    total_steps: int = 200_000
    seed: int = 1
    eval_episodes: int = 100
    checkpoint_every: int = 50  # updates; 0 writes only the final checkpoint
    log_dir: str = "runs"
    name: str | None = None  # run directory under log_dir; None: derived from env, core, seed
    device: str = "cpu"
    torch_threads: int = 1  # torch.set_num_threads for the run; 0 keeps torch's default
    # torch.compile the acting step and the update's loss: faster after a one-off compile
    # (tens of seconds, cached by torch for later runs); needs a C++ compiler on the CPU
    compile: bool = False

    def __post_init__(self):
        _check_types(self, "")
        _require(self.torch_threads >= 0, f"torch_threads must be >= 0, got {self.torch_threads}")
        _require(self.algo in ALGOS, f"algo must be one of {ALGOS}, got {self.algo!r}")
        _require(self.total_steps >= 1, f"total_steps must be >= 1, got {self.total_steps}")
        _require(0 <= self.seed < 2**31, f"seed must be in [0, 2**31), got {self.seed}")
        _require(self.eval_episodes >= 0, f"eval_episodes must be >= 0, got {self.eval_episodes}")
        _require(
            self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
        )
        _require(
            re.fullmatch(r"cpu|auto|mps|cuda(:\d+)?", self.device) is not None,
            f"device must be 'cpu', 'cuda[:N]', 'mps' or 'auto', got {self.device!r}",
        )
        if self.algo == "ppo":
            _require(
                self.env.num_envs % self.ppo.num_minibatches == 0,
                f"env.num_envs ({self.env.num_envs}) must be divisible by "
                f"ppo.num_minibatches ({self.ppo.num_minibatches}): minibatches are sets of envs",
            )
        # advantages are normalised over each minibatch (A2C: the whole rollout); the
        # standard deviation of a single step is NaN
        per_minibatch = self.steps_per_update // (
            self.ppo.num_minibatches if self.algo == "ppo" else 1
        )
        _require(
            not self.ppo.norm_adv or per_minibatch >= 2,
            f"ppo.norm_adv needs at least 2 steps per minibatch to normalise over, got "
            f"{per_minibatch} (env.num_envs {self.env.num_envs} / ppo.num_minibatches "
            f"{self.ppo.num_minibatches} x ppo.rollout_len {self.ppo.rollout_len}); "
            "set ppo.norm_adv false or use more envs or steps",
        )

    @property
    def steps_per_update(self) -> int:
        return self.env.num_envs * self.ppo.rollout_len

    @property
    def num_updates(self) -> int:
        return max(1, self.total_steps // self.steps_per_update)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (command-line strings are parsed); ConfigError if it is not."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
        _require(type(None) in options, f"{key} cannot be None")
        return None
    for option in options:
        if option is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, int) and value in (0, 1):  # `compile: 1` in YAML, as "1" is
                return bool(value)
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():  # 1e6 in YAML is a float
                return int(value)
            if isinstance(value, str):
                digits = value.strip().replace("_", "")
                try:
                    return int(digits)  # exact, however long
                except ValueError:
                    pass
                try:
                    number = float(digits)  # "1e6", "2.0"
                except ValueError:
                    continue
                if number.is_integer():
                    return int(number)
        elif option is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    continue
        elif option is str:
            if isinstance(value, str):
                return value
        elif option in (dict, list):  # from the command line: YAML, as in the files
            if isinstance(value, str):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    continue
            if isinstance(value, option) or (option is list and isinstance(value, tuple)):
                return option(value)
    names = " or ".join("None" if o is type(None) else o.__name__ for o in options)
    raise ConfigError(f"{key} must be {names}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, checking every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    hints = _hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            where = f"in {prefix.rstrip('.')}" if prefix else "at the top level"
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}; valid keys {where}: {', '.join(fields)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, {} if value is None else value, f"{prefix}{key}.")
        else:
            kwargs[key] = value  # checked and coerced by the section's __post_init__
    return cls(**kwargs)


def apply_overrides(
    data: dict[str, Any], overrides: dict[str, Any], cls: type = None
) -> dict[str, Any]:
    """Set dotted keys (``ppo.lr``) in a nested dict; returns a new dict, ``data`` is untouched.

    String values inside free-form dict fields (``env.kwargs.corridor_length``) are
    parsed as YAML, since no dataclass field says their type.
    """
    data = dict(data)
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node, section = data, cls or TrainConfig
        for part in path:
            hint = _hints(section).get(part) if section is not None else None
            child = node.get(part)
            child = {} if child is None else child
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
            node[part] = node = dict(child)
            section = hint if dataclasses.is_dataclass(hint) else None
        if section is None and isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"{dotted}: {value!r} is not valid YAML ({problem})") from e
        node[leaf] = value
    return data


def load_config(
    config: TrainConfig | dict | str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """A TrainConfig from a dataclass, a nested dict or a YAML path, plus dotted overrides."""
    if isinstance(config, TrainConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = config
    elif isinstance(config, str | os.PathLike):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = load_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: the top level must be a mapping of config keys (algo: ..., env: ...), "
                f"got a {type(data).__name__}"
            )
    elif config is None:
        data = {}
    else:
        raise TypeError(
            f"config must be a TrainConfig, dict or YAML path, got {type(config).__name__}"
        )
    return from_dict(TrainConfig, apply_overrides(data, overrides or {}))


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


UNSET = _Unset()  # a key one side of a config_diff lacks


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two nested config mappings, each with
    (old, new); a key only one side has is ``UNSET`` on the other. An empty mapping that
    the other side fills (``core.options: {}`` against ``{num_layers: 2}``) shows as its
    new keys alone, not also as ``{} -> UNSET``."""
    old, new = flatten(old), flatten(new)
    diff = {
        key: (old.get(key, UNSET), new.get(key, UNSET))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, UNSET) != new.get(key, UNSET)
    }
    filled = [
        key
        for key, pair in diff.items()
        if pair in (({}, UNSET), (UNSET, {})) and any(k.startswith(f"{key}.") for k in diff)
    ]
    for key in filled:
        del diff[key]
    return diff


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as dotted keys: ``{"ppo": {"lr": 1}}`` -> ``{"ppo.lr": 1}``.
    An empty mapping stays a value (``env.kwargs: {}``), so it compares with a filled one."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_yaml(path: str | os.PathLike) -> Any:
    """The parsed YAML file; a ConfigError naming the file and the line if it does not parse."""
    try:
        with open(path) as stream:  # a stream, so that yaml's message names the file
            return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``["--ppo.lr", "1e-3", "--seed=2"]`` -> ``{"ppo.lr": "1e-3", "seed": "2"}``."""
    overrides, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"expected an override like --key value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} needs a value")
            value = args[i + 1]
            if value.startswith("--"):
                raise ConfigError(
                    f"override --{key} needs a value, got the next option {value!r} "
                    f"(a value that starts with --: --{key}=VALUE)"
                )
            i += 1
        overrides[key.replace("-", "_")] = value
        i += 1
    return overrides
