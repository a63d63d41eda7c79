"""Benchmark the Triton kernels against the torch chunkwise form (and mlstm-kernels' TFLA).

    python scripts/bench_kernels.py                 # on a GPU: the full table
    python scripts/bench_kernels.py --dry-run       # tiny shapes; on the CPU it runs the
                                                    # kernels under Triton's interpreter
                                                    # (timings meaningless, checks the script)
    python scripts/bench_kernels.py --sweep-fp32    # float32 chunkwise: Dk/Dv tile x warps
    python scripts/bench_kernels.py --profile       # torch.profiler of one fwd+bwd shape

Without a GPU (and without --dry-run) it says so and exits 0.

Shapes: RL training batches (B in {64, 256, 1024}, T = 128, H = 4, D in {32, 64}) and one
long sequence (B = 8, T = 8192, H = 8, D = 128); the mLSTM step at B in {1, 64, 1024};
the sLSTM at an RL shape. Times are medians of triton.testing.do_bench (CUDA events).

FLOP model (mLSTM chunkwise, per (b, h), chunk L, as the kernels execute it: full
L x L tiles, masked entries included; elementwise work not counted):
    forward   2 T (2 Dk Dv + L Dk + L Dv)    K^T V per chunk, Q C, Q K^T, S V
    backward  2 T (4 Dk Dv + 3 L Dk + 2 L Dv)
Byte model: every tensor a kernel reads or writes counted once per kernel (perfect
reuse inside a kernel, none across kernels), chunk states in float32; this is a lower
bound on the traffic, not a measurement. Step: the state read and written once (float32)
plus q, k, v, i, f, h.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time

import torch

# (name fragment, dense TF32 tensor TFLOP/s, FP32 TFLOP/s, HBM TB/s), from NVIDIA's data
# sheets; first match wins. The kernels multiply in TF32 for bf16/fp16 inputs and in exact
# FP32 for float32 inputs, so those are the peaks that apply (dense bf16 is twice TF32:
# 989 TFLOP/s on H100 SXM / H200).
PEAKS = [
    ("H200", 494.0, 67.0, 4.8),
    ("H100 NVL", 418.0, 60.0, 3.9),
    ("H100 PCIe", 378.0, 51.0, 2.0),
    ("H100", 494.0, 67.0, 3.35),  # SXM
    ("A100-SXM4-80GB", 156.0, 19.5, 2.039),
    ("A100-SXM4-40GB", 156.0, 19.5, 1.555),
    ("A100-PCIE-80GB", 156.0, 19.5, 1.935),
    ("A100-PCIE-40GB", 156.0, 19.5, 1.555),
]

RL_SHAPES = [(B, 128, 4, D) for B in (64, 256, 1024) for D in (32, 64)]
LONG_SHAPES = [(8, 8192, 8, 128)]
STEP_BATCHES = (1, 64, 1024)
SLSTM_SHAPES = [(256, 128, 4, 32)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, one run each")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument(
        "--sweep-fp32",
        action="store_true",
        help="only time float32 chunkwise fwd / fwd+bwd for each IEEE_TILE x IEEE_WARPS",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="only profile 10 fwd+bwd at B=64, T=128, H=4, D=32: GPU kernel time vs wall time",
    )
    return p.parse_args(argv)


def peaks(device_name: str):
    for fragment, bf16, fp32, hbm in PEAKS:
        if fragment in device_name:
            return bf16, fp32, hbm
    return None


def mlstm_flops(B, T, H, Dk, Dv, L, backward: bool) -> float:
    fwd = 2 * T * (2 * Dk * Dv + L * Dk + L * Dv)
    bwd = 2 * T * (4 * Dk * Dv + 3 * L * Dk + 2 * L * Dv)
    return B * H * (fwd + (bwd if backward else 0))


def mlstm_bytes(B, T, H, Dk, Dv, L, e: int, backward: bool) -> float:
    NC = math.ceil(T / L)
    states = NC * Dk * Dv * 4  # one set of chunk states, float32
    gates = 2 * T * 4
    fwd = (
        T * (Dk + Dv) * e + gates + states  # kernel 1: k, v, i, f in; states out
        + T * (2 * Dk + Dv) * e + gates + states + T * Dv * e + 2 * T * 4  # kernel 2
    )  # fmt: skip
    bwd = (
        2 * T * Dv * e + 3 * T * 4  # dh . h for beta, den
        + T * (Dk + Dv) * e + gates + 3 * T * 4 + states  # kernel 3
        + T * (2 * Dk + 2 * Dv) * e + gates + 3 * T * 4 + 2 * states  # kernel 4 in
        + T * (2 * Dk + Dv) * e + 2 * T * 4  # kernel 4 out
    )  # fmt: skip
    return B * H * (fwd + (bwd if backward else 0))


def step_bytes(B, H, Dk, Dv, e: int) -> float:
    return B * H * (2 * (Dk * Dv + Dk + 1) * 4 + (2 * Dk + 2 * Dv) * e + 2 * 4)


def bench(fn, dry_run: bool) -> float:
    """Milliseconds per call: median of triton.testing.do_bench on a GPU, one timed call
    in a dry run."""
    if dry_run:
        fn()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return 1e3 * (time.perf_counter() - start)
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def fmt_rate(x, peak):
    return "n/a" if peak is None else f"{100 * x / peak:5.1f}%"


def mlstm_inputs(B, T, H, D, dtype, device, requires_grad):
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen, device=device, dtype=dt)

    q, k, v = randn(B, H, T, D), randn(B, H, T, D), randn(B, H, T, D)
    i = randn(B, H, T, dt=torch.float32) - 3.0
    f = randn(B, H, T, dt=torch.float32) + 4.0
    return [x.requires_grad_(requires_grad) for x in (q, k, v, i, f)]


def one_pass(fn, x, dh=None):
    """A call running fn(*x) and, given dh, the backward from its h (then clearing grads)."""

    def call():
        out = fn(*x)
        h = out[0] if isinstance(out, tuple) else out
        if dh is not None:
            torch.autograd.backward(h, dh)
            for t in x:
                t.grad = None

    return call


def tfla_kernel():
    """mlstm-kernels' TFLA chunkwise kernel when that package is installed, else None."""
    try:
        from mlstm_kernels.torch import get_mlstm_kernel

        return get_mlstm_kernel("chunkwise--triton_xl_chunk")
    except Exception:  # not installed, or an API this script does not know
        return None


def run_mlstm(args, shapes, dtype, device, peak):
    from xlstm_rl.kernels import mlstm_sequence_chunkwise
    from xlstm_rl.kernels.mlstm.triton_chunkwise import mlstm_sequence_triton

    tfla = tfla_kernel() if device == "cuda" and dtype == torch.bfloat16 else None
    e = torch.tensor([], dtype=dtype).element_size()
    L = args.chunk_size
    print(f"\nmLSTM sequence ({dtype}, chunk {L}); ratios: torch time / this time")
    print(f"{'B':>5} {'T':>5} {'H':>2} {'D':>4} | {'pass':8} | {'triton ms':>9} "
          f"{'TFLOP/s':>8} {'peak':>6} {'GB/s':>7} {'peak':>6} | {'torch ms':>9} "
          f"{'x torch':>7} | {'TFLA ms':>8} {'x TFLA':>6}")  # fmt: skip
    for B, T, H, D in shapes:
        for backward in (False, True):
            x = mlstm_inputs(B, T, H, D, dtype, device, backward)
            dh = torch.randn(B, H, T, D, device=device, dtype=dtype) if backward else None

            def timed(fn, x=x, dh=dh, backward=backward):
                return one_pass(fn, x, dh if backward else None)

            ours = timed(lambda *a: mlstm_sequence_triton(*a, chunk_size=L))
            torch_form = timed(lambda *a: mlstm_sequence_chunkwise(*a, chunk_size=L))
            ms = bench(ours, args.dry_run)
            try:
                ms_torch = bench(torch_form, args.dry_run)
            except torch.OutOfMemoryError:
                ms_torch = float("nan")
            ms_tfla = float("nan")
            if tfla is not None:
                try:
                    ms_tfla = bench(timed(lambda *a: tfla(*a, chunk_size=L)), args.dry_run)
                except Exception as err:  # report, keep benchmarking the rest
                    print(f"  TFLA failed: {type(err).__name__}: {err}", file=sys.stderr)
            flops = mlstm_flops(B, T, H, D, D, L, backward) / (ms * 1e-3) / 1e12
            gbs = mlstm_bytes(B, T, H, D, D, L, e, backward) / (ms * 1e-3) / 1e9
            tensor_peak = None if peak is None else (peak[1] if dtype == torch.float32 else peak[0])
            hbm_peak = None if peak is None else peak[2] * 1e3
            print(
                f"{B:5d} {T:5d} {H:2d} {D:4d} | {'fwd+bwd' if backward else 'fwd':8} | "
                f"{ms:9.3f} {flops:8.2f} {fmt_rate(flops, tensor_peak):>6} {gbs:7.1f} "
                f"{fmt_rate(gbs, hbm_peak):>6} | {ms_torch:9.3f} {ms_torch / ms:7.2f} | "
                f"{ms_tfla:8.3f} {ms_tfla / ms:6.2f}"
            )


def sweep_fp32(args, device):
    """float32 chunkwise forward and forward+backward for each launch configuration of the
    exact-FP32 path (module constants IEEE_TILE, IEEE_WARPS), on the same inputs."""
    from xlstm_rl.kernels.mlstm import triton_chunkwise as tc

    shapes = [(2, 32, 1, 16)] if args.dry_run else [(256, 128, 4, 64), (1024, 128, 4, 64),
                                                     (8, 8192, 8, 128)]  # fmt: skip
    chosen = (tc.IEEE_TILE, tc.IEEE_WARPS)
    print(f"\nfloat32 chunkwise, ms fwd / fwd+bwd (the default is tile {chosen[0]}, "
          f"{chosen[1]} warps)")  # fmt: skip
    data = [(s, mlstm_inputs(*s, torch.float32, device, True)) for s in shapes]
    for tile in (64, 32, 16):
        for warps in (4, 8):
            tc.IEEE_TILE, tc.IEEE_WARPS = tile, warps
            cells = []
            for (B, T, H, D), x in data:
                dh = torch.randn(B, H, T, D, device=device)

                run = functools.partial(tc.mlstm_sequence_triton, chunk_size=args.chunk_size)
                fwd = torch.no_grad()(one_pass(run, x))
                ms = (bench(fwd, args.dry_run), bench(one_pass(run, x, dh), args.dry_run))
                cells.append(f"B={B} T={T} D={D}: {ms[0]:.3f} / {ms[1]:.3f}")
            print(f"tile {tile:2d}, {warps} warps | " + " | ".join(cells), flush=True)
    tc.IEEE_TILE, tc.IEEE_WARPS = chosen


def profile_small(args, device):
    """Where the time of a small fwd+bwd goes: GPU kernel time against wall time."""
    from torch.profiler import ProfilerActivity, profile

    from xlstm_rl.kernels.mlstm.triton_chunkwise import mlstm_sequence_triton

    B, T, H, D = (2, 32, 1, 16) if args.dry_run else (64, 128, 4, 32)
    x = mlstm_inputs(B, T, H, D, torch.bfloat16, device, True)
    dh = torch.randn(B, H, T, D, device=device, dtype=torch.bfloat16)

    fwd_bwd = one_pass(functools.partial(mlstm_sequence_triton, chunk_size=args.chunk_size), x, dh)
    fwd_bwd()
    reps = 2 if args.dry_run else 10
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(reps):
            fwd_bwd()
        if device == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / reps
    events = prof.key_averages()
    gpu_us = sum(e.self_device_time_total for e in events) / reps if device == "cuda" else 0.0
    print(f"\nbf16 fwd+bwd B={B} T={T} H={H} D={D}: wall {1e3 * wall:.3f} ms per call under "
          f"the profiler, GPU kernel time {gpu_us / 1e3:.3f} ms")  # fmt: skip
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def run_step(args, batches, dtype, device, peak, D=64, H=4):
    from xlstm_rl.kernels import empty_state, mlstm_step_reference
    from xlstm_rl.kernels.mlstm.triton_step import mlstm_step_triton

    e = torch.tensor([], dtype=dtype).element_size()
    print(f"\nmLSTM step ({dtype}, H={H}, Dk=Dv={D}), in place into the state (out=)")
    print(f"{'B':>5} | {'triton us':>9} {'GB/s':>7} {'peak':>6} | {'graph us':>8} | "
          f"{'torch us':>9} {'x torch':>7}")  # fmt: skip
    for B in batches:
        q, k, v, i, f = (x[:, :, 0] for x in mlstm_inputs(B, 1, H, D, dtype, device, False))
        state = empty_state(B, H, D, D, device)
        h = torch.empty(B, H, D, device=device, dtype=dtype)
        reset = torch.zeros(B, dtype=torch.bool, device=device)

        def step(q=q, k=k, v=v, i=i, f=f, state=state, h=h, reset=reset):
            mlstm_step_triton(q, k, v, i, f, state, reset=reset, out=(h, state))

        def step_ref(q=q, k=k, v=v, i=i, f=f, state=state, reset=reset):
            mlstm_step_reference(q, k, v, i, f, state, reset=reset)

        us = 1e3 * bench(step, args.dry_run)
        us_ref = 1e3 * bench(step_ref, args.dry_run)
        us_graph = float("nan")
        if device == "cuda" and not args.dry_run:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            us_graph = 1e3 * bench(graph.replay, args.dry_run)
        gbs = step_bytes(B, H, D, D, e) / (us * 1e-6) / 1e9
        hbm_peak = None if peak is None else peak[2] * 1e3
        print(f"{B:5d} | {us:9.1f} {gbs:7.1f} {fmt_rate(gbs, hbm_peak):>6} | {us_graph:8.1f} | "
              f"{us_ref:9.1f} {us_ref / us:7.2f}")  # fmt: skip


def run_slstm(args, shapes, dtype, device):
    from xlstm_rl.kernels import slstm_sequence_reference
    from xlstm_rl.kernels.slstm.triton_sequence import slstm_sequence_triton

    print(f"\nsLSTM sequence ({dtype}); the torch reference is a loop over T")
    print(f"{'B':>5} {'T':>5} {'H':>2} {'Dh':>4} | {'pass':8} | {'triton ms':>9} | "
          f"{'torch ms':>9} {'x torch':>7}")  # fmt: skip
    for B, T, H, Dh in shapes:
        for backward in (False, True):
            g = torch.randn(B, T, H, 4, Dh, device=device, dtype=dtype).requires_grad_(backward)
            R = (0.1 * torch.randn(H, Dh, 4, Dh, device=device)).requires_grad_(backward)

            def timed(fn, g=g, R=R, backward=backward):
                def call():
                    hs, _ = fn(g, R)
                    if backward:
                        hs.float().sum().backward()
                        g.grad = R.grad = None

                return call

            ms = bench(timed(slstm_sequence_triton), args.dry_run)
            ms_ref = bench(timed(slstm_sequence_reference), args.dry_run)
            print(f"{B:5d} {T:5d} {H:2d} {Dh:4d} | {'fwd+bwd' if backward else 'fwd':8} | "
                  f"{ms:9.3f} | {ms_ref:9.3f} {ms_ref / ms:7.2f}")  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    has_gpu = torch.cuda.is_available()
    if not has_gpu and not args.dry_run:
        print("no GPU present: nothing to benchmark (use --dry-run to exercise the script)")
        return 0
    if not has_gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    try:
        import triton  # noqa: F401
    except ImportError:
        print("triton is not installed: pip install xlstm-rl[triton]")
        return 0
    device = "cuda" if has_gpu else "cpu"
    dtype = getattr(torch, args.dtype)
    name = torch.cuda.get_device_name() if has_gpu else "CPU (Triton interpreter)"
    peak = peaks(name) if has_gpu else None
    print(f"device: {name}; peaks (TF32 TFLOP/s, FP32 TFLOP/s, HBM TB/s): {peak or 'n/a'}")
    if args.dry_run:
        print("dry run: tiny shapes, single calls; the numbers below mean nothing")
    if args.sweep_fp32:
        sweep_fp32(args, device)
        return 0
    if args.profile:
        profile_small(args, device)
        return 0
    rl = [(2, 32, 1, 16)] if args.dry_run else RL_SHAPES
    long = [] if args.dry_run else LONG_SHAPES
    run_mlstm(args, rl + long, dtype, device, peak)
    run_step(args, (1, 4) if args.dry_run else STEP_BATCHES, dtype, device, peak,
             D=16 if args.dry_run else 64)  # fmt: skip
    run_slstm(args, [(4, 8, 1, 16)] if args.dry_run else SLSTM_SHAPES, dtype, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
