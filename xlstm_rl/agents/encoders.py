"""Observation encoders chosen from the observation space, and conversion of env data to tensors.

An encoder maps a batch of observations with any leading dims (``(B,)`` when acting,
``(B, T)`` when training) to features ``(*lead, output_size)``:

- ``Discrete`` / ``MultiDiscrete``: one-hot per component, or learned embeddings
  (``embedding_size``), concatenated.
- ``Box`` vector (any shape but an image): flattened, scaled to [-1, 1] when bounded.
- ``Box`` image ``(H, W, C)`` or ``(C, H, W)``: a small CNN. Integer images (MiniGrid's
  object / colour / state indices) get a learned embedding per channel value first;
  float images are scaled by their bounds.
- ``Dict``: the sub-encoders of its entries, concatenated in key order (MiniGrid's
  ``image`` + ``direction`` is this case).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn


def obs_to_tensor(space: spaces.Space, obs: Any, device: torch.device) -> torch.Tensor | TensorDict:
    """A batch of observations from a vector env as a tensor (a TensorDict for Dict spaces)."""
    if isinstance(space, spaces.Dict):
        items = {key: obs_to_tensor(sub, obs[key], device) for key, sub in space.spaces.items()}
        batch = next(iter(items.values())).shape[:1]
        return TensorDict(items, batch_size=batch, device=device)
    return torch.as_tensor(np.asarray(obs), device=device)


def _is_image(space: spaces.Box) -> bool:
    return len(space.shape) == 3 and min(space.shape) <= 4 and max(space.shape) >= 3


def _scale_bounds(space: spaces.Box) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(offset, scale) taking a bounded Box to [-1, 1]; None when unbounded."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(high <= low):
        return None
    mid, half = (high + low) / 2, (high - low) / 2
    return torch.as_tensor(mid, dtype=torch.float32), torch.as_tensor(half, dtype=torch.float32)


class DiscreteEncoder(nn.Module):
    """Discrete or MultiDiscrete: one-hot, or an embedding per component."""

    def __init__(self, space: spaces.Discrete | spaces.MultiDiscrete, embedding_size: int | None):
        super().__init__()
        if isinstance(space, spaces.Discrete):
            nvec, start = np.array([space.n]), np.array([space.start])
            self.event_dims = 0
        else:
            nvec, start = space.nvec.reshape(-1), space.start.reshape(-1)
            self.event_dims = space.nvec.ndim
        self.register_buffer("start", torch.as_tensor(start, dtype=torch.long), persistent=False)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        self.register_buffer(
            "offsets", torch.as_tensor(offsets, dtype=torch.long), persistent=False
        )
        self.nvec = [int(n) for n in nvec]
        self.embedding = None
        if embedding_size is None:
            self.output_size = int(sum(self.nvec))
        else:
            self.embedding = nn.Embedding(int(sum(self.nvec)), embedding_size)
            self.output_size = embedding_size * len(self.nvec)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[: obs.dim() - self.event_dims]
        index = obs.reshape(*lead, -1).long() - self.start  # (*lead, K)
        if self.embedding is not None:
            return self.embedding(index + self.offsets).reshape(*lead, self.output_size)
        one_hots = [F.one_hot(index[..., k], n) for k, n in enumerate(self.nvec)]
        return torch.cat(one_hots, dim=-1).float()


class VectorEncoder(nn.Module):
    """A Box of any non-image shape, flattened (and scaled to [-1, 1] when bounded)."""

    def __init__(self, space: spaces.Box):
        super().__init__()
        self.event_dims = len(space.shape)
        bounds = _scale_bounds(space)
        self.scaled = bounds is not None
        if self.scaled:
            self.register_buffer("mid", bounds[0].reshape(-1), persistent=False)
            self.register_buffer("radius", bounds[1].reshape(-1), persistent=False)
        self.output_size = int(np.prod(space.shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[: obs.dim() - self.event_dims]
        x = obs.reshape(*lead, self.output_size).float()
        return (x - self.mid) / self.radius if self.scaled else x


class ImageEncoder(nn.Module):
    """A small CNN over an (H, W, C) or (C, H, W) image; integer images are embedded first."""

    def __init__(self, space: spaces.Box, channels: int, embedding_size: int | None):
        super().__init__()
        shape = space.shape
        self.channels_last = not (shape[0] <= 4 < shape[-1])
        height, width, in_channels = shape if self.channels_last else (shape[1], shape[2], shape[0])
        self.integer = np.issubdtype(space.dtype, np.integer)
        self.embedding, self.levels = None, 0
        if self.integer:
            self.levels = int(space.high.max()) + 1
            size = embedding_size or 8
            self.embedding = nn.Embedding(in_channels * self.levels, size)
            self.register_buffer(
                "channel_offset", torch.arange(in_channels) * self.levels, persistent=False
            )
            conv_in = in_channels * size
        else:
            low, high = float(space.low.min()), float(space.high.max())
            bounded = np.isfinite(low) and np.isfinite(high) and high > low
            self.low, self.span = (low, high - low) if bounded else (0.0, 1.0)
            conv_in = in_channels
        stride = 2 if min(height, width) >= 16 else 1
        self.conv = nn.Sequential(
            nn.Conv2d(conv_in, channels, 3, stride=stride, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            probe = self.conv(torch.zeros(1, conv_in, height, width))
        self.output_size = probe.shape[-1]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-3]
        images = obs.reshape(-1, *obs.shape[-3:])
        if not self.channels_last:
            images = images.permute(0, 2, 3, 1)  # (N, H, W, C)
        if self.embedding is not None:
            index = images.long().clamp(0, self.levels - 1) + self.channel_offset
            x = self.embedding(index).flatten(-2)  # (N, H, W, C * size)
        else:
            x = (images.float() - self.low) / self.span
        x = x.permute(0, 3, 1, 2)  # (N, C', H, W)
        return self.conv(x).reshape(*lead, self.output_size)


class DictEncoder(nn.Module):
    """The sub-encoders of a Dict space's entries, concatenated in key order."""

    def __init__(self, space: spaces.Dict, channels: int, embedding_size: int | None):
        super().__init__()
        self.encoders = nn.ModuleDict(
            {key: build_encoder(sub, channels, embedding_size) for key, sub in space.spaces.items()}
        )
        self.output_size = sum(e.output_size for e in self.encoders.values())

    def forward(self, obs: TensorDict) -> torch.Tensor:
        return torch.cat([enc(obs[key]) for key, enc in self.encoders.items()], dim=-1)


def build_encoder(space: spaces.Space, channels: int = 32, embedding_size: int | None = None):
    """The encoder for ``space``; ValueError naming the space if there is none."""
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete):
        return DiscreteEncoder(space, embedding_size)
    if isinstance(space, spaces.Box):
        return (
            ImageEncoder(space, channels, embedding_size)
            if _is_image(space)
            else VectorEncoder(space)
        )
    if isinstance(space, spaces.Dict):
        return DictEncoder(space, channels, embedding_size)
    raise ValueError(
        f"no encoder for observation space {space}; supported: Discrete, MultiDiscrete, "
        "Box (vector or image) and Dict of those"
    )
