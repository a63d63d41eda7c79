"""Cores on a GPU: with backend "auto" the mLSTM and sLSTM cores run the Triton kernels
(chunkwise forward and backward for training, the fused step for acting) with no change
to the caller's code, and give what the torch forms give on the CPU.

Skipped without CUDA: on the CPU the kernels are tested under Triton's interpreter in
tests/kernels, and the cores' wiring into them in tests/cores/test_cores_triton.py
(backend "triton" named explicitly). Run on a GPU machine with `python -m pytest tests/cores`.
"""

import pytest
import torch

from tests.cores.test_cores import (
    B,
    T,
    assert_matches_float64,
    assert_steps_equal_pass,
    inputs,
    make,
)
from xlstm_rl.kernels import registry

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# cores with an mLSTM or sLSTM cell, and a short pattern that mixes both
NAMES = ["mlstm", "slstm", "xlstm"]


def _spy_triton(monkeypatch):
    """Count calls of the Triton backends that "auto" hands out."""
    calls = {}
    for op, table in registry._BACKENDS.items():
        if "triton" not in table:
            continue
        backend = table["triton"]

        def counted(*args, _fn=backend.fn, _op=op, **kwargs):
            calls[_op] = calls.get(_op, 0) + 1
            return _fn(*args, **kwargs)

        monkeypatch.setitem(table, "triton", registry.Backend(counted, backend.unavailable))
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_cuda_core_matches_cpu_float64(name, monkeypatch):
    """forward (with resets) and every parameter's gradient, float32 on the GPU through
    the Triton kernels, against the same core in float64 on the CPU."""
    calls = _spy_triton(monkeypatch)
    assert_matches_float64(name, make(name, torch.float32).cuda(), device="cuda")
    seq_op = "slstm_sequence" if name == "slstm" else "mlstm_sequence"
    assert calls.get(seq_op, 0) > 0, f"auto did not pick the Triton {seq_op} on CUDA"


@pytest.mark.parametrize("name", NAMES)
def test_cuda_steps_equal_sequence(name, monkeypatch):
    """T calls of step (the fused step kernel) equal one forward over T, resets included."""
    calls = _spy_triton(monkeypatch)
    core = make(name, torch.float32).cuda()
    x, resets = (t.cuda() for t in inputs(torch.float32))
    with torch.no_grad():
        state0 = core.initial_state(B, device="cuda")
        assert_steps_equal_pass(core, x, resets, state0, rtol=1e-4, atol=1e-4)
    step_op = "slstm_step" if name == "slstm" else "mlstm_step"
    assert calls.get(step_op, 0) >= T, f"auto did not pick the Triton {step_op} on CUDA"


def test_cuda_bfloat16_core_trains():
    """Under bfloat16 autocast the mLSTM core's forward and backward run and stay finite."""
    core = make("mlstm", torch.float32).cuda()
    x, resets = (t.cuda() for t in inputs(torch.float32))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, _ = core(x, core.initial_state(B, device="cuda"), resets)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all()
    for pname, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
