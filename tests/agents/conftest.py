import torch

from xlstm_rl.agents.checkpoint import record_episodes
from xlstm_rl.agents.policy import Policy
from xlstm_rl.agents.rollout import Collector
from xlstm_rl.config import load_config
from xlstm_rl.envs import make_vector_env


def tiny_config(tmp_path, **overrides):
    """A small, fast run on the active T-maze (both terminations and truncations)."""
    data = {
        "env": {
            "id": "xlstm_rl/TMaze-v0",
            "num_envs": 4,
            "kwargs": {"corridor_length": 3, "passive": False, "max_steps": 6},
        },
        "core": {"name": "gru", "hidden_size": 16},
        "policy": {"encoder_size": 16},
        "ppo": {"rollout_len": 16, "num_minibatches": 2, "epochs": 2},
        "total_steps": 4 * 16 * 4,
        "eval_episodes": 4,
        "checkpoint_every": 2,
        "log_dir": str(tmp_path / "runs"),
        "name": "test",
    }
    return load_config(data, overrides)


def make_collector(config, rollout_len=24, compile=False):
    torch.manual_seed(config.seed)
    envs = make_vector_env(
        config.env.id, config.env.num_envs, seed=config.seed, **config.env.kwargs
    )
    record_episodes(envs)
    policy = Policy(
        envs.single_observation_space, envs.single_action_space, config.core, config.policy
    )
    return Collector(envs, policy, rollout_len, torch.device("cpu"), compile=compile), policy


def interrupting_collect(at_call: int, error: type[BaseException], calls: list):
    """A stand-in for ``Collector.collect`` that raises ``error`` on its ``at_call``-th
    call, counted in ``calls`` (which a test may reset), and collects as usual otherwise."""
    collect = Collector.collect

    def stand_in(self):
        calls.append(1)
        if len(calls) == at_call:
            raise error
        return collect(self)

    return stand_in
