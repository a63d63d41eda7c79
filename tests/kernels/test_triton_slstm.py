"""Triton sLSTM kernels against the float64 reference loop, on the CPU under Triton's
interpreter (tests/conftest.py) or on a GPU. Output buffers start as NaN; B = 18
spans two batch blocks of 16, Dh = 24 is not a power of two."""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.helpers import (  # noqa: E402
    TOLERANCES,
    assert_close,
    nan_filled_outputs,  # noqa: F401 (autouse fixture: every output buffer starts as NaN)
    random_resets,
    random_slstm_inputs,
    random_slstm_state,
    slstm_true_units,
)
from xlstm_rl.kernels import (  # noqa: E402
    slstm_sequence,
    slstm_sequence_reference,
    slstm_step,
    slstm_step_reference,
)
from xlstm_rl.kernels.slstm.triton_sequence import slstm_sequence_triton  # noqa: E402
from xlstm_rl.kernels.slstm.triton_step import slstm_step_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32 = TOLERANCES[torch.float32]


# (B, T, H, Dh, resets, initial state)
CASES = [
    (2, 7, 2, 16, False, False),
    (3, 20, 2, 16, True, True),
    (2, 1, 1, 16, True, True),
    (18, 9, 2, 24, True, True),
    (2, 63, 1, 16, True, False),  # the spec's T = 63 and 200, with resets
    (2, 200, 1, 16, True, True),
]
IDS = [f"B{c[0]}-T{c[1]}-H{c[2]}-Dh{c[3]}-{'resets' if c[4] else 'none'}-"
       f"{'state' if c[5] else 'empty'}" for c in CASES]  # fmt: skip


def case_inputs(B, T, H, Dh, with_resets, with_state):
    g, R = random_slstm_inputs(B, T, H, Dh, seed=T + B)
    resets = random_resets(B, T, seed=T) if with_resets else None
    if resets is not None and B > 1 and T == 1:
        resets[1, 0] = False  # keep one row's state alive at T = 1
    state = random_slstm_state(B, H, Dh, seed=Dh) if with_state else None
    return g, R, resets, state


def to(xs, dtype=None):
    return None if xs is None else [x.detach().to(DEVICE, dtype) for x in xs]


def run_with_grads(fn, g, R, resets, state, dtype):
    """Outputs and gradients of a fixed random loss on h, and on the final state with
    c, n in true units (m detached), for g, R and the initial (c, n, m, h)."""
    g, R = (x.requires_grad_() for x in to((g, R), dtype))
    st = None if state is None else [s.requires_grad_() for s in to(state, dtype)]
    r = None if resets is None else resets.to(DEVICE)
    hs, (c, n, m, h) = fn(g, R, resets=r, state=st)
    gen = torch.Generator().manual_seed(11)
    scale = torch.exp(m.detach().double()).cpu()
    outs = (hs.double().cpu(), c.double().cpu() * scale, n.double().cpu() * scale, h.double().cpu())
    loss = sum((x * torch.randn(x.shape, generator=gen, dtype=torch.float64)).sum() for x in outs)
    loss.backward()
    return (hs, (c, n, m, h)), [g.grad, R.grad] + ([] if st is None else [s.grad for s in st])


@pytest.mark.parametrize("B, T, H, Dh, with_resets, with_state", CASES, ids=IDS)
def test_sequence_forward_and_state(B, T, H, Dh, with_resets, with_state):
    g, R, resets, state = case_inputs(B, T, H, Dh, with_resets, with_state)
    r = None if resets is None else resets.to(DEVICE)
    hs, S = slstm_sequence(*to((g, R)), resets=r, state=to(state), backend="triton")
    hs_ref, S_ref = slstm_sequence_reference(*to((g, R), torch.float64), resets=r,
                                             state=to(state, torch.float64))  # fmt: skip
    assert hs.dtype == torch.float32 and all(s.dtype == torch.float32 for s in S)
    assert_close(hs, hs_ref, FP32["h"], "h")
    for name, a, b in zip(("c", "n", "h"), slstm_true_units(S), slstm_true_units(S_ref)):
        assert_close(a, b, FP32["state"], f"{name} (true units)")


@pytest.mark.parametrize("B, T, H, Dh, with_resets, with_state", CASES, ids=IDS)
def test_sequence_gradients(B, T, H, Dh, with_resets, with_state):
    g, R, resets, state = case_inputs(B, T, H, Dh, with_resets, with_state)
    _, grads = run_with_grads(slstm_sequence_triton, g, R, resets, state, torch.float32)
    _, grads_ref = run_with_grads(slstm_sequence_reference, g, R, resets, state, torch.float64)
    assert len(grads) == (6 if with_state else 2)
    for name, a, b in zip(["g", "R", "c0", "n0", "m0", "h0"], grads, grads_ref):
        if name == "m0":  # the incoming stabiliser carries no gradient, in either form
            assert a is None and b is None
            continue
        assert a is not None, f"no gradient for {name}"
        assert_close(a, b, FP32["grad"], f"d{name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sequence_low_precision_forward(dtype):
    """g and R in bf16/fp16 (the kernel computes in float32) against the float64 loop
    on the same rounded inputs; h comes back in g's dtype."""
    g, R, resets, state = case_inputs(3, 20, 2, 16, True, True)
    g, R = g.to(dtype), R.to(dtype)
    r = resets.to(DEVICE)
    hs, S = slstm_sequence_triton(*to((g, R)), resets=r, state=to(state))
    hs_ref, S_ref = slstm_sequence_reference(*to((g, R), torch.float64), resets=r,
                                             state=to(state, torch.float64))  # fmt: skip
    assert hs.dtype == dtype
    assert_close(hs, hs_ref, TOLERANCES[dtype]["h"], "h")
    for name, a, b in zip(("c", "n", "h"), slstm_true_units(S), slstm_true_units(S_ref)):
        assert_close(a, b, TOLERANCES[dtype]["state"], f"{name} (true units)")


@pytest.mark.parametrize("with_state", [False, True])
def test_step_matches_reference(with_state):
    g, R = random_slstm_inputs(18, 1, 2, 24, seed=4)
    state = random_slstm_state(18, 2, 24, seed=4) if with_state else None
    reset = torch.zeros(18, dtype=torch.bool, device=DEVICE)
    reset[[0, 5, 17]] = True
    h, S = slstm_step(*to((g[:, 0], R)), to(state), reset=reset, backend="triton")
    h_ref, S_ref = slstm_step_reference(*to((g[:, 0], R), torch.float64),
                                        to(state, torch.float64), reset=reset)  # fmt: skip
    assert_close(h, h_ref, FP32["h"], "h")
    for name, a, b in zip("cnmh", S, S_ref):  # one step: both pick the same m
        assert_close(a, b, FP32["state"], name)


def test_sequence_equals_steps_and_halves():
    g, R, resets, state = case_inputs(3, 20, 2, 16, True, True)
    g, R, r = *to((g, R)), resets.to(DEVICE)
    hs, S = slstm_sequence_triton(g, R, resets=r, state=to(state))
    st, steps = to(state), []
    for t in range(20):
        h_t, st = slstm_step_triton(g[:, t], R, st, reset=r[:, t])
        steps.append(h_t)
    assert_close(torch.stack(steps, 1), hs, FP32["h"], "h, steps")
    hs1, S1 = slstm_sequence_triton(g[:, :9], R, resets=r[:, :9], state=to(state))
    hs2, S2 = slstm_sequence_triton(g[:, 9:], R, resets=r[:, 9:], state=S1)
    assert_close(torch.cat([hs1, hs2], 1), hs, FP32["h"], "h, two halves")
    for name, a, b, c in zip("cnh", slstm_true_units(st), slstm_true_units(S2),
                             slstm_true_units(S)):  # fmt: skip
        assert_close(a, c, FP32["state"], f"{name}, steps")
        assert_close(b, c, FP32["state"], f"{name}, two halves")


def test_reset_equals_separate_episodes():
    """Spec check 4: each row's episodes, run alone from the empty state, give the same h
    and final state as the batch with resets (consecutive resets and one at t = 0)."""
    B, T = 3, 24
    g, R, _, state = case_inputs(B, T, 2, 16, False, True)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, 0] = True
    resets[1, [9, 10, 23]] = True
    g, R, r = *to((g, R)), resets.to(DEVICE)
    hs, S = slstm_sequence_triton(g, R, resets=r, state=to(state))
    for b in range(B):
        cuts = sorted({0, T, *resets[b].nonzero().flatten().tolist()})
        row_state = None if resets[b, 0] else [s[b : b + 1] for s in to(state)]
        for start, stop in zip(cuts, cuts[1:]):
            h_ep, row_state = slstm_sequence_triton(g[b : b + 1, start:stop], R, state=row_state)
            assert_close(hs[b : b + 1, start:stop], h_ep, FP32["h"], f"row {b} h[{start}:{stop}]")
            final, row_state = row_state, None
        for name, x, y in zip("cnh", slstm_true_units([s[b : b + 1] for s in S]),
                              slstm_true_units(final)):  # fmt: skip
            assert_close(x, y, FP32["state"], f"row {b} final {name}")


def test_large_gates_stay_finite():
    """Spec check 6: i~ up to +-30 and f~ near +10 with recurrent mixing and resets, against
    the reference loop in float64. 300 steps under the interpreter; 20,000 on a GPU."""
    T = 20_000 if DEVICE == "cuda" else 300
    g, R = random_slstm_inputs(2, T, 1, 16, seed=6, gate_scale=1.0, r_scale=2.0)
    gen = torch.Generator().manual_seed(6)
    g[:, :, :, 0] = 60 * torch.rand(2, T, 1, 16, generator=gen) - 30
    g[:, :, :, 1] += 8.0
    resets = torch.zeros(2, T, dtype=torch.bool)
    resets[1, [T // 3, T // 3 + 1]] = True
    r = resets.to(DEVICE)
    hs, S = slstm_sequence_triton(*to((g, R)), resets=r)
    hs_ref, S_ref = slstm_sequence_reference(*to((g, R), torch.float64), resets=r)
    assert torch.isfinite(hs).all() and all(torch.isfinite(s).all() for s in S)
    assert_close(hs, hs_ref, FP32["h"], "h")
    for name, a, b in zip(("c", "n", "h"), slstm_true_units(S), slstm_true_units(S_ref)):
        assert_close(a, b, FP32["state"], f"{name} after {T:,} steps")


def test_signatures_match_the_reference():
    for fast, ref in ((slstm_sequence_triton, slstm_sequence_reference),
                      (slstm_step_triton, slstm_step_reference)):  # fmt: skip
        fast_params = list(inspect.signature(fast).parameters.values())
        ref_params = list(inspect.signature(ref).parameters.values())
        assert [(p.name, p.kind, p.default) for p in fast_params] == [
            (p.name, p.kind, p.default) for p in ref_params
        ]
