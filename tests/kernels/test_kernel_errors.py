"""Kernel entry points reject bad input with errors that say what was expected."""

from __future__ import annotations

import re

import pytest
import torch

from xlstm_rl.kernels import (
    backends,
    mlstm_sequence,
    mlstm_step,
    slstm_sequence,
    slstm_step,
)
from xlstm_rl.kernels.mlstm.chunkwise import mlstm_sequence_chunkwise
from xlstm_rl.kernels.mlstm.reference import mlstm_step_reference
from xlstm_rl.kernels.registry import resolve
from xlstm_rl.kernels.slstm.bptt import slstm_sequence_bptt
from xlstm_rl.kernels.slstm.reference import slstm_step_reference

from .helpers import random_inputs, random_slstm_inputs, random_state

B, H, T, DK, DV, DH = 2, 3, 5, 4, 6, 4


def mlstm_args():
    return random_inputs(B, H, T, DK, DV)


def step_args():
    return tuple(x[:, :, 0] for x in mlstm_args())


def slstm_args():
    return random_slstm_inputs(B, T, H, DH)


OP_CALLS = {
    "mlstm_sequence": lambda backend: mlstm_sequence(*mlstm_args(), backend=backend),
    "mlstm_step": lambda backend: mlstm_step(*step_args(), None, backend=backend),
    "slstm_sequence": lambda backend: slstm_sequence(*slstm_args(), backend=backend),
    "slstm_step": lambda backend: slstm_step(
        slstm_args()[0][:, 0], slstm_args()[1], None, backend=backend
    ),
}


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_unknown_backend_lists_the_valid_names(op):
    with pytest.raises(ValueError, match="no_such_backend") as info:
        OP_CALLS[op]("no_such_backend")
    for name in backends(op):
        assert repr(name) in str(info.value) or name in str(info.value)
    assert "reference" in backends(op)


# what "auto" must pick for CPU tensors: the chunkwise form trains, the loops step
CPU_DEFAULTS = {
    "mlstm_sequence": mlstm_sequence_chunkwise,
    "mlstm_step": mlstm_step_reference,
    "slstm_sequence": slstm_sequence_bptt,
    "slstm_step": slstm_step_reference,
}


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_auto_runs_on_cpu(op):
    assert resolve(op, "auto", torch.zeros(1)) is CPU_DEFAULTS[op]
    OP_CALLS[op]("auto")


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_triton_on_cpu_without_interpreter_is_an_error(op, monkeypatch):
    if "triton" not in backends(op):
        pytest.skip(f"no triton backend registered for {op} yet")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="triton"):
        OP_CALLS[op]("triton")


def test_mlstm_sequence_wrong_rank_names_the_expected_shape():
    q, k, v, i, f = mlstm_args()
    with pytest.raises(ValueError, match=re.escape("q must have shape (B, H, T, Dk)")):
        mlstm_sequence(q[0], k, v, i, f)
    with pytest.raises(ValueError, match=r"k must have shape \(B=2, H=3, T=5, Dk=4\)"):
        mlstm_sequence(q, k[..., :3], v, i, f)
    with pytest.raises(ValueError, match=r"v must have shape \(B=2, H=3, T=5, Dv\)"):
        mlstm_sequence(q, k, v[:, :, :4], i, f)
    with pytest.raises(ValueError, match=r"i must have shape \(B=2, H=3, T=5\)"):
        mlstm_sequence(q, k, v, i[..., None], f)
    with pytest.raises(ValueError, match=r"f must have shape \(B=2, H=3, T=5\)"):
        mlstm_sequence(q, k, v, i, f[:1])
    # q, k, v in the (B, T, H, D) layout: the sizes expected of i come from q, so say so
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    with pytest.raises(ValueError, match=r"read off q, taken as \(B, H, T, Dk\) = \(2, 5, 3, 4\)"):
        mlstm_sequence(qt, kt, vt, i, f)


def test_mlstm_step_wrong_shapes_name_the_expected_shape():
    q, k, v, i, f = step_args()
    with pytest.raises(ValueError, match=re.escape("q must have shape (B, H, Dk)")):
        mlstm_step(q[..., None], k, v, i, f, None)
    with pytest.raises(ValueError, match=r"i must have shape \(B=2, H=3\)"):
        mlstm_step(q, k, v, i[:, :1], f, None)
    with pytest.raises(ValueError, match=r"reset must have shape \(B=2\)"):
        mlstm_step(q, k, v, i, f, None, reset=torch.zeros(3, dtype=torch.bool))


def test_resets_must_be_bool_of_shape_b_t():
    inputs = mlstm_args()
    for bad in (torch.zeros(B, T), torch.zeros(B, T, dtype=torch.long), [[False] * T] * B):
        with pytest.raises(TypeError, match="resets must be a bool tensor"):
            mlstm_sequence(*inputs, resets=bad)
    with pytest.raises(ValueError, match=r"resets must have shape \(B=2, T=5\)"):
        mlstm_sequence(*inputs, resets=torch.zeros(B, T + 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="reset must be a bool tensor"):
        mlstm_step(*step_args(), None, reset=torch.zeros(B))
    g, R = slstm_args()
    with pytest.raises(TypeError, match="resets must be a bool tensor"):
        slstm_sequence(g, R, resets=torch.zeros(B, T, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"resets must have shape \(B=2, T=5\)"):
        slstm_sequence(g, R, resets=torch.zeros(T, B, dtype=torch.bool))


def test_bad_mlstm_state_is_rejected():
    inputs = mlstm_args()
    C, n, m = random_state(B, H, DK, DV)
    with pytest.raises(TypeError, match=r"tuple \(C, n, m\)"):
        mlstm_sequence(*inputs, state=(C, n))
    with pytest.raises(TypeError, match=r"tuple \(C, n, m\)"):
        mlstm_sequence(*inputs, state=C)
    with pytest.raises(ValueError, match=r"state C must have shape \(B=2, H=3, Dk=4, Dv=6\)"):
        mlstm_sequence(*inputs, state=(C.transpose(-1, -2), n, m))
    with pytest.raises(ValueError, match=r"state n must have shape \(B=2, H=3, Dk=4\)"):
        mlstm_sequence(*inputs, state=(C, n[:1], m))
    with pytest.raises(ValueError, match=r"state m must have shape \(B=2, H=3\)"):
        mlstm_sequence(*inputs, state=(C, n, m[..., None]))
    with pytest.raises(TypeError, match="state m must be a floating tensor"):
        mlstm_sequence(*inputs, state=(C, n, m.long()))
    with pytest.raises(ValueError, match=r"state n must have shape \(B=2, H=3, Dk=4\)"):
        mlstm_step(*(x[:, :, 0] for x in inputs), (C, n[..., :2], m))


def test_bad_slstm_inputs_and_state_are_rejected():
    g, R = slstm_args()
    state = tuple(torch.zeros(B, H, DH) for _ in range(4))
    # the gate axis reads "4" or "4=4"; either names the expected size
    with pytest.raises(ValueError, match=r"g must have shape \(B, T, H, 4(=4)?, Dh\)"):
        slstm_sequence(g[:, :, :, :3], R)
    with pytest.raises(ValueError, match=r"R must have shape \(H=3, Dh=4, 4(=4)?, Dh=4\)"):
        slstm_sequence(g, R[:2])
    with pytest.raises(ValueError, match=r"g must have shape \(B, H, 4(=4)?, Dh\)"):
        slstm_step(g, R, None)
    with pytest.raises(TypeError, match=r"tuple \(c, n, m, h\)"):
        slstm_sequence(g, R, state=state[:3])
    with pytest.raises(ValueError, match=r"state h must have shape \(B=2, H=3, Dh=4\)"):
        slstm_sequence(g, R, state=(*state[:3], torch.zeros(B, H, DH + 1)))
    with pytest.raises(TypeError, match="g must be a floating tensor"):
        slstm_sequence(g.long(), R)


def test_q_k_v_must_share_a_dtype():
    q, k, v, i, f = mlstm_args()
    with pytest.raises(TypeError, match="q, k, v must share a dtype"):
        mlstm_sequence(q, k.double(), v, i, f)
    with pytest.raises(TypeError, match="q, k, v must share a dtype"):
        mlstm_sequence(q, k, v.to(torch.bfloat16), i, f)
    q, k, v, i, f = step_args()
    with pytest.raises(TypeError, match="q, k, v must share a dtype"):
        mlstm_step(q.half(), k, v, i, f, None)


@pytest.mark.parametrize("name", ["q", "k", "v", "i", "f"])
def test_integer_inputs_are_rejected(name):
    inputs = dict(zip("qkvif", mlstm_args()))
    inputs[name] = inputs[name].round().long()
    with pytest.raises(TypeError, match=f"{name} must be a floating tensor"):
        mlstm_sequence(*inputs.values())
    with pytest.raises(TypeError, match=f"{name} must be a floating tensor"):
        mlstm_step(*(x[:, :, 0] for x in inputs.values()), None)


def test_non_tensor_input_is_a_type_error():
    q, k, v, i, f = mlstm_args()
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        mlstm_sequence(q.tolist(), k, v, i, f)


def test_empty_sequence_is_rejected():
    q, k, v, i, f = (x[:, :, :0] for x in mlstm_args())
    with pytest.raises(ValueError, match="T >= 1"):
        mlstm_sequence(q, k, v, i, f)
    g, R = slstm_args()
    with pytest.raises(ValueError, match="T >= 1"):
        slstm_sequence(g[:, :0], R)


@pytest.mark.parametrize("backend", ["chunkwise", "parallel", "reference"])
@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, "4", True, None])
def test_chunk_size_must_be_a_positive_int(chunk_size, backend):
    # every backend alike, those that do not chunk too
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        mlstm_sequence(*mlstm_args(), backend=backend, chunk_size=chunk_size)


def test_chunk_size_may_be_a_numpy_or_torch_int():
    import numpy as np

    h = mlstm_sequence(*mlstm_args(), backend="chunkwise", chunk_size=4)[0]
    for size in (np.int64(4), torch.tensor(4)):
        torch.testing.assert_close(
            mlstm_sequence(*mlstm_args(), backend="chunkwise", chunk_size=size)[0], h
        )


def test_step_out_buffers_are_checked():
    q, k, v, i, f = step_args()
    state = random_state(B, H, DK, DV)
    h = torch.empty(B, H, DV)
    C, n, m = (torch.empty_like(s) for s in state)
    with pytest.raises(TypeError, match=r"out must be a tuple \(h, \(C, n, m\)\)"):
        mlstm_step(q, k, v, i, f, state, out=h)
    with pytest.raises(TypeError, match="out h"):  # an int h would truncate silently
        mlstm_step(q, k, v, i, f, state, out=(h.long(), (C, n, m)))
    with pytest.raises(ValueError, match="out C must not be an expanded view"):
        mlstm_step(q, k, v, i, f, state, out=(h, (C[:1].expand_as(C), n, m)))
    with pytest.raises(ValueError, match="reset is on meta but q is on cpu"):
        mlstm_step(q, k, v, i, f, state, reset=torch.zeros(B, dtype=torch.bool, device="meta"))


def test_zero_width_keys_are_rejected():
    q, k, v, i, f = mlstm_args()
    for backend in ("reference", "parallel", "chunkwise"):
        with pytest.raises(ValueError, match="Dk >= 1"):
            mlstm_sequence(q[..., :0], k[..., :0], v, i, f, backend=backend)


def test_inputs_on_another_device_are_rejected():
    """A tensor on another device than q (or g) is named, with both devices ("meta"
    stands in for a GPU here)."""
    inputs = mlstm_args()
    elsewhere = torch.zeros(B, T, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="resets is on meta but q is on cpu"):
        mlstm_sequence(*inputs, resets=elsewhere)
    q, k, v, i, f = inputs
    with pytest.raises(ValueError, match="f is on meta but q is on cpu"):
        mlstm_sequence(q, k, v, i, f.to("meta"))
    C, n, m = random_state(B, H, DK, DV)
    with pytest.raises(ValueError, match="state is on meta but q is on cpu"):
        mlstm_step(*step_args(), (C, n.to("meta"), m))
    h_out = torch.empty(B, H, DV, device="meta")
    with pytest.raises(ValueError, match="out h is on meta but q is on cpu"):
        mlstm_step(*step_args(), (C, n, m), out=(h_out, (C, n, m)))
    g, R = slstm_args()
    with pytest.raises(ValueError, match="R is on meta but g is on cpu"):
        slstm_sequence(g, R.to("meta"))
    with pytest.raises(ValueError, match="reset is on meta but g is on cpu"):
        slstm_step(g[:, 0], R, None, reset=torch.zeros(B, dtype=torch.bool, device="meta"))
