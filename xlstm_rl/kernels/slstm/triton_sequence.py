"""sLSTM over a sequence in Triton: fused forward and backward loops over T.

Batch-first: g (B, T, H, 4, Dh) input-side pre-activations in gate order (i, f, z, o),
R (H, Dh, 4, Dh), resets (B, T), state (c, n, m, h) each (B, H, Dh) float32. The maths
is `slstm_step_reference` (spec "sLSTM").

The sLSTM cannot be parallelised over time, so each program owns one head and a
block of 16 batch rows and loops over all T steps inside the kernel, with that
head's four (Dh, Dh) recurrent blocks held on chip (registers; they fit well up
to Dh = 64, larger heads compile but spill). The recurrent products run in
float32 (exact products), whatever g's dtype, so rounding does not compound over T.

Backward (also a Triton kernel, no torch loop): the forward saves the state after
every step (c, n, m, h: 4 float32 tensors of g's size / 4 each); the backward walks
T in reverse, recomputes each step's gates from the saved previous state, and
writes dg; the recurrent weights' gradient dR = sum over (b, t) of h_{t-1} dg_t^T
is then one torch einsum. m carries no gradient (except into an initial state's m,
exactly as in the reference, where m_0 enters through f' = exp(l + m_0 - m_1)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from xlstm_rl.kernels.slstm.reference import F_EXP_CAP, SState
from xlstm_rl.kernels.triton_backends import empty, logsigmoid, rounded

_BB = 16  # batch rows per program (tl.dot needs at least 16)
_F_EXP_CAP = tl.constexpr(F_EXP_CAP)  # the reference's cap on the exponent of f'


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _load_R(R_ptr, hh, Dh, d, md, gate: tl.constexpr):
    """R[hh, :, gate, :] as a (BD, BD) float32 tile, zero outside Dh."""
    offs = ((hh * Dh + d[:, None]) * 4 + gate) * Dh + d[None, :]
    return tl.load(R_ptr + offs, mask=md[:, None] & md[None, :], other=0.0).to(tl.float32)


@triton.jit
def _gates(g_ptr, t, T, H, Dh, hh, rows, d, mask, h_prev, R_i, R_f, R_z, R_o):
    """Pre-activations (i, f, z, o) = g_t + h_prev R, each (BB, BD)."""
    base = ((rows[:, None] * T + t) * H + hh) * 4 * Dh + d[None, :]
    i = tl.load(g_ptr + base, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(g_ptr + base + Dh, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(g_ptr + base + 2 * Dh, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(g_ptr + base + 3 * Dh, mask=mask, other=0.0).to(tl.float32)
    i += tl.dot(h_prev, R_i, input_precision="ieee")
    f += tl.dot(h_prev, R_f, input_precision="ieee")
    z += tl.dot(h_prev, R_z, input_precision="ieee")
    o += tl.dot(h_prev, R_o, input_precision="ieee")
    return i, f, z, o


@triton.jit
def _cell(i, f, c_p, n_p, m_p):
    """Stabiliser and gate weights of one step: m_t, i' = e^(i~ - m_t), f', log f."""
    log_f = logsigmoid(f)
    m = tl.where(n_p == 0.0, i, tl.maximum(log_f + m_p, i))
    # capped as in the reference: only an empty row's exponent can be positive
    return m, tl.exp(i - m), tl.exp(tl.minimum(log_f + m_p - m, _F_EXP_CAP))


@triton.jit
def _program_tiles(R_ptr, B, H, Dh, BB: tl.constexpr, BD: tl.constexpr):
    """This program's batch rows, head, lanes and (BB, BD) mask, the (B, H, Dh) state
    offsets, and the head's four recurrent blocks."""
    rows = (tl.program_id(0) * BB + tl.arange(0, BB)).to(tl.int64)
    hh = tl.program_id(1)
    d = tl.arange(0, BD)
    md = d < Dh
    mask = (rows < B)[:, None] & md[None, :]
    R_i, R_f = _load_R(R_ptr, hh, Dh, d, md, 0), _load_R(R_ptr, hh, Dh, d, md, 1)
    R_z, R_o = _load_R(R_ptr, hh, Dh, d, md, 2), _load_R(R_ptr, hh, Dh, d, md, 3)
    st = (rows[:, None] * H + hh) * Dh + d[None, :]
    return rows, hh, d, mask, st, R_i, R_f, R_z, R_o


@triton.jit
def _load_state(c_ptr, n_ptr, m_ptr, h_ptr, offs, mask):
    """(c, n, m, h) at offs, zero outside mask."""
    c = tl.load(c_ptr + offs, mask=mask, other=0.0)
    n = tl.load(n_ptr + offs, mask=mask, other=0.0)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0)
    h = tl.load(h_ptr + offs, mask=mask, other=0.0)
    return c, n, m, h


@triton.jit
def _initial_state(
    c0_ptr, n0_ptr, m0_ptr, h0_ptr, st, mask,
    HAS_STATE: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    """The state before step 0: the given one, or zeros."""
    if HAS_STATE:
        c, n, m, h = _load_state(c0_ptr, n0_ptr, m0_ptr, h0_ptr, st, mask)
    else:
        c = tl.zeros([BB, BD], dtype=tl.float32)
        n = tl.zeros([BB, BD], dtype=tl.float32)
        m = tl.zeros([BB, BD], dtype=tl.float32)
        h = tl.zeros([BB, BD], dtype=tl.float32)
    return c, n, m, h


@triton.jit
def _store_state(c_ptr, n_ptr, m_ptr, h_ptr, offs, mask, c, n, m, h):
    tl.store(c_ptr + offs, c, mask=mask)
    tl.store(n_ptr + offs, n, mask=mask)
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(h_ptr + offs, h, mask=mask)


@triton.jit
def _apply_resets(r_ptr, rows, B, T, t, c, n, m, h):
    """Zero the state of the rows whose episode restarts at step t; also the (BB, 1) mask."""
    dead = (tl.load(r_ptr + rows * T + t, mask=rows < B, other=0) != 0)[:, None]
    c, n = tl.where(dead, 0.0, c), tl.where(dead, 0.0, n)
    m, h = tl.where(dead, 0.0, m), tl.where(dead, 0.0, h)
    return dead, c, n, m, h


@triton.jit
def _slstm_fwd_kernel(
    g_ptr, R_ptr, r_ptr, c0_ptr, n0_ptr, m0_ptr, h0_ptr,
    hs_ptr, cf_ptr, nf_ptr, mf_ptr, hf_ptr, cT_ptr, nT_ptr, mT_ptr, hT_ptr,
    B, T, H, Dh,
    BB: tl.constexpr, BD: tl.constexpr,
    HAS_RESETS: tl.constexpr, HAS_STATE: tl.constexpr, SAVE: tl.constexpr,
):  # fmt: skip
    rows, hh, d, mask, st, R_i, R_f, R_z, R_o = _program_tiles(R_ptr, B, H, Dh, BB, BD)
    c, n, m, h = _initial_state(c0_ptr, n0_ptr, m0_ptr, h0_ptr, st, mask, HAS_STATE, BB, BD)
    for t in range(T):
        if HAS_RESETS:
            _, c, n, m, h = _apply_resets(r_ptr, rows, B, T, t, c, n, m, h)
        i, f, z, o = _gates(g_ptr, t, T, H, Dh, hh, rows, d, mask, h, R_i, R_f, R_z, R_o)
        m, i_s, f_s = _cell(i, f, c, n, m)
        c = f_s * c + i_s * _tanh(z)
        n = f_s * n + i_s
        h = tl.sigmoid(o) * c / n
        seq = ((rows[:, None] * T + t) * H + hh) * Dh + d[None, :]  # (B, T, H, Dh) offsets
        tl.store(hs_ptr + seq, rounded(h, hs_ptr.dtype.element_ty), mask=mask)
        if SAVE:
            _store_state(cT_ptr, nT_ptr, mT_ptr, hT_ptr, seq, mask, c, n, m, h)
    _store_state(cf_ptr, nf_ptr, mf_ptr, hf_ptr, st, mask, c, n, m, h)


@triton.jit
def _slstm_bwd_kernel(
    g_ptr, R_ptr, r_ptr, c0_ptr, n0_ptr, m0_ptr, h0_ptr, cT_ptr, nT_ptr, mT_ptr, hT_ptr,
    dhs_ptr, dcf_ptr, dnf_ptr, dhf_ptr, dg_ptr, dc0_ptr, dn0_ptr, dm0_ptr, dh0_ptr,
    B, T, H, Dh,
    BB: tl.constexpr, BD: tl.constexpr,
    HAS_RESETS: tl.constexpr, HAS_STATE: tl.constexpr, HAS_DFINAL: tl.constexpr,
):  # fmt: skip
    rows, hh, d, mask, st, R_i, R_f, R_z, R_o = _program_tiles(R_ptr, B, H, Dh, BB, BD)
    if HAS_DFINAL:
        dc = tl.load(dcf_ptr + st, mask=mask, other=0.0)
        dn = tl.load(dnf_ptr + st, mask=mask, other=0.0)
        dh_next = tl.load(dhf_ptr + st, mask=mask, other=0.0)
    else:
        dc = tl.zeros([BB, BD], dtype=tl.float32)
        dn = tl.zeros([BB, BD], dtype=tl.float32)
        dh_next = tl.zeros([BB, BD], dtype=tl.float32)
    dm = tl.zeros([BB, BD], dtype=tl.float32)
    for rt in range(T):
        t = T - 1 - rt
        prev = ((rows[:, None] * T + t - 1) * H + hh) * Dh + d[None, :]
        if t > 0:
            c_p, n_p, m_p, h_p = _load_state(cT_ptr, nT_ptr, mT_ptr, hT_ptr, prev, mask)
        else:
            c_p, n_p, m_p, h_p = _initial_state(
                c0_ptr, n0_ptr, m0_ptr, h0_ptr, st, mask, HAS_STATE, BB, BD
            )
        if HAS_RESETS:
            dead, c_p, n_p, m_p, h_p = _apply_resets(r_ptr, rows, B, T, t, c_p, n_p, m_p, h_p)
        else:
            dead = tl.zeros([BB, 1], dtype=tl.int1)
        i, f, z, o = _gates(g_ptr, t, T, H, Dh, hh, rows, d, mask, h_p, R_i, R_f, R_z, R_o)
        m, i_s, f_s = _cell(i, f, c_p, n_p, m_p)
        tz = _tanh(z)
        so = tl.sigmoid(o)
        c = f_s * c_p + i_s * tz
        n = f_s * n_p + i_s
        h = so * c / n
        seq = ((rows[:, None] * T + t) * H + hh) * Dh + d[None, :]
        dh = tl.load(dhs_ptr + seq, mask=mask, other=0.0).to(tl.float32) + dh_next
        d_o = dh * h * (1.0 - so)
        dc = dc + dh * so / n
        dn = dn - dh * h / n
        d_z = dc * i_s * (1.0 - tz * tz)
        d_i = (dc * tz + dn) * i_s
        d_fs = dc * c_p + dn * n_p  # gradient of f'
        d_f = d_fs * f_s * tl.sigmoid(-f)
        base = ((rows[:, None] * T + t) * H + hh) * 4 * Dh + d[None, :]
        tl.store(dg_ptr + base, d_i, mask=mask)
        tl.store(dg_ptr + base + Dh, d_f, mask=mask)
        tl.store(dg_ptr + base + 2 * Dh, d_z, mask=mask)
        tl.store(dg_ptr + base + 3 * Dh, d_o, mask=mask)
        # into the previous state; a reset cut it off
        dh_next = tl.dot(d_i, tl.trans(R_i), input_precision="ieee")
        dh_next += tl.dot(d_f, tl.trans(R_f), input_precision="ieee")
        dh_next += tl.dot(d_z, tl.trans(R_z), input_precision="ieee")
        dh_next += tl.dot(d_o, tl.trans(R_o), input_precision="ieee")
        dm = tl.where(dead, 0.0, d_fs * f_s)
        dh_next = tl.where(dead, 0.0, dh_next)
        dc = tl.where(dead, 0.0, dc * f_s)
        dn = tl.where(dead, 0.0, dn * f_s)
    if HAS_STATE:
        _store_state(dc0_ptr, dn0_ptr, dm0_ptr, dh0_ptr, st, mask, dc, dn, dm, dh_next)


class _SLSTMSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, R, resets, c0, n0, m0, h0):
        B, T, H, _, Dh = g.shape
        dev = g.device
        g, R = g.contiguous(), R.contiguous()
        r = resets.contiguous() if resets is not None else None
        has_state = c0 is not None
        if has_state:
            c0, n0, m0, h0 = (s.contiguous() for s in (c0, n0, m0, h0))
        save = any(ctx.needs_input_grad)  # keep every step's state for the backward
        hs = empty(B, T, H, Dh, device=dev, dtype=g.dtype)
        final = [empty(B, H, Dh, device=dev) for _ in range(4)]
        steps = [empty(B, T, H, Dh, device=dev) for _ in range(4)] if save else [None] * 4
        BD = max(16, triton.next_power_of_2(Dh))
        _slstm_fwd_kernel[(triton.cdiv(B, _BB), H)](
            g, R, r, c0, n0, m0, h0, hs, *final, *steps, B, T, H, Dh,
            BB=_BB, BD=BD, HAS_RESETS=r is not None, HAS_STATE=has_state, SAVE=save,
        )  # fmt: skip
        ctx.save_for_backward(g, R, r, c0, n0, m0, h0, *steps)
        ctx.mark_non_differentiable(final[2])
        return hs, *final

    @staticmethod
    def backward(ctx, dhs, dc_final, dn_final, _dm, dh_final):
        g, R, r, c0, n0, m0, h0, c_s, n_s, m_s, h_s = ctx.saved_tensors
        if c_s is None:
            raise RuntimeError("the sLSTM forward ran without saving states for a backward")
        B, T, H, _, Dh = g.shape
        dev = g.device
        has_state = c0 is not None
        dhs = torch.zeros_like(h_s) if dhs is None else dhs.contiguous()
        has_dfinal = any(x is not None for x in (dc_final, dn_final, dh_final))
        if has_dfinal:
            dc_final, dn_final, dh_final = (
                torch.zeros(B, H, Dh, device=dev) if x is None else x.contiguous()
                for x in (dc_final, dn_final, dh_final)
            )
        dg = empty(B, T, H, 4, Dh, device=dev)
        grads0 = [empty(B, H, Dh, device=dev) for _ in range(4)] if has_state else [None] * 4
        BD = max(16, triton.next_power_of_2(Dh))
        _slstm_bwd_kernel[(triton.cdiv(B, _BB), H)](
            g, R, r, c0, n0, m0, h0, c_s, n_s, m_s, h_s, dhs, dc_final, dn_final, dh_final,
            dg, *grads0, B, T, H, Dh,
            BB=_BB, BD=BD, HAS_RESETS=r is not None, HAS_STATE=has_state, HAS_DFINAL=has_dfinal,
        )  # fmt: skip
        # dR = sum over (b, t) of h_{t-1} (as the step saw it: zero after a reset) dg_t^T
        h_first = h0[:, None] if has_state else h_s.new_zeros(B, 1, H, Dh)
        h_prev = torch.cat([h_first, h_s[:, :-1]], dim=1)  # (B, T, H, Dh)
        if r is not None:
            h_prev = h_prev.masked_fill(r[:, :, None, None], 0.0)
        dR = torch.einsum("bthd,bthge->hdge", h_prev, dg)
        grads0[2] = None  # the incoming stabiliser m carries no gradient (the spec)
        return dg.to(g.dtype), dR.to(R.dtype), None, *grads0


def slstm_sequence_triton(
    g: torch.Tensor,  # (B, T, H, 4, Dh)
    R: torch.Tensor,  # (H, Dh, 4, Dh)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: SState | None = None,
) -> tuple[torch.Tensor, SState]:
    """The sLSTM over a sequence, one fused Triton loop forward and one backward.

    Same contract as `slstm_sequence_reference`: h (B, T, H, Dh) in g's dtype and the
    final state (c, n, m, h) in float32."""
    c0 = n0 = m0 = h0 = None
    if state is not None:
        c0, n0, m0, h0 = (s.float() for s in state)
    hs, c, n, m, h = _SLSTMSequence.apply(g, R, resets, c0, n0, m0, h0)
    return hs, (c, n, m, h)
