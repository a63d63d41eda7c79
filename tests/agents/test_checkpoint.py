"""Checkpoints: exact resume, safe loading, clear errors on damaged files."""

import dataclasses
import re

import pytest
import torch
import yaml

from tests.agents.conftest import interrupting_collect, tiny_config
from xlstm_rl.agents import checkpoint as ckpt
from xlstm_rl.agents import train
from xlstm_rl.agents.rollout import Collector


class Interrupted(Exception):
    pass


@pytest.mark.parametrize(
    "core, shared",
    [("gru", True), ("mlstm", True), ("gru", False)],
    ids=["gru", "mlstm", "gru-critic-core"],
)
def test_resume_continues_exactly_as_the_uninterrupted_run(tmp_path, monkeypatch, core, shared):
    # shared False: the policy's state nests the actor's and the critic's core states
    overrides = {"core.name": core, "policy.prev_action": True, "policy.shared_core": shared}
    config = tiny_config(tmp_path, **overrides)
    assert config.num_updates == 4 and config.checkpoint_every == 2
    full = train(dataclasses.replace(config, name="full"), progress=False)

    # the third update fails, after the checkpoint at update 2
    monkeypatch.setattr(Collector, "collect", interrupting_collect(3, Interrupted, []))
    with pytest.raises(Interrupted):
        train(dataclasses.replace(config, name="cut"), progress=False)
    monkeypatch.undo()
    saved = ckpt.load_checkpoint(tmp_path / "runs" / "cut" / "checkpoint.pt")
    assert saved["update"] == 2

    resumed = train(resume=tmp_path / "runs" / "cut" / "checkpoint.pt", progress=False)
    a, b = ckpt.load_checkpoint(full.checkpoint), ckpt.load_checkpoint(resumed.checkpoint)
    assert a["update"] == b["update"] == 4 and a["global_step"] == b["global_step"]
    assert any(key.startswith("critic_core.") for key in a["model"]) == (not shared)
    assert ("critic" in a["state"]) == (not shared)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert full.final_eval == resumed.final_eval
    assert full.recent_returns == resumed.recent_returns


def test_checkpoint_is_plain_data_written_atomically(tmp_path):
    config = tiny_config(tmp_path, total_steps=4 * 16 * 2, **{"ppo.adam_eps": 1e-8})
    result = train(config, progress=False)
    saved = torch.load(result.checkpoint, weights_only=True)  # no pickled objects inside
    assert saved["optimizer"]["param_groups"][0]["eps"] == 1e-8  # ppo.adam_eps reaches Adam
    leftovers = [p for p in result.run_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_damaged_checkpoints_give_clear_errors(tmp_path):
    config = tiny_config(tmp_path, total_steps=4 * 16 * 2)
    path = train(config, progress=False).checkpoint
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated, corrupt"):
        ckpt.load_checkpoint(truncated)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match="garbage.pt") as error:
        ckpt.load_checkpoint(garbage)
    # torch's own message advises weights_only=False (running the file's code): not ours
    assert "weights_only` set to `False`" not in str(error.value)
    assert "plain data" in str(error.value)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="empty or cut short"):
        ckpt.load_checkpoint(empty)

    text = tmp_path / "notes.pt"  # torch's unpickler reads 'h' as an opcode: "KeyError: 104"
    text.write_text("hello world\n")
    with pytest.raises(ckpt.CheckpointError, match=r"not a file torch.save wrote .*b'hello"):
        ckpt.load_checkpoint(text)

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ckpt.CheckpointError, match=r"not an xlstm-rl checkpoint.*\['weights'\]"):
        ckpt.load_checkpoint(other)
    torch.save([1, 2], other)
    with pytest.raises(ckpt.CheckpointError, match="not an xlstm-rl checkpoint: it holds a list"):
        ckpt.load_checkpoint(other)

    with pytest.raises(FileNotFoundError):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


class Payload:
    """An arbitrary object: safe loading must refuse to unpickle it."""


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "x": Payload()}, path)
    with pytest.raises(ckpt.CheckpointError, match="Payload") as error:
        ckpt.load_checkpoint(path)
    assert "weights_only` set to `False`" not in str(error.value)
    assert "add_safe_globals" not in str(error.value)


def _spoil(payload, how):
    if how in ("model", "config", "optimizer"):
        del payload[how]
    elif how == "core name":
        payload["config"]["core"]["name"] = "bogus"
    elif how == "width":  # the config builds another network than the weights are for
        payload["config"]["core"]["hidden_size"] += 8
    elif how == "weight":
        name = next(iter(payload["model"]))
        payload["model"][name] = torch.zeros(3, 1)


@pytest.mark.parametrize(
    "how, evaluate_says, resume_says",
    [
        ("model", "lacks its model", "lacks its model"),
        ("config", "lacks its config", "lacks its config"),
        ("core name", "its config cannot be used here: core.name", "core.name must be one of"),
        ("width", "its model state does not fit", "its model state does not fit"),
        ("weight", "its model state does not fit", "its model state does not fit"),
        ("optimizer", None, "lacks part of a training run's state (KeyError: 'optimizer')"),
    ],
)
def test_a_checkpoint_with_damaged_contents_names_the_file_and_the_fault(
    tmp_path, how, evaluate_says, resume_says
):
    from xlstm_rl.agents.evaluation import policy_from_checkpoint
    from xlstm_rl.cli import main

    path = train(tiny_config(tmp_path, total_steps=4 * 16 * 2), progress=False).checkpoint
    payload = ckpt.load_checkpoint(path)
    _spoil(payload, how)
    damaged = ckpt.save_checkpoint(tmp_path / "damaged" / "checkpoint.pt", payload)
    if evaluate_says is None:
        policy_from_checkpoint(damaged)  # evaluation needs no optimiser
    else:
        with pytest.raises(ckpt.CheckpointError, match=evaluate_says) as error:
            policy_from_checkpoint(damaged)
        assert str(damaged) in str(error.value)
    with pytest.raises(ckpt.CheckpointError, match=re.escape(resume_says)) as error:
        train(resume=damaged, overrides={"total_steps": 4 * 16 * 3}, progress=False)
    assert str(damaged) in str(error.value)
    # the command line prints the one line and exits 2, no traceback
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", str(damaged), "--quiet", "--total_steps", "192"])
    assert exit_.value.code == 2


def test_a_non_finite_loss_names_its_update_and_the_checkpoint_before_it(
    tmp_path, monkeypatch, capsys
):
    from xlstm_rl.agents.training import TrainingDiverged
    from xlstm_rl.cli import main

    collect, calls = Collector.collect, []

    def nan_rewards_at_update_3(self):
        rollout, state, episodes = collect(self)
        calls.append(1)
        if len(calls) == 3:
            rollout["reward"][0, 5] = float("nan")
        return rollout, state, episodes

    monkeypatch.setattr(Collector, "collect", nan_rewards_at_update_3)
    config = tiny_config(tmp_path)  # 4 updates of 64 env steps, a checkpoint every 2
    with pytest.raises(TrainingDiverged) as error:
        train(config, progress=False)
    checkpoint = tmp_path / "runs" / "test" / "checkpoint.pt"
    assert (error.value.update, error.value.global_step) == (3, 128)
    assert error.value.checkpoint == checkpoint and ckpt.load_checkpoint(checkpoint)["update"] == 2
    assert str(error.value).startswith("at update 3 (after global step 128): non-finite loss nan")
    # the command line: one line naming the update and the checkpoint, exit status 1
    calls.clear()
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--quiet", "--name", "cli"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config.to_dict()))
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("xlstm-rl train: error: training stopped at update 3 (after global step")
    assert str(tmp_path / "runs" / "cli" / "checkpoint.pt") in err and "Traceback" not in err


def test_training_time_is_recorded_and_summed_over_resumes(tmp_path, monkeypatch, capsys):
    from xlstm_rl.cli import main

    config = tiny_config(tmp_path)  # 4 updates, a checkpoint every 2
    monkeypatch.setattr(Collector, "collect", interrupting_collect(3, Interrupted, []))
    with pytest.raises(Interrupted):
        train(config, progress=False)
    monkeypatch.undo()
    path = tmp_path / "runs" / "test" / "checkpoint.pt"
    saved = ckpt.load_checkpoint(path)
    assert saved["time"]["wall_s"] > 0 and saved["time"]["cpu_s"] > 0

    # what earlier sessions took: the resumed run goes on from the checkpoint's totals
    saved["time"] = {"wall_s": 1000.0, "cpu_s": 500.0}
    ckpt.save_checkpoint(path, {k: v for k, v in saved.items() if k not in ("format", "version")})
    resumed = train(resume=path, progress=False)
    this_session = ckpt.load_checkpoint(path)["time"]
    assert 1000 < this_session["wall_s"] <= resumed.train_time_s < 1000 + 300
    assert 500 < this_session["cpu_s"] and 500 < resumed.train_cpu_s < 500 + 300
    assert resumed.train_cpu_s >= this_session["cpu_s"]

    # a finished run resumed adds (almost) nothing; the command line prints the totals
    assert main(["train", "--resume", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    found = re.search(r"training time: ([\d,.]+) s wall clock, ([\d,.]+) s CPU", out)
    wall, cpu = (float(x.replace(",", "")) for x in found.groups())
    # (from the checkpoint's totals, taken at its last update: printed to 0.1 s)
    assert this_session["wall_s"] - 0.1 <= wall < this_session["wall_s"] + 5
    assert this_session["cpu_s"] - 0.1 <= cpu < this_session["cpu_s"] + 5

    # a checkpoint from before the record: the totals are unknown, not this session's alone
    old = ckpt.load_checkpoint(path)
    del old["time"]
    old_path = tmp_path / "old" / "run" / "checkpoint.pt"
    ckpt.save_checkpoint(old_path, {k: v for k, v in old.items() if k not in ("format", "version")})
    again = train(resume=old_path, overrides={"total_steps": 6 * 16 * 4}, progress=False)
    assert again.global_step == 6 * 16 * 4
    assert again.train_time_s is None and again.train_cpu_s is None
    assert ckpt.load_checkpoint(old_path)["time"] is None
