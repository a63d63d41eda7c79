"""Evaluation on held-out seeds with the policy's step path.

Episode j of an evaluation is reset with seed ``seed + EVAL_SEED_OFFSET + j``.
Training seeds sub-env i with ``seed + i`` (i < num_envs), so the two never meet
for fewer than a million envs. Episodes run in waves of up to ``EVAL_WIDTH``
parallel envs, each with its own recurrent state.

An episode succeeds when the env says so (``info["success"]`` on its last step, as
ours and MiniGrid do); otherwise the rule is: success = return > 0.

Every episode ends by ``max_episode_steps`` at the latest, so an env that never
terminates or truncates cannot hang an evaluation. The default, ``"auto"``, is
``MAX_EPISODE_STEPS`` or the env's own step limit where that is longer (a
``TimeLimit``'s ``max_episode_steps``, or the ``max_steps`` that MiniGrid, the T-maze
and MemoryLength have), so a 150,000-step corridor runs to its end; an int is the cap
as given; ``None`` lifts it. An episode cut at the cap counts as truncated and failed
(success False), with the return it had; the summary's ``"cut"`` says how many were
(a warning too) and ``"max_episode_steps"`` which cap applied.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from gymnasium.vector.utils import concatenate, create_empty_array
from tensordict import TensorDict

from xlstm_rl.agents.checkpoint import (
    checkpoint_config,
    checkpoint_file,
    load_checkpoint,
    load_weights,
)
from xlstm_rl.agents.encoders import obs_to_tensor
from xlstm_rl.agents.policy import Policy
from xlstm_rl.config import TrainConfig
from xlstm_rl.envs import make_env
from xlstm_rl.kernels.validate import as_int

EVAL_SEED_OFFSET = 1_000_000
EVAL_WIDTH = 16
MAX_EPISODE_STEPS = 100_000  # "auto": this, or the env's own step limit where longer


def _batch(space, observations: list) -> Any:
    return concatenate(space, observations, create_empty_array(space, len(observations)))


def evaluate_policy(
    policy: Policy,
    config: TrainConfig,
    episodes: int,
    seed: int | None = None,
    deterministic: bool = True,
    per_episode: bool = False,
    max_episode_steps: int | str | None = "auto",
) -> dict[str, Any]:
    """Mean/std return, mean length and success rate over ``episodes`` held-out episodes.

    ``deterministic`` acts with the distribution's mode (argmax, or the Gaussian's
    mean); False samples, as in training, from torch's generator seeded with the first
    episode's seed (so a sampled evaluation repeats; the caller's random state is put
    back afterwards). ``per_episode`` adds ``"per_episode"``:
    lists ``returns``, ``lengths`` and ``successes``, episode j reset with seed
    ``first_seed + j``. ``max_episode_steps``: see the module's docstring.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    _check_cap(max_episode_steps)
    first_seed = (config.seed if seed is None else seed) + EVAL_SEED_OFFSET
    device = next(policy.parameters()).device
    forked = [device] if device.type == "cuda" else []
    # not a decorator: warnings raised in here name the caller's line (stacklevel)
    with torch.random.fork_rng(devices=forked), torch.inference_mode():
        torch.default_generator.manual_seed(first_seed)
        if forked:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(first_seed)
        return _evaluate_policy(
            policy, config, episodes, first_seed, deterministic, per_episode, max_episode_steps
        )


def _evaluate_policy(policy, config, episodes, first_seed, deterministic, per_episode, cap):
    device = next(policy.parameters()).device
    envs = [config.env.make() for _ in range(min(episodes, EVAL_WIDTH))]
    cap = _cap_for(envs[0], cap)
    space, head = envs[0].observation_space, policy.actor
    was_training = policy.training
    policy.eval()
    returns, lengths, successes, cut = [], [], [], 0
    for wave in range(0, episodes, len(envs)):
        width = min(len(envs), episodes - wave)
        observations = [envs[i].reset(seed=first_seed + wave + i)[0] for i in range(width)]
        inputs = TensorDict(
            obs=obs_to_tensor(space, _batch(space, observations), device),
            prev_action=head.empty(width, device=device),
            prev_reward=torch.zeros(width, device=device),
            batch_size=[width],
        )
        state = policy.initial_state(width, device=device)
        reset = torch.ones(width, dtype=torch.bool, device=device)
        running = np.ones(width, dtype=bool)
        episode_return = np.zeros(width)
        episode_length = np.zeros(width, dtype=int)
        success = [None] * width
        while running.any():
            dist, _, state = policy.step(inputs, state, reset)
            action = dist.mode if deterministic else dist.sample()
            env_action = head.to_env(action)
            rewards = np.zeros(width, dtype=np.float32)
            for i in np.flatnonzero(running):
                obs, reward, terminated, truncated, info = envs[i].step(env_action[i])
                observations[i], rewards[i] = obs, reward
                episode_return[i] += reward
                episode_length[i] += 1
                at_cap = not (terminated or truncated) and episode_length[i] == cap
                if terminated or truncated or at_cap:
                    running[i] = False
                    success[i] = False if at_cap else info.get("success")
                    cut += int(at_cap)
            inputs = TensorDict(
                obs=obs_to_tensor(space, _batch(space, observations), device),
                prev_action=action,
                prev_reward=torch.as_tensor(rewards, device=device),
                batch_size=[width],
            )
            reset = torch.zeros_like(reset)
        returns.extend(episode_return.tolist())
        lengths.extend(episode_length.tolist())
        successes.extend(_succeeded(s, r) for s, r in zip(success, episode_return))
    for env in envs:
        env.close()
    policy.train(was_training)
    extra = {"deterministic": deterministic}
    if per_episode:
        extra["per_episode"] = {"returns": returns, "lengths": lengths, "successes": successes}
    # the warning's stack: _summary, _evaluate_policy, evaluate_policy, its caller
    return _summary(returns, lengths, successes, first_seed, cut, cap, 4, **extra)


def _check_cap(max_episode_steps: int | str | None) -> None:
    if max_episode_steps is None or max_episode_steps == "auto":
        return
    cap = as_int(max_episode_steps)
    if cap is None or cap < 1:
        raise ValueError(
            f"max_episode_steps must be an int >= 1, 'auto' or None, got {max_episode_steps!r}"
        )


def _cap_for(env, cap: int | str | None) -> int | None:
    """The cap applied: ``cap`` as given, or for "auto" ``MAX_EPISODE_STEPS`` or the env's
    own step limit where that is longer."""
    if cap != "auto":
        return cap
    limits = [MAX_EPISODE_STEPS]
    spec = getattr(env, "spec", None)
    if spec is not None and isinstance(spec.max_episode_steps, int):
        limits.append(spec.max_episode_steps)
    own = as_int(getattr(env.unwrapped, "max_steps", None))
    if own is not None:
        limits.append(own)
    return max(limits)


def _succeeded(reported: Any, episode_return: float) -> bool:
    """The env's own ``info["success"]`` where it reports one, else return > 0."""
    return bool(reported) if reported is not None else bool(episode_return > 0)


def _summary(
    returns, lengths, successes, first_seed, cut, cap, stacklevel: int, **extra
) -> dict[str, Any]:
    if cut:
        warnings.warn(
            f"{cut} of {len(returns)} evaluation episodes had not ended after "
            f"max_episode_steps={cap} steps and were cut there (their return so far "
            "counts; each counts as failed); does the env terminate or truncate? A "
            "longer cap: max_episode_steps (xlstm-rl evaluate --max-episode-steps)",
            stacklevel=stacklevel,
        )
    return {
        "episodes": len(returns),
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean(lengths)),
        "success_rate": float(np.mean(successes)),
        "first_seed": first_seed,
        "cut": cut,
        "max_episode_steps": cap,
        **extra,
    }


def evaluate_random(
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_module: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    actions: list[int] | None = None,
    max_episode_steps: int | str | None = "auto",
) -> dict[str, Any]:
    """The random-policy floor: uniformly random actions, on the same held-out seeds.

    ``actions`` restricts the action space as ``env.actions`` does for training, so
    the floor is that of the actions the agent has.

    Same keys and success rule as ``evaluate_policy`` (episode j reset with seed
    ``seed + EVAL_SEED_OFFSET + j``; actions drawn from the action space seeded with
    ``seed``), and the same ``max_episode_steps`` cap.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    _check_cap(max_episode_steps)
    env = make_env(env_id, env_module=env_module, actions=actions, env_kwargs=env_kwargs)
    cap = _cap_for(env, max_episode_steps)
    env.action_space.seed(seed)
    first_seed = seed + EVAL_SEED_OFFSET
    returns, lengths, successes, cut = [], [], [], 0
    for j in range(episodes):
        env.reset(seed=first_seed + j)
        total, length, done, info = 0.0, 0, False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            total, length, done = total + float(reward), length + 1, terminated or truncated
            if not done and length == cap:
                done, cut = True, cut + 1
                info = {"success": False}
        returns.append(total)
        lengths.append(length)
        successes.append(_succeeded(info.get("success"), total))
    env.close()
    return _summary(returns, lengths, successes, first_seed, cut, cap, 3, policy="random")


def policy_from_checkpoint(path: str | os.PathLike, device: str = "cpu"):
    """(policy, config) rebuilt from a checkpoint."""
    path = checkpoint_file(path)
    payload = load_checkpoint(path)
    config = checkpoint_config(payload, path)
    env = config.env.make()
    policy = Policy(env.observation_space, env.action_space, config.core, config.policy)
    env.close()
    load_weights(policy, payload["model"], path)
    return policy.to(device), config


def evaluate_checkpoint(
    path: str | os.PathLike,
    episodes: int | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    device: str = "cpu",
    max_episode_steps: int | str | None = "auto",
) -> dict[str, Any]:
    """Evaluate a saved policy (``path``: the file or its run folder); ``episodes``
    defaults to the run's ``eval_episodes`` (100 if the run had none), ``seed`` to the
    run's; ``device`` as in training (``cpu``, ``cuda[:N]``, ``auto``);
    ``max_episode_steps`` as in ``evaluate_policy``."""
    from xlstm_rl.agents.training import resolve_device  # training imports this module

    if seed is not None and not 0 <= seed < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    path = checkpoint_file(path)
    policy, config = policy_from_checkpoint(path, resolve_device(device))
    episodes = episodes if episodes is not None else (config.eval_episodes or 100)
    result = evaluate_policy(
        policy,
        config,
        episodes,
        seed=seed,
        deterministic=deterministic,
        max_episode_steps=max_episode_steps,
    )
    return {"checkpoint": str(path), "env": config.env.id, "core": config.core.name, **result}
