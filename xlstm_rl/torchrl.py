"""TorchRL integration: any memory core as a recurrent TensorDict module.

`MemoryModule` follows `torchrl.modules.LSTMModule`'s conventions, so a core drops
into TorchRL pipelines (collectors, `ClipPPOLoss`, `GAE`) the way an LSTM does:

- It reads the input at `in_key`, the recurrent state under `state_key` and the
  episode-start flags at `"is_init"` (written by `torchrl.envs.InitTracker`); it
  writes the output at `out_key` and the new state under `("next", state_key)`, so
  the environment's `step_mdp` carries it to the next step.
- Each leaf of the core's state TensorDict has its own key: `(state_key, *leaf)`,
  e.g. `("recurrent_state", "block0", "C")` for an mLSTM or
  `("recurrent_state", "h")` for an LSTM. The mlp core has no state keys.
- `make_tensordict_primer()` gives the `TensorDictPrimer` that declares these keys
  to the environment and zeroes them on reset.
- Step mode (the default, for collection) calls `core.step` once per step on the
  flattened batch; at an `is_init` step the state is replaced by the core's
  initial (empty) state before the input is consumed.
- Recurrent mode (`torchrl.modules.set_recurrent_mode(True)`, which TorchRL's
  losses turn on, or `default_recurrent_mode=True`) treats the last batch dim as
  time and runs `core.forward` over it. As in LSTMModule, a trajectory (at t = 0,
  or at an `is_init` step) starts from the state stored at its first step.

In collected data the primer stored the initial state at every `is_init` step, so
the two modes agree step for step. GAE's pass over the `"next"` observations marks
the root's episode starts as `is_init` too, and there the stored state is the true
one after the first step: loading it (rather than resetting) makes the bootstrap
values exact.
"""

from __future__ import annotations

import warnings

import torch
from tensordict import TensorDict, TensorDictBase, unravel_key
from tensordict.nn import TensorDictModuleBase, dispatch
from tensordict.utils import NestedKey
from torchrl.data import Unbounded
from torchrl.envs.transforms import TensorDictPrimer
from torchrl.modules import recurrent_mode, set_recurrent_mode

from xlstm_rl.cores import MemoryCore

__all__ = ["MemoryModule", "recurrent_mode", "set_recurrent_mode"]


def _as_tuple(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


def _load_rows(state: TensorDict, stored: TensorDict, rows: torch.Tensor) -> TensorDict:
    """`stored` where rows (B,) is True, `state` elsewhere."""
    return state.apply(
        lambda s, new: torch.where(rows.view(-1, *[1] * (s.dim() - 1)), new.to(s.dtype), s),
        stored,
    )


class MemoryModule(TensorDictModuleBase):
    """Wrap a `MemoryCore` for TensorDict pipelines, after `torchrl.modules.LSTMModule`.

    Args:
        core: any memory core (`xlstm_rl.cores.build_core(...)`).

    Keyword Args:
        in_key: the input, shaped `(*batch, core.input_size)`.
        out_key: the output, shaped `(*batch, core.output_size)`.
        state_key: prefix of the state keys; the leaves are read from
            `(state_key, *leaf)` and written to `("next", state_key, *leaf)`. Give
            an actor and a critic with their own cores different prefixes.
        is_init_key: the episode-start flags, `(*batch,)` or `(*batch, 1)` bool.
        default_recurrent_mode: the mode when no `set_recurrent_mode` context is
            active; False (step mode) unless given.

    In recurrent mode the sequence form returns only the final state: it is written
    to `("next", state_key, ...)` at the last time step of each row; the other steps
    keep what the tensordict held there (the states recorded during collection), or
    zeros where it held nothing.
    """

    def __init__(
        self,
        core: MemoryCore,
        *,
        in_key: NestedKey,
        out_key: NestedKey,
        state_key: NestedKey = "recurrent_state",
        is_init_key: NestedKey = "is_init",
        default_recurrent_mode: bool | None = None,
    ):
        super().__init__()
        if not isinstance(core, MemoryCore):
            raise TypeError(f"core must be a MemoryCore, got {type(core).__name__}")
        for name, key in (("in_key", in_key), ("out_key", out_key), ("is_init_key", is_init_key)):
            if isinstance(key, list):  # LSTMModule takes lists; this module one key each
                raise TypeError(
                    f"{name} is one key (a string or a tuple of strings), got the list {key!r}"
                )
        if default_recurrent_mode is not None and not isinstance(default_recurrent_mode, bool):
            raise TypeError(
                "default_recurrent_mode must be True, False or None, got "
                f"{default_recurrent_mode!r}"
            )
        self.core = core
        self.in_key = unravel_key(in_key)
        self.out_key = unravel_key(out_key)
        self.state_key = _as_tuple(state_key)
        self.is_init_key = unravel_key(is_init_key)
        self._state_dropped_warned = False
        self._recurrent_mode = default_recurrent_mode
        example = core.initial_state(1)
        self.state_leaves = [
            _as_tuple(leaf) for leaf in example.keys(include_nested=True, leaves_only=True)
        ]
        self.state_in_keys = [(*self.state_key, *leaf) for leaf in self.state_leaves]
        self.state_out_keys = [("next", *key) for key in self.state_in_keys]
        self.in_keys = [self.in_key, *self.state_in_keys, self.is_init_key]
        self.out_keys = [self.out_key, *self.state_out_keys]

    @property
    def recurrent_mode(self) -> bool:
        """The `set_recurrent_mode` context if one is active, else the default."""
        mode = recurrent_mode()
        return bool(self._recurrent_mode) if mode is None else mode

    @recurrent_mode.setter
    def recurrent_mode(self, value):
        raise RuntimeError(
            "recurrent_mode cannot be changed in place; use the "
            "torchrl.modules.set_recurrent_mode context manager, "
            "default_recurrent_mode=..., or module.set_recurrent_mode(mode)"
        )

    def set_recurrent_mode(self, mode: bool = True) -> MemoryModule:
        """A copy of this module, sharing its core, whose default mode is `mode`.

        A `torchrl.modules.set_recurrent_mode` context still overrides it, as it
        overrides LSTMModule's `default_recurrent_mode`.
        """
        return MemoryModule(
            self.core,
            in_key=self.in_key,
            out_key=self.out_key,
            state_key=self.state_key,
            is_init_key=self.is_init_key,
            default_recurrent_mode=bool(mode),
        )

    def state_specs(self) -> dict[tuple[str, ...], Unbounded]:
        """Unbatched spec of every state key, as the environment sees it."""
        example = self.core.initial_state(1)
        return {
            key: Unbounded(shape=example.get(leaf).shape[1:], dtype=example.get(leaf).dtype)
            for key, leaf in zip(self.state_in_keys, self.state_leaves)
        }

    def make_tensordict_primer(self) -> TensorDictPrimer:
        """The primer that declares the state keys to an env and zeroes them on reset.

        Append it to the env (`env.append_transform(module.make_tensordict_primer())`)
        next to an `InitTracker`; for a policy of several modules,
        `torchrl.modules.utils.get_primers_from_module(policy)` collects them all.
        """
        return TensorDictPrimer(self.state_specs(), expand_specs=True)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        shape = tensordict.shape
        recurrent = self.recurrent_mode
        if recurrent:
            if tensordict.ndim == 0:
                raise ValueError(
                    "MemoryModule in recurrent mode needs a tensordict with a time dim "
                    "(the last batch dim); got batch_size []"
                )
            flat = tensordict.unsqueeze(0) if tensordict.ndim == 1 else tensordict
            flat = flat.flatten(0, -2) if flat.ndim > 2 else flat  # (B, T)
        else:
            flat = tensordict.reshape(-1)  # (B,)
        x = flat.get(self.in_key, None)
        if x is None:
            raise KeyError(
                f"MemoryModule reads its input at in_key {self.in_key}, which the tensordict "
                f"lacks; it has {', '.join(sorted(map(str, flat.keys(True, True))))}"
            )
        is_init = flat.get(self.is_init_key, None)
        if is_init is None:
            raise KeyError(
                f"MemoryModule needs episode-start flags at {self.is_init_key!r}; add "
                "torchrl.envs.InitTracker() to the environment"
            )
        if is_init.numel() != flat.numel():
            raise ValueError(
                f"MemoryModule: the episode-start flags at {self.is_init_key!r} must be shaped "
                f"(*batch,) or (*batch, 1) with batch {tuple(shape)}, got "
                f"{tuple(tensordict.get(self.is_init_key).shape)}"
            )
        if torch._C._functorch.is_batchedtensor(x):
            raise RuntimeError(
                "MemoryModule cannot run under vmap (it steps through time and cuts "
                "sequences at episode starts); pass deactivate_vmap=True to torchrl's "
                "value estimators (GAE(..., deactivate_vmap=True))"
            )
        resets = is_init.reshape(flat.shape).bool()
        stored = self._read_state(flat, x.device)
        if recurrent:
            y, final = self._sequence(x, resets, stored)
            new_state = self._at_last_step(flat, final)
        else:
            if stored is None:
                self._warn_state_dropped(resets)
                stored = self.core.initial_state(len(x), x.device)
            y, new_state = self.core.step(x, stored, resets)
        out = TensorDict(batch_size=flat.shape)
        out.set(self.out_key, y)
        for leaf, key in zip(self.state_leaves, self.state_out_keys):
            out.set(key, new_state.get(leaf))
        tensordict.update(out.reshape(shape))
        return tensordict

    def _warn_state_dropped(self, resets: torch.Tensor) -> None:
        """A step without a state that is not an episode start: the state written at the
        last step was not carried here (an env without the primer drops it). Once."""
        if self._state_dropped_warned or not self.state_leaves or bool(resets.all()):
            return
        self._state_dropped_warned = True
        warnings.warn(
            "MemoryModule got no recurrent state at a step that is not an episode start "
            "(is_init False): the state written at the last step did not come back, so "
            "every step starts from the initial state. Append module.make_tensordict_primer() "
            "to the environment (next to InitTracker) so that step_mdp carries the state.",
            stacklevel=3,
        )

    def _at_last_step(self, flat: TensorDictBase, final: TensorDict) -> TensorDict:
        """The ("next", ...) states (B, T): the final state at the last step, and at the
        others what `flat` already holds there (zeros if nothing), so that a recurrent
        pass over collected data keeps the states it recorded."""
        B, T = flat.shape
        new = TensorDict(batch_size=[B, T])
        for leaf, key in zip(self.state_leaves, self.state_out_keys):
            last = final.get(leaf).unsqueeze(1)
            held = flat.get(key, None)
            held = last.new_zeros(B, T - 1, *last.shape[2:]) if held is None else held[:, :-1]
            new.set(leaf, torch.cat([held.to(last.dtype), last], 1))
        return new

    def _sequence(self, x: torch.Tensor, resets: torch.Tensor, stored: TensorDict | None):
        """Recurrent mode over x (B, T, in): each trajectory starts from its stored state.

        TorchRL's convention (LSTMModule): a trajectory, at t = 0 or at an is_init
        step, starts from the state stored at that step. In collected data the
        primer stored the initial state there, which the core's resets give in one
        pass; GAE's "next" data stores the true state after the first step there,
        so at such steps the sequence is cut and the stored state loaded.
        """
        B, T = resets.shape
        initial = self.core.initial_state(B, device=x.device)
        if stored is None:  # absent state means the initial state everywhere
            return self.core(x, initial, resets)
        at_initial = torch.ones(B, T, dtype=torch.bool, device=x.device)
        for leaf in self.state_leaves:
            same = stored.get(leaf) == initial.get(leaf).unsqueeze(1)
            at_initial &= same.flatten(2).all(-1)
        starts = resets.clone()
        starts[:, 0] = False  # t = 0 starts from stored[:, 0] in any case
        loads = starts & ~at_initial  # (B, T) load a stored, non-initial state here
        core_resets = starts & at_initial
        cuts = [0, *(loads.any(0).nonzero().flatten().tolist()), T]
        state = stored[:, 0]
        ys = []
        for begin, end in zip(cuts[:-1], cuts[1:]):
            if begin > 0:
                state = _load_rows(state, stored[:, begin], loads[:, begin])
            y, state = self.core(x[:, begin:end], state, core_resets[:, begin:end])
            ys.append(y)
        return torch.cat(ys, 1), state

    def _read_state(self, flat: TensorDictBase, device) -> TensorDict | None:
        """The stored state, batch_size flat.shape, or None if no state key is present."""
        values = [flat.get(key, None) for key in self.state_in_keys]
        missing = [key for key, value in zip(self.state_in_keys, values) if value is None]
        if len(missing) == len(values):
            other = flat.get(self.state_key, None)
            if other is not None:  # something else lives under this module's state_key
                found = (
                    sorted("/".join(_as_tuple(k)) for k in other.keys(True, True))
                    if isinstance(other, TensorDictBase)
                    else f"a {type(other).__name__}"
                )
                raise ValueError(
                    f"MemoryModule: {'/'.join(self.state_key)} holds {found}, not this core's "
                    f"state {sorted('/'.join(leaf) for leaf in self.state_leaves)}: a state "
                    "from another core, or two modules sharing one state_key? Give each module "
                    "its own state_key"
                )
            return None
        if missing:
            raise KeyError(
                f"MemoryModule: state keys {missing} are missing, the others present (a state "
                "from another core, or two modules sharing one state_key?)"
            )
        state = TensorDict(batch_size=flat.shape, device=device)
        for leaf, value in zip(self.state_leaves, values):
            state.set(leaf, value)
        return state
