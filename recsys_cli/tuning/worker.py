"""``python -m recsys_cli.tuning.worker STUDY_DIR --worker I --threads T``: one of ``--jobs N`` workers.

It reads the study's config and name from the study folder and the storage URL from the environment
(RECSYS_TUNE_STORAGE, so a password never appears on a command line), then runs trials until the
study has its budget. Ctrl-C or SIGTERM marks its running trial interrupted and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys_cli.tuning.worker")
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from recsys_cli import console
    from recsys_cli.config import load_config
    from recsys_cli.errors import RecsysError
    from recsys_cli.tuning.storage import ENV_STORAGE
    from recsys_cli.tuning.study import STUDY_JSON, STUDY_YAML, run_worker

    console.set_quiet(True)
    try:
        config = load_config(args.study_dir / STUDY_YAML, env={})
        name = json.loads((args.study_dir / STUDY_JSON).read_text())["study_name"]
    except KeyboardInterrupt:
        return 130
    except RecsysError as exc:
        console.error(exc.one_line())
        return exc.exit_code
    return run_worker(config, name, os.environ.get(ENV_STORAGE) or None, args.study_dir, worker=args.worker,
                      threads=args.threads)


if __name__ == "__main__":
    sys.exit(main())
