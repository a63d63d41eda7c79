"""Building blocks shared by the xLSTM blocks: gated feed-forward, per-head norm, causal conv."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_compiling = torch.compiler.is_compiling  # a module attribute, so tests can stand in for it


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap): keeps gate pre-activations inside the kernels' range."""
    return cap * torch.tanh(x / cap)


def ffn_width(hidden_size: int, factor: float) -> int:
    """SwiGLU width, rounded up to a multiple of 8."""
    return -(-int(round(hidden_size * factor)) // 8) * 8


class SwiGLU(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, factor: float):
        super().__init__()
        width = ffn_width(hidden_size, factor)
        self.gate_up = nn.Linear(hidden_size, 2 * width, bias=False)
        self.down = nn.Linear(width, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up(x)
        # torch.compile traces the plain ops below (and fuses them); it cannot trace the
        # Function's writes into halves of one buffer
        if torch.is_grad_enabled() and gate_up.requires_grad and not _compiling():
            return self.down(_SiluGate.apply(gate_up))
        gate, up = gate_up.chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class _SiluGate(torch.autograd.Function):
    """silu(gate) * up from one (..., 2 w) tensor [gate, up]. The backward writes both
    halves of one gradient tensor, where autograd would concatenate two."""

    @staticmethod
    def forward(ctx, gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate_up, act)
        return act * up

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        gate_up, act = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        d_gate_up = torch.empty_like(gate_up)
        d_gate, d_up = d_gate_up.chunk(2, dim=-1)
        torch.mul(dy, act, out=d_up)
        torch.mul(dy, up, out=d_gate)
        torch.ops.aten.silu_backward.grad_input(d_gate, gate, grad_input=d_gate)
        return d_gate_up


class HeadNorm(nn.Module):
    """Layer norm over each head's features separately, one learnable scale overall.

    ``normalize=False`` keeps only the learnable scale: the head's output keeps its
    magnitude (a layer norm is blind to it: a sum over n matching steps and one over a
    single step normalise to the same vector, so a count cannot be read out)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5, normalize: bool = True):
        super().__init__()
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps
        self.normalize = normalize
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim))

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, (self.head_dim,), eps=self.eps) if self.normalize else h

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H, Dh)
        return self._norm(h) * self.weight

    def project(self, h: torch.Tensor, out: nn.Linear, gate: torch.Tensor | None = None):
        """``out((self(h) * gate).flatten(-2))``, gate (..., H, Dh) optional.

        With more rows than ``out`` has outputs (a training pass), the scale is folded into
        out's weight (``out.weight * scale``, a small matrix) instead of multiplying every
        row by it: the same function and gradients, one pass over h fewer forward and
        two backward (memory-bound passes dominate the block on a CPU)."""
        rows = h.numel() // (self.num_heads * self.head_dim)
        if rows <= out.out_features:
            y = self(h) if gate is None else self(h) * gate
            return out(y.flatten(-2))
        y = self._norm(h)
        if gate is not None:
            y = y * gate
        return F.linear(y.flatten(-2), out.weight * self.weight.flatten(), out.bias)


class CausalConv(nn.Module):
    """Depthwise causal convolution over time that never looks across an episode start.

    The state is the last K - 1 inputs (B, K - 1, d), zeros in a fresh episode, so the
    sequence and step forms agree: an input from before a reset counts as zero.
    """

    def __init__(self, d: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.zeros(kernel_size, d))
        self.bias = nn.Parameter(torch.zeros(d))
        with torch.no_grad():
            self.weight[-1] = 1.0  # starts as the identity on the current input
            self.weight.add_(0.1 * torch.randn_like(self.weight) / kernel_size**0.5)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor, resets: torch.Tensor | None):
        """x (B, T, d), buffer (B, K - 1, d) -> y (B, T, d), new buffer.

        A single step may also come without its time axis: x (B, d), resets (B,) -> y (B, d).
        """
        if x.dim() == 2:
            return self._step(x, buffer, resets)
        B, T, _ = x.shape
        K = self.kernel_size
        if T == 1:
            y, buffer = self._step(x[:, 0], buffer, None if resets is None else resets[:, 0])
            return y[:, None], buffer
        buffer = buffer.to(x.dtype)
        episode = None if resets is None else resets.long().cumsum(1)  # (B, T)
        if _compiling():
            y = _causal_conv_dense(x, buffer, self.weight, self.bias, episode)
        else:
            y = _CausalConvSequence.apply(x, buffer, self.weight, self.bias, episode)
        # the new buffer: the last K - 1 inputs, those from before the last reset zeroed
        if T >= K - 1:
            new_buffer, tail_episode = x[:, T - (K - 1) :], episode
        else:
            new_buffer = torch.cat([buffer, x], dim=1)[:, -(K - 1) :]
            if episode is not None:
                zeros = episode.new_zeros(B, K - 1)
                tail_episode = torch.cat([zeros, episode], dim=1)
        if episode is not None:
            stale = tail_episode[:, -(K - 1) :] != episode[:, -1:]
            new_buffer = new_buffer.masked_fill(stale[..., None], 0.0)
        return y, new_buffer

    def _step(self, x: torch.Tensor, buffer: torch.Tensor, reset: torch.Tensor | None):
        """The acting path: one window, the buffer emptied where a row resets; x (B, d)."""
        if reset is not None:
            buffer = buffer * (~reset).to(buffer.dtype)[:, None, None]
        window = torch.cat([buffer.to(x.dtype), x[:, None]], dim=1)  # (B, K, d)
        # the new buffer contiguous, like the initial one: a compiled step sees one layout
        return (window * self.weight).sum(1) + self.bias, window[:, 1:].contiguous()


class _CausalConvSequence(torch.autograd.Function):
    """The causal conv over a sequence: y[t] = bias + sum over lags of w[K-1-lag] x[t-lag],
    where x[t-lag] counts only in the same episode as t (buffer entries are episode 0).

    One multiply-add per tap over the whole sequence; the few pairs across an episode
    start are taken out again by index (resets are rare), in both directions."""

    @staticmethod
    def forward(ctx, x, buffer, weight, bias, episode):
        K, T = weight.shape[0], x.shape[1]
        y = torch.addcmul(bias, x, weight[K - 1])  # (B, T, d)
        crossings = []
        for lag in range(1, K):
            tap = K - 1 - lag
            if lag < T:
                y[:, lag:].addcmul_(x[:, : T - lag], weight[tap])
            cross = None
            if episode is not None and lag < T:
                rows, steps = (episode[:, lag:] != episode[:, : T - lag]).nonzero(as_tuple=True)
                y[rows, steps + lag] -= x[rows, steps] * weight[tap]
                cross = (rows, steps)
            crossings.append(cross)
            held = min(lag, T)  # outputs t < lag read the buffer
            y[:, :held].addcmul_(_buffer_part(buffer, episode, lag, held), weight[tap])
        ctx.save_for_backward(x, buffer, weight, episode)
        ctx.crossings = crossings
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, buffer, weight, episode = ctx.saved_tensors
        K, T = weight.shape[0], x.shape[1]
        dx = dy * weight[K - 1]
        dweight = torch.empty_like(weight)
        dweight[K - 1] = _dot_bt(dy, x)
        dbuffer = torch.zeros_like(buffer) if ctx.needs_input_grad[1] else None
        for lag, cross in zip(range(1, K), ctx.crossings):
            tap = K - 1 - lag
            dw = dy.new_zeros(weight.shape[1])
            if lag < T:
                dy_lag = dy[:, lag:]
                dx[:, : T - lag].addcmul_(dy_lag, weight[tap])
                dw += _dot_bt(dy_lag, x[:, : T - lag])
                if cross is not None:
                    rows, steps = cross
                    dy_cross = dy_lag[rows, steps]
                    dx[rows, steps] -= dy_cross * weight[tap]
                    dw -= (dy_cross * x[rows, steps]).sum(0)
            held = min(lag, T)
            dy_held = dy[:, :held]
            dw += (dy_held * _buffer_part(buffer, episode, lag, held)).sum((0, 1))
            if dbuffer is not None:
                d_held = dy_held * weight[tap]
                if episode is not None:
                    d_held = d_held * (episode[:, :held, None] == 0)
                dbuffer[:, K - 1 - lag : K - 1 - lag + held] += d_held
            dweight[tap] = dw
        return dx, dbuffer, dweight, dy.sum((0, 1)), None


def _dot_bt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum over (B, T) of a * b, per channel: (B, T, d) x 2 -> (d,). vecdot reduces without
    writing the product out first (about 2x faster than (a * b).sum((0, 1)) here)."""
    return torch.linalg.vecdot(a, b, dim=1).sum(0)


def _causal_conv_dense(x, buffer, weight, bias, episode):
    """``_CausalConvSequence``'s forward with every cross-episode pair masked out
    densely: no data-dependent indexing, so ``torch.compile`` traces it whole."""
    K, T = weight.shape[0], x.shape[1]
    past = torch.cat([buffer, x], dim=1)  # (B, K - 1 + T, d): inputs at t - K + 1 .. T - 1
    if episode is not None:  # buffer entries belong to episode 0
        past_episode = torch.cat([episode.new_zeros(x.shape[0], K - 1), episode], dim=1)
    y = torch.addcmul(bias, x, weight[K - 1])
    for lag in range(1, K):
        tap = past[:, K - 1 - lag : K - 1 - lag + T]  # x[t - lag] for every t
        if episode is not None:
            same = past_episode[:, K - 1 - lag : K - 1 - lag + T] == episode
            tap = tap * same[..., None]
        y = y + tap * weight[K - 1 - lag]
    return y


def _buffer_part(buffer, episode, lag: int, held: int) -> torch.Tensor:
    """The buffer entries read by outputs t < held at this lag, zero past a reset."""
    K1 = buffer.shape[1]
    part = buffer[:, K1 - lag : K1 - lag + held]  # (B, held, d)
    if episode is not None:
        part = part * (episode[:, :held, None] == 0)
    return part
