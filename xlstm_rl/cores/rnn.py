"""Baselines behind the memory-core interface: LSTM, GRU and a memoryless MLP.

Batch-first. The LSTM and GRU run torch's fused layers between reset points: the
sequence is cut where any row resets, the rows that reset get the empty state,
and each piece runs fused. With no resets that is a single fused call.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.cores.base import MemoryCore, make_state, reset_rows
from xlstm_rl.cores.options import option_ints

_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _TorchRNNCore(MemoryCore):
    rnn_cls: type[nn.RNNBase]
    state_keys: tuple[str, ...]
    compile_sequence = False  # cut where resets fall: one compile per reset pattern
    strict_state_dtype = True  # torch's fused layers take only their own dtype

    gate_index: int  # which of the fused layer's stacked gates the gate-bias option sets

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        input_size, hidden_size, num_layers = option_ints(
            type(self).__name__,
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
        )
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.num_layers = num_layers
        self.rnn = self.rnn_cls(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    def _init_gate_bias(self, name: str, value: float | None) -> None:
        """Set one gate's total bias (bias_ih + bias_hh) to ``value`` in every layer; None
        keeps torch's default initialisation (uniform, about zero)."""
        if value is None:
            return
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise ValueError(f"{name} must be a number or None, got {value!r}")
        H, g = self.hidden_size, self.gate_index
        with torch.no_grad():
            for layer in range(self.num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[g * H : (g + 1) * H] = float(value)
                getattr(self.rnn, f"bias_hh_l{layer}")[g * H : (g + 1) * H] = 0.0

    def _state_shapes(self):
        return {key: (self.num_layers, self.hidden_size) for key in self.state_keys}

    def state_dtype(self) -> torch.dtype:
        return self.rnn.weight_ih_l0.dtype  # torch's fused layers want their own dtype

    def _to_torch(self, state: TensorDict):
        hx = tuple(state[key].transpose(0, 1).contiguous() for key in self.state_keys)
        return hx if len(hx) > 1 else hx[0]

    def _from_torch(self, hx, batch_size) -> TensorDict:
        hx = hx if isinstance(hx, tuple) else (hx,)
        return make_state(
            {key: h.transpose(0, 1) for key, h in zip(self.state_keys, hx)}, batch_size
        )

    def _forward(self, x, state, resets):
        T = x.shape[1]
        cuts = [0, T]
        if resets is not None:
            cuts = sorted({0, T, *resets.any(0).nonzero().flatten().tolist()})
        ys = []
        # tensor_split, not x[:, start:end]: each slice's backward would build a zero
        # tensor of x's full size; split's backward concatenates the pieces once
        pieces = x.tensor_split(cuts[1:-1], dim=1)
        for start, piece in zip(cuts[:-1], pieces):
            if resets is not None:
                state = reset_rows(state, resets[:, start])
            y, hx = self.rnn(piece, self._to_torch(state))
            state = self._from_torch(hx, state.batch_size)
            ys.append(y)
        return torch.cat(ys, dim=1), state

    def _step(self, x, state, reset):
        # torch's cell op per layer: the fused layer's maths at T = 1 (equal to rounding),
        # without nn.LSTM's per-call overhead, which at B = 8 costs as much as the maths.
        keep = None if reset is None else (~reset).to(x.dtype)[:, None]
        rnn, new = self.rnn, {key: [] for key in self.state_keys}
        for layer in range(self.num_layers):
            hx = [state[key][:, layer] for key in self.state_keys]
            if keep is not None:
                hx = [h * keep for h in hx]
            weights = [getattr(rnn, f"{name}_l{layer}") for name in _CELL_WEIGHTS]
            if len(hx) == 2:
                hx = torch.lstm_cell(x, hx, *weights)
            else:
                hx = (torch.gru_cell(x, hx[0], *weights),)
            for key, h in zip(self.state_keys, hx):
                new[key].append(h)
            x = hx[0]
        new = {key: torch.stack(hs, dim=1) for key, hs in new.items()}
        return x, make_state(new, state.batch_size)


class LSTMCore(_TorchRNNCore):
    """torch's LSTM. ``forget_bias``: the forget gate's initial bias (1 is the usual
    choice for long memory, Jozefowicz et al. 2015); None keeps torch's default."""

    rnn_cls = nn.LSTM
    state_keys = ("h", "c")
    gate_index = 1  # torch's gate order: input, forget, cell, output

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        forget_bias: float | None = None,
    ):
        super().__init__(input_size, hidden_size, num_layers)
        self._init_gate_bias("forget_bias", forget_bias)


class GRUCore(_TorchRNNCore):
    """torch's GRU. ``update_bias``: the update gate's initial bias; positive values
    keep more of the old state each step (h' = (1 - z) n + z h); None keeps torch's
    default."""

    rnn_cls = nn.GRU
    state_keys = ("h",)
    gate_index = 1  # torch's gate order: reset, update, new

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        update_bias: float | None = None,
    ):
        super().__init__(input_size, hidden_size, num_layers)
        self._init_gate_bias("update_bias", update_bias)


class MLPCore(MemoryCore):
    """Memoryless baseline: a two-layer MLP per step; its state is empty."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2):
        super().__init__()
        input_size, hidden_size, num_layers = option_ints(
            type(self).__name__,
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
        )
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        layers, width = [], input_size
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.Tanh()]
            width = hidden_size
        self.net = nn.Sequential(*layers)

    def _state_shapes(self):
        return {}

    def _forward(self, x, state, resets):
        return self.net(x), state

    def _step(self, x, state, reset):
        return self.net(x), state
