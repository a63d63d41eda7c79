"""Cores wired to the Triton kernels (backend "triton" named explicitly), on the CPU
under Triton's interpreter: the same core, float32 through the kernels, against the
torch forms in float64, forward with resets, every parameter's gradient, and T steps
of the fused step kernel against one pass. Checks the cores' wiring into the kernels
(layouts, state packing, the step path); the kernels' maths is tested in tests/kernels.

Runs where the interpreter is on (tests/conftest.py turns it on without a GPU); on a
GPU, tests/cores/test_cores_cuda.py covers the same with compiled kernels.
"""

import os

import pytest
import torch

pytest.importorskip("triton")

from tests.cores.test_cores import (  # noqa: E402
    B,
    T,
    assert_matches_float64,
    assert_steps_equal_pass,
    inputs,
    make,
)
from tests.cores.test_cores_cuda import _spy_triton  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="CPU interpreter runs; GPU: test_cores_cuda"
)

TRITON = {
    "mlstm": {"backend": "triton", "step_backend": "triton"},
    "slstm": {"backend": "triton"},
}
OPTIONS = {
    "mlstm": TRITON["mlstm"],
    "slstm": TRITON["slstm"],
    "xlstm": {"mlstm": TRITON["mlstm"], "slstm": TRITON["slstm"]},
}

CELLS = {"mlstm": ["mlstm"], "slstm": ["slstm"], "xlstm": ["mlstm", "slstm"]}  # default stacks


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_triton_core_matches_float64(name, monkeypatch):
    calls = _spy_triton(monkeypatch)
    assert_matches_float64(name, make(name, torch.float32, **OPTIONS[name]))
    for op in CELLS[name]:
        assert calls.get(f"{op}_sequence", 0) > 0, f"the Triton {op} did not run: {calls}"


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_triton_steps_equal_sequence(name, monkeypatch):
    calls = _spy_triton(monkeypatch)
    core = make(name, torch.float32, **OPTIONS[name])
    x, resets = inputs(torch.float32)
    with torch.no_grad():
        assert_steps_equal_pass(core, x, resets, core.initial_state(B), rtol=1e-4, atol=1e-4)
    for op in CELLS[name]:
        assert calls.get(f"{op}_step", 0) >= T, f"the Triton {op} step did not run: {calls}"
