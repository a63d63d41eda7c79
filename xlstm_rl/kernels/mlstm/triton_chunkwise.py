"""mLSTM chunkwise form in Triton: the training path on the GPU.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T);
state (C, n, m) float32. The algorithm is the torch chunkwise form
(`mlstm/chunkwise.py`, spec "Chunkwise form") split into kernels:

forward
  1. `_fwd_states_kernel`, grid (B*H, Dk tiles, Dv tiles): walks the chunks in order
     and writes the state entering every chunk (C, n, m) and the final state.
  2. `_fwd_outputs_kernel`, grid (B*H, chunks, Dv tiles): each chunk's outputs from
     the intra-chunk parallel form plus the carried state; saves m_t and the signed
     denominator z_t for the backward.
backward (m carries no gradient; nothing but the chunk states is stored)
  3. `_bwd_states_kernel`, grid (B*H, Dk tiles, Dv tiles): walks the chunks in reverse
     and writes the gradient of the state leaving every chunk, and of the initial state.
  4. `_bwd_chunk_kernel`, grid (B*H, chunks): recomputes a chunk's decay matrix and
     scores and writes dq, dk, dv, k.dk and q.dq per step.
  The gate gradients are then d i~ = k.dk and d l = reverse cumsum of (q.dq - k.dk)
  plus the final state's share, zero at resets (spec "Gradients").

Resets are masks, never a log-forget of -inf: inside a chunk a step's episode id is
the running count of resets, pairs (t, s) from different episodes are masked, the
carried state counts for step t only while the id is 0, and a chunk with any reset
passes no carried state on (its keep weight is 0). Sums of log-forgets are
cumulative sums over the range itself ((s, t] as a masked 2-D cumsum, (s, last] as a
reverse cumsum), never differences of prefix sums. chunk_size is rounded up to a
power of two of at least 16 (tl.dot tiles) and capped at MAX_CHUNK = 64: the kernels
hold L x L float32 tiles on chip, and at L = 256 the outputs kernel asked for 280 KB of
shared memory against the H100's 227 KB. The result does not depend on the chunk size
beyond float32 rounding, so a larger chunk_size simply runs as 64-step chunks.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from xlstm_rl.kernels.mlstm.reference import State
from xlstm_rl.kernels.triton_backends import block, dot, empty, logsigmoid, rounded


@triton.jit
def _chunk_gates(i_ptr, f_ptr, r_ptr, bh, b, c, T, L: tl.constexpr, HAS_RESETS: tl.constexpr):
    """Gate quantities of chunk c, each (L,): step index, validity (t < T), i~, log_f,
    sum of log_f over (s, chunk end], and the episode id (resets seen so far)."""
    pos = tl.arange(0, L)
    t = c * L + pos
    valid = t < T
    ig = tl.load(i_ptr + bh * T + t, mask=valid, other=0.0).to(tl.float32)
    f_pre = tl.load(f_ptr + bh * T + t, mask=valid, other=0.0).to(tl.float32)
    log_f = tl.where(valid, logsigmoid(f_pre), 0.0)
    has_next = (pos + 1 < L) & (t + 1 < T)
    f_next = tl.load(f_ptr + bh * T + t + 1, mask=has_next, other=0.0).to(tl.float32)
    to_end = tl.cumsum(tl.where(has_next, logsigmoid(f_next), 0.0), 0, reverse=True)
    if HAS_RESETS:
        episode = tl.cumsum(tl.load(r_ptr + b * T + t, mask=valid, other=0), 0)
    else:
        episode = tl.zeros([L], dtype=tl.int32)
    return t, valid, ig, log_f, to_end, episode


@triton.jit
def _log_decay_matrix(ig, log_f, valid, episode, L: tl.constexpr):
    """(L, L) log D[t, s] = sum of log_f over (s, t] + i~_s, -inf where s > t, where a
    reset lies in (s, t], or where t or s is past the end of the sequence."""
    pos = tl.arange(0, L)
    terms = tl.where(pos[:, None] > pos[None, :], log_f[:, None], 0.0)  # [r, s]
    decay = tl.cumsum(terms, 0)  # [t, s]: sum over s < r <= t
    ok = (pos[None, :] <= pos[:, None]) & (episode[:, None] == episode[None, :])
    ok = ok & valid[:, None] & valid[None, :]
    return tl.where(ok, decay + ig[None, :], float("-inf"))


@triton.jit
def _chunk_end_weights(ig, to_end, valid, episode, log_keep_base, m_next):
    """Weights of the chunk's own keys in the state it passes on, and the carried
    state's keep factor (0 when the chunk holds a reset)."""
    ep_last = tl.max(episode, 0)
    w_end = tl.where(valid & (episode == ep_last), tl.exp(to_end + ig - m_next), 0.0)
    keep = tl.where(ep_last == 0, tl.exp(log_keep_base - m_next), 0.0)
    return w_end, keep


@triton.jit
def _state_tile(H, Dk, Dv, BK: tl.constexpr, BV: tl.constexpr):
    """This program of a states kernel: (batch*head, Dk tile, Dv tile) ids, the batch
    row, the tile's Dk and Dv lanes and masks, and its (Dk, Dv) offsets and mask."""
    bh = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1)
    pid_v = tl.program_id(2)
    b = bh // H
    dk = pid_k * BK + tl.arange(0, BK)
    dv = pid_v * BV + tl.arange(0, BV)
    mk, mv = dk < Dk, dv < Dv
    tile = dk[:, None] * Dv + dv[None, :]
    return bh, pid_k, pid_v, b, dk, dv, mk, mv, tile, mk[:, None] & mv[None, :]


@triton.jit
def _load_state_tile(
    C_ptr, n_ptr, bh, dk, mk, tile, tile_mask, Dk, Dv,
    HAS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
):  # fmt: skip
    """The (C, n) tile of a (B*H, Dk, Dv) / (B*H, Dk) state, or zeros without one."""
    if HAS:
        C = tl.load(C_ptr + bh * Dk * Dv + tile, mask=tile_mask, other=0.0)
        n = tl.load(n_ptr + bh * Dk + dk, mask=mk, other=0.0)
    else:
        C = tl.zeros([BK, BV], dtype=tl.float32)
        n = tl.zeros([BK], dtype=tl.float32)
    return C, n


@triton.jit
def _store_state_tile(C_ptr, n_ptr, slot, dk, mk, tile, tile_mask, Dk, Dv, pid_v, C, n):
    """Store the (C, n) tile at slot (of Dk * Dv and Dk); n from the first Dv tile only."""
    tl.store(C_ptr + slot * Dk * Dv + tile, C, mask=tile_mask)
    if pid_v == 0:
        tl.store(n_ptr + slot * Dk + dk, n, mask=mk)


@triton.jit
def _bwd_chunk_weights(
    mt_ptr, inv_den_ptr, beta_ptr, ms_ptr, bh, c, T, NC, scale,
    t, valid, ig, log_f, to_end, episode,
):  # fmt: skip
    """Backward recompute for chunk c from the saved stabilisers: the chunk's own keys'
    end weights, the carried state's keep factor, m_t, the carried state's weight per
    step, and the saved 1/den and beta."""
    m_in = tl.load(ms_ptr + bh * (NC + 1) + c)
    m_next = tl.load(ms_ptr + bh * (NC + 1) + c + 1)
    w_end, keep = _chunk_end_weights(ig, to_end, valid, episode, tl.sum(log_f, 0) + m_in, m_next)
    m = tl.load(mt_ptr + bh * T + t, mask=valid, other=0.0)
    log_state = tl.where(valid & (episode == 0), tl.cumsum(log_f, 0) + m_in, float("-inf"))
    w_state = tl.exp(log_state - m) * scale
    inv_den = tl.load(inv_den_ptr + bh * T + t, mask=valid, other=0.0)
    beta = tl.load(beta_ptr + bh * T + t, mask=valid, other=0.0)
    return w_end, keep, m, w_state, inv_den, beta


@triton.jit
def _fwd_states_kernel(
    k_ptr, v_ptr, i_ptr, f_ptr, r_ptr, C0_ptr, n0_ptr, m0_ptr,
    Cs_ptr, ns_ptr, ms_ptr, Cf_ptr, nf_ptr, mf_ptr,
    T, H, NC, Dk, Dv,
    L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, HAS_STATE: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    bh, pid_k, pid_v, b, dk, dv, mk, mv, tile, tile_mask = _state_tile(H, Dk, Dv, BK, BV)
    C, n = _load_state_tile(C0_ptr, n0_ptr, bh, dk, mk, tile, tile_mask, Dk, Dv, HAS_STATE, BK, BV)
    if HAS_STATE:
        m = tl.load(m0_ptr + bh)
    else:
        m = tl.full([], 0.0, tl.float32)
    for c in range(NC):
        _store_state_tile(Cs_ptr, ns_ptr, bh * NC + c, dk, mk, tile, tile_mask, Dk, Dv, pid_v, C, n)
        if pid_v == 0:
            if pid_k == 0:
                tl.store(ms_ptr + bh * (NC + 1) + c, m)
        t, valid, ig, log_f, to_end, episode = _chunk_gates(
            i_ptr, f_ptr, r_ptr, bh, b, c, T, L, HAS_RESETS
        )
        ep_last = tl.max(episode, 0)
        log_w = tl.where(valid & (episode == ep_last), to_end + ig, float("-inf"))
        log_keep = tl.where(ep_last == 0, tl.sum(log_f, 0) + m, float("-inf"))
        m_next = tl.maximum(log_keep, tl.max(log_w, 0))
        w_end, keep = _chunk_end_weights(ig, to_end, valid, episode, tl.sum(log_f, 0) + m, m_next)
        k = tl.load(k_ptr + bh * T * Dk + t[:, None] * Dk + dk[None, :],
                    mask=valid[:, None] & mk[None, :], other=0.0).to(tl.float32)  # fmt: skip
        v = tl.load(v_ptr + bh * T * Dv + t[:, None] * Dv + dv[None, :],
                    mask=valid[:, None] & mv[None, :], other=0.0).to(tl.float32)  # fmt: skip
        kw = k * w_end[:, None]  # (L, BK)
        C = keep * C + dot(tl.trans(kw), v, IEEE)
        n = keep * n + tl.sum(kw, 0)
        m = m_next
    _store_state_tile(Cf_ptr, nf_ptr, bh, dk, mk, tile, tile_mask, Dk, Dv, pid_v, C, n)
    if pid_v == 0:
        if pid_k == 0:
            tl.store(mf_ptr + bh, m)
            tl.store(ms_ptr + bh * (NC + 1) + NC, m)


@triton.jit
def _fwd_outputs_kernel(
    q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, r_ptr, Cs_ptr, ns_ptr, ms_ptr,
    h_ptr, mt_ptr, z_ptr, scale,
    T, H, NC, Dk, Dv,
    L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    pid_v = tl.program_id(2)
    b = bh // H
    t, valid, ig, log_f, to_end, episode = _chunk_gates(
        i_ptr, f_ptr, r_ptr, bh, b, c, T, L, HAS_RESETS
    )
    log_d = _log_decay_matrix(ig, log_f, valid, episode, L)  # (L, L)
    m_in = tl.load(ms_ptr + bh * (NC + 1) + c)
    log_state = tl.where(valid & (episode == 0), tl.cumsum(log_f, 0) + m_in, float("-inf"))
    m = tl.where(valid, tl.maximum(tl.max(log_d, 1), log_state), 0.0)  # (L,)

    dv = pid_v * BV + tl.arange(0, BV)
    mv = dv < Dv
    scores = tl.zeros([L, L], dtype=tl.float32)
    q_C = tl.zeros([L, BV], dtype=tl.float32)
    q_n = tl.zeros([L], dtype=tl.float32)
    for k0 in range(0, Dk, BK):
        dk = k0 + tl.arange(0, BK)
        mk = dk < Dk
        rows = bh * T * Dk + t[:, None] * Dk + dk[None, :]
        q = tl.load(q_ptr + rows, mask=valid[:, None] & mk[None, :], other=0.0).to(tl.float32)
        k = tl.load(k_ptr + rows, mask=valid[:, None] & mk[None, :], other=0.0).to(tl.float32)
        scores += dot(q, tl.trans(k), IEEE)
        C = tl.load(Cs_ptr + (bh * NC + c) * Dk * Dv + dk[:, None] * Dv + dv[None, :],
                    mask=mk[:, None] & mv[None, :], other=0.0)  # fmt: skip
        q_C += dot(q, C, IEEE)
        n = tl.load(ns_ptr + (bh * NC + c) * Dk + dk, mask=mk, other=0.0)
        q_n += tl.sum(q * n[None, :], 1)

    scores = scores * scale * tl.exp(log_d - m[:, None])  # masked pairs: exp(-inf) = 0
    w_state = tl.exp(log_state - m) * scale
    v = tl.load(v_ptr + bh * T * Dv + t[:, None] * Dv + dv[None, :],
                mask=valid[:, None] & mv[None, :], other=0.0).to(tl.float32)  # fmt: skip
    num = dot(scores, v, IEEE) + w_state[:, None] * q_C
    z = tl.sum(scores, 1) + w_state * q_n
    den = tl.maximum(tl.abs(z), tl.exp(-m))
    h = num / den[:, None]
    h = rounded(h, h_ptr.dtype.element_ty)
    tl.store(h_ptr + bh * T * Dv + t[:, None] * Dv + dv[None, :], h,
             mask=valid[:, None] & mv[None, :])  # fmt: skip
    if pid_v == 0:
        tl.store(mt_ptr + bh * T + t, m, mask=valid)
        tl.store(z_ptr + bh * T + t, z, mask=valid)


@triton.jit
def _bwd_states_kernel(
    q_ptr, dh_ptr, i_ptr, f_ptr, r_ptr, mt_ptr, inv_den_ptr, beta_ptr, ms_ptr,
    dCf_ptr, dnf_ptr, dCs_ptr, dns_ptr, dC0_ptr, dn0_ptr, scale,
    T, H, NC, Dk, Dv,
    L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, HAS_DFINAL: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    bh, pid_k, pid_v, b, dk, dv, mk, mv, tile, tile_mask = _state_tile(H, Dk, Dv, BK, BV)
    dC, dn = _load_state_tile(
        dCf_ptr, dnf_ptr, bh, dk, mk, tile, tile_mask, Dk, Dv, HAS_DFINAL, BK, BV
    )
    for rc in range(NC):
        c = NC - 1 - rc
        # dC holds the gradient of the state leaving chunk c
        _store_state_tile(
            dCs_ptr, dns_ptr, bh * NC + c, dk, mk, tile, tile_mask, Dk, Dv, pid_v, dC, dn
        )
        t, valid, ig, log_f, to_end, episode = _chunk_gates(
            i_ptr, f_ptr, r_ptr, bh, b, c, T, L, HAS_RESETS
        )
        _, keep, _, w_state, inv_den, beta = _bwd_chunk_weights(
            mt_ptr, inv_den_ptr, beta_ptr, ms_ptr, bh, c, T, NC, scale,
            t, valid, ig, log_f, to_end, episode,
        )  # fmt: skip
        q = tl.load(q_ptr + bh * T * Dk + t[:, None] * Dk + dk[None, :],
                    mask=valid[:, None] & mk[None, :], other=0.0).to(tl.float32)  # fmt: skip
        dh = tl.load(dh_ptr + bh * T * Dv + t[:, None] * Dv + dv[None, :],
                     mask=valid[:, None] & mv[None, :], other=0.0).to(tl.float32)  # fmt: skip
        qw = q * w_state[:, None]
        dC = keep * dC + dot(tl.trans(qw), dh * inv_den[:, None], IEEE)
        dn = keep * dn + tl.sum(qw * beta[:, None], 0)
    _store_state_tile(dC0_ptr, dn0_ptr, bh, dk, mk, tile, tile_mask, Dk, Dv, pid_v, dC, dn)


@triton.jit
def _bwd_chunk_kernel(
    q_ptr, k_ptr, v_ptr, i_ptr, f_ptr, r_ptr, mt_ptr, inv_den_ptr, beta_ptr, ms_ptr,
    Cs_ptr, ns_ptr, dCs_ptr, dns_ptr, dh_ptr,
    dq_ptr, dk_ptr, dv_ptr, kdk_ptr, qdq_ptr, scale,
    T, H, NC, Dk, Dv,
    L: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_RESETS: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    b = bh // H
    t, valid, ig, log_f, to_end, episode = _chunk_gates(
        i_ptr, f_ptr, r_ptr, bh, b, c, T, L, HAS_RESETS
    )
    log_d = _log_decay_matrix(ig, log_f, valid, episode, L)
    w_end, _, m, w_state, inv_den, beta = _bwd_chunk_weights(
        mt_ptr, inv_den_ptr, beta_ptr, ms_ptr, bh, c, T, NC, scale,
        t, valid, ig, log_f, to_end, episode,
    )  # fmt: skip
    decay = tl.exp(log_d - m[:, None])  # (L, L), 0 on masked pairs
    state_base = (bh * NC + c) * Dk * Dv
    rows_k = bh * T * Dk + t[:, None] * Dk
    rows_v = bh * T * Dv + t[:, None] * Dv

    # scores S[t, s] = q^_t.k_s D'[t, s]; G[t, s] = dLoss/dS = a_t.v_s + beta_t, a = dh / den
    scores = tl.zeros([L, L], dtype=tl.float32)
    for k0 in range(0, Dk, BK):
        dk = k0 + tl.arange(0, BK)
        mask = valid[:, None] & (dk < Dk)[None, :]
        q = tl.load(q_ptr + rows_k + dk[None, :], mask=mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + rows_k + dk[None, :], mask=mask, other=0.0).to(tl.float32)
        scores += dot(q, tl.trans(k), IEEE)
    a_v = tl.zeros([L, L], dtype=tl.float32)
    for v0 in range(0, Dv, BV):
        dv = v0 + tl.arange(0, BV)
        mask = valid[:, None] & (dv < Dv)[None, :]
        a = tl.load(dh_ptr + rows_v + dv[None, :], mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + rows_v + dv[None, :], mask=mask, other=0.0).to(tl.float32)
        a_v += dot(a * inv_den[:, None], tl.trans(v), IEEE)
    scores = scores * scale * decay
    grad_qk = (a_v + beta[:, None]) * decay * scale  # dLoss / d(q_t . k_s)

    q_dq = tl.zeros([L], dtype=tl.float32)
    k_dk = tl.zeros([L], dtype=tl.float32)
    for k0 in range(0, Dk, BK):
        dk = k0 + tl.arange(0, BK)
        mk = dk < Dk
        mask = valid[:, None] & mk[None, :]
        q = tl.load(q_ptr + rows_k + dk[None, :], mask=mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + rows_k + dk[None, :], mask=mask, other=0.0).to(tl.float32)
        dq = dot(grad_qk, k, IEEE)
        dkk = dot(tl.trans(grad_qk), q, IEEE)
        a_C = tl.zeros([L, BK], dtype=tl.float32)  # a_t^T C_in^T
        v_dC = tl.zeros([L, BK], dtype=tl.float32)  # v_s^T dC_out^T
        for v0 in range(0, Dv, BV):
            dv = v0 + tl.arange(0, BV)
            mv = dv < Dv
            vmask = valid[:, None] & mv[None, :]
            a = tl.load(dh_ptr + rows_v + dv[None, :], mask=vmask, other=0.0).to(tl.float32)
            v = tl.load(v_ptr + rows_v + dv[None, :], mask=vmask, other=0.0).to(tl.float32)
            tile = state_base + dk[:, None] * Dv + dv[None, :]
            C = tl.load(Cs_ptr + tile, mask=mk[:, None] & mv[None, :], other=0.0)
            dC = tl.load(dCs_ptr + tile, mask=mk[:, None] & mv[None, :], other=0.0)
            a_C += dot(a * inv_den[:, None], tl.trans(C), IEEE)
            v_dC += dot(v, tl.trans(dC), IEEE)
        n = tl.load(ns_ptr + (bh * NC + c) * Dk + dk, mask=mk, other=0.0)
        dn = tl.load(dns_ptr + (bh * NC + c) * Dk + dk, mask=mk, other=0.0)
        dq += w_state[:, None] * (a_C + beta[:, None] * n[None, :])
        dkk += w_end[:, None] * (v_dC + dn[None, :])
        tl.store(dq_ptr + rows_k + dk[None, :], rounded(dq, dq_ptr.dtype.element_ty), mask=mask)
        tl.store(dk_ptr + rows_k + dk[None, :], rounded(dkk, dk_ptr.dtype.element_ty), mask=mask)
        q_dq += tl.sum(q * dq, 1)
        k_dk += tl.sum(k * dkk, 1)
    tl.store(qdq_ptr + bh * T + t, q_dq, mask=valid)
    tl.store(kdk_ptr + bh * T + t, k_dk, mask=valid)

    for v0 in range(0, Dv, BV):
        dv = v0 + tl.arange(0, BV)
        mv = dv < Dv
        vmask = valid[:, None] & mv[None, :]
        a = tl.load(dh_ptr + rows_v + dv[None, :], mask=vmask, other=0.0).to(tl.float32)
        dvv = dot(tl.trans(scores), a * inv_den[:, None], IEEE)
        k_dC = tl.zeros([L, BV], dtype=tl.float32)  # k_s^T dC_out
        for k0 in range(0, Dk, BK):
            dk = k0 + tl.arange(0, BK)
            mk = dk < Dk
            k = tl.load(k_ptr + rows_k + dk[None, :], mask=valid[:, None] & mk[None, :],
                        other=0.0).to(tl.float32)  # fmt: skip
            dC = tl.load(dCs_ptr + state_base + dk[:, None] * Dv + dv[None, :],
                         mask=mk[:, None] & mv[None, :], other=0.0)  # fmt: skip
            k_dC += dot(k, dC, IEEE)
        dvv += w_end[:, None] * k_dC
        tl.store(dv_ptr + rows_v + dv[None, :], rounded(dvv, dv_ptr.dtype.element_ty), mask=vmask)


MAX_CHUNK = 64
# float32 inputs multiply exactly (FMA, no tensor cores), which needs smaller Dk/Dv tiles:
# with 64-wide tiles the backward was 6-8x slower (H100, fwd+bwd at B=256, T=128, H=4,
# D=64: 15.3 ms with 64-wide tiles, 2.4 ms with 32; 8 warps at 64 gave 3.0 ms).
IEEE_TILE = 32
IEEE_WARPS = 4


def _launch_shapes(
    Dk: int, Dv: int, T: int, chunk_size: int, ieee: bool
) -> tuple[int, int, int, int, int]:
    """Chunk length L, chunk count, Dk and Dv tile sizes, and warps per program."""
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    L = triton.next_power_of_2(min(chunk_size, MAX_CHUNK))
    L = max(16, min(L, triton.next_power_of_2(T)))
    hi, warps = (IEEE_TILE, IEEE_WARPS) if ieee else (64, 4)
    return L, -(-T // L), block(Dk, hi=hi), block(Dv, hi=hi), warps


class _MLSTMChunkwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, i, f, C0, n0, m0, resets, chunk_size):
        B, H, T, Dk = q.shape
        Dv = v.shape[-1]
        ieee = q.dtype == torch.float32  # else TF32 products
        L, NC, BK, BV, warps = _launch_shapes(Dk, Dv, T, chunk_size, ieee)
        dev = q.device
        q, k, v, i, f = (x.contiguous() for x in (q, k, v, i, f))
        r = resets.to(torch.int32).contiguous() if resets is not None else None
        has_state = C0 is not None
        if has_state:
            C0, n0, m0 = (s.contiguous() for s in (C0, n0, m0))
        Cs = empty(B * H, NC, Dk, Dv, device=dev)  # state entering each chunk
        ns = empty(B * H, NC, Dk, device=dev)
        ms = empty(B * H, NC + 1, device=dev)  # ... and leaving the last one
        C, n, m = (
            empty(B, H, Dk, Dv, device=dev),
            empty(B, H, Dk, device=dev),
            empty(B, H, device=dev),
        )
        _fwd_states_kernel[(B * H, triton.cdiv(Dk, BK), triton.cdiv(Dv, BV))](
            k, v, i, f, r, C0, n0, m0, Cs, ns, ms, C, n, m, T, H, NC, Dk, Dv,
            L=L, BK=BK, BV=BV, HAS_RESETS=r is not None, HAS_STATE=has_state, IEEE=ieee,
            num_warps=warps,
        )  # fmt: skip
        h = empty(B, H, T, Dv, device=dev, dtype=v.dtype)
        m_t = empty(B, H, T, device=dev)
        z = empty(B, H, T, device=dev)
        scale = 1.0 / math.sqrt(Dk)
        _fwd_outputs_kernel[(B * H, NC, triton.cdiv(Dv, BV))](
            q, k, v, i, f, r, Cs, ns, ms, h, m_t, z, scale, T, H, NC, Dk, Dv,
            L=L, BK=BK, BV=BV, HAS_RESETS=r is not None, IEEE=ieee, num_warps=warps,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, i, f, r, Cs, ns, ms, h, m_t, z, C, n)
        ctx.meta = (L, NC, BK, BV, ieee, scale, has_state, warps)
        ctx.mark_non_differentiable(m)
        return h, C, n, m

    @staticmethod
    def backward(ctx, dh, dC_final, dn_final, _dm):
        q, k, v, i, f, r, Cs, ns, ms, h, m_t, z, C_final, n_final = ctx.saved_tensors
        L, NC, BK, BV, ieee, scale, has_state, warps = ctx.meta
        B, H, T, Dk = q.shape
        Dv = v.shape[-1]
        dev = q.device
        dh = torch.zeros_like(h) if dh is None else dh.contiguous()
        # per step: den = max(|z|, e^-m); beta = dLoss/dz = -(dh.h)/den where |z| wins
        den = torch.maximum(z.abs(), torch.exp(-m_t))
        inv_den = 1.0 / den
        beta = -(dh.float() * h.float()).sum(-1) * inv_den
        beta = torch.where(z.abs() > torch.exp(-m_t), beta * torch.sign(z), 0.0)
        has_dfinal = dC_final is not None or dn_final is not None
        if has_dfinal:
            dC_final = torch.zeros_like(C_final) if dC_final is None else dC_final.contiguous()
            dn_final = torch.zeros_like(n_final) if dn_final is None else dn_final.contiguous()
        dCs = empty(B * H, NC, Dk, Dv, device=dev)  # gradient of the state leaving each chunk
        dns = empty(B * H, NC, Dk, device=dev)
        dC0, dn0 = empty(B, H, Dk, Dv, device=dev), empty(B, H, Dk, device=dev)
        _bwd_states_kernel[(B * H, triton.cdiv(Dk, BK), triton.cdiv(Dv, BV))](
            q, dh, i, f, r, m_t, inv_den, beta, ms, dC_final, dn_final, dCs, dns, dC0, dn0,
            scale, T, H, NC, Dk, Dv,
            L=L, BK=BK, BV=BV, HAS_RESETS=r is not None, HAS_DFINAL=has_dfinal, IEEE=ieee,
            num_warps=warps,
        )  # fmt: skip
        dq, dk = (
            empty(*q.shape, device=dev, dtype=q.dtype),
            empty(*k.shape, device=dev, dtype=k.dtype),
        )
        dv = empty(*v.shape, device=dev, dtype=v.dtype)
        k_dk, q_dq = empty(B, H, T, device=dev), empty(B, H, T, device=dev)
        _bwd_chunk_kernel[(B * H, NC)](
            q, k, v, i, f, r, m_t, inv_den, beta, ms, Cs, ns, dCs, dns, dh,
            dq, dk, dv, k_dk, q_dq, scale, T, H, NC, Dk, Dv,
            L=L, BK=BK, BV=BV, HAS_RESETS=r is not None, IEEE=ieee, num_warps=warps,
        )  # fmt: skip
        # d l_r = sum over t >= r of (q.dq - k.dk), plus the final state's share
        d_log_f = (q_dq - k_dk).flip(-1).cumsum(-1).flip(-1)
        if has_dfinal:
            d_log_f = (
                d_log_f
                + ((dC_final * C_final).sum((-2, -1)) + (dn_final * n_final).sum(-1))[..., None]
            )
        if r is not None:  # a reset forces f = 0: that step's gate gets no gradient
            d_log_f = d_log_f.masked_fill(r.bool()[:, None, :], 0.0)
        df = (d_log_f * torch.sigmoid(-f.float())).to(f.dtype)
        di = k_dk.to(i.dtype)
        if not has_state:
            dC0 = dn0 = None
        # the incoming stabiliser m0 carries no gradient, as in every torch form
        return dq, dk, dv, di, df, dC0, dn0, None, None, None


def mlstm_sequence_triton(
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
    """The mLSTM over a sequence with Triton kernels, forward and backward.

    Same contract as `mlstm_sequence_chunkwise`: h (B, H, T, Dv) in v's dtype and the
    final state (C, n, m) in float32; m carries no gradient."""
    C0 = n0 = m0 = None
    if state is not None:
        C0, n0, m0 = (s.float() for s in state)
    h, C, n, m = _MLSTMChunkwise.apply(q, k, v, i, f, C0, n0, m0, resets, chunk_size)
    return h, (C, n, m)
