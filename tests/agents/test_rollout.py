"""Acting and advantages: step path vs sequence path, bootstrapping, GAE."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from tests.agents.conftest import make_collector, tiny_config
from xlstm_rl.agents.rollout import INPUT_KEYS, compute_advantages


@pytest.mark.parametrize("core", ["gru", "lstm", "mlstm", "slstm", "mlp"])
def test_sequence_path_reproduces_acting(tmp_path, core):
    """Re-running the core over the rollout with its resets gives the acting log-probs/values."""
    config = tiny_config(
        tmp_path, **{"core.name": core, "policy.prev_action": True, "policy.prev_reward": True}
    )
    collector, policy = make_collector(config)
    collector.collect()  # start the second rollout mid-episode, from a non-empty state
    rollout, initial_state, _ = collector.collect()
    assert rollout["resets"][:, 1:].any(), "the test needs episode starts inside the rollout"
    with torch.no_grad():
        dist, value, _ = policy(rollout.select(*INPUT_KEYS), initial_state, rollout["resets"])
    torch.testing.assert_close(
        dist.log_prob(rollout["action"]), rollout["log_prob"], atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(value, rollout["value"], atol=1e-5, rtol=1e-4)


class CounterEnv(gym.Env):
    """Observes t / 10; action 1 after t >= 2 terminates, and t = 5 truncates."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action == 1 and self.t >= 2)
        truncated = not terminated and self.t == 5
        return np.full(1, self.t / 10, np.float32), float(self.t), terminated, truncated, {}


if "tests/Counter-v0" not in gym.registry:
    gym.register("tests/Counter-v0", entry_point=CounterEnv)


def test_truncated_bootstraps_from_final_obs_with_recurrent_state(tmp_path):
    config = tiny_config(
        tmp_path,
        **{
            "env.id": "tests/Counter-v0",
            "env.kwargs": {},
            "policy.prev_action": True,
            "policy.prev_reward": True,
        },
    )
    collector, policy = make_collector(config, rollout_len=40)
    rollout, initial_state, _ = collector.collect()
    truncated, terminated = rollout["truncated"], rollout["terminated"]
    assert truncated.any() and terminated.any(), "the test needs both kinds of episode end"

    for b, t in truncated.nonzero().tolist():
        # V(final obs = 5 / 10), the core continued from its state after step t, no reset.
        steps = rollout[b : b + 1, : t + 1]
        with torch.no_grad():
            _, _, state = policy(
                steps.select(*INPUT_KEYS), initial_state[b : b + 1], steps["resets"]
            )
            final = TensorDict(
                obs=torch.full((1, 1), 0.5),
                prev_action=steps["action"][:, t],
                prev_reward=steps["reward"][:, t],
                batch_size=[1],
            )
            _, expected, _ = policy.step(final, state, torch.zeros(1, dtype=torch.bool))
        torch.testing.assert_close(rollout["next_value"][b, t], expected[0], atol=1e-5, rtol=1e-4)
        if t + 1 < rollout.batch_size[1]:  # not the next episode's first value
            assert not torch.isclose(rollout["next_value"][b, t], rollout["value"][b, t + 1])

    for gae_lambda in (0.0, 0.95):
        out = compute_advantages(rollout.clone(), gamma=0.9, gae_lambda=gae_lambda)
        # Terminated steps are not bootstrapped: A = r - V, whatever lambda.
        expected = rollout["reward"] - rollout["value"]
        torch.testing.assert_close(out["advantages"][terminated], expected[terminated])
        # Truncated ones are, and the trace stops there: A = r + gamma V(final obs) - V.
        expected = rollout["reward"] + 0.9 * rollout["next_value"] - rollout["value"]
        torch.testing.assert_close(out["advantages"][truncated], expected[truncated])


def hand_gae(reward, value, next_value, done, terminated, gamma, lam):
    """The textbook loop over one env's steps, done and terminated apart."""
    T = len(reward)
    advantages = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        bootstrap = 0.0 if terminated[t] else gamma * next_value[t]
        delta = reward[t] + bootstrap - value[t]
        running = delta + (0.0 if done[t] else gamma * lam * running)
        advantages[t] = running
    return advantages


def test_gae_with_episodes_ending_mid_rollout():
    generator = torch.Generator().manual_seed(0)
    B, T = 3, 12
    reward = torch.randn(B, T, generator=generator)
    value = torch.randn(B, T, generator=generator)
    next_value = torch.randn(B, T, generator=generator)
    terminated = torch.zeros(B, T, dtype=torch.bool)
    truncated = torch.zeros(B, T, dtype=torch.bool)
    terminated[0, 3] = terminated[0, 8] = True  # two episodes end inside env 0's rollout
    truncated[1, 5] = True  # a time limit inside env 1's
    terminated[2, T - 1] = True  # env 2 terminates on the last step
    rollout = TensorDict(
        reward=reward,
        value=value,
        next_value=next_value,
        terminated=terminated,
        truncated=truncated,
        done=terminated | truncated,
        batch_size=[B, T],
    )
    out = compute_advantages(rollout, gamma=0.97, gae_lambda=0.9)
    for b in range(B):
        expected = hand_gae(
            reward[b].tolist(),
            value[b].tolist(),
            next_value[b].tolist(),
            (terminated | truncated)[b].tolist(),
            terminated[b].tolist(),
            0.97,
            0.9,
        )
        torch.testing.assert_close(out["advantages"][b], torch.tensor(expected))
    torch.testing.assert_close(out["returns"], out["advantages"] + value)
