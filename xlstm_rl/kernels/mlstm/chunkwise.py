"""mLSTM chunkwise form: linear in T, the training path on the CPU.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T).
T is split into chunks of L steps (the last one may be partial). The state
(C, n, m) is carried across chunks by the recurrent rule applied to a whole chunk;
inside a chunk every output comes from the parallel form plus the carried state,
scaled by the decay since the chunk start. Resets enter as masks: pairs with a
reset between them are masked, and a chunk's carried state is dead from its
first reset on.

The backward pass is written by hand (an autograd.Function): a few batched matmuls
per chunk instead of autograd's tape of small ops. The stabilisers carry no
gradient, so every exp(. - m) factor is a constant of the backward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xlstm_rl.kernels.mlstm.parallel import _selector, segment_log_decay
from xlstm_rl.kernels.mlstm.reference import State, prepare

# Padded steps: no input (i = -1e30 gives weight exp(-1e30 - m) = 0) and no decay.
_NO_INPUT = -1e30


def _pad_time(x: torch.Tensor, pad: int, value: float, dim: int) -> torch.Tensor:
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_full(shape, value)], dim=dim)


def _chunks(x: torch.Tensor, L: int, pad: int, value: float = 0.0) -> torch.Tensor:
    """(B, H, T, ...) -> contiguous (B, H, NC, L, ...), padded at the end of time."""
    x = _pad_time(x, pad, value, 2)
    B, H, TP = x.shape[:3]
    return x.reshape(B, H, TP // L, L, *x.shape[3:]).contiguous()


def _unchunk(x: torch.Tensor, T: int) -> torch.Tensor:
    """(B, H, NC, L, ...) -> (B, H, T, ...), dropping the padding."""
    B, H, NC, L = x.shape[:4]
    return x.reshape(B, H, NC * L, *x.shape[4:])[:, :, :T]


class _Chunkwise(torch.autograd.Function):
    """h and the final (C, n, m) from scaled q, k, v, gates, the incoming state and resets."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, L):
        B, H, T, Dk = q.shape
        NC = -(-T // L)
        pad = NC * L - T
        q, k, v = (_chunks(x, L, pad) for x in (q, k, v))  # (B, H, NC, L, D)
        log_f = _chunks(F.logsigmoid(f), L, pad)  # (B, H, NC, L)
        log_d = segment_log_decay(log_f).add_(_chunks(i, L, pad, _NO_INPUT)[..., None, :])
        if resets is not None:
            episode = _chunks(_pad_time(resets, pad, False, 1)[:, None], L, 0).long().cumsum(-1)
            log_d.masked_fill_(episode[..., :, None] != episode[..., None, :], float("-inf"))
            alive = episode == 0  # (B, 1, NC, L): the carried state still counts at t
        else:
            alive = None
        decay_in = log_f.cumsum(-1)  # (B, H, NC, L): sum of log_f over [chunk start, t]

        # each chunk's own keys and values, decayed to the chunk end (the last row of log_d)
        m_local = log_d[..., -1, :].amax(-1)  # (B, H, NC)
        w_end = torch.exp(log_d[..., -1, :] - m_local[..., None])  # (B, H, NC, L)
        kw = k * w_end[..., None]
        kv_C, kv_n = kw.transpose(-1, -2) @ v, kw.sum(-2)  # (B, H, NC, Dk, Dv), (.., Dk)
        log_keep = decay_in[..., -1]  # (B, H, NC)
        if alive is not None:
            log_keep = log_keep.masked_fill(~alive[..., -1], float("-inf"))

        # carry the state across chunks: C_in[:, :, c] is the state entering chunk c
        C_in = q.new_empty(kv_C.shape)
        n_in = q.new_empty(kv_n.shape)
        m_in, keep, new = (q.new_empty(B, H, NC) for _ in range(3))
        C, n, m_prev = C0, n0, m0
        for c in range(NC):
            C_in[:, :, c], n_in[:, :, c], m_in[:, :, c] = C, n, m_prev
            m_next = torch.maximum(log_keep[..., c] + m_prev, m_local[..., c])
            keep[..., c] = torch.exp(log_keep[..., c] + m_prev - m_next)
            new[..., c] = torch.exp(m_local[..., c] - m_next)
            C = keep[..., c, None, None] * C + new[..., c, None, None] * kv_C[:, :, c]
            n = keep[..., c, None] * n + new[..., c, None] * kv_n[:, :, c]
            m_prev = m_next

        # outputs: intra-chunk parallel form plus the carried state
        log_state = decay_in + m_in[..., None]  # (B, H, NC, L)
        if alive is not None:
            log_state.masked_fill_(~alive, float("-inf"))
        m = torch.maximum(log_d.amax(-1), log_state)  # (B, H, NC, L)
        decay = torch.exp(log_d.sub_(m[..., None]))  # (B, H, NC, L, L)
        scores = (q @ k.transpose(-1, -2)).mul_(decay)
        w_state = torch.exp(log_state - m)
        q_C = q @ C_in  # (B, H, NC, L, Dv)
        q_n = (q * n_in[..., None, :]).sum(-1)  # (B, H, NC, L)
        num = (scores @ v).addcmul_(q_C, w_state[..., None])
        den = scores.sum(-1).addcmul_(q_n, w_state)
        # one reciprocal per step and a broadcast multiply: cheaper than dividing every entry
        floor = torch.exp(-m)
        scale = torch.maximum(den.abs(), floor).reciprocal_()
        h = num * scale[..., None]  # (B, H, NC, L, Dv)

        ctx.save_for_backward(q, k, v, f, decay, scores, w_state, w_end, kw, q_C, q_n)
        ctx.carried = (C_in, n_in, keep, new, num, scale, den, floor)
        ctx.T = T
        ctx.mark_non_differentiable(m_prev)
        return _unchunk(h, T), C, n, m_prev

    @staticmethod
    def backward(ctx, dh, dC_out, dn_out, _dm):
        q, k, v, f, decay, scores, w_state, w_end, kw, q_C, q_n = ctx.saved_tensors
        C_in, n_in, keep, new, num, scale, den, floor = ctx.carried
        T = ctx.T
        L = q.shape[3]
        pad = q.shape[2] * L - T
        dh = _chunks(dh, L, pad)  # (B, H, NC, L, Dv)

        # h = num / max(|den|, floor): the denominator's gradient passes only above the floor
        d_num = dh * scale[..., None]
        d_den = (dh * num).sum(-1).mul_(scale.square()).neg_()
        d_den.mul_(den.sign()).masked_fill_(den.abs() <= floor, 0.0)  # (B, H, NC, L)

        # intra-chunk: num = scores @ v, den = scores summed over s
        d_scores = (d_num @ v.transpose(-1, -2)).add_(d_den[..., None])  # (B, H, NC, L, L)
        d_qk = d_scores * decay  # gradient of the scores before the decay weights
        d_log_d = d_scores.mul_(scores)  # gradient of the log-decay matrix
        dq = d_qk @ k
        dk = d_qk.transpose(-1, -2) @ q
        dv = scores.transpose(-1, -2) @ d_num

        # the carried state: w_state * (q C_in, q . n_in)
        wd_num = d_num * w_state[..., None]
        wd_den = d_den * w_state
        dq.add_(wd_num @ C_in.transpose(-1, -2)).addcmul_(wd_den[..., None], n_in[..., None, :])
        dC_local = q.transpose(-1, -2) @ wd_num  # (B, H, NC, Dk, Dv)
        dn_local = (q * wd_den[..., None]).sum(-2)  # (B, H, NC, Dk)
        d_log_state = (d_num * q_C).sum(-1).add_(d_den * q_n).mul_(w_state)  # (B, H, NC, L)

        # the state across chunks, backwards: C_out[c] = keep C_in[c] + new kv[c]
        dC_next, dn_next = torch.empty_like(C_in), torch.empty_like(n_in)
        dC, dn = dC_out, dn_out
        for c in reversed(range(q.shape[2])):
            dC_next[:, :, c], dn_next[:, :, c] = dC, dn
            dC = keep[..., c, None, None] * dC + dC_local[:, :, c]
            dn = keep[..., c, None] * dn + dn_local[:, :, c]
        d_log_keep = (C_in * dC_next).sum((-1, -2)).add_((n_in * dn_next).sum(-1)).mul_(keep)
        dkv_C = dC_next.mul_(new[..., None, None])
        dkv_n = dn_next.mul_(new[..., None])
        dkw = (v @ dkv_C.transpose(-1, -2)).add_(dkv_n[..., None, :])  # (B, H, NC, L, Dk)
        dk.addcmul_(dkw, w_end[..., None])
        dv.add_(kw @ dkv_C)
        d_log_d[..., -1, :] += (dkw * kw).sum(-1)

        # gates: log_d[t, s] = sum of log_f over (s, t] + i[s]; log_state and log_keep
        # hold the decay from the chunk start to t and to the chunk end
        di = d_log_d.sum(-2)  # (B, H, NC, L)
        d_log_f = d_log_d.flatten(-2) @ _selector(L, dq.dtype, dq.device).T
        d_log_f.add_(d_log_state.flip(-1).cumsum(-1).flip(-1)).add_(d_log_keep[..., None])
        df = d_log_f.mul_(torch.sigmoid(-_chunks(f, L, pad)))
        grads = (_unchunk(x, T) for x in (dq, dk, dv, di, df))
        return (*grads, dC, dn, None, None, None)


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
    (q, k, v, i, f), (C0, n0, m0), out_dtype = prepare(q, k, v, i, f, state)
    L = min(chunk_size, q.shape[2])
    h, C, n, m = _Chunkwise.apply(q, k, v, i, f, C0, n0, m0, resets, L)
    return h.to(out_dtype), (C, n, m)
