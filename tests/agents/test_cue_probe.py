"""scripts/minigrid_cue_probe.py: a MiniGrid Memory agent's success by start column."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.agents.conftest import tiny_config
from xlstm_rl.agents import train

SCRIPT = runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "minigrid_cue_probe.py"))


def test_probe_splits_the_held_out_episodes_by_start(tmp_path, capsys):
    pytest.importorskip("minigrid")
    overrides = {
        "env.id": "MiniGrid-MemoryS7-v0",
        "env.kwargs": {"agent_view_size": 3, "max_steps": 12},
        "env.actions": [0, 1, 2],
    }
    result = train(tiny_config(tmp_path, **overrides), progress=False)
    assert SCRIPT["main"]([str(result.run_dir), "--episodes", "24"]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split("|")[1:-1]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]
    assert sum(int(r[2]) for r in rows) == 24
    # the cue is in the first view exactly when the episode starts in the first column
    assert {r[0].strip() for r in rows if r[1].strip() == "yes"} == {"1"}
    assert "cue in the first view: success" in out and "all: success" in out

    # the same episodes, one by one, as evaluate_policy's per_episode lists
    policy, config = SCRIPT["policy_from_checkpoint"](result.checkpoint)
    evaluation = SCRIPT["evaluate_policy"](policy, config, 24, per_episode=True)
    successes = evaluation["per_episode"]["successes"]
    assert len(successes) == 24 and sum(successes) / 24 == evaluation["success_rate"]


def test_probe_refuses_other_envs_and_bad_counts(tmp_path, capsys):
    result = train(tiny_config(tmp_path, total_steps=4 * 16), progress=False)
    with pytest.raises(SystemExit):
        SCRIPT["main"]([str(result.run_dir)])
    assert "xlstm_rl/TMaze-v0 is not a MiniGrid Memory env" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        SCRIPT["main"]([str(result.run_dir), "--episodes", "0"])
    assert "--episodes must be >= 1" in capsys.readouterr().err
