"""``recsys compare``: a table of runs (seed groups as mean ± sd), with paired tests against a baseline.

1. Runs are read defensively (any of their files may be missing, damaged or of the wrong JSON type:
   the cells stay blank). Failed, interrupted and benchmark runs are left out unless ``keep_all``.
2. Runs whose configs differ only in the seed form a group (groups.py): one row, mean ± sd.
3. With a baseline, every other row is tested against it on each per-user metric (stats.py), paired
   over the users both evaluated on the same split, with a family-wise correction over all the tests.

Rendering and files: compare_tables.py.
"""

from __future__ import annotations

import difflib
import glob
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_cli import console
from recsys_cli.errors import ConfigError, DataError, RecsysError
from recsys_cli.evaluation.groups import SEED_KEY, differing_keys, effective, flatten, group_indices, summarize
from recsys_cli.evaluation.metrics import COLUMNS, PER_USER
from recsys_cli.evaluation.report import metric_name
from recsys_cli.evaluation.stats import adjust, check_choice, paired_test
from recsys_cli.rundir import RunDirectory, effective_status, load_yaml

DEFAULT_METRICS = ("PRECISION", "RECALL", "MAP", "NDCG")
EXCLUDED_STATUSES = ("failed", "interrupted", "dead")

# Which way is better, per metric column (docs/metrics.md, "Direction"): +1 higher, −1 lower, 0 neither.
LOWER_IS_BETTER = {"AVERAGE_POPULARITY", "RATIO_AVERAGE_POPULARITY", "loss", "fit_s", "evaluate_s"}
NO_DIRECTION = {"ITEMS_IN_GT", "USERS_IN_GT"}


def direction(metric: str) -> int:
    """+1 when higher is better, −1 when lower is, 0 for properties of the data (ITEMS_IN_GT, USERS_IN_GT).
    Free-form metrics (a classifier's accuracy) count as higher-is-better, ``loss`` as lower."""
    name = metric.partition("@")[0]
    if name in NO_DIRECTION:
        return 0
    return -1 if name in LOWER_IS_BETTER else 1


# -- reading runs --------------------------------------------------------------------------------------
def _seed_members(folder: Path) -> list[Path]:
    """The member runs a seed-group folder links to (``seed-<s>`` links of ``recsys run --seeds``)."""
    if not folder.is_dir() or (folder / "config.yaml").is_file():
        return []
    return [p for p in sorted(folder.glob("seed-*")) if p.is_dir() and (p / "config.yaml").is_file()]


def expand_run_dirs(patterns: list[str | Path]) -> list[RunDirectory]:
    """Run directories named by paths or (quoted) globs, each once, in the order given; a seed-group
    folder stands for its member runs."""
    runs: list[RunDirectory] = []
    seen: set[Path] = set()
    for pattern in patterns:
        text = str(pattern)
        paths = [Path(text)]
        if not Path(text).exists() and any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
            if not paths:
                raise RecsysError(f"no run directory matches {text!r}", hint="check the pattern, e.g. 'runs/*toppop*'")
            paths = [p for p in paths if p.is_dir() and ((p / "config.yaml").is_file() or _seed_members(p))]
        paths = [member for p in paths for member in (_seed_members(p) or [p])]
        for path in paths:
            run = RunDirectory.open(path)
            if run.path not in seen:
                seen.add(run.path)
                runs.append(run)
    if not runs:
        raise RecsysError("no run directories to compare", hint="pass run folders under runs/, or a glob like 'runs/*'")
    return runs


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except Exception:  # noqa: BLE001 - an unreadable config leaves the descriptive columns blank
        return {}
    return data if isinstance(data, dict) else {}


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


@dataclass
class RunRecord:
    """What compare needs of one run directory; every field has a blank default."""

    path: Path
    config: dict[str, Any]
    status: str
    fingerprint: str
    benchmark: bool
    fit_s: float
    evaluate_s: float
    metrics: pd.DataFrame | None = None
    split: str = ""  # "test", "val", or "" without metrics

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(_section(self.config, "model").get("name", ""))

    @property
    def dataset(self) -> str:
        return str(_section(self.config, "data").get("dataset", ""))

    @property
    def seed(self) -> Any:
        return _section(self.config, "experiment").get("seed")

    @property
    def cutoffs(self) -> tuple[int, ...]:
        if self.metrics is None or "cutoff" not in self.metrics:
            return ()
        return tuple(sorted({int(c) for c in pd.to_numeric(self.metrics["cutoff"], errors="coerce").dropna()}))

    def value(self, name: str, cutoff: int | None) -> float:
        frame = self.metrics
        if frame is None or "metric" not in frame or "value" not in frame:
            return math.nan
        if cutoff is not None:  # the 27 evaluator columns, any case
            rows = frame[frame["metric"].astype(str).str.upper() == name.upper()]
            if "cutoff" not in rows:
                return math.nan
            rows = rows[pd.to_numeric(rows["cutoff"], errors="coerce") == cutoff]
        else:  # free-form metric names (mlp-iris's accuracy), exact
            rows = frame[frame["metric"] == name]
            if "split" in rows and (rows["split"] == "test").any():
                rows = rows[rows["split"] == "test"]
        if rows.empty:
            return math.nan
        return float(pd.to_numeric(rows["value"], errors="coerce").iloc[0])


def read_run(run: RunDirectory) -> RunRecord:
    config = _read_yaml(run.path / "config.yaml")
    env = _read_json_object(run.path / "env.json")
    timing = _read_json_object(run.path / "timing.json")
    seconds = timing.get("seconds") if isinstance(timing.get("seconds"), dict) else {}
    split_info = env.get("split") if isinstance(env.get("split"), dict) else {}
    status = effective_status(run)  # a `running` run whose process is gone reads `dead`
    record = RunRecord(
        path=run.path, config=config, status=str(status), fingerprint=str(split_info.get("fingerprint") or ""),
        benchmark=_is_benchmark(run.path, env), fit_s=_number(seconds.get("fit")),
        evaluate_s=_number(seconds.get("evaluate")),
    )
    for stem, split in (("metrics", "test"), ("metrics-val", "val")):
        path = run.path / f"{stem}.csv"
        if path.is_file():
            try:
                record.metrics, record.split = pd.read_csv(path), split
            except (OSError, ValueError, pd.errors.ParserError):
                console.warn(f"{path} is unreadable; its metrics are left blank")
            break
    else:
        console.warn(f"{run.path.name} has no metrics file; its metric columns are blank")
    return record


def _is_benchmark(path: Path, env: dict[str, Any]) -> bool:
    """A bench-dtype run (``bench`` in env.json) or one of its repeats (in ``<bench run>/runs/``)."""
    if isinstance(env.get("bench"), dict):
        return True
    outer = path.parent.parent
    return path.parent.name == "runs" and isinstance(_read_json_object(outer / "env.json").get("bench"), dict)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def select_runs(records: list[RunRecord], keep_all: bool = False) -> tuple[list[RunRecord], list[RunRecord]]:
    """(kept, left out): failed, interrupted and dead runs and benchmark runs are left out unless keep_all."""
    if keep_all:
        return records, []
    kept = [r for r in records if r.status not in EXCLUDED_STATUSES and not r.benchmark]
    return kept, [r for r in records if r not in kept]


# -- metric names --------------------------------------------------------------------------------------


def parse_metric_specs(text: str | None) -> list[tuple[str, int | None]] | None:
    if text is None:
        return None
    specs: list[tuple[str, int | None]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "@" in part:
            name, _, cutoff = part.partition("@")
            cutoff = cutoff.strip()
            # ASCII digits only: str.isdigit accepts '²', which int() then refuses
            if not (cutoff.isascii() and cutoff.isdigit()) or int(cutoff) < 1:
                raise ConfigError(f"--metrics entry {part!r} has no valid cutoff",
                                  hint="e.g. --metrics NDCG@10,RECALL@20")
            specs.append((metric_name(name), int(cutoff)))
        else:
            specs.append((part, None))
    if not specs:
        raise ConfigError("--metrics is empty", hint="e.g. --metrics NDCG@10,PRECISION@10")
    return specs


def label(name: str, cutoff: int | None) -> str:
    return f"{name}@{cutoff}" if cutoff is not None else name


def check_specs(specs: list[tuple[str, int | None]], records: list[RunRecord]) -> None:
    """Every name without a cutoff must be a metric some run has; the 27 evaluator columns need a cutoff."""
    known = {str(m) for r in records if r.metrics is not None and "metric" in r.metrics for m in r.metrics["metric"]}
    cutoffs = sorted({c for r in records for c in r.cutoffs})
    example = cutoffs[0] if cutoffs else 10
    for name, cutoff in specs:
        if cutoff is not None:
            if cutoffs and cutoff not in cutoffs:
                raise ConfigError(f"--metrics {name}@{cutoff}: no run was evaluated at cutoff {cutoff}",
                                  hint=f"the runs have cutoffs {', '.join(map(str, cutoffs))} "
                                       f"(recsys evaluate RUN --cutoffs {cutoff} adds one)")
            continue
        if name in known and name.upper() not in COLUMNS:
            continue
        if name.upper() in COLUMNS:
            raise ConfigError(f"--metrics {name} needs a cutoff",
                              hint=f"e.g. {name.upper()}@{example}" + (f" (the runs have cutoffs "
                                   f"{', '.join(map(str, cutoffs))})" if cutoffs else ""))
        close = difflib.get_close_matches(name, sorted(known) + [f"{c}@{example}" for c in DEFAULT_METRICS], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"no run has a metric named {name!r}",
                          hint=f"{hint}recommender metrics take a cutoff, e.g. NDCG@{example}")


def default_specs(records: list[RunRecord]) -> list[tuple[str, int | None]]:
    cutoffs = sorted({c for r in records for c in r.cutoffs})
    plain: list[str] = []
    for r in records:
        if r.metrics is not None and "metric" in r.metrics and "cutoff" not in r.metrics:
            plain.extend(m for m in r.metrics["metric"].astype(str) if m not in plain)
    specs: list[tuple[str, int | None]] = []
    if cutoffs:
        cutoff = 10 if 10 in cutoffs else cutoffs[0]
        specs += [(name, cutoff) for name in DEFAULT_METRICS]
    specs += [(name, None) for name in plain if name == "accuracy"] or [(name, None) for name in plain[:1]]
    return specs or [("NDCG", 10)]


# -- the comparison ------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One row: a run, or a group of runs whose configs differ only in the seed."""

    runs: list[RunRecord]
    baseline: bool = False

    @property
    def name(self) -> str:
        first = self.runs[0].name
        return first if len(self.runs) == 1 else f"{first} (+{len(self.runs) - 1} seeds)"

    def summary(self, spec: tuple[str, int | None]):
        return summarize([r.value(*spec) for r in self.runs])


@dataclass
class Comparison:
    entries: list[Entry]
    specs: list[tuple[str, int | None]]
    hyperparameters: list[str]
    excluded: list[RunRecord] = field(default_factory=list)
    statistics: pd.DataFrame | None = None  # one row per (entry, metric) tested against the baseline
    test: str = "wilcoxon"
    correction: str = "holm"
    alpha: float = 0.05

    @property
    def baseline(self) -> Entry | None:
        return next((e for e in self.entries if e.baseline), None)

    @property
    def labels(self) -> list[str]:
        return [label(*s) for s in self.specs]

    def significant(self, entry: Entry, spec_label: str) -> bool:
        if self.statistics is None or entry.baseline:
            return False
        rows = self.statistics[(self.statistics["row"] == entry.name) & (self.statistics["metric"] == spec_label)]
        return bool(rows["significant"].any())

    def table(self) -> pd.DataFrame:
        """Numbers (CSV, --json): descriptive columns, hyperparameters, each metric's mean, its sd (for
        groups), its corrected p-value against the baseline and a ``*`` when significant, then times."""
        grouped = any(len(e.runs) > 1 for e in self.entries)
        rows = []
        for entry in self.entries:
            first = entry.runs[0]
            flat = flatten(effective(first.config))
            statuses = {r.status for r in entry.runs}
            fingerprints = {r.fingerprint[:12] for r in entry.runs}
            row: dict[str, Any] = {
                "run": ";".join(r.name for r in entry.runs), "model": first.model, "dataset": first.dataset,
                "split": first.split, "fingerprint": fingerprints.pop() if len(fingerprints) == 1
                else f"{len(fingerprints)} splits",
                "status": statuses.pop() if len(statuses) == 1 else "mixed",
            }
            if grouped:
                row["seeds"] = ",".join(str(r.seed) for r in entry.runs)
            if self.baseline is not None:
                row["baseline"] = entry.baseline
            for key in self.hyperparameters:
                value = flat.get(key)
                row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
            for spec in self.specs:
                s = entry.summary(spec)
                row[label(*spec)] = s.mean
                if grouped:
                    row[f"{label(*spec)} sd"] = s.sd
                if self.statistics is not None:
                    stats = self.statistics[(self.statistics["row"] == entry.name)
                                            & (self.statistics["metric"] == label(*spec))]
                    row[f"{label(*spec)} p"] = float(stats["p_adjusted"].iloc[0]) if len(stats) else math.nan
                    row[f"{label(*spec)} sig"] = "*" if self.significant(entry, label(*spec)) else ""
            row["fit_s"] = summarize([r.fit_s for r in entry.runs]).mean
            row["evaluate_s"] = summarize([r.evaluate_s for r in entry.runs]).mean
            rows.append(row)
        return pd.DataFrame(rows)

    def best(self, spec: tuple[str, int | None]) -> float | None:
        sign = direction(label(*spec))
        values = [e.summary(spec).mean for e in self.entries]
        values = [v for v in values if not math.isnan(v)]
        if not sign or not values:
            return None
        return max(values) if sign > 0 else min(values)


def compare(runs: list[RunDirectory], specs: list[tuple[str, int | None]] | None = None, *,
            baseline: RunDirectory | None = None, test: str = "wilcoxon", correction: str = "holm",
            alpha: float = 0.05, keep_all: bool = False) -> Comparison:
    """The comparison of ``runs`` (the Python API behind ``recsys compare``)."""
    test = check_choice(test, ("wilcoxon", "ttest", "bootstrap"), "--test")
    correction = check_choice(correction, ("holm", "bonferroni", "none"), "--correction")
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha {alpha:g} is not between 0 and 1", hint="e.g. --alpha 0.05")
    if baseline is not None and baseline.path not in {r.path for r in runs}:
        runs = [*runs, baseline]
    records = [read_run(r) for r in runs]
    kept, excluded = select_runs(records, keep_all)
    if baseline is not None and baseline.path not in {r.path for r in kept}:
        status = next(r for r in records if r.path == baseline.path)
        raise ConfigError(f"the baseline {baseline.path.name} is left out (status {status.status}"
                          f"{', a benchmark run' if status.benchmark else ''})",
                          hint="pick a finished run as --baseline, or pass --all")
    if excluded:
        console.info(f"left out {len(excluded)} failed, interrupted or benchmark run(s) "
                     f"({', '.join(r.name for r in excluded[:3])}{', ...' if len(excluded) > 3 else ''}); "
                     "--all keeps them")
    if not kept:
        raise RecsysError("every run given is failed, interrupted or a benchmark run",
                          hint="pass --all to compare them anyway")
    if specs is not None:
        check_specs(specs, kept)
    specs = specs or default_specs(kept)
    entries = [Entry([kept[i] for i in idx]) for idx in group_indices([r.config for r in kept])]
    for entry in entries:
        entry.baseline = baseline is not None and any(r.path == baseline.path for r in entry.runs)
    hyper = differing_keys([e.runs[0].config for e in entries]) if len(entries) > 1 else []
    hyper = [k for k in hyper if k not in ("model.name", "data.dataset", SEED_KEY)]
    result = Comparison(entries, specs, hyper, excluded, test=test, correction=correction, alpha=alpha)
    if baseline is not None:
        result.statistics = paired_statistics(result)
    first = specs[0]
    sign = direction(label(*first)) or 1
    result.entries.sort(key=lambda e: (math.isnan(e.summary(first).mean), -sign * e.summary(first).mean
                                       if not math.isnan(e.summary(first).mean) else 0.0))
    return result


# -- statistics against the baseline -------------------------------------------------------------------
def check_comparable(entries: list[Entry], base: Entry) -> None:
    """Refuse rows that cannot be paired with the baseline, naming what differs."""
    ref = base.runs[0]
    for entry in entries:
        for run in entry.runs:
            if run.metrics is None:
                raise DataError(f"{run.name} has no metrics file, so it cannot be tested",
                                hint=f"evaluate it (recsys evaluate {run.path}) or leave it out")
            if run.split != ref.split:
                raise DataError(f"{run.name} was evaluated on the {run.split} split, the baseline "
                                f"{ref.name} on the {ref.split} split",
                                hint="compare runs evaluated on one split (recsys evaluate RUN --split ...)")
            if run.cutoffs != ref.cutoffs:
                raise DataError(f"{run.name} was evaluated at cutoffs {list(run.cutoffs)}, the baseline "
                                f"{ref.name} at {list(ref.cutoffs)}",
                                hint="evaluate both at the same cutoffs (recsys evaluate RUN --cutoffs ...)")
    base_prints = {r.fingerprint for r in base.runs}
    for entry in entries:
        for run in entry.runs:
            if run.fingerprint not in base_prints or not run.fingerprint:
                raise DataError(f"{run.name} used split {run.fingerprint[:12] or '(unknown)'}, which no baseline run "
                                f"used (the baseline's: {', '.join(sorted(p[:12] for p in base_prints))})",
                                hint="compare runs made on the same split (the same data.split settings and seed)")


def _per_user_means(runs: list[RunRecord], columns: list[str]) -> pd.DataFrame:
    """Per user, the mean over ``runs`` (one split) of each column, over the users every run evaluated."""
    from recsys_cli.evaluation.per_user import per_user_path, read_per_user

    frames = []
    for run in runs:
        path = per_user_path(run.path, run.split)
        if not path.is_file():
            raise DataError(f"{run.name} has no per-user results ({path.name}), which the tests need",
                            hint=f"evaluate it again to write them: recsys evaluate {run.path}")
        frames.append(read_per_user(path, columns)[columns])
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    return sum(f.loc[common] for f in frames) / len(frames)


def paired_statistics(comparison: Comparison) -> pd.DataFrame:
    base = comparison.baseline
    assert base is not None
    others = [e for e in comparison.entries if not e.baseline]
    check_comparable(comparison.entries, base)
    tested = [s for s in comparison.specs if s[1] is not None and s[0] in PER_USER]
    skipped = [label(*s) for s in comparison.specs if s not in tested]
    if skipped:
        console.info(f"no per-user values for {', '.join(skipped)}: not tested (docs/metrics.md lists the "
                     "per-user metrics)")
    columns = [label(*s) for s in tested]
    rows = []
    if columns:
        base_vectors = {fp: _per_user_means([r for r in base.runs if r.fingerprint == fp], columns)
                        for fp in {r.fingerprint for r in base.runs}}
        for entry in others:
            pairs = []
            for fp in sorted({r.fingerprint for r in entry.runs}):
                mine = _per_user_means([r for r in entry.runs if r.fingerprint == fp], columns)
                theirs = base_vectors[fp]
                common = mine.index.intersection(theirs.index)
                pairs.append((mine.loc[common], theirs.loc[common]))
            for col in columns:
                a = np.concatenate([p[0][col].to_numpy() for p in pairs])
                b = np.concatenate([p[1][col].to_numpy() for p in pairs])
                res = paired_test(a, b, comparison.test, confidence=1 - comparison.alpha)
                rows.append({"row": entry.name, "baseline": base.name, "metric": col, "n_users": res.n,
                             "mean": float(a.mean()) if a.size else math.nan,
                             "baseline_mean": float(b.mean()) if b.size else math.nan,
                             "mean_diff": res.mean_diff, "ci_low": res.ci_low, "ci_high": res.ci_high,
                             "effect_size": res.effect_size, "p_value": res.p_value})
    frame = pd.DataFrame(rows, columns=["row", "baseline", "metric", "n_users", "mean", "baseline_mean", "mean_diff",
                                        "ci_low", "ci_high", "effect_size", "p_value"])
    frame["p_adjusted"] = adjust(frame["p_value"].to_numpy(), comparison.correction) if len(frame) else []
    frame["significant"] = frame["p_adjusted"] < comparison.alpha
    frame["test"], frame["correction"] = comparison.test, comparison.correction
    return frame
