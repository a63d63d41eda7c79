"""Benchmark the memory cores on the CPU: training pass and acting step.

For each core at B=64 environments, T=128, hidden 128, with about 2% of steps
resets: the time of one training pass (forward + backward over the sequence) and
of one acting step at B=16. Baselines measured in the same run: torch's fused
nn.LSTM over the same sequence without resets, and the mLSTM core on the
reference step loop. Prints the ratios the memory-cores issue asks for and the
mLSTM step time at t=10 versus t=10,000 into an episode. The mLSTM / nn.LSTM ratio is
also timed in alternation (``--repeats`` pairs, the order flipped every pair; median and
quartiles of the per-pair ratios), which the VM's drift between blocks of runs moves
less than the ratio of two best times taken minutes apart. And (``--long``, on by
default; ``--no-long`` skips it) each core's training pass at B=16 over T=1,024 against
T=128, per step: about 1 means the cost is linear in T, as it must be for a recurrent
core (a backward that grows faster, as the step loops once had, shows up here); the
transformer is in that row too (its window caps what a query attends to, and its
sequence pass goes in chunks, so it must be about 1 as well), and once more as one
T x (W + T) attention (``chunk_len`` longer than T, how it ran before the chunks), which
grows with T.

The sLSTM cell's rows compare its two CPU backends, the hand-written backward through
time (``bptt``, what ``auto`` picks) and autograd through the reference loop, at this
shape and at a PPO minibatch's (B=2, T=256).

``--compile`` adds a row for the mLSTM core under ``torch.compile`` (the agents'
``compile: true``: its elementwise work fused, the cell differentiated by autograd)
and its ratio to nn.LSTM; the compile itself is not timed.

    python scripts/bench_cores.py [--repeats 20] [--threads N] [--compile]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from xlstm_rl.cores import build_core
from xlstm_rl.kernels import mlstm_sequence, slstm_sequence

B, T, HIDDEN, B_STEP, RESET_RATE = 64, 128, 128, 16, 0.02


def timeit(fn, repeats: int, warmup: int = 3) -> float:
    """Best wall time of fn() in milliseconds: the least disturbed by other load."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def paired_ratios(fn_a, fn_b, pairs: int, warmup: int = 3) -> list[float]:
    """Time fn_a and fn_b in alternation and return the ratio a / b of each pair: the
    machine's drift between two blocks of runs (minutes apart) cancels within a pair."""
    for _ in range(warmup):
        fn_a(), fn_b()
    ratios = []
    for n in range(pairs):
        times = {}
        for name, fn in (("a", fn_a), ("b", fn_b)) if n % 2 == 0 else (("b", fn_b), ("a", fn_a)):
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        ratios.append(times["a"] / times["b"])
    return ratios


def quartiles(values: list[float]) -> str:
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.2f}-{q3:.2f}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train_pass(core, x, resets):
    def run():
        core.zero_grad(set_to_none=True)
        y, _ = core(x, core.initial_state(x.shape[0]), resets)
        y.square().mean().backward()

    return run


def step_fn(core, x, steps_before: int = 10):
    state = core.initial_state(x.shape[0])
    with torch.inference_mode():
        for _ in range(steps_before):
            _, state = core.step(x, state)

    def run():
        with torch.inference_mode():
            core.step(x, state)

    return run


def repeat(fn, times: int):
    def run():
        for _ in range(times):
            fn()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--compile", action="store_true", help="add the compiled mLSTM core")
    parser.add_argument(
        "--long",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-step training cost at T=1,024 over T=128 (B=16) for each memory core",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(B, T, HIDDEN)
    resets = torch.rand(B, T) < RESET_RATE
    x_step = torch.randn(B_STEP, HIDDEN)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads; B={B} T={T} hidden={HIDDEN}, "
        f"{resets.float().mean():.1%} resets; step at B={B_STEP}; best of {args.repeats} "
        f"(acting steps: of {args.repeats * 10})"
    )

    rows = {}
    for name in ("mlstm", "slstm", "xlstm", "lstm", "gru", "mlp"):
        core = build_core(name, HIDDEN, HIDDEN)
        rows[name] = (
            timeit(train_pass(core, x, resets), args.repeats),
            timeit(step_fn(core, x_step), args.repeats * 10),
        )
    ref = build_core("mlstm", HIDDEN, HIDDEN, backend="reference")
    rows["mlstm (reference loop)"] = (
        timeit(train_pass(ref, x, resets), max(3, args.repeats // 4)),
        float("nan"),
    )
    if args.compile:
        compiled = build_core("mlstm", HIDDEN, HIDDEN)
        compiled.forward = torch.compile(compiled.forward)
        rows["mlstm (torch.compile)"] = (
            timeit(train_pass(compiled, x, resets), args.repeats),
            float("nan"),
        )
    fused = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)

    def fused_pass():
        fused.zero_grad(set_to_none=True)
        y, _ = fused(x)
        y.square().mean().backward()

    rows["nn.LSTM fused, no resets"] = (timeit(fused_pass, args.repeats), float("nan"))

    print(f"\n| core | train pass fwd+bwd (ms) | acting step B={B_STEP} (ms) |")
    print("|---|---:|---:|")
    for name, (train_ms, step_ms) in rows.items():
        step = "-" if step_ms != step_ms else f"{step_ms:.3f}"
        print(f"| {name} | {train_ms:.2f} | {step} |")

    chunk, lstm_ms = rows["mlstm"][0], rows["nn.LSTM fused, no resets"][0]
    print(f"\nmLSTM chunkwise / fused nn.LSTM (train pass): {chunk / lstm_ms:.2f}  (target <= 1.0)")
    mlstm_pass = train_pass(build_core("mlstm", HIDDEN, HIDDEN), x, resets)
    ratios = paired_ratios(mlstm_pass, fused_pass, max(2, args.repeats))  # quartiles need 2
    print(
        f"  the same, timed in alternation ({len(ratios)} pairs): median "
        f"{statistics.median(ratios):.2f}, quartiles {quartiles(ratios)}"
    )
    if args.compile:
        print(
            f"mLSTM chunkwise under torch.compile / fused nn.LSTM (train pass): "
            f"{rows['mlstm (torch.compile)'][0] / lstm_ms:.2f}"
        )
    print(
        f"reference loop / mLSTM chunkwise (train pass): "
        f"{rows['mlstm (reference loop)'][0] / chunk:.1f}x  (target >= 5x)"
    )

    # the cell alone, without the block's projections, norms and feed-forward
    H, dqk, dv = 4, HIDDEN // 8, HIDDEN // 4  # the block's default head sizes
    q, k = (torch.randn(B, H, T, dqk, requires_grad=True) for _ in range(2))
    v = torch.randn(B, H, T, dv, requires_grad=True)
    i = torch.randn(B, H, T, requires_grad=True)
    f = (torch.randn(B, H, T) + 3).requires_grad_()
    cell_ms = {}
    for backend in ("chunkwise", "reference"):

        def cell_pass(backend=backend):
            h, _ = mlstm_sequence(q, k, v, i, f, resets=resets, backend=backend, chunk_size=16)
            h.square().mean().backward()

        cell_ms[backend] = timeit(cell_pass, max(3, args.repeats // 2))
    print(
        f"mLSTM cell alone (kernel layer, fwd+bwd): chunkwise {cell_ms['chunkwise']:.1f} ms, "
        f"reference loop {cell_ms['reference']:.1f} ms, "
        f"ratio {cell_ms['reference'] / cell_ms['chunkwise']:.1f}x"
    )
    # the sLSTM cell alone: the step loop with its hand-written backward (the CPU
    # training path) against the same loop differentiated by autograd, here and at the
    # shape of a PPO minibatch (2 envs x 256 steps in configs/ppo_mlstm_minigrid_memory)
    for b, t_len in ((B, T), (2, 256)):
        g = torch.randn(b, t_len, H, 4, HIDDEN // H, requires_grad=True)
        R = (0.1 * torch.randn(H, HIDDEN // H, 4, HIDDEN // H)).requires_grad_()
        cell_resets = torch.rand(b, t_len) < RESET_RATE

        def slstm_cell_pass(backend, g=g, R=R, cell_resets=cell_resets):
            def run():
                h, _ = slstm_sequence(g, R, resets=cell_resets, backend=backend)
                h.square().mean().backward()

            return run

        bptt_ms = timeit(slstm_cell_pass("bptt"), max(3, args.repeats // 2))
        ref_ms = timeit(slstm_cell_pass("reference"), max(3, args.repeats // 2))
        ratios = paired_ratios(
            slstm_cell_pass("reference"), slstm_cell_pass("bptt"), max(2, args.repeats // 2)
        )
        print(
            f"sLSTM cell alone (kernel layer, fwd+bwd) at B={b}, T={t_len}: hand-written "
            f"backward {bptt_ms:.1f} ms, autograd through the loop {ref_ms:.1f} ms; "
            f"autograd / hand-written in alternation: median {statistics.median(ratios):.2f}"
        )

    mlstm = build_core("mlstm", HIDDEN, HIDDEN)
    early_fn, late_fn = step_fn(mlstm, x_step, 10), step_fn(mlstm, x_step, 10_000)
    early = timeit(early_fn, args.repeats * 10)
    late = timeit(late_fn, args.repeats * 10)
    # per-pair ratios of batches of 10 steps: one disturbed best time cannot move it
    ratios = paired_ratios(repeat(late_fn, 10), repeat(early_fn, 10), max(2, args.repeats))
    print(
        f"mLSTM step at t=10: {early:.3f} ms, at t=10,000: {late:.3f} ms, "
        f"ratio {late / early:.2f}; in alternation: median {statistics.median(ratios):.2f}, "
        f"quartiles {quartiles(ratios)}  (target within 10%)"
    )
    if args.long:
        print(f"training pass per step, T=1,024 over T=128 (B={B_STEP}): " + long_ratios(args))


def long_ratios(args) -> str:
    """Per-step training cost at T = 1,024 over T = 128 for each memory core."""
    out = []
    # the last entry: the transformer as one T x (W + T) attention (its chunk longer than
    # T), the computation before its sequence pass went in chunks: quadratic in T
    cores = [(n, {}) for n in ("mlstm", "slstm", "xlstm", "lstm", "gru", "transformer")]
    for name, options in cores + [("transformer", {"chunk_len": 4096})]:
        core, per_step = build_core(name, HIDDEN, HIDDEN, **options), []
        for length in (128, 1024):
            x = torch.randn(B_STEP, length, HIDDEN)
            resets = torch.rand(B_STEP, length) < RESET_RATE
            ms = timeit(train_pass(core, x, resets), max(2, args.repeats // 5), warmup=1)
            per_step.append(ms / length)
        label = f"{name} as one chunk" if options else name
        out.append(f"{label} {per_step[1] / per_step[0]:.2f}")
    return ", ".join(out) + "  (linear in T: about 1)"


if __name__ == "__main__":
    main()
