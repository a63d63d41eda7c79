"""xlstm-rl: memory-based reinforcement learning with xLSTM cores."""

__version__ = "0.1.0"

__all__ = ["evaluate_checkpoint", "train"]


def __getattr__(name: str):
    # Lazy, so that importing xlstm_rl.kernels or xlstm_rl.envs does not build the agents stack.
    if name in __all__:
        from xlstm_rl import agents

        return getattr(agents, name)
    raise AttributeError(f"module 'xlstm_rl' has no attribute {name!r}")
