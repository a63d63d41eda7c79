"""Data-parallel training over processes started by ``torchrun``.

Each process (rank) steps its own environments with its own seeds, collects its
own rollout and computes its own losses; ``DistributedDataParallel`` averages the
gradients, so every rank takes the same optimiser step and the parameters stay
identical (DDP broadcasts rank 0's parameters when it wraps the policy).

- Detection: ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. With
  ``WORLD_SIZE`` > 1 ``train`` joins the process group (NCCL when the run's device
  is CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPUs) and destroys it at the
  end. A process group the caller initialised is used as it is and left alone.
  Without torchrun, or with one process, nothing here does anything.
- Seeds: sub-env i of rank r is seeded ``seed + r * num_envs + i``, so the world's
  envs are seeded as one process with ``world_size * num_envs`` envs would seed
  them. Rank 0 seeds torch, numpy and Python with ``seed`` (a one-process run is
  unchanged); rank r > 0 with a seed hashed from ``(seed, r)``, so no two ranks,
  and no rank and another run's rank 0, share an action-sampling stream.
- BPTT chunks: the update calls backward once per chunk before one optimiser
  step; all but the last run under ``no_sync`` so gradients are all-reduced once,
  after they have all been accumulated.
- Metrics: the env steps are summed over ranks (``total_steps`` and the logged
  step count are global), the update's diagnostics are averaged over ranks, and
  finished episodes are gathered from all ranks. Rank 0 alone logs, shows the
  progress bar, writes checkpoints and evaluates.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process if it does not)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", 0)))


def active() -> bool:
    """Whether there are other ranks to talk to."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join the torchrun process group for the run; yields (world, this rank's device).

    A CUDA device becomes ``cuda:LOCAL_RANK`` with NCCL; anything else uses gloo.
    """
    world = world_from_env()
    if world.size == 1:
        yield world, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield world, device
    finally:
        if owned:
            dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s torch, numpy and Python RNGs: ``seed`` itself on rank 0."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def env_seed(seed: int, rank: int, num_envs: int) -> int:
    """The seed of rank ``rank``'s first sub-env (sub-env i gets this + i)."""
    return seed + rank * num_envs


def data_parallel(policy: nn.Module) -> nn.Module:
    """``policy`` wrapped for gradient averaging across ranks (itself with one process).

    The policy's buffers are constants, so they are not re-broadcast every forward
    (the option's name changed in torch 2.13; both mean the same here).
    """
    if not active():
        return policy
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    name = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    return DistributedDataParallel(policy, **{name: False})


def accumulate_locally(model: nn.Module, skip_sync: bool):
    """Context for one backward: with ``skip_sync`` under DDP, gradients stay local."""
    if skip_sync and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """``value`` averaged over ranks, so decisions taken from it agree on every rank."""
    if not active():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def reduce_update(
    steps: int, metrics: dict[str, float], episodes: list[dict], device: torch.device
) -> tuple[int, dict[str, float], list[dict]]:
    """Global env steps (a sum), diagnostics (NaN-ignoring means) and all ranks' episodes."""
    if not active():
        return steps, metrics, episodes
    keys = sorted(metrics)
    local = torch.tensor([steps, *(metrics[k] for k in keys)], dtype=torch.float64, device=device)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    table = torch.stack(gathered).cpu()  # (world, 1 + metrics)
    means = table[:, 1:].nanmean(0)
    reduced = {key: type(metrics[key])(mean.item()) for key, mean in zip(keys, means)}
    everyone: list[list[dict]] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, episodes)
    return int(table[:, 0].sum()), reduced, [e for rank_episodes in everyone for e in rank_episodes]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` (picklable, CPU tensors) as a list on rank 0; None elsewhere."""
    if not active():
        return [obj]
    objects = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, objects, dst=0)
    return objects


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
