"""The agent learns what needs memory, and only with memory.

Passive T-maze, corridor 10: the cue is seen at t = 0 only and must be acted on at
t = 10. +1 for the right turn, -1 for the wrong one, so chance is 0. Seconds on 2 CPU cores.
"""

from xlstm_rl.agents import train


def tmaze_run(tmp_path, core: str, seed: int = 1):
    return train(
        {
            "env": {"id": "xlstm_rl/TMaze-v0", "num_envs": 8, "kwargs": {"corridor_length": 10}},
            "core": {"name": core, "hidden_size": 32},
            "ppo": {"rollout_len": 32, "num_minibatches": 2, "lr": 1e-3},
            "total_steps": 12_288,
            "eval_episodes": 100,
            "checkpoint_every": 0,
            "seed": seed,
            "log_dir": str(tmp_path),
            "name": core,
        },
        progress=False,
    )


def test_mlstm_solves_tmaze_and_memoryless_stays_at_chance(tmp_path):
    memory = tmaze_run(tmp_path, "mlstm")
    assert memory.final_eval["return_mean"] >= 0.9, memory.final_eval
    assert memory.final_eval["success_rate"] >= 0.95

    memoryless = tmaze_run(tmp_path, "mlp")
    assert abs(memoryless.final_eval["return_mean"]) <= 0.4, memoryless.final_eval
    assert memoryless.final_eval["success_rate"] <= 0.7
    assert abs(sum(memoryless.recent_returns) / len(memoryless.recent_returns)) <= 0.4
