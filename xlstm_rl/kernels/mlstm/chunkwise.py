"""mLSTM chunkwise form: linear in T, the training path on the CPU.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T).
T is split into chunks of L steps (the last one may be partial). The state
(C, n, m) is carried across chunks by the recurrent rule applied to a whole chunk;
inside a chunk every output comes from the parallel form plus the carried state,
scaled by the decay since the chunk start. Resets enter as masks: pairs with a
reset between them are masked, and a chunk's carried state is dead from its
first reset on. Gradients come from autograd; the stabilisers are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xlstm_rl.kernels.mlstm.parallel import segment_log_decay
from xlstm_rl.kernels.mlstm.reference import State, prepare

# Padded steps: no input (i = -1e30 gives weight exp(-1e30 - m) = 0) and no decay.
_NO_INPUT = -1e30


def _pad_time(x: torch.Tensor, pad: int, value: float, dim: int) -> torch.Tensor:
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def mlstm_sequence_chunkwise(
    q: torch.Tensor,  # (B, H, T, Dk)
    k: torch.Tensor,  # (B, H, T, Dk)
    v: torch.Tensor,  # (B, H, T, Dv)
    i: torch.Tensor,  # (B, H, T)
    f: torch.Tensor,  # (B, H, T)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: State | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, State]:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    B, H, T, Dk = q.shape
    Dv = v.shape[-1]
    (q, k, v, i, f), (C_prev, n_prev, m_prev), out_dtype = prepare(q, k, v, i, f, state)

    L = min(chunk_size, T)
    NC = -(-T // L)
    pad = NC * L - T
    log_f = _pad_time(F.logsigmoid(f), pad, 0.0, 2).view(B, H, NC, L)
    i = _pad_time(i, pad, _NO_INPUT, 2).view(B, H, NC, L)
    q, k, v = (_pad_time(x, pad, 0.0, 2).view(B, H, NC, L, -1) for x in (q, k, v))

    # n rides along as one more column of C: a value of 1 for every key
    v = torch.cat([v, v.new_ones(B, H, NC, L, 1)], dim=-1)  # (B, H, NC, L, Dv + 1)
    Cn = torch.cat([C_prev, n_prev[..., None]], dim=-1)  # (B, H, Dk, Dv + 1)

    log_d = segment_log_decay(log_f) + i[..., None, :]  # (B, H, NC, L, L)
    if resets is not None:
        r = _pad_time(resets, pad, False, 1).view(B, 1, NC, L)
        episode = r.long().cumsum(-1)  # resets seen so far inside the chunk
        log_d = log_d.masked_fill(episode[..., :, None] != episode[..., None, :], float("-inf"))
        alive = episode == 0  # (B, 1, NC, L): carried state still counts at t
    else:
        alive = torch.ones(1, 1, NC, L, dtype=torch.bool, device=q.device)
    decay_in = log_f.cumsum(-1)  # (B, H, NC, L): sum of log_f over [chunk start, t]

    # each chunk's own keys and values, decayed to the chunk end (the last row of log_d)
    log_w_end = log_d[..., -1, :]  # (B, H, NC, L)
    m_local = log_w_end.amax(-1).detach()  # (B, H, NC)
    w_end = torch.exp(log_w_end - m_local[..., None])
    kv_chunk = (k * w_end[..., None]).transpose(-1, -2) @ v  # (B, H, NC, Dk, Dv + 1)
    log_keep = decay_in[..., -1].masked_fill(~alive[..., -1], float("-inf"))  # (B, H, NC)

    # carry the state across chunks: states[c] is the state entering chunk c
    states, m_states = [], []
    for kv_c, log_keep_c, m_local_c in zip(
        kv_chunk.unbind(2), log_keep.unbind(2), m_local.unbind(2)
    ):
        states.append(Cn)
        m_states.append(m_prev)
        m_next = torch.maximum(log_keep_c + m_prev, m_local_c).detach()
        keep = torch.exp(log_keep_c + m_prev - m_next)
        new = torch.exp(m_local_c - m_next)
        Cn = keep[..., None, None] * Cn + new[..., None, None] * kv_c
        m_prev = m_next
    Cn_in = torch.stack(states, dim=2)  # (B, H, NC, Dk, Dv + 1)
    m_in = torch.stack(m_states, dim=2)  # (B, H, NC)

    # outputs: intra-chunk parallel form plus the carried state
    log_state = (decay_in + m_in[..., None]).masked_fill(~alive, float("-inf"))  # (B, H, NC, L)
    m = torch.maximum(log_d.amax(-1), log_state).detach()
    scores = (q @ k.transpose(-1, -2)) * torch.exp(log_d - m[..., None])  # (B, H, NC, L, L)
    out = scores @ v + torch.exp(log_state - m)[..., None] * (q @ Cn_in)  # (..., L, Dv + 1)
    num, den = out[..., :Dv], out[..., Dv]
    # one reciprocal per step and a broadcast multiply: cheaper than dividing every entry
    h = num * torch.maximum(den.abs(), torch.exp(-m)).reciprocal()[..., None]
    h = h.reshape(B, H, NC * L, Dv)[:, :, :T]
    C_prev, n_prev = Cn[..., :Dv], Cn[..., Dv]
    return h.to(out_dtype), (C_prev, n_prev, m_prev)
