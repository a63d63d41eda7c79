"""scripts/minigrid_cue_probe.py: a MiniGrid Memory agent's success by start column."""

from __future__ import annotations

import runpy
from collections import defaultdict
from pathlib import Path

import gymnasium as gym
import pytest

from tests.agents.conftest import tiny_config
from xlstm_rl.agents import train
from xlstm_rl.agents.evaluation import EVAL_SEED_OFFSET
from xlstm_rl.config import EnvConfig

SCRIPT = runpy.run_path(str(Path(__file__).parents[2] / "scripts" / "minigrid_cue_probe.py"))


class _Witness(gym.Wrapper):
    """Records, per reset seed, where the agent started; and decides how each episode
    ends: success exactly when it started in an odd column, so that a probe which paired
    starts and outcomes of different episodes would show mixed rates."""

    def __init__(self, env, records):
        super().__init__(env)
        self.records, self.seed = records, None

    def reset(self, *, seed=None, options=None):
        out = super().reset(seed=seed, options=options)
        self.seed = seed
        self.records[seed]["column"] = int(self.unwrapped.agent_pos[0])
        return out

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if terminated or truncated:
            episode = self.records[self.seed]
            episode["success"] = info["success"] = episode["column"] % 2 == 1
        return obs, reward, terminated, truncated, info


def test_probe_splits_the_held_out_episodes_by_start(tmp_path, capsys, monkeypatch):
    pytest.importorskip("minigrid")
    overrides = {
        "env.id": "MiniGrid-MemoryS7-v0",
        "env.kwargs": {"agent_view_size": 3, "max_steps": 12},
        "env.actions": [0, 1, 2],
    }
    result = train(tiny_config(tmp_path, **overrides), progress=False)
    # every env the probe makes reports what really happened in each seeded episode
    records = defaultdict(dict)
    make = EnvConfig.make
    monkeypatch.setattr(EnvConfig, "make", lambda self: _Witness(make(self), records))
    assert SCRIPT["main"]([str(result.run_dir), "--episodes", "24"]) == 0
    out = capsys.readouterr().out
    rows = [
        line.split("|")[1:-1]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]
    # the cue is in the first view exactly when the episode starts in the first column
    assert {r[0].strip() for r in rows if r[1].strip() == "yes"} == {"1"}
    assert "cue in the first view: success" in out and "all: success" in out

    # the table is the held-out episodes' own starts and outcomes, grouped by column
    first_seed = tiny_config(tmp_path).seed + EVAL_SEED_OFFSET
    by_column = defaultdict(list)
    for j in range(24):
        episode = records[first_seed + j]
        by_column[episode["column"]].append(episode["success"])
    expected = {
        (str(column), str(len(s)), f"{sum(s) / len(s):.2f}") for column, s in by_column.items()
    }
    assert {(r[0].strip(), r[2].strip(), r[3].strip()) for r in rows} == expected


def test_probe_refuses_other_envs_and_bad_counts(tmp_path, capsys):
    result = train(tiny_config(tmp_path, total_steps=4 * 16), progress=False)
    with pytest.raises(SystemExit):
        SCRIPT["main"]([str(result.run_dir)])
    assert "xlstm_rl/TMaze-v0 is not a MiniGrid Memory env" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        SCRIPT["main"]([str(result.run_dir), "--episodes", "0"])
    assert "--episodes must be >= 1" in capsys.readouterr().err
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        SCRIPT["main"]([str(damaged)])
    assert "damaged.pt" in capsys.readouterr().err
