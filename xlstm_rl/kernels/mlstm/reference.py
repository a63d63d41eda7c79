"""mLSTM reference: the stabilised recurrent step and the step loop over a sequence.

Batch-first throughout: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T).
This is the spec's "stabilised recurrent step" written as plainly as possible; the
parallel, chunkwise and Triton forms are tested against it. The compute dtype is
float32 (float64 when the inputs are float64, for gradient checks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def empty_state(B: int, H: int, Dk: int, Dv: int, device, dtype=torch.float32) -> State:
    return (
        torch.zeros(B, H, Dk, Dv, device=device, dtype=dtype),
        torch.zeros(B, H, Dk, device=device, dtype=dtype),
        torch.zeros(B, H, device=device, dtype=dtype),
    )


def prepare(q, k, v, i, f, state: State | None):
    """Shared preamble of the sequence forms: inputs in the compute dtype with q scaled
    by 1/sqrt(Dk), the incoming state (empty if None) with its m detached, and h's dtype."""
    B, H, _, Dk = q.shape
    dt = compute_dtype(q)
    if state is None:
        state = empty_state(B, H, Dk, v.shape[-1], q.device, dt)
    C, n, m = (s.to(dt) for s in state)
    out_dtype = v.dtype
    q, k, v, i, f = (x.to(dt) for x in (q, k, v, i, f))
    # the stabiliser carries no gradient, the incoming one neither
    return (q * Dk**-0.5, k, v, i, f), (C, n, m.detach()), out_dtype


def _as(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def mlstm_step_reference(
    q: torch.Tensor,  # (B, H, Dk)
    k: torch.Tensor,  # (B, H, Dk)
    v: torch.Tensor,  # (B, H, Dv)
    i: torch.Tensor,  # (B, H)
    f: torch.Tensor,  # (B, H)
    state: State | None,
    *,
    reset: torch.Tensor | None = None,  # (B,) bool
    out: tuple[torch.Tensor, State] | None = None,  # buffers to write (h, (C, n, m)) into
) -> tuple[torch.Tensor, State]:
    B, H, Dk = q.shape
    Dv = v.shape[-1]
    dt = compute_dtype(q)
    if state is None:
        state = empty_state(B, H, Dk, Dv, q.device, dt)
    C, n, m = (_as(s, dt) for s in state)
    m = m.detach()  # the stabiliser carries no gradient, the incoming one neither
    out_dtype = v.dtype
    q, k, v, i, f = (_as(x, dt) for x in (q, k, v, i, f))

    log_f = F.logsigmoid(f)
    keep = None
    if reset is not None:
        # A reset row starts from the empty state (C, n, m) = 0: its m is 0 and its old C
        # and n are weighted by 0, the same as zeroing them first (the state is finite).
        keep = (~reset).to(dt)[:, None]  # (B, 1)
        m = m * keep
    decayed_m = log_f + m
    m_new = torch.maximum(decayed_m, i).detach()  # the stabiliser carries no gradient
    f_s = torch.exp(decayed_m - m_new)
    if keep is not None:
        f_s = f_s * keep
    i_s = torch.exp(i - m_new)
    k_in = i_s[..., None] * k  # (B, H, Dk)
    C = torch.addcmul(k_in[..., :, None] * v[..., None, :], f_s[..., None, None], C)
    n = torch.addcmul(k_in, f_s[..., None], n)
    q_s = q / math.sqrt(Dk)
    num = (q_s[..., None, :] @ C).squeeze(-2)  # (B, H, Dv)
    den = torch.maximum((q_s * n).sum(-1).abs(), torch.exp(-m_new))
    h = num / den[..., None]
    if out is not None:  # the same keyword as the Triton step, which writes in place
        for buffer, value in zip((out[0], *out[1]), (h, C, n, m_new)):
            buffer.copy_(value)
        return out
    return _as(h, out_dtype), (C, n, m_new)


def mlstm_sequence_reference(
    q: torch.Tensor,  # (B, H, T, Dk)
    k: torch.Tensor,  # (B, H, T, Dk)
    v: torch.Tensor,  # (B, H, T, Dv)
    i: torch.Tensor,  # (B, H, T)
    f: torch.Tensor,  # (B, H, T)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: State | None = None,
    chunk_size: int = 64,  # unused: kept so every backend has one signature
) -> tuple[torch.Tensor, State]:
    T = q.shape[2]
    if T == 0:
        raise ValueError("mlstm_sequence needs T >= 1")
    hs = []
    # unbind, not q[:, :, t]: the backward of T selects would build T zero tensors of
    # each input's full size (quadratic in T); unbind's backward stacks them once
    resets_t = [None] * T if resets is None else resets.unbind(1)
    steps = zip(q.unbind(2), k.unbind(2), v.unbind(2), i.unbind(2), f.unbind(2), resets_t)
    for q_t, k_t, v_t, i_t, f_t, reset_t in steps:
        h_t, state = mlstm_step_reference(q_t, k_t, v_t, i_t, f_t, state, reset=reset_t)
        hs.append(h_t)
    return torch.stack(hs, dim=2), state
