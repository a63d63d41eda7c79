"""The random-policy floor that suite reports put beside each environment."""

import pytest

from xlstm_rl.agents.evaluation import EVAL_SEED_OFFSET, evaluate_random


def test_random_floor_on_the_tmaze_is_chance_and_reproducible():
    floor = evaluate_random("xlstm_rl/TMaze-v0", 400, seed=3, env_kwargs={"corridor_length": 5})
    assert floor["episodes"] == 400 and floor["first_seed"] == 3 + EVAL_SEED_OFFSET
    assert floor["length_mean"] == 6.0  # the passive maze always lasts corridor + 1 steps
    # a coin flip per episode: success ~ Binomial(400, 0.5), 4 sd = 0.1
    assert abs(floor["success_rate"] - 0.5) < 0.1
    assert floor["return_mean"] == pytest.approx(2 * floor["success_rate"] - 1)
    again = evaluate_random("xlstm_rl/TMaze-v0", 400, seed=3, env_kwargs={"corridor_length": 5})
    assert again == floor


def test_random_floor_uses_the_success_rule_of_evaluation():
    # POPGym's RepeatPrevious reports no success: success = return > 0, never by chance
    floor = evaluate_random("popgym-RepeatPreviousEasy-v0", 20)
    assert floor["success_rate"] == 0.0 and -1.0 <= floor["return_mean"] < -0.3


def test_random_floor_rejects_bad_input():
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_random("xlstm_rl/TMaze-v0", 0)
    with pytest.raises(ValueError, match="unknown env id"):
        evaluate_random("NoSuchEnv-v0", 1)
