"""sLSTM sequence with a hand-written backward through time: the CPU training path.

The same step loop as ``reference.py`` (same maths, same signature), run without
autograd: the forward keeps each step's gate values in (T, H, B, ...) buffers, and the
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
    """The loop runs head-major: state and per-step buffers (H, B, Dh), so that the
    recurrent product adds into the step's pre-activations in one ``baddbmm_`` and the
    backward's in one ``bmm``, with no transposes in between."""

    @staticmethod
    def forward(ctx, g, R, resets, c0, n0, m0, h0):
        B, T, H, _, Dh = g.shape
        dt = c0.dtype
        Rf = R.to(dt).flatten(2)  # (H, Dh, 4 Dh)
        # the input-side pre-activations, head-major: each step adds h R into its slab
        # (a copy always: contiguous() would hand back g itself when B = 1 or H = 1, and
        # the loop adds into pre in place)
        pre = torch.empty(T, H, B, 4, Dh, dtype=dt, device=g.device)
        pre.copy_(g.permute(1, 2, 0, 3, 4))  # (T, H, B, 4, Dh)
        i_s, f_s, z, o, c_all, n_all, h_all = (
            torch.empty(T, H, B, Dh, dtype=dt, device=g.device) for _ in range(7)
        )
        # the state is empty only at t = 0 (if the initial one is) and in rows that reset:
        # once a row has taken a step, n >= 1 (i' or f' is exactly 1), so n == 0 and the
        # f' cap need checking only at those steps
        reset_steps = set() if resets is None else set(resets.any(0).nonzero().flatten().tolist())
        keeps = {t: (~resets[:, t]).to(dt)[None, :, None] for t in reset_steps}
        capped = {}
        c, n, m = (s.transpose(0, 1) for s in (c0, n0, m0))
        h = h0.transpose(0, 1).contiguous()
        # every buffer's per-step views taken once (unbind, in C++): indexing buf[t] in
        # Python costs a few microseconds an op, a large part of a small batch's step
        steps = zip(*(b.unbind(0) for b in (pre, i_s, f_s, z, o, c_all, n_all, h_all)))
        for t, (pre_t, i_t, f_t, z_t, o_t, c_t, n_t, h_t) in enumerate(steps):
            check_empty = t == 0 or t in reset_steps
            if t in reset_steps:
                keep = keeps[t]
                c, n, m, h = c * keep, n * keep, m * keep, h * keep
            p = pre_t.view(H, B, 4 * Dh).baddbmm_(h, Rf).view(H, B, 4, Dh)
            i_pre, f_pre, z_pre, o_pre = p.unbind(2)
            log_f_m = F.logsigmoid(f_pre).add_(m)
            m = torch.maximum(log_f_m, i_pre)
            if check_empty:
                m = torch.where(n == 0, i_pre, m)
            torch.sub(i_pre, m, out=i_t).exp_()
            exponent = torch.sub(log_f_m, m, out=f_t)
            if check_empty:  # <= 0 elsewhere
                capped[t] = exponent > F_EXP_CAP  # the cap passes no gradient there
                exponent.clamp_(max=F_EXP_CAP)
            exponent.exp_()
            torch.tanh(z_pre, out=z_t)
            c = torch.mul(f_t, c, out=c_t).addcmul_(i_t, z_t)
            n = torch.mul(f_t, n, out=n_t).add_(i_t)
            torch.sigmoid(o_pre, out=o_t)
            h = torch.div(c, n, out=h_t).mul_(o_t)
        # h_all is not saved (the backward recomputes it from o, c and n, the same ops in
        # the same order)
        ctx.save_for_backward(R, pre, i_s, f_s, z, o, c_all, n_all, c0, n0, h0)
        ctx.keeps, ctx.capped, ctx.g_dtype = keeps, capped, g.dtype
        m = m.transpose(0, 1).contiguous()
        ctx.mark_non_differentiable(m)
        # batch-major copies: the output and final state are tensors of their own, so an
        # in-place change to one of them cannot reach the buffers the backward reads
        hs = torch.empty(B, T, H, Dh, dtype=g.dtype, device=g.device)
        hs.copy_(h_all.permute(2, 0, 1, 3))
        c, n, h = (
            s.transpose(0, 1).clone(memory_format=torch.contiguous_format) for s in (c, n, h)
        )
        return hs, c, n, m, h

    @staticmethod
    @once_differentiable
    def backward(ctx, dhs, dc_final, dn_final, _dm, dh_final):
        R, pre, i_s, f_s, z, o, c_all, n_all, c0, n0, h0 = ctx.saved_tensors
        keeps, capped = ctx.keeps, ctx.capped
        T, H, B, _, Dh = pre.shape
        dt = pre.dtype
        h_all = torch.div(c_all, n_all).mul_(o)  # (T, H, B, Dh), the forward's h
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
        dhs = dhs.to(dt).permute(1, 2, 0, 3)  # (T, H, B, Dh)
        dc, dn, dh = (d.to(dt).transpose(0, 1) for d in (dc_final, dn_final, dh_final))
        c0h, n0h = c0.transpose(0, 1), n0.transpose(0, 1)
        # per-step views taken once, as in the forward; c and n entering each step
        c_prev_all = (c0h, *c_all.unbind(0)[:-1])
        n_prev_all = (n0h, *n_all.unbind(0)[:-1])
        steps = zip(
            dhs.unbind(0), p_c.unbind(0), p_n.unbind(0), c_prev_all, n_prev_all,
            dpre.unbind(0), p_zi.unbind(0), i_s.unbind(0), p_f.unbind(0), p_z.unbind(0),
            p_o.unbind(0), f_s.unbind(0),
        )  # fmt: skip
        for t, (dh_t, pc_t, pn_t, c_prev, n_prev, d, pzi_t, i_t, pf_t, pz_t, po_t, f_t) in zip(
            range(T - 1, -1, -1), reversed(list(steps))
        ):
            dh = dh + dh_t
            dc = torch.addcmul(dc, dh, pc_t)
            dn = torch.addcmul(dn, dh, pn_t, value=-1.0)
            if t in keeps:
                c_prev, n_prev = c_prev * keeps[t], n_prev * keeps[t]
            d_i, d_f, d_z, d_o = d.unbind(2)
            torch.mul(dc, pzi_t, out=d_i).addcmul_(dn, i_t)
            torch.mul(dc, c_prev, out=d_f).addcmul_(dn, n_prev).mul_(pf_t)
            if t in capped:
                d_f.masked_fill_(capped[t], 0.0)
            torch.mul(dc, pz_t, out=d_z)
            torch.mul(dh, po_t, out=d_o)
            dh = torch.bmm(d.view(H, B, 4 * Dh), RT)
            dc, dn = dc * f_t, dn * f_t
            if t in keeps:
                dc, dn, dh = dc * keeps[t], dn * keeps[t], dh * keeps[t]
        dR = None
        if ctx.needs_input_grad[1]:
            # the recurrent input of each step: h_{t-1} (h0 at t = 0), zero after a reset
            h_prev = torch.cat([h0.transpose(0, 1)[None], h_all[:-1]])  # (T, H, B, Dh)
            for t, keep in keeps.items():
                h_prev[t] *= keep
            # dR[h] = sum over (t, b) of h_prev^T dpre, one bmm over heads
            dR = torch.bmm(
                h_prev.permute(1, 3, 0, 2).reshape(H, Dh, T * B),
                dpre.transpose(0, 1).reshape(H, T * B, 4 * Dh),
            ).view(H, Dh, 4, Dh)
            dR = dR.to(R.dtype)
        dg = dpre.permute(2, 0, 1, 3, 4).to(ctx.g_dtype) if ctx.needs_input_grad[0] else None
        dc, dn, dh = (d.transpose(0, 1) for d in (dc, dn, dh))
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
