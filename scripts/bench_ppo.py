"""End-to-end PPO throughput on POPGym's RepeatPreviousEasy, for each core on this CPU.

Every run has the same sizes: 8 envs, 128-step rollouts, hidden size 128, 4 epochs
of 4 minibatches, prev-action input, a constant learning rate, one torch thread
(``--threads``). Env steps/s
is steps over the wall time of the whole ``train`` call (env creation, collection,
updates; no evaluation). The return is the mean of the last 100 training episodes.

When ``sb3-contrib`` is installed, its RecurrentPPO (MlpLstmPolicy, its default
architecture: separate actor and critic LSTMs, 64-64 heads) runs on the same env
with the same sizes, step budget and hyperparameters (n_envs 8, n_steps 128, batch
256 = 4 minibatches, n_epochs 4, LSTM hidden 128, lr, entropy coefficient 0.01),
and the ratio of each of our agents' steps/s to its steps/s is printed.
The load average before and after is printed too: other jobs on the machine move
steps/s a lot, so compare ratios from one run.

``--compile on`` trains with ``compile: true`` (torch.compile of the acting step and
the loss), ``--compile both`` runs each core both ways. The compile time is part of
the wall time: torch caches compiled code on disk, so a second run of the script
compiles much faster than the first (``--cold-cache`` points torch at an empty cache
to time the first-ever run).

    python scripts/bench_ppo.py [--steps 32768] [--cores mlstm gru ...] [--compile both]
                                [--core-options JSON] [--seed 1] [--json out.json]
                                [--device cuda] [--num-envs 64]

``--device cuda`` trains our agents on a GPU (the envs stay on the CPU; the cores run
the Triton kernels); ``--num-envs`` changes our agents' env count (minibatches stay 4).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from xlstm_rl.agents import train

ENV_ID = "popgym-RepeatPreviousEasy-v0"
NUM_ENVS, ROLLOUT_LEN, HIDDEN, EPOCHS, MINIBATCHES, LR, ENT_COEF = 8, 128, 128, 4, 4, 5e-4, 0.01
CORES = ["mlstm", "slstm", "xlstm", "lstm", "gru", "mlp"]


def ours(
    core: str,
    steps: int,
    threads: int,
    log_dir: str,
    compile: bool = False,
    options: dict | None = None,
    seed: int = 1,
    device: str = "cpu",
    num_envs: int = NUM_ENVS,
) -> dict:
    config = {
        "compile": compile,
        "seed": seed,
        "device": device,
        "env": {"id": ENV_ID, "num_envs": num_envs},
        "core": {"name": core, "hidden_size": HIDDEN, "options": options or {}},
        "policy": {"prev_action": True, "encoder_size": HIDDEN},
        "ppo": {
            "rollout_len": ROLLOUT_LEN,
            "epochs": EPOCHS,
            "num_minibatches": MINIBATCHES,
            "lr": LR,
            "anneal_lr": False,  # sb3 keeps its learning rate constant
            "clip_vloss": False,  # sb3's default clip_range_vf=None
            "ent_coef": ENT_COEF,
        },
        "total_steps": steps,
        "eval_episodes": 0,
        "checkpoint_every": 0,
        "torch_threads": threads,
        "log_dir": log_dir,
        "name": f"bench-{core}-{'compiled' if compile else 'eager'}",
    }
    start = time.perf_counter()
    result = train(config, progress=False)
    seconds = time.perf_counter() - start
    return {
        "agent": f"xlstm-rl PPO {core}"
        + (" +compile" if compile else "")
        + ("" if device == "cpu" else f" {device}")
        + ("" if num_envs == NUM_ENVS else f" {num_envs} envs"),
        "steps": result.global_step,
        "seconds": seconds,
        "sps": result.global_step / seconds,
        "return": float(np.mean(result.recent_returns)),
    }


def sb3_recurrent_ppo(steps: int, threads: int, seed: int = 1) -> dict | None:
    try:
        from sb3_contrib import RecurrentPPO
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv
    except ImportError:
        return None
    from xlstm_rl.envs import make_env

    torch.set_num_threads(threads)
    envs = DummyVecEnv([lambda: Monitor(make_env(ENV_ID)) for _ in range(NUM_ENVS)])
    envs.seed(seed)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        envs,
        n_steps=ROLLOUT_LEN,
        batch_size=NUM_ENVS * ROLLOUT_LEN // MINIBATCHES,
        n_epochs=EPOCHS,
        learning_rate=LR,
        ent_coef=ENT_COEF,
        policy_kwargs={"lstm_hidden_size": HIDDEN},
        device="cpu",
        seed=seed,
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    returns = [info["r"] for info in model.ep_info_buffer]
    return {
        "agent": "sb3-contrib RecurrentPPO (LSTM)",
        "steps": int(model.num_timesteps),
        "seconds": seconds,
        "sps": model.num_timesteps / seconds,
        "return": float(np.mean(returns)) if returns else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=32 * NUM_ENVS * ROLLOUT_LEN)
    parser.add_argument("--cores", nargs="+", default=CORES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", choices=["off", "on", "both"], default="off")
    parser.add_argument("--cold-cache", action="store_true", help="compile into an empty cache")
    parser.add_argument(
        "--core-options",
        type=json.loads,
        default={},
        help='core options for our agents, as JSON: \'{"igate_bias": -6, "fgate_bias": [1, 4]}\'',
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every run, RecurrentPPO's too")
    parser.add_argument("--device", default="cpu", help="our agents' device (cpu, cuda)")
    parser.add_argument(
        "--num-envs",
        type=int,
        default=NUM_ENVS,
        help="our agents' envs, a multiple of 4 (RecurrentPPO keeps 8)",
    )
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    if args.num_envs < 4 or args.num_envs % 4:
        parser.error(f"--num-envs must be a multiple of 4 (the 4 minibatches), got {args.num_envs}")
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]

    rows = []
    _print_load("before")  # other jobs on the machine move steps/s a lot: say how busy it was
    print(f"{'agent':43s} {'steps':>8s} {'seconds':>8s} {'steps/s':>8s} {'return':>7s}")
    with tempfile.TemporaryDirectory() as log_dir:
        if args.cold_cache:  # read before the first compile
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(log_dir, "inductor")
        for core in args.cores:
            for compile in modes:
                run = (args.steps, args.threads, log_dir, compile, args.core_options, args.seed)
                rows.append(ours(core, *run, device=args.device, num_envs=args.num_envs))
                _print(rows[-1])
    baseline = sb3_recurrent_ppo(args.steps, args.threads, args.seed)
    if baseline is None:
        print("sb3-contrib is not installed: no RecurrentPPO baseline (pip install sb3-contrib)")
    else:
        rows.append(baseline)
        _print(baseline)
        for row in rows[:-1]:
            print(f"{row['agent']} / RecurrentPPO steps/s: {row['sps'] / baseline['sps']:.2f}x")
    _print_load("after")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _print_load(when: str) -> None:
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average {when} (1, 5, 15 min): {load} on {os.cpu_count()} CPUs", flush=True)


def _print(row: dict) -> None:
    print(
        f"{row['agent']:43s} {row['steps']:8d} {row['seconds']:8.1f} {row['sps']:8.0f} "
        f"{row['return']:7.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
