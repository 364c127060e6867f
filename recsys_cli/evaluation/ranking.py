"""Top-K recommendation lists for a block of users, with exact and deterministic tie-breaking.

The list of a user is what the course's ``BaseRecommender.recommend`` returns, except for ties:

1. seen (training) items and ``ignore_items`` get score −inf;
2. items are ranked by score, highest first, **ties broken by lower item index** (the course leaves
   tied scores to NumPy's unstable sort, so on tie-free data both give the same lists);
3. the ranking order is +inf, finite scores, −inf, NaN (NumPy's order for ``argsort(-scores)``);
4. the first K positions are kept and every ±inf item among them is dropped, so a list can be
   shorter than K; a NaN item is kept (it only appears when fewer than K items are non-NaN).

``torch.topk`` does not promise any order among tied values, so we ask it for K+1 values: a row whose
K-th and (K+1)-th values are equal has ties crossing the cut and is redone exactly (lowest indices
among the tied items); every row is then put in (score desc, index asc) order with a stable sort of
its K candidates. Rows without boundary ties, the usual case, cost one ``topk`` and two tiny sorts.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def top_k_lowest_index(key: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (rows × k) of the k largest values per row of ``key`` (no NaN), ties to lower index."""
    rows, n = key.shape
    k = min(k, n)
    if k == 0:
        return torch.empty((rows, 0), dtype=torch.long, device=key.device)
    take = min(k + 1, n)
    vals, idx = torch.topk(key, take, dim=1, largest=True, sorted=True)
    idx = idx[:, :k]
    if take > k:
        spill = vals[:, k - 1] == vals[:, k]
        if bool(spill.any()):
            fix = spill.nonzero().squeeze(1)
            sub = key.index_select(0, fix)
            kth = vals.index_select(0, fix)[:, k - 1 : k]
            above = sub > kth
            need = k - above.sum(dim=1, keepdim=True)
            tied = sub == kth
            chosen = above | (tied & (tied.cumsum(dim=1) <= need))
            # exactly k per row, so nonzero() (row-major) reshapes to (rows, k) in ascending item order
            idx = idx.clone()
            idx[fix] = chosen.nonzero()[:, 1].view(-1, k)
    idx = idx.sort(dim=1).values
    order = key.gather(1, idx).sort(dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


@torch.no_grad()
def rank_block(
    scores: torch.Tensor,
    k: int,
    *,
    mask_rows: torch.Tensor | None = None,
    mask_cols: torch.Tensor | None = None,
    ignore_items: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recommendation lists of one block: ``(items (rows × k) long, lengths (rows,) long)``.

    ``mask_rows``/``mask_cols`` are the (row-in-block, item) pairs to exclude (seen items) and
    ``ignore_items`` the items excluded for everyone. Positions at or beyond a row's length are
    padding. ``scores`` is masked in place and restored before returning, so a scorer may return a
    tensor it keeps (a cache, a parameter); expanded or non-contiguous tensors are copied first.
    """
    rows, n = scores.shape
    device = scores.device
    if k <= 0 or rows == 0:
        return (torch.empty((rows, 0), dtype=torch.long, device=device),
                torch.zeros(rows, dtype=torch.long, device=device))
    k = min(k, n)
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)  # exact for integer scores below 2**53
    scores = scores.detach()
    if not scores.is_contiguous():
        scores = scores.contiguous()
    has_masks = mask_rows is not None and mask_rows.numel() > 0
    has_ignore = ignore_items is not None and ignore_items.numel() > 0

    # A finite sum proves there is no NaN/+inf in the block: one cheap reduction on the usual path.
    n_pos = n_nan = nan = None
    key = scores
    owned = False
    if not bool(torch.isfinite(scores.sum())):
        nan, pos = torch.isnan(scores), torch.isposinf(scores)
        if bool(nan.any()) or bool(pos.any()):
            key = scores.masked_fill(nan | pos, NEG_INF)
            owned = True
            for flag in (nan, pos):
                if has_masks:
                    flag[mask_rows, mask_cols] = False
                if has_ignore:
                    flag[:, ignore_items] = False
            n_pos, n_nan = pos.sum(dim=1), nan.sum(dim=1)

    saved = saved_ignore = None
    if not owned:
        if has_masks:
            saved = key[mask_rows, mask_cols]
        if has_ignore:
            saved_ignore = key[:, ignore_items]
    try:
        if has_masks:
            key[mask_rows, mask_cols] = NEG_INF
        if has_ignore:
            key[:, ignore_items] = NEG_INF
    except RuntimeError:  # e.g. an inference-mode tensor: fall back to a private copy
        key = key.clone()
        owned, saved, saved_ignore = True, None, None
        if has_masks:
            key[mask_rows, mask_cols] = NEG_INF
        if has_ignore:
            key[:, ignore_items] = NEG_INF

    try:
        items = top_k_lowest_index(key, k)
        # after the masking, every non-finite key is −inf and ranks after every finite one
        lengths = torch.isfinite(key.gather(1, items)).sum(dim=1)
    finally:
        if saved is not None:
            key[mask_rows, mask_cols] = saved
        if saved_ignore is not None:
            key[:, ignore_items] = saved_ignore

    if n_pos is not None:
        # +inf items took the first slots before being dropped; NaN items follow every −inf item
        lengths = torch.minimum(lengths, (k - n_pos).clamp(min=0))
        n_nan_kept = (n_nan - (n - k)).clamp(min=0)
        if bool((n_nan_kept > 0).any()):
            fix = (n_nan_kept > 0).nonzero().squeeze(1)
            nan_first = nan.index_select(0, fix).to(torch.int8).sort(dim=1, descending=True, stable=True).indices
            start = lengths.index_select(0, fix).unsqueeze(1)
            slot = torch.arange(k, device=device).unsqueeze(0) - start
            count = n_nan_kept.index_select(0, fix).unsqueeze(1)
            put = (slot >= 0) & (slot < count)
            sub = items.index_select(0, fix)
            sub[put] = nan_first.gather(1, slot.clamp(min=0, max=nan_first.shape[1] - 1))[put]
            items = items.clone()
            items[fix] = sub
            lengths = lengths.clone()
            lengths[fix] = lengths.index_select(0, fix) + n_nan_kept.index_select(0, fix)
    return items, lengths
