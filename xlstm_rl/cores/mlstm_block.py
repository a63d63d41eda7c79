"""mLSTM block: pre-norm residual mLSTM layer, then a pre-norm gated feed-forward.

Batch-first: x (B, T, hidden_size) for sequences, (B, hidden_size) for steps. The
layer projects to multi-head q, k, v and scalar input/forget gates per head,
soft-caps the gates, runs the kernel layer's mLSTM, normalises each head and
applies an output gate before projecting back to the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

from xlstm_rl.cores.base import make_state
from xlstm_rl.cores.layers import CausalConv, HeadNorm, SwiGLU, soft_cap
from xlstm_rl.cores.options import check_fields
from xlstm_rl.kernels import backends, mlstm_sequence, mlstm_step


@dataclass
class MLSTMBlockConfig:
    hidden_size: int
    num_heads: int = 4
    head_dim: int | None = None  # v width per head; default hidden_size / num_heads
    qk_dim_factor: float = 0.5  # q and k width per head, as a fraction of head_dim
    ffn_factor: float = 1.0
    conv_kernel: int = 4  # reset-aware causal conv before q, k and the gates; 0: none
    # learnable skip from the conv's activation to each head's normed output (the xLSTM
    # paper's mLSTM layer has one); needs the conv and num_heads * head_dim == hidden_size
    conv_skip: bool = False
    # layer norm over each head's output (the xLSTM paper's); false keeps only a learnable
    # scale, so that the output's magnitude (a count, say) reaches the residual stream
    head_norm: bool = True
    gate_cap: float = 15.0
    igate_bias: float = 0.0
    fgate_bias: tuple[float, float] = (3.0, 6.0)  # spread linearly over heads
    backend: str = "auto"
    step_backend: str = "auto"
    chunk_size: int | None = None  # None: 16 on the CPU (small chunks are fastest), else 64

    def __post_init__(self):
        check_fields(self, "mLSTM block")
        if self.hidden_size < 1 or self.num_heads < 1:
            raise ValueError("hidden_size and num_heads must be positive")
        if self.head_dim is not None and self.head_dim < 1:
            raise ValueError(f"mLSTM block: option head_dim must be >= 1, got {self.head_dim}")
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
        if self.conv_kernel < 0 or self.conv_kernel == 1:
            raise ValueError(f"conv_kernel must be 0 (no conv) or >= 2, got {self.conv_kernel}")
        width = self.num_heads * self.dh
        if self.conv_skip and (not self.conv_kernel or width != self.hidden_size):
            raise ValueError(
                "conv_skip needs the conv (conv_kernel >= 2) and num_heads * head_dim == "
                f"hidden_size, got conv_kernel={self.conv_kernel}, "
                f"{self.num_heads} * {self.dh} != {self.hidden_size}"
            )
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
        # q, k and the input/forget gates read the (convolved) input; v and the output gate
        # read it directly, as in the xLSTM paper's mLSTM block
        self.conv = CausalConv(d, c.conv_kernel) if c.conv_kernel else None
        self.split = [H * c.dqk, H * c.dqk, 2 * H]
        self.proj_qk = nn.Linear(d, sum(self.split))
        self.proj_vo = nn.Linear(d, 2 * H * dh)
        self.head_norm = HeadNorm(H, dh, normalize=c.head_norm)
        self.skip = nn.Parameter(torch.ones(H, dh)) if c.conv_skip else None
        self.out = nn.Linear(H * dh, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = SwiGLU(d, c.ffn_factor)
        with torch.no_grad():
            gate_w, gate_b = self.proj_qk.weight[-2 * H :], self.proj_qk.bias[-2 * H :]
            gate_w.zero_()
            gate_b[:H] = c.igate_bias
            gate_b[H:] = torch.linspace(*c.fgate_bias, H)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        shapes = {"C": (c.num_heads, c.dqk, c.dh), "n": (c.num_heads, c.dqk), "m": (c.num_heads,)}
        if c.conv_kernel:
            shapes["conv"] = (c.conv_kernel - 1, c.hidden_size)
        return shapes

    def _project(self, x: torch.Tensor, state: TensorDict, resets: torch.Tensor | None):
        """x (B, T, d) -> q, k, v, o (B, T, H, dh), capped gates i, f (B, T, H), conv state,
        and the conv's activation per head (B, T, H, dh) when conv_skip, else None."""
        c = self.config
        xn = self.norm(x)
        conv_state = None
        if self.conv is None:
            xc = xn
        else:
            xc, conv_state = self.conv(xn, state["conv"], resets)
            xc = F.silu(xc)
        q, k, gates = self.proj_qk(xc).split(self.split, dim=-1)
        v, o = self.proj_vo(xn).chunk(2, dim=-1)
        heads = (c.num_heads, -1)
        i, f = soft_cap(gates, c.gate_cap).unflatten(-1, (2, c.num_heads)).unbind(-2)
        qkvo = (t.unflatten(-1, heads) for t in (q, k, v, o))
        skip = xc.unflatten(-1, heads) if self.skip is not None else None
        return *qkvo, i, f, conv_state, skip

    @staticmethod
    def _new_state(C, n, m, conv_state, batch_size) -> TensorDict:
        new = {"C": C, "n": n, "m": m}
        if conv_state is not None:
            new["conv"] = conv_state
        return make_state(new, batch_size)

    def _finish(self, x: torch.Tensor, h: torch.Tensor, o: torch.Tensor, skip=None):
        """Per-head norm (plus the conv skip), output gate, projection, residual, then the
        feed-forward."""
        if skip is None:
            x = x + self.head_norm.project(h, self.out, torch.sigmoid(o))
        else:
            gated = (self.head_norm(h) + self.skip * skip) * torch.sigmoid(o)
            x = x + self.out(gated.flatten(-2))
        return x + self.ffn(self.ffn_norm(x))

    def forward(self, x: torch.Tensor, state: TensorDict, resets: torch.Tensor | None):
        q, k, v, o, i, f, conv_state, skip = self._project(x, state, resets)
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
        y = self._finish(x, h.transpose(1, 2), o, skip)
        return y, self._new_state(C, n, m, conv_state, state.batch_size)

    def step(self, x: torch.Tensor, state: TensorDict, reset: torch.Tensor | None):
        # _project (its conv included) takes x (B, d) as well: no time axis to add and drop
        q, k, v, o, i, f, conv_state, skip = self._project(x, state, reset)
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
        y = self._finish(x, h, o, skip)
        return y, self._new_state(C, n, m, conv_state, state.batch_size)
