"""Reference parity of puresvd, puresvd-item, slim and ials: each metric table equals the one of the
reference implementation's algorithm written out from ../shared/spec/baselines.md §4-6 (the test helpers
of test_puresvd, test_slim and test_ials) on the same split, within 1e-4, on a synthetic split and on real
MovieLens-100K split exactly as the reference implementation splits it (`course_compatible: true`).
Both sides go through the project's evaluator, so only the models differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_cli.config.schema import EarlyStoppingConfig, TrainingConfig
from recsys_cli.evaluation import evaluate
from recsys_cli.models.base import FitContext
from recsys_cli.models.registry import get_model_class

from .test_course_parity import ml100k_split, synthetic_split  # noqa: F401  (a fixture and a helper)
from .test_ials import course_ials
from .test_puresvd import course_randomized_svd
from .test_slim import course_slim

CPU = torch.device("cpu")
TOLERANCE = 1e-4
SEED = 42
EPOCHS = 8


def course_scores(case: str, R: np.ndarray) -> np.ndarray:
    if case == "puresvd":
        U, s, Vt = course_randomized_svd(R, 50, SEED)
        return (U @ (s[:, None] * Vt)).astype(np.float32)
    if case == "puresvd-item":
        _, _, Vt = course_randomized_svd(R, 50, SEED)
        return (R.astype(np.float32) @ (Vt.T @ Vt)).astype(np.float32)
    if case == "slim":
        return R.astype(np.float32) @ course_slim(R, l1_ratio=0.1, alpha=1e-3, positive_only=True, topK=100, seed=SEED)
    U, V = course_ials(R, epochs=EPOCHS, k=20, alpha=1.0, reg=1e-3, seed=SEED)
    return U @ V.T


CONFIGS = {
    "puresvd": {"num_factors": 50},
    "puresvd-item": {"num_factors": 50},
    "slim": {"alpha": 1e-3, "l1_ratio": 0.1},
    "ials": {"num_factors": 20, "solver": "cholesky"},
}


def tables(case: str, train: sp.csr_matrix, test: sp.csr_matrix) -> tuple[dict, dict]:
    cls = get_model_class(case)
    dtype = torch.float64 if case == "ials" else torch.float32  # the reference implementation's dtypes
    model = cls(cls.Config.model_validate({"name": case, **CONFIGS[case]}), device=CPU, dtype=dtype, seed=SEED)
    training = TrainingConfig(epochs=EPOCHS, early_stopping=EarlyStoppingConfig(enabled=False))
    model.fit(train, FitContext(device=CPU, dtype=dtype, seed=SEED, training=training))
    scores = torch.from_numpy(course_scores(case, train.toarray()))
    ours = evaluate(model, train, test, [10], progress=False).to_records()
    course = evaluate(lambda u: scores[u].clone(), train, test, [10], progress=False).to_records()
    return ({r["metric"]: r["value"] for r in ours}, {r["metric"]: r["value"] for r in course})


@pytest.mark.parametrize("case", list(CONFIGS))
def test_synthetic_split_matches_the_course_algorithm(case):
    ours, course = tables(case, *synthetic_split())
    differ = {m: (ours[m], course[m]) for m in ours if abs(ours[m] - course[m]) > TOLERANCE}
    assert not differ, differ


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CONFIGS))
def test_movielens_100k_matches_the_course_algorithm(case, ml100k_split):  # noqa: F811
    ours, course = tables(case, *ml100k_split)
    differ = {m: (ours[m], course[m]) for m in ours if abs(ours[m] - course[m]) > TOLERANCE}
    assert not differ, differ
