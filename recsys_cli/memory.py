"""Memory plans made before allocating: a config that cannot fit stops with the estimate and the budget
(exit 2) instead of a raw RuntimeError or the kernel's OOM killer halfway through."""

from __future__ import annotations

from typing import Any

from recsys_cli.errors import ResourceError

ADAM_COPIES = 4  # weights, gradients and Adam's two moments
ACTIVATION_COPIES = 3  # a layer's output, its gradient, and a low-precision copy under autocast
BYTES_PER_NEGATIVE = 24  # the sampler's int64 draws and membership test, and the int32 epoch copy


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def require(what: str, need: int, budget: int, *, detail: str, hint: str) -> None:
    """ResourceError naming the estimate and the budget when ``need`` exceeds ``budget``."""
    if need > budget:
        raise ResourceError(f"{what} needs about {gib(need)} ({detail}), more than the memory budget of {gib(budget)}",
                            hint=hint)


def trainable_plan(model: Any, train: Any, batch_size: int) -> tuple[int, str]:
    """Bytes a trainable model's fit needs: its parameters (built on the meta device, which allocates
    nothing) times weights, gradients and Adam's moments, one batch of every layer's outputs, and an
    epoch of negative samples (``model.num_negatives`` per interaction, else one)."""
    import torch
    from torch import nn

    probe = type(model)(model.config, device=torch.device("meta"), dtype=model.dtype, seed=model.seed)
    probe.n_users, probe.n_items = (int(x) for x in train.shape)
    try:
        with torch.device("meta"):
            probe.build(train)
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        reason = " ".join(str(exc).split())[:120]
        raise ResourceError(f"{model.name} cannot be built with these sizes ({type(exc).__name__}: {reason})",
                            hint="lower the model's layer sizes") from None
    element = torch.empty((), dtype=probe.param_dtype).element_size()
    params = sum(p.numel() for p in probe.parameters())
    widths = sum(m.out_features if isinstance(m, nn.Linear) else m.embedding_dim
                 for m in probe.modules() if isinstance(m, (nn.Linear, nn.Embedding, nn.EmbeddingBag)))
    negatives = int(getattr(model.config, "num_negatives", 1)) * int(train.nnz)
    need = ADAM_COPIES * params * element + ACTIVATION_COPIES * batch_size * widths * element \
        + BYTES_PER_NEGATIVE * negatives
    return need, f"{params:,} parameters, batches of {batch_size:,}, {negatives:,} negatives per epoch"


def check_trainable(model: Any, train: Any, batch_size: int, budget: int | None) -> None:
    if budget is None:
        return
    need, detail = trainable_plan(model, train, batch_size)
    require(model.name, need, budget, detail=detail,
            hint="use smaller layers (model.hidden / model.layers / model.dim), fewer model.num_negatives or a "
                 "smaller training.batch_size, or raise device.memory_budget_gb if the memory is free")
