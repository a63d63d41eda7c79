"""Triton backends: what the kernels share, and their registration with the registry.

The kernels run on CUDA tensors, or on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, set before triton is imported; the tests do this). Without
triton installed the backends are still registered, so asking for them by name
says what to install instead of "unknown backend".

Set XLSTM_RL_TRITON_DEBUG=1 (or `debug_nan_outputs(True)`) to fill every output
buffer with NaN before a kernel writes it, so an output a kernel forgot to write
shows up as NaN instead of stale memory.
"""

from __future__ import annotations

import os

import torch

from xlstm_rl.kernels.registry import register_backend

try:
    import triton
    import triton.language as tl
except ImportError:  # the `triton` extra is not installed
    triton = None

_INSTALL_HINT = "triton is not installed: pip install xlstm-rl[triton]"
_DEBUG_NAN = os.environ.get("XLSTM_RL_TRITON_DEBUG", "0") == "1"


def debug_nan_outputs(enabled: bool) -> None:
    """Fill fresh output buffers with NaN (tests), or leave them uninitialised (default)."""
    global _DEBUG_NAN
    _DEBUG_NAN = enabled


def empty(*shape: int, device, dtype=torch.float32) -> torch.Tensor:
    """torch.empty, NaN-filled while debugging so unwritten outputs cannot pass a test."""
    out = torch.empty(*shape, device=device, dtype=dtype)
    return out.fill_(float("nan")) if _DEBUG_NAN else out


def block(d: int, lo: int = 16, hi: int = 64) -> int:
    """Power-of-two tile size covering d, clamped to [lo, hi] (tl.dot needs >= 16)."""
    return max(lo, min(hi, triton.next_power_of_2(d)))


def unavailable(x: torch.Tensor) -> str | None:
    """None when the Triton kernels can run on x, else what to do about it."""
    if triton is None:
        return _INSTALL_HINT
    if x.dtype == torch.float64:
        return "the Triton kernels take float32/bfloat16/float16; use a torch backend for float64"
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"inputs are on {x.device.type}; the Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1 set before triton is imported, for tests on the CPU)"
        )
    return None


if triton is not None:
    _INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")

    @triton.jit
    def logsigmoid(x):
        """log(sigmoid(x)) in float32 with log1p accuracy: for f~ near +10 the forget
        log-gate is about -4.5e-5, which a plain log(1 + e) would round to 0."""
        e = tl.exp(-tl.abs(x))
        u = 1.0 + e
        log1p = tl.where(u == 1.0, e, e * tl.log(u) / (u - 1.0))
        return tl.minimum(x, 0.0) - log1p

    @triton.jit
    def dot(a, b, IEEE: tl.constexpr):
        """a @ b of float32 tiles with float32 accumulation: exact products when IEEE
        (float32 inputs), else TF32 tensor cores (bfloat16/float16 inputs). Not bfloat16
        operands: rounding the float32 chunk states to bfloat16 breaks the cancellation
        the gate gradients rely on (d f~ errors of ~6e-2 against ~7e-3 with TF32)."""
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        elif _INTERPRET:
            # the interpreter multiplies in float32: cut the operands to TF32's 10-bit
            # mantissa (truncation, the coarser of the GPU's conversions)
            a = (a.to(tl.uint32, bitcast=True) >> 13 << 13).to(tl.float32, bitcast=True)
            b = (b.to(tl.uint32, bitcast=True) >> 13 << 13).to(tl.float32, bitcast=True)
            return tl.dot(a, b, input_precision="ieee")
        else:
            return tl.dot(a, b, input_precision="tf32")

    @triton.jit
    def rounded(x, DT: tl.constexpr):
        """float32 x ready to be stored as DT. The interpreter truncates float32 ->
        bfloat16 where the GPU rounds to nearest even, so there it rounds by hand."""
        if _INTERPRET and DT == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            return bits.to(tl.float32, bitcast=True)
        else:
            return x


def _missing(*args, **kwargs):
    raise RuntimeError(_INSTALL_HINT)


def _register() -> None:
    ops = ("mlstm_sequence", "mlstm_step", "slstm_sequence", "slstm_step")
    if triton is None:
        for op in ops:
            register_backend(op, "triton", _missing, unavailable)
        return
    from xlstm_rl.kernels.mlstm.triton_chunkwise import mlstm_sequence_triton
    from xlstm_rl.kernels.mlstm.triton_step import mlstm_step_triton
    from xlstm_rl.kernels.slstm.triton_sequence import slstm_sequence_triton
    from xlstm_rl.kernels.slstm.triton_step import slstm_step_triton

    fns = (mlstm_sequence_triton, mlstm_step_triton, slstm_sequence_triton, slstm_step_triton)
    for op, fn in zip(ops, fns):
        # torch.compile does not trace into these (dynamo failed on the chunkwise kernels'
        # launch, torch 2.11, H100): a compiled caller breaks its graph around each call
        # and runs the kernel as it is, forward and backward.
        register_backend(op, "triton", torch.compiler.disable(fn), unavailable)


_register()
