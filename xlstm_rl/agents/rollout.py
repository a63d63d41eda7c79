"""Collecting rollouts with the policy's step path, and advantages over them.

A rollout is a TensorDict with batch ``(B, T)`` (envs, time). Row ``[b, t]`` holds
what the policy saw at step t (``obs``, ``prev_action``, ``prev_reward``, and
``resets``: an episode starts at t) and what followed (``action``, ``log_prob``,
``value``, ``reward``, ``done``, ``terminated``, ``truncated``, ``next_value``).

``next_value[b, t]`` is V of the observation after step t under the recurrent state
after step t: the next row's value inside an episode, V(final observation) where the
episode was truncated (the core continued one step from its pre-reset state), and
unused (0 weight) where it terminated. GAE is torchrl's, which cuts the trace at
``done`` and drops the bootstrap at ``terminated``.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tensordict import TensorDict
from torchrl.objectives.value.functional import generalized_advantage_estimate

from xlstm_rl.agents.encoders import obs_to_tensor
from xlstm_rl.agents.policy import Policy
from xlstm_rl.envs import episode_info, final_observations

INPUT_KEYS = ("obs", "prev_action", "prev_reward")
STEP_KEYS = (
    "resets",
    "action",
    "log_prob",
    "value",
    "reward",
    "done",
    "terminated",
    "truncated",
    "bootstrap_value",
)


class Collector:
    """Steps a vector env with the policy; keeps the env-side carry between rollouts.

    The carry is what the next step needs: the current observations, previous
    actions and rewards, which envs start an episode (``episode_start``), and the
    core's recurrent state. ``collect`` returns the rollout together with the state
    it started from, which training re-runs the core from.
    """

    def __init__(
        self,
        envs: VectorEnv,
        policy: Policy,
        rollout_len: int,
        device: torch.device,
        compile: bool = False,
    ):
        """``compile``: act through ``torch.compile(policy.act)``. Its random draws come
        from torch's generator, as in eager mode (inductor's ``fallback_random``), so a
        compiled run samples the same actions as an eager one."""
        self.envs, self.policy = envs, policy
        if compile:
            self.act = torch.compile(policy.act, options={"fallback_random": True})
        else:
            self.act = policy.act
        self.rollout_len, self.device = rollout_len, device
        self.obs_space = envs.single_observation_space
        num_envs = envs.num_envs
        obs, _ = envs.reset()
        self.carry = TensorDict(
            {
                "obs": obs_to_tensor(self.obs_space, obs, device),
                "prev_action": policy.actor.empty(num_envs, device=device),
                "prev_reward": torch.zeros(num_envs, device=device),
                "episode_start": torch.ones(num_envs, dtype=torch.bool, device=device),
            },
            batch_size=[num_envs],
        )
        self.state = policy.initial_state(num_envs, device=device)

    def collect(self) -> tuple[TensorDict, TensorDict, list[dict]]:
        """One rollout: (rollout (B, T), core state at its start, finished episodes' info)."""
        # Clones outside inference_mode: training needs normal tensors it can save for backward.
        initial_state = self.state.clone()
        rollout, episodes = self._collect()
        return rollout.clone(), initial_state, episodes

    @torch.inference_mode()
    def _collect(self) -> tuple[TensorDict, list[dict]]:
        # Plain tensors and per-key lists inside the loop: a TensorDict per step cost more
        # than the env step (its checks); the rollout is built once at the end.
        act, head, device, obs_space = (
            self.act,
            self.policy.actor,
            self.device,
            self.obs_space,
        )
        # inference-mode copies: every step then sees the same kind of tensor (a compiled
        # step would otherwise be compiled twice, for the first step and the rest)
        carry, state = self.carry.clone(), self.state.clone()
        inputs = {key: carry[key] for key in INPUT_KEYS}
        episode_start = carry["episode_start"]
        steps = {key: [] for key in (*INPUT_KEYS, *STEP_KEYS)}
        episodes = []
        # shared by the steps (the rollout is stacked into new tensors at the end)
        no_reset = torch.zeros_like(episode_start)
        no_bootstrap = torch.zeros(
            episode_start.shape, dtype=self.policy.critic.weight.dtype, device=device
        )
        for t in range(self.rollout_len):
            action, log_prob, value, next_state = act(inputs, state, episode_start)
            obs, reward, terminated, truncated, infos = self.envs.step(head.to_env(action))

            # the flags combined in numpy: cheaper than torch's per-op cost at this size
            terminated = np.asarray(terminated, dtype=bool)
            truncated = np.asarray(truncated, dtype=bool) & ~terminated
            any_truncated = truncated.any()
            done = torch.as_tensor(terminated | truncated, device=device)
            reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
            terminated = torch.as_tensor(terminated, device=device)
            truncated = torch.as_tensor(truncated, device=device)
            bootstrap = no_bootstrap
            if any_truncated:
                # Continue the core one step, from its pre-reset state, on the final observation.
                final = {
                    "obs": obs_to_tensor(
                        obs_space, final_observations(self.envs, obs, infos), device
                    ),
                    "prev_action": action,
                    "prev_reward": reward,
                }
                # (the action it samples is not used)
                _, _, final_value, _ = act(final, next_state, no_reset)
                bootstrap = torch.where(truncated, final_value, no_bootstrap)
            record = {
                **inputs,
                "resets": episode_start,
                "action": action,
                "log_prob": log_prob,
                "value": value,
                "reward": reward,
                "done": done,
                "terminated": terminated,
                "truncated": truncated,
                "bootstrap_value": bootstrap,
            }
            for key, column in steps.items():
                column.append(record[key])
            state = next_state
            inputs = {
                "obs": obs_to_tensor(obs_space, obs, device),
                "prev_action": action,
                "prev_reward": reward,
            }
            episode_start = done
            for episode in episode_info(infos):
                episodes.append({**episode, "rollout_step": t})

        _, _, last_value, _ = act(inputs, state, episode_start)
        self.state = state
        self.carry = TensorDict(
            {**inputs, "episode_start": episode_start}, batch_size=carry.batch_size, device=device
        )
        rollout = TensorDict(
            {key: torch.stack(column, dim=1) for key, column in steps.items()},
            batch_size=(*carry.batch_size, self.rollout_len),
            device=device,
        )  # (B, T)
        next_value = torch.cat([rollout["value"][:, 1:], last_value.unsqueeze(1)], dim=1)
        rollout["next_value"] = torch.where(
            rollout["truncated"], rollout["bootstrap_value"], next_value
        )
        del rollout["bootstrap_value"]
        return rollout, episodes


def compute_advantages(rollout: TensorDict, gamma: float, gae_lambda: float) -> TensorDict:
    """Add ``advantages`` and ``returns`` (B, T) to the rollout, with torchrl's GAE."""

    def column(key: str) -> torch.Tensor:
        return rollout[key].unsqueeze(-1)  # torchrl wants (*B, T, 1): time dim -2

    advantages, returns = generalized_advantage_estimate(
        gamma,
        gae_lambda,
        state_value=column("value"),
        next_state_value=column("next_value"),
        reward=column("reward"),
        done=column("done"),
        terminated=column("terminated"),
    )
    rollout["advantages"] = advantages.squeeze(-1)
    rollout["returns"] = returns.squeeze(-1)
    return rollout
