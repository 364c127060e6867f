"""A holdout evaluator whose 27 columns equal the reference evaluator's, vectorised and batched.

Definitions: docs/metrics.md; reference behaviour: ../shared/spec/evaluation.md.

    from recsys_cli.evaluation import evaluate
    result = evaluate(model, split.train, split.test, [5, 10])
    result.table            # DataFrame: index "cutoff", the 27 columns in the reference evaluator's order
    result.value("NDCG", 10)
"""

from __future__ import annotations

from recsys_cli.evaluation.evaluator import EvaluationResult, default_block_size, evaluate
from recsys_cli.evaluation.metrics import COLUMNS

__all__ = ["COLUMNS", "EvaluationResult", "default_block_size", "evaluate"]
