"""sLSTM sequence with a hand-written backward through time: the CPU training path.

The same step loop as ``reference.py`` (same maths, same signature), run without
autograd: the forward keeps each step's gate values in (T, B, H, ...) buffers, and the
backward walks the steps in reverse with about a dozen ops a step where autograd
replays the reference's whole graph (some 30 nodes a step). The recurrent weights'
gradient is one batched matmul over all steps at the end. Derivation, per step, with
m_t and the incoming m treated as constants (the stabiliser carries no gradient):

    dc_t += dh_t o / n_t,          dn_t -= dh_t h_t / n_t
    di~ = (dc_t z + dn_t) i',      df~ = (dc_t c_{t-1} + dn_t n_{t-1}) f' sigmoid(-f~)
    dz~ = dc_t i' (1 - z^2),       do~ = dh_t h_t (1 - o)
    dc_{t-1} = dc_t f',  dn_{t-1} = dn_t f',  dh_{t-1} = [di~, df~, dz~, do~] R^T

(z = tanh(z~), o = sigmoid(o~)), each carried gradient zeroed in the rows that reset
at t, and df~ zeroed where the f' cap at an empty state (``F_EXP_CAP``) was taken, as
the reference's clamp does.

First-order gradients only (``once_differentiable``: double backward raises, and a
``create_graph`` through a loss linear in h gets no second-order term), and no
``torch.func`` transforms: use ``backend="reference"`` for those.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from xlstm_rl.kernels.slstm.reference import (
    F_EXP_CAP,
    SState,
    _compute_dtype,
    slstm_empty_state,
    slstm_sequence_reference,
)


class _SLSTMLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, R, resets, c0, n0, m0, h0):
        B, T, H, _, Dh = g.shape
        dt = c0.dtype
        Rf = R.to(dt).flatten(2)  # (H, Dh, 4 Dh)
        pre = torch.empty(T, B, H, 4, Dh, dtype=dt, device=g.device)
        i_s, f_s, z, o, c_all, n_all = (
            torch.empty(T, B, H, Dh, dtype=dt, device=g.device) for _ in range(6)
        )
        h_all = torch.empty(B, T, H, Dh, dtype=dt, device=g.device)  # the output's layout
        # the state is empty only at t = 0 (if the initial one is) and in rows that reset:
        # once a row has taken a step, n >= 1 (i' or f' is exactly 1), so n == 0 and the
        # f' cap need checking only at those steps
        reset_steps = set() if resets is None else set(resets.any(0).nonzero().flatten().tolist())
        keeps = {t: (~resets[:, t]).to(dt)[:, None, None] for t in reset_steps}
        capped = {}
        c, n, m, h = c0, n0, m0, h0
        for t in range(T):
            check_empty = t == 0 or t in reset_steps
            if t in reset_steps:
                keep = keeps[t]
                c, n, m, h = c * keep, n * keep, m * keep, h * keep
            rec = torch.bmm(h.transpose(0, 1), Rf)  # (H, B, 4 Dh)
            p = torch.add(g[:, t], rec.transpose(0, 1).view(B, H, 4, Dh), out=pre[t])
            i_pre, f_pre, z_pre, o_pre = p.unbind(2)
            log_f_m = F.logsigmoid(f_pre).add_(m)
            m = torch.maximum(log_f_m, i_pre)
            if check_empty:
                m = torch.where(n == 0, i_pre, m)
            torch.sub(i_pre, m, out=i_s[t]).exp_()
            exponent = torch.sub(log_f_m, m, out=f_s[t])
            if check_empty:  # <= 0 elsewhere
                capped[t] = exponent > F_EXP_CAP  # the cap passes no gradient there
                exponent.clamp_(max=F_EXP_CAP)
            exponent.exp_()
            torch.tanh(z_pre, out=z[t])
            c = torch.mul(f_s[t], c, out=c_all[t]).addcmul_(i_s[t], z[t])
            n = torch.mul(f_s[t], n, out=n_all[t]).add_(i_s[t])
            torch.sigmoid(o_pre, out=o[t])
            h = torch.div(c, n, out=h_all[:, t]).mul_(o[t])
        # h is not saved (the backward recomputes it from o, c and n, the same ops in the
        # same order), so the caller may change the returned h in place
        ctx.save_for_backward(R, pre, i_s, f_s, z, o, c_all, n_all, c0, n0, h0)
        ctx.keeps, ctx.capped, ctx.g_dtype = keeps, capped, g.dtype
        ctx.mark_non_differentiable(m)
        # the final state as tensors of their own: an in-place change to one of them
        # must not reach the buffers the backward reads
        return h_all.to(g.dtype), c.clone(), n.clone(), m, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dc_final, dn_final, _dm, dh_final):
        R, pre, i_s, f_s, z, o, c_all, n_all, c0, n0, h0 = ctx.saved_tensors
        keeps, capped = ctx.keeps, ctx.capped
        T, B, H, _, Dh = pre.shape
        dt = pre.dtype
        h_all = torch.div(c_all, n_all).mul_(o)  # (T, B, H, Dh), the forward's h
        # per-step factors, over all steps at once
        p_c = o / n_all  # dc_t += dh_t * p_c
        p_n = h_all / n_all  # dn_t -= dh_t * p_n
        p_o = h_all * (1 - o)  # do~ = dh_t * p_o
        p_zi = z * i_s  # di~ = dc_t * p_zi + dn_t * i'
        p_z = i_s * (1 - z * z)  # dz~ = dc_t * p_z
        p_f = f_s * torch.sigmoid(-pre[:, :, :, 1])  # df~ = (dc_t c + dn_t n) * p_f
        RT = R.to(dt).flatten(2).transpose(1, 2)  # (H, 4 Dh, Dh)
        dpre = torch.empty_like(pre)
        # autograd passes zeros for outputs the loss does not read (materialised grads)
        dhs = dhs.to(dt).transpose(0, 1)  # (T, B, H, Dh)
        dc, dn, dh = dc_final.to(dt), dn_final.to(dt), dh_final.to(dt)
        for t in range(T - 1, -1, -1):
            dh = dh + dhs[t]
            dc = torch.addcmul(dc, dh, p_c[t])
            dn = torch.addcmul(dn, dh, p_n[t], value=-1.0)
            c_prev = c0 if t == 0 else c_all[t - 1]
            n_prev = n0 if t == 0 else n_all[t - 1]
            if t in keeps:
                c_prev, n_prev = c_prev * keeps[t], n_prev * keeps[t]
            d = dpre[t]
            torch.mul(dc, p_zi[t], out=d[:, :, 0]).addcmul_(dn, i_s[t])
            torch.mul(dc, c_prev, out=d[:, :, 1]).addcmul_(dn, n_prev).mul_(p_f[t])
            if t in capped:
                d[:, :, 1].masked_fill_(capped[t], 0.0)
            torch.mul(dc, p_z[t], out=d[:, :, 2])
            torch.mul(dh, p_o[t], out=d[:, :, 3])
            dh = torch.bmm(d.view(B, H, 4 * Dh).transpose(0, 1), RT).transpose(0, 1)
            dc, dn = dc * f_s[t], dn * f_s[t]
            if t in keeps:
                dc, dn, dh = dc * keeps[t], dn * keeps[t], dh * keeps[t]
        dR = None
        if ctx.needs_input_grad[1]:
            # the recurrent input of each step: h_{t-1} (h0 at t = 0), zero after a reset
            h_prev = torch.cat([h0[None], h_all[:-1]])
            for t, keep in keeps.items():
                h_prev[t] *= keep
            # dR[h] = sum over (t, b) of h_prev^T dpre, one bmm over heads
            dR = torch.bmm(
                h_prev.permute(2, 3, 0, 1).reshape(H, Dh, T * B),
                dpre.permute(2, 0, 1, 3, 4).reshape(H, T * B, 4 * Dh),
            ).view(H, Dh, 4, Dh)
            dR = dR.to(R.dtype)
        dg = dpre.transpose(0, 1).to(ctx.g_dtype) if ctx.needs_input_grad[0] else None
        return dg, dR, None, dc, dn, None, dh


def slstm_sequence_bptt(
    g: torch.Tensor,  # (B, T, H, 4, Dh)
    R: torch.Tensor,  # (H, Dh, 4, Dh)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: SState | None = None,
) -> tuple[torch.Tensor, SState]:
    """``slstm_sequence_reference``'s results and gradients, the backward written out."""
    B, T, H, _, Dh = g.shape
    if T == 0:
        raise ValueError("slstm_sequence needs T >= 1")
    if torch.compiler.is_compiling():  # torch.compile traces (and fuses) the plain loop
        return slstm_sequence_reference(g, R, resets=resets, state=state)
    dt = _compute_dtype(g)
    if state is None:
        state = slstm_empty_state(B, H, Dh, g.device, dt)
    c0, n0, m0, h0 = (s.to(dt) for s in state)
    hs, c, n, m, h = _SLSTMLoop.apply(g, R, resets, c0, n0, m0.detach(), h0)
    return hs, (c, n, m, h)
