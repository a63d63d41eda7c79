"""mLSTM torch backends against the spec's checks (see the spec's "Checks" section).

Every sequence backend is checked against an independent float64 loop of the
true-unit equations, against the step form, against itself split in two or cut at
a reset, and for gradients against float64 autograd through the reference loop.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from xlstm_rl.kernels import backends, mlstm_sequence, mlstm_step

from .helpers import (
    MLSTM_TORCH_BACKENDS,
    TOLERANCES,
    assert_close,
    mlstm_true_loop,
    random_inputs,
    random_resets,
    random_state,
    true_units,
)

B, H, DK, DV = 3, 2, 8, 6
CHUNK = 16
TOL = TOLERANCES[torch.float32]


def run(backend, q, k, v, i, f, *, resets=None, state=None, chunk_size=CHUNK):
    return mlstm_sequence(
        q, k, v, i, f, resets=resets, state=state, backend=backend, chunk_size=chunk_size
    )


def assert_same_state(state, expected, tol, what="state"):
    """Compare two stabilised states in true units; `expected` may be true-unit (C, n)."""
    C, n = true_units(state)
    C_ref, n_ref = true_units(expected) if len(expected) == 3 else expected
    assert_close(C, C_ref, tol, f"{what} C")
    assert_close(n, n_ref, tol, f"{what} n")


def row(x, b):
    """Batch row b of a tensor or a state, keeping the batch axis."""
    if isinstance(x, tuple):
        return tuple(s[b : b + 1] for s in x)
    return x[b : b + 1]


def time_slice(inputs, start, stop):
    """Steps [start, stop) of (q, k, v, i, f)."""
    return tuple(x[:, :, start:stop] for x in inputs)


def at(inputs, t):
    """Step t of (q, k, v, i, f), shaped for mlstm_step."""
    return tuple(x[:, :, t] for x in inputs)


def test_torch_backends_are_registered():
    assert set(MLSTM_TORCH_BACKENDS) <= set(backends("mlstm_sequence"))
    assert "reference" in backends("mlstm_step")


@pytest.mark.parametrize("with_state", [False, True], ids=["empty", "state"])
@pytest.mark.parametrize("T", [1, 7, 63, 200])
@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_matches_true_unit_loop(backend, T, with_state):
    inputs = random_inputs(B, H, T, DK, DV, seed=T)
    resets = random_resets(B, T, seed=T)
    state = random_state(B, H, DK, DV, seed=T) if with_state else None
    h_ref, state_ref = mlstm_true_loop(*inputs, resets=resets, state=state)
    h, state_out = run(backend, *inputs, resets=resets, state=state)
    assert h.dtype == torch.float32 and all(s.dtype == torch.float32 for s in state_out)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(state_out, state_ref, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_denominator_floor_is_scale_free_at_large_m(backend):
    """i~ near 12 puts m near 12; tiny q makes |q.n| straddle the floor max(., 1) in true
    units. A bare "+ eps" in the stabilised denominator is eps * exp(m) here."""
    T = 40
    q, k, v, i, f = random_inputs(B, H, T, DK, DV, seed=5, i_range=(10.0, 14.0))
    q = q * 1e-6
    resets = random_resets(B, T, seed=5)
    state = random_state(B, H, DK, DV, seed=5, m_range=(10.0, 14.0))
    h_ref, state_ref = mlstm_true_loop(q, k, v, i, f, resets=resets, state=state)
    h, state_out = run(backend, q, k, v, i, f, resets=resets, state=state)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(state_out, state_ref, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_stabiliser_of_initial_state_only_changes_units(backend):
    """(C, n, m) and (C e^-s, n e^-s, m + s) are the same true state: same outputs."""
    T = 30
    inputs = random_inputs(B, H, T, DK, DV, seed=6)
    resets = random_resets(B, T, seed=6)
    C, n, m = random_state(B, H, DK, DV, seed=6)
    shift = torch.tensor([[-8.0, 9.0]]).expand(B, H)
    shifted = (C * torch.exp(-shift)[..., None, None], n * torch.exp(-shift)[..., None], m + shift)
    h, state = run(backend, *inputs, resets=resets, state=(C, n, m))
    h_shifted, state_shifted = run(backend, *inputs, resets=resets, state=shifted)
    assert_close(h_shifted, h, TOL["h"], "h")
    assert_same_state(state_shifted, state, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_sequence_equals_steps(backend):
    T = 29
    inputs = random_inputs(B, H, T, DK, DV, seed=7)
    resets = random_resets(B, T, seed=7)
    state = random_state(B, H, DK, DV, seed=7)
    h_seq, state_seq = run(backend, *inputs, resets=resets, state=state)
    step_state, hs = state, []
    for t in range(T):
        h_t, step_state = mlstm_step(
            *at(inputs, t), step_state, reset=resets[:, t], backend="reference"
        )
        hs.append(h_t)
    assert_close(h_seq, torch.stack(hs, dim=2), TOL["h"], "h")
    assert_same_state(state_seq, step_state, TOL["state"])


def test_step_without_state_or_reset_starts_empty():
    inputs = random_inputs(B, H, 1, DK, DV, seed=8)
    state = random_state(B, H, DK, DV, seed=8)
    h_none, s_none = mlstm_step(*at(inputs, 0), None)
    h_reset, s_reset = mlstm_step(*at(inputs, 0), state, reset=torch.ones(B, dtype=torch.bool))
    h_ref, state_ref = mlstm_true_loop(*inputs)
    assert_close(h_none, h_ref[:, :, 0], TOL["h"], "h from None")
    assert_close(h_reset, h_ref[:, :, 0], TOL["h"], "h after reset")
    assert_same_state(s_none, state_ref, TOL["state"])
    assert_same_state(s_reset, state_ref, TOL["state"])


@pytest.mark.parametrize("split", [1, 16, 21, 32, 49])
@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_two_halves_equal_one_pass(backend, split):
    """Splits on and off the chunk boundaries (chunk 16) and next to either end."""
    T = 50
    inputs = random_inputs(B, H, T, DK, DV, seed=9)
    resets = random_resets(B, T, seed=9)
    state = random_state(B, H, DK, DV, seed=9)
    h_full, state_full = run(backend, *inputs, resets=resets, state=state)
    h_a, state_a = run(
        backend, *time_slice(inputs, 0, split), resets=resets[:, :split], state=state
    )
    h_b, state_b = run(
        backend, *time_slice(inputs, split, T), resets=resets[:, split:], state=state_a
    )
    assert_close(torch.cat([h_a, h_b], dim=2), h_full, TOL["h"], "h")
    assert_same_state(state_b, state_full, TOL["state"])


@pytest.mark.parametrize("first, second", list(itertools.permutations(MLSTM_TORCH_BACKENDS, 2)))
def test_states_are_interchangeable_between_backends(first, second):
    T, split = 40, 19
    inputs = random_inputs(B, H, T, DK, DV, seed=10)
    resets = random_resets(B, T, seed=10)
    state = random_state(B, H, DK, DV, seed=10)
    h_ref, state_ref = mlstm_true_loop(*inputs, resets=resets, state=state)
    h_a, state_a = run(first, *time_slice(inputs, 0, split), resets=resets[:, :split], state=state)
    h_b, state_b = run(
        second, *time_slice(inputs, split, T), resets=resets[:, split:], state=state_a
    )
    assert_close(torch.cat([h_a, h_b], dim=2), h_ref, TOL["h"], "h")
    assert_same_state(state_b, state_ref, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_reset_equals_separate_episodes_per_row(backend):
    """Row 0 resets mid-chunk, row 1 never, row 2 at t = 0 and on a chunk boundary
    followed by a second reset; each row must equal its own episodes run alone."""
    T = 45
    inputs = random_inputs(B, H, T, DK, DV, seed=11)
    state = random_state(B, H, DK, DV, seed=11)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, 20] = True
    resets[2, [0, 32, 33]] = True
    h, state_out = run(backend, *inputs, resets=resets, state=state)
    for b in range(B):
        cuts = sorted({0, T, *resets[b].nonzero().flatten().tolist()})
        row_inputs = tuple(row(x, b) for x in inputs)
        episode_state = None if resets[b, 0] else row(state, b)
        for start, stop in itertools.pairwise(cuts):
            h_ep, final = run(backend, *time_slice(row_inputs, start, stop), state=episode_state)
            assert_close(h[b : b + 1, :, start:stop], h_ep, TOL["h"], f"row {b} h[{start}:{stop}]")
            episode_state = None
        assert_same_state(row(state_out, b), final, TOL["state"], f"row {b} final state")


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_no_resets_equals_all_false_resets(backend):
    T = 20
    inputs = random_inputs(B, H, T, DK, DV, seed=12)
    state = random_state(B, H, DK, DV, seed=12)
    h_none, s_none = run(backend, *inputs, state=state)
    h_false, s_false = run(
        backend, *inputs, resets=torch.zeros(B, T, dtype=torch.bool), state=state
    )
    assert_close(h_false, h_none, TOL["h"], "h")
    assert_same_state(s_false, s_none, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_inputs_and_state_are_not_modified(backend):
    T = 20
    inputs = random_inputs(B, H, T, DK, DV, seed=13, requires_grad=True)
    state = random_state(B, H, DK, DV, seed=13, requires_grad=True)
    resets = random_resets(B, T, seed=13)
    before = [x.detach().clone() for x in (*inputs, *state, resets)]
    h, (C, n, m) = run(backend, *inputs, resets=resets, state=state)
    (h.sum() + C.sum() + n.sum()).backward()
    for x, x_before in zip((*inputs, *state, resets), before):
        assert torch.equal(x.detach(), x_before)


def test_auto_is_the_chunkwise_form_on_cpu():
    T = 33
    inputs = random_inputs(B, H, T, DK, DV, seed=14)
    resets = random_resets(B, T, seed=14)
    h_auto, s_auto = mlstm_sequence(*inputs, resets=resets, backend="auto", chunk_size=CHUNK)
    h_chunk, s_chunk = run("chunkwise", *inputs, resets=resets)
    assert torch.equal(h_auto, h_chunk)
    assert all(torch.equal(a, b) for a, b in zip(s_auto, s_chunk))


def loss_weights(batch, T, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((batch, H, T, DV), (batch, H, DK, DV), (batch, H, DK))
    return tuple(torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes)


def scalar_loss(h, true_state, weights):
    """A random linear function of h and of the final state in true units."""
    w_h, w_C, w_n = weights
    C, n = true_state
    return (h.double() * w_h).sum() + (C * w_C).sum() + (n * w_n).sum()


GRAD_NAMES = ("q", "k", "v", "i", "f", "C0", "n0")


def backend_grads(backend, inputs, state, resets, weights, dtype, chunk_size=CHUNK):
    """Gradients of scalar_loss w.r.t. q, k, v, i, f and the initial (C, n), run in `dtype`."""
    leaves = [x.detach().to(dtype).requires_grad_() for x in inputs]
    C0, n0 = (s.detach().to(dtype).requires_grad_() for s in state[:2])
    h, final = run(
        backend, *leaves, resets=resets, state=(C0, n0, state[2].to(dtype)), chunk_size=chunk_size
    )
    scalar_loss(h, true_units(final), weights).backward()
    return dict(zip(GRAD_NAMES, (x.grad for x in (*leaves, C0, n0))))


def reference_grads(inputs, state, resets, weights):
    return backend_grads("reference", inputs, state, resets, weights, torch.float64)


def assert_same_grads(grads, expected, tol):
    for name in GRAD_NAMES:
        assert grads[name] is not None, f"no gradient for {name}"
        assert_close(grads[name], expected[name], tol, f"d{name}")


def grad_problem(T, seed, resets=None):
    """float64 inputs, initial state, resets (random unless given) and loss weights."""
    batch = B if resets is None else resets.shape[0]
    inputs = random_inputs(batch, H, T, DK, DV, seed=seed, dtype=torch.float64)
    state = random_state(batch, H, DK, DV, seed=seed, dtype=torch.float64)
    if resets is None:
        resets = random_resets(batch, T, seed=seed)
    return inputs, state, resets, loss_weights(batch, T, seed)


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_float32_gradients_match_float64_reference(backend):
    inputs, state, resets, weights = grad_problem(T=40, seed=15)
    expected = reference_grads(inputs, state, resets, weights)
    grads = backend_grads(backend, inputs, state, resets, weights, torch.float32)
    assert_same_grads(grads, expected, TOL["grad"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_float64_gradients_match_float64_reference_tightly(backend):
    inputs, state, resets, weights = grad_problem(T=40, seed=16)
    expected = reference_grads(inputs, state, resets, weights)
    grads = backend_grads(backend, inputs, state, resets, weights, torch.float64)
    assert_same_grads(grads, expected, TOLERANCES[torch.float64]["grad"])


def test_initial_m_carries_no_gradient():
    """The spec: every input gets a gradient except m, whose gradient is zero by
    construction (the stabiliser, incoming or computed, carries no gradient)."""
    inputs, (C, n, m), resets, weights = grad_problem(T=30, seed=40)
    for backend in MLSTM_TORCH_BACKENDS:
        C0, n0, m0 = (x.detach().clone().requires_grad_() for x in (C, n, m))
        h, final = run(backend, *inputs, resets=resets, state=(C0, n0, m0))
        scalar_loss(h, true_units(final), weights).backward()
        assert m0.grad is None or not m0.grad.any(), f"{backend}: the initial m got a gradient"
        assert C0.grad.abs().sum() > 0 and n0.grad.abs().sum() > 0, backend
        assert not final[2].requires_grad, f"{backend}: the output stabiliser carries gradient"


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_non_contiguous_inputs(backend):
    """Modules hand over (B, T, H, D) projections transposed to (B, H, T, D)."""
    T = 37
    inputs = random_inputs(B, H, T, DK, DV, seed=41)
    strided = tuple(x.transpose(1, 2).contiguous().transpose(1, 2) for x in inputs)
    resets = random_resets(B, T, seed=41)
    strided_resets = resets.t().contiguous().t()
    state = random_state(B, H, DK, DV, seed=41)
    assert not any(x.is_contiguous() for x in (*strided, strided_resets))
    h, final = run(backend, *inputs, resets=resets, state=state)
    h_strided, final_strided = run(backend, *strided, resets=strided_resets, state=state)
    assert_close(h_strided, h, TOL["h"], "h")
    assert_same_state(final_strided, final, TOL["state"])


def test_reference_gradients_match_true_unit_loop():
    """The gradient oracle itself: float64 autograd through the stabilised reference
    equals float64 autograd through the true-unit equations."""
    inputs, state, resets, weights = grad_problem(T=40, seed=17)
    grads = reference_grads(inputs, state, resets, weights)
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    C0, n0 = (s.detach().clone().requires_grad_() for s in state[:2])
    h, final = mlstm_true_loop(*leaves, resets=resets, state=(C0, n0, state[2]))
    scalar_loss(h, final, weights).backward()
    expected = dict(zip(GRAD_NAMES, (x.grad for x in (*leaves, C0, n0))))
    assert_same_grads(grads, expected, TOLERANCES[torch.float64]["grad"])


def nonnegative_qk(inputs):
    """q, k >= 0, so q.n sums nonnegative terms. With i~ up to 30 the floor exp(-m) is
    tiny, and for signed q, k a step where q.n nearly cancels makes h ill-conditioned:
    float32 cannot resolve it in any form (about 1 step in 1000 misses 2e-4). Finiteness
    is checked with signed q, k; agreement with float64 on these well-posed rows."""
    q, k, v, i, f = inputs
    return (q.abs(), k.abs(), v, i, f)


def test_20000_recurrent_steps_stay_finite():
    """i~ up to +-30 and f~ near +10 (memory of ~20,000 steps): the step loop stays
    finite (row 1: signed q, k, with resets) and agrees with the chunkwise form in
    float64 (row 0: nonnegative q, k)."""
    T = 20_000
    inputs = random_inputs(2, 2, T, 4, 4, seed=18, i_range=(-30.0, 30.0), f_range=(9.0, 11.0))
    well_posed = nonnegative_qk(inputs)
    inputs = tuple(torch.cat([a[:1], b[1:]]) for a, b in zip(well_posed, inputs))
    resets = torch.zeros(2, T, dtype=torch.bool)
    resets[1, [5_000, 12_345]] = True
    state, hs = None, []
    for t in range(T):
        h_t, state = mlstm_step(*at(inputs, t), state, reset=resets[:, t])
        hs.append(h_t)
    h = torch.stack(hs, dim=2)
    assert torch.isfinite(h).all()
    assert all(torch.isfinite(s).all() for s in state)
    inputs64 = tuple(x.double() for x in inputs)
    h64, state64 = run("chunkwise", *inputs64, resets=resets, chunk_size=64)
    assert_close(h[:1], h64[:1], TOL["h"], "h")
    assert_same_state(state, state64, TOL["state"])


@pytest.mark.parametrize("backend", ["chunkwise", "parallel"])
def test_long_sequence_with_large_gates_matches_reference(backend):
    """i~ up to +-30 over 4096 steps (512 for the quadratic form): finite with signed
    q, k, and equal to the float64 reference loop on well-posed (nonnegative) q, k."""
    T = 4096 if backend == "chunkwise" else 512
    inputs = random_inputs(2, 2, T, 4, 4, seed=19, i_range=(-30.0, 30.0), f_range=(-2.0, 10.0))
    resets = torch.zeros(2, T, dtype=torch.bool)
    resets[:, [T // 3, T // 3 + 1, T - 1]] = True
    C, n, m = random_state(2, 2, 4, 4, seed=19, m_range=(-30.0, 30.0))
    state = (C, n.abs(), m)
    h_signed, final = run(backend, *inputs, resets=resets, state=state, chunk_size=64)
    assert torch.isfinite(h_signed).all() and all(torch.isfinite(s).all() for s in final)
    inputs = nonnegative_qk(inputs)
    h, final = run(backend, *inputs, resets=resets, state=state, chunk_size=64)
    inputs64 = tuple(x.double() for x in inputs)
    h_ref, final_ref = run("reference", *inputs64, resets=resets, state=state)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(final, final_ref, TOL["state"])


@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_gates_at_the_edge_of_the_supported_range(backend):
    """i~ = +-60 (the spec's supported limit) and f~ anywhere in [-60, 60]."""
    T = 50
    inputs = random_inputs(B, H, T, DK, DV, seed=42, f_range=(-60.0, 60.0))
    q, k, v, _, f = nonnegative_qk(inputs)
    sign = torch.randint(0, 2, (B, H, T), generator=torch.Generator().manual_seed(42))
    i = 60.0 * (2.0 * sign - 1.0)
    resets = random_resets(B, T, seed=42)
    h_ref, state_ref = mlstm_true_loop(q, k, v, i, f, resets=resets)
    h, final = run(backend, q, k, v, i, f, resets=resets)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(final, state_ref, TOL["state"])


def awkward_resets(T):
    """Row 0: t = 0 and the last step; row 1: every chunk boundary (chunk 16);
    row 2: one step before a boundary, then two consecutive steps; row 3: none;
    row 4: every step."""
    resets = torch.zeros(5, T, dtype=torch.bool)
    resets[0, [0, T - 1]] = True
    resets[1, list(range(CHUNK, T, CHUNK))] = True
    resets[2, [t for t in (CHUNK - 1, 20, 21) if t < T]] = True
    resets[4] = True
    return resets


@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 63])
def test_chunkwise_any_length_and_resets_anywhere(T):
    inputs = random_inputs(5, H, T, DK, DV, seed=20 + T)
    state = random_state(5, H, DK, DV, seed=20 + T)
    resets = awkward_resets(T)
    h_ref, state_ref = mlstm_true_loop(*inputs, resets=resets, state=state)
    h, final = run("chunkwise", *inputs, resets=resets, state=state, chunk_size=CHUNK)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(final, state_ref, TOL["state"])


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 64, 100])
def test_chunkwise_same_for_every_chunk_size(chunk_size):
    T = 63
    inputs = random_inputs(5, H, T, DK, DV, seed=30)
    state = random_state(5, H, DK, DV, seed=30)
    resets = awkward_resets(T)
    h_ref, state_ref = mlstm_true_loop(*inputs, resets=resets, state=state)
    h, final = run("chunkwise", *inputs, resets=resets, state=state, chunk_size=chunk_size)
    assert_close(h, h_ref, TOL["h"], "h")
    assert_same_state(final, state_ref, TOL["state"])


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunkwise_gradients_for_every_chunk_size(chunk_size):
    inputs, state, resets, weights = grad_problem(T=40, seed=31, resets=awkward_resets(40))
    expected = reference_grads(inputs, state, resets, weights)
    grads = backend_grads("chunkwise", inputs, state, resets, weights, torch.float32, chunk_size)
    assert_same_grads(grads, expected, TOL["grad"])


@pytest.mark.parametrize("gates_too", [False, True], ids=["f32_gates", "low_gates"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", MLSTM_TORCH_BACKENDS)
def test_low_precision_inputs(backend, dtype, gates_too):
    """Low-precision q, k, v (and gates): h in that dtype, states in float32, both close
    to the float32 run on the same (rounded) values; gradients likewise."""
    T = 40
    q, k, v, i, f = random_inputs(B, H, T, DK, DV, seed=32)
    low = [x.to(dtype) for x in (q, k, v)] + [x.to(dtype) if gates_too else x for x in (i, f)]
    low = [x.requires_grad_() for x in low]
    wide = [x.detach().float().requires_grad_() for x in low]
    state = random_state(B, H, DK, DV, seed=32)
    resets = random_resets(B, T, seed=32)
    h_low, s_low = run(backend, *low, resets=resets, state=state)
    h_wide, s_wide = run(backend, *wide, resets=resets, state=state)
    assert h_low.dtype == dtype
    assert all(s.dtype == torch.float32 for s in s_low)
    tol = TOLERANCES[dtype]
    assert_close(h_low, h_wide, tol["h"], "h")
    assert_same_state(s_low, s_wide, tol["state"])
    w_h = torch.randn(h_wide.shape, generator=torch.Generator().manual_seed(32))
    (h_low.float() * w_h).sum().backward()
    (h_wide * w_h).sum().backward()
    for name, x_low, x_wide in zip("qkvif", low, wide):
        assert x_low.grad.dtype == x_low.dtype
        assert_close(x_low.grad, x_wide.grad, tol["grad"], f"d{name}")
