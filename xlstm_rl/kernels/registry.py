"""Backends chosen by name through one small registry.

Each op maps backend names to functions with one signature. `"auto"` picks the
Triton backend for CUDA inputs when it is registered and can run, else the op's
CPU default; it decides the same way every time for the same device. CPU inputs
always get the CPU default under "auto" (Triton's interpreter is for tests only).
Asking for a backend that cannot run on the inputs raises, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

OPS = ("mlstm_sequence", "mlstm_step", "slstm_sequence", "slstm_step")


@dataclass(frozen=True)
class Backend:
    fn: Callable
    # returns None when the backend can run on this tensor's device, else the reason
    unavailable: Callable[[torch.Tensor], str | None] = lambda x: None


_BACKENDS: dict[str, dict[str, Backend]] = {op: {} for op in OPS}
_CPU_DEFAULT = {
    "mlstm_sequence": "chunkwise",
    "mlstm_step": "reference",
    "slstm_sequence": "bptt",
    "slstm_step": "reference",
}
# tried in order by "auto" before the CPU default
_ACCELERATED = ("triton",)


def register_backend(
    op: str,
    name: str,
    fn: Callable,
    unavailable: Callable[[torch.Tensor], str | None] | None = None,
) -> None:
    if op not in _BACKENDS:
        raise ValueError(f"unknown op {op!r}; ops are {list(OPS)}")
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic selection")
    _BACKENDS[op][name] = Backend(fn, unavailable or (lambda x: None))


def backends(op: str) -> list[str]:
    """Valid backend names for `op`, "auto" included."""
    return ["auto", *_BACKENDS[op]]


def resolve(op: str, name: str, x: torch.Tensor) -> Callable:
    table = _BACKENDS[op]
    if name == "auto":
        for fast in _ACCELERATED if x.is_cuda else ():
            if fast in table and table[fast].unavailable(x) is None:
                return table[fast].fn
        return table[_CPU_DEFAULT[op]].fn
    if name not in table:
        raise ValueError(f"unknown backend {name!r} for {op}; valid backends: {backends(op)}")
    reason = table[name].unavailable(x)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} for {op} cannot run here: {reason}")
    return table[name].fn
