"""Bad input to a core gives a clear error that says what was expected."""

import pytest
import torch

from xlstm_rl.cores import CORES, build_core

NAMES = sorted(CORES)


def make(name):
    return build_core(name, 5, 16, **({"num_heads": 2} if "lstm" in name[1:] else {}))


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank_and_width(name):
    core = make(name)
    state = core.initial_state(3)
    with pytest.raises(ValueError, match=r"\(B, T, input_size\).*input_size=5"):
        core(torch.randn(3, 7), state)
    with pytest.raises(ValueError, match="input_size=5"):
        core(torch.randn(3, 4, 6), state)
    with pytest.raises(ValueError, match=r"\(B, input_size\)"):
        core.step(torch.randn(3, 4, 5), state)
    with pytest.raises(TypeError, match="floating"):
        core(torch.ones(3, 4, 5, dtype=torch.long), state)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_mismatch_names_both(name):
    core = make(name)  # float32 parameters
    state = core.initial_state(3)
    with pytest.raises(TypeError, match="x is torch.float64 but the core's parameters are"):
        core(torch.randn(3, 4, 5, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="torch.float64 but"):
        core.step(torch.randn(3, 5, dtype=torch.float64), state)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts inside the layers
        y, _ = core(torch.randn(3, 4, 5, dtype=torch.bfloat16), state)
    assert y.shape == (3, 4, core.output_size)


@pytest.mark.parametrize("name", NAMES)
def test_device_mismatch_names_both(name):
    # the meta device stands in for a GPU: every machine has it
    core = make(name)
    state = core.initial_state(3)
    with pytest.raises(ValueError, match="x is on meta but the core's parameters are on cpu"):
        core(torch.randn(3, 4, 5, device="meta"), state)
    with pytest.raises(ValueError, match="x is on meta but"):
        core.step(torch.randn(3, 5, device="meta"), state)
    if state.is_empty():  # the memoryless core: no state to be on the wrong device
        return
    with pytest.raises(ValueError, match=r"is on meta but x is on cpu.*state.to\('cpu'\)"):
        core(torch.randn(3, 4, 5), state.to("meta"))
    with pytest.raises(ValueError, match="is on meta but x is on cpu"):
        core.step(torch.randn(3, 5), state.to("meta"))


@pytest.mark.parametrize("name", NAMES)
def test_initial_state_checks_the_batch_size(name):
    core = make(name)
    assert core.initial_state(0).batch_size == (0,)
    for bad in (-1, "16", 2.0, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 0"):
            core.initial_state(bad)


@pytest.mark.parametrize("name", NAMES)
def test_batch_mismatch(name):
    core = make(name)
    with pytest.raises(ValueError, match="batch size B=3"):
        core(torch.randn(3, 4, 5), core.initial_state(2))
    with pytest.raises(ValueError, match="batch size B=3"):
        core.step(torch.randn(3, 5), core.initial_state(4))


@pytest.mark.parametrize("name", NAMES)
def test_resets_must_be_bool_and_shaped(name):
    core = make(name)
    state = core.initial_state(3)
    with pytest.raises(TypeError, match="bool"):
        core(torch.randn(3, 4, 5), state, torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"resets must have shape \(B=3, T=4\)"):
        core(torch.randn(3, 4, 5), state, torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        core.step(torch.randn(3, 5), state, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize(
    ("a", "b"),
    [("mlstm", "slstm"), ("lstm", "gru"), ("gru", "mlstm"), ("xlstm", "mlstm"), ("mlp", "lstm")],
)
def test_state_from_another_core(a, b):
    core_a, core_b = make(a), make(b)
    with pytest.raises(ValueError, match="does not come from this core"):
        core_a(torch.randn(2, 3, 5), core_b.initial_state(2))


def test_state_from_a_core_of_another_size():
    small, big = build_core("mlstm", 5, 16, num_heads=2), build_core("mlstm", 5, 32, num_heads=2)
    with pytest.raises(ValueError, match="another size"):
        small.step(torch.randn(2, 5), big.initial_state(2))


def test_state_must_be_a_tensordict():
    core = make("gru")
    with pytest.raises(TypeError, match="TensorDict"):
        core(torch.randn(2, 3, 5), {"h": torch.zeros(2, 1, 16)})


def test_unknown_core_and_options():
    with pytest.raises(ValueError, match="unknown core 'transformerx'.*valid cores"):
        build_core("transformerx", 5, 16)
    with pytest.raises(ValueError, match="num_hedas.*valid.*num_heads"):
        build_core("mlstm", 5, 16, num_hedas=2)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        build_core("xlstm", 5, 16, colour="red")
    with pytest.raises(ValueError, match="pattern"):
        build_core("xlstm", 5, 16, pattern="mxs")
    for name in ("mlstm", "slstm"):  # the option the user gave, not the pattern made of it
        with pytest.raises(ValueError, match="num_blocks must be an int >= 1, got 0"):
            build_core(name, 5, 16, num_blocks=0)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        build_core("mlstm", 5, 18, num_heads=4)
    with pytest.raises(ValueError, match="conv_skip needs the conv"):
        build_core("mlstm", 5, 16, conv_skip=True, conv_kernel=0)
    with pytest.raises(ValueError, match=r"2 \* 4 != 16"):
        build_core("mlstm", 5, 16, conv_skip=True, num_heads=2, head_dim=4)
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        build_core("mlstm", 5, 16, backend="cuda-magic")
    with pytest.raises(ValueError, match="forget_bias.*valid options.*update_bias"):
        build_core("gru", 5, 16, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias must be a number or None, got '1'"):
        build_core("lstm", 5, 16, forget_bias="1")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("mlstm", {"num_heads": "4"}, "mLSTM block: option num_heads must be an int, got '4'"),
        ("mlstm", {"head_dim": 2.5}, "option head_dim must be an int, got 2.5"),
        ("mlstm", {"head_dim": 0}, "option head_dim must be >= 1, got 0"),
        ("mlstm", {"fgate_bias": 3.0}, r"option fgate_bias must be two numbers \[a, b\]"),
        ("mlstm", {"conv_skip": "no"}, "option conv_skip must be true or false, got 'no'"),
        ("mlstm", {"gate_cap": float("nan")}, "option gate_cap must be a finite number"),
        ("mlstm", {"chunk_size": 16.0}, "option chunk_size must be an int, got 16.0"),
        ("slstm", {"num_heads": 2.0}, "sLSTM block: option num_heads must be an int"),
        ("xlstm", {"mlstm": None}, "option mlstm of core 'xlstm' must be a mapping"),
        ("xlstm", {"backend": "chunkwise"}, r"for the sLSTM blocks.*mlstm=\{'backend'"),
        ("lstm", {"num_layers": 2.0}, "LSTMCore: option num_layers must be an int >= 1"),
        ("transformer", {"memory_len": 4.0}, "option memory_len must be an int >= 1, got 4.0"),
        ("transformer", {"ffn_factor": 0}, "option ffn_factor must be > 0, got 0"),
        ("transformer", {"chunk_len": 0}, "option chunk_len must be an int >= 1, got 0"),
    ],
)
def test_options_of_the_wrong_type_name_the_option(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_core(name, 5, 16, **options)


def test_options_take_numpy_numbers_and_lists():
    import numpy as np

    core = build_core("mlstm", 5, 16, num_heads=np.int64(2), fgate_bias=[3, 6], gate_cap=15)
    config = core.blocks[0].config
    assert config.num_heads == 2 and type(config.num_heads) is int
    assert config.fgate_bias == (3.0, 6.0)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_sequence_and_resets_elsewhere_are_named(name):
    core = make(name)
    state = core.initial_state(3)
    with pytest.raises(
        ValueError, match=r"needs at least one time step, got x of shape \(3, 0, 5\)"
    ):
        core(torch.randn(3, 0, 5), state)
    resets = torch.zeros(3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="resets is on meta but x is on cpu"):
        core(torch.randn(3, 4, 5), state, resets.to("meta"))
    with pytest.raises(ValueError, match="reset is on meta but x is on cpu"):
        core.step(torch.randn(3, 5), state, resets[:, 0].to("meta"))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_a_state_of_another_dtype_is_named(name):
    # torch's fused layers take only their weights' dtype; the other cores cast
    core = make(name)
    state = core.initial_state(3).to(torch.float64)
    with pytest.raises(TypeError, match=r"state entry .* is torch.float64, expected torch.float32"):
        core(torch.randn(3, 4, 5), state)
    with pytest.raises(TypeError, match=r"use state.to\(torch.float32\)"):
        core.step(torch.randn(3, 5), state)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("lstm", "gru")])
def test_a_state_from_autocast_steps_goes_in_again(name):
    # under autocast a core's state may come back in bfloat16 (the mLSTM's conv buffer,
    # the transformer's cache): the next call takes it as it is
    core = make(name)
    state = core.initial_state(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            _, state = core.step(torch.randn(3, 5), state)
        for _ in range(2):
            y, state = core(torch.randn(3, 4, 5), state)
    assert y.shape == (3, 4, core.output_size)
