"""Residual xLSTM stacks: mLSTM blocks ("m"), sLSTM blocks ("s"), or a mix.

Batch-first: x (B, T, input_size) -> y (B, T, hidden_size). An input projection
maps to the residual stream of width hidden_size; blocks follow `pattern`, one
letter a block; a final layer norm closes the stack. The state holds one entry
per block, "block0", "block1", ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.cores.base import MemoryCore, make_state
from xlstm_rl.cores.mlstm_block import MLSTMBlock, MLSTMBlockConfig
from xlstm_rl.cores.options import check_fields
from xlstm_rl.cores.slstm_block import SLSTMBlock, SLSTMBlockConfig

BLOCK_OPTIONS = {
    "m": set(MLSTMBlockConfig.__dataclass_fields__) - {"hidden_size"},
    "s": set(SLSTMBlockConfig.__dataclass_fields__) - {"hidden_size"},
}


@dataclass
class XLSTMConfig:
    input_size: int
    hidden_size: int
    pattern: str = "ms"
    mlstm: dict = field(default_factory=dict)  # options for every mLSTM block
    slstm: dict = field(default_factory=dict)  # options for every sLSTM block

    def __post_init__(self):
        check_fields(self, "xLSTM core")
        if not self.pattern or set(self.pattern) - {"m", "s"}:
            raise ValueError(
                f"pattern must be a non-empty string of 'm' (mLSTM) and 's' (sLSTM), "
                f"got {self.pattern!r}"
            )
        if self.input_size < 1 or self.hidden_size < 1:
            raise ValueError("input_size and hidden_size must be positive")
        for letter, key in (("m", "mlstm"), ("s", "slstm")):
            unknown = set(getattr(self, key)) - BLOCK_OPTIONS[letter]
            if unknown:
                raise ValueError(
                    f"unknown {key} block option(s) {sorted(unknown)}; valid: "
                    f"{sorted(BLOCK_OPTIONS[letter])}"
                )

    def block_config(self, letter: str):
        if letter == "m":
            return MLSTMBlockConfig(self.hidden_size, **self.mlstm)
        return SLSTMBlockConfig(self.hidden_size, **self.slstm)


class XLSTMCore(MemoryCore):
    """A residual stack of mLSTM and sLSTM blocks behind the memory-core interface."""

    def __init__(self, config: XLSTMConfig):
        super().__init__()
        self.config = config
        self.input_size = config.input_size
        self.hidden_size = self.output_size = config.hidden_size
        same = config.input_size == config.hidden_size
        self.proj_in = nn.Identity() if same else nn.Linear(config.input_size, config.hidden_size)
        self.blocks = nn.ModuleList(
            (MLSTMBlock if letter == "m" else SLSTMBlock)(config.block_config(letter))
            for letter in config.pattern
        )
        self.norm_out = nn.LayerNorm(config.hidden_size)
        # the sLSTM's sequence form is a loop over time: compiled, a graph T steps long
        # (minutes of compile for a 128-step rollout, measured by scripts/bench_ppo.py)
        self.compile_sequence = "s" not in config.pattern

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            f"block{b}/{key}": shape
            for b, block in enumerate(self.blocks)
            for key, shape in block.state_shapes().items()
        }

    def _run(self, x: torch.Tensor, state: TensorDict, resets, method: str):
        x = self.proj_in(x)
        new = {}
        for b, block in enumerate(self.blocks):
            x, new[f"block{b}"] = getattr(block, method)(x, state[f"block{b}"], resets)
        return self.norm_out(x), make_state(new, state.batch_size)

    def _forward(self, x, state, resets):
        return self._run(x, state, resets, "forward")

    def _step(self, x, state, reset):
        return self._run(x, state, reset, "step")


def _check_num_blocks(num_blocks) -> None:
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be an int >= 1, got {num_blocks!r}")


class MLSTMCore(XLSTMCore):
    """A residual stack of mLSTM blocks."""

    def __init__(self, input_size: int, hidden_size: int, num_blocks: int = 1, **block_options):
        _check_num_blocks(num_blocks)
        super().__init__(
            XLSTMConfig(input_size, hidden_size, "m" * num_blocks, mlstm=block_options)
        )


class SLSTMCore(XLSTMCore):
    """A residual stack of sLSTM blocks."""

    def __init__(self, input_size: int, hidden_size: int, num_blocks: int = 1, **block_options):
        _check_num_blocks(num_blocks)
        super().__init__(
            XLSTMConfig(input_size, hidden_size, "s" * num_blocks, slstm=block_options)
        )
