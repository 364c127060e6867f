"""`recsys info` and `recsys models`."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recsys_cli import __version__
from recsys_cli.cli.common import JsonOption, handle_errors, print_json


def system_info() -> dict:
    import numpy
    import scipy
    import torch

    from recsys_cli.devices import mps_available

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 2)})
    return {
        "versions": {
            "recsys_cli": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "accelerators": {
            "cuda": cuda,
            "mps": mps_available(),
            "cpu": {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "machine": platform.machine()},
        },
        "directories": {
            "data_dir": str(Path(os.environ.get("RECSYS_DATA_DIR") or "data").resolve()),
            "runs_dir": str(Path(os.environ.get("RECSYS_RUNS_DIR") or "runs").resolve()),
        },
        "runs": run_counts(Path(os.environ.get("RECSYS_RUNS_DIR") or "runs")),
    }


def run_counts(runs_dir: Path) -> dict[str, int]:
    """Runs per status, a run whose process is gone counted as ``dead`` (rundir.effective_status)."""
    from collections import Counter

    from recsys_cli.rundir import effective_status

    folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.is_symlink()] if runs_dir.is_dir() else []
    return dict(sorted(Counter(effective_status(p) for p in folders if (p / "config.yaml").is_file()).items()))


@handle_errors
def info(
    dataset: str | None = typer.Option(
        None, "--dataset", help="Also print the statistics block of this cached data set (e.g. movielens-10m)."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (default: RECSYS_DATA_DIR or ./data)."),
    as_json: bool = JsonOption,
) -> None:
    """Print versions, the accelerators present and the data/run directories in use (on stdout).

    Example: recsys info --dataset movielens-100k
    """
    facts = system_info()
    if data_dir is not None:
        facts["directories"]["data_dir"] = str(data_dir.resolve())
    statistics: list[str] = []
    if dataset is not None:  # a bad name or a missing cache fails before anything is printed
        from recsys_cli.data import cached_statistics

        statistics = cached_statistics(dataset, Path(facts["directories"]["data_dir"]))
        facts["statistics"] = statistics
    if as_json:
        print_json(facts)
    else:
        table = Table(title="recsys info", show_header=False)
        for key, value in facts["versions"].items():
            table.add_row(key, value)
        cuda = facts["accelerators"]["cuda"]
        table.add_row("cuda", ", ".join(f"cuda:{d['index']} {d['name']} ({d['memory_gib']} GiB)" for d in cuda) or "not available")
        table.add_row("mps", "available" if facts["accelerators"]["mps"] else "not available")
        cpu = facts["accelerators"]["cpu"]
        table.add_row("cpu", f"{cpu['machine']}, {cpu['cores']} cores, torch uses {cpu['threads']} threads")
        table.add_row("data dir", facts["directories"]["data_dir"])
        table.add_row("runs dir", facts["directories"]["runs_dir"])
        table.add_row("runs", ", ".join(f"{n} {state}" for state, n in facts["runs"].items()) or "none")
        Console(highlight=False).print(table)
        for text in statistics:
            print(text)


@handle_errors
def models(as_json: bool = JsonOption) -> None:
    """List the registered models and their hyperparameters (type, default) on stdout.

    Example: recsys models --json
    """
    from recsys_cli.config.reference import type_name
    from recsys_cli.models.registry import available, get_model_class

    listing = {}
    for name in available():
        schema = get_model_class(name).Config
        listing[name] = {
            key: {"type": type_name(field.annotation), "default": field.default,
                  "description": field.description}
            for key, field in schema.model_fields.items() if key != "name"
        }
    if as_json:
        print_json(listing)
        return
    out = Console(highlight=False, soft_wrap=True)  # one line per model, whatever the width: grep-able
    for name, params in listing.items():
        keys = ", ".join(f"{k}={v['default']!r}" for k, v in params.items())
        out.print(f"[bold]{name}[/bold]: {escape(keys)}")
