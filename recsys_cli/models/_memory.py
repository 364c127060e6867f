"""The memory guard of the item-item models: where to fit (GPU → CPU fallback or a clear refusal) and
where to keep W for scoring."""

from __future__ import annotations

from collections.abc import Callable

import torch

from recsys_cli import console
from recsys_cli.devices import available_memory_bytes
from recsys_cli.errors import ResourceError
from recsys_cli.memory import budget_gb_for, format_bytes
from recsys_cli.models._tiles import ColumnTiles, Matrix, is_sparse, matrix_bytes
from recsys_cli.models.base import FitContext


def plan_fit_device(model: str, ctx: FitContext, estimate: Callable[[torch.device], tuple[int, str]]) -> torch.device:
    """The device to fit on, after checking the memory estimate against the budget.

    ``estimate(device)`` returns (bytes needed, how they add up) for fitting on ``device``.
    A GPU that is short of memory hands the fit to the CPU when the machine's RAM can hold it;
    anything else that does not fit stops before allocating, with the estimate and the fix.
    """
    device = ctx.device
    budget = ctx.memory_budget_bytes if ctx.memory_budget_bytes is not None else available_memory_bytes(device)
    need, formula = estimate(device)
    if need <= budget:
        return device
    if device.type != "cpu":
        cpu = torch.device("cpu")
        cpu_need, _ = estimate(cpu)
        cpu_free = available_memory_bytes(cpu)
        if cpu_need <= cpu_free:
            console.warn(
                f"{model} needs about {format_bytes(need)} on {device} ({formula}) but only {format_bytes(budget)} "
                f"is available there; fitting on the CPU instead ({format_bytes(cpu_need)} of "
                f"{format_bytes(cpu_free)} free RAM)"
            )
            return cpu
    raise ResourceError(
        f"{model} needs about {format_bytes(need)} on {device} ({formula}) but the memory budget is "
        f"{format_bytes(budget)}",
        hint=f"set device.memory_budget_gb to at least {budget_gb_for(need)} if the memory is free, or run on a "
        "machine with more memory, or keep fewer items (the need grows with items²)",
    )


def same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 are the same device when 0 is the current one."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def place_for_scoring(model: str, W: Matrix, device: torch.device, budget: int | None = None) -> Matrix:
    """W in the form that scores fastest on ``device``: tiles on the CPU, a dense or sparse tensor on
    an accelerator. A device too short of memory for W keeps it on the CPU, with a warning."""
    if device.type == "mps":
        console.info(f"{model}: scoring on the CPU (sparse products are not supported on Apple MPS)")
        device = torch.device("cpu")
    if device.type != "cpu" and not same_device(W.device, device):
        need = matrix_bytes(W) * 5 // 4  # W plus room for a block of scores
        free = available_memory_bytes(device) if budget is None else min(budget, available_memory_bytes(device))
        if need > free:
            console.warn(f"{model}: its {format_bytes(matrix_bytes(W))} matrix does not fit the "
                         f"{format_bytes(free)} available on {device}; scoring on the CPU")
            return place_for_scoring(model, W, torch.device("cpu"))
        return (W.to_dense() if isinstance(W, ColumnTiles) else W).to(device)
    if isinstance(W, ColumnTiles):
        return W
    if device.type == "cpu":
        return W.cpu() if is_sparse(W) else ColumnTiles.from_dense(W.cpu())
    return W
