"""make_state works with and without tensordict's private unchecked constructor."""

import torch
from tensordict import TensorDict

from xlstm_rl.cores import base


def test_make_state_falls_back_to_the_checked_constructor(monkeypatch):
    entries = {"h": torch.zeros(3, 5), "inner": TensorDict({"c": torch.ones(3, 2)}, [3])}
    fast = base.make_state(dict(entries), torch.Size([3]))
    monkeypatch.setattr(base, "_NEW_STATE", TensorDict)
    checked = base.make_state(dict(entries), torch.Size([3]))
    assert fast.batch_size == checked.batch_size == torch.Size([3])
    assert (fast == checked).all()
