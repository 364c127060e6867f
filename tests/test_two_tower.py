"""Two-tower variants 1 and 2: the reference implementation's architecture and init (`init: seed`), bulk scoring, full-epoch sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from recsys_cli.config.schema import TrainingConfig
from recsys_cli.models import two_tower
from recsys_cli.models.base import FitContext
from recsys_cli.models.two_tower import TwoTower, TwoTowerConfig

CPU = torch.device("cpu")


def _train(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((30, 25)) < 0.25).astype(np.float64))


def _fitted(epochs: int = 1, **cfg) -> tuple[TwoTower, sp.csr_matrix]:
    train = _train()
    model = TwoTower(TwoTowerConfig(**cfg), device=CPU, dtype=torch.float32, seed=2)
    tc = TrainingConfig(epochs=epochs, batch_size=64, learning_rate=0.01)
    model.fit(train, FitContext(device=CPU, dtype=torch.float32, seed=2, training=tc))
    return model, train


def _pairwise(model: TwoTower, users: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(users.repeat_interleave(model.n_items), torch.arange(model.n_items).repeat(len(users))).view(
            len(users), model.n_items)


def test_the_seeds_layers_are_expressible_with_the_seeds_shapes_and_init():
    m1, _ = _fitted(variant=1, layers=[10, 5, 2, 2], init="seed")
    assert m1.user_emb.embedding_dim == m1.item_emb.embedding_dim == 5
    linears = [(lin.in_features, lin.out_features) for lin in m1.mlp if isinstance(lin, torch.nn.Linear)]
    assert linears == [(10, 5), (5, 2), (2, 2)] and m1.out.in_features == 2
    m2 = TwoTower(TwoTowerConfig(variant=2, layers=[10, 5, 2, 2], init="seed"), device=CPU, dtype=torch.float32)
    m2.n_users, m2.n_items = 3000, 2000
    m2.build(sp.csr_matrix((3000, 2000)))
    for tower in (m2.user_tower, m2.item_tower):
        assert [(lin.in_features, lin.out_features) for lin in tower if isinstance(lin, torch.nn.Linear)] == [
            (5, 5), (5, 2), (2, 2)]
    # `init: seed`: N(0, 1) embeddings and hidden weights, zero biases, U(0, 1) output weights.
    assert abs(float(m2.user_emb.weight.detach().std()) - 1.0) < 0.05
    assert all(float(lin.bias.detach().abs().max()) == 0 for lin in m2.user_tower if isinstance(lin, torch.nn.Linear))
    w = m2.out.weight.detach()
    assert 0 <= float(w.min()) and float(w.max()) <= 1


def test_layers_zero_must_be_even():
    with pytest.raises(ValidationError, match="even"):
        TwoTowerConfig(layers=[9, 4])


@pytest.mark.parametrize("layers", [[12, 6, 3], [10, 5, 2, 2], [12, 6]])
@pytest.mark.parametrize("variant", [1, 2])
def test_bulk_scores_equal_the_pairwise_forward_pass(variant, layers, monkeypatch):
    model, _ = _fitted(variant=variant, layers=layers)
    if variant == 1 and len(layers) == 2:  # the max/min kernel needs output weights of both signs
        assert (model.out.weight > 0).any() and (model.out.weight < 0).any()
    users = torch.tensor([0, 3, 7, 29, 3])
    expected = _pairwise(model, users)
    assert torch.allclose(model.score(users), expected, atol=1e-5)
    monkeypatch.setattr(two_tower, "PAIR_BLOCK_ELEMENTS", 1)  # variant 1 in blocks of one user
    monkeypatch.setattr(two_tower, "ONE_LAYER_BLOCK_ELEMENTS", 1)
    model._item_cache = None
    assert torch.allclose(model.score(users), expected, atol=1e-5)


def test_an_epoch_visits_every_positive_once_with_k_unseen_negatives():
    model, train = _fitted(layers=[8, 4], num_negatives=3)
    pairs, negatives = [], []
    for users, items, labels in model.epoch_batches(train, torch.Generator().manual_seed(0)):
        n_pos = int(labels.sum())
        assert len(users) == 4 * n_pos and torch.all(labels[:n_pos] == 1) and torch.all(labels[n_pos:] == 0)
        pairs += list(zip(users[:n_pos].tolist(), items[:n_pos].tolist()))
        negatives.append((users[n_pos:], items[n_pos:]))
    coo = train.tocoo()
    assert sorted(pairs) == sorted(zip(coo.row.tolist(), coo.col.tolist()))
    dense = train.toarray()
    for u, i in negatives:
        assert not dense[u.numpy(), i.numpy()].any()


def test_training_improves_the_loss():
    model, train = _fitted(epochs=1, variant=2, layers=[8, 4])
    later, _ = _fitted(epochs=15, variant=2, layers=[8, 4])
    batch = next(model.epoch_batches(train, torch.Generator().manual_seed(9)))
    with torch.no_grad():
        assert float(later.training_loss(batch)) < float(model.training_loss(batch))


@pytest.mark.parametrize("variant", [1, 2])
def test_the_grouped_training_path_equals_the_pairwise_forward_pass(variant):
    model, train = _fitted(variant=variant, layers=[12, 6, 3], num_negatives=2)
    model.train()
    batches = list(model.epoch_batches(train, torch.Generator().manual_seed(4)))
    assert all(isinstance(b, two_tower.PairBatch) and len(b[0]) == 3 * b.positives for b in batches)
    users, items, labels = batches[0]
    n = batches[0].positives
    assert torch.equal(users, users[:n].repeat(3))  # block j = the positives' j-th negatives
    grouped = model._grouped_logits(users[:n], items.view(3, n)).reshape(-1)
    assert torch.allclose(grouped, model(users, items), atol=1e-6)
    # The loss of a structured batch equals that of the same pairs as a plain tuple, gradients too.
    losses, grads = [], []
    for batch in (batches[0], (users, items, labels)):
        model.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_training_with_validation_then_scoring(variant, dtype):
    # Validation runs under autocast, so the cached item side is half precision; the final scoring
    # (outside autocast) must still combine it with the float32 user side.
    train = _train()
    val = _train(seed=5)
    model = TwoTower(TwoTowerConfig(variant=variant, layers=[8, 4]), device=CPU, dtype=dtype, seed=2)
    tc = TrainingConfig(epochs=2, batch_size=64, learning_rate=0.01)
    model.fit(train, FitContext(device=CPU, dtype=dtype, seed=2, training=tc, validation=val))
    scores = model.score(torch.arange(30))
    assert scores.shape == (30, 25) and torch.isfinite(scores).all()


# -- losses ----------------------------------------------------------------------------------------

def test_in_batch_softmax_with_log_q_equals_the_hand_computed_loss():
    # 3 positives (items 5, 7, 5) and one extra uniform negative (item 9); τ = 0.5.
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.5, 1.5, 0.0, 0.2], [1.0, 0.0, 3.0, 0.5]])
    q = torch.tensor([0.2, 0.05, 0.2, 0.1])
    candidates = torch.tensor([5, 7, 5, 9])
    loss = two_tower.sampled_softmax_loss(scores, q.log(), candidates, temperature=0.5)
    # logits s/τ − ln q; item 5 in column 2 is an accidental hit for row 0 (and column 0 for row 2).
    # row 0: [4 + 1.609438, 2 + 2.995732, (masked), −2 + 2.302585], positive column 0
    row0 = math.log(math.exp(5.609438) + math.exp(4.995732) + math.exp(0.302585)) - 5.609438
    # row 1: [1 + 1.609438, 3 + 2.995732, 0 + 1.609438, 0.4 + 2.302585], positive column 1
    row1 = math.log(math.exp(2.609438) + math.exp(5.995732) + math.exp(1.609438) + math.exp(2.702585)) - 5.995732
    # row 2: [(masked), 0 + 2.995732, 6 + 1.609438, 1 + 2.302585], positive column 2
    row2 = math.log(math.exp(2.995732) + math.exp(7.609438) + math.exp(3.302585)) - 7.609438
    assert abs(row0 - 0.435864) < 1e-5 and abs(row1 - 0.080120) < 1e-5 and abs(row2 - 0.023122) < 1e-5
    assert float(loss) == pytest.approx((row0 + row1 + row2) / 3, abs=1e-5)
    assert float(loss) == pytest.approx(0.179702, abs=1e-5)


def test_pooled_softmax_equals_the_hand_computed_loss():
    # 3 positives (items 5, 7, 5) scored against the pool of the first one's item (5) and a uniform
    # negative (9); τ = 0.5. Row 0's own slot and row 2's item 5 in the pool are hits: left out.
    own = torch.tensor([2.0, 1.5, 3.0])
    own_q = torch.tensor([0.2, 0.05, 0.2])
    scores = torch.tensor([[2.0, -1.0], [0.5, 0.2], [1.0, 0.5]])
    q = torch.tensor([0.2, 0.1])
    loss = two_tower.pooled_softmax_loss(own, own_q.log(), torch.tensor([5, 7, 5]), scores, q.log(),
                                         torch.tensor([5, 9]), temperature=0.5)
    # row 0: own 4 + ln 5, the negative −2 + ln 10; row 1: own 3 + ln 20, pool 1 + ln 5, negative 0.4 + ln 10;
    # row 2: own 6 + ln 5, negative 1 + ln 10
    row0 = math.log(math.exp(5.609438) + math.exp(0.302585)) - 5.609438
    row1 = math.log(math.exp(5.995732) + math.exp(2.609438) + math.exp(2.702585)) - 5.995732
    row2 = math.log(math.exp(7.609438) + math.exp(3.302585)) - 7.609438
    assert float(loss) == pytest.approx((row0 + row1 + row2) / 3, abs=1e-5)
    assert float(loss) == pytest.approx(0.028966, abs=1e-5)


def test_pooled_softmax_over_every_positive_is_the_in_batch_softmax():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 12, generator=g)
    candidates = torch.randint(0, 5, (12,), generator=g)  # repeated items: accidental hits
    log_q = torch.rand(12, generator=g).log()
    whole = two_tower.sampled_softmax_loss(scores, log_q, candidates, temperature=0.3)
    pooled = two_tower.pooled_softmax_loss(scores.diagonal(), log_q[:6], candidates[:6], scores, log_q, candidates,
                                           temperature=0.3)
    assert float(pooled) == pytest.approx(float(whole), rel=1e-6)


def test_accidental_hits_are_every_matching_pair():
    g = torch.Generator().manual_seed(4)
    candidates = torch.randint(0, 6, (40,), generator=g)
    row_items = torch.cat([candidates[:10], torch.tensor([99])])  # 99 matches nothing
    rows, cols = two_tower.accidental_hits(row_items, candidates)
    expected = (row_items[:, None] == candidates[None, :]).nonzero()
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(map(tuple, expected.tolist()))


@pytest.mark.parametrize("own_diagonal, first_column", [(True, 0), (False, 1)])
def test_hit_exclusion_by_sort_equals_the_dense_comparison(own_diagonal, first_column):
    # the CPU lists hits by sorting; other devices compare densely (no host synchronisation)
    g = torch.Generator().manual_seed(6)
    candidates = torch.randint(0, 5, (30,), generator=g)
    row_items = candidates[:7] if own_diagonal else torch.randint(0, 7, (7,), generator=g)
    logits = torch.randn(7, 30 + first_column, generator=g)
    by_sort, dense = logits.clone(), logits.clone()
    two_tower.exclude_hits_(by_sort, row_items, candidates, first_column=first_column, own_diagonal=own_diagonal,
                            sparse=True)
    two_tower.exclude_hits_(dense, row_items, candidates, first_column=first_column, own_diagonal=own_diagonal,
                            sparse=False)
    assert torch.equal(by_sort, dense)
    excluded = torch.isinf(by_sort)
    assert 7 < excluded.sum() < 7 * 30 and not excluded[:, :first_column].any()
    if own_diagonal:
        assert not excluded.diagonal().any()


@pytest.mark.parametrize("pooled", [False, True])
def test_softmax_hit_exclusion_equals_masking_in_the_graph(pooled):
    # Excluding hits outside autograd must give the same loss and gradient, bit for bit, as masking
    # them inside the graph (the gradient at an excluded logit is 0 either way).
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(8, 24, generator=g, requires_grad=True)
    candidates = torch.randint(0, 4, (24,), generator=g)  # many repeated items
    log_q = torch.rand(24, generator=g).log()
    logits = (scores * (1 / 0.3)).sub(log_q)
    if pooled:
        own, own_items = scores[:, 0] * 1.5, candidates[:8].flip(0)
        loss = two_tower.pooled_softmax_loss(own, log_q[:8], own_items, scores, log_q, candidates, 0.3)
        logits = torch.cat([(own * (1 / 0.3) - log_q[:8])[:, None], logits], dim=1)
        hits = torch.cat([torch.zeros(8, 1, dtype=torch.bool), candidates[None, :] == own_items[:, None]], dim=1)
        target = torch.zeros(8, dtype=torch.long)
    else:
        loss = two_tower.sampled_softmax_loss(scores, log_q, candidates, 0.3)
        hits = candidates[None, :] == candidates[:8, None]
        hits.diagonal().fill_(False)
        target = torch.arange(8)
    assert hits.sum() > 8  # the case under test: several hits per row
    (grad,) = torch.autograd.grad(loss, scores, retain_graph=True)
    reference = F.cross_entropy(logits.masked_fill(hits, float("-inf")), target)
    (reference_grad,) = torch.autograd.grad(reference, scores)
    assert torch.equal(loss, reference) and torch.equal(grad, reference_grad)


def test_candidate_log_q_mixes_item_frequency_with_the_uniform_draw():
    log_q = two_tower.candidate_log_q(torch.tensor([0, 0, 1, 2]), n_items=5, num_negatives=1)
    # frequencies [.5, .25, .25, 0, 0]; one uniform negative per positive: q = (freq + 1/5) / 2
    assert torch.allclose(log_q.exp(), torch.tensor([0.35, 0.225, 0.225, 0.1, 0.1]))
    in_batch_only = two_tower.candidate_log_q(torch.tensor([0, 0, 1, 2]), n_items=5, num_negatives=0)
    assert torch.allclose(in_batch_only.exp()[:3], torch.tensor([0.5, 0.25, 0.25]))


def test_bpr_equals_its_formula():
    positive = torch.tensor([2.0, 0.0])
    negative = torch.tensor([[1.0, 1.0], [2.0, -3.0]])  # row j: each positive's j-th negative
    expected = -(math.log(_sigmoid(1.0)) + math.log(_sigmoid(-1.0)) + math.log(_sigmoid(0.0))
                 + math.log(_sigmoid(3.0))) / 4
    assert float(two_tower.bpr_loss(positive, negative)) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((0.313262 + 1.313262 + 0.693147 + 0.048587) / 4, abs=1e-5)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize("variant", [1, 2])
def test_the_models_softmax_and_bpr_losses_equal_the_formulas_on_pairwise_logits(variant):
    extra = {"normalize": True, "temperature": 0.2} if variant == 2 else {"temperature": 0.2}
    for loss, k in (("softmax", 1), ("softmax", 0), ("bpr", 2)):
        model, train = _fitted(variant=variant, layers=[12, 6, 3], loss=loss, num_negatives=k,
                               **(extra if loss == "softmax" else {}))
        model.train()
        batch = next(iter(model.epoch_batches(train, torch.Generator().manual_seed(4))))
        users, items, _ = batch
        n = batch.positives
        with torch.no_grad():
            got = float(model.training_loss(batch))
            if loss == "bpr":
                logits = model(users, items).view(1 + k, n)
                expected = float(torch.log1p(torch.exp(-(logits[0] - logits[1:]))).mean())
            else:
                pairs = model(users[:n].repeat_interleave(len(items)), items.repeat(n)).view(n, len(items))
                freq = torch.bincount(model._pos_items, minlength=model.n_items).double() / len(model._pos_items)
                q = ((freq + k / model.n_items) / (1 + k))[items]
                logits = pairs / 0.2 - q.log()
                same = items[None, :] == items[:n, None]
                same[torch.arange(n), torch.arange(n)] = False
                logits[same] = float("-inf")
                expected = float((torch.logsumexp(logits, 1) - logits[torch.arange(n), torch.arange(n)]).mean())
        assert got == pytest.approx(expected, rel=1e-4), (loss, k)


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.parametrize("k", [0, 1])
def test_the_models_pooled_softmax_equals_its_formula_on_pairwise_logits(variant, k):
    extra = {"normalize": True} if variant == 2 else {}
    model, train = _fitted(variant=variant, layers=[12, 6, 3], loss="softmax", num_negatives=k, temperature=0.2,
                           in_batch_candidates=3, **extra)
    model.train()
    batch = next(iter(model.epoch_batches(train, torch.Generator().manual_seed(4))))
    users, items, _ = batch
    n = batch.positives
    grid = items.view(1 + k, n)
    candidates = grid[:, :3].reshape(-1)  # the first 3 positives' items and their negatives
    own = grid[0]
    with torch.no_grad():
        got = float(model.training_loss(batch))
        everything = torch.cat([own, candidates])
        pairs = model(users[:n].repeat_interleave(len(everything)), everything.repeat(n)).view(n, len(everything))
        freq = torch.bincount(model._pos_items, minlength=model.n_items).double() / len(model._pos_items)
        log_q = ((freq + k / model.n_items) / (1 + k)).log()
        own_logit = pairs[torch.arange(n), torch.arange(n)] / 0.2 - log_q[own]
        rest = pairs[:, n:] / 0.2 - log_q[candidates]
        rest[candidates[None, :] == own[:, None]] = float("-inf")
        expected = float((torch.logsumexp(torch.cat([own_logit[:, None], rest], 1), 1) - own_logit).mean())
    assert n > 3 and got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
@pytest.mark.parametrize("variant", [1, 2])
def test_every_loss_learns_and_scores_stay_the_pairwise_forward_pass(variant, loss):
    cfg = {"variant": variant, "layers": [12, 6], "loss": loss}
    if variant == 2 and loss == "softmax":
        cfg |= {"normalize": True, "temperature": 0.1}
    model, train = _fitted(epochs=1, **cfg)
    later, _ = _fitted(epochs=15, **cfg)
    batch = next(model.epoch_batches(train, torch.Generator().manual_seed(9)))
    with torch.no_grad():
        assert float(later.training_loss(batch)) < float(model.training_loss(batch))
    users = torch.tensor([0, 3, 7, 29])
    assert torch.allclose(later.score(users), _pairwise(later, users), atol=1e-5)


def test_loss_settings_are_checked():
    with pytest.raises(ValidationError, match="needs num_negatives >= 1"):
        TwoTowerConfig(loss="bpr", num_negatives=0)
    with pytest.raises(ValidationError, match="variant 1 has no towers"):
        TwoTowerConfig(variant=1, normalize=True)
    assert TwoTowerConfig(loss="softmax", num_negatives=0).num_negatives == 0
    with pytest.raises(ValidationError, match="in_batch_candidates applies to loss softmax, not bce"):
        TwoTowerConfig(loss="bce", in_batch_candidates=64)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        TwoTowerConfig(loss="softmax", in_batch_candidates=0)


def test_variant_1_softmax_refuses_a_batch_whose_pair_activations_do_not_fit(monkeypatch):
    from recsys_cli.errors import ResourceError

    monkeypatch.setattr(two_tower, "VARIANT1_SOFTMAX_BYTES", 64 * 64 * 6 * 12 - 1)  # one byte short for 64 positives
    with pytest.raises(ResourceError, match="pair activations per batch") as err:
        _fitted(variant=1, layers=[12, 6], loss="softmax", num_negatives=0)
    assert "lower training.batch_size (now 64" in err.value.hint
    monkeypatch.setattr(two_tower, "VARIANT1_SOFTMAX_BYTES", 64 * 64 * 6 * 12)
    _fitted(variant=1, layers=[12, 6], loss="softmax", num_negatives=0)
