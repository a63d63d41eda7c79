"""Shared pieces of the kernel tests: the tolerance table, float64 true-unit loops, inputs.

Batch-first, as in the kernels: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T),
resets (B, T); sLSTM g (B, T, H, 4, Dh), R (H, Dh, 4, Dh). The loops here are the
spec's true-unit (unstabilised) equations written out in float64, independent of
the library's stabilised code, so they are an oracle for every backend. They use
exp(i~) directly, so keep |i~| moderate (a few tens at most) when calling them.
"""

from __future__ import annotations

import math

import pytest
import torch

MLSTM_TORCH_BACKENDS = ("reference", "parallel", "chunkwise")

# Errors are measured as max|actual - expected| / max|expected| over one tensor.
# float32: the spec's 2e-4. The torch forms measure up to ~4e-6 for h and gradients
#   (5e-5 for states after 20,000 steps), while a wrong gate, a missed reset or a
#   dropped state term costs 1e-2 or more, so nothing real hides under it.
# bfloat16 / float16: outputs (and input gradients) come back in the input dtype, so
#   one rounding costs up to u = 2^-8 (bf16) or 2^-11 (fp16) of |h|; a kernel that
#   also rounds intermediates (Triton matmuls in the input dtype) needs a little more.
#   The bound is 4u (8u for gradients); states are float32 but built from the same
#   low-precision products, so they share h's bound. Measured on h: torch forms
#   0.3u (bf16) and 0.8u (fp16); Triton under the interpreter 0.6-0.7u.
# float64: one form against another in float64, where only summation order differs
#   (measured ~5e-15).
TOLERANCES = {
    torch.float64: dict(h=1e-12, state=1e-12, grad=1e-11),
    torch.float32: dict(h=2e-4, state=2e-4, grad=2e-4),
    torch.bfloat16: dict(h=1.6e-2, state=1.6e-2, grad=3e-2),
    torch.float16: dict(h=2e-3, state=2e-3, grad=4e-3),
}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max|actual - expected| / max|expected| (absolute when expected is all zero)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    return err / scale if scale > 0 else err


def assert_close(actual, expected, tol: float, what: str = "") -> None:
    """Shapes match, everything finite, and rel_err(actual, expected) <= tol."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_inputs(
    B: int,
    H: int,
    T: int,
    Dk: int,
    Dv: int,
    *,
    seed: int = 0,
    i_range: tuple[float, float] = (-4.0, 4.0),
    f_range: tuple[float, float] = (-1.0, 6.0),
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, ...]:
    """(q, k, v, i, f): q, k, v standard normal, gates uniform over the given ranges.

    The default gate ranges make the denominator floor max(|q.n|, 1) active for some
    steps and the decay visible over a few tens of steps."""
    gen = _generator(seed)
    q = torch.randn(B, H, T, Dk, generator=gen, dtype=torch.float64)
    k = torch.randn(B, H, T, Dk, generator=gen, dtype=torch.float64)
    v = torch.randn(B, H, T, Dv, generator=gen, dtype=torch.float64)
    i = i_range[0] + (i_range[1] - i_range[0]) * torch.rand(B, H, T, generator=gen)
    f = f_range[0] + (f_range[1] - f_range[0]) * torch.rand(B, H, T, generator=gen)
    out = tuple(x.to(dtype) for x in (q, k, v, i.double(), f.double()))
    return tuple(x.requires_grad_(requires_grad) for x in out)


def random_resets(B: int, T: int, *, seed: int = 0, p: float = 0.1) -> torch.Tensor:
    """(B, T) bool with resets at probability p, plus the awkward cases in fixed rows:
    row 0 resets at t = 0, row 1 at two consecutive steps and at the last step,
    row 2 (when B > 2) never resets."""
    gen = _generator(seed)
    resets = torch.rand(B, T, generator=gen) < p
    resets[0, 0] = True
    if B > 1:
        resets[1, 0] = False
        resets[1, T // 2 : T // 2 + 2] = True
        resets[1, T - 1] = True
    if B > 2:
        resets[2] = False
    return resets


def random_state(
    B: int,
    H: int,
    Dk: int,
    Dv: int,
    *,
    seed: int = 0,
    m_range: tuple[float, float] = (-3.0, 3.0),
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stabilised mLSTM state (C, n, m) like one a sequence leaves behind: C a sum of
    a few outer products k v^T, n the matching sum of k, m spread over m_range."""
    gen = _generator(seed)
    ks = torch.randn(B, H, 4, Dk, generator=gen, dtype=torch.float64)
    vs = torch.randn(B, H, 4, Dv, generator=gen, dtype=torch.float64)
    w = torch.rand(B, H, 4, generator=gen, dtype=torch.float64)
    C = torch.einsum("bhs,bhsd,bhse->bhde", w, ks, vs)
    n = torch.einsum("bhs,bhsd->bhd", w, ks)
    m = m_range[0] + (m_range[1] - m_range[0]) * torch.rand(B, H, generator=gen)
    return tuple(x.to(dtype).requires_grad_(requires_grad) for x in (C, n, m.double()))


def true_units(state) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, n, m) in stabilised units -> (C exp(m), n exp(m)) in float64."""
    C, n, m = (s.double() for s in state)
    scale = torch.exp(m)
    return C * scale[..., None, None], n * scale[..., None]


def mlstm_true_loop(q, k, v, i, f, *, resets=None, state=None):
    """The spec's true-unit mLSTM equations, one step at a time, in float64.

    `state` is a stabilised (C, n, m) or None; returns h (B, H, T, Dv) and the final
    true-unit state (C, n). Differentiable in every input, the state included."""
    q, k, v, i, f = (x.double() for x in (q, k, v, i, f))
    B, H, T, Dk = q.shape
    Dv = v.shape[-1]
    if state is None:
        C = q.new_zeros(B, H, Dk, Dv)
        n = q.new_zeros(B, H, Dk)
    else:
        C, n = true_units(state)
    hs = []
    for t in range(T):
        forget = torch.sigmoid(f[:, :, t])  # (B, H)
        if resets is not None:
            forget = forget * (~resets[:, t]).double()[:, None]
        gain = torch.exp(i[:, :, t])  # (B, H)
        kt, vt = k[:, :, t], v[:, :, t]
        C = (
            forget[..., None, None] * C
            + gain[..., None, None] * kt[..., :, None] * vt[..., None, :]
        )
        n = forget[..., None] * n + gain[..., None] * kt
        qt = q[:, :, t] / math.sqrt(Dk)
        num = torch.einsum("bhd,bhde->bhe", qt, C)
        den = torch.clamp((qt * n).sum(-1).abs(), min=1.0)
        hs.append(num / den[..., None])
    return torch.stack(hs, dim=2), (C, n)


def random_slstm_inputs(
    B: int,
    T: int,
    H: int,
    Dh: int,
    *,
    seed: int = 0,
    gate_scale: float = 2.0,
    r_scale: float = 0.5,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, R): gate pre-activations (B, T, H, 4, Dh), forget gate shifted to +2 so memory
    lasts, and a recurrent matrix (H, Dh, 4, Dh) strong enough that mixing matters."""
    gen = _generator(seed)
    g = gate_scale * torch.randn(B, T, H, 4, Dh, generator=gen, dtype=torch.float64)
    g[:, :, :, 1] += 2.0
    R = r_scale * torch.randn(H, Dh, 4, Dh, generator=gen, dtype=torch.float64) / math.sqrt(Dh)
    return tuple(x.to(dtype).requires_grad_(requires_grad) for x in (g, R))


def random_slstm_state(B: int, H: int, Dh: int, *, seed: int = 0, requires_grad: bool = False):
    """A stabilised sLSTM state (c, n, m, h) with n >= 1 and |c| < n, as a run leaves it."""
    gen = _generator(seed)
    n = 1.0 + 3.0 * torch.rand(B, H, Dh, generator=gen, dtype=torch.float64)
    c = n * (2 * torch.rand(B, H, Dh, generator=gen, dtype=torch.float64) - 1)
    m = 4.0 * torch.rand(B, H, Dh, generator=gen, dtype=torch.float64) - 2.0
    h = torch.tanh(torch.randn(B, H, Dh, generator=gen, dtype=torch.float64))
    return tuple(x.float().requires_grad_(requires_grad) for x in (c, n, m, h))


def slstm_true_loop(g, R, *, resets=None, state=None):
    """The spec's sLSTM in true units (c, n without a stabiliser), float64.

    `state` is a stabilised (c, n, m, h) or None; returns h (B, T, H, Dh) and the final
    (c_true, n_true, h). Head hd mixes its own units only: pre = g + h_prev R[hd]."""
    g, R = g.double(), R.double()
    B, T, H, _, Dh = g.shape
    if state is None:
        c = g.new_zeros(B, H, Dh)
        n = g.new_zeros(B, H, Dh)
        h = g.new_zeros(B, H, Dh)
    else:
        c0, n0, m0, h = (s.double() for s in state)
        c, n = c0 * torch.exp(m0), n0 * torch.exp(m0)
    R_flat = R.reshape(H, Dh, 4 * Dh)
    hs = []
    for t in range(T):
        if resets is not None:
            keep = (~resets[:, t]).double()[:, None, None]
            c, n, h = c * keep, n * keep, h * keep
        mixed = torch.matmul(h[:, :, None, :], R_flat).reshape(B, H, 4, Dh)  # (B, H, 4, Dh)
        pre = g[:, t] + mixed
        i_pre, f_pre, z_pre, o_pre = (pre[:, :, j] for j in range(4))
        forget, gain = torch.sigmoid(f_pre), torch.exp(i_pre)
        c = forget * c + gain * torch.tanh(z_pre)
        n = forget * n + gain
        h = torch.sigmoid(o_pre) * c / n
        hs.append(h)
    return torch.stack(hs, dim=1), (c, n, h)


def slstm_true_units(state) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c, n, m, h) stabilised -> (c exp(m), n exp(m), h) in float64."""
    c, n, m, h = (s.double() for s in state)
    return c * torch.exp(m), n * torch.exp(m), h


@pytest.fixture(autouse=True)
def nan_filled_outputs():
    """Autouse fixture for the Triton kernel tests (import it into the test module):
    every output buffer a kernel allocates starts as NaN, so an unwritten element fails
    the finiteness checks."""
    from xlstm_rl.kernels import triton_backends

    triton_backends.debug_nan_outputs(True)
    yield
    triton_backends.debug_nan_outputs(False)
