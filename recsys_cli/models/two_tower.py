"""Two-tower recommenders: the reference implementation's types 1 and 2 (``variant: 1 | 2``) with its
defects fixed (../shared/spec/models.md §6).

``layers = [L0, L1, ..., Ln]``; user and item embeddings have ``L0 / 2`` dimensions each.

- **variant 1**: [user emb; item emb] (L0) → Linear L0→L1 → ReLU → … → Ln → ReLU → Linear(Ln, 1) → sigmoid.
- **variant 2**: one tower per side, Linear L0/2→L1 → ReLU → … → Ln → ReLU; the two tower outputs are
  multiplied elementwise, then Linear(Ln, 1) → sigmoid.

The reference implementation's ``layers: [10, 5, 2, 2]`` is expressible as is. ``init: seed``
initialises as the reference implementation does: embeddings N(0, 1), hidden Linear weights N(0, 1)
with zero bias, output weights U(0, 1) with zero bias; ``init: default`` keeps PyTorch's (embeddings
N(0, 0.1²) here, Linear Kaiming-uniform).

Training: every epoch visits every training interaction once in shuffled batches; each positive
comes with ``num_negatives`` uniform negatives the user has not interacted with (vectorised
:class:`~recsys_cli.training.sampling.NegativeSampler`). ``training.batch_size`` counts samples,
positives and negatives together. ``loss``:

- ``bce``: binary cross-entropy on logits, positives labelled 1 and their negatives 0 (as in the reference
  implementation);
- ``bpr``: −log σ(s(u, i⁺) − s(u, i⁻)) for each positive and each of its negatives (Rendle et al. 2009);
- ``softmax``: sampled softmax over the batch (Yi et al., RecSys 2019). Every positive (u, i) is
  scored against the items of all the batch's positives plus all its uniform negatives (``num_negatives``
  per positive, 0 allowed); logits are s/τ − log q_j, where q_j is the probability that a candidate slot
  holds item j (the mixture of the positives' item popularity and the uniform draw), so popular items
  are not over-penalised for appearing often as negatives. Candidates that are the positive's own item
  elsewhere in the batch are masked (accidental hits). Scores stay s(u, i): τ and log-Q only shape
  the training loss. ``in_batch_candidates: N`` keeps only the first N positives' items (and their
  negatives) as shared candidates, plus each positive's own item: cheaper, less accurate
  (docs/training.md).

Scoring returns logits (the sigmoid does not change rankings) for all items of a block of users as
tensor operations: variant 2 evaluates the item tower once per item (cached) and the user tower once
per user, then one matrix product; variant 1 splits the first Linear into its user and item halves,
so only the layers after the first run on (user, item) pairs, in memory-bounded blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from recsys_cli.config.schema import ModelConfig
from recsys_cli.errors import ResourceError
from recsys_cli.models._ragged import ragged_arange
from recsys_cli.models.registry import register
from recsys_cli.training.engine import LOW_PRECISION, TrainableRecommender
from recsys_cli.training.sampling import NegativeSampler

PAIR_BLOCK_ELEMENTS = 1 << 21  # widest activation of a variant-1 scoring block (8 MiB in float32: cache-sized)
ONE_LAYER_BLOCK_ELEMENTS = 1 << 18  # users × items of a one-hidden-layer scoring block on the CPU (1 MiB)
VARIANT1_SOFTMAX_BYTES = 4 << 30  # cap on a variant-1 softmax batch's pair activations


class TwoTowerConfig(ModelConfig):
    name: Literal["two-tower"] = "two-tower"
    variant: Literal[1, 2] = Field(1, description="1: concatenate then MLP; 2: a tower per side, product, linear.")
    layers: list[int] = Field(
        [64, 32, 16], min_length=1,
        description="[L0, L1, ...]: embeddings of L0/2 per side, then Linear layers (reference implementation: [10, 5, 2, 2]).",
    )
    num_negatives: int = Field(
        3, ge=0, description="Uniform negatives per training positive (softmax: extra candidates shared by the batch; "
        "bce and bpr need at least 1)."
    )
    loss: Literal["bce", "bpr", "softmax"] = Field(
        "bce", description="bce: pointwise with uniform negatives; bpr: pairwise; softmax: in-batch sampled softmax "
        "with the log-Q correction."
    )
    temperature: float = Field(1.0, gt=0, description="softmax: logits are divided by this.")
    in_batch_candidates: int | None = Field(
        None, ge=1, description="softmax: score each positive against the items of only this many of the batch's "
        "positives (and their uniform negatives), a random sample since batches are shuffled; null: all of them."
    )
    normalize: bool = Field(
        False, description="variant 2: L2-normalise each tower's output (cosine similarity; pair with a temperature)."
    )
    init: Literal["seed", "default"] = Field(
        "default", description="seed: N(0,1) embeddings and weights, U(0,1) output; default: PyTorch's."
    )

    @model_validator(mode="after")
    def _loss_needs(self) -> TwoTowerConfig:
        if self.loss in ("bce", "bpr") and self.num_negatives < 1:
            raise ValueError(f"loss {self.loss} needs num_negatives >= 1 (only softmax works from in-batch negatives)")
        if self.in_batch_candidates is not None and self.loss != "softmax":
            raise ValueError(f"in_batch_candidates applies to loss softmax, not {self.loss} (remove it or set loss: softmax)")
        if self.normalize and self.variant != 2:
            raise ValueError("normalize applies to variant 2's tower outputs; variant 1 has no towers")
        return self

    @field_validator("layers")
    @classmethod
    def _even_first(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError("every layer size must be >= 1")
        if value[0] % 2 or value[0] < 2:
            raise ValueError("layers[0] must be even: it is the user and item embedding sizes together")
        return value


class PairBatch(tuple):
    """A training batch ``(users, items, labels)`` laid out as (1 + k) blocks of ``positives`` pairs:
    block 0 holds the positives, block j their j-th negatives (same users, same order)."""

    positives: int

    def __new__(cls, tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor], *, positives: int) -> PairBatch:
        obj = super().__new__(cls, tensors)
        obj.positives = positives
        return obj


def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods)


@register
class TwoTower(TrainableRecommender):
    name: ClassVar[str] = "two-tower"
    Config: ClassVar[type[ModelConfig]] = TwoTowerConfig

    config: TwoTowerConfig

    # -- model ------------------------------------------------------------------------------------
    def build(self, train: sp.csr_matrix) -> None:
        cfg = self.config
        dim = cfg.layers[0] // 2
        self.user_emb = nn.Embedding(self.n_users, dim)
        self.item_emb = nn.Embedding(self.n_items, dim)
        if cfg.variant == 1:
            self.mlp = _mlp(list(cfg.layers))
        else:
            self.user_tower = _mlp([dim, *cfg.layers[1:]])
            self.item_tower = _mlp([dim, *cfg.layers[1:]])
        self.out = nn.Linear(cfg.layers[-1], 1)
        self._init_weights()
        self._item_cache: torch.Tensor | None = None

    def _init_weights(self) -> None:
        with torch.no_grad():
            if self.config.init == "seed":
                for module in self.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.normal_(0.0, 1.0)
                        module.bias.zero_()
                self.out.weight.uniform_(0.0, 1.0)
                self.out.bias.zero_()
            else:
                self.user_emb.weight.normal_(0.0, 0.1)
                self.item_emb.weight.normal_(0.0, 0.1)

    def prepare(self, train: sp.csr_matrix) -> None:
        coo = sp.csr_matrix(train).tocoo()
        self._sampler = NegativeSampler(train)
        ok = self._sampler.has_negatives().numpy()[coo.row]
        self._pos_users = torch.from_numpy(coo.row[ok].astype(np.int64))
        self._pos_items = torch.from_numpy(coo.col[ok].astype(np.int64))
        self._log_q = candidate_log_q(self._pos_items, self.n_items, self.config.num_negatives).to(self.device)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of (user, item) pairs, pairwise (the training path and the reference for scoring)."""
        if self.config.variant == 1:
            h = self.mlp(torch.cat([self.user_emb(users), self.item_emb(items)], dim=-1))
        else:
            # A batch repeats users (k negatives share one) and items (the catalogue is small):
            # each tower runs once per distinct id, then the outputs are gathered.
            uu, u_at = torch.unique(users, return_inverse=True)
            ii, i_at = torch.unique(items, return_inverse=True)
            user_side = self._tower(self.user_tower, self.user_emb(uu))
            h = user_side[u_at] * self._tower(self.item_tower, self.item_emb(ii))[i_at]
        return self.out(h).squeeze(-1)

    def _tower(self, tower: nn.Module, vectors: torch.Tensor) -> torch.Tensor:
        """Variant 2: one side's tower output, L2-normalised when ``normalize`` is set."""
        h = tower(vectors)
        return F.normalize(h, dim=-1) if self.config.normalize else h

    # -- engine hooks -----------------------------------------------------------------------------
    def _positives_per_batch(self) -> int:
        return max(1, self.training_config.batch_size // (1 + self.config.num_negatives))

    def num_batches(self, train: sp.csr_matrix) -> int:
        return math.ceil(len(self._pos_users) / self._positives_per_batch())

    def epoch_batches(self, train: sp.csr_matrix, generator: torch.Generator) -> Iterator[Any]:
        k = self.config.num_negatives
        if self.config.loss == "softmax" and self.config.variant == 1:
            self._check_pair_activations()
        # The whole epoch's negatives in one call, drawn for the positives in CSR (user) order: the
        # sampler's membership test then walks the sorted training keys almost sequentially, ~5×
        # faster than for shuffled queries. Row j holds the j-th negative of every positive.
        negatives = self._sampler.sample(self._pos_users.expand(k, -1), generator)
        if self.n_items < 2**31:
            negatives = negatives.to(torch.int32)  # half the memory for an epoch of negatives
        order = torch.randperm(len(self._pos_users), generator=generator)
        for idx in order.split(self._positives_per_batch()):
            users, items = self._pos_users[idx], self._pos_items[idx]
            labels = torch.zeros(len(users) * (1 + k))
            labels[: len(users)] = 1.0
            yield PairBatch((users.repeat(1 + k), torch.cat([items, negatives[:, idx].reshape(-1).long()]), labels),
                            positives=len(users))

    def _check_pair_activations(self) -> None:
        """Variant 1's softmax keeps P × C × L1 activations per batch: refuse a batch that cannot fit."""
        p = min(self._positives_per_batch(), len(self._pos_users))
        c = min(p, self.config.in_batch_candidates or p) * (1 + self.config.num_negatives)
        need = p * c * self.config.layers[1] * 4 * 3  # the merged pre-activation, its ReLU and their gradient
        if need > VARIANT1_SOFTMAX_BYTES:
            raise ResourceError(
                f"variant 1 with loss softmax would hold {need / 2**30:.1f} GiB of pair activations per batch "
                f"({p:,} positives × {c:,} candidates × {self.config.layers[1]} units)",
                hint=f"lower training.batch_size (now {self.training_config.batch_size}; 1024 needs "
                     f"{1024 * 1024 * (1 + self.config.num_negatives) * self.config.layers[1] * 12 / 2**30:.2f} GiB), "
                     "set model.in_batch_candidates (e.g. 256) or use loss bce or bpr",
            )

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        self._item_cache = None
        users, items, labels = (t.to(self.device, non_blocking=True) for t in batch)
        if not isinstance(batch, PairBatch):  # plain (user, item, label) pairs: pointwise BCE only
            if self.config.loss != "bce":
                raise ValueError(f"loss {self.config.loss} needs the structured batches of epoch_batches")
            return F.binary_cross_entropy_with_logits(self._float(self(users, items)), labels.float())
        n = batch.positives
        users, items = users[:n], items.view(-1, n)
        if self.config.loss == "softmax":
            pool = self.config.in_batch_candidates
            if pool is not None and pool < n:
                return self._pooled_softmax(users, items, pool)
            candidates = items.reshape(-1)  # the batch's positives first, then every uniform negative
            scores = self._float(self._all_pairs_logits(users, candidates))
            return sampled_softmax_loss(scores, self._log_q.index_select(0, candidates), candidates,
                                        self.config.temperature)
        logits = self._float(self._grouped_logits(users, items))
        if self.config.loss == "bpr":
            return bpr_loss(logits[0], logits[1:])
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.to(logits.dtype))

    @staticmethod
    def _float(logits: torch.Tensor) -> torch.Tensor:
        return logits.float() if logits.dtype in LOW_PRECISION else logits

    def _sides(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-user and per-item parts of the pair logits, computed once per user and per catalogue (or batch) item:
        variant 1's halves of the merge Linear (W_u·u + b and W_i·i), variant 2's tower outputs.
        Rows are read with ``index_select``, whose backward is an ``index_add_`` into the table
        gradient (``nn.Embedding``'s dense backward sorts every index on the CPU first)."""
        u = self.user_emb.weight.index_select(0, users)
        items = items.reshape(-1)
        if self.config.variant == 2:
            if items.numel() >= self.n_items:
                return (self._tower(self.user_tower, u),
                        self._tower(self.item_tower, self.item_emb.weight).index_select(0, items))
            # a batch holds fewer distinct items than a large catalogue (≤ 1,024 of ML-10M's 10,677
            # for a softmax batch): the item tower runs on those only
            distinct, at = torch.unique(items, return_inverse=True)
            return (self._tower(self.user_tower, u),
                    self._tower(self.item_tower, self.item_emb.weight.index_select(0, distinct)).index_select(0, at))
        return self._user_half(u), self._item_half().index_select(0, items)

    def _combine(self, user_side: torch.Tensor, item_side: torch.Tensor) -> torch.Tensor:
        """Logits from broadcastable user and item parts (the layers after the merge, or the product)."""
        h = user_side * item_side if self.config.variant == 2 else self.mlp[1:](user_side + item_side)
        return self.out(h).squeeze(-1)

    def _grouped_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of ``items[j, p]`` for ``users[p]`` (a (1+k) × P grid): the same maths as
        :meth:`forward` on the flattened pairs, with the per-user work done once per positive and the
        per-item work once per catalogue item (variant 1's first Linear on [u; i] is W_u·u + W_i·i + b)."""
        user_side, item_side = self._sides(users, items)
        return self._combine(user_side, item_side.view(*items.shape, -1))

    def _all_pairs_logits(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits of every candidate item for every user (P × C), for the sampled softmax."""
        return self._cross_logits(*self._sides(users, candidates))

    def _cross_logits(self, user_side: torch.Tensor, item_side: torch.Tensor) -> torch.Tensor:
        """Every user part against every item part (P × C). Variant 2 is one matrix product; variant 1
        runs the layers after the merge on all P·C pairs (a P × C × L1 activation, kept for the
        backward pass: the cost docs/training.md gives)."""
        if self.config.variant == 2:
            return torch.addmm(self.out.bias, user_side * self.out.weight[0], item_side.t())
        return self._combine(user_side[:, None, :], item_side[None, :, :])

    def _pooled_softmax(self, users: torch.Tensor, items: torch.Tensor, pool: int) -> torch.Tensor:
        """The softmax loss with the candidates of the first ``pool`` positives only (each with its
        uniform negatives): the same slot mixture as the whole batch's, so log q is unchanged. A
        positive beyond the pool gets its own item as an extra column."""
        candidates = items[:, :pool].reshape(-1)  # the pool's positives first, then their negatives
        own_items = items[0]
        user_side, item_side = self._sides(users, torch.cat([candidates, own_items[pool:]]))
        c = candidates.numel()
        scores = self._float(self._cross_logits(user_side, item_side[:c]))
        own = self._float(self._combine(user_side, torch.cat([item_side[:pool], item_side[c:]])))
        return pooled_softmax_loss(own, self._log_q.index_select(0, own_items), own_items, scores,
                                   self._log_q.index_select(0, candidates), candidates, self.config.temperature)

    def _user_half(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """Variant 1's merge Linear on [u; i] is W_u·u + W_i·i + b: this is W_u·u + b, (users × L1)."""
        first: nn.Linear = self.mlp[0]
        return F.linear(user_vectors, first.weight[:, : user_vectors.shape[1]], first.bias)

    def _item_half(self) -> torch.Tensor:
        """W_i·i for every item (items × L1)."""
        first: nn.Linear = self.mlp[0]
        items = self.item_emb.weight
        return F.linear(items, first.weight[:, items.shape[1] :])

    # -- scoring ----------------------------------------------------------------------------------
    def before_evaluation(self) -> None:
        # once per trained state: variant 2's item tower; variant 1's item half, feature-major
        # (L1 × items), the layout its scoring reads
        if self.config.variant == 2:
            self._item_cache = self._tower(self.item_tower, self.item_emb.weight)
        else:
            self._item_cache = self._item_half().t().contiguous()

    def score(self, users: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                if self._item_cache is None:
                    self.before_evaluation()
                users = users.to(self.device)
                if self.config.variant == 2:
                    u = self._tower(self.user_tower, self.user_emb(users)) * self.out.weight[0]
                    # the cache may come from a validation pass under autocast (half precision)
                    return u @ self._item_cache.to(u.dtype).t() + self.out.bias
                return self._score_variant1(users)
        finally:
            self.train(was_training)

    def _score_variant1(self, users: torch.Tensor) -> torch.Tensor:
        user_part = self._user_half(self.user_emb(users))  # (B, L1)
        item_part = self._item_cache  # (L1, I)
        hidden = [m for m in self.mlp[2:] if isinstance(m, nn.Linear)]  # each followed by a ReLU
        width, n_items = item_part.shape
        dt = item_part.dtype
        user_part = user_part.to(dt)
        out = torch.empty((len(users), n_items), device=self.device, dtype=dt)
        w_out, b_out = self.out.weight.to(dt), self.out.bias.to(dt)
        if not hidden:
            return self._score_one_hidden_layer(user_part, item_part, w_out[0], b_out, out)
        step = max(1, PAIR_BLOCK_ELEMENTS // (n_items * max([width, *(lin.out_features for lin in hidden)])))
        # Every (user, item) pair still runs the layers after the first: ~2·Σ(in·out) FLOPs per pair
        # (docs/training.md). Feature-major blocks (users × features × items) make each layer one
        # batched product with the long item axis innermost, which keeps narrow layers (e.g.
        # 5 → 2 → 2) vectorised; blocks are sized to stay in cache, ReLUs run in place.
        for start in range(0, len(users), step):
            h = torch.add(user_part[start : start + step, :, None], item_part[None]).relu_()
            n = len(h)
            # bmm with the weight broadcast over the block: torch.matmul would fold the block into
            # one 2-D product through a transposed copy of h.
            for lin in hidden:
                h = torch.bmm(lin.weight.to(dt).expand(n, -1, -1), h).add_(lin.bias.to(dt)[:, None]).relu_()
            target = out[start : start + n, None, :]
            if h.dtype == dt and not torch.is_autocast_enabled(self.device.type):
                torch.baddbmm(b_out.expand(n, 1, n_items), w_out.expand(n, -1, -1), h, out=target)
            else:
                target.copy_(torch.bmm(w_out.expand(n, -1, -1).to(h.dtype), h) + b_out)
        return out

    def _score_one_hidden_layer(self, user_part: torch.Tensor, item_part: torch.Tensor, w: torch.Tensor,
                                bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Scores when the merge Linear feeds the output directly (``layers: [2d, h]``, the default).

        Σ_k w_k·relu(a_k + b_k) = Σ_k w_k·max(b_k, −a_k) + w·a, and w_k·max(x, y) is max(w_k·x, w_k·y)
        for w_k ≥ 0 and min(w_k·x, w_k·y) for w_k < 0. So each hidden unit costs one elementwise
        max (or min) against a per-user threshold and one add, where add, ReLU and a one-row product
        cost three passes and a slow batched GEMV: at ML-10M size on the 2-core CPU, scoring + top 10
        went from 14.4 k to 21.5 k users/s in 1,000-user blocks. The loop is over the h hidden units,
        never over users or items."""
        scaled_items = item_part * w[:, None]  # (h, I): w_k·b_k
        user_w = user_part * w  # (B, h): w_k·a_k
        thresholds = user_w.neg()
        base = user_w.sum(1, keepdim=True) + bias
        positive = (w >= 0).tolist()
        n_items = item_part.shape[1]
        # CPU: blocks of about a megabyte stay in L2 across the h passes; accelerators take the
        # whole call at once (2h kernel launches).
        step = max(1, ONE_LAYER_BLOCK_ELEMENTS // n_items if out.device.type == "cpu" else len(out))
        tmp = torch.empty((min(step, len(out)), n_items), device=out.device, dtype=out.dtype)
        for start in range(0, len(out), step):
            target = out[start : start + step]
            buf = tmp[: len(target)]
            target.copy_(base[start : start + step].expand(-1, n_items))
            for k, pos in enumerate(positive):
                (torch.maximum if pos else torch.minimum)(scaled_items[k], thresholds[start : start + step, k, None],
                                                          out=buf)
                target.add_(buf)
        return out


def candidate_log_q(pos_items: torch.Tensor, n_items: int, num_negatives: int) -> torch.Tensor:
    """log q_j for every item: the probability that one candidate slot of a softmax batch holds item j.

    A batch of P positives brings P in-batch candidates, drawn (by the shuffle) with the items'
    frequency among the training positives, and k·P uniform negatives (probability 1/n_items each),
    so q_j = (freq_j + k / n_items) / (1 + k) (Yi et al. 2019 estimate q_j by streaming; here the
    frequencies are known exactly). Items that can never be a candidate get a finite floor."""
    freq = torch.bincount(pos_items, minlength=n_items).double() / max(len(pos_items), 1)
    q = (freq + num_negatives / n_items) / (1 + num_negatives)
    return q.clamp_min(1e-30).log().float()


def sampled_softmax_loss(scores: torch.Tensor, log_q: torch.Tensor, candidates: torch.Tensor,
                         temperature: float) -> torch.Tensor:
    """Mean over the P rows of −log softmax_c(scores[p, c] / τ − log q_c) at c = p.

    ``scores`` is P × C: row p is the p-th positive's user against every candidate, whose first P
    columns are the positives' own items (column p is row p's positive). Any other column holding
    row p's positive item (the same item appearing twice in the batch) is an accidental hit and is
    left out of that row's softmax."""
    n = scores.shape[0]
    # one new P × C tensor, then in place (neither step's backward needs its input or output)
    logits = (scores * (1.0 / temperature)).sub_(log_q)
    exclude_hits_(logits, candidates[:n], candidates, own_diagonal=True)  # column p is row p's own positive
    return F.cross_entropy(logits, torch.arange(n, device=scores.device))


def pooled_softmax_loss(own: torch.Tensor, own_log_q: torch.Tensor, own_items: torch.Tensor, scores: torch.Tensor,
                        log_q: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the P rows of −log softmax(s/τ − log q) at row p's own positive, over that positive
    and the C shared candidates (``scores`` is P × C). A candidate holding row p's positive item
    (its own slot among the candidates or the same item elsewhere) is left out of row p's softmax,
    so with every positive among the candidates this equals :func:`sampled_softmax_loss`."""
    inv = 1.0 / temperature
    logits = torch.cat([(own * inv - own_log_q)[:, None], (scores * inv).sub_(log_q)], dim=1)
    exclude_hits_(logits, own_items, candidates, first_column=1)  # column 0 is the own positive
    return F.cross_entropy(logits, torch.zeros(len(own), dtype=torch.long, device=logits.device))


def accidental_hits(row_items: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of every candidate holding its row's item: ``candidates[c] == row_items[r]``.

    Found through one sort of the candidates (a binary search per row), so the cost follows the
    number of hits rather than rows × candidates."""
    order = torch.argsort(candidates, stable=True)
    ranked = candidates[order]
    first = torch.searchsorted(ranked, row_items, side="left")
    counts = torch.searchsorted(ranked, row_items, side="right") - first
    total = int(counts.sum())
    rows = torch.repeat_interleave(torch.arange(len(row_items), device=candidates.device), counts, output_size=total)
    return rows, order[ragged_arange(first, counts, total)]  # row r's hits: ranked positions first[r], first[r] + 1, …


def exclude_hits_(logits: torch.Tensor, row_items: torch.Tensor, candidates: torch.Tensor, *, first_column: int = 0,
                  own_diagonal: bool = False, sparse: bool | None = None) -> None:
    """Set to −inf every logit ``logits[r, first_column + c]`` whose candidate holds row r's item.

    ``own_diagonal``: column r is row r's own positive, not a hit. Done outside autograd: the softmax
    gives these logits probability 0, so the cross-entropy's gradient there is exactly 0 already
    (masking inside the graph would give the same, at the price of a full-size copy of the gradient).
    ``sparse`` (default: on the CPU) lists the hits with :func:`accidental_hits`; elsewhere a dense
    comparison, which needs no host synchronisation (the hit count would)."""
    if sparse is None:
        sparse = logits.device.type == "cpu"
    with torch.no_grad():
        if sparse:
            rows, cols = accidental_hits(row_items, candidates)
            if own_diagonal:
                keep = rows != cols
                rows, cols = rows[keep], cols[keep]
            logits[rows, cols + first_column] = float("-inf")
        else:
            hits = row_items[:, None] == candidates[None, :]
            if own_diagonal:
                hits.diagonal().fill_(False)
            logits[:, first_column:].masked_fill_(hits, float("-inf"))


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean of −log σ(s⁺ − s⁻) = softplus(s⁻ − s⁺) over every (positive, negative) pair;
    ``positive`` is (P,), ``negative`` (k, P): row j holds each positive's j-th negative."""
    return F.softplus(negative - positive).mean()
