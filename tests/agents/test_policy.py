"""Encoders and heads for each space, and the update step's variants."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from tests.agents.conftest import make_collector, tiny_config
from xlstm_rl.agents import train
from xlstm_rl.agents.encoders import build_encoder
from xlstm_rl.agents.policy import Categorical, Policy
from xlstm_rl.agents.ppo import chunk_states, loss_terms, schedule, update
from xlstm_rl.agents.rollout import compute_advantages
from xlstm_rl.config import CoreConfig, PolicyConfig

SPACES = {
    "discrete": spaces.Discrete(5, start=2),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "box": spaces.Box(-2.0, 2.0, (3,), np.float32),
    "unbounded": spaces.Box(-np.inf, np.inf, (2, 2), np.float32),
    "int_image": spaces.Box(0, 10, (5, 5, 3), np.uint8),
    "float_image": spaces.Box(0.0, 1.0, (3, 20, 20), np.float32),
    "minigrid": spaces.Dict(
        direction=spaces.Discrete(4), image=spaces.Box(0, 255, (3, 3, 3), np.uint8)
    ),
}


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("embedding_size", [None, 4])
def test_encoders_take_any_leading_dims(name, embedding_size):
    space = SPACES[name]
    space.seed(0)
    encoder = build_encoder(space, channels=8, embedding_size=embedding_size)
    samples = [space.sample() for _ in range(6)]
    if isinstance(space, spaces.Dict):
        batch = TensorDict(
            {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in space.spaces},
            batch_size=[6],
        )
    else:
        batch = torch.as_tensor(np.stack(samples))
    flat = encoder(batch)
    assert flat.shape == (6, encoder.output_size) and flat.isfinite().all()
    if isinstance(batch, TensorDict):
        folded = batch.reshape(2, 3)
    else:
        folded = batch.reshape(2, 3, *batch.shape[1:])
    torch.testing.assert_close(encoder(folded), flat.reshape(2, 3, -1))


@pytest.mark.parametrize(
    "action_space",
    [spaces.Discrete(3, start=1), spaces.MultiDiscrete([2, 3]), spaces.Box(-1, 1, (2,))],
    ids=["discrete", "multidiscrete", "box"],
)
def test_heads_sample_score_and_map_to_env_actions(action_space):
    torch.manual_seed(0)
    policy = Policy(
        spaces.Box(-1, 1, (3,), np.float32),
        action_space,
        CoreConfig(name="gru", hidden_size=8),
        PolicyConfig(prev_action=True, prev_reward=True, encoder_size=8),
    )
    B = 5
    inputs = TensorDict(
        obs=torch.rand(B, 3),
        prev_action=policy.actor.empty(B),
        prev_reward=torch.zeros(B),
        batch_size=[B],
    )
    dist, value, _ = policy.step(inputs, policy.initial_state(B), torch.ones(B, dtype=bool))
    action = dist.sample()
    assert dist.log_prob(action).shape == (B,) and dist.entropy().shape == (B,)
    assert value.shape == (B,)
    env_action = policy.actor.to_env(action)
    assert all(action_space.contains(a) for a in env_action)
    assert all(action_space.contains(a) for a in policy.actor.to_env(dist.mode))


def test_categorical_samples_follow_the_probabilities():
    torch.manual_seed(0)
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0]])
    dist = Categorical(probs.log())
    n = 20_000
    draws = torch.stack([dist.sample() for _ in range(n)])  # (n, 2)
    freq = torch.stack([torch.bincount(draws[:, row], minlength=4) for row in range(2)]) / n
    # 4 standard errors of a frequency near 0.5 over 20,000 draws: about 0.014
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    assert not (draws[:, 0] == 3).any()  # a zero-probability action is never drawn
    assert (draws[:, 1] == 2).all()


def small_policy(core: str, **options) -> Policy:
    """Discrete(4) observations, Discrete(3) actions, width 16; ``options`` for PolicyConfig."""
    torch.manual_seed(0)
    return Policy(
        spaces.Discrete(4),
        spaces.Discrete(3),
        CoreConfig(name=core, hidden_size=16),
        PolicyConfig(encoder_size=16, **options),
    )


@pytest.mark.parametrize("core", ["mlstm", "gru"])
def test_act_is_step_then_a_sample(core):
    policy = small_policy(core, prev_action=True)
    B = 6
    inputs = {
        "obs": torch.randint(0, 4, (B,)),
        "prev_action": policy.actor.empty(B),
        "prev_reward": torch.zeros(B),
    }
    state, reset = policy.initial_state(B), torch.tensor([True, False] * 3)
    with torch.inference_mode():
        dist, value, new_state = policy.step(inputs, state, reset)
        action, log_prob, act_value, act_state = policy.act(inputs, state, reset)
    assert action.shape == (B,) and action.dtype == torch.long
    torch.testing.assert_close(log_prob, dist.log_prob(action))
    torch.testing.assert_close(act_value, value)
    torch.testing.assert_close(act_state, new_state)


def test_bptt_chunks_carry_the_state_from_the_rollout_start(tmp_path):
    config = tiny_config(tmp_path, **{"core.name": "mlstm"})
    collector, policy = make_collector(config, rollout_len=20)
    collector.collect()
    rollout, state, _ = collector.collect()
    rollout = compute_advantages(rollout, 0.99, 0.95)
    whole, _ = loss_terms(policy, rollout, state, config)
    chunked = sum(
        loss_terms(policy, rollout[:, chunk], chunk_state, config)[0]
        * (chunk.stop - chunk.start)
        / 20
        for chunk, chunk_state in chunk_states(policy, rollout, state, bptt_len=6)
    )
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_a2c_is_one_update_per_rollout(tmp_path):
    config = tiny_config(tmp_path, algo="a2c", **{"ppo.bptt_len": 8})
    assert schedule(config) == (1, 1)
    result = train(config, progress=False)
    assert result.updates == config.num_updates and result.final_eval["episodes"] == 4


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("MiniGrid-MemoryS9-v0", {"agent_view_size": 3}),
        ("popgym-RepeatPreviousEasy-v0", {}),
        ("Pendulum-v1", {}),
    ],
)
def test_trains_on_each_kind_of_env(tmp_path, env_id, kwargs):
    config = tiny_config(
        tmp_path,
        total_steps=4 * 16,
        eval_episodes=1,
        **{"env.id": env_id, "env.kwargs": kwargs, "policy.prev_action": True},
    )
    result = train(config, progress=False)
    assert np.isfinite(result.final_eval["return_mean"])


def test_target_kl_stops_after_the_epoch_that_crossed_it(tmp_path):
    config = tiny_config(tmp_path, **{"ppo.target_kl": 1e-12, "ppo.epochs": 4})
    collector, policy = make_collector(config, rollout_len=16)
    rollout, state, _ = collector.collect()
    rollout = compute_advantages(rollout, 0.99, 0.95)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    metrics = update(policy, optimizer, rollout, state, config)
    assert metrics["optimizer_steps"] == config.ppo.num_minibatches  # one epoch, not four


@pytest.mark.parametrize("core", ["mlstm", "gru"])
def test_separate_critic_core_steps_as_it_runs_and_trains_apart(core):
    # policy.shared_core false: {"actor", "critic"} state, the sequence form equals T
    # steps, the policy loss reaches only the actor's core, the value loss only the critic's
    policy = small_policy(core, shared_core=False)
    B, T = 3, 7
    obs = torch.randint(0, 4, (B, T))
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[1, 4] = True
    state = policy.initial_state(B)
    assert set(state.keys()) == {"actor", "critic"}
    dist, values, final = policy(TensorDict(obs=obs, batch_size=[B, T]), state, resets)
    step_state, step_logits, step_values = state, [], []
    with torch.no_grad():
        for t in range(T):
            d, v, step_state = policy.step({"obs": obs[:, t]}, step_state, resets[:, t])
            step_logits.append(d.logits)
            step_values.append(v)
    torch.testing.assert_close(torch.stack(step_values, 1), values.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        torch.stack(step_logits, 1), dist.logits.detach(), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(step_state, final.detach(), atol=1e-5, rtol=1e-5)

    def grads(module):
        return [p.grad for p in module.parameters()]

    values.square().sum().backward(retain_graph=True)
    assert all(g is None for g in grads(policy.core)), "the value loss reached the actor's core"
    assert all(g is not None and g.abs().sum() > 0 for g in grads(policy.critic_core))
    policy.zero_grad(set_to_none=True)
    dist.log_prob(torch.zeros(B, T, dtype=torch.long)).sum().backward()
    assert all(g is None for g in grads(policy.critic_core)), "the policy loss reached the critic's"
    assert any(g is not None and g.abs().sum() > 0 for g in grads(policy.core))

    with pytest.raises(ValueError, match="'actor' and 'critic'"):
        policy.step({"obs": obs[:, 0]}, policy.core.initial_state(B), resets[:, 0])
