"""Top-K recommendation lists with original ids (``recsys recommend``, ``evaluation.save_recommendations``).

The lists are the evaluator's: the same block scoring (:func:`evaluator.score_block`), the same seen-item
mask and the same top-K with ties to the lower item index (:func:`ranking.rank_block`), so a user's list
here is the list the metrics were computed on. Files are tidy, one row per (user, rank):
``user_id, item_id, rank, score, user_index, item_index`` (original MovieLens ids; 0-based matrix
indices), written as Parquet or CSV by the file's extension.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recsys_cli import atomic, console
from recsys_cli.errors import ConfigError, DataError
from recsys_cli.evaluation.evaluator import _index_list, _scorer_of, block_size_for, score_block, seen_pairs
from recsys_cli.evaluation.ranking import one_cpu_thread, rank_block
from recsys_cli.models.base import Recommender

COLUMNS = ("user_id", "item_id", "rank", "score", "user_index", "item_index")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
DEFAULT_NAME = "recommendations.parquet"


@dataclass
class TopK:
    """Lists of ``users`` (n,): ``items`` (n × k, −1 past a list's end), ``scores`` (n × k) and ``lengths`` (n,)."""

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    seconds: float = 0.0

    @property
    def users_per_second(self) -> float:
        return len(self.users) / self.seconds if self.seconds > 0 else float("inf")


def top_k(model_or_scorer: Any, train: sp.spmatrix, users: Sequence[int] | np.ndarray, k: int, *,
          exclude_seen: bool = True, ignore_items: Iterable[int] = (), block_size: int | None = None,
          device: torch.device | str | None = None) -> TopK:
    """The top-``k`` items of each user in ``users`` (matrix indices, any order), best first."""
    start = time.perf_counter()
    n_users, n_items = train.shape
    users = np.asarray(users, dtype=np.int64)
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise DataError(f"user indices must lie in 0..{n_users - 1}", hint="pass rows of the training matrix")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}", hint="e.g. --k 100")
    k = min(k, n_items)
    seen = sp.csr_matrix(train, dtype=np.float32)  # the evaluator's mask: stored training entries
    seen.eliminate_zeros()
    scorer, model_device = _scorer_of(model_or_scorer)
    fresh_scores = isinstance(model_or_scorer, Recommender)  # see evaluator.evaluate
    work_device = torch.device(device) if device is not None else model_device
    block = int(block_size or block_size_for(model_or_scorer, n_items, len(users), work_device))
    ignored = _index_list(ignore_items, n_items, "ignore_items")
    items_out = np.full((len(users), k), -1, dtype=np.int64)
    scores_out = np.zeros((len(users), k), dtype=np.float32)
    lengths_out = np.zeros(len(users), dtype=np.int64)
    ignore_t = None
    for lo in range(0, len(users), block):
        block_users = users[lo:lo + block]
        scores = score_block(scorer, block_users, n_items, model_device, work_device)
        dev = scores.device
        if ignored.size and ignore_t is None:
            ignore_t = torch.from_numpy(ignored).to(dev)
        mask_rows, mask_cols = seen_pairs(seen, block_users, dev) if exclude_seen else (None, None)
        items, lengths = rank_block(scores, k, mask_rows=mask_rows, mask_cols=mask_cols, ignore_items=ignore_t,
                                    restore=not fresh_scores)
        hi = lo + len(block_users)
        with one_cpu_thread(dev):  # small (block × k) ops: threads cost more than they save (ranking.py)
            # positions before a list's end hold unmasked items, whose scores are the model's own
            scores_out[lo:hi] = scores.gather(1, items).float().cpu().numpy()
            items_out[lo:hi] = items.cpu().numpy()
            lengths_out[lo:hi] = lengths.cpu().numpy()
    past_end = np.arange(k)[None, :] >= lengths_out[:, None]
    items_out[past_end] = -1
    scores_out[past_end] = np.nan
    return TopK(users, items_out, scores_out, lengths_out, time.perf_counter() - start)


def _id_array(ids: np.ndarray):
    """Original ids as an Arrow array: integers when every id is one (MovieLens), else strings."""
    import pyarrow as pa

    ids = np.asarray(ids)
    try:
        as_int = ids.astype(np.int64)
    except (TypeError, ValueError):
        return pa.array(ids.astype(str))
    return pa.array(as_int) if np.array_equal(as_int.astype(str), ids.astype(str)) else pa.array(ids.astype(str))


def to_table(lists: TopK, user_ids: np.ndarray, item_ids: np.ndarray):
    """The tidy Arrow table of ``lists`` (one row per user and rank), with original ids."""
    import pyarrow as pa

    k = lists.items.shape[1]
    keep = np.arange(k)[None, :] < lists.lengths[:, None]
    user_index = np.repeat(lists.users, lists.lengths)
    item_index = lists.items[keep]
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), lists.items.shape)[keep]
    columns = {
        "user_id": _id_array(user_ids).take(pa.array(user_index)),
        "item_id": _id_array(item_ids).take(pa.array(item_index)),
        "rank": pa.array(rank),
        "score": pa.array(lists.scores[keep]),
        "user_index": pa.array(user_index),
        "item_index": pa.array(item_index),
    }
    return pa.table(columns)


def output_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the format of {path} from its extension",
                          hint="name the file .parquet or .csv")
    return fmt


def write_table(table, path: str | Path) -> Path:
    """Write ``table`` as Parquet or CSV (by extension), atomically."""
    path = Path(path)
    fmt = output_format(path)
    with atomic.atomic_path(path, suffix=path.suffix) as tmp:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
    return path


def read_table(path: str | Path):
    """A recommendations file read back as a pandas DataFrame (either format)."""
    import pandas as pd

    path = Path(path)
    return pd.read_parquet(path) if output_format(path) == "parquet" else pd.read_csv(path)


def users_from_file(path: str | Path, user_ids: np.ndarray) -> np.ndarray:
    """Matrix indices of the original user ids listed in ``path`` (one a line, or a CSV whose first
    column is the id, quoted or not, such as a file ``recsys recommend`` wrote; a first line
    ``user_id`` or ``userId`` is a header; a UTF-8 byte-order mark is skipped), in the file's order,
    each once."""
    import csv

    import pandas as pd

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read the users file {path}: {exc.strerror or exc}",
                        hint="pass a text file with one original user id a line, or --users all") from None
    except UnicodeDecodeError:
        raise DataError(f"the users file {path} is not UTF-8 text",
                        hint="save it as UTF-8 (or plain ASCII) text, one original user id a line") from None
    wanted = [row[0].strip() if row else "" for row in csv.reader(text.splitlines())]
    if wanted and wanted[0].lower() in ("user_id", "userid"):
        wanted = wanted[1:]
    wanted = list(dict.fromkeys(w for w in wanted if w))
    if not wanted:
        raise DataError(f"the users file {path} lists no user ids", hint="one original user id a line, or --users all")
    index = pd.Index(np.asarray(user_ids).astype(str))
    positions = index.get_indexer(wanted)
    unknown = [w for w, p in zip(wanted, positions) if p < 0]
    if unknown:
        raise DataError(f"{len(unknown)} user ids in {path} are not in the data set (e.g. {', '.join(unknown[:3])})",
                        hint="list original user ids of the run's data set (the userId of its ratings file)")
    return positions.astype(np.int64)


@dataclass
class RecommendResult:
    path: Path
    n_users: int
    n_rows: int
    k: int
    seconds: float
    users_per_second: float


def write_recommendations(config, model, split, path: str | Path, *, k: int, users: np.ndarray | None = None,
                          exclude_seen: bool = True, dataset=None) -> RecommendResult:
    """Top-``k`` lists of ``users`` (default: every user) of a fitted model, written to ``path``."""
    from recsys_cli.data import original_ids

    output_format(Path(path))
    user_ids, item_ids = original_ids(config, split, dataset)
    if users is None:
        users = np.arange(split.train.shape[0], dtype=np.int64)
    lists = top_k(model, split.train, users, k, exclude_seen=exclude_seen,
                  ignore_items=config.evaluation.ignore_items, block_size=config.evaluation.user_batch_size,
                  device=model.device)
    table = to_table(lists, user_ids, item_ids)
    write_table(table, path)
    console.info(f"top-{lists.items.shape[1]} lists of {len(users):,} users ({lists.users_per_second:,.0f} users/s) "
                 f"written to {path}")
    return RecommendResult(Path(path), len(users), table.num_rows, lists.items.shape[1], lists.seconds,
                           lists.users_per_second)


def recommend(run_dir: str | Path, *, k: int = 100, users: str | Path | None = None, output: str | Path | None = None,
              include_seen: bool = False) -> RecommendResult:
    """Top-``k`` lists of a trained run: ``users`` is a file of original user ids, or None / "all" for
    every user; ``output`` defaults to RUN_DIR/recommendations.parquet."""
    from recsys_cli.data import original_ids
    from recsys_cli.experiment import load_trained

    trained = load_trained(run_dir)
    path = Path(output) if output is not None else trained.run.path / DEFAULT_NAME
    output_format(path)
    chosen = None
    if users is not None and str(users) != "all":
        chosen = users_from_file(users, original_ids(trained.config, trained.split)[0])
    return write_recommendations(trained.config, trained.model, trained.split, path, k=k, users=chosen,
                                 exclude_seen=not include_seen)
