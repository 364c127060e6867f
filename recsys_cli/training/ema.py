"""An exponential moving average of a model's trainable parameters (Polyak averaging).

After every optimizer step the average moves towards the current weights,
``average ← decay · average + (1 − decay) · weights``, so it covers roughly the last
``1 / (1 − decay)`` steps. Validation, the best checkpoint and the final model use the average; the
optimizer keeps stepping the raw weights. A model whose validation value jumps from epoch to epoch
because its weights do gains the most (docs/training.md measures it on two-tower variant 1).

The average starts at the initial weights, with no bias correction: its first ``1 / (1 − decay)``
steps lean towards the initialisation, which on small data sets acts as a slow start (a warm-up that
averaged only the steps so far scored lower there; docs/training.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ParameterEMA:
    """The running average of ``model``'s parameters that require gradients, kept beside them."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie strictly between 0 and 1, not {decay}")
        self.decay = float(decay)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self._params = [p for _, p in named]
        # half-precision weights would lose updates of weight (1 − decay) to rounding: average in float32
        self.average = [p.detach().to(torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype,
                                      copy=True) for p in self._params]
        self._weights = [p.detach() for p in self._params]  # views of the live weights, made once
        self._cast = any(w.dtype != a.dtype for w, a in zip(self._weights, self.average, strict=True))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average; call after each optimizer step."""
        weights = [w.to(a.dtype) for w, a in zip(self._weights, self.average, strict=True)] if self._cast \
            else self._weights
        torch._foreach_lerp_(self.average, weights, 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the model's parameters hold the average; the raw weights come back after."""
        raw = [p.detach().clone() for p in self._params]
        self.copy_to_model()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self._params, raw, strict=True):
                    p.copy_(r)

    def averaged_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with the averaged parameters in place of the raw ones.

        Like ``state_dict()`` it shares storage (the average's own, where the dtypes agree): copy it
        to keep it past the next :meth:`update`."""
        state = model.state_dict()
        for name, p, a in zip(self.names, self._params, self.average, strict=True):
            state[name] = a.to(p.dtype)
        return state

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Leave the average in the model's parameters (the end of training)."""
        for p, a in zip(self._params, self.average, strict=True):
            p.copy_(a)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: a for name, a in zip(self.names, self.average, strict=True)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.names) - set(state))
        if missing:
            raise KeyError(f"the saved average lacks {', '.join(missing)}")
        for name, a in zip(self.names, self.average, strict=True):
            a.copy_(state[name])
