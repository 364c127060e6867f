"""One experiment over several seeds, and the group's summary: mean, sd and a 95 % Student-t interval.

    from recsys_cli import load_config, seeds
    group = seeds.run_seeds(load_config("configs/ease.yaml"), [0, 1, 2, 3, 4], split="vary")
    print(group.path, group.summary)

``split="vary"``: each seed makes its own split (data.split.seed follows experiment.seed), so the
spread covers the split and the model. ``split="fixed"``: every member uses the config's split seed
(data.split.seed, else experiment.seed) and only the model's seed changes. Members are ordinary run
directories; the group folder ``runs/<UTC time>-<name>-seeds/`` holds ``summary.csv/.json/.md``,
``members.csv`` and a link ``seed-<s>`` to each member's run directory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from recsys_cli import atomic, console
from recsys_cli.config import Config
from recsys_cli.errors import ConfigError, RecsysError

SplitMode = Literal["vary", "fixed"]
CONFIDENCE = 0.95
SUMMARY_COLUMNS = ["n", "mean", "sd", "ci_low", "ci_high"]


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → [0, 1, 2]; at least one seed, each once."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r} is not a comma-separated list of integers", hint="e.g. --seeds 0,1,2,3,4") from None
    if not values:
        raise ConfigError("--seeds is empty", hint="e.g. --seeds 0,1,2,3,4")
    if len(set(values)) != len(values):
        raise ConfigError(f"--seeds {text!r} repeats a seed", hint="list each seed once")
    bad = [v for v in values if not 0 <= v < 2**63]  # experiment.seed's range
    if bad:
        raise ConfigError(f"--seeds: {bad[0]} is out of range", hint="seeds are integers with 0 ≤ seed < 2^63")
    return values


def member_config(config: Config, seed: int, split: SplitMode) -> Config:
    """The config of one member: experiment.seed = ``seed``; the split seed follows it (vary) or stays
    at the base config's (fixed)."""
    if split not in ("vary", "fixed"):
        raise ConfigError(f"--seeds-split {split!r} is not vary or fixed",
                          hint="vary: a split per seed; fixed: one split, model seeds only")
    member = config.model_copy(deep=True)
    base_split_seed = config.data.split.seed if config.data.split.seed is not None else config.experiment.seed
    member.experiment.seed = seed
    member.data.split.seed = base_split_seed if split == "fixed" else None
    return member


def summarize(frames: list[pd.DataFrame], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per metric (and cutoff or split, whatever keys the tidy frames have) over the members' values:
    :func:`recsys_cli.evaluation.groups.summarize` (n, mean, sample sd, Student-t interval of the mean)."""
    from recsys_cli.evaluation.groups import summarize as summarize_values

    if not frames:
        raise RecsysError("no member run has metrics to summarise", hint="check the members' status.json")
    tidy = pd.concat(frames, ignore_index=True)
    keys = [c for c in tidy.columns if c != "value"]
    rows = []
    for key, values in tidy.groupby(keys, sort=False)["value"]:
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **summarize_values(values.tolist(), confidence).as_dict()})
    return pd.DataFrame(rows, columns=keys + SUMMARY_COLUMNS)


@dataclass
class SeedGroup:
    path: Path
    seeds: list[int]
    split: SplitMode
    members: pd.DataFrame  # seed, run_dir, status, split_fingerprint, error
    summary: pd.DataFrame

    @property
    def failed(self) -> pd.DataFrame:
        return self.members[self.members["status"] != "succeeded"]


def _group_dir(config: Config) -> Path:
    from recsys_cli.rundir import make_runs_folder

    runs_dir = Path(config.experiment.runs_dir)
    make_runs_folder(runs_dir)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1000):
        path = runs_dir / f"{stamp}-{config.experiment.name}-seeds{'' if attempt == 0 else f'-{attempt + 1}'}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RecsysError(f"could not create a unique group directory under {runs_dir}")  # pragma: no cover


def _fingerprint(run_dir: Path) -> str:
    import json

    try:
        return json.loads((run_dir / "env.json").read_text())["split"]["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _metrics_file(run_dir: Path, config: Config) -> Path:
    """The member's table: metrics-val.csv for a run evaluated on the validation split."""
    from recsys_cli.evaluation.report import metrics_stem

    table = run_dir / f"{metrics_stem(config.evaluation.split)}.csv"
    return table if table.exists() else run_dir / "metrics.csv"  # a classifier writes metrics.csv only


def run_seeds(config: Config, seeds: list[int], *, split: SplitMode = "vary", hooks: list | None = None) -> SeedGroup:
    """``experiment.run`` once per seed, then the group summary (written and returned).

    A member that fails is recorded as failed and the others still run; the summary covers the members
    that succeeded. Bad input (exit code 2: config, data, device) in the first member stops the group
    and leaves no group folder; Ctrl-C stops the group."""
    from recsys_cli import experiment

    configs = [member_config(config, seed, split) for seed in seeds]
    group_path = _group_dir(config)
    console.info(f"seed group {group_path}: seeds {', '.join(map(str, seeds))}, split {split}")
    rows, frames = [], []
    for seed, member in zip(seeds, configs):
        console.info(f"— seed {seed} ({len(rows) + 1}/{len(seeds)})")
        try:
            result = experiment.run(member, hooks=hooks)
        except RecsysError as exc:
            if exc.exit_code != 1 and not frames:  # bad input (config, data, device): every seed would fail alike
                shutil.rmtree(group_path, ignore_errors=True)
                raise
            console.error(f"seed {seed} failed: {exc.one_line()}")
            rows.append({"seed": seed, "run_dir": "", "status": "failed", "split_fingerprint": "",
                         "error": exc.one_line()})
            continue
        run_dir = Path(result.run_dir)
        rows.append({"seed": seed, "run_dir": str(run_dir), "status": result.status,
                     "split_fingerprint": _fingerprint(run_dir), "error": ""})
        frames.append(pd.read_csv(_metrics_file(run_dir, member)))
        _link(group_path / f"seed-{seed}", run_dir)
    members = pd.DataFrame(rows, columns=["seed", "run_dir", "status", "split_fingerprint", "error"])
    summary = summarize(frames) if frames else pd.DataFrame()
    group = SeedGroup(group_path, list(seeds), split, members, summary)
    write_group(group, config)
    return group


def _link(link: Path, target: Path) -> None:
    """A relative link to a member run; where links are not possible, members.csv still lists it."""
    with contextlib.suppress(OSError):
        link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)


def to_markdown(group: SeedGroup, title: str) -> str:
    lines = [f"# {title}: {len(group.seeds)} seeds ({', '.join(map(str, group.seeds))}), split {group.split}", "",
             f"Mean, sample standard deviation and {CONFIDENCE * 100:g} % Student-t confidence interval of the mean "
             "over the members that succeeded.", ""]
    if not group.summary.empty:
        keys = [c for c in group.summary.columns if c not in SUMMARY_COLUMNS]
        lines += ["| " + " | ".join(keys + ["n", "mean", "sd", "95 % CI"]) + " |",
                  "|" + "---|" * len(keys) + "---:|---:|---:|---|"]
        for row in group.summary.itertuples(index=False):
            r = row._asdict()
            lines.append("| " + " | ".join(str(r[k]) for k in keys)
                         + f" | {r['n']} | {r['mean']:.6f} | {r['sd']:.6f} | [{r['ci_low']:.6f}, {r['ci_high']:.6f}] |")
    lines += ["", "| seed | status | run | split fingerprint |", "|---|---|---|---|"]
    for row in group.members.itertuples(index=False):
        lines.append(f"| {row.seed} | {row.status} | {Path(row.run_dir).name if row.run_dir else row.error} | "
                     f"{row.split_fingerprint[:12]} |")
    return "\n".join(lines) + "\n"


def write_group(group: SeedGroup, config: Config) -> None:
    summary = group.summary
    atomic.write_together({
        group.path / "summary.csv": summary.to_csv(index=False, float_format="%.10g"),
        group.path / "summary.json": atomic.json_text({
            "experiment": config.experiment.name, "seeds": group.seeds, "split": group.split,
            "confidence": CONFIDENCE, "members": group.members, "summary": summary,
        }),
        group.path / "summary.md": to_markdown(group, config.experiment.name),
        group.path / "members.csv": group.members.to_csv(index=False),
    })


def print_summary(group: SeedGroup, metrics: tuple[str, ...] | None = None) -> None:
    """The key metrics on stderr: mean ± sd [95 % CI] per cutoff."""
    from recsys_cli.evaluation.report import KEY_COLUMNS

    summary = group.summary
    if summary.empty:
        return
    wanted = metrics or KEY_COLUMNS
    shown = summary[summary["metric"].isin(wanted)] if "metric" in summary else summary
    if shown.empty:
        shown = summary
    keys = [c for c in shown.columns if c not in SUMMARY_COLUMNS]
    lines = [f"{len(group.seeds)} seeds, split {group.split}: mean ± sd [95 % CI] over {int(shown['n'].max())} runs"]
    for row in shown.itertuples(index=False):
        r = row._asdict()
        label = f"{r['metric']}@{r['cutoff']}" if keys == ["cutoff", "metric"] else " ".join(str(r[k]) for k in keys)
        lines.append(f"  {label}: {r['mean']:.4f} ± {r['sd']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")
    console.info("\n".join(lines))
