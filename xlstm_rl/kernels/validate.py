"""Input checks shared by every kernel backend.

Errors name the expected shape with dimension names, so a caller sees what the
op wanted, not only what it got.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got {x.dtype}"
        )


def check_shape(name: str, x: torch.Tensor, expected: tuple, names: str, hint: str = "") -> None:
    """`expected` holds ints, with None where any size is fine; `names` spells them out;
    `hint` (where the expected sizes come from) ends the message."""
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = ", ".join(
            f"{n}={e}" if e is not None and not n.isdigit() else n
            for n, e in zip(names.split(), expected)
        )
        raise ValueError(f"{name} must have shape ({want}), got {tuple(x.shape)}{hint}")


def check_mask(name: str, mask: torch.Tensor | None, expected: tuple, names: str) -> None:
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(
            f"{name} must be a bool tensor of shape ({', '.join(names.split())}), got {got}"
        )
    check_shape(name, mask, expected, names)


def check_devices(like: str, x: torch.Tensor, *others) -> None:
    """Every tensor in `others` (name, tensor-or-None or a tuple of tensors) sits on x's device."""
    for name, y in others:
        if y is None:
            continue
        for t in y if isinstance(y, (tuple, list)) else (y,):
            if isinstance(t, torch.Tensor) and t.device != x.device:
                raise ValueError(
                    f"{name} is on {t.device} but {like} is on {x.device}; "
                    "every input must be on the same device"
                )


def as_int(value: Any) -> int | None:
    """``value`` as an int if it is an integer (numpy and 0-d torch integers too), never
    a bool; None otherwise. The one test for integer arguments and options."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_mlstm_inputs(q, k, v, i, f, *, time_axis: bool) -> tuple[int, ...]:
    """Validate q, k, v, i, f; return (B, H, T, Dk, Dv), with T = 1 for the step form."""
    for name, x in (("q", q), ("k", k), ("v", v), ("i", i), ("f", f)):
        check_float(name, x)
    if time_axis:
        check_shape("q", q, (None,) * 4, "B H T Dk")
        B, H, T, Dk = q.shape
        # the sizes come from q: a q in another layout, e.g. (B, T, H, Dk), shows up here
        hint = f" (B, H, T read off q, taken as (B, H, T, Dk) = {tuple(q.shape)})"
        check_shape("k", k, (B, H, T, Dk), "B H T Dk", hint)
        check_shape("v", v, (B, H, T, None), "B H T Dv", hint)
        Dv = v.shape[-1]
        check_shape("i", i, (B, H, T), "B H T", hint)
        check_shape("f", f, (B, H, T), "B H T", hint)
    else:
        check_shape("q", q, (None,) * 3, "B H Dk")
        B, H, Dk = q.shape
        T = 1
        hint = f" (B, H read off q, taken as (B, H, Dk) = {tuple(q.shape)})"
        check_shape("k", k, (B, H, Dk), "B H Dk", hint)
        check_shape("v", v, (B, H, None), "B H Dv", hint)
        Dv = v.shape[-1]
        check_shape("i", i, (B, H), "B H", hint)
        check_shape("f", f, (B, H), "B H", hint)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if Dk < 1:
        raise ValueError(f"q and k need Dk >= 1 (their last dim), got q of shape {tuple(q.shape)}")
    return B, H, T, Dk, Dv


def check_mlstm_state(state, B: int, H: int, Dk: int, Dv: int) -> None:
    if state is None:
        return
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        raise TypeError("mLSTM state must be a tuple (C, n, m) or None")
    C, n, m = state
    for name, x in (("state C", C), ("state n", n), ("state m", m)):
        check_float(name, x)
    check_shape("state C", C, (B, H, Dk, Dv), "B H Dk Dv")
    check_shape("state n", n, (B, H, Dk), "B H Dk")
    check_shape("state m", m, (B, H), "B H")
