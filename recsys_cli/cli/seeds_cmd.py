"""`recsys run --seeds`: the CLI side of :mod:`recsys_cli.seeds`."""

from __future__ import annotations

from recsys_cli import console, seeds
from recsys_cli.cli.common import print_json
from recsys_cli.config import Config
from recsys_cli.errors import RunFailed


def run_group(config: Config, seed_text: str, split: str, *, as_json: bool) -> None:
    chosen = seeds.parse_seeds(seed_text)
    group = seeds.run_seeds(config, chosen, split=split)
    seeds.print_summary(group)
    console.success(f"seed group written to {group.path} (summary.csv, summary.json, summary.md)")
    if as_json:
        print_json({"group_dir": str(group.path), "seeds": group.seeds, "split": group.split,
                    "members": group.members, "summary": group.summary})
    if not group.failed.empty:
        raise RunFailed(f"{len(group.failed)} of {len(group.seeds)} seeds failed "
                        f"({', '.join(map(str, group.failed['seed']))})",
                        hint=f"their errors are in {group.path / 'members.csv'}; the summary covers the others")
