"""How far back each core can learn to remember, with the RL taken out.

The T-maze's recall problem as supervised learning: the cue (left or right) is
seen at t = 0, then ``L`` corridor steps, then the junction, where the core's
output must name the cue (cross-entropy on that step alone). The observations are
the T-maze's own, ``[cue_left, cue_right, in_corridor, at_junction]``. The model is
a linear encoder, the core and a linear read-out, trained with Adam (torch's
default epsilon, 1e-8, unless ``--adam-eps``) and the PPO runs' gradient clipping.
``--policy`` trains the agents' own policy network instead (encoder, core, two tanh
layers, the action head) on its action logits at the junction (no cue-gradient
column there: its encoder scales the cue inputs to -1 after t = 0, so no weight
reads the cue alone).
A run solves ``L`` when a held-out batch is classified at least 99% right; the
table gives the gradient steps that took, and the RMS gradient that reaches the
cue's encoder weights on the first step (compare it with Adam's epsilon: a gradient
far below epsilon gets a step far below the learning rate).

This separates what a core can learn to carry across ``L`` steps from what PPO's
sparse, noisier signal teaches it in the memory_horizon suite: a core that fails
here within the step cap is unlikely to learn that corridor from PPO at a similar
number of episodes.

    python scripts/probe_memory.py [--cores mlstm gru 'gru:{update_bias: 4}'] \\
        [--lengths 100 1000] [--seeds 1 2 3] [--max-steps 1000] [--progress]

A core is a name for ``build_core``, optionally followed by ``:`` and its options
as a YAML mapping.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import yaml
from tensordict import TensorDict
from torch import nn

from xlstm_rl.agents.policy import Policy
from xlstm_rl.config import CoreConfig, PolicyConfig
from xlstm_rl.cores import build_core
from xlstm_rl.envs.tmaze import TMazeEnv

CHECK_EVERY = 10  # gradient steps between held-out checks
HELD_OUT = 128  # held-out sequences per check
SOLVED = 0.99  # held-out accuracy that counts as solved


def parse_core(spec: str) -> tuple[str, dict]:
    """``"gru:{update_bias: 4}"`` -> ``("gru", {"update_bias": 4})``; a bare name has no options."""
    name, sep, rest = spec.partition(":")
    if not sep:
        return name, {}
    options = yaml.safe_load(rest)
    if not isinstance(options, dict):
        raise ValueError(
            f"core options in {spec!r} must be a YAML mapping, e.g. gru:{{update_bias: 4}}"
        )
    return name, options


def recall_batch(batch_size: int, length: int, generator: torch.Generator):
    """T-maze observations (B, length + 1, 4) and the cue (B,): 0 = left, 1 = right."""
    cue = torch.randint(2, (batch_size,), generator=generator)
    x = torch.zeros(batch_size, length + 1, 4)
    x[torch.arange(batch_size), 0, cue] = 1.0
    x[:, :length, 2] = 1.0
    x[:, length, 3] = 1.0
    return x, cue


class Probe(nn.Module):
    """Linear encoder -> core -> linear read-out of the junction step's two logits."""

    def __init__(self, core_name: str, options: dict, hidden_size: int):
        super().__init__()
        self.encoder = nn.Linear(4, hidden_size)
        self.core = build_core(core_name, hidden_size, hidden_size, **options)
        self.readout = nn.Linear(self.core.output_size, 2)
        self.cue_weight = self.encoder.weight  # its columns 0, 1 read the cue

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.core(torch.relu(self.encoder(x)), self.core.initial_state(x.shape[0]))
        return self.readout(y[:, -1])


class PolicyProbe(nn.Module):
    """The agents' own policy network (defaults of ``PolicyConfig``), its action logits at
    the junction: what PPO trains, with the RL taken out."""

    def __init__(self, core_name: str, options: dict, hidden_size: int):
        super().__init__()
        env = TMazeEnv()
        core = CoreConfig(name=core_name, hidden_size=hidden_size, options=options)
        self.policy = Policy(env.observation_space, env.action_space, core, PolicyConfig())
        # no weight reads the cue alone: the encoder scales observations to [-1, 1], so
        # the cue inputs read -1 after t = 0 and their weights take gradient from every step
        self.cue_weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps = x.shape[:2]
        resets = torch.zeros(batch, steps, dtype=torch.bool)
        resets[:, 0] = True
        inputs = TensorDict({"obs": x}, batch_size=[batch, steps])
        dist, _, _ = self.policy(inputs, self.policy.initial_state(batch), resets)
        return dist.logits[:, -1]


def build_model(spec: str, args) -> nn.Module:
    """The bare-core probe, or the policy network with ``--policy``, for a core spec."""
    return (PolicyProbe if args.policy else Probe)(*parse_core(spec), args.hidden)


def probe(spec: str, length: int, seed: int, args) -> tuple[int | None, float, float, float]:
    """Gradient steps until solved (None if not within max_steps), seconds per step, the
    RMS gradient that reaches the cue's encoder weights on the first step (before
    clipping): how strongly the untrained core connects the junction to the cue, and the
    best held-out accuracy of the checks (how far an unsolved run got)."""
    torch.manual_seed(seed)
    model = build_model(spec, args)
    cue_grad = float("nan")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, eps=args.adam_eps)
    train_gen = torch.Generator().manual_seed(seed)
    held_out = recall_batch(HELD_OUT, length, torch.Generator().manual_seed(10**6 + seed))
    start, best = time.perf_counter(), 0.0
    for step in range(1, args.max_steps + 1):
        x, cue = recall_batch(args.batch, length, train_gen)
        loss = nn.functional.cross_entropy(model(x), cue)
        optimizer.zero_grad()
        loss.backward()
        if step == 1 and model.cue_weight is not None:
            cue_grad = model.cue_weight.grad[:, :2].pow(2).mean().sqrt().item()
        nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        if step % CHECK_EVERY == 0 or step == args.max_steps:  # the last step counts too
            with torch.no_grad():
                accuracy = (model(held_out[0]).argmax(-1) == held_out[1]).float().mean().item()
            best = max(best, accuracy)
            if args.progress:
                print(
                    f"{spec} corridor {length} seed {seed}: step {step}, loss {loss.item():.4f}, "
                    f"held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if accuracy >= SOLVED:
                return step, (time.perf_counter() - start) / step, cue_grad, best
    return None, (time.perf_counter() - start) / args.max_steps, cue_grad, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", nargs="+", default=["mlstm", "slstm", "xlstm", "lstm", "gru"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--adam-eps", type=float, default=1e-8, help="torch's default")
    parser.add_argument("--max-grad-norm", type=float, default=0.5)
    parser.add_argument(
        "--policy", action="store_true", help="the agents' policy network instead of the bare core"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--progress", action="store_true", help="print each held-out check to stderr"
    )
    args = parser.parse_args(argv)
    if min(args.lengths) < 1:
        parser.error(f"--lengths must be >= 1, got {args.lengths}")
    for name in ("max_steps", "batch", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for spec in args.cores:
        try:
            build_model(spec, args)  # bad names and options fail before any run
        except (ValueError, TypeError) as e:
            parser.error(f"--cores {spec}: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"supervised T-maze recall{' through the policy network' if args.policy else ''}: "
        f"batch {args.batch}, hidden {args.hidden}, lr {args.lr}, "
        f"Adam eps {args.adam_eps}, "
        f"at most {args.max_steps} gradient steps, solved = held-out accuracy >= {SOLVED}, "
        f"{torch.get_num_threads()} torch thread(s)"
    )
    print(
        "| core | corridor | seeds solved | steps to solve (per seed) | median | s / step "
        "| cue gradient at init | best held-out accuracy (per seed) |"
    )
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for spec in args.cores:
        for length in args.lengths:
            results = [probe(spec, length, seed, args) for seed in args.seeds]
            steps = [r[0] for r in results]
            solved = [s for s in steps if s is not None]
            per_seed = ", ".join("-" if s is None else str(s) for s in steps)
            median = f"{statistics.median(solved):.0f}" if len(solved) == len(steps) else "-"
            seconds = statistics.mean(r[1] for r in results)
            cue_grad = statistics.mean(r[2] for r in results)
            cue_grad = "-" if math.isnan(cue_grad) else f"{cue_grad:.1e}"
            best = ", ".join(f"{r[3]:.3f}" for r in results)
            print(
                f"| {spec} | {length} | {len(solved)}/{len(steps)} | {per_seed} | {median} "
                f"| {seconds:.3f} | {cue_grad} | {best} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
