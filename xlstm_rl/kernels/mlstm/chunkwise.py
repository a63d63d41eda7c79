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

Under ``torch.compile`` the same forward runs out of place (``_chunkwise_traceable``)
and autograd differentiates it, so that the compiler can trace it and fuse its
elementwise work with the block around it; the Function writes into preallocated
buffers, which the compiler cannot trace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from xlstm_rl.kernels.mlstm.parallel import segment_log_decay
from xlstm_rl.kernels.mlstm.reference import State, prepare

_compiling = torch.compiler.is_compiling  # a module attribute, so tests can stand in for it

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
    """h and the final (C, n, m) from scaled q, k, v, gates, the incoming state and resets.

    Per chunk, one matmul gives numerator and denominator of every step:
    [scores | w_state q] (L, L + Dk) @ [[v, 1]; [C_in, n_in]] (L + Dk, Dv + 1), where
    w_state is the carried state's weight at each step. Its backward is two matmuls."""

    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, L):
        B, H, T, Dk = q.shape
        Dv = v.shape[-1]
        NC = -(-T // L)
        pad = NC * L - T
        q, k = (_chunks(x, L, pad) for x in (q, k))  # (B, H, NC, L, Dk)
        log_f = _chunks(F.logsigmoid(f), L, pad)  # (B, H, NC, L)
        log_d = segment_log_decay(log_f)  # (B, H, NC, L, L): sum of log_f over (s, t]
        decay_in = log_d[..., 0] + log_f[..., :1]  # (B, H, NC, L): sum over [chunk start, t]
        log_d.add_(_chunks(i, L, pad, _NO_INPUT)[..., None, :])
        if resets is not None:
            episode = _chunks(_pad_time(resets, pad, False, 1)[:, None], L, 0).long().cumsum(-1)
            log_d.masked_fill_(episode[..., :, None] != episode[..., None, :], float("-inf"))
            alive = episode == 0  # (B, 1, NC, L): the carried state still counts at t
        else:
            alive = None

        # rows s < L: [v_s, 1] (n rides along as a column of ones); rows L + j: the state
        # entering the chunk, [C_in, n_in], written by the loop below
        values = q.new_empty(B, H, NC, L + Dk, Dv + 1)
        values[..., :L, :Dv] = _pad_time(v, pad, 0.0, 2).view(B, H, NC, L, Dv)
        values[..., :L, Dv] = 1.0

        # each chunk's own keys and values, decayed to the chunk end (the last row of log_d)
        m_local = log_d[..., -1, :].amax(-1)  # (B, H, NC)
        w_end = torch.exp(log_d[..., -1, :] - m_local[..., None])  # (B, H, NC, L)
        kw = k * w_end[..., None]
        kv = kw.transpose(-1, -2) @ values[..., :L, :]  # (B, H, NC, Dk, Dv + 1)
        log_keep = decay_in[..., -1]  # (B, H, NC)
        if alive is not None:
            log_keep = log_keep.masked_fill(~alive[..., -1], float("-inf"))

        # carry the state across chunks: first the stabilisers (one scalar per head and
        # chunk), then the states, each written straight into its chunk's rows of `values`
        m_all = q.new_empty(B, H, NC + 1)  # m_all[..., c]: m of the state entering chunk c
        m_all[..., 0] = m0
        for c in range(NC):
            torch.maximum(log_keep[..., c] + m_all[..., c], m_local[..., c], out=m_all[..., c + 1])
        m_in, m_out = m_all[..., :NC], m_all[..., NC]
        keep = torch.exp(log_keep + m_in - m_all[..., 1:])  # (B, H, NC)
        new = torch.exp(m_local - m_all[..., 1:])  # (B, H, NC)
        kv.mul_(new[..., None, None])
        states = values[..., L:, :]  # (B, H, NC, Dk, Dv + 1)
        states[:, :, 0, :, :Dv], states[:, :, 0, :, Dv] = C0, n0
        for c in range(NC - 1):
            torch.addcmul(
                kv[:, :, c], states[:, :, c], keep[..., c, None, None], out=states[:, :, c + 1]
            )
        Cn = torch.addcmul(kv[:, :, -1], states[:, :, -1], keep[..., -1, None, None])

        # outputs: intra-chunk parallel form plus the carried state
        log_state = decay_in + m_in[..., None]  # (B, H, NC, L)
        if alive is not None:
            log_state.masked_fill_(~alive, float("-inf"))
        m = torch.maximum(log_d.amax(-1), log_state)  # (B, H, NC, L)
        decay = torch.exp(log_d.sub_(m[..., None]))  # (B, H, NC, L, L)
        w_state = torch.exp(log_state - m)
        mixed = q.new_empty(B, H, NC, L, L + Dk)  # [scores | w_state q]
        torch.mul(q @ k.transpose(-1, -2), decay, out=mixed[..., :L])
        torch.mul(q, w_state[..., None], out=mixed[..., L:])
        out = mixed @ values  # (B, H, NC, L, Dv + 1): numerator and denominator
        num, den = out[..., :Dv], out[..., Dv]
        # one reciprocal per step and a broadcast multiply: cheaper than dividing every entry
        floor = torch.exp(-m)
        scale = torch.maximum(den.abs(), floor).reciprocal_()
        # h is stored time-major, (B, T, H, Dv) in memory, the layout the blocks read it in
        h = q.new_empty(B, NC * L, H, Dv)
        torch.mul(num, scale[..., None], out=h.view(B, NC, L, H, Dv).permute(0, 3, 1, 2, 4))

        ctx.save_for_backward(q, k, f, decay, mixed, values, w_state, w_end, kw, keep, new, Cn)
        ctx.alive = alive
        ctx.carried = (out, scale, floor)
        ctx.T = T
        m_out = m_out.clone()
        ctx.mark_non_differentiable(m_out)
        h = h[:, :T].transpose(1, 2)  # (B, H, T, Dv)
        return h, Cn[..., :Dv].contiguous(), Cn[..., Dv].contiguous(), m_out

    @staticmethod
    @once_differentiable
    def backward(ctx, dh, dC_out, dn_out, _dm):
        q, k, f, decay, mixed, values, w_state, w_end, kw, keep, new, Cn = ctx.saved_tensors
        alive = ctx.alive
        out, scale, floor = ctx.carried
        T = ctx.T
        L, Dv = q.shape[3], values.shape[-1] - 1
        pad = q.shape[2] * L - T
        dh = _pad_time(dh, pad, 0.0, 2)
        dh = dh.reshape(*dh.shape[:2], -1, L, dh.shape[-1])  # (B, H, NC, L, Dv), no copy

        # h = num / max(|den|, floor): the denominator's gradient passes only above the floor
        num, den = out[..., :Dv], out[..., Dv]
        d_out = torch.empty_like(out)
        torch.mul(dh, scale[..., None], out=d_out[..., :Dv])
        # vecdot: the sums of products without writing the products out first
        d_den = torch.linalg.vecdot(dh, num).mul_(scale.square()).neg_()
        d_out[..., Dv] = d_den.mul_(den.sign()).masked_fill_(den.abs() <= floor, 0.0)

        # out = mixed @ values
        d_mixed = d_out @ values.transpose(-1, -2)  # (B, H, NC, L, L + Dk)
        d_values = mixed.transpose(-1, -2) @ d_out  # (B, H, NC, L + Dk, Dv + 1)
        d_scores, d_wq = d_mixed[..., :L], d_mixed[..., L:]
        d_qk = d_scores * decay  # gradient of q k^T, before the decay weights
        dq = (d_qk @ k).addcmul_(d_wq, w_state[..., None])
        dk = d_qk.transpose(-1, -2) @ q

        # the state across chunks, backwards: state_out[c] = keep[c] state_in[c] + new[c] kv[c]
        NC = q.shape[2]
        d_local = d_values[..., L:, :]  # (B, H, NC, Dk, Dv + 1): from the outputs of chunk c
        d_out_state = torch.empty_like(d_local)  # gradient of the state leaving chunk c
        d_out_state[:, :, -1, :, :Dv], d_out_state[:, :, -1, :, Dv] = dC_out, dn_out
        for c in range(NC - 1, 0, -1):
            keep_c = keep[..., c, None, None]
            torch.addcmul(
                d_local[:, :, c], d_out_state[:, :, c], keep_c, out=d_out_state[:, :, c - 1]
            )
        dCn = torch.addcmul(d_local[:, :, 0], d_out_state[:, :, 0], keep[..., 0, None, None])
        d_final = (Cn * d_out_state[:, :, -1]).sum((-1, -2))  # (B, H)
        d_kv = d_out_state.mul_(new[..., None, None])
        dkw = values[..., :L, :] @ d_kv.transpose(-1, -2)  # (B, H, NC, L, Dk)
        dk.addcmul_(dkw, w_end[..., None])
        dv = (kw @ d_kv[..., :Dv]).add_(d_values[..., :L, :Dv])

        # gates, by the spec's identity: everything k[s] touches is scaled by exp(i[s]), so
        # d i[s] = k[s] . dk[s]; a pair (t, s) decays over (s, t], so d log_f[r] sums
        # q . dq - k . dk over t >= r in the chunk, plus what crosses the chunk end: the rest
        # of the episode in later chunks and, at the end, the final state
        di = torch.linalg.vecdot(k, dk)  # (B, H, NC, L)
        net = torch.linalg.vecdot(q, dq).sub_(di)
        crossing = torch.empty_like(keep)  # (B, H, NC)
        crossing[..., -1] = d_final
        # later chunks carry the episode only up to their first reset
        carried = (net if alive is None else net * alive).sum(-1)  # (B, H, NC)
        for c in range(NC - 2, -1, -1):
            goes_on = 1.0 if alive is None else alive[..., c + 1, -1]  # no reset in chunk c + 1
            crossing[..., c] = carried[..., c + 1] + goes_on * crossing[..., c + 1]
        suffix = torch.ones(L, L, dtype=net.dtype, device=net.device).tril()  # t >= r
        d_log_f = (net @ suffix).add_(crossing[..., None])
        df = d_log_f.mul_(torch.sigmoid(-_chunks(f, L, pad)))
        grads = (_unchunk(x, T) for x in (dq, dk, dv, di, df))
        return (*grads, dCn[..., :Dv], dCn[..., Dv], None, None, None)


def _chunkwise_traceable(q, k, v, i, f, C0, n0, m0, resets, L):
    """``_Chunkwise``'s forward, out of place, for autograd and ``torch.compile``.

    Same inputs and outputs. The stabilisers are detached, as the Function treats them."""
    B, H, T, Dk = q.shape
    NC = -(-T // L)
    pad = NC * L - T
    q, k, v = (_chunks(x, L, pad) for x in (q, k, v))  # (B, H, NC, L, D)
    log_f = _chunks(F.logsigmoid(f), L, pad)  # (B, H, NC, L)
    log_d = segment_log_decay(log_f)  # (B, H, NC, L, L)
    decay_in = log_d[..., 0] + log_f[..., :1]  # sum of log_f over [chunk start, t]
    log_d = log_d + _chunks(i, L, pad, _NO_INPUT)[..., None, :]
    alive = None
    if resets is not None:
        episode = _chunks(_pad_time(resets, pad, False, 1)[:, None], L, 0).long().cumsum(-1)
        log_d = log_d.masked_fill(episode[..., :, None] != episode[..., None, :], float("-inf"))
        alive = episode == 0  # (B, 1, NC, L)

    # each chunk's keys and values decayed to its end, then carried across chunks
    m_local = log_d[..., -1, :].amax(-1).detach()  # (B, H, NC)
    kw = k * torch.exp(log_d[..., -1, :] - m_local[..., None])[..., None]
    log_keep = decay_in[..., -1]
    if alive is not None:
        log_keep = log_keep.masked_fill(~alive[..., -1], float("-inf"))
    m_all = [m0]
    for c in range(NC):
        m_all.append(torch.maximum(log_keep[..., c].detach() + m_all[-1], m_local[..., c]))
    m_all = torch.stack(m_all, -1)  # (B, H, NC + 1)
    m_in = m_all[..., :NC]
    keep = torch.exp(log_keep + m_in - m_all[..., 1:])  # (B, H, NC)
    new = torch.exp(m_local - m_all[..., 1:])
    C_local = (kw.transpose(-1, -2) @ v) * new[..., None, None]  # (B, H, NC, Dk, Dv)
    n_local = kw.sum(-2) * new[..., None]  # (B, H, NC, Dk)
    Cs, ns = [C0], [n0]
    for c in range(NC):
        Cs.append(C_local[:, :, c] + keep[..., c, None, None] * Cs[-1])
        ns.append(n_local[:, :, c] + keep[..., c, None] * ns[-1])
    C_in, n_in = torch.stack(Cs[:NC], 2), torch.stack(ns[:NC], 2)  # entering each chunk

    # outputs: intra-chunk parallel form plus the carried state
    log_state = decay_in + m_in[..., None]  # (B, H, NC, L)
    if alive is not None:
        log_state = log_state.masked_fill(~alive, float("-inf"))
    m = torch.maximum(log_d.amax(-1), log_state).detach()
    scores = (q @ k.transpose(-1, -2)) * torch.exp(log_d - m[..., None])
    q_state = q * torch.exp(log_state - m)[..., None]
    num = scores @ v + q_state @ C_in
    den = scores.sum(-1) + (q_state * n_in[..., None, :]).sum(-1)
    h = num / torch.maximum(den.abs(), torch.exp(-m))[..., None]
    return _unchunk(h, T), Cs[-1], ns[-1], m_all[..., NC]


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
    form = _chunkwise_traceable if _compiling() else _Chunkwise.apply
    h, C, n, m = form(q, k, v, i, f, C0, n0, m0, resets, L)
    return h.to(out_dtype), (C, n, m)
