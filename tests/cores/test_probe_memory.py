"""scripts/probe_memory.py: the supervised T-maze recall probe."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from xlstm_rl.envs.tmaze import TMazeEnv

SCRIPT = runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "probe_memory.py"))


def test_recall_batch_is_the_tmaze_observation_sequence():
    length = 5
    x, cue = SCRIPT["recall_batch"](8, length, torch.Generator().manual_seed(0))
    assert x.shape == (8, length + 1, 4) and cue.shape == (8,)
    for row in range(8):
        env = TMazeEnv(corridor_length=length)
        obs, _ = env.reset(seed=row)
        env._cue = int(cue[row])  # the env draws its own cue; replay this row's
        observations = [env._observation()]
        for _ in range(length):
            obs, *_ = env.step(0)
            observations.append(obs)
        np.testing.assert_array_equal(x[row].numpy(), np.stack(observations))


def test_core_specs_parse_options_as_yaml_and_reject_malformed_ones():
    parse = SCRIPT["parse_core"]
    assert parse("mlstm") == ("mlstm", {})
    assert parse("gru:{update_bias: 4, num_layers: 2}") == (
        "gru",
        {"update_bias": 4, "num_layers": 2},
    )
    assert parse("mlstm:{fgate_bias: [3, 9]}") == ("mlstm", {"fgate_bias": [3, 9]})
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        parse("gru:update_bias")


def test_bad_cores_are_usage_errors(capsys):
    for spec, message in (
        ("nope", "unknown core 'nope'"),
        ("lstm:{update_bias: 4}", "update_bias"),
    ):
        with pytest.raises(SystemExit):
            SCRIPT["main"](["--cores", "mlstm", spec, "--lengths", "2"])
        err = capsys.readouterr().err
        assert f"--cores {spec}: " in err and message in err


def test_the_policy_network_probe_learns_a_short_corridor_through_the_agents_policy(capsys):
    argv = ["--cores", "mlstm", "mlp", "--lengths", "3", "--seeds", "1", "--max-steps", "200"]
    assert SCRIPT["main"]([*argv, "--policy"]) == 0
    out = capsys.readouterr().out
    assert "through the policy network" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| m")}
    assert "| 3 | 1/1 |" in rows["mlstm"] and rows["mlstm"].split("|")[-3].strip() == "-"
    assert "| 3 | 0/1 | - | - |" in rows["mlp"]


def test_bad_numbers_are_usage_errors(capsys):
    for argv in (["--max-steps", "0"], ["--lengths", "10", "0"], ["--batch", "0"]):
        with pytest.raises(SystemExit):
            SCRIPT["main"](argv)
        assert "must be >= 1" in capsys.readouterr().err


def test_a_memory_core_solves_a_short_corridor_and_a_memoryless_one_cannot(capsys):
    argv = ["--cores", "mlstm", "mlp", "--lengths", "3", "--seeds", "1", "--max-steps", "200"]
    assert SCRIPT["main"]([*argv, "--progress"]) == 0
    captured = capsys.readouterr()
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in captured.out.splitlines()
        if line.startswith("| m")
    }
    assert [c.strip() for c in rows["mlstm"][3:4]] == ["1/1"]
    assert [c.strip() for c in rows["mlp"][3:6]] == ["0/1", "-", "-"]  # the cue is gone
    assert rows["mlp"][-3].strip() == "0.0e+00"  # so no gradient reaches it
    assert float(rows["mlstm"][-3]) > 1e-4
    # best held-out accuracy: the solved run reached the threshold, the memoryless one
    # guesses (128 held-out episodes, two cues: far from 0.99)
    assert float(rows["mlstm"][-2]) >= 0.99 and float(rows["mlp"][-2]) < 0.8
    # --progress: every held-out check on stderr, the mLP's twenty (every 10 steps)
    checks = [line for line in captured.err.splitlines() if "held-out accuracy" in line]
    assert sum(line.startswith("mlp corridor 3 seed 1: step ") for line in checks) == 20
    assert any(line.startswith("mlstm corridor 3 seed 1: step ") for line in checks)
