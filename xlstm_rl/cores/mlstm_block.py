"""mLSTM block: pre-norm residual mLSTM layer, then a pre-norm gated feed-forward.

Batch-first: x (B, T, hidden_size) for sequences, (B, hidden_size) for steps. The
layer projects to multi-head q, k, v and scalar input/forget gates per head,
soft-caps the gates, runs the kernel layer's mLSTM, normalises each head and
applies an output gate before projecting back to the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.cores.layers import HeadNorm, SwiGLU, soft_cap
from xlstm_rl.kernels import backends, mlstm_sequence, mlstm_step


@dataclass
class MLSTMBlockConfig:
    hidden_size: int
    num_heads: int = 4
    head_dim: int | None = None  # v width per head; default hidden_size / num_heads
    qk_dim_factor: float = 0.5  # q and k width per head, as a fraction of head_dim
    ffn_factor: float = 1.0
    gate_cap: float = 15.0
    igate_bias: float = 0.0
    fgate_bias: tuple[float, float] = (3.0, 6.0)  # spread linearly over heads
    backend: str = "auto"
    step_backend: str = "auto"
    chunk_size: int | None = None  # None: 16 on the CPU (small chunks are fastest), else 64

    def __post_init__(self):
        if self.hidden_size < 1 or self.num_heads < 1:
            raise ValueError("hidden_size and num_heads must be positive")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "pick another num_heads or set head_dim"
            )
        if self.backend not in backends("mlstm_sequence"):
            raise ValueError(
                f"unknown backend {self.backend!r}; valid: {backends('mlstm_sequence')}"
            )
        if self.step_backend not in backends("mlstm_step"):
            raise ValueError(
                f"unknown step_backend {self.step_backend!r}; valid: {backends('mlstm_step')}"
            )
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive or None, got {self.chunk_size}")
        if self.gate_cap <= 0 or self.ffn_factor <= 0 or not 0 < self.qk_dim_factor <= 4:
            raise ValueError("gate_cap, ffn_factor and qk_dim_factor (<= 4) must be positive")

    @property
    def dh(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def dqk(self) -> int:
        return max(1, round(self.dh * self.qk_dim_factor))


class MLSTMBlock(nn.Module):
    def __init__(self, config: MLSTMBlockConfig):
        super().__init__()
        self.config = c = config
        H, dh, d = c.num_heads, c.dh, c.hidden_size
        self.norm = nn.LayerNorm(d)
        # one projection for q, k, v, the output gate and the input/forget gates
        self.split = [H * c.dqk, H * c.dqk, H * dh, H * dh, 2 * H]
        self.proj = nn.Linear(d, sum(self.split))
        self.head_norm = HeadNorm(H, dh)
        self.out = nn.Linear(H * dh, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = SwiGLU(d, c.ffn_factor)
        with torch.no_grad():
            gate_w, gate_b = self.proj.weight[-2 * H :], self.proj.bias[-2 * H :]
            gate_w.zero_()
            gate_b[:H] = c.igate_bias
            gate_b[H:] = torch.linspace(*c.fgate_bias, H)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        return {"C": (c.num_heads, c.dqk, c.dh), "n": (c.num_heads, c.dqk), "m": (c.num_heads,)}

    def _project(self, x: torch.Tensor):
        """(..., d) -> q, k, v, o as (..., H, dh) and capped gates i, f as (..., H)."""
        c = self.config
        q, k, v, o, gates = self.proj(self.norm(x)).split(self.split, dim=-1)
        heads = (c.num_heads, -1)
        i, f = soft_cap(gates, c.gate_cap).unflatten(-1, (2, c.num_heads)).unbind(-2)
        return (
            q.unflatten(-1, heads),
            k.unflatten(-1, heads),
            v.unflatten(-1, heads),
            o.unflatten(-1, heads),
            i,
            f,
        )

    def _finish(self, x: torch.Tensor, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """Per-head norm, output gate, projection, residual, then the feed-forward."""
        gated = self.head_norm(h) * torch.sigmoid(o)
        x = x + self.out(gated.flatten(-2))
        return x + self.ffn(self.ffn_norm(x))

    def forward(self, x: torch.Tensor, state: TensorDict, resets: torch.Tensor | None):
        q, k, v, o, i, f = self._project(x)  # (B, T, H, dh), gates (B, T, H)
        h, (C, n, m) = mlstm_sequence(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            i.transpose(1, 2),
            f.transpose(1, 2),
            resets=resets,
            state=(state["C"], state["n"], state["m"]),
            backend=self.config.backend,
            chunk_size=self.config.chunk_size or (64 if x.is_cuda else 16),
        )  # h (B, H, T, dh)
        y = self._finish(x, h.transpose(1, 2), o)
        return y, TensorDict({"C": C, "n": n, "m": m}, batch_size=state.batch_size)

    def step(self, x: torch.Tensor, state: TensorDict, reset: torch.Tensor | None):
        q, k, v, o, i, f = self._project(x)  # (B, H, dh), gates (B, H)
        h, (C, n, m) = mlstm_step(
            q,
            k,
            v,
            i,
            f,
            (state["C"], state["n"], state["m"]),
            reset=reset,
            backend=self.config.step_backend,
        )
        y = self._finish(x, h, o)
        return y, TensorDict({"C": C, "n": n, "m": m}, batch_size=state.batch_size)
