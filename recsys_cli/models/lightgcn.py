"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the user–item graph, trained with BPR.

E⁰ holds one row per user and per item, initialised N(0, 0.1²). The final embeddings are the mean
of the propagation layers, layer 0 included: E = (1/(K+1)) Σ_{k=0..K} Ã^k E⁰, where Ã is the
symmetrically normalised adjacency without self-loops (:mod:`recsys_cli.models._graph`). A score
is the dot product of the final user and item embeddings.

Training follows the paper's reproduction (the reference implementation's ``LightGCN_our_interface``,
../shared/spec/models.md §6): one epoch is one pass over the training interactions in shuffled
order, each paired with a uniform negative from the vectorised sampler; the loss is
mean softplus(x_uj − x_ui) plus
``l2_reg · ½(‖e⁰_u‖² + ‖e⁰_i‖² + ‖e⁰_j‖²) / batch`` on the batch's layer-0 rows. The full propagation
is recomputed for every batch, since every row of E⁰ within K hops of the batch gets a gradient.
After training the final embeddings are computed once and scoring is a dense matmul per user block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ResourceError
from recsys_cli.models._graph import NormalizedAdjacency, propagate
from recsys_cli.models.registry import register
from recsys_cli.training import NegativeSampler, TrainableRecommender


class LightGCNConfig(ModelConfig):
    name: Literal["lightgcn"] = "lightgcn"
    dim: int = Field(64, ge=1, description="lightgcn: embedding size.")
    layers: int = Field(3, ge=0, description="lightgcn: propagation layers K (0 gives BPR matrix factorisation).")
    weighting: Literal["binary", "ratings"] = Field(
        "binary",
        description="lightgcn: adjacency values — binary (the paper) or ratings (degrees are sums of ratings, "
        "1/(sqrt(d)+1e-6)).",
    )
    edge_dropout: float = Field(
        0.0, ge=0, lt=1, description="lightgcn: share of interactions dropped from the graph at each training batch."
    )
    l2_reg: float = Field(1e-4, ge=0, description="lightgcn: L2 weight on the batch's layer-0 embeddings.")
    init_std: float = Field(0.1, gt=0, description="lightgcn: standard deviation of the normal initialisation.")


@register
class LightGCN(TrainableRecommender):
    name: ClassVar[str] = "lightgcn"
    Config: ClassVar[type[ModelConfig]] = LightGCNConfig

    config: LightGCNConfig

    # -- engine hooks -----------------------------------------------------------------------------
    def build(self, train: sp.csr_matrix) -> None:
        c = self.config
        self.user_embedding = nn.Embedding(self.n_users, c.dim)
        self.item_embedding = nn.Embedding(self.n_items, c.dim)
        nn.init.normal_(self.user_embedding.weight, std=c.init_std)
        nn.init.normal_(self.item_embedding.weight, std=c.init_std)

    def prepare(self, train: sp.csr_matrix) -> None:
        self.adjacency = NormalizedAdjacency(
            train, self.config.weighting, device=self.device, dtype=self.dtype
        )
        self._sampler = NegativeSampler(train)
        coo = sp.csr_matrix(train).tocoo()
        users = coo.row.astype(np.int64)
        keep = self._sampler.has_negatives()[torch.from_numpy(users)].numpy()
        # a user who has interacted with every item has no negative, so no BPR sample
        self._pos_users = torch.from_numpy(users[keep])
        self._pos_items = torch.from_numpy(coo.col.astype(np.int64)[keep])
        self._user_final: torch.Tensor | None = None
        self._item_final: torch.Tensor | None = None

    batch_size: int = 1024  # training.batch_size, recorded by fit

    def fit(self, train: sp.csr_matrix, ctx) -> None:
        self.batch_size = int(ctx.training.batch_size)
        need = self.planned_bytes(train.shape, sp.csr_matrix(train).nnz)
        if ctx.memory_budget_bytes is not None and need > ctx.memory_budget_bytes:
            raise ResourceError(
                f"lightgcn needs about {need / 2**30:.2f} GiB on {self.device.type} for "
                f"{train.shape[0]:,}+{train.shape[1]:,} nodes, {train.nnz:,} interactions and dim "
                f"{self.config.dim}, more than the {ctx.memory_budget_bytes / 2**30:.2f} GiB available",
                hint="lower model.dim, raise device.memory_budget_gb, or use a device with more memory",
            )
        super().fit(train, ctx)

    def planned_bytes(self, shape: tuple[int, int], nnz: int) -> int:
        """Memory of a fit: the adjacency (both directions: index, value, edge id, row id; plus a
        dropped-out copy) and about ten (users+items) × dim buffers (weights, gradients, two Adam
        moments, propagation and its backward)."""
        nodes, entries = shape[0] + shape[1], 2 * nnz
        adjacency = entries * (4 + 8 + 4 + 4) * (2 if self.config.edge_dropout > 0 else 1)
        return adjacency + nodes * (8 + 4) + 10 * nodes * self.config.dim * 4

    def num_batches(self, train: sp.csr_matrix) -> int:
        return -(-len(self._pos_users) // self.batch_size)

    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        # the whole epoch is shuffled and its negatives drawn at once, then moved to the device once
        order = torch.randperm(len(self._pos_users), generator=generator)
        users, positives = self._pos_users[order], self._pos_items[order]
        negatives = self._sampler.sample(users, generator)
        samples = torch.stack([users, positives, negatives]).to(self.device, non_blocking=True)
        for chunk in samples.split(self.batch_size, dim=1):
            yield chunk[0], chunk[1], chunk[2]

    def layer0(self) -> torch.Tensor:
        return torch.cat([self.user_embedding.weight, self.item_embedding.weight])

    def propagated(self, *, training: bool, layer0: torch.Tensor | None = None) -> torch.Tensor:
        """Final embeddings of every node (users first), differentiable in E⁰."""
        p = self.config.edge_dropout
        if training and p > 0:
            op = self.adjacency.dropped(p, generator=self._dropout_generator())
        else:
            op = self.adjacency.full
        return propagate(self.layer0() if layer0 is None else layer0, op, self.config.layers)

    def _dropout_generator(self) -> torch.Generator:
        """A device generator seeded from the epoch's CPU generator, so runs and resumes replay exactly."""
        seed = int(torch.randint(2**62, (1,), generator=self.rng))
        return torch.Generator(device=self.device).manual_seed(seed)

    def training_loss(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        users, positives, negatives = batch
        # one gather for the batch's users, positives and negatives: each gather's backward
        # writes a (users+items) × dim gradient, so fewer gathers save whole-matrix passes
        nodes = torch.cat([users, positives + self.n_users, negatives + self.n_users])
        layer0 = self.layer0()
        e_u, e_i, e_j = self.propagated(training=True, layer0=layer0)[nodes].chunk(3)
        loss = F.softplus((e_u * e_j).sum(dim=1) - (e_u * e_i).sum(dim=1)).mean()
        if self.config.l2_reg > 0:
            l2 = 0.5 * layer0[nodes].pow(2).sum() / len(users)
            loss = loss + self.config.l2_reg * l2
        return loss

    def before_evaluation(self) -> None:
        final = self.propagated(training=False).detach()
        if final.dtype != self.param_dtype:
            final = final.to(self.param_dtype)
        self._user_final, self._item_final = final[: self.n_users], final[self.n_users :]

    def extra_metadata(self) -> dict:  # what ran: the propagation falls back to float32 where needed
        return {**super().extra_metadata(), "compute_dtype": str(self.adjacency.dtype).replace("torch.", "")}

    # -- scoring ----------------------------------------------------------------------------------
    def score(self, users: torch.Tensor) -> torch.Tensor:
        if self._user_final is None:
            self.finish_training()
        users = users.to(self.device)
        return self._user_final[users] @ self._item_final.T
