"""The chunkwise form's hand-written backward against float64 autograd through the
reference loop: every input (q, k, v, i, f and the initial C, n), resets placed where
the chunk bookkeeping is most fragile, and a loss on h and on the final state.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T).
"""

from __future__ import annotations

import pytest
import torch

from xlstm_rl.kernels import mlstm_sequence
from xlstm_rl.kernels.mlstm import chunkwise

from .helpers import TOLERANCES, assert_close, random_inputs, random_state, true_units

H, DK, DV = 2, 4, 3
NAMES = ("q", "k", "v", "i", "f", "C0", "n0")


def placed_resets(T: int, chunk: int) -> torch.Tensor:
    """(7, T): row 0 resets at t = 0; row 1 on two chunk boundaries; row 2 mid-chunk;
    row 3 at two consecutive steps across a boundary; row 4 at the last step (inside
    the partial last chunk); row 5 every step; row 6 never."""
    resets = torch.zeros(7, T, dtype=torch.bool)
    resets[0, 0] = True
    resets[1, [chunk, 2 * chunk]] = True
    resets[2, chunk + chunk // 2] = True
    resets[3, 2 * chunk - 1 : 2 * chunk + 1] = True
    resets[4, T - 1] = True
    resets[5, :] = True
    return resets


def grads(backend, dtype, inputs, state, resets, chunk):
    leaves = [x.detach().to(dtype).requires_grad_() for x in inputs]
    C0, n0 = (s.detach().to(dtype).requires_grad_() for s in state[:2])
    h, final = mlstm_sequence(
        *leaves, resets=resets, state=(C0, n0, state[2]), backend=backend, chunk_size=chunk
    )
    gen = torch.Generator().manual_seed(1)
    C, n = true_units(final)
    loss = (
        (h.double() * torch.randn(h.shape, generator=gen, dtype=torch.float64)).sum()
        + (C * torch.randn(C.shape, generator=gen, dtype=torch.float64)).sum()
        + (n * torch.randn(n.shape, generator=gen, dtype=torch.float64)).sum()
    )
    loss.backward()
    return dict(zip(NAMES, (x.grad for x in (*leaves, C0, n0))))


# T = 19 and 90 leave a partial last chunk; a chunk of 80 is longer than the selector covers
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T, chunk", [(19, 4), (19, 8), (90, 80)])
def test_chunkwise_gradients_match_reference_loop(T, chunk, dtype):
    resets = placed_resets(T, min(chunk, 8))
    batch = resets.shape[0]
    inputs = random_inputs(batch, H, T, DK, DV, seed=T + chunk, dtype=torch.float64)
    state = random_state(batch, H, DK, DV, seed=T + chunk, dtype=torch.float64)
    expected = grads("reference", torch.float64, inputs, state, resets, chunk)
    actual = grads("chunkwise", dtype, inputs, state, resets, chunk)
    for name in NAMES:
        assert_close(actual[name], expected[name], TOLERANCES[dtype]["grad"], f"d{name}")


@pytest.mark.parametrize("T, chunk", [(19, 4), (90, 80)])
def test_traceable_form_matches_reference_loop(T, chunk, monkeypatch):
    """The out-of-place form torch.compile traces, differentiated by autograd."""
    monkeypatch.setattr(chunkwise, "_compiling", lambda: True)
    resets = placed_resets(T, min(chunk, 8))
    batch = resets.shape[0]
    inputs = random_inputs(batch, H, T, DK, DV, seed=T, dtype=torch.float64)
    state = random_state(batch, H, DK, DV, seed=T, dtype=torch.float64)
    expected = grads("reference", torch.float64, inputs, state, resets, chunk)
    actual = grads("chunkwise", torch.float64, inputs, state, resets, chunk)
    for name in NAMES:
        assert_close(actual[name], expected[name], TOLERANCES[torch.float64]["grad"], f"d{name}")
    # forward in float32 against the Function's: the same stabilisers, so m agrees too
    leaves = [x.float() for x in inputs]
    state = tuple(s.float() for s in state)
    h, final = mlstm_sequence(
        *leaves, resets=resets, state=state, backend="chunkwise", chunk_size=chunk
    )
    monkeypatch.setattr(chunkwise, "_compiling", lambda: False)
    h_fn, final_fn = mlstm_sequence(
        *leaves, resets=resets, state=state, backend="chunkwise", chunk_size=chunk
    )
    assert_close(h, h_fn, TOLERANCES[torch.float32]["h"], "h")
    for name, a, e in zip("Cnm", final, final_fn):
        assert_close(a, e, TOLERANCES[torch.float32]["state"], name)


def test_chunkwise_compiles_to_one_graph():
    """torch.compile traces the chunkwise form whole (no graph break) and agrees with eager."""
    resets = placed_resets(19, 4)
    inputs = [x.float().requires_grad_() for x in random_inputs(7, H, 19, DK, DV, seed=3)]

    def run(*inputs):
        return mlstm_sequence(*inputs, resets=resets, backend="chunkwise", chunk_size=4)

    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    (h, final), (h_eager, final_eager) = compiled(*inputs), run(*inputs)
    assert_close(h, h_eager, 1e-5, "h")
    for a, e in zip(final, final_eager):
        assert_close(a, e, 1e-5, "state")
    d_compiled = torch.autograd.grad(h.square().sum(), inputs)
    d_eager = torch.autograd.grad(h_eager.square().sum(), inputs)
    for name, a, e in zip(NAMES, d_compiled, d_eager):
        assert_close(a, e, 1e-5, f"d{name}")
