"""Metrics files of a run, the on-screen table, and ``--assert`` bounds.

Files (written together: all or none replaced): ``metrics.csv`` (tidy: cutoff, metric, value), ``metrics.json``
(the same rows; NaN/inf become null), ``metrics.md`` (one column per cutoff) and ``per-user.parquet``
(every evaluated user's per-user values: evaluation/per_user.py). A validation-split evaluation writes
``metrics-val.*`` and ``per-user-val.parquet`` instead, so it never overwrites the test metrics. A
re-evaluation with ``--set`` overrides goes beside them, to ``evaluations/metrics-<split>-k<cutoffs>-set-<hash>.*``,
and its JSON records the split, the cutoffs and the overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from recsys_cli import atomic, console
from recsys_cli.errors import ConfigError
from recsys_cli.evaluation.metrics import COLUMNS

KEY_COLUMNS = ("PRECISION", "RECALL", "MAP", "NDCG", "MRR", "HIT_RATE", "COVERAGE_ITEM", "NOVELTY")


def metrics_stem(split_name: str) -> str:
    return "metrics" if split_name in ("test", "", None) else f"metrics-{split_name}"


def table_cutoffs(csv_path: Path) -> list[int]:
    """The cutoffs of an existing tidy metrics CSV ([] when there is none or it cannot be read)."""
    try:
        return sorted({int(c) for c in pd.read_csv(csv_path)["cutoff"]})
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return []


def reevaluation_name(split_name: str, cutoffs: list[int], overrides: list[str]) -> str:
    """File stem of a re-evaluation: the same split, cutoffs and overrides always give the same name."""
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return f"metrics-{split_name}-k{'-'.join(str(c) for c in cutoffs)}-set-{digest}"


def write_metrics(run_path: str | Path, result, *, split_name: str = "test", title: str = "metrics",
                  overrides: list[str] | None = None, user_ids=None, fingerprint: str | None = None) -> Path:
    """Write the tidy CSV, JSON and Markdown metric files of ``result`` and, when the result carries
    them, its per-user values (``user_ids``: the data set's original id of every row); returns the CSV path.

    ``overrides`` (a list, possibly empty) marks a re-evaluation: its files go to ``evaluations/``."""
    from recsys_cli.evaluation.per_user import file_name

    run_path = Path(run_path)
    stem = metrics_stem(split_name)
    rows = result.to_records()  # atomic.json_text writes NaN and ±inf as null
    body = markdown(result, split_name=split_name, title=title)
    if overrides is not None:
        run_path = run_path / "evaluations"
        stem = reevaluation_name(split_name, result.cutoffs, overrides)
        sets = " ".join(f"--set {o}" for o in overrides) or "none"
        head, _, rest = body.partition("\n\n")
        body = f"{head}\n\nRe-evaluation with cutoffs {', '.join(map(str, result.cutoffs))}; overrides: {sets}.\n\n{rest}"
        rows = {"split": split_name, "cutoffs": result.cutoffs, "overrides": list(overrides), "metrics": rows}
    tidy = pd.DataFrame(result.to_records(), columns=["cutoff", "metric", "value"])
    csv_path = run_path / f"{stem}.csv"
    # rendered in full before any file is touched, so a failure cannot leave old and new files mixed
    files: dict[Path, str | bytes] = {
        csv_path: tidy.to_csv(index=False, float_format="%.10g"),
        run_path / f"{stem}.json": atomic.json_text(rows),
        run_path / f"{stem}.md": body,
    }
    if getattr(result, "per_user", None) is not None:
        files[run_path / file_name(stem)] = result.per_user.to_parquet_bytes(
            user_ids, split=split_name or "test", fingerprint=fingerprint)
    atomic.write_together(files)
    return csv_path


def markdown(result, *, split_name: str, title: str) -> str:
    table = result.table
    cutoffs = [int(c) for c in table.index]
    lines = [
        f"# {title}",
        "",
        f"Split: {split_name}. Users evaluated: {result.n_users_evaluated} "
        f"(skipped for too few {split_name} items: {result.n_users_skipped}). "
        f"{result.users_per_second:,.0f} users/s. Definitions: docs/metrics.md.",
        "",
        "| metric | " + " | ".join(f"@{c}" for c in cutoffs) + " |",
        "|---|" + "---:|" * len(cutoffs),
    ]
    for name in table.columns:
        lines.append(f"| {name} | " + " | ".join(f"{table.loc[c, name]:.6f}" for c in cutoffs) + " |")
    return "\n".join(lines) + "\n"


def render_table(result, columns: tuple[str, ...] = KEY_COLUMNS) -> Table:
    """One row per metric, one column per cutoff: fits an 80-column terminal for up to eight cutoffs."""
    title = f"{result.n_users_evaluated} users, {result.users_per_second:,.0f} users/s"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for cutoff in result.table.index:
        table.add_column(f"@{cutoff}", justify="right")
    for name in columns:
        table.add_row(name, *(f"{result.table.loc[cutoff, name]:.4f}" for cutoff in result.table.index))
    return table


def print_table(result, columns: tuple[str, ...] = KEY_COLUMNS) -> None:
    """Key columns on stderr (and in the run log); every column is in the metrics files."""
    buffer = io.StringIO()
    Console(file=buffer, width=1000, color_system=None).print(render_table(result, columns))
    console.info("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


# -- --assert ----------------------------------------------------------------------------------
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_ASSERTION = re.compile(
    r"^\s*([A-Za-z_][A-Za-z_0-9]*)\s*@\s*(\d+)\s*(>=|<=|==|>|<)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Assertion:
    metric: str
    cutoff: int
    op: str
    bound: float
    text: str

    def check(self, value: float) -> bool:
        return math.isfinite(value) and bool(_OPS[self.op](value, self.bound))

    def describe(self, value: float) -> str:
        verdict = "satisfies" if self.check(value) else "fails"
        return f"{self.metric}@{self.cutoff} = {value:.6f} {verdict} {self.op} {self.bound:g}"


def metric_name(name: str) -> str:
    """Canonical column name (case-insensitive), or a ConfigError with a did-you-mean."""
    upper = name.strip().upper()
    if upper in COLUMNS:
        return upper
    close = difflib.get_close_matches(upper, COLUMNS, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ConfigError(f"unknown metric {name!r}", hint=f"{hint}metrics: {', '.join(COLUMNS)}")


def parse_assertion(text: str) -> Assertion:
    match = _ASSERTION.match(text)
    if not match:
        raise ConfigError(f"cannot read the assertion {text!r}",
                          hint='write METRIC@CUTOFF OP NUMBER with OP one of >= <= > < ==, e.g. "NDCG@10>=0.25"')
    name, cutoff, op, bound = match.groups()
    if int(cutoff) < 1:
        raise ConfigError(f"the assertion {text!r} has cutoff {cutoff}", hint="cutoffs are positive integers")
    return Assertion(metric_name(name), int(cutoff), op, float(bound), text.strip())
