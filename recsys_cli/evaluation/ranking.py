"""Top-K recommendation lists for a block of users, with exact and deterministic tie-breaking.

The list of a user is what the reference implementation's ``BaseRecommender.recommend`` returns
(../shared/spec/evaluation.md), except for ties:

1. seen (training) items and ``ignore_items`` get score −inf;
2. items are ranked by score, highest first, **ties broken by lower item index** (the reference
   leaves tied scores to NumPy's unstable sort, so on tie-free data both give the same lists);
3. the ranking order is +inf, finite scores, −inf, NaN (NumPy's order for ``argsort(-scores)``);
4. the first K positions are kept and every ±inf item among them is dropped, so a list can be
   shorter than K; a NaN item is kept (it only appears when fewer than K items are non-NaN).

``torch.topk`` does not promise any order among tied values, so we ask it for K+1 values: a row whose
K-th and (K+1)-th values are equal has ties crossing the cut and is redone exactly (lowest indices
among the tied items); every row is then put in (score desc, index asc) order with a stable sort of
its K candidates. Rows without boundary ties, the usual case, cost one ``topk`` and two tiny sorts.
``topk`` ranks NaN and +inf above everything, so a row holds one of them exactly when its top K+1
values do: only those rows take the slower exact path for special values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

NEG_INF = float("-inf")
WIDE_TOPK_ELEMENTS = 1 << 20
TOPK_CHUNK = 64  # items per chunk of the CPU's two-stage top-k


def top_values(key: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(key, kk, dim=1)``: the kk largest values per row, sorted, and their indices.

    On the CPU, long rows go in two stages, about 1.5× faster than one ``topk`` at 10,681 items: the
    maximum of each chunk of 64 items, the kk chunks with the largest maxima, then ``topk`` over those
    chunks' items only. The values are exactly topk's: the kk largest chunk maxima are kk distinct
    items, so any item outside those chunks is at most the kk-th value found within them, and every
    value above the kk-th lies in a chosen chunk. Items tied with the kk-th value may come from
    other chunks than topk's would; rank_block redoes rows with ties at the cut from the whole row.
    Rows whose kk-th value is −inf (fewer than kk items above −inf) are redone with plain ``topk``."""
    rows, n = key.shape
    if key.device.type != "cpu" or n < 8 * kk * TOPK_CHUNK or not key.is_floating_point():
        return torch.topk(key, kk, dim=1, largest=True, sorted=True)
    full = n // TOPK_CHUNK * TOPK_CHUNK
    chunk_max = key[:, :full].view(rows, -1, TOPK_CHUNK).amax(dim=2)
    if full < n:
        chunk_max = torch.cat([chunk_max, key[:, full:].amax(dim=1, keepdim=True)], dim=1)
    chunks = torch.topk(chunk_max, kk, dim=1, sorted=False).indices
    at = (chunks[:, :, None] * TOPK_CHUNK + torch.arange(TOPK_CHUNK)).view(rows, -1)
    outside = at >= n  # the short last chunk's padding
    candidates = key.gather(1, at.clamp_(max=n - 1)).masked_fill_(outside, NEG_INF)
    vals, pick = torch.topk(candidates, kk, dim=1, largest=True, sorted=True)
    idx = at.gather(1, pick)
    short = vals[:, -1] == NEG_INF
    if bool(short.any()):
        rows_short = short.nonzero().squeeze(1)
        vals[rows_short], idx[rows_short] = torch.topk(key.index_select(0, rows_short), kk, dim=1, sorted=True)
    return vals, idx


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run small CPU ops on one thread: splitting a (block × K) op or a sparse scatter across threads
    costs more than it saves, and on a busy machine every parallel region can stall on a descheduled
    thread (measured: 10× slower evaluation on a loaded 2-core machine). Only a big ``topk`` runs wide."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _order_candidates(key: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Sort each row's candidate items by (score desc, index asc): index sort, then a stable value sort."""
    idx = idx.sort(dim=1).values
    order = key.gather(1, idx).sort(dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def _fix_boundary_ties(key: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, k: int,
                       spill: torch.Tensor) -> torch.Tensor:
    """For the rows where ``spill`` is set (their K-th value is tied beyond the cut), choose the tied
    items of lowest index.

    Items above the K-th value are all among topk's candidates already; the tied ones are found with
    one comparison pass and ranked within their row from the row-major order of ``nonzero()`` (no
    cumulative sum over the whole block: a model with many equal scores, dead ReLU units say, makes
    every row of a block tie)."""
    n_rows, n_items = key.shape
    rows = spill.nonzero().squeeze(1)
    kth = vals[:, k - 1 : k]
    above = vals[:, :k] > kth
    need = k - above.sum(dim=1)
    # rows that do not spill compare against NaN (equal to nothing): no copy of the block's rows
    tied_at = (key == kth.masked_fill(~spill[:, None], math.nan)).nonzero()  # (T, 2), ascending per row
    per_row = torch.bincount(tied_at[:, 0], minlength=n_rows)
    first = torch.cumsum(per_row, 0) - per_row
    rank = torch.arange(len(tied_at), device=key.device) - first.index_select(0, tied_at[:, 0])
    picked = tied_at[rank < need.index_select(0, tied_at[:, 0])]
    above_at = above[rows].nonzero()
    row_of = torch.cat([rows.index_select(0, above_at[:, 0]), picked[:, 0]])
    item_of = torch.cat([idx[rows][above_at[:, 0], above_at[:, 1]], picked[:, 1]])
    # exactly k per spilling row: sorting by (row, item) lays them out as (rows, k)
    order = (row_of * n_items + item_of).argsort()
    idx = idx[:, :k].clone()
    idx[rows] = item_of.index_select(0, order).view(len(rows), k)
    return idx


def top_k_lowest_index(key: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (rows × k) of the k largest values per row of ``key`` (no NaN), ties to lower index."""
    rows, n = key.shape
    k = min(k, n)
    if k == 0:
        return torch.empty((rows, 0), dtype=torch.long, device=key.device)
    vals, idx = top_values(key, min(k + 1, n))
    return _select(key, vals, idx, k, None)


def _select(key, vals, idx, k, skip):
    idx = idx[:, :k]
    if vals.shape[1] > k:
        spill = vals[:, k - 1] == vals[:, k]
        if skip is not None:
            spill &= ~skip
        if bool(spill.any()):
            idx = _fix_boundary_ties(key, vals, idx, k, spill)
    return _order_candidates(key, idx)


def _rank_special_rows(sub: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows holding NaN or +inf (already masked): NumPy's order +inf, finite, −inf, NaN; ±inf dropped."""
    n = sub.shape[1]
    nan, pos = torch.isnan(sub), torch.isposinf(sub)
    sub = sub.masked_fill(nan | pos, NEG_INF)
    items = top_k_lowest_index(sub, k)
    # after the fill every non-finite key is −inf and ranks after every finite one
    lengths = torch.isfinite(sub.gather(1, items)).sum(dim=1)
    # +inf items took the first slots before being dropped
    lengths = torch.minimum(lengths, (k - pos.sum(dim=1)).clamp(min=0))
    # NaN items rank after every −inf one: they enter only when fewer than K items are not NaN
    n_nan_kept = (nan.sum(dim=1) - (n - k)).clamp(min=0)
    if bool((n_nan_kept > 0).any()):
        fix = (n_nan_kept > 0).nonzero().squeeze(1)
        nan_first = nan.index_select(0, fix).to(torch.int8).sort(dim=1, descending=True, stable=True).indices
        start = lengths.index_select(0, fix).unsqueeze(1)
        slot = torch.arange(k, device=sub.device).unsqueeze(0) - start
        count = n_nan_kept.index_select(0, fix).unsqueeze(1)
        put = (slot >= 0) & (slot < count)
        fixed = items.index_select(0, fix)
        fixed[put] = nan_first.gather(1, slot.clamp(min=0, max=nan_first.shape[1] - 1))[put]
        items[fix] = fixed
        lengths[fix] = lengths.index_select(0, fix) + n_nan_kept.index_select(0, fix)
    return items, lengths


@torch.no_grad()
def rank_block(
    scores: torch.Tensor,
    k: int,
    *,
    mask_rows: torch.Tensor | None = None,
    mask_cols: torch.Tensor | None = None,
    ignore_items: torch.Tensor | None = None,
    restore: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recommendation lists of one block: ``(items (rows × k) long, lengths (rows,) long)``.

    ``mask_rows``/``mask_cols`` are the (row-in-block, item) pairs to exclude (seen items) and
    ``ignore_items`` the items excluded for everyone. Positions at or beyond a row's length are
    padding. ``scores`` is masked in place and, with ``restore`` (the default), restored before
    returning, so a scorer may return a tensor it keeps (a cache, a parameter); ``restore=False`` skips
    saving and restoring for scores nobody else holds. Expanded or non-contiguous tensors are copied first.
    """
    rows, n = scores.shape
    device = scores.device
    if k <= 0 or rows == 0:
        return (torch.empty((rows, 0), dtype=torch.long, device=device),
                torch.zeros(rows, dtype=torch.long, device=device))
    k = min(k, n)
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)  # exact for integer scores below 2**53
    key = scores.detach()
    if not key.is_contiguous():
        key = key.contiguous()
    has_masks = mask_rows is not None and mask_rows.numel() > 0
    has_ignore = ignore_items is not None and ignore_items.numel() > 0

    saved = saved_ignore = None
    with one_cpu_thread(device):
        if has_masks and restore:
            saved = key[mask_rows, mask_cols]
        if has_ignore and restore:
            saved_ignore = key[:, ignore_items]
        try:
            if has_masks:
                key[mask_rows, mask_cols] = NEG_INF
            if has_ignore:
                key[:, ignore_items] = NEG_INF
        except RuntimeError:  # e.g. an inference-mode tensor: work on a private copy instead
            key = key.clone()
            saved = saved_ignore = None
            if has_masks:
                key[mask_rows, mask_cols] = NEG_INF
            if has_ignore:
                key[:, ignore_items] = NEG_INF

    try:
        # topk over a big block is the one op worth spreading over the CPU threads
        with contextlib.nullcontext() if key.numel() >= WIDE_TOPK_ELEMENTS else one_cpu_thread(device):
            vals, idx = top_values(key, min(k + 1, n))
        with one_cpu_thread(device):
            special = (torch.isnan(vals) | (vals == float("inf"))).any(dim=1)
            any_special = bool(special.any())
            items = _select(key, vals, idx, k, special if any_special else None)
            lengths = torch.isfinite(key.gather(1, items)).sum(dim=1)
            if any_special:
                fix = special.nonzero().squeeze(1)
                fixed_items, fixed_lengths = _rank_special_rows(key.index_select(0, fix), k)
                items[fix] = fixed_items
                lengths[fix] = fixed_lengths
    finally:
        with one_cpu_thread(device):
            if saved is not None:
                key[mask_rows, mask_cols] = saved
            if saved_ignore is not None:
                key[:, ignore_items] = saved_ignore
    return items, lengths
