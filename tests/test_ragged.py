"""Ragged index arithmetic shared by the DAE's batch gathering and the two-tower softmax's hits."""

from __future__ import annotations

import torch

from recsys_cli.models._ragged import ragged_arange


def test_ragged_arange_concatenates_each_run():
    starts, counts = torch.tensor([5, 0, 9, 2]), torch.tensor([2, 0, 3, 1])
    expected = [5, 6, 9, 10, 11, 2]
    assert ragged_arange(starts, counts).tolist() == expected
    assert ragged_arange(starts, counts, total=6).tolist() == expected
    assert ragged_arange(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)).numel() == 0
