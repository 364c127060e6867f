"""Rendering a :class:`~recsys_cli.evaluation.compare.Comparison`: CSV, Markdown, LaTeX, the terminal.

In every format a metric cell is the run's value, or a group's mean ± sd; a ``*`` marks a value that
differs significantly from the baseline's (corrected p < alpha; a superscript in LaTeX, a ``sig``
column in CSV); the best value of each metric (by its direction, docs/metrics.md) is bold in
Markdown and LaTeX. The terminal table fits 80 columns by leaving columns out, and says which.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from recsys_cli import atomic, console
from recsys_cli.errors import ConfigError
from recsys_cli.evaluation.compare import Comparison, Entry, label
from recsys_cli.evaluation.groups import effective, flatten

FORMATS = {"csv": ".csv", "md": ".md", "latex": ".tex"}
TERMINAL_WIDTH = 80


def _number(value: float, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(comparison: Comparison, entry: Entry, spec, *, plus_minus: str, mark: str) -> tuple[str, bool]:
    """The text of a metric cell and whether it holds the best value."""
    s = entry.summary(spec)
    text = _number(s.mean)
    if text and s.n > 1:
        text += f"{plus_minus}{_number(s.sd)}"
    if comparison.significant(entry, label(*spec)):
        text += mark
    best = comparison.best(spec)
    return text, best is not None and not math.isnan(s.mean) and s.mean == best


def _text_frame(comparison: Comparison, *, plus_minus: str, mark: str, bold=None, short: bool = False):
    """Strings for Markdown, LaTeX and the terminal: run, model, hyperparameters, metrics; and the
    positions of the best cells."""
    rows, best = [], []
    for i, entry in enumerate(comparison.entries):
        name = entry.name + (" (baseline)" if entry.baseline else "")
        row = {"run": name, "model": entry.runs[0].model}
        flat_config = flatten(effective(entry.runs[0].config))
        for key in comparison.hyperparameters:
            row[_short_key(key) if short else key] = _plain(flat_config.get(key))
        for spec in comparison.specs:
            text, is_best = _cell(comparison, entry, spec, plus_minus=plus_minus, mark=mark)
            row[label(*spec)] = bold(text) if bold and is_best and text else text
            if is_best and text:
                best.append((i, label(*spec)))
        rows.append(row)
    return pd.DataFrame(rows), best


def _plain(value) -> str:
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short_key(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith("model.") else key


def _footnote(comparison: Comparison) -> str:
    base = comparison.baseline
    if base is None:
        return ""
    return (f"* p < {comparison.alpha:g} against {base.name} ({comparison.test}, paired over users, "
            f"{comparison.correction} correction over {len(comparison.statistics)} tests).")


def to_csv(comparison: Comparison) -> str:
    return comparison.table().to_csv(index=False, float_format="%.10g")


def _md_bold(text: str) -> str:
    mark = "\\*" if text.endswith("\\*") else ""
    return f"**{text[:len(text) - len(mark)]}**{mark}"


def to_markdown(comparison: Comparison) -> str:
    # the mark goes outside the bold and escaped, so "**0.31**\\*" cannot read as Markdown emphasis
    frame, _ = _text_frame(comparison, plus_minus=" ± ", mark="\\*", bold=_md_bold)
    header = "| " + " | ".join(frame.columns) + " |"
    sep = "|" + "|".join("---:" if c in comparison.labels else "---" for c in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    note = _footnote(comparison).replace("*", "\\*", 1)  # not a list bullet
    return "\n".join(["# Comparison", "", header, sep, *body, *(["", note] if note else [])]) + "\n"


def to_latex(comparison: Comparison) -> str:
    """A booktabs tabular through pandas' Styler: best value bold, significance as a superscript."""
    frame, best = _text_frame(comparison, plus_minus=" $\\pm$ ", mark="$^{*}$")
    text_columns = [c for c in frame.columns if c not in comparison.labels]

    def bold(data: pd.DataFrame) -> pd.DataFrame:
        props = pd.DataFrame("", index=data.index, columns=data.columns)
        for i, column in best:
            props.loc[i, column] = "textbf:--rwrap;"
        return props

    styler = (frame.style.hide(axis="index").apply(bold, axis=None)
              .format(escape="latex", subset=text_columns).format_index(escape="latex", axis=1))
    column_format = "l" * len(text_columns) + "r" * len(comparison.labels)
    latex = styler.to_latex(hrules=True, column_format=column_format)
    note = _footnote(comparison)
    if note:
        note = note.replace("*", "$^{*}$", 1).replace("_", "\\_")
        latex += f"% {note}\n"
    return latex


RENDERERS = {"csv": to_csv, "md": to_markdown, "latex": to_latex}


def statistics_csv(comparison: Comparison) -> str:
    return comparison.statistics.to_csv(index=False, float_format="%.10g")


# -- files -----------------------------------------------------------------------------------------
def resolve_format(fmt: str | None, output: Path | None) -> str:
    if fmt is not None:
        low = fmt.strip().lower()
        if low not in FORMATS:
            raise ConfigError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}", hint="e.g. --format latex")
        return low
    if output is not None:
        for name, ext in FORMATS.items():
            if output.suffix.lower() == ext:
                return name
    return "csv"


def default_output(comparison: Comparison, fmt: str) -> Path:
    """``compare-<UTC time>.<ext>`` in the runs' folder (their common parent, else RECSYS_RUNS_DIR or
    runs/): a new name each time, so no file is ever replaced."""
    parents = {r.path.parent for e in comparison.entries for r in e.runs}
    folder = parents.pop() if len(parents) == 1 else Path(os.environ.get("RECSYS_RUNS_DIR") or "runs")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"compare-{stamp}{FORMATS[fmt]}"
    n = 2
    while path.exists() or _stats_path(path).exists():
        path = folder / f"compare-{stamp}-{n}{FORMATS[fmt]}"
        n += 1
    return path


def _stats_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.stats.csv")  # t.md → t.md.stats.csv: one per table file


def write(comparison: Comparison, fmt: str, output: Path | None, *, force: bool = False) -> list[Path]:
    """Write the table (and, with a baseline, ``<file name>.stats.csv`` beside it); an existing file given
    with --output is replaced only with ``force``. Returns the paths written."""
    path = output if output is not None else default_output(comparison, fmt)
    files = {path: RENDERERS[fmt](comparison)}
    if comparison.statistics is not None:
        files[_stats_path(path)] = statistics_csv(comparison)
    if output is not None and not force:
        existing = [p for p in files if p.exists()]
        if existing:
            raise ConfigError(f"{existing[0]} already exists",
                              hint="pass --force to replace it, or choose another --output")
    atomic.write_together(files)
    return list(files)


# -- terminal --------------------------------------------------------------------------------------
def _render(frame: pd.DataFrame, columns: list[str], numeric: set[str]) -> list[str]:
    table = Table(title_justify="left", pad_edge=False, box=None, show_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=True)
    for row in frame[columns].itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    buffer = io.StringIO()
    Console(file=buffer, width=1000, color_system=None).print(table)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


def terminal_lines(comparison: Comparison, width: int = TERMINAL_WIDTH) -> tuple[list[str], list[str]]:
    """The table as lines of at most ``width`` characters, and the columns left out to fit."""
    frame, _ = _text_frame(comparison, plus_minus="±", mark="*", short=True)
    frame["run"] = [_shorten(e, i) for i, e in enumerate(comparison.entries)]
    hyper = [_short_key(k) for k in comparison.hyperparameters]
    # priority: the row label, the metrics in the order asked, then what tells the rows apart
    wanted = ["run", *comparison.labels, "model", *hyper]
    chosen: list[str] = []
    left_out: list[str] = []
    for column in wanted:
        trial = [c for c in frame.columns if c in (*chosen, column)]
        if max(len(line) for line in _render(frame, trial, set(comparison.labels))) <= width:
            chosen.append(column)
        else:
            left_out.append(column)
    lines = _render(frame, [c for c in frame.columns if c in chosen], set(comparison.labels))
    return lines, left_out


def _shorten(entry: Entry, index: int, limit: int = 22) -> str:
    name = entry.runs[0].name
    # run folders are "<UTC time>-<name>-<hash>": the name part tells runs apart on screen
    parts = name.split("-")
    core = "-".join(parts[1:-1]) if len(parts) > 2 and parts[0][:8].isdigit() else name
    core = core if len(core) <= limit else core[:limit - 1] + "…"
    suffix = f"×{len(entry.runs)}" if len(entry.runs) > 1 else ""
    return f"{index + 1}:{core}{suffix}" + ("(b)" if entry.baseline else "")


def print_table(comparison: Comparison, files: list[Path]) -> None:
    lines, left_out = terminal_lines(comparison)
    notes = []
    if comparison.baseline is not None:
        notes.append(_footnote(comparison) + " (b) is the baseline.")
    if any(len(e.runs) > 1 for e in comparison.entries):
        notes.append("×n: a group of n runs that differ only in the seed (mean±sd).")
    if left_out:
        notes.append(f"not shown to fit {TERMINAL_WIDTH} columns: {', '.join(left_out)} (all are in {files[0]}).")
    console.info("\n".join(lines + notes))
