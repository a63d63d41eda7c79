"""Type checks for core options, so that a wrong type is a ValueError naming the option
rather than an error from deep inside torch (or, worse, a silently odd network)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from xlstm_rl.kernels.validate import as_int


def option_int(owner: str, name: str, value: Any, minimum: int | None = 1) -> int:
    """An int (numpy and torch integers too, not bool), at least ``minimum``."""
    number = as_int(value)
    if number is None or (minimum is not None and number < minimum):
        at_least = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{owner}: option {name} must be an int{at_least}, got {value!r}")
    return number


def option_ints(owner: str, **values: Any) -> tuple[int, ...]:
    """Each keyword an int >= 1 (sizes, counts), in the order given."""
    return tuple(option_int(owner, name, value) for name, value in values.items())


def option_number(owner: str, name: str, value: Any) -> float:
    """A finite real number (numpy and 0-d torch numbers too, not bool)."""
    try:
        number = None if isinstance(value, bool | str) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"{owner}: option {name} must be a finite number, got {value!r}")
    return number


def option_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: option {name} must be true or false, got {value!r}")
    return value


def option_pair(owner: str, name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, str) or not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{owner}: option {name} must be two numbers [a, b], got {value!r}")
    return tuple(option_number(owner, name, v) for v in value)


def check_fields(config: Any, owner: str) -> None:
    """Check (and normalise) a config dataclass's fields against their annotations: int,
    float, bool, str, dict, ``tuple[float, float]`` and ``X | None``."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, hint = getattr(config, field.name), hints[field.name]
        args = typing.get_args(hint)
        if isinstance(hint, types.UnionType) and type(None) in args:
            if value is None:
                continue
            (hint,) = (a for a in args if a is not type(None))
        if hint is int:
            value = option_int(owner, field.name, value, minimum=None)
        elif hint is float:
            value = option_number(owner, field.name, value)
        elif hint is bool:
            value = option_bool(owner, field.name, value)
        elif typing.get_origin(hint) is tuple:
            value = option_pair(owner, field.name, value)
        elif hint in (str, dict) and not isinstance(value, hint):
            kind = "a string" if hint is str else "a mapping"
            raise ValueError(f"{owner}: option {field.name} must be {kind}, got {value!r}")
        setattr(config, field.name, value)
