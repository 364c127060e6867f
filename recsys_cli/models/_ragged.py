"""Index arithmetic on ragged runs (CSR rows, groups of equal sorted values), without Python loops."""

from __future__ import annotations

import torch


def ragged_arange(starts: torch.Tensor, counts: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """``starts[r], starts[r] + 1, …, starts[r] + counts[r] − 1`` for every r, concatenated.

    The positions of a set of CSR rows' non-zeros, say, from their row starts and lengths. ``total``
    (``counts.sum()``) spares a host synchronisation where the caller knows it."""
    if total is None:
        total = int(counts.sum())
    first_out = torch.cumsum(counts, 0) - counts  # where each run begins in the output
    return torch.arange(total, device=counts.device) + torch.repeat_interleave(
        starts - first_out, counts, output_size=total)
