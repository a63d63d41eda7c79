"""sLSTM reference: scalar memory with memory mixing through per-head recurrent weights.

Batch-first: g (B, T, H, 4, Dh) holds the input-side pre-activations W x_t + b in
gate order (i, f, z, o); R (H, Dh, 4, Dh) is the block-diagonal recurrent matrix,
one (Dh -> 4 Dh) block per head; the state is (c, n, m, h), each (B, H, Dh).
The sLSTM cannot be parallelised over time, so its sequence form is this loop.
A row's state is "empty" (all zeros, n = 0) at the start and after a reset; n >= 1
otherwise, so n == 0 marks it exactly, per row and unit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SState = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


F_EXP_CAP = 80.0  # e^80 ~ 5.5e34, below float32's largest number (~3.4e38)


def slstm_empty_state(B: int, H: int, Dh: int, device, dtype=torch.float32) -> SState:
    return tuple(torch.zeros(B, H, Dh, device=device, dtype=dtype) for _ in range(4))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def slstm_step_reference(
    g: torch.Tensor,  # (B, H, 4, Dh)
    R: torch.Tensor,  # (H, Dh, 4, Dh)
    state: SState | None,
    *,
    reset: torch.Tensor | None = None,  # (B,) bool
) -> tuple[torch.Tensor, SState]:
    B, H, _, Dh = g.shape
    dt = _compute_dtype(g)
    if state is None:
        state = slstm_empty_state(B, H, Dh, g.device, dt)
    c, n, m, h = (s.to(dt) for s in state)
    m = m.detach()  # the stabiliser carries no gradient, the incoming one neither
    if reset is not None:
        keep = (~reset).to(dt)[:, None, None]
        c, n, m, h = c * keep, n * keep, m * keep, h * keep
    # h R per head: one bmm over heads (about 1.7x faster than the same einsum on the CPU)
    rec = torch.bmm(h.transpose(0, 1), R.to(dt).flatten(2))  # (H, B, 4 Dh)
    pre = g.to(dt) + rec.transpose(0, 1).view(B, H, 4, Dh)  # (B, H, 4, Dh)
    i_pre, f_pre, z_pre, o_pre = pre.unbind(2)
    log_f = F.logsigmoid(f_pre)
    empty = n == 0
    m_new = torch.where(empty, i_pre, torch.maximum(log_f + m, i_pre)).detach()
    i_s = torch.exp(i_pre - m_new)
    # the exponent is <= 0 except in an empty row (m_new = i~), where f' multiplies
    # c = n = 0: capped there, an i~ below -88 cannot overflow f' to inf and 0 * inf to NaN
    f_s = torch.exp((log_f + m - m_new).clamp(max=F_EXP_CAP))
    c = f_s * c + i_s * torch.tanh(z_pre)
    n = f_s * n + i_s
    h = torch.sigmoid(o_pre) * c / n
    return h.to(g.dtype), (c, n, m_new, h)


def slstm_sequence_reference(
    g: torch.Tensor,  # (B, T, H, 4, Dh)
    R: torch.Tensor,  # (H, Dh, 4, Dh)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: SState | None = None,
) -> tuple[torch.Tensor, SState]:
    T = g.shape[1]
    if T == 0:
        raise ValueError("slstm_sequence needs T >= 1")
    hs = []
    # unbind, not g[:, t]: the backward of T selects would build T zero tensors of g's
    # full size (quadratic in T); unbind's backward stacks the T gradients once
    resets_t = [None] * T if resets is None else resets.unbind(1)
    for g_t, reset_t in zip(g.unbind(1), resets_t):
        h_t, state = slstm_step_reference(g_t, R, state, reset=reset_t)
        hs.append(h_t)
    return torch.stack(hs, dim=1), state  # (B, T, H, Dh)
