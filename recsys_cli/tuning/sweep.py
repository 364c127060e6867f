"""``recsys sweep``: every combination of a few values (and seeds) as an ordinary run, then a leaderboard.

A plain product, not a study: nothing is chosen, every run is evaluated as its config says (test by
default), and ``recsys compare`` over the sweep folder gives the same leaderboard.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from pathlib import Path
from typing import Any

import yaml

from recsys_cli import console, experiment
from recsys_cli.config import Config
from recsys_cli.config.search import SearchParam, check_space
from recsys_cli.errors import ConfigError, RecsysError
from recsys_cli.tuning import space


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["model.l2_norm=10,100", "model.implicit=true,false"]`` → {key: [values]} (YAML scalars)."""
    grid: dict[str, list[Any]] = {}
    for text in items:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid {text!r} is not KEY=V1,V2,...", hint="e.g. --grid model.l2_norm=10,100,1000")
        try:
            values = yaml.safe_load(f"[{raw}]")
        except yaml.YAMLError:
            raise ConfigError(f"--grid {text!r}: cannot read the values", hint="comma-separated YAML scalars") from None
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice", hint="list all its values in one --grid")
        grid[key] = values
    return grid


def parse_seeds(text: str | None) -> list[int] | None:
    """``--seeds`` of a sweep: ``run --seeds``' rules (integers in experiment.seed's range, each once); None when not given."""
    from recsys_cli.seeds import parse_seeds as parse

    return parse(text) if text else None


def sweep(config: Config, grid: dict[str, list[Any]], *, seeds: list[int] | None = None) -> tuple[Path, Any]:
    """Run every combination under ``runs/<time>-<name>-sweep/``; returns the folder and the leaderboard.

    The leaderboard is ``recsys compare``'s: one row per combination (its seeds grouped, mean and sd),
    the swept keys as columns, best first; written as compare.csv and compare.md in the folder.
    """
    from recsys_cli.evaluation import compare_tables
    from recsys_cli.evaluation.compare import compare
    from recsys_cli.rundir import RunDirectory, run_label

    if not grid and not seeds:
        raise ConfigError("nothing to sweep", hint="give --grid KEY=V1,V2 and/or --seeds 0,1,2")
    checked = {k: SearchParam(type="categorical", choices=v) for k, v in grid.items()}
    check_space(config.model_copy(update={"search": config.search.model_copy(update={"space": checked})}))
    experiment.preflight(config)  # input that would fail every run stops here, before the folder
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys))) or [()]
    seed_list = seeds or [config.experiment.seed]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(config.experiment.runs_dir) / f"{stamp}-{run_label(config)}-sweep"
    folder.mkdir(parents=True)
    total = len(combos) * len(seed_list)
    console.info(f"sweep of {total} runs into {folder}")
    runs = []
    for i, (combo, seed) in enumerate(itertools.product(combos, seed_list), start=1):
        params = dict(zip(keys, combo, strict=True))
        run_config = space.apply(config, params, **{"experiment.seed": seed, "experiment.runs_dir": str(folder)})
        console.info(f"[{i}/{total}] {params or ''} seed {seed}")
        try:
            with console.muted():  # each run keeps its own log.txt
                result = experiment.run(run_config)
        except RecsysError as exc:
            if exc.exit_code != 1 and not runs:  # bad input (data, memory) that every run would meet alike
                shutil.rmtree(folder, ignore_errors=True)
            raise
        runs.append(RunDirectory.open(result.run_dir))
    comparison = compare(runs, keep_all=True)
    files = [p for fmt, name in (("csv", "compare.csv"), ("md", "compare.md"))
             for p in compare_tables.write(comparison, fmt, folder / name, force=True)]
    compare_tables.print_table(comparison, files)
    return folder, comparison.table()
