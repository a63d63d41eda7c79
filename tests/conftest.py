import os

import pytest
import torch

# Triton's interpreter must be chosen before triton is imported anywhere: without a
# GPU the Triton kernels are tested on the CPU through it; with one, compiled.
if not os.path.exists("/dev/nvidia0") or os.environ.get("CUDA_VISIBLE_DEVICES") == "":
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny tensors: one intra-op thread is faster, and more repeatable, than
    two on a small shared CPU, where threads mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
