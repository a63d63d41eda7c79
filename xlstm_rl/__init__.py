"""xlstm-rl: memory-based reinforcement learning with xLSTM cores."""

__version__ = "0.1.0"
