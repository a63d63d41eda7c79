import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Kernel tests use tiny tensors: one intra-op thread is many times faster than two
    on a small shared CPU, where threads mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
