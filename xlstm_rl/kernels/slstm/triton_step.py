"""sLSTM step in Triton: the fused sequence kernel run for one step.

Batch-first: g (B, H, 4, Dh), R (H, Dh, 4, Dh), reset (B,) bool, state (c, n, m, h)
each (B, H, Dh) float32. One launch updates every (B, H); gradients, when autograd
asks for them, come from the sequence kernels' Triton backward.
"""

from __future__ import annotations

import torch

from xlstm_rl.kernels.slstm.reference import SState
from xlstm_rl.kernels.slstm.triton_sequence import slstm_sequence_triton


def slstm_step_triton(
    g: torch.Tensor,  # (B, H, 4, Dh)
    R: torch.Tensor,  # (H, Dh, 4, Dh)
    state: SState | None,
    *,
    reset: torch.Tensor | None = None,  # (B,) bool
) -> tuple[torch.Tensor, SState]:
    """One sLSTM step; same contract as `slstm_step_reference`."""
    resets = None if reset is None else reset[:, None]
    h, state = slstm_sequence_triton(g[:, None], R, resets=resets, state=state)
    return h[:, 0], state
