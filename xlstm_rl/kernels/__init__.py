"""Kernel layer: functional mLSTM and sLSTM ops, tensors in, tensors out.

Batch-first everywhere. mLSTM: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T),
resets (B, T) bool, state (C, n, m) with C (B, H, Dk, Dv), n (B, H, Dk), m (B, H) in
float32. sLSTM: g (B, T, H, 4, Dh) in gate order (i, f, z, o), R (H, Dh, 4, Dh),
state (c, n, m, h) each (B, H, Dh). See the spec for the maths.
"""

from __future__ import annotations

import torch

from xlstm_rl.kernels import validate
from xlstm_rl.kernels.mlstm.chunkwise import mlstm_sequence_chunkwise
from xlstm_rl.kernels.mlstm.parallel import mlstm_sequence_parallel
from xlstm_rl.kernels.mlstm.reference import (
    empty_state,
    mlstm_sequence_reference,
    mlstm_step_reference,
)
from xlstm_rl.kernels.registry import backends, register_backend, resolve
from xlstm_rl.kernels.slstm.bptt import slstm_sequence_bptt
from xlstm_rl.kernels.slstm.reference import (
    slstm_empty_state,
    slstm_sequence_reference,
    slstm_step_reference,
)

register_backend("mlstm_sequence", "reference", mlstm_sequence_reference)
register_backend("mlstm_sequence", "parallel", mlstm_sequence_parallel)
register_backend("mlstm_sequence", "chunkwise", mlstm_sequence_chunkwise)
register_backend("mlstm_step", "reference", mlstm_step_reference)
register_backend("slstm_sequence", "reference", slstm_sequence_reference)
register_backend("slstm_sequence", "bptt", slstm_sequence_bptt)
register_backend("slstm_step", "reference", slstm_step_reference)


def mlstm_sequence(q, k, v, i, f, *, resets=None, state=None, backend="auto", chunk_size=64):
    """Run the mLSTM over a sequence. Returns h (B, H, T, Dv) and the final state (C, n, m)."""
    B, H, T, Dk, Dv = validate.check_mlstm_inputs(q, k, v, i, f, time_axis=True)
    if T < 1:
        raise ValueError("mlstm_sequence needs T >= 1")
    chunk_size = _chunk_size(chunk_size)
    validate.check_mask("resets", resets, (B, T), "B T")
    validate.check_mlstm_state(state, B, H, Dk, Dv)
    _same_device(q, k, v, i, f, resets, state)
    fn = resolve("mlstm_sequence", backend, q)
    return fn(q, k, v, i, f, resets=resets, state=state, chunk_size=chunk_size)


def mlstm_step(q, k, v, i, f, state, *, reset=None, backend="auto", out=None):
    """One recurrent mLSTM step. Returns h (B, H, Dv) and the new state (C, n, m).

    `out=(h, (C, n, m))` writes into preallocated buffers (they may be `state` itself),
    so an acting loop allocates nothing and can be captured in a CUDA graph."""
    B, H, _, Dk, Dv = validate.check_mlstm_inputs(q, k, v, i, f, time_axis=False)
    validate.check_mask("reset", reset, (B,), "B")
    validate.check_mlstm_state(state, B, H, Dk, Dv)
    if out is not None:
        _check_out(out, B, H, Dk, Dv)
    _same_device(q, k, v, i, f, reset, state, *(() if out is None else (out[0], out[1])),
                 mask_name="reset")  # fmt: skip
    return resolve("mlstm_step", backend, q)(q, k, v, i, f, state, reset=reset, out=out)


def _chunk_size(chunk_size) -> int:
    """An int >= 1 (numpy and torch integers too, not bool), for every backend alike."""
    size = validate.as_int(chunk_size)
    if size is None or size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    return size


def _check_out(out, B: int, H: int, Dk: int, Dv: int) -> None:
    """``out=(h, (C, n, m))``: floating buffers of the step's shapes, none an expanded view
    (one element behind several indices would take several writes)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"out must be a tuple (h, (C, n, m)), got {type(out).__name__}")
    h_out, state_out = out
    validate.check_float("out h", h_out)
    validate.check_shape("out h", h_out, (B, H, Dv), "B H Dv")
    validate.check_mlstm_state(state_out, B, H, Dk, Dv)
    for name, buffer in zip(("out h", "out C", "out n", "out m"), (h_out, *state_out)):
        if any(stride == 0 and size > 1 for stride, size in zip(buffer.stride(), buffer.shape)):
            raise ValueError(f"{name} must not be an expanded view (a stride of 0)")


def _same_device(q, k, v, i, f, resets, state, h_out=None, state_out=None,
                 mask_name="resets") -> None:  # fmt: skip
    validate.check_devices(
        "q", q, ("k", k), ("v", v), ("i", i), ("f", f), (mask_name, resets), ("state", state),
        ("out h", h_out), ("out state", state_out),
    )  # fmt: skip


def _check_slstm(g: torch.Tensor, R: torch.Tensor, time_axis: bool) -> tuple[int, ...]:
    validate.check_float("g", g)
    validate.check_float("R", R)
    if time_axis:
        validate.check_shape("g", g, (None, None, None, 4, None), "B T H 4 Dh")
        B, T, H, _, Dh = g.shape
    else:
        validate.check_shape("g", g, (None, None, 4, None), "B H 4 Dh")
        B, H, _, Dh = g.shape
        T = 1
    validate.check_shape("R", R, (H, Dh, 4, Dh), "H Dh 4 Dh")
    return B, T, H, Dh


def _check_slstm_state(state, B: int, H: int, Dh: int) -> None:
    if state is None:
        return
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise TypeError("sLSTM state must be a tuple (c, n, m, h) or None")
    for name, s in zip("cnmh", state):
        validate.check_float(f"state {name}", s)
        validate.check_shape(f"state {name}", s, (B, H, Dh), "B H Dh")


def slstm_sequence(g, R, *, resets=None, state=None, backend="auto"):
    """Run the sLSTM over a sequence. Returns h (B, T, H, Dh) and the state (c, n, m, h)."""
    B, T, H, Dh = _check_slstm(g, R, time_axis=True)
    if T < 1:
        raise ValueError("slstm_sequence needs T >= 1")
    validate.check_mask("resets", resets, (B, T), "B T")
    _check_slstm_state(state, B, H, Dh)
    validate.check_devices("g", g, ("R", R), ("resets", resets), ("state", state))
    return resolve("slstm_sequence", backend, g)(g, R, resets=resets, state=state)


def slstm_step(g, R, state, *, reset=None, backend="auto"):
    """One sLSTM step. g (B, H, 4, Dh). Returns h (B, H, Dh) and the state (c, n, m, h)."""
    B, _, H, Dh = _check_slstm(g, R, time_axis=False)
    validate.check_mask("reset", reset, (B,), "B")
    _check_slstm_state(state, B, H, Dh)
    validate.check_devices("g", g, ("R", R), ("reset", reset), ("state", state))
    return resolve("slstm_step", backend, g)(g, R, state, reset=reset)


__all__ = [
    "backends",
    "empty_state",
    "mlstm_sequence",
    "mlstm_sequence_chunkwise",
    "mlstm_sequence_parallel",
    "mlstm_sequence_reference",
    "mlstm_step",
    "mlstm_step_reference",
    "register_backend",
    "slstm_empty_state",
    "slstm_sequence",
    "slstm_sequence_bptt",
    "slstm_sequence_reference",
    "slstm_step",
    "slstm_step_reference",
]
from xlstm_rl.kernels import triton_backends  # noqa: E402,F401  (registers "triton")
