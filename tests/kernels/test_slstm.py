"""sLSTM CPU backends (the reference loop and its hand-written backward, "bptt") against an
independent true-unit loop and the spec's checks."""

from __future__ import annotations

import itertools

import pytest
import torch

from xlstm_rl.kernels import slstm_sequence, slstm_step

from .helpers import (
    TOLERANCES,
    assert_close,
    random_slstm_inputs,
    random_slstm_state,
    slstm_true_loop,
    slstm_true_units,
)

B, H, DH = 3, 2, 4
TOL = TOLERANCES[torch.float32]


@pytest.fixture(params=["reference", "bptt"])
def run(request):
    """slstm_sequence on one CPU backend; every test here runs on each."""

    def run(g, R, *, resets=None, state=None):
        return slstm_sequence(g, R, resets=resets, state=state, backend=request.param)

    return run


def assert_same_state(state, expected, tol, what="state"):
    """Compare (c, n, m, h) states in true units; `expected` may be (c_true, n_true, h)."""
    expected = slstm_true_units(expected) if len(expected) == 4 else expected
    for name, x, x_ref in zip("cnh", slstm_true_units(state), expected):
        assert_close(x, x_ref, tol, f"{what} {name}")


def row(x, b):
    if isinstance(x, tuple):
        return tuple(s[b : b + 1] for s in x)
    return x[b : b + 1]


def resets_for(T, seed):
    """Random resets plus row 0 at t = 0 and row 1 at two consecutive steps and the end."""
    resets = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.1
    resets[0, 0] = True
    resets[1, 0] = False
    resets[1, [T // 2, min(T // 2 + 1, T - 1), T - 1]] = True
    resets[2] = False
    return resets


@pytest.mark.parametrize("with_state", [False, True], ids=["empty", "state"])
@pytest.mark.parametrize("T", [1, 7, 63])
def test_matches_true_unit_loop(T, with_state, run):
    g, R = random_slstm_inputs(B, T, H, DH, seed=T)
    resets = resets_for(T, seed=T)
    state = random_slstm_state(B, H, DH, seed=T) if with_state else None
    h_ref, state_ref = slstm_true_loop(g, R, resets=resets, state=state)
    h, state_out = run(g, R, resets=resets, state=state)
    assert h.shape == (B, T, H, DH) and h.dtype == torch.float32
    assert all(s.dtype == torch.float32 for s in state_out)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(state_out, state_ref, TOL["state"])


def test_sequence_equals_steps(run):
    T = 25
    g, R = random_slstm_inputs(B, T, H, DH, seed=1)
    resets = resets_for(T, seed=1)
    state = random_slstm_state(B, H, DH, seed=1)
    h_seq, state_seq = run(g, R, resets=resets, state=state)
    step_state, hs = state, []
    for t in range(T):
        h_t, step_state = slstm_step(g[:, t], R, step_state, reset=resets[:, t])
        hs.append(h_t)
    assert_close(h_seq, torch.stack(hs, dim=1), TOL["h"], "h")
    assert_same_state(state_seq, step_state, TOL["state"])


@pytest.mark.parametrize("split", [1, 12, 24])
def test_two_halves_equal_one_pass(split, run):
    T = 25
    g, R = random_slstm_inputs(B, T, H, DH, seed=2)
    resets = resets_for(T, seed=2)
    state = random_slstm_state(B, H, DH, seed=2)
    h_full, state_full = run(g, R, resets=resets, state=state)
    h_a, state_a = run(g[:, :split], R, resets=resets[:, :split], state=state)
    h_b, state_b = run(g[:, split:], R, resets=resets[:, split:], state=state_a)
    assert_close(torch.cat([h_a, h_b], dim=1), h_full, TOL["h"], "h")
    assert_same_state(state_b, state_full, TOL["state"])


def test_reset_equals_separate_episodes_per_row(run):
    """Row 0 resets mid-sequence, row 1 never, row 2 at t = 0 and twice in a row."""
    T = 30
    g, R = random_slstm_inputs(B, T, H, DH, seed=3)
    state = random_slstm_state(B, H, DH, seed=3)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, 13] = True
    resets[2, [0, 20, 21]] = True
    h, state_out = run(g, R, resets=resets, state=state)
    for b in range(B):
        cuts = sorted({0, T, *resets[b].nonzero().flatten().tolist()})
        episode_state = None if resets[b, 0] else row(state, b)
        for start, stop in itertools.pairwise(cuts):
            h_ep, final = run(row(g, b)[:, start:stop], R, state=episode_state)
            assert_close(h[b : b + 1, start:stop], h_ep, TOL["h"], f"row {b} h[{start}:{stop}]")
            episode_state = None
        assert_same_state(row(state_out, b), final, TOL["state"], f"row {b} final state")


def test_empty_state_is_decided_per_row(run):
    """An initial state that is empty (all zeros) in one row only: each row runs as if
    alone, and the stabiliser after the first step follows the spec's rule row by row:
    m_1 = i~ in the empty row, max(log f + m_0, i~) in the others. (The rule changes m
    only, not h: with ordinary gates, deciding for the whole batch or never gives the same
    outputs, so m is checked directly.)"""
    T = 12
    g, R = random_slstm_inputs(B, T, H, DH, seed=4)
    g[:, 0, :, 0] -= 4.0  # i~ mostly below log f + m_0, where the two rules differ
    state = tuple(s.clone() for s in random_slstm_state(B, H, DH, seed=4))
    for s in state:
        s[1] = 0.0
    _, (_, _, m1, _) = run(g[:, :1], R, state=state)
    c0, n0, m0, h0 = state
    pre = g[:, 0] + torch.einsum("bhd,hdge->bhge", h0, R)  # (B, H, 4, Dh), gates i, f, z, o
    i_pre, f_pre = pre[:, :, 0], pre[:, :, 1]
    expected = torch.maximum(torch.nn.functional.logsigmoid(f_pre) + m0, i_pre)
    expected[1] = i_pre[1]  # the empty row
    assert (expected[1] != torch.maximum(torch.nn.functional.logsigmoid(f_pre[1]), i_pre[1])).any()
    assert_close(m1, expected, TOL["h"], "m after the first step")
    h, _ = run(g, R, state=state)
    for b in range(B):
        h_alone, _ = run(row(g, b), R, state=None if b == 1 else row(state, b))
        assert_close(h[b : b + 1], h_alone, TOL["h"], f"row {b}")
    h_ref, _ = slstm_true_loop(g, R, state=state)
    assert_close(h, h_ref, TOL["h"], "h vs true loop")


@pytest.mark.parametrize("backend", ["reference", "bptt", "triton"])
def test_very_negative_input_gate_at_an_empty_state(backend):
    """From the empty state the first step's h is sigmoid(o~) tanh(z~) whatever i~ is: an
    i~ of -120 (so f' = exp(log f - i~) would overflow float32) stays finite, as does the
    gradient of every input; rows with a state are untouched by the cap."""
    if backend == "triton":
        pytest.importorskip("triton")
    T = 5
    g, R = random_slstm_inputs(B, T, H, DH, seed=8)
    g[:, 0, :, 0] = -120.0  # i~ at t = 0, every row
    g[:, 3, :, 0] = -120.0  # and after row 2's reset at t = 3
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[2, 3] = True
    state = tuple(s.clone() for s in random_slstm_state(B, H, DH, seed=8))
    for s in state:
        s[0] = 0.0  # row 0 starts empty; rows 1, 2 carry a state
    g.requires_grad_()
    # Triton: on the GPU where there is one, else on the CPU under the interpreter
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    h, _ = slstm_sequence(g.to(device), R.to(device), resets=resets.to(device),
                          state=tuple(s.to(device) for s in state), backend=backend)  # fmt: skip
    h = h.cpu()
    first = torch.sigmoid(g[0, 0, :, 3]) * torch.tanh(g[0, 0, :, 2])
    assert_close(h[0, 0], first, TOL["h"], "row 0, t = 0")
    after_reset = h[2, 3]  # empty state again: the recurrent input h_prev is zero
    pre = g[2, 3]
    assert_close(after_reset, torch.sigmoid(pre[:, 3]) * torch.tanh(pre[:, 2]), TOL["h"], "reset")
    assert torch.isfinite(h).all()
    h.sum().backward()
    assert torch.isfinite(g.grad).all()
    h_ref, _ = slstm_true_loop(g.detach().double(), R.double(), resets=resets, state=state)
    assert_close(h, h_ref, TOL["h"], "h vs true loop")


GRAD_NAMES = ("g", "R", "c0", "n0", "h0")


def true_loop_grads(g, R, state, resets, weights):
    """Gradients of a random linear loss of h and the final true-unit state, in float64."""
    leaves = [x.detach().double().requires_grad_() for x in (g, R, state[0], state[1], state[3])]
    g64, R64, c0, n0, h0 = leaves
    h, final = slstm_true_loop(g64, R64, resets=resets, state=(c0, n0, state[2].double(), h0))
    loss = sum((x * w).sum() for x, w in zip((h, *final), weights))
    loss.backward()
    return dict(zip(GRAD_NAMES, (x.grad for x in leaves)))


def backend_grads(run, g, R, state, resets, weights, dtype):
    leaves = [x.detach().to(dtype).requires_grad_() for x in (g, R, state[0], state[1], state[3])]
    g_, R_, c0, n0, h0 = leaves
    h, final = run(g_, R_, resets=resets, state=(c0, n0, state[2].to(dtype), h0))
    loss = sum((x.double() * w).sum() for x, w in zip((h, *slstm_true_units(final)), weights))
    loss.backward()
    return dict(zip(GRAD_NAMES, (x.grad for x in leaves)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_gradients_match_float64_true_loop(dtype, run):
    T = 30
    g, R = random_slstm_inputs(B, T, H, DH, seed=5)
    state = random_slstm_state(B, H, DH, seed=5)
    resets = resets_for(T, seed=5)
    gen = torch.Generator().manual_seed(5)
    weights = [
        torch.randn(s, generator=gen, dtype=torch.float64)
        for s in ((B, T, H, DH),) + ((B, H, DH),) * 3
    ]
    expected = true_loop_grads(g, R, state, resets, weights)
    grads = backend_grads(run, g, R, state, resets, weights, dtype)
    for name in GRAD_NAMES:
        assert grads[name] is not None, f"no gradient for {name}"
        assert_close(grads[name], expected[name], TOLERANCES[dtype]["grad"], f"d{name}")


def test_20000_steps_stay_finite(run):
    """i~ up to +-30, f~ near +10 and recurrent mixing: 20,000 steps stay finite, and
    agree with the same loop in float64."""
    T = 20_000
    g, R = random_slstm_inputs(2, T, 2, 4, seed=6, gate_scale=1.0, r_scale=2.0)
    g[:, :, :, 0] = 60 * torch.rand(2, T, 2, 4, generator=torch.Generator().manual_seed(6)) - 30
    g[:, :, :, 1] += 8.0
    resets = torch.zeros(2, T, dtype=torch.bool)
    resets[1, [7_000, 7_001, 15_000]] = True
    h, state = run(g, R, resets=resets)
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in state)
    h64, state64 = run(g.double(), R.double(), resets=resets)
    assert_close(h, h64, TOL["h"], "h")
    assert_same_state(state, state64, TOL["state"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_inputs(dtype, run):
    T = 20
    g, R = random_slstm_inputs(B, T, H, DH, seed=7)
    g_low, R_low = g.to(dtype), R.to(dtype)
    h_low, state_low = run(g_low, R_low, resets=resets_for(T, seed=7))
    h_wide, state_wide = run(g_low.float(), R_low.float(), resets=resets_for(T, seed=7))
    assert h_low.dtype == dtype
    assert all(s.dtype == torch.float32 for s in state_low)
    assert_close(h_low, h_wide, TOLERANCES[dtype]["h"], "h")
    assert_same_state(state_low, state_wide, TOLERANCES[dtype]["state"])


@pytest.mark.parametrize("wanted", ["g", "R", "h0"])
def test_bptt_gradient_of_one_input_alone(wanted):
    """The hand-written backward when only one input asks for a gradient and the loss
    reads only the final state (no gradient arrives through h): the reference's
    gradient, to float64 rounding."""
    T = 17
    g, R = (x.double() for x in random_slstm_inputs(B, T, H, DH, seed=9))
    state = tuple(s.double() for s in random_slstm_state(B, H, DH, seed=9))
    resets = resets_for(T, seed=9)
    grads = {}
    for backend in ("reference", "bptt"):
        inputs = {"g": g.clone(), "R": R.clone(), "h0": state[3].clone()}
        inputs[wanted].requires_grad_()
        _, final = slstm_sequence(inputs["g"], inputs["R"], resets=resets, backend=backend,
                                  state=(*state[:3], inputs["h0"]))  # fmt: skip
        c, n, _, h = final
        (c.sum() + 2 * n.sum() - h.sum()).backward()
        grads[backend] = inputs[wanted].grad
    assert_close(grads["bptt"], grads["reference"], 1e-12, f"d{wanted}")


def test_bptt_output_changed_in_place():
    """The backward does not read the returned h: a caller may change it in place and
    still get the reference's gradients."""
    g, R = random_slstm_inputs(B, 6, H, DH, seed=10)
    grads = {}
    for backend in ("reference", "bptt"):
        g_ = g.clone().requires_grad_()
        h, _ = slstm_sequence(g_, R, backend=backend)
        h = h.clone() if backend == "reference" else h  # autograd refuses it in place there
        h.mul_(2.0)
        h.square().sum().backward()
        grads[backend] = g_.grad
    assert_close(grads["bptt"], grads["reference"], 1e-6, "dg")


def test_bptt_capped_forget_gate_passes_no_gradient():
    """Where f' = exp(log f - i~) is capped (an empty n with an i~ far below it), the
    reference's clamp passes no gradient to f~; the hand-written backward neither, also
    for a hand-built state with n = 0 but c != 0 (the cap's term is then not zero)."""
    g = torch.randn(2, 3, 1, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    g[:, 0, :, 0] = -100.0
    R = 0.1 * torch.randn(1, 2, 4, 2, dtype=torch.float64)
    c0 = torch.ones(2, 1, 2, dtype=torch.float64)
    zeros = torch.zeros_like(c0)
    grads = {}
    for backend in ("reference", "bptt"):
        g_ = g.clone().requires_grad_()
        h, _ = slstm_sequence(g_, R, state=(c0, zeros, zeros, zeros), backend=backend)
        h.sum().backward()
        grads[backend] = g_.grad
    assert (grads["reference"][:, 0, :, 1] == 0).all()
    assert_close(grads["bptt"], grads["reference"], 1e-12, "dg")
