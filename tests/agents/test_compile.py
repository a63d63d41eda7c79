"""``compile: true``: the compiled acting step and loss give what the eager ones give.

Real torch.compile (inductor, a C++ compiler on the CPU): about a minute in all."""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
import torch

from tests.agents.conftest import make_collector, tiny_config
from xlstm_rl.agents import train
from xlstm_rl.agents.ppo import loss_terms
from xlstm_rl.agents.rollout import compute_advantages

# inductor builds C++ on the CPU: without a compiler, compile: true cannot work at all
pytestmark = pytest.mark.skipif(
    not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")),
    reason="torch.compile on the CPU needs a C++ compiler",
)

MLSTM = {"core.name": "mlstm", "core.options": {"num_heads": 2}}
# the transformer's sequence pass in chunks shorter than the rollout, its step path apart
TRANSFORMER = {
    "core.name": "transformer",
    "core.options": {"num_heads": 2, "memory_len": 4, "chunk_len": 3},
}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("core", [MLSTM, TRANSFORMER], ids=["mlstm", "transformer"])
def test_compiled_acting_and_loss_match_eager(tmp_path, core):
    config = tiny_config(tmp_path, **core)
    rollouts = {}
    for compiled in (False, True):
        collector, policy = make_collector(config, compile=compiled)
        torch.manual_seed(0)
        # two rollouts: the second starts from a carried state, as in training
        collector.collect()
        rollouts[compiled] = collector.collect()
    (eager, state, _), (compiled, compiled_state, _) = rollouts[False], rollouts[True]
    assert eager["truncated"].any() and eager["terminated"].any()  # both endings were acted
    assert torch.equal(compiled["action"], eager["action"])
    for key in ("value", "log_prob", "next_value"):
        assert rel_err(compiled[key], eager[key]) <= 1e-5, key
    for key, value in eager.items(True, True):
        if key not in ("value", "log_prob", "next_value"):
            assert torch.equal(compiled[key], value), key
    for key, value in state.items(True, True):
        assert rel_err(compiled_state[key], value) <= 1e-5, key

    # the loss and its gradients, on the eager rollout, with the last policy built
    rollout = compute_advantages(eager, config.ppo.gamma, config.ppo.gae_lambda)
    results = {}
    for compiled in (False, True):
        run_config = dataclasses.replace(config, compile=compiled)
        policy.zero_grad()
        loss, stats = loss_terms(policy, rollout, state, run_config)
        loss.backward()
        grads = [p.grad.clone() for p in policy.parameters()]
        results[compiled] = loss.detach(), stats, grads
    (loss, stats, grads), (c_loss, c_stats, c_grads) = results[False], results[True]
    assert rel_err(c_loss, loss) <= 1e-5
    for key in stats:
        torch.testing.assert_close(c_stats[key], stats[key], rtol=1e-4, atol=1e-6, msg=key)
    for (name, _), g, c in zip(policy.named_parameters(), grads, c_grads):
        assert rel_err(c, g) <= 1e-4, name


@pytest.mark.parametrize("core", ["mlstm", "gru"])
def test_compiled_training_runs_end_to_end(tmp_path, core):
    """Also for a core whose loss stays eager (compile_sequence False): only its step compiles."""
    options = {**MLSTM, "core.name": core} if core == "mlstm" else {"core.name": core}
    result = train(tiny_config(tmp_path, **options, compile=True), progress=False)
    assert result.checkpoint.is_file()
    assert set(result.final_eval) >= {"return_mean", "success_rate"}
