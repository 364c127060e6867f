"""Memory plans made before allocating: a config that cannot fit stops with the estimate and the budget
(exit 2) instead of a raw RuntimeError or the kernel's OOM killer halfway through."""

from __future__ import annotations

import math
from typing import Any

from recsys_cli.errors import ResourceError

ADAM_COPIES = 4  # weights, gradients and Adam's two moments
ACTIVATION_COPIES = 3  # a layer's output, its gradient, and a low-precision copy under autocast
BYTES_PER_NEGATIVE = 24  # the sampler's int64 draws and membership test, and the int32 epoch copy


def format_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB"


def budget_gb_for(need: float) -> str:
    """The smallest device.memory_budget_gb (2 decimals, rounded up) that holds ``need`` bytes."""
    return f"{max(0.01, math.ceil(need / 2**30 * 100) / 100):.2f}"


def require(what: str, need: int, budget: int, *, detail: str, hint: str) -> None:
    """ResourceError naming the estimate and the budget when ``need`` exceeds ``budget``."""
    if need > budget:
        raise ResourceError(f"{what} needs about {format_bytes(need)} ({detail}), more than the memory budget of "
                            f"{format_bytes(budget)}", hint=hint)


def trainable_plan(model: Any, train: Any, batch_size: int) -> tuple[int, str]:
    """Bytes a trainable model's fit needs: its parameters (built on the meta device, which allocates
    nothing) times weights, gradients and Adam's moments, one batch of every layer's outputs, and an
    epoch of negative samples (``model.num_negatives`` per interaction, else one)."""
    import torch

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
    params, widths = _sizes([probe])
    # tensors the model keeps outside the optimizer (iALS's factors): held once, in their own dtype
    buffer_bytes = sum(b.numel() * b.element_size() for b in probe.buffers())
    negatives = int(getattr(model.config, "num_negatives", 1)) * int(train.nnz)
    need = ADAM_COPIES * params * element + ACTIVATION_COPIES * batch_size * widths * element \
        + BYTES_PER_NEGATIVE * negatives + buffer_bytes
    held = f"{params:,} parameters" + (f" and {format_bytes(buffer_bytes)} of factors" if buffer_bytes else "")
    return need, f"{held}, batches of {batch_size:,}, {negatives:,} negatives per epoch"


def _sizes(modules: list[Any]) -> tuple[int, int]:
    """Parameters of ``modules``, and the outputs per sample of their Linear and Embedding layers."""
    from torch import nn

    params = sum(p.numel() for m in modules for p in m.parameters())
    widths = sum(sub.out_features if isinstance(sub, nn.Linear) else sub.embedding_dim
                 for m in modules for sub in m.modules() if isinstance(sub, (nn.Linear, nn.Embedding, nn.EmbeddingBag)))
    return params, widths


def check_constructed(model_cls: Any, config: Any, dtype: Any, batch_size: int, budget: int) -> None:
    """The plan of a model that allocates in its constructor (mlp-iris): constructed on the meta device."""
    import torch
    from torch import nn

    try:
        with torch.device("meta"):
            probe = model_cls(config, device=torch.device("meta"), dtype=dtype)
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise ResourceError(f"{model_cls.name} cannot be built with these sizes ({type(exc).__name__})",
                            hint="lower the model's layer sizes") from None
    params, widths = _sizes([m for m in vars(probe).values() if isinstance(m, nn.Module)])
    element = torch.empty((), dtype=dtype).element_size()
    need = ADAM_COPIES * params * element + ACTIVATION_COPIES * batch_size * widths * element
    require(model_cls.name, need, budget, detail=f"{params:,} parameters, batches of {batch_size:,}",
            hint=f"use smaller layers (model.hidden), or set device.memory_budget_gb to at least {budget_gb_for(need)} "
                 "if the memory is free")


def check_trainable(model: Any, train: Any, batch_size: int, budget: int | None) -> None:
    """Refuse a trainable model whose plan exceeds the budget, before anything is allocated.

    Only models built by the training engine have a plan (their ``build`` runs on the meta device);
    any other model that trains (a user's own ``fit`` loop) is left to its own checks."""
    from recsys_cli.training.engine import TrainableRecommender

    if budget is None or not isinstance(model, TrainableRecommender):
        return
    need, detail = trainable_plan(model, train, batch_size)
    sizes = [f"model.{k}" for k in ("hidden", "layers", "dim", "num_factors", "num_negatives")
             if k in type(model.config).model_fields]
    smaller = f"lower {' / '.join(sizes)} or " if sizes else ""
    require(model.name, need, budget, detail=detail,
            hint=f"{smaller}use a smaller training.batch_size, or set device.memory_budget_gb to at least "
                 f"{budget_gb_for(need)} if the memory is free")
