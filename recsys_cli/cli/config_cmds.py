"""`recsys config show|validate`."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from recsys_cli import console
from recsys_cli.cli.common import ConfigArgument, JsonOption, SetOption, handle_errors, literal_help, load, print_json
from recsys_cli.config import config_hash, resolved_dict

app = typer.Typer(help="Inspect and check experiment configs.", no_args_is_help=True)


@app.command("show")
@literal_help
@handle_errors
def show(config: Path = ConfigArgument, overrides: list[str] = SetOption, as_json: bool = JsonOption) -> None:
    """Print the fully resolved config (every default filled in, overrides applied) on stdout.

    Example: recsys config show configs/ease.yaml --set model.l2_norm=500
    """
    cfg = load(config, overrides)
    data = resolved_dict(cfg)
    if cfg.search.space:  # a search config: its search section too (runs never record it)
        data["search"] = cfg.search.model_dump(mode="json", exclude_none=True)
    if as_json:
        print_json(data)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), nl=False)


@app.command("validate")
@literal_help
@handle_errors
def validate(config: Path = ConfigArgument, overrides: list[str] = SetOption) -> None:
    """Check a config without running anything: exit 0 if valid, 2 with the problem otherwise.

    Example: recsys config validate configs/dae.yaml
    """
    cfg = load(config, overrides)
    console.success(f"{config}: valid (model {cfg.model.name}, data set {cfg.data.dataset}, hash {config_hash(cfg)})")
