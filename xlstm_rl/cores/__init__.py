"""Memory cores: nn.Modules with one interface (see `MemoryCore`).

`build_core(name, input_size, hidden_size, **options)` builds any of them:
"mlstm" and "slstm" (residual stacks of one block type, `num_blocks`), "xlstm"
(a mixed stack, `pattern="msmm"`-style, one letter a block), "lstm", "gru", the
memoryless "mlp" and "transformer" (a gated Transformer-XL with a cache of past
activations, the architecture xLSTM claims to replace).
"""

from __future__ import annotations

import inspect

from xlstm_rl.cores.base import MemoryCore
from xlstm_rl.cores.mlstm_block import MLSTMBlock, MLSTMBlockConfig
from xlstm_rl.cores.rnn import GRUCore, LSTMCore, MLPCore
from xlstm_rl.cores.slstm_block import SLSTMBlock, SLSTMBlockConfig
from xlstm_rl.cores.transformer import TransformerCore
from xlstm_rl.cores.xlstm import BLOCK_OPTIONS, MLSTMCore, SLSTMCore, XLSTMConfig, XLSTMCore


def _build_xlstm(input_size: int, hidden_size: int, pattern: str = "ms", **options):
    """Options go to the blocks they belong to; `mlstm=` / `slstm=` dicts also work."""
    for key in ("mlstm", "slstm"):
        if not isinstance(options.get(key, {}), dict):
            raise ValueError(
                f"option {key} of core 'xlstm' must be a mapping of {key} block options, "
                f"got {options[key]!r}"
            )
    mlstm, slstm = dict(options.pop("mlstm", {})), dict(options.pop("slstm", {}))
    for key, value in options.items():
        owners = [letter for letter in "ms" if key in BLOCK_OPTIONS[letter]]
        if not owners:
            valid = sorted(BLOCK_OPTIONS["m"] | BLOCK_OPTIONS["s"] | {"pattern"})
            raise ValueError(f"unknown option {key!r} for core 'xlstm'; valid: {valid}")
        if "m" in owners:
            mlstm.setdefault(key, value)
        if "s" in owners:
            slstm.setdefault(key, value)
    return XLSTMCore(XLSTMConfig(input_size, hidden_size, pattern, mlstm=mlstm, slstm=slstm))


CORES = {
    "mlstm": MLSTMCore,
    "slstm": SLSTMCore,
    "xlstm": _build_xlstm,
    "lstm": LSTMCore,
    "gru": GRUCore,
    "mlp": MLPCore,
    "transformer": TransformerCore,
}


def register_core(name: str, builder) -> None:
    """Make a core buildable by name: builder(input_size, hidden_size, **options)."""
    CORES[name] = builder


def _valid_options(builder) -> list[str] | None:
    """The keyword options ``builder`` takes; None if it takes any keyword (a registered
    builder with ``**kwargs``), so that only building it can tell."""
    if builder is _build_xlstm:
        return sorted({"pattern", "mlstm", "slstm", *BLOCK_OPTIONS["m"], *BLOCK_OPTIONS["s"]})
    params = inspect.signature(builder).parameters.values()
    # the block stacks pass their **block_options on to a block config
    extra = {MLSTMCore: BLOCK_OPTIONS["m"], SLSTMCore: BLOCK_OPTIONS["s"]}.get(builder)
    anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if anything and extra is None:
        return None
    names = {
        p.name
        for p in params
        if p.name not in ("input_size", "hidden_size")
        and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    return sorted(names | set(extra or ()))


def option_names(name: str) -> list[str] | None:
    """The options core ``name`` takes; None if its builder takes any keyword."""
    return _valid_options(CORES[name])


def build_core(name: str, input_size: int, hidden_size: int, **options) -> MemoryCore:
    """Build the memory core `name`; unknown names or options raise ValueError."""
    if name not in CORES:
        raise ValueError(f"unknown core {name!r}; valid cores: {sorted(CORES)}")
    builder = CORES[name]
    try:
        return builder(input_size, hidden_size, **options)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        valid = _valid_options(builder)
        known = "" if valid is None else f"; valid options: {valid}"
        raise ValueError(f"bad option for core {name!r}: {err}{known}") from None


__all__ = [
    "CORES",
    "GRUCore",
    "LSTMCore",
    "MLPCore",
    "MLSTMBlock",
    "MLSTMBlockConfig",
    "MLSTMCore",
    "MemoryCore",
    "SLSTMBlock",
    "SLSTMBlockConfig",
    "SLSTMCore",
    "TransformerCore",
    "XLSTMConfig",
    "XLSTMCore",
    "build_core",
    "option_names",
    "register_core",
]
