"""The causal conv's sequence form (a hand-written backward, and the dense form that
torch.compile traces) against a plain autograd loop; the gated feed-forward likewise.

Batch-first: x (B, T, d), buffer (B, K - 1, d), resets (B, T). Float64 throughout, so
any missed tap, reset or buffer entry shows far above round-off."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xlstm_rl.cores import build_core, layers
from xlstm_rl.cores.layers import CausalConv, SwiGLU

TOL = 1e-12


def conv_loop(x, buffer, weight, bias, resets):
    """The conv as a loop over taps with an episode mask, autograd doing the backward."""
    B, T, _ = x.shape
    K = weight.shape[0]
    padded = torch.cat([buffer, x], dim=1)  # (B, K - 1 + T, d)
    episode = torch.cat([resets.new_zeros(B, K - 1).long(), resets.long().cumsum(1)], dim=1)
    y = bias.expand_as(x)
    for tap in range(K):
        same = episode[:, tap : tap + T] == episode[:, K - 1 :]
        y = y + padded[:, tap : tap + T] * weight[tap] * same[..., None]
    return y


def awkward_resets(B: int, T: int) -> torch.Tensor:
    """Resets at t = 0, in consecutive steps, at the last step, and at random."""
    resets = torch.rand(B, T, generator=torch.Generator().manual_seed(T)) < 0.15
    resets[0, 0] = True
    resets[1, :] = False
    if T > 3:
        resets[2, 1:3] = True
    resets[3, -1] = True
    return resets


@pytest.mark.parametrize("compiling", [False, True], ids=["function", "traceable"])
@pytest.mark.parametrize("with_resets", [False, True], ids=["no_resets", "resets"])
@pytest.mark.parametrize("T", [2, 3, 5, 40])
def test_causal_conv_sequence_matches_loop(T, with_resets, compiling, monkeypatch):
    monkeypatch.setattr(layers, "_compiling", lambda: compiling)
    B, d, K = 5, 6, 4
    gen = torch.Generator().manual_seed(T)
    conv = CausalConv(d, K).double()
    with torch.no_grad():
        conv.bias.normal_(generator=gen)
    x = torch.randn(B, T, d, generator=gen, dtype=torch.float64, requires_grad=True)
    buffer = torch.randn(B, K - 1, d, generator=gen, dtype=torch.float64, requires_grad=True)
    resets = awkward_resets(B, T) if with_resets else None
    dy = torch.randn(B, T, d, generator=gen, dtype=torch.float64)

    y, _ = conv(x, buffer, resets)
    grads = torch.autograd.grad((y * dy).sum(), (x, buffer, conv.weight, conv.bias))
    no_resets = torch.zeros(B, T, dtype=torch.bool)
    y_ref = conv_loop(x, buffer, conv.weight, conv.bias, no_resets if resets is None else resets)
    expected = torch.autograd.grad((y_ref * dy).sum(), (x, buffer, conv.weight, conv.bias))

    assert (y - y_ref).abs().max() <= TOL * y_ref.abs().max()
    for name, g, e in zip(("x", "buffer", "weight", "bias"), grads, expected):
        assert (g - e).abs().max() <= TOL * e.abs().max(), f"d{name}"


@pytest.mark.parametrize("compiling", [False, True], ids=["function", "traceable"])
def test_swiglu_gate_backward_matches_autograd(compiling, monkeypatch):
    """The training path's fused gate against silu(gate) * up under autograd, float64."""
    monkeypatch.setattr(layers, "_compiling", lambda: compiling)
    gen = torch.Generator().manual_seed(0)
    ffn = SwiGLU(12, 1.5).double()
    x = torch.randn(3, 7, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 7, 12, generator=gen, dtype=torch.float64)
    leaves = (x, *ffn.parameters())
    grads = torch.autograd.grad((ffn(x) * dy).sum(), leaves)
    gate, up = ffn.gate_up(x).chunk(2, dim=-1)
    y_ref = ffn.down(F.silu(gate) * up)
    expected = torch.autograd.grad((y_ref * dy).sum(), leaves)
    with torch.no_grad():
        assert (ffn(x) - y_ref).abs().max() <= TOL * y_ref.abs().max()
    for g, e in zip(grads, expected):
        assert (g - e).abs().max() <= TOL * e.abs().max()


@pytest.mark.parametrize("name", ["mlstm", "xlstm", "slstm", "transformer", "mlp"])
def test_core_compiles_to_one_graph(name):
    """torch.compile traces a whole training pass (conv, cell, feed-forward, the sLSTM's
    loop) without a graph break, and agrees with eager. (Training compiles the sequence
    form only where ``compile_sequence`` is set: sLSTM stacks trace, but slowly.)"""
    torch.manual_seed(0)
    options = {} if name == "mlp" else {"num_heads": 2}
    core = build_core(name, 8, 16, **options).double()  # float64: only op order differs
    assert core.compile_sequence == (name in ("mlstm", "transformer", "mlp"))
    x = torch.randn(4, 11, 8, dtype=torch.float64)
    resets = awkward_resets(4, 11)

    def loss(x):
        y, state = core(x, core.initial_state(4).double(), resets)
        return y.square().mean() + sum(s.square().sum() for s in state.values(True, True))

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    params = list(core.parameters())
    value, eager = compiled(x), loss(x)
    torch.testing.assert_close(value, eager, rtol=1e-10, atol=0)
    grads = torch.autograd.grad(value, params)
    expected = torch.autograd.grad(eager, params)
    for g, e in zip(grads, expected):
        assert (g - e).abs().max() <= 1e-10 * e.abs().max()
