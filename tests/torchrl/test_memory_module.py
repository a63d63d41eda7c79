"""MemoryModule alone: recurrent mode == step mode (resets mid-row, rows that start
mid-episode, extra batch dims), key layout, primer specs, modes and errors."""

import warnings

import pytest
import torch
from tensordict import TensorDict

torchrl = pytest.importorskip("torchrl")

from torchrl.modules import set_recurrent_mode  # noqa: E402

from xlstm_rl.cores import build_core  # noqa: E402
from xlstm_rl.torchrl import MemoryModule  # noqa: E402

NAMES = ["mlstm", "slstm", "xlstm", "lstm", "gru", "mlp", "transformer"]
OPTIONS = {"mlstm": {"num_heads": 2}, "slstm": {"num_heads": 2}, "xlstm": {"num_heads": 2}}
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-5, atol=1e-5)}
B, T, IN, HID = 3, 11, 5, 8


def make(name, dtype=torch.float64, **keys):
    torch.manual_seed(0)
    core = build_core(name, IN, HID, **OPTIONS.get(name, {}))
    with torch.no_grad():  # non-trivial weights, so the tests see memory at work
        for p in core.parameters():
            p.add_(0.1 * torch.randn_like(p))
    core = core.to(dtype)
    return MemoryModule(core, in_key="obs", out_key="features", **keys)


def episodes(module, dtype=torch.float64, batch=(B,)):
    """Data (*batch, T): episodes begin at t = 0 and mid-row; row 1 begins mid-episode."""
    g = torch.Generator().manual_seed(1)
    is_init = torch.zeros(*batch, T, 1, dtype=torch.bool)
    is_init[..., 0, :] = True
    is_init.view(-1, T, 1)[1, 0] = False
    is_init.view(-1, T, 1)[0, 4] = True
    is_init.view(-1, T, 1)[-1, 7] = True
    td = TensorDict(
        {"obs": torch.randn(*batch, T, IN, generator=g, dtype=dtype), "is_init": is_init},
        [*batch, T],
    )
    # Row 1 carries the state of an earlier episode into t = 0.
    start = module.core.initial_state(td[..., 0].numel()).apply(
        lambda s: torch.randn(s.shape, generator=g, dtype=s.dtype)
    )
    for leaf, key in zip(module.state_leaves, module.state_in_keys):
        stored = torch.zeros(*batch, T, *start.get(leaf).shape[1:], dtype=start.get(leaf).dtype)
        stored.view(-1, T, *stored.shape[len(batch) + 1 :])[1, 0] = start.get(leaf)[1]
        td.set(key, stored)
    return td


def run_steps(module, td):
    """Step mode, one time step at a time, feeding ("next", state) back as step_mdp does."""
    outputs, carried = [], None
    for t in range(td.shape[-1]):
        step = td[..., t].clone()
        if carried is not None:
            step.update(carried)
        module(step)
        outputs.append(step)
        carried = TensorDict(batch_size=step.shape)
        for key_in, key_out in zip(module.state_in_keys, module.state_out_keys):
            carried.set(key_in, step.get(key_out))
    return torch.stack(outputs, -1)


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_mode_equals_steps(name):
    module = make(name)
    td = episodes(module)
    stepped = run_steps(module, td)
    with set_recurrent_mode(True):
        sequence = module(td.clone())
    torch.testing.assert_close(sequence["features"], stepped["features"], **TOL[torch.float64])
    # The state after the last step is the same, seen through the next output.
    after = TensorDict({"obs": torch.randn(B, IN, dtype=torch.float64)}, [B])
    after["is_init"] = torch.zeros(B, 1, dtype=torch.bool)
    ys = []
    for source in (sequence, stepped):
        step = after.clone()
        for key_in, key_out in zip(module.state_in_keys, module.state_out_keys):
            step.set(key_in, source.get(key_out)[:, -1])
        ys.append(module(step)["features"])
    torch.testing.assert_close(ys[0], ys[1], **TOL[torch.float64])


@pytest.mark.parametrize("name", ["mlstm", "slstm", "lstm"])
def test_recurrent_mode_starts_trajectories_from_stored_states(name):
    """LSTMModule's convention: at t = 0 and at is_init steps, load the stored state
    (GAE's "next" data stores the true state there, not the initial one)."""
    module = make(name)
    td = episodes(module)
    g = torch.Generator().manual_seed(2)
    for key in module.state_in_keys:  # non-initial states at (row 0, t = 4), (row 2, t = 0)
        stored = td.get(key)
        stored[0, 4] = torch.randn(stored.shape[2:], generator=g, dtype=stored.dtype)
        stored[2, 0] = torch.randn(stored.shape[2:], generator=g, dtype=stored.dtype)
    with set_recurrent_mode(True):
        y = module(td.clone())["features"]

    def segment(row, begin, end):
        state = TensorDict(batch_size=[1])
        for leaf, key in zip(module.state_leaves, module.state_in_keys):
            state.set(leaf, td.get(key)[row : row + 1, begin])
        resets = td["is_init"][row : row + 1, begin:end, 0].clone()
        resets[:, 0] = False
        return module.core(td["obs"][row : row + 1, begin:end], state, resets)[0][0]

    tol = TOL[torch.float64]
    torch.testing.assert_close(y[0, :4], segment(0, 0, 4), **tol)
    torch.testing.assert_close(y[0, 4:], segment(0, 4, T), **tol)
    torch.testing.assert_close(y[2], segment(2, 0, T), **tol)
    torch.testing.assert_close(y[1], run_steps(module, td[1:2])["features"][0], **tol)


@pytest.mark.parametrize("name", ["mlstm", "lstm"])
def test_extra_batch_dims_are_flattened(name):
    module = make(name)
    td = episodes(module, batch=(2, 3))
    with set_recurrent_mode(True):
        nested = module(td.clone())["features"]
        flat = module(td.reshape(6, T).clone())["features"]
    assert nested.shape == (2, 3, T, HID)
    torch.testing.assert_close(nested.reshape(6, T, HID), flat, **TOL[torch.float64])
    stepped = run_steps(module, td)["features"]
    torch.testing.assert_close(nested, stepped, **TOL[torch.float64])
    # A single unbatched trajectory (T,) is one row in recurrent mode.
    with set_recurrent_mode(True):
        one = module(td[0, 1].clone())["features"]
    torch.testing.assert_close(one, flat[1], **TOL[torch.float64])


@pytest.mark.parametrize("name", ["mlstm", "lstm", "mlp"])
def test_missing_state_means_initial_state(name):
    module = make(name)
    td = episodes(module).exclude("recurrent_state")
    zeros = td.clone()
    for key, spec in module.state_specs().items():
        zeros.set(key, torch.zeros(B, T, *spec.shape, dtype=spec.dtype))
    with set_recurrent_mode(True):
        torch.testing.assert_close(module(td.clone())["features"], module(zeros)["features"])
    step = td[:, 3].clone()
    assert not step["is_init"].all()
    # a step without a state that is no episode start: the primer is missing, say so
    # once (the memoryless core has no state to miss)
    if module.state_leaves:
        with pytest.warns(UserWarning, match="make_tensordict_primer"):
            dropped = module(step)["features"]
    else:
        dropped = module(step)["features"]
    torch.testing.assert_close(dropped, module(zeros[:, 3].clone())["features"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(step)  # once per module
        fresh = make(name)
        starts = step.clone()
        starts["is_init"] = torch.ones_like(starts["is_init"])
        fresh(starts)  # episode starts need no state


@pytest.mark.parametrize("name", NAMES)
def test_key_layout_and_outputs(name):
    module = make(name, state_key=("agent", "memory"))
    leaves = [
        k if isinstance(k, tuple) else (k,)
        for k in module.core.initial_state(1).keys(include_nested=True, leaves_only=True)
    ]
    assert module.state_in_keys == [("agent", "memory", *leaf) for leaf in leaves]
    assert module.in_keys == ["obs", *module.state_in_keys, "is_init"]
    assert module.out_keys == ["features", *[("next", *k) for k in module.state_in_keys]]
    td = episodes(module)
    step = module(td[:, 0].clone())
    assert step["features"].shape == (B, HID)
    for key, spec in module.state_specs().items():
        assert step.get(("next", *key)).shape == (B, *spec.shape)
    with set_recurrent_mode(True):
        seq = module(td.clone())
        recorded = td.clone()
        for key, spec in module.state_specs().items():
            recorded.set(("next", *key), torch.ones(B, T, *spec.shape, dtype=spec.dtype))
        kept = module(recorded)
    for key, spec in module.state_specs().items():
        written = seq.get(("next", *key))
        assert written.shape == (B, T, *spec.shape)
        assert not written[:, :-1].any()  # nothing held there: zeros
        # the final state goes to the last step; recorded states elsewhere are kept
        assert kept.get(("next", *key))[:, :-1].eq(1).all()
        torch.testing.assert_close(kept.get(("next", *key))[:, -1], written[:, -1])
    if name == "mlp":
        assert module.state_in_keys == [] and "next" not in seq.keys()


@pytest.mark.parametrize("name", NAMES)
def test_primer_specs_and_env(name):
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.envs import GymEnv, InitTracker, TransformedEnv

    import xlstm_rl.envs  # noqa: F401  (registers the T-maze)

    torch.manual_seed(0)
    core = build_core(name, 4, HID, **OPTIONS.get(name, {}))
    module = MemoryModule(core, in_key="observation", out_key="features")
    primer = module.make_tensordict_primer()
    shapes = {
        (k if isinstance(k, tuple) else (k,)): v.shape[1:]
        for k, v in core.initial_state(1).items(include_nested=True, leaves_only=True)
    }
    specs = {k: spec.shape for k, spec in module.state_specs().items()}
    assert specs == {("recurrent_state", *k): s for k, s in shapes.items()}
    env = GymEnv("xlstm_rl/TMaze-v0", corridor_length=2, categorical_action_encoding=True)
    env = TransformedEnv(env, InitTracker())
    env.append_transform(primer)
    policy = TensorDictSequential(
        module, TensorDictModule(lambda f: f[..., 0].gt(0).long(), ["features"], ["action"])
    )
    reset = env.reset()
    for key, shape in specs.items():
        assert reset.get(key).shape == shape and not reset.get(key).any()
    rollout = env.rollout(5, policy, break_when_any_done=False)
    for key, shape in specs.items():
        assert rollout.get(("next", *key)).shape == (5, *shape)
        # state carried: the root state at t+1 is the next state written at t
        torch.testing.assert_close(rollout.get(key)[1:3], rollout.get(("next", *key))[:2])


def test_modes():
    module = make("lstm")
    assert module.recurrent_mode is False
    with set_recurrent_mode(True):
        assert module.recurrent_mode is True
    with pytest.raises(RuntimeError, match="set_recurrent_mode"):
        module.recurrent_mode = True
    recurrent = module.set_recurrent_mode()
    assert recurrent.recurrent_mode is True and module.recurrent_mode is False
    assert recurrent.core is module.core  # shares the parameters
    with set_recurrent_mode(False):  # the context overrides the default
        assert recurrent.recurrent_mode is False
    default = MemoryModule(module.core, in_key="obs", out_key="y", default_recurrent_mode=True)
    assert default.recurrent_mode is True


def test_errors():
    module = make("lstm")
    td = episodes(module)
    with pytest.raises(KeyError, match="InitTracker"):
        module(td.exclude("is_init")[:, 0])
    with pytest.raises(KeyError, match="in_key obs, which the tensordict lacks; it has"):
        module(td.exclude("obs")[:, 0])
    with pytest.raises(KeyError, match="missing"):
        module(td.exclude(("recurrent_state", "c"))[:, 0])
    with set_recurrent_mode(True), pytest.raises(ValueError, match="time dim"):
        module(td[0, 0])
    with pytest.raises(TypeError, match="MemoryCore"):
        MemoryModule(torch.nn.LSTM(2, 2), in_key="obs", out_key="y")
    # LSTMModule's habits: keys as lists, a mode that is not a bool
    with pytest.raises(TypeError, match="in_key is one key .* got the list"):
        MemoryModule(module.core, in_key=["obs"], out_key="y")
    with pytest.raises(TypeError, match="default_recurrent_mode must be True, False or None"):
        MemoryModule(module.core, in_key="obs", out_key="y", default_recurrent_mode="yes")
    bad = td[:, 0].clone()
    bad.set("is_init", torch.zeros(B, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"shaped \(\*batch,\) or .* got \(3, 2\)"):
        module(bad)
    # another core's state under this module's state_key: named, in either mode
    other = make("gru")(episodes(make("gru"))[:, 0])
    step = other.select("obs", "is_init", "recurrent_state")
    mlstm = make("mlstm")
    with pytest.raises(ValueError, match=r"recurrent_state holds \['h'\], not this core's"):
        mlstm(step)
    with set_recurrent_mode(True), pytest.raises(ValueError, match="another core"):
        mlstm(episodes(make("gru")).select("obs", "is_init", "recurrent_state"))
    with pytest.raises(KeyError, match=r"'c'\)\] are missing.*another core"):
        module(step)  # the LSTM's h is there, its c is not

    # under vmap (torchrl's value estimators by default) it says how to turn vmap off
    def features(obs, is_init):
        return module(TensorDict(obs=obs, is_init=is_init, batch_size=[B]))["features"]

    obs, is_init = td["obs"][:, :2].transpose(0, 1), td["is_init"][:, :2].transpose(0, 1)
    with pytest.raises(RuntimeError, match="deactivate_vmap=True"):
        torch.vmap(features)(obs, is_init)
