"""Denoising autoencoder over users' interaction rows (the seed notebook's DAE, done right).

Architecture (default ``hidden: [420, 69]``): items → 420 → ReLU → 69 → 420 → ReLU → items, the
decoder mirroring the encoder, no output activation; the scores of a user are the reconstruction
(logits) of their training row. Unlike the seed notebook:

- noise is applied to a copy of the input only, never to the reconstruction target, and never in
  eval mode (validation, scoring);
- the loss is well posed: ``bce`` is binary cross-entropy *with logits* against a target in [0, 1]
  (binarised interactions by default; with ``binarize: false`` the ratings divided by the largest
  training rating), or ``multinomial`` (Mult-DAE, Liang et al. 2018: −Σ x·log softmax(logits));
- users are shuffled every epoch and every user with a training interaction is visited;
- the first layer is an ``EmbeddingBag`` over the row's non-zeros (a sparse matrix product), so a
  batch never densifies its input; only its own target/output rows are dense.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recsys_cli.config.schema import ModelConfig
from recsys_cli.models.registry import register
from recsys_cli.training.engine import LOW_PRECISION, TrainableRecommender


class DAEConfig(ModelConfig):
    name: Literal["dae"] = "dae"
    hidden: list[int] = Field(
        [420, 69], min_length=1,
        description="Encoder layer sizes; the decoder mirrors them (the seed's items→420→69→420→items).",
    )
    noise: Literal["dropout", "mask", "salt-pepper"] = Field(
        "dropout",
        description="Input noise: dropout (zero w.p. noise_p, rescale survivors), mask (zero, no rescale), "
                    "salt-pepper (the seed's: zero w.p. noise_p, then set any entry to 1 w.p. noise_p).",
    )
    noise_p: float = Field(0.5, ge=0, lt=1, description="Noise probability (the seed used 0.01).")
    binarize: bool = Field(True, description="Use 1 for every interaction; false keeps ratings (scaled to [0,1]).")
    loss: Literal["bce", "multinomial"] = Field(
        "multinomial", description="bce (binary cross-entropy with logits) or multinomial (Mult-DAE)."
    )


@register
class DAE(TrainableRecommender):
    name: ClassVar[str] = "dae"
    Config: ClassVar[type[ModelConfig]] = DAEConfig

    config: DAEConfig

    # -- model ------------------------------------------------------------------------------------
    def build(self, train: sp.csr_matrix) -> None:
        sizes = [self.n_items, *self.config.hidden]
        # Build the first layer as the seed's nn.Linear (same init), then keep it as a bag of rows.
        first = nn.Linear(sizes[0], sizes[1])
        self.input_layer = nn.EmbeddingBag(sizes[0], sizes[1], mode="sum",
                                           _weight=first.weight.detach().t().contiguous())
        self.input_bias = nn.Parameter(first.bias.detach().clone())
        mirrored = [*sizes[1:], *reversed(sizes[:-1])]  # 420, 69, 420, items
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(mirrored[:-1], mirrored[1:]))
        # Layer 0 is the input layer; no ReLU after the bottleneck (last encoder layer) nor the output.
        bottleneck, output = len(sizes) - 2, len(mirrored) - 1
        self._relu_after = [i not in (bottleneck, output) for i in range(len(mirrored))]

    def prepare(self, train: sp.csr_matrix) -> None:
        x = sp.csr_matrix(train, dtype=np.float32, copy=True)
        x.sort_indices()
        if self.config.binarize:
            x.data[:] = 1.0
        else:
            top = float(x.data.max()) if x.nnz else 1.0
            x.data /= top if top > 0 else 1.0
        self._x = x
        self._active = np.flatnonzero(np.diff(x.indptr) > 0)

    def _rows(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CSR pieces (indices, offsets, values) of the given users' rows, on the CPU."""
        block = self._x[users]
        return (torch.from_numpy(block.indices.astype(np.int64)),
                torch.from_numpy(block.indptr[:-1].astype(np.int64)),
                torch.from_numpy(block.data))

    def encode_decode(self, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        dev, dt = self.device, self.param_dtype
        h = self.input_layer(indices.to(dev), offsets.to(dev), per_sample_weights=values.to(dev, dt))
        h = h + self.input_bias
        if self._relu_after[0]:
            h = torch.relu(h)
        for i, layer in enumerate(self.layers, start=1):
            h = layer(h)
            if self._relu_after[i]:
                h = torch.relu(h)
        return h

    def forward(self, dense_rows: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits of dense input rows (reference path; training and scoring use sparse rows)."""
        rows, cols = dense_rows.nonzero(as_tuple=True)
        offsets = torch.searchsorted(rows, torch.arange(len(dense_rows), device=rows.device))
        return self.encode_decode(cols, offsets, dense_rows[rows, cols])

    def add_noise(self, users: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
                  n_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noisy copy of a batch's non-zeros: returns (rows, indices, values) sorted by row."""
        p, g = self.config.noise_p, self.rng
        rows = users
        if p == 0:
            return rows, indices, values
        keep = torch.rand(values.shape, generator=g) >= p
        rows, indices, values = rows[keep], indices[keep], values[keep]
        if self.config.noise == "dropout":
            values = values / (1.0 - p)
        elif self.config.noise == "salt-pepper":
            total = n_rows * self.n_items
            n_salt = int(torch.binomial(torch.tensor(float(total)), torch.tensor(p), generator=g))
            salt = torch.unique(torch.randint(total, (n_salt,), generator=g))
            keys = rows * self.n_items + indices
            survive = ~torch.isin(keys, salt)
            keys = torch.cat([keys[survive], salt])
            values = torch.cat([values[survive], torch.ones(len(salt), dtype=values.dtype)])
            order = torch.argsort(keys)
            keys, values = keys[order], values[order]
            rows, indices = keys // self.n_items, keys % self.n_items
        return rows, indices, values

    # -- engine hooks -----------------------------------------------------------------------------
    def num_batches(self, train: sp.csr_matrix) -> int:
        return math.ceil(len(self._active) / self.training_config.batch_size)

    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[Any]:
        order = self._active[torch.randperm(len(self._active), generator=generator).numpy()]
        for start in range(0, len(order), self.training_config.batch_size):
            yield order[start : start + self.training_config.batch_size]

    def batch_samples(self, batch: Any) -> int:
        return len(batch)

    def training_loss(self, batch: np.ndarray) -> torch.Tensor:
        indices, offsets, values = self._rows(batch)
        n = len(batch)
        counts = torch.diff(torch.cat([offsets, torch.tensor([len(indices)])]))
        rows = torch.repeat_interleave(torch.arange(n), counts)
        target = torch.zeros((n, self.n_items), dtype=self.param_dtype)
        target[rows, indices] = values.to(self.param_dtype)
        target = target.to(self.device)
        n_rows, n_idx, n_val = self.add_noise(rows, indices, values, n)
        n_off = torch.searchsorted(n_rows, torch.arange(n))
        logits = self.encode_decode(n_idx, n_off, n_val)
        if logits.dtype in LOW_PRECISION:  # the loss itself stays in float32 under autocast
            logits = logits.float()
        target = target.to(logits.dtype)
        if self.config.loss == "multinomial":
            return -(F.log_softmax(logits, dim=1) * target).sum(dim=1).mean()
        return F.binary_cross_entropy_with_logits(logits, target)

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                indices, offsets, values = self._rows(users.detach().cpu().numpy())
                return self.encode_decode(indices, offsets, values)
        finally:
            self.train(was_training)
