"""Configs: YAML over defaults, CLI overrides, and clear errors for bad keys and values."""

import json
from pathlib import Path

import pytest
import torch

from tests.agents.conftest import tiny_config
from xlstm_rl.agents import train
from xlstm_rl.agents.checkpoint import load_checkpoint
from xlstm_rl.agents.policy import Policy
from xlstm_rl.cli import main
from xlstm_rl.config import ConfigError, TrainConfig, load_config, parse_overrides
from xlstm_rl.envs import make_env

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
        ({"env": {"num_envs": 0}}, r"env.num_envs must be >= 1"),
        ({"env": {"num_envs": 6}}, r"num_envs \(6\) must be divisible by ppo.num_minibatches"),
        ({"core": {"name": "rnn9"}}, r"core.name must be one of .*mlstm"),
        ({"algo": "dqn"}, r"algo must be one of \('ppo', 'a2c'\)"),
        ({"env": "cartpole"}, r"env must be a mapping"),
        ({"seed": None}, r"seed cannot be None"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_unknown_env_id_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown env id 'xlstm_rl/TMaz-v0'.*TMaze-v0"):
        train(tiny_config(tmp_path, **{"env.id": "xlstm_rl/TMaz-v0"}), progress=False)


def test_bad_core_option_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="bad option for core 'gru'"):
        train(tiny_config(tmp_path, **{"core.options": {"num_heads": 2}}), progress=False)


def test_cli_errors_exit_with_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(CONFIGS[0]), "--ppo.lrr", "1"])
    assert exit_info.value.code == 2
    assert "unknown config key 'ppo.lrr'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert "config file not found" in capsys.readouterr().err


def test_cli_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("xlstm_rl.agents.train", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(CONFIGS[0]), "--log_dir", str(tmp_path)])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted; resume" in err and "--resume" in err and "Traceback" not in err


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
    env = make_env(config.env.id, env_module=config.env.module, **config.env.kwargs)
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

    # Resuming a finished run with a larger budget trains on from where it stopped.
    assert main(["train", "--resume", str(checkpoint), "--quiet", "--total_steps", "192"]) == 0
    assert load_checkpoint(checkpoint)["update"] == 3
