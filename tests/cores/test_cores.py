"""Every core meets the memory-core interface: sequence == steps, halves == one pass,
a reset mid-sequence == two separate episodes, gradients reach every parameter."""

import pytest
import torch
from tensordict import TensorDict

from xlstm_rl.cores import CORES, build_core

# option variants that change a core's wiring run through every test as well
VARIANTS = {
    "mlstm+conv_skip": ("mlstm", {"conv_skip": True}),
    "mlstm-head_norm": ("mlstm", {"head_norm": False}),
    # queries in chunks shorter than the window and not dividing T (the default chunk
    # covers these tests' whole sequence)
    "transformer+chunks": ("transformer", {"chunk_len": 5}),
}
NAMES = sorted(CORES) + sorted(VARIANTS)
B, T, IN, HID = 3, 23, 5, 16
OPTIONS = {
    "mlstm": {"num_heads": 2},
    "slstm": {"num_heads": 2},
    "xlstm": {"num_heads": 2},
    "transformer": {"num_heads": 2, "memory_len": 8},
}


def make(name, dtype=torch.float64, **extra):
    torch.manual_seed(0)
    name, variant = VARIANTS.get(name, (name, {}))
    core = build_core(name, IN, HID, **{**OPTIONS.get(name, {}), **variant, **extra})
    # non-trivial recurrent weights and gates, so the tests see memory at work
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return core.to(dtype)


def canonical(state: TensorDict) -> dict:
    """Leaves of a state, mLSTM (C, n, m) entries in true units (m is only a scale)."""
    out = {}
    for key in state.keys(include_nested=True, leaves_only=True):
        key = key if isinstance(key, tuple) else (key,)
        parent = state.get(key[:-1]) if len(key) > 1 else state
        leaf = key[-1]
        if "C" in parent.keys() and leaf in ("C", "n"):
            scale = parent["m"].exp()
            out[key] = parent[leaf] * scale.view(*scale.shape, *[1] * (parent[leaf].dim() - 2))
        elif not ("C" in parent.keys() and leaf == "m"):
            out[key] = parent[leaf]
    return out


def assert_states_close(a, b, **tol):
    ca, cb = canonical(a), canonical(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        torch.testing.assert_close(ca[key], cb[key], **tol, msg=f"state {key}")


def assert_steps_equal_pass(core, x, resets, state0, **tol):
    """T calls of step equal one forward over T (outputs and states), resets included."""
    y, state = core(x, state0, resets)
    assert y.shape == (x.shape[0], x.shape[1], core.output_size)
    ys, s = [], state0
    for t in range(x.shape[1]):
        y_t, s = core.step(x[:, t], s, resets[:, t])
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **tol)
    assert_states_close(s, state, **tol)


def assert_matches_float64(name, core, device="cpu"):
    """``core`` (float32, on ``device``) against the same core built in float64 on the CPU:
    outputs with resets, final states and every parameter's gradient."""
    ref = make(name, torch.float64)  # the default backends: the torch forms on the CPU
    x, resets = inputs(torch.float64)
    y_ref, s_ref = ref(x, ref.initial_state(B), resets)
    y, s = core(x.float().to(device), core.initial_state(B, device=device), resets.to(device))
    torch.testing.assert_close(y.double().cpu(), y_ref, rtol=1e-4, atol=1e-4)
    assert_states_close(s.double().cpu(), s_ref, rtol=1e-4, atol=1e-4)
    dy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y_ref.backward(dy)
    y.backward(dy.float().to(device))
    for (pname, p_ref), (_, p) in zip(ref.named_parameters(), core.named_parameters()):
        assert p.grad is not None, f"no gradient reached {pname}"
        scale = p_ref.grad.abs().max().clamp_min(1e-6)
        err = (p.grad.double().cpu() - p_ref.grad).abs().max() / scale
        assert err < 1e-3, f"{pname}: gradient relative error {err:.3g}"


def inputs(dtype=torch.float64, reset_rate=0.15):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, IN, generator=g, dtype=dtype)
    resets = torch.rand(B, T, generator=g) < reset_rate
    resets[0, 0] = resets[1, 5] = resets[1, 6] = True
    return x, resets


@pytest.mark.parametrize("name", NAMES)
def test_sequence_equals_steps(name):
    core = make(name)
    x, resets = inputs()
    assert_steps_equal_pass(core, x, resets, core.initial_state(B), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_two_halves_equal_one_pass(name):
    core = make(name)
    x, resets = inputs()
    state0 = core.initial_state(B)
    y, state = core(x, state0, resets)
    cut = 11
    y1, mid = core(x[:, :cut], state0, resets[:, :cut])
    y2, end = core(x[:, cut:], mid, resets[:, cut:])
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-9, atol=1e-9)
    assert_states_close(end, state, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_reset_equals_separate_episodes(name):
    core = make(name)
    x, _ = inputs()
    cut = 9
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[0, cut] = True  # row 0 starts a new episode at `cut`; rows 1, 2 do not
    state0 = core.initial_state(B)
    y, state = core(x, state0, resets)
    y_first, _ = core(x[:1, :cut], core.initial_state(1))
    y_second, state_second = core(x[:1, cut:], core.initial_state(1))
    torch.testing.assert_close(y[:1], torch.cat([y_first, y_second], 1), rtol=1e-9, atol=1e-9)
    assert_states_close(state[:1], state_second, rtol=1e-9, atol=1e-9)
    y_rest, _ = core(x[1:], core.initial_state(B - 1))
    torch.testing.assert_close(y[1:], y_rest, rtol=1e-9, atol=1e-9)
    if name != "mlp":  # a memory core's output after `cut` depends on what came before
        y_no_reset, _ = core(x[:1], core.initial_state(1))
        assert (y_no_reset[0, cut:] - y[0, cut:]).abs().max() > 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_float64(name):
    core64 = make(name)
    core32 = make(name, torch.float32)
    x, resets = inputs()
    y64, _ = core64(x, core64.initial_state(B), resets)
    y32, _ = core32(x.float(), core32.initial_state(B), resets)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    core = make(name, torch.float32)
    x, resets = inputs(torch.float32)
    x.requires_grad_(True)
    y, state = core(x, core.initial_state(B), resets)
    loss = y.square().mean() + sum(v.sum() for v in state.values(True, True) if v.requires_grad)
    loss.backward()
    for pname, p in core.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_memory_carries_information(name):
    """Changing x_0 changes a later y: the state carries the past (not for the mlp).

    The transformer sees back num_layers * memory_len steps and nothing before."""
    core = make(name)
    x, _ = inputs()
    y, _ = core(x, core.initial_state(B))
    x2 = x.clone()
    x2[:, 0] += 1.0
    y2, _ = core(x2, core.initial_state(B))
    name = VARIANTS.get(name, (name,))[0]
    reach = T - 1 if name != "transformer" else 2 * 8
    changed = (y2[:, reach] - y[:, reach]).abs().max() > 1e-9
    assert changed == (name != "mlp")
    if name == "transformer":
        assert (y2[:, reach + 1 :] - y[:, reach + 1 :]).abs().max() < 1e-12


def test_lstm_resets_match_a_plain_cell_loop():
    """The LSTM's cut-at-resets fused path equals an nn.LSTMCell loop with zeroed rows."""
    core = make("lstm")
    x, resets = inputs()
    y, _ = core(x, core.initial_state(B), resets)
    cell = torch.nn.LSTMCell(IN, HID).double()
    rnn = core.rnn
    cell.weight_ih.data, cell.weight_hh.data = rnn.weight_ih_l0.data, rnn.weight_hh_l0.data
    cell.bias_ih.data, cell.bias_hh.data = rnn.bias_ih_l0.data, rnn.bias_hh_l0.data
    h = c = torch.zeros(B, HID, dtype=torch.float64)
    ys = []
    for t in range(T):
        keep = (~resets[:, t]).double()[:, None]
        h, c = cell(x[:, t], (h * keep, c * keep))
        ys.append(h)
    torch.testing.assert_close(y, torch.stack(ys, 1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_initial_state_and_sizes(name):
    core = make(name, torch.float32)
    state = core.initial_state(4)
    assert isinstance(state, TensorDict) and state.batch_size == torch.Size([4])
    assert all((v == 0).all() for v in state.values(True, True))
    assert core.output_size == HID
    y, new = core.step(torch.randn(4, IN), state)
    assert y.shape == (4, HID) and new.batch_size == torch.Size([4])


def test_xlstm_pattern_and_blocks():
    core = build_core("xlstm", IN, HID, pattern="msm", num_heads=2)
    kinds = [type(b).__name__ for b in core.blocks]
    assert kinds == ["MLSTMBlock", "SLSTMBlock", "MLSTMBlock"]
    assert len(build_core("mlstm", IN, HID, num_blocks=3, num_heads=2).blocks) == 3
    assert len(build_core("slstm", IN, HID, num_blocks=2, num_heads=2).blocks) == 2


def test_chunk_size_does_not_change_results():
    x, resets = inputs()
    ys = [
        make("mlstm", chunk_size=c)(x, make("mlstm").initial_state(B), resets)[0]
        for c in (1, 5, 16, 64)
    ]
    for y in ys[1:]:
        torch.testing.assert_close(y, ys[0], rtol=1e-9, atol=1e-9)


def test_transformer_chunk_len_does_not_change_results():
    """Outputs, final caches and gradients are the same for every chunk length, one
    sequence-long chunk included."""
    x, resets = inputs()
    results = []
    for chunk_len in (T, 1, 3, 8, 16, 1000):
        core = make("transformer", chunk_len=chunk_len)
        y, state = core(x, core.initial_state(B), resets)
        y.square().sum().backward()
        results.append((y, state, [p.grad for p in core.parameters()]))
    y0, state0, grads0 = results[0]
    for y, state, grads in results[1:]:
        torch.testing.assert_close(y, y0, rtol=1e-9, atol=1e-9)
        assert_states_close(state, state0, rtol=1e-9, atol=1e-9)
        for g, g0 in zip(grads, grads0):
            torch.testing.assert_close(g, g0, rtol=1e-9, atol=1e-9)


def test_transformer_sequence_memory_is_linear_in_t():
    """A long sequence pass keeps (chunk_len + W)-wide scores, not T x T: at T = 2,000
    what it saves for the backward is about 25 MB with chunks of 64, about 340 MB as one
    chunk (4 heads x 2,000^2 scores, a layer)."""
    core = build_core("transformer", 8, 16, num_heads=4, memory_len=16, chunk_len=64)
    x = torch.randn(1, 2000, 8)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        core(x, core.initial_state(1))
    assert sum(saved) < 100e6, f"{sum(saved) / 1e6:.0f} MB saved for the backward"


@pytest.mark.parametrize("name, option", [("lstm", "forget_bias"), ("gru", "update_bias")])
def test_rnn_gate_bias_option_sets_that_gate_in_every_layer(name, option):
    default = build_core(name, 5, 8, num_layers=2)
    core = build_core(name, 5, 8, num_layers=2, **{option: 3.0})
    for layer in range(2):
        b_ih, b_hh = (getattr(core.rnn, f"bias_{k}_l{layer}") for k in ("ih", "hh"))
        assert torch.equal(b_ih[8:16], torch.full((8,), 3.0)) and not b_hh[8:16].any()
        # the other gates keep torch's initialisation
        assert b_ih[:8].abs().max() <= 8**-0.5 and b_ih[16:].abs().max() <= 8**-0.5
    assert not default.rnn.bias_ih_l0[8:16].eq(3.0).any()


def test_rnn_gate_bias_option_sets_the_gate_that_keeps_memory():
    # a saturated keep-gate carries the state through a step unchanged; a saturated
    # LSTM forget gate at -50 drops the old cell state entirely
    torch.manual_seed(0)
    x = torch.randn(3, 5)
    gru = build_core("gru", 5, 8, update_bias=50.0)
    state = gru.initial_state(3)
    state["h"] = torch.randn(3, 1, 8)
    _, new = gru.step(x, state)
    torch.testing.assert_close(new["h"], state["h"])
    lstm = build_core("lstm", 5, 8, forget_bias=50.0)
    state = lstm.initial_state(3)
    state["c"] = 100 * torch.randn(3, 1, 8)
    _, new = lstm.step(x, state)
    assert (new["c"] - state["c"]).abs().max() <= 1.0  # c' = c + i * g, |i * g| < 1
    forget = build_core("lstm", 5, 8, forget_bias=-50.0)
    forget.load_state_dict({**lstm.state_dict(), "rnn.bias_ih_l0": forget.rnn.bias_ih_l0})
    _, new = forget.step(x, state)
    _, fresh = forget.step(x, forget.initial_state(3))
    torch.testing.assert_close(new["c"], fresh["c"])


@pytest.mark.parametrize("normalize", [True, False])
def test_head_norm_scale_and_projection(normalize):
    """The per-head layer norm is blind to the output's magnitude; head_norm=False keeps
    it (only the learnable scale). project() (the scale folded into out's weight for
    long inputs) equals the plain path either way."""
    from xlstm_rl.cores.layers import HeadNorm

    torch.manual_seed(0)
    norm = HeadNorm(2, 4, normalize=normalize).double()
    out = torch.nn.Linear(8, 3).double()
    with torch.no_grad():
        norm.weight.add_(0.5 * torch.randn_like(norm.weight))
    h = 10.0 * torch.randn(5, 7, 2, 4, dtype=torch.float64)  # the norm's eps negligible
    gate = torch.rand(5, 7, 2, 4, dtype=torch.float64)
    scaled = norm(3.0 * h)
    torch.testing.assert_close(
        scaled, norm(h) if normalize else 3.0 * norm(h), rtol=1e-4, atol=1e-4
    )
    if not normalize:
        torch.testing.assert_close(norm(h), h * norm.weight)
    for rows in (h, h[:1, :1]):  # 35 rows > 3 outputs: folded; 1 row: plain
        g = gate[: rows.shape[0], : rows.shape[1]]
        expected = out((norm(rows) * g).flatten(-2))
        torch.testing.assert_close(norm.project(rows, out, g), expected)
