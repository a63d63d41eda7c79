"""Small building blocks shared by the xLSTM blocks: gated feed-forward and per-head norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class HeadNorm(nn.Module):
    """Layer norm over each head's features separately, one learnable scale overall."""

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5):
        super().__init__()
        self.num_heads, self.head_dim, self.eps = num_heads, head_dim, eps
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H, Dh)
        return F.layer_norm(h, (self.head_dim,), eps=self.eps) * self.weight


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
        """x (B, T, d), buffer (B, K - 1, d) -> y (B, T, d), new buffer."""
        B, T, _ = x.shape
        K = self.kernel_size
        if T == 1:  # the acting path: one window, the buffer emptied where a row resets
            if resets is not None:
                buffer = buffer * (~resets).to(buffer.dtype)[:, :, None]
            window = torch.cat([buffer.to(x.dtype), x], dim=1)  # (B, K, d)
            return (window * self.weight).sum(1, keepdim=True) + self.bias, window[:, 1:]
        padded = torch.cat([buffer.to(x.dtype), x], dim=1)  # (B, K - 1 + T, d)
        episode = None
        if resets is not None:
            # episode id of every padded position; buffer positions belong to episode 0
            zeros = resets.new_zeros(B, K - 1, dtype=torch.long)
            episode = torch.cat([zeros, resets.long().cumsum(1)], dim=1)  # (B, K - 1 + T)
        y = self.bias.expand_as(x)
        for tap in range(K):  # tap K - 1 is the current input, tap 0 the oldest
            term = padded[:, tap : tap + T] * self.weight[tap]
            if episode is not None and tap < K - 1:
                same = episode[:, tap : tap + T] == episode[:, K - 1 :]
                term = term * same[..., None].to(x.dtype)
            y = y + term
        new_buffer = padded[:, -(K - 1) :]
        if episode is not None:  # inputs from before the last reset are gone
            stale = episode[:, -(K - 1) :] != episode[:, -1:]
            new_buffer = new_buffer.masked_fill(stale[..., None], 0.0)
        return y, new_buffer
