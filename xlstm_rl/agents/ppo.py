"""The update step of recurrent PPO, and of A2C as its one-update variant.

Each minibatch is a set of environments: whole (B_mb, T) sequences. The core is
re-run over them from the state saved at the rollout's start, with the rollout's
``resets`` mask, so every epoch sees hidden states computed by the current
parameters. With ``bptt_len`` the sequences are cut into chunks: the state entering
each chunk is recomputed without gradients from the rollout start, and the chunks'
gradients are summed into one optimiser step per minibatch (truncated BPTT).

A2C differs only in its schedule and loss: one gradient step over the whole rollout
with the plain policy-gradient loss ``-A * log pi`` and an unclipped value loss.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from tensordict import TensorDict
from torch import nn

from xlstm_rl.agents import distributed
from xlstm_rl.agents.policy import Policy
from xlstm_rl.agents.rollout import INPUT_KEYS
from xlstm_rl.config import TrainConfig

LOSS_KEYS = (*INPUT_KEYS, "resets", "action", "log_prob", "value", "advantages", "returns")


def schedule(config: TrainConfig) -> tuple[int, int]:
    """(epochs, minibatches per epoch): PPO's settings, or a single pass for A2C."""
    if config.algo == "a2c":
        return 1, 1
    return config.ppo.epochs, config.ppo.num_minibatches


def chunk_states(
    policy: Policy, sequences: TensorDict, state: TensorDict, bptt_len: int | None
) -> list[tuple[slice, TensorDict]]:
    """(time slice, state entering it) for each BPTT chunk, states recomputed without grad."""
    T = sequences.batch_size[1]
    length = bptt_len or T
    chunks = [slice(start, min(start + length, T)) for start in range(0, T, length)]
    states = [state]
    with torch.no_grad():
        for chunk in chunks[:-1]:
            part = sequences[:, chunk]
            _, _, state = policy(part.select(*INPUT_KEYS), state, part["resets"])
            states.append(state)
    return list(zip(chunks, states))


def loss_terms(
    policy: Policy, part: TensorDict, state: TensorDict, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss over one chunk of sequences (its mean over steps), and diagnostics.

    With ``config.compile`` the loss (policy forward included) runs compiled, and its
    backward as the compiled graph's backward, for cores that allow it
    (``compile_sequence``: not LSTM, GRU or sLSTM stacks, whose loss stays eager)."""
    core = getattr(policy, "module", policy).core  # under DDP, the wrapped policy's
    loss_fn = _compiled_loss() if config.compile and core.compile_sequence else _loss
    inputs = {key: part[key] for key in INPUT_KEYS}
    columns = [part[key] for key in ("resets", "action", "log_prob", "value")]
    return loss_fn(policy, inputs, state, *columns, part["advantages"], part["returns"], config)


@functools.cache
def _compiled_loss():
    return torch.compile(_loss)


def _loss(
    policy, inputs, state, resets, action, old_log_prob, old_value, advantages, returns, config
):
    """The loss on plain tensors (and the state), so torch.compile traces it whole."""
    ppo = config.ppo
    dist, value, _ = policy(inputs, state, resets)
    log_prob = dist.log_prob(action)
    entropy = dist.entropy().mean()
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()

    if config.algo == "a2c":
        policy_loss = -(advantages * log_prob).mean()
        value_loss = 0.5 * (value - returns).pow(2).mean()
    else:
        clipped_ratio = ratio.clamp(1 - ppo.clip_coef, 1 + ppo.clip_coef)
        policy_loss = torch.max(-advantages * ratio, -advantages * clipped_ratio).mean()
        if ppo.clip_vloss:
            value_clipped = old_value + (value - old_value).clamp(-ppo.clip_coef, ppo.clip_coef)
            value_loss = (
                0.5 * torch.max((value - returns).pow(2), (value_clipped - returns).pow(2)).mean()
            )
        else:
            value_loss = 0.5 * (value - returns).pow(2).mean()
    loss = policy_loss - ppo.ent_coef * entropy + ppo.vf_coef * value_loss

    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "old_approx_kl": (-log_ratio).mean(),
            "approx_kl": ((ratio - 1) - log_ratio).mean(),
            "clipfrac": ((ratio - 1).abs() > ppo.clip_coef).float().mean(),
        }
    return loss, stats


def update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    rollout: TensorDict,
    initial_state: TensorDict,
    config: TrainConfig,
) -> dict[str, float]:
    """Optimise on one rollout (with ``advantages`` and ``returns``); returns mean diagnostics."""
    ppo = config.ppo
    epochs, num_minibatches = schedule(config)
    num_envs, T = rollout.batch_size
    data = rollout.select(*LOSS_KEYS)  # what the loss reads: fewer entries to index per minibatch
    history: list[dict[str, torch.Tensor]] = []  # one entry per optimiser step
    for _ in range(epochs):
        for envs in torch.randperm(num_envs).chunk(num_minibatches):
            sequences, state = data[envs], initial_state[envs]
            if ppo.norm_adv:
                advantages = sequences["advantages"]
                sequences["advantages"] = (advantages - advantages.mean()) / (
                    advantages.std() + 1e-8
                )
            optimizer.zero_grad()
            step_stats: dict[str, torch.Tensor] = defaultdict(float)
            chunks = chunk_states(policy, sequences, state, ppo.bptt_len)
            for chunk, chunk_state in chunks:
                part = sequences if len(chunks) == 1 else sequences[:, chunk]
                # Under DDP the forward decides: only the last chunk's backward all-reduces.
                with distributed.accumulate_locally(policy, skip_sync=chunk.stop < T):
                    loss, stats = loss_terms(policy, part, chunk_state, config)
                if not torch.isfinite(loss):  # stop here: one NaN step would poison the weights
                    terms = ", ".join(f"{k}={stats[k].item():.4g}" for k in list(stats)[:3])
                    raise FloatingPointError(
                        f"non-finite loss {loss.item()} at optimiser step {len(history) + 1} "
                        f"of this update ({terms})"
                    )
                if len(chunks) == 1:  # the common case: no weighting ops to run
                    loss.backward()
                    step_stats = stats
                else:
                    weight = (chunk.stop - chunk.start) / T  # chunk means sum to the sequence's
                    (loss * weight).backward()
                    for key, value in stats.items():
                        step_stats[key] = step_stats[key] + value * weight
            nn.utils.clip_grad_norm_(policy.parameters(), ppo.max_grad_norm)
            optimizer.step()
            history.append(step_stats)
        if config.algo == "ppo" and ppo.target_kl is not None:
            epoch_kl = torch.stack([h["approx_kl"] for h in history[-num_minibatches:]]).mean()
            epoch_kl = distributed.mean_over_ranks(epoch_kl)  # every rank stops at the same epoch
            if epoch_kl > ppo.target_kl:
                break

    metrics = {key: float(torch.stack([h[key] for h in history]).mean()) for key in history[0]}
    metrics["optimizer_steps"] = len(history)
    values, returns = rollout["value"].flatten(), rollout["returns"].flatten()
    var_returns = returns.var()
    metrics["explained_variance"] = (
        float("nan") if var_returns == 0 else float(1 - (returns - values).var() / var_returns)
    )
    return metrics
