"""Gated Transformer-XL-style memory core (GTrXL): attention over a cache of past activations.

Batch-first: x (B, T, input_size) -> y (B, T, hidden_size). Each layer keeps the
keys and values of the last `memory_len` inputs it saw as its state (`k`, `v`,
(B, W, H, dh)) with a validity mask (`valid`, (B, W)), so a step projects only the
new input. A query attends to itself and the W items before it, with
a learned bias per head and distance, never across an episode start. Residuals
are GRU-type gates biased towards the identity (Parisotto et al., 2020). The
acting cost is set by the window W (attention over W cached keys); the memory it
holds is 2 * W * d floats per layer and row.

A sequence pass takes its queries `chunk_len` steps at a time (default max(128, W)),
each chunk through every layer with the caches carried between chunks, so its time and
memory grow as T * (chunk_len + W), not T^2 (a 10,000-step rollout, say). The result
is the same for every chunk_len, and the same as T steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xlstm_rl.cores.base import MemoryCore, make_state
from xlstm_rl.cores.options import option_ints, option_number


class GRUGate(nn.Module):
    """out = (1 - z) * x + z * tanh(W y + U (r * x)), with z's bias starting at -2."""

    def __init__(self, d: int, bias: float = 2.0):
        super().__init__()
        self.w = nn.Linear(d, 3 * d, bias=False)
        self.u_rz = nn.Linear(d, 2 * d, bias=False)
        self.u_h = nn.Linear(d, d, bias=False)
        self.bias = bias

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        wr, wz, wh = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u_rz(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.bias)
        return (1 - z) * x + z * torch.tanh(wh + self.u_h(r * x))


class GTrXLLayer(nn.Module):
    def __init__(self, d: int, num_heads: int, memory_len: int, ffn_factor: float):
        super().__init__()
        if d % num_heads:
            raise ValueError(f"hidden_size={d} is not divisible by num_heads={num_heads}")
        self.d, self.num_heads, self.memory_len = d, num_heads, memory_len
        self.norm_attn = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.distance_bias = nn.Parameter(torch.zeros(num_heads, memory_len + 1))
        self.gate_attn = GRUGate(d)
        self.norm_ffn = nn.LayerNorm(d)
        width = max(8, int(d * ffn_factor))
        self.ffn = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, d))
        self.gate_ffn = GRUGate(d)

    def _residuals(self, x, attn):
        """The gated residuals after attention: its output projection, then the
        feed-forward; shared by the sequence pass and the step."""
        x = self.gate_attn(x, F.relu(self.out(attn)))
        return self.gate_ffn(x, F.relu(self.ffn(self.norm_ffn(x))))

    def forward(self, x, k_mem, v_mem, valid, resets):
        """x (B, T, d); the cache k_mem, v_mem (B, W, H, dh) of the last W inputs' keys and
        values, valid (B, W) -> y (B, T, d), new k_mem, v_mem and valid."""
        B, T, d = x.shape
        W, H = self.memory_len, self.num_heads
        # only the new steps are projected: the cache holds its keys and values already
        q, k_new, v_new = self.qkv(self.norm_attn(x)).unflatten(-1, (3, H, d // H)).unbind(2)
        k = torch.cat([k_mem.to(x.dtype), k_new], dim=1)  # (B, W + T, H, dh), time order
        v = torch.cat([v_mem.to(x.dtype), v_new], dim=1)

        query_pos = torch.arange(T, device=x.device)[:, None] + W
        key_pos = torch.arange(W + T, device=x.device)[None, :]
        distance = query_pos - key_pos  # (T, W + T)
        in_window = (distance >= 0) & (distance <= W)
        # keys belong to the query's episode: no reset in (key, query]; memory needs none in [0, t]
        episode = (
            torch.zeros(B, T, dtype=torch.long, device=x.device)
            if resets is None
            else resets.long().cumsum(1)
        )
        key_episode = torch.cat([torch.full_like(episode[:, :1], -1).expand(B, W), episode], 1)
        key_alive = torch.cat(
            [valid.bool(), torch.ones(B, T, dtype=torch.bool, device=x.device)], 1
        )
        mem_episode_ok = (episode == 0)[:, :, None] & (key_pos < W)  # (B, T, W + T)
        same = episode[:, :, None] == key_episode[:, None, :]
        allowed = in_window & key_alive[:, None, :] & (same | mem_episode_ok)  # (B, T, W + T)

        bias = self.distance_bias[:, distance.clamp(0, W)]  # (H, T, W + T)
        scores = torch.einsum("bthe,bshe->bhts", q, k) / (d // H) ** 0.5 + bias
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        attn = torch.einsum("bhts,bshe->bthe", scores.softmax(-1), v).flatten(-2)
        x = self._residuals(x, attn)

        # the new cache: the last W keys and values, valid if still in the current episode
        last_episode = episode[:, -1:]  # (B, 1)
        new_valid = key_alive & (
            (key_episode == last_episode) | ((last_episode == 0) & (key_pos < W))
        )
        return x, k[:, -W:], v[:, -W:], new_valid[:, -W:].to(valid.dtype)

    def step(self, x, k_mem, v_mem, valid, reset):
        """``forward`` for one step, x (B, d), reset (B,) bool or None, with the masks of a
        single query written out (every key is in its window; the cached ones count
        when valid and the row does not reset): fewer ops, for acting."""
        B, d = x.shape
        W, H = self.memory_len, self.num_heads
        q, k_new, v_new = self.qkv(self.norm_attn(x)).unflatten(-1, (3, H, d // H)).unbind(1)
        k = torch.cat([k_mem.to(x.dtype), k_new[:, None]], dim=1)  # (B, W + 1, H, dh)
        v = torch.cat([v_mem.to(x.dtype), v_new[:, None]], dim=1)
        keep = valid.bool() if reset is None else valid.bool() & ~reset[:, None]  # (B, W)
        allowed = torch.cat([keep, keep.new_ones(B, 1)], dim=1)  # (B, W + 1)
        # key j of the W + 1 is W - j steps back: the distance biases in reverse
        scores = torch.einsum("bhe,bshe->bhs", q, k) / (d // H) ** 0.5
        scores = (scores + self.distance_bias.flip(-1)).masked_fill(~allowed[:, None], -torch.inf)
        attn = torch.einsum("bhs,bshe->bhe", scores.softmax(-1), v).flatten(-2)
        x = self._residuals(x, attn)
        return x, k[:, -W:], v[:, -W:], allowed[:, -W:].to(valid.dtype)


class TransformerCore(MemoryCore):
    """A small GTrXL: layers of gated attention over a sliding cache of past activations."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 2,
        num_heads: int = 4,
        memory_len: int = 64,
        ffn_factor: float = 2.0,
        chunk_len: int | None = None,
    ):
        super().__init__()
        option_ints(
            "TransformerCore",
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            memory_len=memory_len,
        )
        if chunk_len is not None:
            option_ints("TransformerCore", chunk_len=chunk_len)
        if option_number("TransformerCore", "ffn_factor", ffn_factor) <= 0:
            raise ValueError(f"TransformerCore: option ffn_factor must be > 0, got {ffn_factor}")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.memory_len = memory_len
        self.chunk_len = chunk_len or max(128, memory_len)
        same = input_size == hidden_size
        self.proj_in = nn.Identity() if same else nn.Linear(input_size, hidden_size)
        self.layers = nn.ModuleList(
            GTrXLLayer(hidden_size, num_heads, memory_len, ffn_factor) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(hidden_size)

    def _state_shapes(self):
        shapes = {}
        heads = self.layers[0].num_heads
        for n in range(len(self.layers)):
            kv = (self.memory_len, heads, self.hidden_size // heads)
            shapes[f"layer{n}/k"] = shapes[f"layer{n}/v"] = kv
            shapes[f"layer{n}/valid"] = (self.memory_len,)
        return shapes

    def _forward(self, x, state, resets):
        x = self.proj_in(x)
        caches = [
            tuple(state[f"layer{n}", key] for key in ("k", "v", "valid"))
            for n in range(len(self.layers))
        ]
        L, outputs = self.chunk_len, []
        for start in range(0, x.shape[1], L):
            h = x[:, start : start + L]
            chunk_resets = None if resets is None else resets[:, start : start + L]
            for n, layer in enumerate(self.layers):
                h, *caches[n] = layer(h, *caches[n], chunk_resets)
            outputs.append(h)
        y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)
        new = {f"layer{n}": dict(zip(("k", "v", "valid"), c)) for n, c in enumerate(caches)}
        return self.norm_out(y), make_state(new, state.batch_size)

    def _step(self, x, state, reset):
        x, new = self.proj_in(x), {}
        for n, layer in enumerate(self.layers):
            s = state[f"layer{n}"]
            x, k, v, valid = layer.step(x, s["k"], s["v"], s["valid"], reset)
            new[f"layer{n}"] = {"k": k, "v": v, "valid": valid}
        return self.norm_out(x), make_state(new, state.batch_size)
