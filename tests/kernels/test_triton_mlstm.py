"""Triton mLSTM kernels against the float64 reference loop, on the CPU under Triton's
interpreter (tests/conftest.py turns it on when there is no GPU) or on a GPU.

Every output buffer the kernels allocate starts as NaN here, so an element a kernel
forgot to write fails the finiteness check. Shapes are tiny to keep the
interpreter fast; chunk 16 with T up to 40 still crosses chunk boundaries and
leaves a partial last chunk.
"""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("triton")

from tests.kernels.helpers import (  # noqa: E402
    TOLERANCES,
    assert_close,
    nan_filled_outputs,  # noqa: F401 (autouse fixture: every output buffer starts as NaN)
    random_inputs,
    random_resets,
    random_state,
    true_units,
)
from xlstm_rl.kernels import (  # noqa: E402
    mlstm_sequence,
    mlstm_sequence_chunkwise,
    mlstm_sequence_reference,
    mlstm_step_reference,
    triton_backends,
)
from xlstm_rl.kernels.mlstm.triton_chunkwise import mlstm_sequence_triton  # noqa: E402
from xlstm_rl.kernels.mlstm.triton_step import mlstm_step_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32 = TOLERANCES[torch.float32]


def make_resets(kind: str | None, B: int, T: int) -> torch.Tensor | None:
    if kind is None:
        return None
    if kind == "random":
        return random_resets(B, T, seed=T)
    resets = torch.zeros(B, T, dtype=torch.bool)
    if kind == "t0":  # row 1 keeps its state: with T = 1 and no state dq would be exactly 0
        resets[0, 0] = True
    elif kind == "boundaries":  # chunk 16: at a chunk start, its last step, consecutive
        resets[0, [0, 16, 17]] = True
        resets[1, [15, 31, 32, 39]] = True
    return resets


# (T, Dk, Dv, chunk_size, resets, initial state)
CASES = [
    (1, 16, 16, 16, "t0", True),
    (7, 16, 32, 16, None, False),
    (20, 32, 16, 8, "random", True),
    (40, 16, 16, 16, "boundaries", True),
    (33, 24, 40, 16, "random", False),
    (20, 48, 72, 16, None, True),  # several tiles, partial ones, in both head dims
    (63, 16, 16, 16, "random", True),  # the spec's T = 63 and 200, with resets
    (200, 16, 16, 16, "random", False),
]
IDS = [f"T{c[0]}-Dk{c[1]}-Dv{c[2]}-L{c[3]}-{c[4]}-{'state' if c[5] else 'empty'}" for c in CASES]


def case_inputs(T, Dk, Dv, resets_kind, with_state, B=2, H=2):
    inputs = random_inputs(B, H, T, Dk, Dv, seed=T + Dk)
    resets = make_resets(resets_kind, B, T)
    state = random_state(B, H, Dk, Dv, seed=T) if with_state else None
    return inputs, resets, state


def to(xs, dtype=None):
    return None if xs is None else [x.detach().to(DEVICE, dtype) for x in xs]


def run_with_grads(fn, inputs, resets, state, chunk_size, dtype):
    """Run fn, backprop a fixed random loss on h and the final state in true units
    (m detached: stabilised states from different forms differ by e^m), return
    outputs and the gradients of every input, initial state included."""
    xs = [x.requires_grad_() for x in to(inputs, dtype)]
    st = None if state is None else [s.requires_grad_() for s in to(state, dtype)]
    r = None if resets is None else resets.to(DEVICE)
    h, (C, n, m) = fn(*xs, resets=r, state=st, chunk_size=chunk_size)
    gen = torch.Generator().manual_seed(7)
    weights = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in (h, C, n)]
    scale = torch.exp(m.detach().double()).cpu()
    C_true = C.double().cpu() * scale[..., None, None]
    n_true = n.double().cpu() * scale[..., None]
    loss = sum((x * w).sum() for x, w in zip((h.double().cpu(), C_true, n_true), weights))
    loss.backward()
    grads = [x.grad for x in xs] + ([] if st is None else [s.grad for s in st])
    return (h, (C, n, m)), grads


@pytest.mark.parametrize("T, Dk, Dv, chunk_size, resets_kind, with_state", CASES, ids=IDS)
def test_sequence_forward_and_state(T, Dk, Dv, chunk_size, resets_kind, with_state):
    inputs, resets, state = case_inputs(T, Dk, Dv, resets_kind, with_state)
    r = None if resets is None else resets.to(DEVICE)
    h, S = mlstm_sequence(*to(inputs), resets=r, state=to(state), backend="triton",
                          chunk_size=chunk_size)  # fmt: skip
    h_ref, S_ref = mlstm_sequence_reference(*to(inputs, torch.float64), resets=r,
                                            state=to(state, torch.float64))  # fmt: skip
    assert h.dtype == torch.float32 and all(s.dtype == torch.float32 for s in S)
    assert_close(h, h_ref, FP32["h"], "h")
    for name, a, b in zip("Cn", true_units(S), true_units(S_ref)):
        assert_close(a, b, FP32["state"], f"{name} (true units)")


@pytest.mark.parametrize("T, Dk, Dv, chunk_size, resets_kind, with_state", CASES, ids=IDS)
def test_sequence_gradients(T, Dk, Dv, chunk_size, resets_kind, with_state):
    inputs, resets, state = case_inputs(T, Dk, Dv, resets_kind, with_state)
    _, grads = run_with_grads(mlstm_sequence_triton, inputs, resets, state, chunk_size,
                              torch.float32)  # fmt: skip
    _, grads_ref = run_with_grads(mlstm_sequence_reference, inputs, resets, state, chunk_size,
                                  torch.float64)  # fmt: skip
    names = ["q", "k", "v", "i", "f", "C0", "n0"]
    assert len(grads) == (8 if with_state else 5)
    if with_state:  # the incoming stabiliser carries no gradient
        assert grads.pop() is None and grads_ref.pop() is None
    for name, g, g_ref in zip(names, grads, grads_ref):
        assert g is not None, f"no gradient for {name}"
        assert_close(g, g_ref, FP32["grad"], f"d{name}")


# Compiled kernels at training shapes: the default chunk (64) and chunks above the cap,
# head dims up to 256, Dk != Dv. Too slow for the interpreter, so GPU only; the
# interpreter tests above cover the same code paths at tiny shapes.
GPU_CASES = [
    (300, 64, 64, 64, torch.float32),
    (300, 64, 128, 256, torch.float32),
    (200, 256, 256, 64, torch.float32),
    (300, 128, 128, 64, torch.bfloat16),
]


@pytest.mark.skipif(DEVICE != "cuda", reason="training shapes: compiled kernels on a GPU only")
@pytest.mark.parametrize("T, Dk, Dv, chunk_size, dtype", GPU_CASES)
def test_sequence_training_shapes_on_gpu(T, Dk, Dv, chunk_size, dtype):
    inputs, resets, state = case_inputs(T, Dk, Dv, "random", True)
    # the reference sees the same rounded inputs as the kernel
    inputs, state = ([x.to(dtype).double() for x in xs] for xs in (inputs, state))
    (h, S), grads = run_with_grads(mlstm_sequence_triton, inputs, resets, state, chunk_size,
                                   dtype)  # fmt: skip
    (h_ref, S_ref), grads_ref = run_with_grads(mlstm_sequence_chunkwise, inputs, resets, state,
                                               64, torch.float64)  # fmt: skip
    tol = TOLERANCES[dtype]
    assert_close(h, h_ref, tol["h"], "h")
    for name, a, b in zip("Cn", true_units(S), true_units(S_ref)):
        assert_close(a, b, tol["state"], f"{name} (true units)")
    assert grads.pop() is None and grads_ref.pop() is None  # m0 carries no gradient
    for name, g, g_ref in zip(["q", "k", "v", "i", "f", "C0", "n0"], grads, grads_ref):
        assert_close(g, g_ref, tol["grad"], f"d{name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T, resets_kind", [(20, "random"), (40, "boundaries")])
def test_sequence_low_precision_forward(dtype, T, resets_kind):
    """q, k, v in bf16/fp16 against the float64 loop on the same rounded inputs."""
    inputs, resets, state = case_inputs(T, 32, 16, resets_kind, True)
    q, k, v, i, f = inputs
    q, k, v = (x.to(dtype) for x in (q, k, v))
    r = resets.to(DEVICE)
    h, S = mlstm_sequence_triton(*to((q, k, v)), *to((i, f)), resets=r, state=to(state),
                                 chunk_size=16)  # fmt: skip
    h_ref, S_ref = mlstm_sequence_reference(*to((q, k, v, i, f), torch.float64), resets=r,
                                            state=to(state, torch.float64))  # fmt: skip
    tol = TOLERANCES[dtype]
    assert h.dtype == dtype and all(s.dtype == torch.float32 for s in S)
    assert_close(h, h_ref, tol["h"], "h")
    for name, a, b in zip("Cn", true_units(S), true_units(S_ref)):
        assert_close(a, b, tol["state"], f"{name} (true units)")


@pytest.mark.parametrize("T, resets_kind", [(20, "random"), (40, "boundaries")])
def test_sequence_bf16_gradients(T, resets_kind):
    """bf16 inputs: TF32 products keep the float32 chunk states from being rounded to
    bf16, which would break the cancellation the gate gradients rely on."""
    inputs, resets, state = case_inputs(T, 32, 16, resets_kind, True)
    inputs = [x.to(torch.bfloat16) for x in inputs]
    state = [s.to(torch.bfloat16).float() for s in state]
    _, grads = run_with_grads(mlstm_sequence_triton, inputs, resets, state, 16, torch.bfloat16)
    _, grads_ref = run_with_grads(mlstm_sequence_reference, inputs, resets, state, 16,
                                  torch.float64)  # fmt: skip
    for name, g, g_ref in zip(["q", "k", "v", "i", "f"], grads, grads_ref):
        assert g.dtype == torch.bfloat16
        assert_close(g, g_ref, TOLERANCES[torch.bfloat16]["grad"], f"d{name}")


def test_sequence_in_two_halves_and_reset_splits_episodes():
    inputs, _, state = case_inputs(40, 16, 32, None, True)
    x = to(inputs)
    h, S = mlstm_sequence_triton(*x, state=to(state), chunk_size=16)
    h1, S1 = mlstm_sequence_triton(*(t[:, :, :17] for t in x), state=to(state), chunk_size=16)
    h2, S2 = mlstm_sequence_triton(*(t[:, :, 17:] for t in x), state=S1, chunk_size=16)
    assert_close(torch.cat([h1, h2], 2), h, FP32["h"], "h, two halves")
    for a, b in zip(true_units(S2), true_units(S)):
        assert_close(a, b, FP32["state"], "state, two halves")
    # a reset at t = 17 == a fresh episode from the empty state
    resets = torch.zeros(2, 40, dtype=torch.bool, device=DEVICE)
    resets[:, 17] = True
    h_r, S_r = mlstm_sequence_triton(*x, resets=resets, state=to(state), chunk_size=16)
    h_fresh, S_fresh = mlstm_sequence_triton(*(t[:, :, 17:] for t in x), chunk_size=16)
    assert_close(h_r[:, :, 17:], h_fresh, FP32["h"], "h after a reset")
    assert_close(h_r[:, :, :17], h1, FP32["h"], "h before a reset")
    for a, b in zip(true_units(S_r), true_units(S_fresh)):
        assert_close(a, b, FP32["state"], "state after a reset")


def test_sequence_equals_steps():
    T = 20
    inputs, resets, state = case_inputs(T, 16, 32, "random", True)
    x, r = to(inputs), resets.to(DEVICE)
    h, S = mlstm_sequence_triton(*x, resets=r, state=to(state), chunk_size=16)
    st, hs = to(state), []
    for t in range(T):
        h_t, st = mlstm_step_triton(*(a[:, :, t] for a in x), st, reset=r[:, t])
        hs.append(h_t)
    assert_close(torch.stack(hs, 2), h, FP32["h"], "h, steps")
    for a, b in zip(true_units(st), true_units(S)):
        assert_close(a, b, FP32["state"], "state, steps")


def test_long_run_stays_finite():
    """Spec check 6: 20,000 steps with i~ up to +-30 and f~ near +10. h itself is
    ill-conditioned here (|q.n| crosses zero at true-unit scale e^30, so float32 h
    differs from float64 in every form); finiteness and the states are what's checked."""
    T = 20_000
    inputs = random_inputs(1, 1, T, 16, 16, i_range=(-30.0, 30.0), f_range=(8.0, 12.0))
    resets = torch.zeros(1, T, dtype=torch.bool)
    resets[0, 5000] = True
    h, S = mlstm_sequence_triton(*to(inputs), resets=resets.to(DEVICE), chunk_size=256)
    _, S_ref = mlstm_sequence_chunkwise(
        *to(inputs, torch.float64), resets=resets.to(DEVICE), chunk_size=256
    )
    assert torch.isfinite(h).all() and all(torch.isfinite(s).all() for s in S)
    for a, b in zip(true_units(S), true_units(S_ref)):
        assert_close(a, b, FP32["state"], "state after 20,000 steps")


def test_step_long_run_stays_finite():
    """Spec check 6 for the fused step: i~ up to +-30 and f~ near +10, one step at a time
    with resets, against the reference step in float64 (states in true units). 300
    steps under the interpreter (about 30 ms a step); 20,000 on a GPU."""
    T = 20_000 if DEVICE == "cuda" else 300
    inputs = random_inputs(2, 1, T, 16, 16, i_range=(-30.0, 30.0), f_range=(8.0, 12.0))
    resets = torch.zeros(2, T, dtype=torch.bool, device=DEVICE)
    resets[1, [T // 3, T // 3 + 1]] = True
    steps = (x.unbind(2) for x in to(inputs))
    steps_ref = (x.unbind(2) for x in to(inputs, torch.float64))
    S = S_ref = None
    for t, (x, x_ref) in enumerate(zip(zip(*steps), zip(*steps_ref))):
        h, S = mlstm_step_triton(*x, S, reset=resets[:, t])
        _, S_ref = mlstm_step_reference(*x_ref, S_ref, reset=resets[:, t])
        assert torch.isfinite(h).all(), f"h not finite at step {t}"
    assert all(torch.isfinite(s).all() for s in S)
    for a, b in zip(true_units(S), true_units(S_ref)):
        assert_close(a, b, FP32["state"], f"state after {T:,} steps")


# (Dk, Dv, initial state, reset rows)
STEP_CASES = [
    (16, 16, False, True),
    (16, 48, True, True),
    (32, 16, True, False),
    (80, 130, True, True),
]


@pytest.mark.parametrize("Dk, Dv, with_state, with_reset", STEP_CASES)
def test_step_matches_reference(Dk, Dv, with_state, with_reset):
    q, k, v, i, f = (x[:, :, 0] for x in random_inputs(3, 2, 1, Dk, Dv, seed=Dk, i_range=(-8, 8)))
    state = random_state(3, 2, Dk, Dv, seed=Dv) if with_state else None
    reset = torch.tensor([True, False, False], device=DEVICE) if with_reset else None
    h, S = mlstm_step_triton(*to((q, k, v, i, f)), to(state), reset=reset)
    h_ref, S_ref = mlstm_step_reference(*to((q, k, v, i, f), torch.float64),
                                        to(state, torch.float64), reset=reset)  # fmt: skip
    assert_close(h, h_ref, FP32["h"], "h")
    for name, a, b in zip("Cnm", S, S_ref):  # one step: both forms pick the same m
        assert_close(a, b, FP32["state"], name)


def test_step_gradients():
    q, k, v, i, f = (x[:, :, 0] for x in random_inputs(3, 2, 1, 16, 32, seed=3))
    state = random_state(3, 2, 16, 32)
    reset = torch.tensor([False, True, False], device=DEVICE)
    grads = []
    for fn, dtype in ((mlstm_step_triton, torch.float32), (mlstm_step_reference, torch.float64)):
        xs = [x.requires_grad_() for x in to((q, k, v, i, f, *state), dtype)]
        h, (C, n, m) = fn(*xs[:5], tuple(xs[5:]), reset=reset)
        loss = (
            h.double().pow(2).sum()
            + (C.double() * torch.exp(m.detach().double())[..., None, None]).sum()
        )
        loss.backward()
        grads.append([x.grad for x in xs])
    assert grads[0].pop() is None and grads[1].pop() is None  # m carries no gradient
    for name, g, g_ref in zip(["q", "k", "v", "i", "f", "C", "n"], *grads):
        assert_close(g, g_ref, FP32["grad"], f"d{name}")


def test_step_writes_into_state_in_place():
    """out=(h, state): the acting loop allocates nothing and can be graph-captured."""
    q, k, v, i, f = to(x[:, :, 0] for x in random_inputs(2, 2, 1, 16, 32, seed=5))
    state = to(random_state(2, 2, 16, 32))
    reset = torch.tensor([False, True], device=DEVICE)
    h_ref, S_ref = mlstm_step_reference(q, k, v, i, f, state, reset=reset)
    buffers = tuple(s.clone() for s in state)
    h_buf = torch.full((2, 2, 32), float("nan"), device=DEVICE)
    ptrs = [x.data_ptr() for x in (h_buf, *buffers)]
    h, S = mlstm_step_triton(q, k, v, i, f, buffers, reset=reset, out=(h_buf, buffers))
    assert h is h_buf and all(a is b for a, b in zip(S, buffers))
    assert [x.data_ptr() for x in (h, *S)] == ptrs
    assert_close(h, h_ref, FP32["h"], "h")
    for name, a, b in zip("Cnm", S, S_ref):
        assert_close(a, b, FP32["state"], name)
    # the reference takes the same keyword
    ref_buffers = tuple(s.clone() for s in state)
    h2, S2 = mlstm_step_reference(q, k, v, i, f, ref_buffers, reset=reset,
                                  out=(torch.empty_like(h_buf), ref_buffers))  # fmt: skip
    assert S2[0] is ref_buffers[0]
    assert_close(S2[0], S_ref[0], FP32["state"], "reference out=")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_step_cuda_graph_capture():
    q, k, v, i, f = to(x[:, :, 0] for x in random_inputs(4, 2, 1, 16, 16, seed=9))
    state = tuple(to(random_state(4, 2, 16, 16)))
    reset = torch.zeros(4, dtype=torch.bool, device=DEVICE)
    h = torch.empty(4, 2, 16, device=DEVICE)
    expected = mlstm_step_reference(q, k, v, i, f, tuple(s.clone() for s in state), reset=reset)
    mlstm_step_triton(q, k, v, i, f, tuple(s.clone() for s in state), reset=reset)  # compile
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mlstm_step_triton(q, k, v, i, f, state, reset=reset, out=(h, state))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(h, expected[0], FP32["h"], "h after graph replay")


def test_signatures_match_the_reference():
    for fast, ref in ((mlstm_sequence_triton, mlstm_sequence_reference),
                      (mlstm_step_triton, mlstm_step_reference)):  # fmt: skip
        fast_params = list(inspect.signature(fast).parameters.values())
        ref_params = list(inspect.signature(ref).parameters.values())
        assert [(p.name, p.kind, p.default) for p in fast_params] == [
            (p.name, p.kind, p.default) for p in ref_params
        ]


def test_availability_reasons(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_backends.unavailable(x) is None
    assert "float64" in triton_backends.unavailable(x.double())
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = triton_backends.unavailable(x)
    assert "CUDA" in reason and "TRITON_INTERPRET=1" in reason
    with pytest.raises(RuntimeError, match="cannot run here"):
        mlstm_sequence(*random_inputs(1, 1, 3, 16, 16), backend="triton")


def test_debug_buffers_start_as_nan():
    assert torch.isnan(triton_backends.empty(3, device="cpu")).all()


def test_triton_backend_runs_under_torch_compile():
    """A compiled caller runs the Triton kernels as they are (dynamo does not trace into
    them) and gets the eager outputs and gradients."""
    inputs, resets, state = case_inputs(20, 16, 16, "random", True)
    r = resets.to(DEVICE)

    def loss(q, k, v, i, f):
        h, (C, n, _) = mlstm_sequence(q, k, v, i, f, resets=r, state=to(state), backend="triton")
        return (h.square() * 2).sum() + C.sum() + n.sum()

    compiled = torch.compile(loss, backend="aot_eager")
    grads = []
    for fn in (loss, compiled):
        xs = [x.requires_grad_() for x in to(inputs)]
        fn(*xs).backward()
        grads.append([x.grad for x in xs])
    for name, g, g_ref in zip("qkvif", *grads):
        assert_close(g, g_ref, 1e-6, f"d{name}")
