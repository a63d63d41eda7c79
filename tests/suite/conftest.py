import pytest

from tests.suite.helpers import SMOKE, quiet
from xlstm_rl.suite import run_suite


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke suite run once for every suite test: (out, outcome). Tests that change
    what is under ``out`` put it back."""
    out = tmp_path_factory.mktemp("smoke")
    outcome = run_suite(SMOKE, out, workers=2, echo=quiet)
    return out, outcome
