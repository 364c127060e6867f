"""``recsys compare``: a leaderboard of run directories (model, data set, split, metrics, times)."""

from __future__ import annotations

import difflib
import glob
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from recsys_cli import atomic, console
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.evaluation.report import metric_name
from recsys_cli.rundir import RunDirectory, load_yaml

DEFAULT_METRICS = ("PRECISION", "RECALL", "MAP", "NDCG")
INFO_COLUMNS = ["run", "model", "dataset", "split", "fingerprint", "status"]
TIME_COLUMNS = ["fit_s", "evaluate_s"]


def expand_run_dirs(patterns: list[str | Path]) -> list[RunDirectory]:
    """Run directories named by paths or (quoted) globs, each once, in the order given."""
    runs: list[RunDirectory] = []
    seen: set[Path] = set()
    for pattern in patterns:
        text = str(pattern)
        paths = [Path(text)]
        if not Path(text).exists() and any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
            if not paths:
                raise RecsysError(f"no run directory matches {text!r}", hint="check the pattern, e.g. 'runs/*toppop*'")
            paths = [p for p in paths if p.is_dir() and (p / "config.yaml").is_file()]
        for path in paths:
            run = RunDirectory.open(path)
            if run.path not in seen:
                seen.add(run.path)
                runs.append(run)
    if not runs:
        raise RecsysError("no run directories to compare", hint="pass run folders under runs/, or a glob like 'runs/*'")
    return runs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _metrics_frame(run: RunDirectory) -> tuple[pd.DataFrame | None, str | None]:
    """The run's tidy metrics (test first, else validation) and which split they are."""
    for stem, split in (("metrics", None), ("metrics-val", "val")):
        path = run.path / f"{stem}.csv"
        if path.is_file():
            try:
                frame = pd.read_csv(path)
            except (OSError, ValueError, pd.errors.ParserError):
                console.warn(f"{path} is unreadable; its metrics are left blank")
                return None, None
            return frame, split
    return None, None


def parse_metric_specs(text: str | None) -> list[tuple[str, int | None]] | None:
    if text is None:
        return None
    specs: list[tuple[str, int | None]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "@" in part:
            name, _, cutoff = part.partition("@")
            if not cutoff.strip().isdigit() or int(cutoff) < 1:
                raise ConfigError(f"--metrics entry {part!r} has no valid cutoff",
                                  hint="e.g. --metrics NDCG@10,RECALL@20")
            specs.append((metric_name(name), int(cutoff)))
        else:
            specs.append((part, None))
    if not specs:
        raise ConfigError("--metrics is empty", hint="e.g. --metrics NDCG@10,PRECISION@10")
    return specs


def _label(name: str, cutoff: int | None) -> str:
    return f"{name}@{cutoff}" if cutoff is not None else name


def _lookup(frame: pd.DataFrame | None, name: str, cutoff: int | None) -> float:
    if frame is None or "metric" not in frame or "value" not in frame:
        return math.nan
    if cutoff is not None:  # the 27 evaluator columns, any case
        rows = frame[frame["metric"].astype(str).str.upper() == name.upper()]
    else:  # free-form metric names (mlp-iris's accuracy), exact
        rows = frame[frame["metric"] == name]
    if cutoff is not None:
        if "cutoff" not in rows:
            return math.nan
        rows = rows[pd.to_numeric(rows["cutoff"], errors="coerce") == cutoff]
    elif "split" in rows and (rows["split"] == "test").any():
        rows = rows[rows["split"] == "test"]
    if rows.empty:
        return math.nan
    return float(pd.to_numeric(rows["value"], errors="coerce").iloc[0])


def _default_specs(frames: list[pd.DataFrame | None]) -> list[tuple[str, int | None]]:
    cutoffs: set[int] = set()
    plain: list[str] = []
    for frame in frames:
        if frame is None or "metric" not in frame:
            continue
        if "cutoff" in frame:
            cutoffs.update(int(c) for c in pd.to_numeric(frame["cutoff"], errors="coerce").dropna())
        else:
            plain.extend(m for m in frame["metric"].astype(str) if m not in plain)
    specs: list[tuple[str, int | None]] = []
    if cutoffs:
        cutoff = 10 if 10 in cutoffs else min(cutoffs)
        specs += [(name, cutoff) for name in DEFAULT_METRICS]
    specs += [(name, None) for name in plain if name == "accuracy"] or [(name, None) for name in plain[:1]]
    return specs or [("NDCG", 10)]


def leaderboard(runs: list[RunDirectory], metrics: list[tuple[str, int | None]] | None = None) -> pd.DataFrame:
    """One row per run, best first by the first metric (runs without it last)."""
    frames, rows = [], []
    for run in runs:
        frame, metric_split = _metrics_frame(run)
        frames.append(frame)
        config = _read_yaml(run.path / "config.yaml")
        env = _read_json(run.path / "env.json")
        timing = _read_json(run.path / "timing.json")
        seconds = timing.get("seconds", {}) if isinstance(timing, dict) else {}
        split_info = env.get("split") if isinstance(env, dict) else None
        fingerprint = split_info.get("fingerprint", "") if isinstance(split_info, dict) else ""
        eval_split = metric_split or (config.get("evaluation", {}) or {}).get("split", "test")
        if frame is None:
            console.warn(f"{run.path.name} has no metrics file; its metric columns are blank")
            eval_split = ""
        rows.append({
            "run": run.path.name,
            "model": (config.get("model") or {}).get("name", ""),
            "dataset": (config.get("data") or {}).get("dataset", ""),
            "split": eval_split,
            "fingerprint": str(fingerprint or "")[:12],
            "status": run.status().get("status", "unknown"),
            "fit_s": seconds.get("fit", math.nan),
            "evaluate_s": seconds.get("evaluate", math.nan),
        })
    specs = metrics or _default_specs(frames)
    if metrics is not None:
        known = {str(m) for f in frames if f is not None and "metric" in f for m in f["metric"]}
        for name, cutoff in specs:
            if cutoff is None and name not in known:
                close = difflib.get_close_matches(name, sorted(known) + [f"{c}@10" for c in DEFAULT_METRICS], n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(f"no run has a metric named {name!r}",
                                  hint=f"{hint}recommender metrics take a cutoff, e.g. NDCG@10")
    for row, frame in zip(rows, frames):
        for name, cutoff in specs:
            row[_label(name, cutoff)] = _lookup(frame, name, cutoff)
    columns = INFO_COLUMNS + [_label(n, c) for n, c in specs] + TIME_COLUMNS
    table = pd.DataFrame(rows, columns=columns)
    first = _label(*specs[0])
    return table.sort_values(first, ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except Exception:  # noqa: BLE001 - an unreadable config leaves the descriptive columns blank
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    sep = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(["# Leaderboard", "", header, sep, *body]) + "\n"


def write_leaderboard(table: pd.DataFrame, output: Path) -> tuple[Path, Path]:
    csv_path = output if output.suffix.lower() == ".csv" else output.with_suffix(".csv")
    md_path = csv_path.with_suffix(".md")
    with atomic.atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")
    atomic.write_text(md_path, to_markdown(table))
    return csv_path, md_path


def render(table: pd.DataFrame) -> Table:
    out = Table(title="leaderboard", title_justify="left")
    for column in table.columns:
        out.add_column(column, justify="right" if column not in INFO_COLUMNS else "left", no_wrap=True)
    for row in table.itertuples(index=False):
        out.add_row(*(_fmt(v) for v in row))
    return out


def print_leaderboard(table: pd.DataFrame) -> None:
    """The leaderboard on stderr, never wrapped (run names are long; a pipe gets the full width too)."""
    buffer = io.StringIO()
    Console(file=buffer, width=1000, color_system=None).print(render(table))
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    console.info("\n".join(lines))
