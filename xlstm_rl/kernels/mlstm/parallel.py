"""mLSTM parallel (quadratic) form: every output from one (T, T) decay matrix.

Batch-first: q, k (B, H, T, Dk), v (B, H, T, Dv), i, f (B, H, T), resets (B, T).
A second reference for short sequences and the building block of the chunkwise
form. Log-decays F_ts = sum of logsigmoid(f) over (s, t] are built by a masked
cumulative sum, never as a difference of prefix sums, and pairs separated by a
reset are masked, not produced by -inf arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xlstm_rl.kernels.mlstm.reference import State, prepare

_SELECTORS: dict = {}
_SELECTOR_MAX_T = 64  # the selector holds T^3 entries: 1 MiB at T = 64


def _selector(T: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(T, T * T) 0/1 matrix: entry (r, t * T + s) is 1 when s < r <= t."""
    key = (T, dtype, device)
    if key not in _SELECTORS:
        r = torch.arange(T, device=device)
        inside = (r[None, None, :] < r[:, None, None]) & (r[:, None, None] <= r[None, :, None])
        selector = inside.to(dtype).reshape(T, T * T)
        if torch.compiler.is_compiling():
            return selector  # a constant of the graph; a cache written here would recompile it
        _SELECTORS[key] = selector
    return _SELECTORS[key]


def segment_log_decay(log_f: torch.Tensor) -> torch.Tensor:
    """F[..., t, s] = sum_{r in (s, t]} log_f[..., r] for s <= t, -inf above the diagonal.

    Each entry is a sum of exactly its own terms (never a difference of prefix sums):
    for short sequences (chunks) one matmul with a 0/1 selector, else a masked cumsum.
    """
    T = log_f.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=log_f.device).tril()
    if T <= _SELECTOR_MAX_T:
        decay = (log_f @ _selector(T, log_f.dtype, log_f.device)).unflatten(-1, (T, T))
    else:
        strictly_lower = causal.tril(-1)
        # rows are r, columns s: term r counts for pair (t, s) when s < r <= t
        terms = log_f[..., :, None].expand(*log_f.shape, T).masked_fill(~strictly_lower, 0.0)
        decay = terms.cumsum(dim=-2)  # (..., t, s)
    return decay.masked_fill(~causal, float("-inf"))


def same_episode(resets: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor | None:
    """(B, 1, T, T) bool: no reset in (s, t]. None when there are no resets."""
    if resets is None:
        return None
    episode = resets.long().cumsum(dim=1)  # (B, T)
    return (episode[:, :, None] == episode[:, None, :])[:, None]


def state_alive(resets: torch.Tensor | None, B: int, T: int, device) -> torch.Tensor:
    """(B, 1, T) bool: no reset in [0, t], so the incoming state still counts at t."""
    if resets is None:
        return torch.ones(B, 1, T, dtype=torch.bool, device=device)
    return (resets.long().cumsum(dim=1) == 0)[:, None]


def mlstm_sequence_parallel(
    q: torch.Tensor,  # (B, H, T, Dk)
    k: torch.Tensor,  # (B, H, T, Dk)
    v: torch.Tensor,  # (B, H, T, Dv)
    i: torch.Tensor,  # (B, H, T)
    f: torch.Tensor,  # (B, H, T)
    *,
    resets: torch.Tensor | None = None,  # (B, T) bool
    state: State | None = None,
    chunk_size: int = 64,  # unused: kept so every backend has one signature
) -> tuple[torch.Tensor, State]:
    B, T = q.shape[0], q.shape[2]
    (q, k, v, i, f), (C0, n0, m0), out_dtype = prepare(q, k, v, i, f, state)

    log_f = F.logsigmoid(f)
    log_d = segment_log_decay(log_f) + i[..., None, :]  # (B, H, T, T)
    mask = same_episode(resets, B, T, q.device)
    if mask is not None:
        log_d = log_d.masked_fill(~mask, float("-inf"))
    alive = state_alive(resets, B, T, q.device)  # (B, 1, T)
    log_state = (log_f.cumsum(-1) + m0[..., None]).masked_fill(~alive, float("-inf"))  # (B, H, T)

    m = torch.maximum(log_d.amax(-1), log_state).detach()  # (B, H, T)
    d = torch.exp(log_d - m[..., None])
    state_w = torch.exp(log_state - m)  # (B, H, T)
    s = (q @ k.transpose(-1, -2)) * d  # (B, H, T, T)
    num = s @ v + state_w[..., None] * (q @ C0)
    den = s.sum(-1) + state_w * (q @ n0[..., None]).squeeze(-1)
    h = num / torch.maximum(den.abs(), torch.exp(-m))[..., None]

    # final state: the last row of the decay matrix, as keys/values weights
    w_last = torch.exp(log_d[..., -1, :] - m[..., -1:])  # (B, H, T)
    C = state_w[..., -1, None, None] * C0 + torch.einsum("bhs,bhsd,bhse->bhde", w_last, k, v)
    n = state_w[..., -1, None] * n0 + torch.einsum("bhs,bhsd->bhd", w_last, k)
    return h.to(out_dtype), (C, n, m[..., -1])
