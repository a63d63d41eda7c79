"""mLSTM recurrent step in Triton: the acting path, one launch for every (B, H).

Batch-first: q, k (B, H, Dk), v (B, H, Dv), i, f (B, H), reset (B,) bool; state
(C, n, m) float32 (B, H, Dk, Dv), (B, H, Dk), (B, H). The maths is the spec's
"Stabilised recurrent step", as in `mlstm_step_reference`.

With `out=(h, (C, n, m))` the step writes into preallocated buffers and allocates
nothing, so an acting loop can be captured in a CUDA graph. The buffers may be the
state itself (update in place): each program owns one (b, h) and reads every
element of its state before writing it. When autograd needs gradients the step
goes through `_MLSTMStep`, whose backward recomputes the step with the torch
reference and differentiates that (one step is cheap; training uses the
chunkwise sequence kernels).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from xlstm_rl.kernels.mlstm.reference import State, mlstm_step_reference
from xlstm_rl.kernels.triton_backends import empty, logsigmoid, rounded


@triton.jit
def _step_kernel(
    q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, r_ptr, C_ptr, n_ptr, m_ptr,
    h_ptr, Co_ptr, no_ptr, mo_ptr, scale,
    H, Dk, Dv, sq_b, sq_h, sk_b, sk_h, sv_b, sv_h, si_b, si_h, sf_b, sf_h, sr_b,
    BK: tl.constexpr, BV: tl.constexpr, HAS_RESET: tl.constexpr, HAS_STATE: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    hh = bh % H
    q_row = q_ptr + b * sq_b + hh * sq_h
    k_row = k_ptr + b * sk_b + hh * sk_h
    i_pre = tl.load(i_ptr + b * si_b + hh * si_h).to(tl.float32)
    f_pre = tl.load(f_ptr + b * sf_b + hh * sf_h).to(tl.float32)
    if HAS_RESET:
        dead = tl.load(r_ptr + b * sr_b) != 0
    else:
        dead = False
    if HAS_STATE:
        m_old = tl.where(dead, 0.0, tl.load(m_ptr + bh))
    else:
        m_old = tl.full([], 0.0, tl.float32)
    log_f = logsigmoid(f_pre)
    m_new = tl.maximum(log_f + m_old, i_pre)
    f_s = tl.exp(log_f + m_old - m_new)
    i_s = tl.exp(i_pre - m_new)

    q_n = tl.zeros([BK], dtype=tl.float32)
    for k0 in range(0, Dk, BK):
        dk = k0 + tl.arange(0, BK)
        mk = dk < Dk
        q = tl.load(q_row + dk, mask=mk, other=0.0).to(tl.float32)
        k = tl.load(k_row + dk, mask=mk, other=0.0).to(tl.float32)
        if HAS_STATE:
            n = tl.where(dead, 0.0, tl.load(n_ptr + bh * Dk + dk, mask=mk, other=0.0))
            n = f_s * n + i_s * k
        else:
            n = i_s * k
        tl.store(no_ptr + bh * Dk + dk, n, mask=mk)
        q_n += q * n
    den = tl.maximum(tl.abs(tl.sum(q_n, 0) * scale), tl.exp(-m_new))

    for v0 in range(0, Dv, BV):
        dv = v0 + tl.arange(0, BV)
        mv = dv < Dv
        v = tl.load(v_ptr + b * sv_b + hh * sv_h + dv, mask=mv, other=0.0).to(tl.float32)
        num = tl.zeros([BV], dtype=tl.float32)
        for k0 in range(0, Dk, BK):
            dk = k0 + tl.arange(0, BK)
            mk = dk < Dk
            q = tl.load(q_row + dk, mask=mk, other=0.0).to(tl.float32)
            k = tl.load(k_row + dk, mask=mk, other=0.0).to(tl.float32)
            tile = bh * Dk * Dv + dk[:, None] * Dv + dv[None, :]
            mask = mk[:, None] & mv[None, :]
            C = i_s * k[:, None] * v[None, :]
            if HAS_STATE:
                C_old = tl.where(dead, 0.0, tl.load(C_ptr + tile, mask=mask, other=0.0))
                C += f_s * C_old
            tl.store(Co_ptr + tile, C, mask=mask)
            num += tl.sum(q[:, None] * C, 0)
        h = num * scale / den
        tl.store(h_ptr + bh * Dv + dv, rounded(h, h_ptr.dtype.element_ty), mask=mv)
    tl.store(mo_ptr + bh, m_new)


def _launch(q, k, v, i, f, state, reset, out) -> tuple[torch.Tensor, State]:
    B, H, Dk = q.shape
    Dv = v.shape[-1]
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if out is None:
        dev = q.device
        h = empty(B, H, Dv, device=dev, dtype=v.dtype)
        C, n, m = (
            empty(B, H, Dk, Dv, device=dev),
            empty(B, H, Dk, device=dev),
            empty(B, H, device=dev),
        )
    else:
        h, (C, n, m) = out
        _check_out(h, (B, H, Dv), v.dtype, "h")
        for name, x, shape in (("C", C, (B, H, Dk, Dv)), ("n", n, (B, H, Dk)), ("m", m, (B, H))):
            _check_out(x, shape, torch.float32, name)
    C0 = n0 = m0 = None
    if state is not None:
        C0, n0, m0 = (s.float().contiguous() for s in state)
    BK = min(64, triton.next_power_of_2(Dk))
    BV = min(64, triton.next_power_of_2(Dv))
    _step_kernel[(B * H,)](
        q, k, v, i, f, reset, C0, n0, m0, h, C, n, m, 1.0 / math.sqrt(Dk), H, Dk, Dv,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        i.stride(0), i.stride(1), f.stride(0), f.stride(1), 0 if reset is None else reset.stride(0),
        BK=BK, BV=BV, HAS_RESET=reset is not None, HAS_STATE=state is not None,
    )  # fmt: skip
    return h, (C, n, m)


def _check_out(x: torch.Tensor, shape: tuple, dtype: torch.dtype, name: str) -> None:
    if tuple(x.shape) != shape or x.dtype != dtype or not x.is_contiguous():
        raise ValueError(
            f"out {name} must be a contiguous {dtype} tensor of shape {shape}, "
            f"got {x.dtype} {tuple(x.shape)}{'' if x.is_contiguous() else ' (not contiguous)'}"
        )


class _MLSTMStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, reset):
        state = None if C0 is None else (C0, n0, m0)
        h, (C, n, m) = _launch(q, k, v, i, f, state, reset, None)
        ctx.save_for_backward(q, k, v, i, f, C0, n0, m0, reset)
        ctx.mark_non_differentiable(m)
        return h, C, n, m

    @staticmethod
    def backward(ctx, dh, dC, dn, _dm):
        q, k, v, i, f, C0, n0, m0, reset = ctx.saved_tensors
        inputs = [x.detach().requires_grad_(need) for x, need in
                  zip((q, k, v, i, f), ctx.needs_input_grad[:5])]  # fmt: skip
        state = None
        if C0 is not None:
            state = tuple(s.detach().requires_grad_(need) for s, need in
                          zip((C0, n0, m0), ctx.needs_input_grad[5:8]))  # fmt: skip
        leaves = [*inputs, *(state or (None, None, None))]
        wrt = [x for x in leaves if x is not None and x.requires_grad]
        with torch.enable_grad():
            h, (C, n, _) = mlstm_step_reference(*inputs, state, reset=reset)
            pairs = [(t, g) for t, g in ((h, dh), (C, dC), (n, dn)) if g is not None]
            grads = torch.autograd.grad([t for t, _ in pairs], wrt, [g for _, g in pairs],
                                        allow_unused=True)  # fmt: skip
            grads = iter(grads)  # the incoming m is unused: it carries no gradient
        found = [next(grads) if x is not None and x.requires_grad else None for x in leaves]
        return (*found, None)


def mlstm_step_triton(
    q: torch.Tensor,  # (B, H, Dk)
    k: torch.Tensor,  # (B, H, Dk)
    v: torch.Tensor,  # (B, H, Dv)
    i: torch.Tensor,  # (B, H)
    f: torch.Tensor,  # (B, H)
    state: State | None,
    *,
    reset: torch.Tensor | None = None,  # (B,) bool
    out: tuple[torch.Tensor, State] | None = None,
) -> tuple[torch.Tensor, State]:
    """One mLSTM step for all (B, H) in one launch. Returns h (B, H, Dv) in v's dtype
    and the new state (C, n, m) in float32; with `out=(h, (C, n, m))` writes into those
    buffers (which may be `state`'s own tensors) and returns them."""
    tensors = (q, k, v, i, f, *(state or ()))
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        if out is not None:
            raise ValueError(
                "out= writes in place and cannot be used when autograd needs gradients"
            )
        C0 = n0 = m0 = None
        if state is not None:
            C0, n0, m0 = (s.float() for s in state)
        h, C, n, m = _MLSTMStep.apply(q, k, v, i, f, C0, n0, m0, reset)
        return h, (C, n, m)
    return _launch(q, k, v, i, f, state, reset, out)
