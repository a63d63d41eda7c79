"""``train(config)``: collect, compute advantages, update, log; checkpoint; evaluate at the end.

One loop serves PPO and A2C (``config.algo``): they share the collector, the policy
and the logging, and differ only in ``ppo.update``'s schedule and loss. TensorBoard
logs go to ``<log_dir>/<name>`` under CleanRL's metric names; the latest checkpoint
is ``<log_dir>/<name>/checkpoint.pt``.

Under ``torchrun`` the same loop runs data-parallel, one process per GPU or CPU
worker; see ``distributed`` for how seeds, gradients, metrics and checkpoints are
shared out. ``total_steps`` and the logged step counts are global (summed over ranks).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from xlstm_rl.agents import distributed
from xlstm_rl.agents.checkpoint import (
    CheckpointError,
    checkpoint_config,
    checkpoint_file,
    env_snapshot,
    load_checkpoint,
    load_weights,
    record_episodes,
    restore_envs,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from xlstm_rl.agents.evaluation import evaluate_policy
from xlstm_rl.agents.policy import Policy
from xlstm_rl.agents.ppo import update
from xlstm_rl.agents.rollout import Collector, compute_advantages
from xlstm_rl.config import TrainConfig, config_diff, load_config
from xlstm_rl.envs import make_vector_env


@dataclass
class TrainResult:
    """What ``train`` returns: the final evaluation and where the run's files are."""

    config: TrainConfig
    final_eval: dict[str, Any]
    checkpoint: Path
    run_dir: Path
    global_step: int
    updates: int
    recent_returns: list[float]
    # time spent training (the update loop, not setup or the final evaluation), summed
    # over every resume: wall-clock seconds and this process's CPU seconds (all its
    # threads; asynchronous envs' worker processes not counted). None when the run was
    # resumed from a checkpoint written before xlstm-rl recorded it.
    train_time_s: float | None = None
    train_cpu_s: float | None = None
    rank: int = 0  # under torchrun: this process's rank (rank 0 logs, checkpoints, evaluates)
    world_size: int = 1


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``checkpoint`` is the run's latest checkpoint, None if none."""

    def __init__(self, checkpoint: Path | None):
        super().__init__(checkpoint)
        self.checkpoint = checkpoint


class TrainingDiverged(FloatingPointError):
    """A non-finite loss stopped training at ``update`` (1-based), after ``global_step``
    env steps; ``checkpoint`` is the run's latest checkpoint (from before that update),
    None if none was written yet."""

    def __init__(self, detail: str, update: int, global_step: int, checkpoint: Path | None):
        super().__init__(f"at update {update} (after global step {global_step}): {detail}")
        self.update, self.global_step, self.checkpoint = update, global_step, checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device must be 'cpu', 'cuda[:N]', 'mps' or 'auto', got {name!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available here; "
            "use --device cpu (or auto, which picks cuda when there is one)"
        )
    return device


def run_name(config: TrainConfig) -> str:
    env = config.env.id.replace("/", "-").replace(":", "-")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{env}__{config.algo}-{config.core.name}__s{config.seed}__{stamp}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rank_state(collector, envs) -> dict[str, Any]:
    """What each rank has of its own: RNG streams, the collector's carry and core state, envs."""
    return {
        "rng": rng_states(),
        "carry": collector.carry.cpu().to_dict(),
        "state": collector.state.cpu().to_dict(),
        "envs": env_snapshot(envs),
    }


def _checkpoint_payload(config, policy, optimizer, ranks, update_idx, global_step, recent, clock):
    """Rank 0's own state at the top level (as a one-process run has it); other ranks' in a list."""
    return {
        "time": clock.totals(),
        "config": config.to_dict(),
        "model": policy.state_dict(),
        "optimizer": optimizer.state_dict(),
        "update": update_idx,
        "global_step": global_step,
        **ranks[0],
        "world_size": len(ranks),
        "other_ranks": ranks[1:],
        "recent_returns": list(recent),
    }


def _log(writer, global_step, lr, sps, metrics, episodes) -> None:
    """One update's scalars, under CleanRL's names; episode stats are means over the update."""
    writer.add_scalar("charts/learning_rate", lr, global_step)
    writer.add_scalar("charts/SPS", sps, global_step)
    for key in ("value_loss", "policy_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac"):
        writer.add_scalar(f"losses/{key}", metrics[key], global_step)
    writer.add_scalar("losses/explained_variance", metrics["explained_variance"], global_step)
    if episodes:
        returns, lengths = [e["return"] for e in episodes], [e["length"] for e in episodes]
        writer.add_scalar("charts/episodic_return", np.mean(returns), global_step)
        writer.add_scalar("charts/episodic_length", np.mean(lengths), global_step)
        known = [e["success"] for e in episodes if e["success"] is not None]
        if known:
            writer.add_scalar("charts/success_rate", np.mean(known), global_step)


class _Clock:
    """Training time summed over a run's sessions: wall-clock and process CPU seconds.

    A resumed run starts from what its checkpoint recorded; a checkpoint written before
    xlstm-rl recorded it leaves the totals unknown (None)."""

    KEYS = ("wall_s", "cpu_s")

    def __init__(self, payload: dict[str, Any] | None):
        prior = dict.fromkeys(self.KEYS, 0.0) if payload is None else payload.get("time")
        known = isinstance(prior, dict) and all(
            isinstance(prior.get(key), (int, float)) for key in self.KEYS
        )
        self.prior = {key: float(prior[key]) for key in self.KEYS} if known else None
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def totals(self) -> dict[str, float] | None:
        if self.prior is None:
            return None
        return {
            "wall_s": self.prior["wall_s"] + time.perf_counter() - self.wall,
            "cpu_s": self.prior["cpu_s"] + time.process_time() - self.cpu,
        }


def _resume(payload, policy, optimizer, collector, envs, device, rank, path):
    """Restore a training run's state; its (update, global step, recent returns)."""
    try:
        _restore(payload, policy, optimizer, collector, envs, device, rank, path)
        return payload["update"], payload["global_step"], payload["recent_returns"]
    except (KeyError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"{path} lacks part of a training run's state ({type(e).__name__}: {e}); "
            "a damaged checkpoint, or one not written by xlstm-rl train"
        ) from e


def _restore(payload, policy, optimizer, collector, envs, device, rank, path) -> None:
    load_weights(policy, payload["model"], path)
    load_weights(optimizer, payload["optimizer"], path, what="optimiser")
    own = payload if rank == 0 else payload["other_ranks"][rank - 1]
    if restore_envs(envs, own["envs"]):
        num_envs = collector.carry.batch_size
        collector.carry = TensorDict(own["carry"], batch_size=num_envs, device=device)
        collector.state = TensorDict(own["state"], batch_size=num_envs, device=device)
    else:
        warnings.warn(
            "the environments' state could not be restored (asynchronous envs, or a checkpoint "
            "without it): training resumes from fresh episodes, not exactly where it stopped",
            stacklevel=3,
        )
    set_rng_states(own["rng"])


def train(
    config: TrainConfig | dict | str | os.PathLike | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train an agent; see ``TrainConfig`` for the settings and ``TrainResult`` for the output.

    ``config`` is a TrainConfig, a nested dict or a YAML path; ``overrides`` maps
    dotted keys to values (``{"ppo.lr": 1e-3}``). ``resume`` continues from a
    checkpoint with the config stored in it (plus ``overrides``; leave ``config``
    None): same parameters, optimiser, RNG streams, environments and recurrent
    states, so it carries on exactly as the uninterrupted run would have.

    Under ``torchrun`` every rank calls ``train`` and trains data-parallel (see
    ``distributed``); a resume needs the number of processes that wrote the checkpoint.
    """
    payload = None
    if resume is not None:
        if config is not None:
            raise ValueError("pass either config or resume: a resumed run uses its checkpoint's")
        resume = checkpoint_file(resume)  # a run folder names its checkpoint.pt
        payload = load_checkpoint(resume)
        config = _resumed_config(payload["config"], resume, overrides or {})
    else:
        config = load_config(config, overrides)
    with distributed.process_group(resolve_device(config.device)) as (world, device):
        if config.name is None:  # rank 0's clock names the run for everyone
            config = dataclasses.replace(
                config, name=distributed.broadcast_from_main(run_name(config))
            )
        if payload is not None and payload.get("world_size", 1) != world.size:
            raise ValueError(
                f"{resume} was written by {payload.get('world_size', 1)} process(es), this run has "
                f"{world.size}: resume with the same number, as each rank restores its own envs"
            )
        return _train(config, payload, resume, world, device, progress)


# What a resumed run cannot change: the network, the environments and the RNG streams
# were built from these, and the checkpoint holds their state.
_FIXED_ON_RESUME = ("algo", "seed", "env", "core", "policy")


def _resumed_config(stored: dict[str, Any], checkpoint: Path, overrides: dict) -> TrainConfig:
    """The checkpoint's config plus ``overrides``, writing into the checkpoint's own folder.

    A resumed run goes on in the folder its checkpoint lies in, wherever the command runs
    (the stored ``log_dir`` may be relative to another directory): ``log_dir`` defaults to
    the folder above it and ``name`` to its own; an override of either starts a new folder.
    Overrides of what the checkpoint's state was built from are refused."""
    here = {"log_dir": str(checkpoint.parent.parent), "name": checkpoint.parent.name}
    original = checkpoint_config({"config": stored}, checkpoint)  # the file's own fault
    config = load_config(stored, {**here, **overrides})  # else the overrides'
    changed = [
        f"{key} ({old!r} -> {new!r})"
        for key, (old, new) in config_diff(original.to_dict(), config.to_dict()).items()
        if key.split(".")[0] in _FIXED_ON_RESUME
        and key != "env.asynchronous"  # how the envs step, not what they are
    ]
    if changed:
        raise ValueError(
            f"cannot change {', '.join(changed)} when resuming {checkpoint}: the checkpoint's "
            "network, environments and random streams were built from them; start a new run "
            "(xlstm-rl train --config ...) to change them"
        )
    return config


def _train(config, payload, resume, world, device, progress) -> TrainResult:
    run_dir = Path(config.log_dir) / config.name
    if config.compile and world.size > 1:
        raise ValueError(
            "compile is not supported with more than one process yet; set compile: false"
        )
    if config.torch_threads:
        # Small recurrent models step fastest on one thread; more threads mostly contend.
        torch.set_num_threads(config.torch_threads)
    seed_everything(distributed.rank_seed(config.seed, world.rank))
    envs = make_vector_env(
        config.env.id,
        config.env.num_envs,
        seed=distributed.env_seed(config.seed, world.rank, config.env.num_envs),
        asynchronous=config.env.asynchronous,
        env_module=config.env.module,
        actions=config.env.actions,
        env_kwargs=config.env.kwargs,
    )
    record_episodes(envs)
    policy = Policy(
        envs.single_observation_space, envs.single_action_space, config.core, config.policy
    ).to(device)
    # fused: one kernel for all parameters (0.3 ms a step on the CPU, against 1.4 ms)
    optimizer = torch.optim.Adam(
        policy.parameters(), lr=config.ppo.lr, eps=config.ppo.adam_eps, fused=True
    )
    collector = Collector(envs, policy, config.ppo.rollout_len, device, compile=config.compile)
    start_update, global_step = 0, 0
    recent = deque(maxlen=100)  # returns of the latest finished episodes (of all ranks)
    if payload is not None:
        start_update, global_step, returns = _resume(
            payload, policy, optimizer, collector, envs, device, world.rank, resume
        )
        recent.extend(returns)
    model = distributed.data_parallel(policy)  # broadcasts rank 0's parameters

    writer = None
    if world.is_main:
        # drop only what was logged after the checkpoint: its own update's points stay
        writer = SummaryWriter(str(run_dir), purge_step=global_step + 1 if payload else None)
        if payload is None:
            writer.add_text("config", f"```\n{config.to_dict()}\n```")
    checkpoint_path = run_dir / "checkpoint.pt"
    steps_per_update = config.steps_per_update * world.size
    num_updates = max(1, config.total_steps // steps_per_update)
    run_steps = num_updates * steps_per_update
    # budgets are floored to whole updates, as in CleanRL; say so only where it matters
    # (a round 1,000,000 at 2,048 steps an update runs 999,424: not worth a word)
    if (
        world.is_main
        and payload is None
        and abs(run_steps - config.total_steps) > 0.05 * config.total_steps
    ):
        warnings.warn(
            f"total_steps {config.total_steps:,} is not a whole number of updates of "
            f"{steps_per_update:,} env steps (env.num_envs x ppo.rollout_len"
            f"{' x processes' if world.size > 1 else ''}): training runs {num_updates} "
            f"update{'s' if num_updates != 1 else ''}, {run_steps:,} env steps",
            stacklevel=2,
        )
    bar = tqdm(
        total=num_updates * steps_per_update,
        initial=global_step,
        unit="step",
        disable=not (progress and world.is_main),
        dynamic_ncols=True,
    )
    start_step, clock = global_step, _Clock(payload)  # clock.wall: this session's start
    try:
        for update_idx in range(start_update + 1, num_updates + 1):
            lr = config.ppo.lr
            if config.ppo.anneal_lr:
                lr *= 1.0 - (update_idx - 1.0) / num_updates
            for group in optimizer.param_groups:
                group["lr"] = lr

            rollout, initial_state, episodes = collector.collect()
            rollout = compute_advantages(rollout, config.ppo.gamma, config.ppo.gae_lambda)
            try:
                metrics = update(model, optimizer, rollout, initial_state, config)
            except FloatingPointError as err:  # a NaN/inf loss, raised before any step on it
                last = checkpoint_path if checkpoint_path.is_file() else None
                raise TrainingDiverged(str(err), update_idx, global_step, last) from err
            steps, metrics, episodes = distributed.reduce_update(
                config.steps_per_update, metrics, episodes, device
            )
            global_step += steps

            sps = int((global_step - start_step) / (time.perf_counter() - clock.wall))
            recent.extend(e["return"] for e in episodes)
            if writer is not None:
                _log(writer, global_step, lr, sps, metrics, episodes)
            bar.update(steps)
            bar.set_postfix(SPS=sps, ret=f"{np.mean(recent):.3f}" if recent else "-")

            last = update_idx == num_updates
            if last or (config.checkpoint_every and update_idx % config.checkpoint_every == 0):
                ranks = distributed.gather_to_main(_rank_state(collector, envs))
                if world.is_main:
                    snapshot = _checkpoint_payload(
                        config, policy, optimizer, ranks, update_idx, global_step, recent, clock
                    )
                    save_checkpoint(checkpoint_path, snapshot)
                distributed.barrier()  # on every rank, the checkpoint is on disk from here
        trained = clock.totals()  # a resumed finished run adds nothing (the loop did not run)
    except KeyboardInterrupt:
        # say which checkpoint to resume from (the last one written is whole: atomic writes)
        raise TrainingInterrupted(checkpoint_path if checkpoint_path.is_file() else None) from None
    finally:
        bar.close()
        envs.close()
    if start_update >= num_updates:  # resumed a finished run: nothing was left to train
        checkpoint_path = Path(resume)

    final_eval: dict[str, Any] = {}
    if world.is_main:
        if config.eval_episodes > 0:
            final_eval = evaluate_policy(policy, config, config.eval_episodes)
            for key in ("return_mean", "return_std", "success_rate"):
                writer.add_scalar(f"eval/{key}", final_eval[key], global_step)
        writer.close()
    return TrainResult(
        config=config,
        final_eval=final_eval,
        checkpoint=checkpoint_path,
        run_dir=run_dir,
        global_step=global_step,
        updates=num_updates,
        recent_returns=list(recent),
        train_time_s=None if trained is None else trained["wall_s"],
        train_cpu_s=None if trained is None else trained["cpu_s"],
        rank=world.rank,
        world_size=world.size,
    )
