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
