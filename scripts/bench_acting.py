"""Per-step acting cost of each core deep into an episode, and the state it carries.

    python scripts/bench_acting.py [--hidden 128] [--batch 16] [--steps 20] [--threads 1]

For each core, starts from the initial state with B rows, advances it by calling
``step`` until t = 10, 100, 1,000 and 10,000 steps into one episode, and times
``--steps`` further steps there (best of ``--repeats``, in ms per step for the whole
batch). State bytes are per row. The recurrent cores carry a fixed-size state, so
their cost should not depend on t. The transformer's state caches the keys and
values of its last ``memory_len`` (W) layer inputs: a second table times it at several windows, with
the cache full (filled with random activations, valid everywhere, as at any t >= W),
which is what attending over the whole episode would cost at t = W.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from xlstm_rl.cores import CORES, build_core

DEPTHS = (10, 100, 1_000, 10_000)
WINDOWS = (16, 64, 256, 1024, 4096)


def state_bytes_per_row(state, batch: int) -> int:
    return sum(t.numel() * t.element_size() for t in state.values(True, True)) // batch


def time_steps(core, x, state, reset, steps: int, repeats: int) -> float:
    """Best-of-``repeats`` mean ms per step over ``steps`` steps from ``state``."""
    best = float("inf")
    for _ in range(repeats):
        s = state
        start = time.perf_counter()
        for _ in range(steps):
            _, s = core.step(x, s, reset)
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


@torch.inference_mode()
def bench_depths(name: str, args) -> tuple[list[float], int]:
    core = build_core(name, args.hidden, args.hidden).eval()
    x = torch.randn(args.batch, args.hidden)
    reset = torch.zeros(args.batch, dtype=torch.bool)
    state = core.initial_state(args.batch)
    _, state = core.step(x, state, torch.ones_like(reset))  # t = 0: the episode starts
    t, costs = 1, []
    for depth in DEPTHS:
        for _ in range(depth - t):
            _, state = core.step(x, state, reset)
        t = depth
        costs.append(time_steps(core, x, state, reset, args.steps, args.repeats))
    return costs, state_bytes_per_row(state, args.batch)


@torch.inference_mode()
def bench_window(window: int, args) -> tuple[float, int]:
    core = build_core("transformer", args.hidden, args.hidden, memory_len=window).eval()
    x = torch.randn(args.batch, args.hidden)
    reset = torch.zeros(args.batch, dtype=torch.bool)
    state = core.initial_state(args.batch)
    for key in list(state.keys(True, True)):
        leaf = state.get(key)
        filled = torch.ones_like(leaf) if key[-1] == "valid" else torch.randn_like(leaf)
        state.set(key, filled)
    cost = time_steps(core, x, state, reset, max(3, args.steps // 4), args.repeats)
    return cost, state_bytes_per_row(state, args.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps at each depth")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cores", nargs="*", default=list(CORES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"Acting cost, ms per step for B = {args.batch}, hidden {args.hidden}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}; "
        f"torch {torch.__version__}. Default options"
        f"{' (transformer: memory_len 64)' if 'transformer' in args.cores else ''}.\n"
    )
    header = [f"t = {d:,}" for d in DEPTHS]
    print("| core | " + " | ".join(header) + " | state bytes/row |")
    print("|" + " --- |" * (len(header) + 2))
    for name in args.cores:
        start = time.perf_counter()
        costs, nbytes = bench_depths(name, args)
        cells = " | ".join(f"{c:.3f}" for c in costs)
        print(f"| {name} | {cells} | {nbytes:,} |", flush=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    if "transformer" not in args.cores:
        return
    print("\nTransformer at full cache, by window W (memory_len): ms per step, state per row.\n")
    print("| W | ms per step | state bytes/row |")
    print("| --- | --- | --- |")
    for window in WINDOWS:
        cost, nbytes = bench_window(window, args)
        print(f"| {window:,} | {cost:.3f} | {nbytes:,} |", flush=True)


if __name__ == "__main__":
    main()
