"""Agents: recurrent PPO and A2C over any memory core.

``train(config)`` runs one experiment; ``evaluate_checkpoint(path)`` scores a saved
policy on held-out seeds. The pieces, top to bottom: ``encoders`` (observation
space -> features), ``policy`` (encoder -> core -> heads), ``rollout`` (acting and
GAE), ``ppo`` (the update, A2C included), ``checkpoint``, ``evaluation``, ``training``.
"""

from xlstm_rl.agents.evaluation import evaluate_checkpoint, evaluate_policy
from xlstm_rl.agents.policy import Policy
from xlstm_rl.agents.training import TrainResult, train

__all__ = ["Policy", "TrainResult", "evaluate_checkpoint", "evaluate_policy", "train"]
