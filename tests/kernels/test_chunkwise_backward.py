"""The chunkwise form's hand-written backward against float64 autograd through the
reference loop: every input (q, k, v, i, f and the initial C, n), resets placed where
the chunk bookkeeping is most fragile, and a loss on h and on the final state.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T).
"""

from __future__ import annotations

import pytest
import torch

from xlstm_rl.kernels import mlstm_sequence

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
