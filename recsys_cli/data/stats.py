"""The statistics block of the reference implementation's ``Dataset.print_statistics``, in its exact format.

Format and expected ML-10M values: ../shared/spec/movielens.md, §3.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys_cli import console
from recsys_cli.data.dataset import Dataset

# The order the reference implementation prints the ML-10M ICM lines in; other ICMs follow in their own order.
ICM_ORDER = ("ICM_tags", "ICM_genres", "ICM_all", "ICM_year")


def gini_index(values: np.ndarray) -> float:
    """Gini of profile lengths as the reference implementation computes it (float32, shifted, +1e-7, sorted)."""
    x = np.asarray(values, dtype=np.float32)
    if x.size == 0:
        return 0.0
    if x.min() < 0:
        x = x - x.min()
    x = np.sort(x + np.float32(1e-7))
    n = x.shape[0]
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * x) / (n * np.sum(x)))


def _range(lo: float, hi: float) -> str:
    fmt = "{:.2E}" if max(abs(lo), abs(hi)) > 100 else "{:.2f}"
    return f"{fmt.format(lo)} / {fmt.format(hi)}"


def icm_line(name: str, icm: sp.csr_matrix) -> str:
    n_items, n_features = icm.shape
    lo, hi = (float(icm.data.min()), float(icm.data.max())) if icm.nnz else (0.0, 0.0)
    density = icm.nnz / (n_items * n_features) if n_items and n_features else 0.0
    return (f"\tICM name: {name}, Value range: {_range(lo, hi)}, Num features: {n_features}, "
            f"feature occurrences: {icm.nnz}, density {density:.2E}")


def ordered_icms(icms: dict[str, sp.csr_matrix]) -> list[str]:
    first = [n for n in ICM_ORDER if n in icms]
    return first + [n for n in icms if n not in first]


def statistics_text(dataset: Dataset) -> str:
    """The whole block, ending with two newlines like the reference implementation's."""
    urm = dataset.urm
    n_users, n_items = urm.shape
    nnz = urm.nnz
    user_profile = np.diff(urm.indptr)
    item_profile = np.bincount(urm.indices, minlength=n_items) if nnz else np.zeros(n_items, dtype=np.int64)
    lo, hi = (float(urm.data.min()), float(urm.data.max())) if nnz else (0.0, 0.0)
    density = nnz / (n_users * n_items) if n_users and n_items else 0.0
    course_name = dataset.manifest.get("course_name", dataset.name)
    lines = [
        f"DataReader: current dataset is: {course_name}",
        f"\tNumber of items: {n_items}",
        f"\tNumber of users: {n_users}",
        f"\tNumber of interactions in URM_all: {nnz}",
        f"\tValue range in URM_all: {lo:.2f}-{hi:.2f}",
        f"\tInteraction density: {density:.2E}",
        "\tInteractions per user:",
        f"\t\t Min: {user_profile.min() if n_users else 0:.2E}",
        f"\t\t Avg: {nnz / n_users if n_users else 0:.2E}",
        f"\t\t Max: {user_profile.max() if n_users else 0:.2E}",
        "\tInteractions per item:",
        f"\t\t Min: {item_profile.min() if n_items else 0:.2E}",
        f"\t\t Avg: {nnz / n_items if n_items else 0:.2E}",
        f"\t\t Max: {item_profile.max() if n_items else 0:.2E}",
        f"\tGini Index: {gini_index(user_profile):.2f}",
        "",
    ]
    lines += [icm_line(name, dataset.icms[name]) for name in ordered_icms(dataset.icms)]
    return "\n".join(lines) + "\n\n"


def print_statistics(dataset: Dataset, *, detail: bool = False) -> None:
    """The block on stderr: at the default level, or only with -v when it is a detail of a bigger job."""
    show = console.debug if detail else console.info
    for line in statistics_text(dataset).rstrip("\n").split("\n"):
        show(line)
    show("")
