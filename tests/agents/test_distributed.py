"""Data-parallel PPO on 2 CPU ranks (gloo): identical parameters, global step counts,
exact per-rank resume, and the torchrun entry point."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn.utils import parameters_to_vector

from tests.agents.conftest import interrupting_collect, tiny_config
from xlstm_rl.agents import checkpoint as ckpt
from xlstm_rl.agents import train, training
from xlstm_rl.agents.rollout import Collector

WORLD = 2
TIMEOUT_S = 120  # a rank that fails or hangs ends the test instead of stalling CI
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch built without distributed")


class Interrupted(Exception):
    pass


def distributed_config(tmp_path):
    """tiny_config over 2 ranks: 4 updates of 2 x 64 steps, BPTT chunks, target-KL check."""
    overrides = {"policy.prev_action": True, "ppo.bptt_len": 6, "ppo.target_kl": 1.0}
    config = tiny_config(tmp_path, **overrides)
    return dataclasses.replace(config, total_steps=WORLD * config.steps_per_update * 4)


def _run_ranks(tmp_path: Path) -> None:
    """Each rank: a full run, a run cut after its update-2 checkpoint, and its resumption."""
    rank = dist.get_rank()
    config = distributed_config(tmp_path)
    params, update = [], training.update

    def recording_update(model, *args):
        metrics = update(model, *args)
        params.append(parameters_to_vector(model.parameters()).detach().clone())
        return metrics

    training.update = recording_update
    full = train(dataclasses.replace(config, name="full"), progress=False)
    full_params = list(params)

    collect = Collector.collect
    Collector.collect = interrupting_collect(3, Interrupted, [])
    try:
        train(dataclasses.replace(config, name="cut"), progress=False)
    except Interrupted:
        pass
    Collector.collect = collect
    params.clear()
    resumed = train(resume=tmp_path / "runs" / "cut" / "checkpoint.pt", progress=False)
    torch.save(
        {
            "params": torch.stack(full_params),
            "resumed_params": torch.stack(params),
            "global_step": (full.global_step, resumed.global_step),
            "recent_returns": (full.recent_returns, resumed.recent_returns),
            "final_eval": (full.final_eval, resumed.final_eval),
        },
        tmp_path / f"rank{rank}.pt",
    )


def _worker(rank: int, tmp_path: Path) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'rendezvous'}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.set_num_threads(1)
        _run_ranks(tmp_path)
    finally:
        dist.destroy_process_group()


def spawn_ranks(tmp_path: Path) -> None:
    context = mp.spawn(_worker, args=(tmp_path,), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):  # raises if a rank failed, after ending the others
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"ranks still running after {TIMEOUT_S} s")


def test_two_ranks_stay_identical_and_resume_exactly(tmp_path):
    spawn_ranks(tmp_path)
    config = distributed_config(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # The same parameters on both ranks after every update, and they did move.
    assert ranks[0]["params"].shape[0] == 4
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert not torch.equal(ranks[0]["params"][0], ranks[0]["params"][-1])

    # Step counts are global: the sum over ranks of each rank's env steps.
    global_steps = [WORLD * config.steps_per_update * k for k in (1, 2, 3, 4)]
    for r in ranks:
        assert r["global_step"] == (global_steps[-1], global_steps[-1])
    run_dir = tmp_path / "runs" / "full"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.step for e in events.Scalars("charts/SPS")] == global_steps
    assert [e.step for e in events.Scalars("losses/approx_kl")] == global_steps

    saved = ckpt.load_checkpoint(run_dir / "checkpoint.pt")
    assert saved["world_size"] == WORLD and len(saved["other_ranks"]) == WORLD - 1
    assert saved["global_step"] == global_steps[-1]
    other = saved["other_ranks"][0]
    assert not torch.equal(saved["rng"]["torch"], other["rng"]["torch"])  # own streams
    own_envs, other_envs = saved["envs"]["episodes"], other["envs"]["episodes"]
    assert [e["rng"] for e in own_envs] != [e["rng"] for e in other_envs]  # own env seeds
    assert ranks[0]["final_eval"][0] and ranks[1]["final_eval"][0] == {}  # rank 0 evaluates
    assert ranks[0]["recent_returns"][0] == ranks[1]["recent_returns"][0]  # episodes gathered

    # Resume: each rank carries on exactly where it stopped.
    for r in ranks:
        assert torch.equal(r["resumed_params"], r["params"][2:])
        assert r["recent_returns"][0] == r["recent_returns"][1]
    assert ranks[0]["final_eval"][0] == ranks[0]["final_eval"][1]
    resumed = ckpt.load_checkpoint(tmp_path / "runs" / "cut" / "checkpoint.pt")
    for key in saved["model"]:
        assert torch.equal(saved["model"][key], resumed["model"][key]), key
    assert torch.equal(other["rng"]["torch"], resumed["other_ranks"][0]["rng"]["torch"])


def test_resume_needs_the_same_number_of_processes(tmp_path):
    config = tiny_config(tmp_path, total_steps=4 * 16)
    path = train(config, progress=False).checkpoint
    payload = ckpt.load_checkpoint(path)
    payload["world_size"] = 2
    ckpt.save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("format", "version")})
    with pytest.raises(ValueError, match="2 process"):
        train(resume=path, progress=False)


def test_torchrun_runs_the_cli_on_two_ranks(tmp_path):
    config = tiny_config(tmp_path, total_steps=WORLD * 4 * 16 * 2, eval_episodes=0)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
        *("--nproc_per_node", str(WORLD), "scripts/train.py"),
        *("--config", str(config_path), "--quiet"),
    ]
    # prepend: packages reached through an existing PYTHONPATH must stay importable
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so a timeout ends torchrun's workers too
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun still running after {TIMEOUT_S} s:\n{output}")
    assert process.returncode == 0, output
    assert output.count("checkpoint: ") == 1, output  # rank 0 reports
    saved = ckpt.load_checkpoint(tmp_path / "runs" / "test" / "checkpoint.pt")
    assert saved["world_size"] == WORLD and saved["update"] == 2
    assert saved["global_step"] == WORLD * config.steps_per_update * 2
