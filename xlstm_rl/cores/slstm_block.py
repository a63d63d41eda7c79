"""sLSTM block: pre-norm residual sLSTM layer, then a pre-norm gated feed-forward.

Batch-first: x (B, T, hidden_size) or (B, hidden_size). Input-side pre-activations
W x + b for the gates (i, f, z, o) of every head come from one projection; the
recurrent weights R (H, Dh, 4, Dh) are block-diagonal per head and start at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.cores.base import make_state
from xlstm_rl.cores.layers import HeadNorm, SwiGLU, soft_cap
from xlstm_rl.cores.options import check_fields
from xlstm_rl.kernels import backends, slstm_sequence, slstm_step


@dataclass
class SLSTMBlockConfig:
    hidden_size: int
    num_heads: int = 4
    ffn_factor: float = 4 / 3
    gate_cap: float = 15.0
    fgate_bias: tuple[float, float] = (5.0, -7.0)  # first unit to last, per head
    fgate_power: float = 1.0  # power law of the spread; larger keeps more long memories
    backend: str = "auto"

    def __post_init__(self):
        check_fields(self, "sLSTM block")
        if self.hidden_size < 1 or self.num_heads < 1:
            raise ValueError("hidden_size and num_heads must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        for op in ("slstm_sequence", "slstm_step"):
            if self.backend not in backends(op):
                raise ValueError(
                    f"unknown backend {self.backend!r} for the sLSTM blocks; valid: "
                    f"{backends(op)} (an xlstm core passes backend to both block types; "
                    "mlstm={'backend': ...} sets the mLSTM blocks' alone)"
                )
        if self.gate_cap <= 0 or self.ffn_factor <= 0 or self.fgate_power <= 0:
            raise ValueError("gate_cap, ffn_factor and fgate_power must be positive")

    @property
    def dh(self) -> int:
        return self.hidden_size // self.num_heads


def forget_bias(dh: int, start: float, end: float, power: float) -> torch.Tensor:
    """Per-unit forget-gate bias from `start` to `end` with a power-law spread."""
    ratio = torch.linspace(0.0, 1.0, dh) if dh > 1 else torch.zeros(1)
    return start + (end - start) * ratio**power


class SLSTMBlock(nn.Module):
    def __init__(self, config: SLSTMBlockConfig):
        super().__init__()
        self.config = c = config
        H, dh, d = c.num_heads, c.dh, c.hidden_size
        self.norm = nn.LayerNorm(d)
        self.w = nn.Linear(d, H * 4 * dh)
        self.R = nn.Parameter(torch.zeros(H, dh, 4, dh))
        self.head_norm = HeadNorm(H, dh)
        self.out = nn.Linear(H * dh, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = SwiGLU(d, c.ffn_factor)
        with torch.no_grad():
            bias = self.w.bias.view(H, 4, dh)
            bias.zero_()
            bias[:, 1] = forget_bias(dh, *c.fgate_bias, c.fgate_power)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        shape = (self.config.num_heads, self.config.dh)
        return {"c": shape, "n": shape, "m": shape, "h": shape}

    def _gates(self, x: torch.Tensor) -> torch.Tensor:
        """(..., d) -> capped pre-activations (..., H, 4, dh)."""
        c = self.config
        return soft_cap(self.w(self.norm(x)), c.gate_cap).unflatten(-1, (c.num_heads, 4, c.dh))

    def _finish(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = x + self.head_norm.project(h, self.out)
        return x + self.ffn(self.ffn_norm(x))

    @staticmethod
    def _pack(state: TensorDict) -> tuple[torch.Tensor, ...]:
        return state["c"], state["n"], state["m"], state["h"]

    @staticmethod
    def _unpack(new, batch_size) -> TensorDict:
        return make_state(dict(zip("cnmh", new)), batch_size)

    def forward(self, x: torch.Tensor, state: TensorDict, resets: torch.Tensor | None):
        h, new = slstm_sequence(
            self._gates(x),
            self.R,
            resets=resets,
            state=self._pack(state),
            backend=self.config.backend,
        )  # h (B, T, H, dh)
        return self._finish(x, h), self._unpack(new, state.batch_size)

    def step(self, x: torch.Tensor, state: TensorDict, reset: torch.Tensor | None):
        h, new = slstm_step(
            self._gates(x), self.R, self._pack(state), reset=reset, backend=self.config.backend
        )
        return self._finish(x, h), self._unpack(new, state.batch_size)
