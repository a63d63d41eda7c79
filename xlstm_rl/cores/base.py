"""The one interface every memory core implements.

Batch-first: sequences are x (B, T, input_size) with resets (B, T) bool; steps are
x (B, input_size) with reset (B,) bool. resets[b, t] = True means an episode begins
at t for row b: the state entering t is replaced by `initial_state` before x_t is
consumed. Recurrent state is a TensorDict with batch_size [B], always passed in and
returned, never kept on the module.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.kernels.validate import as_int, check_devices, check_mask


class MemoryCore(nn.Module):
    """Base class: subclasses implement `_state_shapes`, `_forward` and `_step`."""

    input_size: int
    output_size: int
    # whether training's ``compile`` option compiles the loss (the sequence form) too, or
    # only the acting step: False where the sequence form branches on where the resets
    # fall (a compile per pattern) or steps through time in Python (a graph T steps long)
    compile_sequence: bool = True
    # whether the state must be in state_dtype(): torch's fused LSTM/GRU want exactly
    # their weights' dtype; the other cores cast what they read (under autocast their
    # state may come back in the autocast dtype, and goes in again as it is)
    strict_state_dtype: bool = False

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-row shapes of the state's leaves, keyed by their (possibly nested) names."""
        raise NotImplementedError

    def _forward(self, x, state, resets):
        raise NotImplementedError

    def _step(self, x, state, reset):
        raise NotImplementedError

    def state_dtype(self) -> torch.dtype:
        """float32 (the kernels keep state in float32), float64 for a float64 module."""
        p = next(self.parameters(), None)
        return torch.float64 if p is not None and p.dtype == torch.float64 else torch.float32

    def initial_state(self, batch_size: int, device=None) -> TensorDict:
        """The empty state (all zeros) for `batch_size` rows."""
        size = as_int(batch_size)
        if size is None or size < 0:
            raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
        device = device if device is not None else self._device()
        leaves = {
            key: torch.zeros(batch_size, *shape, device=device, dtype=self.state_dtype())
            for key, shape in self._state_shapes().items()
        }
        return TensorDict(_nest(leaves), batch_size=[batch_size], device=device)

    def forward(self, x: torch.Tensor, state: TensorDict, resets: torch.Tensor | None = None):
        """Run over a sequence: x (B, T, input_size) -> y (B, T, output_size), new state."""
        self._check_x(x, seq=True)
        B, T = x.shape[:2]
        if T == 0:
            raise ValueError(
                f"{type(self).__name__} needs at least one time step, got x of shape "
                f"{tuple(x.shape)} (B, T=0, input_size)"
            )
        check_mask("resets", resets, (B, T), "B T")
        check_devices("x", x, ("resets", resets))
        self._check_state(state, B, x.device)
        return self._forward(x, state, resets)

    def step(self, x: torch.Tensor, state: TensorDict, reset: torch.Tensor | None = None):
        """One step: x (B, input_size) -> y (B, output_size), new state."""
        self._check_x(x, seq=False)
        B = x.shape[0]
        check_mask("reset", reset, (B,), "B")
        check_devices("x", x, ("reset", reset))
        self._check_state(state, B, x.device)
        return self._step(x, state, reset)

    def _strict_dtype(self) -> torch.dtype | None:
        return self.state_dtype() if self.strict_state_dtype else None

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _check_x(self, x: torch.Tensor, seq: bool) -> None:
        name = "(B, T, input_size)" if seq else "(B, input_size)"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(
                f"{type(self).__name__} expects a floating x of shape {name}, got {got}"
            )
        if x.dim() != (3 if seq else 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects x of shape {name} with input_size="
                f"{self.input_size}, got {tuple(x.shape)}"
                + ("; use step() for a single time step" if seq and x.dim() == 2 else "")
            )
        p = next(self.parameters(), None)
        if p is not None and x.device != p.device:
            raise ValueError(
                f"{type(self).__name__}: x is on {x.device} but the core's parameters are on "
                f"{p.device}; move one to the other (x.to('{p.device}') or core.to('{x.device}'))"
            )
        # under autocast torch casts inside the layers; otherwise a mismatch fails deep in
        # a matmul with no word about the core
        if p is not None and x.dtype != p.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{type(self).__name__}: x is {x.dtype} but the core's parameters are "
                f"{p.dtype}; cast one to the other (x.to({p.dtype}) or core.to({x.dtype}))"
            )

    def _check_state(self, state: TensorDict, B: int, device: torch.device) -> None:
        # The common case in one walk over the state (acting checks it every env step);
        # anything off is looked at again below, to say what is wrong.
        if (
            isinstance(state, TensorDict)
            and state.batch_size == (B,)
            and _has_layout(state, _nest(self._state_shapes()), device, self._strict_dtype())
        ):
            return
        cls = type(self).__name__
        if not isinstance(state, TensorDict):
            raise TypeError(
                f"{cls} expects its state as a TensorDict from initial_state(), "
                f"got {type(state).__name__}"
            )
        if state.batch_size != torch.Size([B]):
            raise ValueError(
                f"{cls}: the state's batch_size {list(state.batch_size)} does not match "
                f"the input's batch size B={B}"
            )
        shapes = self._state_shapes()
        keys = {_join(k) for k in state.keys(include_nested=True, leaves_only=True)}
        if keys != set(shapes):
            raise ValueError(
                f"{cls}: the state does not come from this core: expected keys "
                f"{sorted(shapes)}, got {sorted(keys)}"
            )
        for key, shape in shapes.items():
            leaf = state.get(tuple(key.split("/")))
            if leaf.shape[1:] != torch.Size(shape):
                raise ValueError(
                    f"{cls}: state entry {key!r} has per-row shape {tuple(leaf.shape[1:])}, "
                    f"expected {shape}; the state comes from a core of another size"
                )
            if leaf.device != device:
                raise ValueError(
                    f"{cls}: state entry {key!r} is on {leaf.device} but x is on {device}; "
                    f"move the state with state.to('{device}')"
                )
            if self.strict_state_dtype and leaf.dtype != self.state_dtype():
                raise TypeError(
                    f"{cls}: state entry {key!r} is {leaf.dtype}, expected "
                    f"{self.state_dtype()} (initial_state's); use state.to({self.state_dtype()})"
                )


def _has_layout(state: TensorDict, layout: dict, device: torch.device, dtype) -> bool:
    """Whether ``state`` has exactly the nested keys of ``layout``, leaves of its per-row
    shapes on ``device`` (in ``dtype`` unless that is None)."""
    if len(state.keys()) != len(layout):
        return False
    for key, value in state.items():
        expected = layout.get(key)
        if isinstance(expected, dict):
            if not (isinstance(value, TensorDict) and _has_layout(value, expected, device, dtype)):
                return False
        elif expected is None or not isinstance(value, torch.Tensor):
            return False
        elif value.shape[1:] != expected or value.device != device:
            return False
        elif dtype is not None and value.dtype != dtype:
            return False
    return True


def make_state(entries: dict, batch_size: torch.Size) -> TensorDict:
    """A state TensorDict from entries a core just computed from a checked state.

    Their batch dims are right by construction, so tensordict's per-entry checks
    (about 10 us a TensorDict, as much as the mLSTM step's maths at B = 8) are skipped.
    ``TensorDict._new_unsafe`` is tensordict's own unchecked constructor (private API);
    where a tensordict release lacks it, the checked constructor gives the same result.
    """
    return _NEW_STATE(entries, batch_size=torch.Size(batch_size))


_NEW_STATE = getattr(TensorDict, "_new_unsafe", TensorDict)


def _join(key) -> str:
    return "/".join(key) if isinstance(key, tuple) else key


def _nest(leaves: dict[str, torch.Tensor]) -> dict:
    nested: dict = {}
    for key, value in leaves.items():
        *path, leaf = key.split("/")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def reset_rows(state: TensorDict, reset: torch.Tensor | None) -> TensorDict:
    """Zero (the empty state) the rows where reset is True."""
    if reset is None:
        return state
    keep = ~reset
    return state.apply(lambda t: t * keep.view(-1, *([1] * (t.dim() - 1))).to(t.dtype))
