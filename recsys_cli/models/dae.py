"""Denoising autoencoder over users' interaction rows: the reference implementation's DAE
(../shared/spec/models.md §6) with its defects fixed.

Architecture (default ``hidden: [420, 69]``): items → 420 → ReLU → 69 → 420 → ReLU → items, the
decoder mirroring the encoder, no output activation; the scores of a user are the reconstruction
(logits) of their training row. Unlike the reference implementation:

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
from recsys_cli.models._linalg import quiet_sparse
from recsys_cli.models._ragged import ragged_arange
from recsys_cli.models.registry import register
from recsys_cli.training.engine import LOW_PRECISION, TrainableRecommender


class DAEConfig(ModelConfig):
    name: Literal["dae"] = "dae"
    hidden: list[int] = Field(
        [420, 69], min_length=1,
        description="Encoder layer sizes; the decoder mirrors them ([420, 69]: items→420→69→420→items).",
    )
    noise: Literal["dropout", "mask", "salt-pepper"] = Field(
        "dropout",
        description="Input noise: dropout (zero w.p. noise_p, rescale survivors), mask (zero, no rescale), "
                    "salt-pepper (zero w.p. noise_p, then set any entry to 1 w.p. noise_p).",
    )
    noise_p: float = Field(0.5, ge=0, lt=1, description="Noise probability.")
    binarize: bool = Field(True, description="Use 1 for every interaction; false keeps ratings (scaled to [0,1]).")
    loss: Literal["bce", "multinomial"] = Field(
        "multinomial", description="bce (binary cross-entropy with logits) or multinomial (Mult-DAE)."
    )
    activation: Literal["relu", "tanh"] = Field(
        "relu", description="relu: after every hidden layer but the bottleneck; tanh: after every "
        "hidden layer, the bottleneck included (Mult-DAE's)."
    )
    min_batches_per_epoch: int | None = Field(
        None, ge=1,
        description="Users per batch = min(training.batch_size, ceil(users / this)), so a small data set still "
                    "gets this many optimizer steps per epoch (null: always training.batch_size).",
    )


@register
class DAE(TrainableRecommender):
    name: ClassVar[str] = "dae"
    Config: ClassVar[type[ModelConfig]] = DAEConfig

    config: DAEConfig

    # -- model ------------------------------------------------------------------------------------
    def build(self, train: sp.csr_matrix) -> None:
        sizes = [self.n_items, *self.config.hidden]
        # Build the first layer as an nn.Linear to get its default init, then keep it as a bag of rows.
        first = nn.Linear(sizes[0], sizes[1])
        self.input_layer = nn.EmbeddingBag(sizes[0], sizes[1], mode="sum",
                                           _weight=first.weight.detach().t().contiguous())
        self.input_bias = nn.Parameter(first.bias.detach().clone())
        mirrored = [*sizes[1:], *reversed(sizes[:-1])]  # 420, 69, 420, items
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(mirrored[:-1], mirrored[1:]))
        # Layer 0 is the input layer; never an activation after the output; the reference implementation's ReLU
        # net has none after the bottleneck (last encoder layer) either, Mult-DAE's tanh net has one there.
        bottleneck, output = len(sizes) - 2, len(mirrored) - 1
        tanh = self.config.activation == "tanh"
        self._act = torch.tanh if tanh else torch.relu
        self._act_after = [i != output and (tanh or i != bottleneck) for i in range(len(mirrored))]

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
        # Torch views of the whole CSR, made once: a batch's rows are gathered with index ops
        # instead of a scipy row slice (and int32 → int64 copies) per batch. Read-only: the data
        # array is shared with self._x and noise always works on a gathered copy.
        self._indptr = torch.from_numpy(x.indptr.astype(np.int64))
        self._indices = torch.from_numpy(x.indices.astype(np.int64))
        self._values = torch.from_numpy(x.data)

    def _rows(self, users: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CSR pieces (indices, offsets, values) of the given users' rows, on the CPU."""
        users = torch.as_tensor(users, dtype=torch.int64)
        starts = self._indptr[users]
        counts = self._indptr[users + 1] - starts
        ends = torch.cumsum(counts, 0)
        # Position of every non-zero of the batch in the whole CSR: its row start plus its rank in the row.
        pos = ragged_arange(starts, counts, int(ends[-1]) if len(ends) else 0)
        return self._indices[pos], ends - counts, self._values[pos]

    def _first_layer(self, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """rows @ W for sparse rows: sparse CSR/CSC products when training on the CPU, the
        EmbeddingBag elsewhere.

        On the CPU, EmbeddingBag's backward sorts all the batch's indices and scatters (≈10× the
        cost of the product itself); the gradient is simply rowsᵀ @ grad, a sparse product over the
        same three arrays. Without a backward pass (scoring) the EmbeddingBag forward is the faster one."""
        weight = self.input_layer.weight
        backward = torch.is_grad_enabled() and weight.requires_grad
        if backward and self.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64):
            return _SparseRowsTimesWeight.apply(weight, indices, offsets, values.to(weight.dtype))
        dev = self.device
        return self.input_layer(indices.to(dev), offsets.to(dev), per_sample_weights=values.to(dev, weight.dtype))

    def encode(self, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Hidden activations before the output layer for sparse input rows (indices, row offsets, values)."""
        h = self._first_layer(indices, offsets, values)
        h = h + self.input_bias
        if self._act_after[0]:
            h = self._act(h)
        for i, layer in enumerate(self.layers[:-1], start=1):
            h = layer(h)
            if self._act_after[i]:
                h = self._act(h)
        return h

    def encode_decode(self, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits (batch × items) of sparse input rows."""
        return self.layers[-1](self.encode(indices, offsets, values))

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
        keep = torch.nonzero(torch.rand(values.shape, generator=g) >= p).flatten()
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
        return math.ceil(len(self._active) / self.users_per_batch())

    def users_per_batch(self) -> int:
        """training.batch_size, or fewer users when min_batches_per_epoch asks for more steps: a batch
        size that suits ML-10M's 70k users gives ML-100K's 943 a step or two per epoch."""
        cap, steps = self.training_config.batch_size, self.config.min_batches_per_epoch
        if steps is None:
            return cap
        return max(1, min(cap, math.ceil(len(self._active) / steps)))

    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[Any]:
        order = self._active[torch.randperm(len(self._active), generator=generator).numpy()]
        size = self.users_per_batch()
        for start in range(0, len(order), size):
            yield order[start : start + size]

    def batch_samples(self, batch: Any) -> int:
        return len(batch)

    def sparse_batch(self, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """A batch of users as its clean target's non-zeros (rows, cols, values) and its noisy input
        (indices, row offsets, values), all without densifying a row."""
        indices, offsets, values = self._rows(batch)
        n = len(batch)
        counts = torch.diff(offsets, append=torch.tensor([len(indices)]))
        rows = torch.repeat_interleave(torch.arange(n), counts, output_size=len(indices))
        n_rows, n_idx, n_val = self.add_noise(rows, indices, self.input_values(offsets, values), n)
        n_off = torch.searchsorted(n_rows, torch.arange(n))
        return rows, indices, values, n_idx, n_off, n_val

    def input_values(self, offsets: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The values of sparse input rows before noise, in training and scoring (the DAE's: as they are)."""
        return values

    def training_loss(self, batch: np.ndarray) -> torch.Tensor:
        rows, cols, values, *noisy = self.sparse_batch(batch)
        return self.reconstruction_loss(self.encode(*noisy), rows, cols, values)

    def reconstruction_loss(self, hidden: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                            values: torch.Tensor) -> torch.Tensor:
        """Mean loss of the output layer's logits for ``hidden`` against the clean target given by
        its non-zeros ``(rows, cols, values)``; neither the target nor a loss matrix is densified
        (see :class:`_OutputLayerLoss`)."""
        out: nn.Linear = self.layers[-1]
        dev = hidden.device
        # The logits (and then their gradient) live in one batch × items buffer reused every batch:
        # allocations above glibc's mmap threshold (32 MiB) would otherwise be page-faulted afresh.
        n, buffer_dtype = len(hidden), out.weight.dtype
        buf = getattr(self, "_logit_buffer", None)
        if buf is None or buf.shape[0] < n or buf.dtype != buffer_dtype or buf.device != dev:
            buf = self._logit_buffer = torch.empty((n, self.n_items), dtype=buffer_dtype, device=dev)
        self._logit_generation = getattr(self, "_logit_generation", 0) + 1
        compute_dtype = self.dtype if self.dtype in LOW_PRECISION and torch.is_autocast_enabled(dev.type) else None
        return _OutputLayerLoss.apply(hidden.to(buffer_dtype), out.weight, out.bias, rows.to(dev), cols.to(dev),
                                      values.to(dev, buffer_dtype), self.config.loss, buf[:n], self,
                                      self._logit_generation, compute_dtype)

    # -- scoring ----------------------------------------------------------------------------------
    def before_evaluation(self) -> None:
        self._logit_buffer = None  # the training buffer (batch × items) is not needed to score

    def score(self, users: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                indices, offsets, values = self._rows(users.detach().cpu().numpy())
                return self.encode_decode(indices, offsets, self.input_values(offsets, values))
        finally:
            self.train(was_training)


class _SparseRowsTimesWeight(torch.autograd.Function):
    """``X @ W`` for a CSR batch ``X`` (indices, row offsets, values) and a dense CPU ``W``.

    The same maths as ``EmbeddingBag(mode="sum", per_sample_weights=values)``; forward and the
    weight gradient ``Xᵀ @ grad`` both run as PyTorch sparse products over the batch's non-zeros
    only: X as CSR, and the same three arrays read as the CSC layout of Xᵀ, so no transpose is built.
    These multithreaded kernels replaced scipy's CSR products, with the same values bit for bit in
    the checks of docs/training.md, in about 30 % less time on two cores."""

    @staticmethod
    def forward(ctx, weight, indices, offsets, values):  # noqa: D102
        n, m = len(offsets), weight.shape[0]
        indptr = torch.cat([offsets, torch.tensor([len(indices)], dtype=offsets.dtype)])
        # valid by construction, so PyTorch's invariant checks are skipped
        with quiet_sparse():
            ctx.xt = torch.sparse_csc_tensor(indptr, indices, values, size=(m, n), check_invariants=False)
            x = torch.sparse_csr_tensor(indptr, indices, values, size=(n, m), check_invariants=False)
        with torch.autocast("cpu", enabled=False):  # the weight's precision, as the layer's is (no half kernels)
            return x @ weight.detach()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        with torch.autocast("cpu", enabled=False):
            return (ctx.xt @ grad.to(ctx.xt.dtype).contiguous()).to(grad.dtype), None, None, None


class _OutputLayerLoss(torch.autograd.Function):
    """Output layer ``z = h Wᵀ + b`` and the reconstruction loss against a sparse target, fused.

    For a batch of n rows over m items and target x (non-zeros ``values`` at ``(rows, cols)``):

    - multinomial: (1/n) Σ_u [ (Σ_j x_uj) · logsumexp(z_u) − Σ_j x_uj z_uj ] = −(1/n) Σ x · log_softmax(z),
      dz = (softmax(z_u) · Σ_j x_uj − x_u) / n;
    - bce: (1/(n m)) Σ [ softplus(z) − x z ] = mean BCE-with-logits, dz = (sigmoid(z) − x) / (n m).

    The only batch × items array is ``buf``: it receives z, is turned in place into exp(z − max) or
    sigmoid(z), and in backward into dz, which feeds the two weight-gradient products. The target
    enters through its non-zeros only. ``compute_dtype`` (bfloat16/float16 under autocast) is the
    precision of the three matrix products; the loss maths stays in ``buf``'s dtype.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, cols, values, kind, buf, owner, generation,  # noqa: D102
                compute_dtype):
        with torch.autocast(buf.device.type, enabled=False):
            return _OutputLayerLoss._forward(ctx, hidden, weight, bias, rows, cols, values, kind, buf, owner,
                                             generation, compute_dtype)

    @staticmethod
    def _forward(ctx, hidden, weight, bias, rows, cols, values, kind, buf, owner, generation, compute_dtype):
        n, m = buf.shape
        if compute_dtype is None:
            torch.addmm(bias, hidden, weight.t(), out=buf)
        else:
            buf.copy_(torch.addmm(bias.to(compute_dtype), hidden.to(compute_dtype), weight.to(compute_dtype).t()))
        flat = rows * m + cols
        picked = (buf.view(-1)[flat] * values).sum()
        if kind == "multinomial":
            top = buf.amax(dim=1)
            mass = torch.zeros(n, dtype=buf.dtype, device=buf.device).index_add_(0, rows, values)
            total = buf.sub_(top[:, None]).exp_().sum(dim=1)  # buf = exp(z − max): softmax up to 1/total
            loss = ((mass * (total.log() + top)).sum() - picked) / n
            ctx.row_scale = mass / total / n  # dz = buf · row_scale − x / n
        else:
            # In row blocks, so that no second batch × items array is made; buf keeps sigmoid(z).
            softplus_sum = sum(F.softplus(block).sum() for block in buf.split(64))
            buf.sigmoid_()
            loss = (softplus_sum - picked) / (n * m)
            ctx.row_scale = None
        ctx.save_for_backward(hidden, weight, flat, values)
        ctx.buf, ctx.owner, ctx.generation, ctx.kind, ctx.compute_dtype = buf, owner, generation, kind, compute_dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: D102
        hidden, weight, flat, values = ctx.saved_tensors
        if ctx.owner._logit_generation != ctx.generation:
            raise RuntimeError("the DAE's logit buffer was reused by a later batch before this backward pass")
        buf = ctx.buf
        ctx.buf = None
        n, m = buf.shape
        with torch.autocast(buf.device.type, enabled=False):
            if ctx.kind == "multinomial":
                scale = grad_loss / n
                grad = buf.mul_((ctx.row_scale * grad_loss)[:, None])
            else:
                scale = grad_loss / (n * m)
                grad = buf.mul_(scale)
            grad.view(-1).index_add_(0, flat, values * -scale)
            return _OutputLayerLoss._backward(ctx, grad, hidden, weight)

    @staticmethod
    def _backward(ctx, grad, hidden, weight):
        grad_bias = grad.sum(dim=0)
        if ctx.compute_dtype is not None:
            low = grad.to(ctx.compute_dtype)
            grad_hidden = (low @ weight.to(ctx.compute_dtype)).to(hidden.dtype)
            grad_weight = (low.t() @ hidden.to(ctx.compute_dtype)).to(weight.dtype)
        else:
            grad_hidden = grad @ weight
            grad_weight = grad.t() @ hidden
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None, None, None
