"""The tuner's own cost, and what --jobs buys, on EASE^R trials over MovieLens-100K.

    python benchmarks/bench_tune.py --source ../shared/data/ml-100k/ml-100k.zip            # both figures
    python benchmarks/bench_tune.py --source ... --only overhead --trials 20
    python benchmarks/bench_tune.py --quick                                                # synthetic, small

Figures (targets from issue 14):
- tuner overhead per trial: ``recsys_cli.tuning.tune`` with N trials (jobs 1, no refit) against the
  same N configs run one after another with ``experiment.run`` in the same process — the run itself;
  the baseline replays the study's own parameters, so both do the same fits, after one warm-up run.
  ``overhead_per_trial_s`` = (the loop's wall time, first ask to last tell − Σ each trial's
  ``experiment.run`` seconds, timed inside the same loop) / N, target ≤ 0.5 s: the tuner's own work
  per trial (sampling, asking, telling, the journal, trial.json), immune to the load changing
  between two separate measurements; ``vs_baseline_per_trial_s`` = (loop − baseline) / N compares
  with the replay, which a shared machine makes noisy; ``fixed_s`` = the rest of the tuner's wall time
  (opening the study, preparing the data, trials.csv, the plots), once per study.
- ``--jobs 2`` against ``--jobs 1``: wall time of a fresh study of N EASE trials (the CLI's code path,
  ``tune(jobs=…)``), target ≥ 1.6× faster. Worker start-up (importing torch in each process) is
  included: it is part of what a user waits for.

The data set is loaded and split once before timing (both sides reuse the cached split).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recsys_cli import console, experiment  # noqa: E402 - after the sys.path line, as a script
from recsys_cli.config import load_config  # noqa: E402 - after the sys.path line, as a script
from recsys_cli.tuning import space, tune  # noqa: E402 - after the sys.path line, as a script
from recsys_cli.tuning.objective import trial_config  # noqa: E402 - after the sys.path line, as a script


def _config(args, runs: Path, name: str):
    sets = [f"experiment.runs_dir={runs}", f"experiment.name={name}", "experiment.seed=42",
            "device.accelerator=cpu", f"data.data_dir={args.data_dir}"]
    if args.quick:
        sets += ["data.dataset=synthetic", "data.synthetic.n_users=2000", "data.synthetic.n_items=800",
                 "data.synthetic.n_interactions=60000"]
    else:
        sets += ["data.dataset=movielens-100k", f"data.source={args.source}", "data.verify=false"]
    return load_config(ROOT / "configs" / "search" / "ease.yaml", sets, env={})


def overhead(args, work: Path) -> dict:
    config = _config(args, work / "runs-overhead", "bench-overhead")
    from recsys_cli.tasks.recommendation import prepare_split

    prepare_split(config)
    console.set_quiet(True)
    experiment.run(trial_config(config, {}, number=9999, study_dir=work / "warm-up"))  # first-use imports
    start = time.perf_counter()
    outcome = tune(config, trials=args.trials, refit="none")
    tuner = time.perf_counter() - start
    import pandas as pd

    frame = pd.read_csv(outcome.study_dir / "trials.csv")
    params = [{k.removeprefix("param."): v for k, v in row.items() if k.startswith("param.")}
              for row in frame.to_dict(orient="records")]
    start = time.perf_counter()
    for number, p in enumerate(params):
        experiment.run(trial_config(config, space.decode(p), number=number, study_dir=work / "baseline"))
    baseline = time.perf_counter() - start
    console.set_quiet(False)
    import optuna

    trials = optuna.load_study(study_name=outcome.study_name, storage=journal_storage(outcome.study_dir)).trials
    span = (trials[-1].datetime_complete - trials[0].datetime_start).total_seconds()  # first ask → last tell
    runs = sum(t.user_attrs["run_seconds"] for t in trials)
    return {"trials": len(params), "tuner_s": tuner, "loop_s": span, "runs_in_loop_s": runs,
            "overhead_per_trial_s": (span - runs) / len(params), "fixed_s": tuner - span,
            "baseline_s": baseline, "vs_baseline_per_trial_s": (span - baseline) / len(params), "target_s": 0.5}


def journal_storage(study_dir: Path):
    from recsys_cli.tuning.storage import open_storage

    return open_storage(None, study_dir)


def jobs(args, work: Path) -> dict:
    out = {}
    for n in (1, 2):
        config = _config(args, work / f"runs-jobs{n}", f"bench-jobs{n}")
        from recsys_cli.tasks.recommendation import prepare_split

        prepare_split(config)
        console.set_quiet(True)
        start = time.perf_counter()
        tune(config, trials=args.trials, jobs=n, refit="none")
        out[f"jobs{n}_s"] = time.perf_counter() - start
        console.set_quiet(False)
    out["speedup"] = out["jobs1_s"] / out["jobs2_s"]
    out["target"] = 1.6
    out["trials"] = args.trials
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "ml-100k" / "ml-100k.zip"))
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--only", choices=("overhead", "jobs"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        work = Path(tmp)
        if args.only in (None, "overhead"):
            results["overhead"] = overhead(args, work)
            print(json.dumps(results["overhead"]), flush=True)
        if args.only in (None, "jobs"):
            results["jobs"] = jobs(args, work)
            print(json.dumps(results["jobs"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
