"""Configs: YAML over defaults, CLI overrides, and clear errors for bad keys and values."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from tests.agents.conftest import interrupting_collect, tiny_config
from xlstm_rl.agents import train
from xlstm_rl.agents.checkpoint import load_checkpoint
from xlstm_rl.agents.policy import Policy
from xlstm_rl.agents.rollout import Collector
from xlstm_rl.cli import main
from xlstm_rl.config import ConfigError, TrainConfig, load_config, parse_overrides

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_defaults_and_yaml_and_overrides(tmp_path):
    assert load_config() == TrainConfig()
    path = tmp_path / "run.yaml"
    path.write_text("algo: a2c\nenv:\n  id: popgym-RepeatFirstEasy-v0\nppo:\n  lr: 1.0e-3\n")
    overrides = parse_overrides(
        [
            "--ppo.lr",
            "3e-4",
            "--seed=7",
            "--env.kwargs.corridor_length",
            "20",
            "--ppo.target_kl",
            "none",
            "--ppo.clip_vloss",
            "false",
        ]
    )
    config = load_config(path, overrides)
    assert config.algo == "a2c" and config.env.id == "popgym-RepeatFirstEasy-v0"
    assert config.ppo.lr == 3e-4 and config.seed == 7 and config.ppo.target_kl is None
    assert config.env.kwargs == {"corridor_length": 20} and config.ppo.clip_vloss is False
    assert load_config({"total_steps": 1e6}).total_steps == 1_000_000  # YAML's 1e6 is a float
    # integer strings are read exactly (a float would round past 2**53), "1e6" still works
    big = load_config({}, {"total_steps": "12345678901234567"}).total_steps
    assert big == 12345678901234567
    assert load_config({}, {"total_steps": "2_048_000"}).total_steps == 2_048_000
    assert load_config({}, {"total_steps": "1e6"}).total_steps == 1_000_000
    # a bool reads 0 and 1 as YAML ints as it reads "0" and "1" from the command line
    assert load_config({"compile": 1}).compile is True
    assert load_config({"ppo": {"clip_vloss": 0}}).ppo.clip_vloss is False
    # a list from the command line is YAML, like a dict
    assert load_config({}, {"env.actions": "[0, 1, 2]"}).env.actions == [0, 1, 2]
    assert load_config(config) == config


@pytest.mark.parametrize(
    "data, message",
    [
        ({"learning_rate": 1}, r"unknown config key 'learning_rate'.*valid keys.*total_steps"),
        ({"ppo": {"lrr": 1}}, r"unknown config key 'ppo.lrr'.*valid keys in ppo.*\blr\b"),
        ({"env": {"idd": "x"}}, r"'env.idd'.*num_envs"),
        ({"total_steps": "many"}, r"total_steps must be int, got 'many'"),
        ({"ppo": {"lr": [1]}}, r"ppo.lr must be float"),
        ({"ppo": {"gamma": 1.5}}, r"ppo.gamma must be in \[0, 1\]"),
        ({"ppo": {"adam_eps": 0.0}}, r"ppo.adam_eps must be > 0, got 0.0"),
        ({"ppo": {"clip_vloss": "maybe"}}, r"ppo.clip_vloss must be bool"),
        ({"ppo": {"clip_vloss": 2}}, r"ppo.clip_vloss must be bool, got 2"),
        ({"total_steps": "2.5"}, r"total_steps must be int, got .2.5."),
        ({"env": {"num_envs": 0}}, r"env.num_envs must be >= 1"),
        ({"env": {"num_envs": 6}}, r"num_envs \(6\) must be divisible by ppo.num_minibatches"),
        ({"core": {"name": "rnn9"}}, r"core.name must be one of .*mlstm"),
        ({"algo": "dqn"}, r"algo must be one of \('ppo', 'a2c'\)"),
        ({"env": "cartpole"}, r"env must be a mapping"),
        ({"seed": None}, r"seed cannot be None"),
        ({"env": {"actions": "left"}}, r"env.actions must be list or None, got 'left'"),
        (
            {"env": {"num_envs": 2}, "ppo": {"num_minibatches": 2, "rollout_len": 1}},
            r"norm_adv needs at least 2 steps per minibatch.*got 1",
        ),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_unknown_env_id_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown env id 'xlstm_rl/TMaz-v0'.*TMaze-v0"):
        train(tiny_config(tmp_path, **{"env.id": "xlstm_rl/TMaz-v0"}), progress=False)


def test_bad_env_actions_are_a_clear_error(tmp_path):
    # checked against the env's own action space (the active maze's Discrete(3))
    with pytest.raises(ValueError, match=r"env.actions must be distinct actions of Discrete\(3\)"):
        train(tiny_config(tmp_path, **{"env.actions": [0, 3]}), progress=False)


def test_bad_core_option_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \[.num_heads.\] for core .gru."):
        train(tiny_config(tmp_path, **{"core.options": {"num_heads": 2}}), progress=False)


def test_cli_errors_exit_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(CONFIGS[0]), "--ppo.lrr", "1"])
    assert exit_info.value.code == 2
    assert "unknown config key 'ppo.lrr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert "config file not found" in capsys.readouterr().err


def test_cli_ctrl_c_names_the_checkpoint_to_resume_from(tmp_path, capsys, monkeypatch):
    config = tiny_config(tmp_path, checkpoint_every=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(config.to_dict()))
    calls = []  # Ctrl-C in the second update
    monkeypatch.setattr(Collector, "collect", interrupting_collect(2, KeyboardInterrupt, calls))
    checkpoint = tmp_path / "runs" / "test" / "checkpoint.pt"
    for calls_before, expected in (
        ([1], "no checkpoint was written yet"),  # Ctrl-C in the first update
        ([], f"resume with: xlstm-rl train --resume {checkpoint}"),  # after update 1's
    ):
        calls[:] = calls_before
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--config", str(path), "--quiet"])
        assert exit_info.value.code == 130
        err = capsys.readouterr().err
        assert f"interrupted; {expected}" in err and "Traceback" not in err
    assert load_checkpoint(checkpoint)["update"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(CONFIGS[0]), "--device", "cuda", "--log_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "device 'cuda' asked for, but CUDA is not available" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load_and_build(path):
    # loading checks the keys; building the policy checks the core options too
    config = load_config(path)
    env = config.env.make()
    try:
        Policy(env.observation_space, env.action_space, config.core, config.policy)
    finally:
        env.close()


def test_cli_train_then_evaluate(tmp_path, capsys):
    config = tiny_config(tmp_path, total_steps=4 * 16 * 2)
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    assert main(["train", "--config", str(path), "--quiet", "--name", "cli"]) == 0
    checkpoint = tmp_path / "runs" / "cli" / "checkpoint.pt"
    assert checkpoint.is_file() and "success rate" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(checkpoint), "--episodes", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["episodes"] == 5 and {"return_mean", "return_std", "success_rate"} <= set(result)
    assert result["first_seed"] >= 1_000_000  # held out from the training seeds
    assert result["cut"] == 0
    # the corridor takes 4 steps at least: a cap of 2 cuts every episode, and says so
    capsys.readouterr()
    with pytest.warns(UserWarning, match="5 of 5 evaluation episodes"):
        assert (
            main(["evaluate", str(checkpoint), "--episodes", "5", "--max-episode-steps", "2"]) == 0
        )
    assert "mean length 2.0, 5 cut at the step cap" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", str(checkpoint), "--max-episode-steps", "-1"])
    assert "must be 'auto' or an int >= 0 (0: no cap), got '-1'" in capsys.readouterr().err

    # Resuming a finished run with a larger budget trains on from where it stopped.
    assert main(["train", "--resume", str(checkpoint), "--quiet", "--total_steps", "192"]) == 0
    assert load_checkpoint(checkpoint)["update"] == 3


def test_a_resumed_run_goes_on_in_its_checkpoints_folder(tmp_path, monkeypatch):
    # the stored log_dir is relative to where the first run started; resuming from
    # elsewhere must not start a second folder beside the command
    (tmp_path / "first").mkdir(), (tmp_path / "elsewhere").mkdir()
    config = tiny_config(tmp_path, log_dir="runs", total_steps=4 * 16 * 2)
    monkeypatch.chdir(tmp_path / "first")
    train(config, progress=False)
    checkpoint = tmp_path / "first" / "runs" / "test" / "checkpoint.pt"
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = train(
        resume=Path("..") / "first" / "runs" / "test" / "checkpoint.pt",
        overrides={"total_steps": 4 * 16 * 3},
        progress=False,
    )
    assert result.checkpoint.resolve() == checkpoint.resolve()
    assert load_checkpoint(checkpoint)["update"] == 3
    assert list((tmp_path / "elsewhere").iterdir()) == []
    # log_dir or name given: a new run folder, started from the checkpoint
    forked = train(
        resume=checkpoint, overrides={"name": "fork", "total_steps": 4 * 16 * 4}, progress=False
    )
    assert forked.run_dir.resolve() == (tmp_path / "first" / "runs" / "fork").resolve()
    assert load_checkpoint(checkpoint)["update"] == 3


@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"core.hidden_size": 32}, "core.hidden_size (16 -> 32)"),
        ({"core.name": "lstm"}, "core.name ('gru' -> 'lstm')"),
        ({"env.kwargs.corridor_length": 5}, "env.kwargs.corridor_length (3 -> 5)"),
        ({"seed": 5}, "seed (1 -> 5)"),
        ({"policy.head_layers": 1}, "policy.head_layers (2 -> 1)"),
    ],
)
def test_resume_refuses_to_change_what_the_checkpoint_was_built_from(tmp_path, overrides, named):
    checkpoint = train(tiny_config(tmp_path, total_steps=4 * 16 * 2), progress=False).checkpoint
    with pytest.raises(ValueError, match="cannot change") as error:
        train(resume=checkpoint, overrides=overrides, progress=False)
    assert named in str(error.value) and "start a new run" in str(error.value)
    # the same value again is no change
    same = {"core.hidden_size": 16, "total_steps": 4 * 16 * 3}
    assert train(resume=checkpoint, overrides=same, progress=False).updates == 3


def test_config_files_that_are_not_yaml_mappings_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("ppo:\n  lr: [1e-3\n")
    with pytest.raises(
        ConfigError, match=r"(?s)broken.yaml is not valid YAML.*broken.yaml\", line 2"
    ):
        load_config(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- algo: ppo\n")
    with pytest.raises(ConfigError, match="listed.yaml: the top level must be a mapping"):
        load_config(listed)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("policy.head_layers", -1, "head_layers must be >= 0"),
        ("policy.head_hidden", 0, "head_hidden must be >= 1"),
    ],
)
def test_policy_head_sizes_are_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config({}, {key: value})


def test_a_budget_far_from_whole_updates_says_what_runs(tmp_path):
    config = tiny_config(tmp_path, total_steps=4 * 16 * 2 + 10, eval_episodes=0)
    with pytest.warns(UserWarning, match="training runs 2 updates, 128 env steps"):
        assert train(config, progress=False).global_step == 128
    small = tiny_config(tmp_path, total_steps=16, eval_episodes=0)  # less than one update
    with pytest.warns(UserWarning, match="training runs 1 update, 64 env steps"):
        assert train(small, progress=False).global_step == 64
    near = tiny_config(tmp_path, total_steps=4 * 16 * 30 + 10, eval_episodes=0)  # 0.5% off
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert train(near, progress=False).global_step == 4 * 16 * 30


def test_override_mistakes_say_what_is_wrong():
    with pytest.raises(ConfigError, match="override --ppo.lr needs a value, got the next option"):
        parse_overrides(["--ppo.lr", "--seed", "3"])
    assert parse_overrides(["--seed", "-3"]) == {"seed": "-3"}  # one dash: a value
    with pytest.raises(ConfigError, match="override --seed needs a value"):
        parse_overrides(["--seed"])
    with pytest.raises(ConfigError, match="expected an override like --key value, got 'x'"):
        parse_overrides(["x"])
    # free-form values are YAML: one that does not parse names the key
    with pytest.raises(ConfigError, match=r"env.kwargs.size: '\[1, 2' is not valid YAML"):
        load_config(None, {"env.kwargs.size": "[1, 2"})


def test_core_option_names_and_numbers_are_checked_up_front():
    # before any env is made or any run folder written: a suite or a resume checks here
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['num_head'\] for core 'mlstm'"):
        load_config({"core": {"options": {"num_head": 4}}})
    assert load_config({"core": {"name": "xlstm", "options": {"pattern": "ms"}}})
    with pytest.raises(ConfigError, match="ppo.lr must be finite, got inf"):
        load_config({"ppo": {"lr": float("inf")}})
    assert load_config({"ppo": {"max_grad_norm": float("inf")}})  # inf: no clipping
    with pytest.raises(ConfigError, match="device must be .* got 'cudafoo'"):
        load_config({"device": "cudafoo"})
    assert load_config({"device": "cuda:1"}).device == "cuda:1"


def test_a_registered_core_with_any_keyword_is_checked_when_built():
    from xlstm_rl.cores import CORES, build_core, register_core

    register_core("test_any", lambda input_size, hidden_size, **kw: build_core("gru", 2, 2))
    try:
        assert load_config({"core": {"name": "test_any", "options": {"whatever": 1}}})
    finally:
        del CORES["test_any"]
