"""A study: its folder, its Optuna study, the worker loop, and ``tune`` that runs them and reports.

Layout::

    runs/<UTC time>-<name>-tune/
        study.yaml   the config with its search section     study.json  name, storage (masked), trials
        journal.log  Optuna's journal (default storage)      trials/     one ordinary run per trial
        trials.csv   number, state, value, params, seconds   best.yaml   the best config, ready to run
        plots/       optimisation history, importances, slices          refit-…/  best config on test
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from recsys_cli import atomic, console, experiment
from recsys_cli.config import Config, to_yaml
from recsys_cli.config.schema import MAX_NAME_LENGTH
from recsys_cli.errors import ConfigError, RecsysError, RunFailed, Terminated
from recsys_cli.redact import redact
from recsys_cli.tuning import space
from recsys_cli.tuning.objective import TrialOutcome, run_trial
from recsys_cli.tuning.storage import ENV_STORAGE, ask_lock, open_storage
from recsys_cli.tuning.storage import signals_deferred as _signals_deferred

STUDY_JSON = "study.json"
STUDY_YAML = "study.yaml"


@dataclass
class TuneOutcome:
    study_dir: Path
    study_name: str
    trials: int  # trials that count toward the budget
    states: dict[str, int]
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_run_dir: Path | None = None
    best_yaml: Path | None = None
    refit_run_dir: Path | None = None
    refit_metrics: Any = None
    interrupted: bool = False


# -- the study's identity and folder ---------------------------------------------------------------
def study_yaml(config: Config) -> str:
    """The config with its search section: what every worker (on every machine) reads."""
    data = yaml.safe_load(to_yaml(config))
    data["search"] = config.search.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def default_study_name(config: Config) -> str:
    text = study_yaml(config)
    data = yaml.safe_load(text)
    data["experiment"].pop("runs_dir", None)
    data["data"].pop("data_dir", None)
    data["search"].pop("trials", None)  # asking for more trials continues the same study
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.experiment.name}-{digest}"


def locate_study_dir(config: Config, study_name: str) -> tuple[Path, bool]:
    """The newest folder of this study under the runs folder (so rerunning resumes), else a new one;
    and whether it is new."""
    from recsys_cli.rundir import run_label

    runs_dir = Path(config.experiment.runs_dir)
    label = run_label(config)  # the name, and the model and data set when it does not say them
    for path in sorted(runs_dir.glob(f"*-{label}-tune"), reverse=True):
        try:
            if json.loads((path / STUDY_JSON).read_text()).get("study_name") == study_name:
                return path, False
        except (OSError, ValueError):
            continue
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = runs_dir / f"{stamp}-{label}-tune"
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # two commands started in the same second share it
        return path, False
    return path, True


# -- Optuna objects --------------------------------------------------------------------------------
def make_sampler(config: Config, worker: int = 0, finished: int = 0) -> Any:
    """The sampler of worker ``worker`` joining a study that has ``finished`` trials: seeded with seed +
    worker for a new study, and with a seed drawn from that and ``finished`` for a resumed one (the
    first seed would propose the new study's points again)."""
    import numpy as np
    import optuna

    search = config.search
    seed = (search.seed if search.seed is not None else config.experiment.seed) + worker
    if finished:
        seed = int(np.random.SeedSequence([seed, finished]).generate_state(1)[0])
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        return _GridSampler(space.grid(search.space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(search.startup_trials, 1))


def _grid_sampler_class() -> type:
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its study.stop() at the end (it only works inside optimize());
        the worker loop already stops at the grid's size."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridSampler


def _GridSampler(*args: Any, **kwargs: Any) -> Any:
    return _grid_sampler_class()(*args, **kwargs)


def make_pruner(config: Config) -> Any:
    import optuna

    search = config.search
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, search.warmup_epochs),
                                              max_resource=config.training.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs)


def open_study(config: Config, study_name: str, storage_url: str | None, study_dir: Path, *, worker: int = 0) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # machines starting together would race to create Optuna's tables and the study: one at a time
    with ask_lock(storage_url, study_dir, "create"):
        study = optuna.create_study(
            study_name=study_name, storage=open_storage(storage_url, study_dir),
            sampler=make_sampler(config, worker), pruner=make_pruner(config), direction=config.search.direction,
            load_if_exists=True,
        )
    if finished := sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
        study.sampler = make_sampler(config, worker, finished)
    return study


def budget(config: Config) -> int:
    """Trials to run: search.trials, or the grid's size when that is smaller."""
    n = config.search.trials
    if config.search.sampler == "grid":
        sizes = [len(v) for v in space.grid(config.search.space).values()]
        n = min(n, int(__import__("math").prod(sizes)))
    return n


def counted(trials: list[Any]) -> list[Any]:
    """Trials that use up the budget: all but those a Ctrl-C (or a killed worker) cut short, and those
    queued (trial 0 from the base config) and not yet asked for."""
    import optuna

    return [t for t in trials if t.state != optuna.trial.TrialState.WAITING and not t.user_attrs.get("interrupted")]


def reclaim_orphans(study: Any) -> int:
    """Mark RUNNING trials of dead workers on this machine as interrupted, so a rerun redoes them."""
    import optuna

    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            optuna.trial.Trial(study, t._trial_id).set_user_attr("interrupted", True)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the worker loop -------------------------------------------------------------------------------
def work(config: Config, study_name: str, storage_url: str | None, study_dir: Path, *, worker: int = 0,
         threads: int | None = None, on_trial: Callable[[Any, TrialOutcome], None] | None = None) -> int:
    """Ask, run and tell trials until the study has its budget (or the timeout passed); returns trials run."""
    import optuna

    study = open_study(config, study_name, storage_url, study_dir, worker=worker)
    n_trials = budget(config)
    deadline = time.monotonic() + config.search.timeout if config.search.timeout else None
    done = 0
    states = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    def tell(trial: Any, outcome: TrialOutcome) -> None:
        study.tell(trial, outcome.value if outcome.state == "complete" else None, state=states[outcome.state])

    while deadline is None or time.monotonic() < deadline:
        trial = outcome = None
        told = False
        try:
            with _signals_deferred(), ask_lock(storage_url, study_dir, study_name):
                if len(counted(study.get_trials(deepcopy=False))) >= n_trials:
                    break
                trial = study.ask()
            outcome = run_trial(trial, config, study_dir, threads=threads)
            with _signals_deferred():  # a Ctrl-C now lands after the tell: the trial keeps its result
                tell(trial, outcome)
                told = True
        except KeyboardInterrupt:
            if trial is not None and not told:
                with _signals_deferred():
                    if outcome is not None:  # it landed after the trial's run ended: keep the result
                        tell(trial, outcome)
                    else:
                        trial.set_user_attr("interrupted", True)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        done += 1
        if on_trial is not None:
            on_trial(study, outcome)
    return done


# -- tune: the whole command -----------------------------------------------------------------------
def tune(config: Config, *, trials: int | None = None, jobs: int = 1, storage: str | None = None,
         study: str | None = None, refit: str = "train") -> TuneOutcome:
    """Run (or resume) the study of ``config.search``, then write the report, best.yaml and the refit."""
    from recsys_cli.tuning import report

    if not config.search.space:
        raise ConfigError("the config has no search.space", hint="add a search: section (see configs/search/)")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1")
    if refit not in ("train", "train+val", "none"):
        raise ConfigError(f"--refit {refit!r} is not one of train, train+val, none")
    if study is not None:
        check_study_name(study)
    if trials is not None:
        config = config.model_copy(update={"search": config.search.model_copy(update={"trials": trials})})
    experiment.preflight(config)  # input that would fail every trial stops here, before any folder
    _warn_metric_mismatch(config)
    _prepare_data(config)
    study_name = study or default_study_name(config)
    study_dir, new = locate_study_dir(config, study_name)
    try:
        atomic.write_text(study_dir / STUDY_YAML, study_yaml(config))
        atomic.write_json(study_dir / STUDY_JSON, {
            "study_name": study_name,
            "storage": redact(storage) if storage else f"journal file {study_dir / 'journal.log'}",
            "trials": config.search.trials, "metric": config.search.metric, "direction": config.search.direction,
            "command_line": redact(shlex.join(sys.argv)), "updated": dt.datetime.now(dt.UTC).isoformat(),
        })
        console.info(f"study {study_name} in {study_dir} ({redact(storage) if storage else 'journal file'})")
        optuna_study = open_study(config, study_name, storage, study_dir)
        _start_from_base(config, optuna_study, storage, study_dir)
    except BaseException:
        if new:  # a database that cannot be reached, or Ctrl-C, before the study began: leave no folder
            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    if (n := reclaim_orphans(optuna_study)):
        console.warn(f"{n} trial(s) of workers that died were marked interrupted; they will be rerun")
    n_trials = budget(config)
    interrupted: KeyboardInterrupt | None = None
    with terminate_as_interrupt():
        procs = start_workers(config, study_name, storage, study_dir, jobs)
        with _Progress(n_trials) as bar:
            bar.update(optuna_study)
            try:
                _workers(config, study_name, storage, study_dir, jobs, bar, optuna_study, procs)
            except KeyboardInterrupt as exc:
                interrupted = exc
    outcome = report.finish(optuna_study, config, study_dir, n_trials=n_trials,
                            refit=None if interrupted else refit)
    outcome.interrupted = interrupted is not None
    if interrupted is not None:
        # the exit codes of every command (the shell's 128 + signal number), with how to resume
        what, code = ("terminated (SIGTERM)", 143) if isinstance(interrupted, Terminated) else ("interrupted (Ctrl-C)", 130)
        raise RecsysError(f"{what} with {outcome.trials} of {n_trials} trials done",
                          hint=f"rerun the same command to resume the study in {study_dir}", exit_code=code)
    if outcome.best_value is None:
        states = ", ".join(f"{n} {state}" for state, n in sorted(outcome.states.items()))
        raise RunFailed(f"no trial of study {study_name} completed ({states or 'none ran'})",
                        hint=f"each trial's message is in {study_dir / 'trials.csv'}")
    return outcome


def check_study_name(name: str) -> None:
    """A study name names files in the study folder (its lock): no path, no hidden file."""
    if len(name) > MAX_NAME_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--study {name!r} is not a usable study name",
                          hint=f"use at most {MAX_NAME_LENGTH} letters, digits, '.', '_' and '-', not starting with '.'")


def _interrupt(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler ending the job, ``kill``) stops the study like Ctrl-C: cleanly, resumable."""
    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _start_from_base(config: Config, study: Any, storage: str | None, study_dir: Path) -> None:
    """Queue the config's own values as trial 0 of a new study (search.start_from_base)."""
    if not config.search.start_from_base or config.search.sampler == "grid":
        return
    params, outside = space.base_params(config)
    if params is None:
        console.info(f"the config's {outside} lies outside search.space: trial 0 is drawn like the others")
        return
    with ask_lock(storage, study_dir, study.study_name):  # machines starting together queue it once
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(params, skip_if_exists=True)


def _warn_metric_mismatch(config: Config) -> None:
    """Trainable models report their early-stopping value to the pruner: say so when it is another metric."""
    from recsys_cli.models.registry import get_model_class

    es = config.training.early_stopping
    if getattr(get_model_class(config.model.name), "trainable", False) and \
            f"{es.metric.upper()}@{es.cutoff}" != config.search.metric:
        console.warn(f"the pruner sees training.early_stopping's {es.metric.upper()}@{es.cutoff} while the study "
                     f"optimises {config.search.metric}; set training.early_stopping.metric and cutoff to match")


def _prepare_data(config: Config) -> None:
    """Download and split once, before any worker starts, so that workers never race to write the split."""
    from recsys_cli.tasks.recommendation import prepare_split

    prepare_split(config)


def _workers(config: Config, study_name: str, storage: str | None, study_dir: Path, jobs: int,
             bar: _Progress, study: Any, procs: list[Any]) -> None:
    """Run worker 0 in this process beside the already started ``procs`` (see :func:`start_workers`),
    then wait for them, keeping the progress bar current."""
    threads = _threads_per_worker(jobs)
    try:
        with console.muted():  # trials write their own logs; the terminal shows the progress bar
            work(config, study_name, storage, study_dir, worker=0, threads=threads,
                 on_trial=lambda s, _o: bar.update(s))
        while (running := next((p for p in procs if p.poll() is None), None)) is not None:
            bar.update(study)
            _exited(running, 0.25)
    except KeyboardInterrupt:
        for p in procs:  # a terminal's Ctrl-C reached them too; SIGTERM also reaches background ones
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            if not _exited(p, 60):
                p.kill()
        raise
    bar.update(study)
    failed = [i for i, p in enumerate(procs, start=1) if p.poll() != 0]
    if failed:
        i = failed[0]
        tail = (study_dir / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()[-1:]
        raise RecsysError(f"tuning worker {i} exited with code {procs[i - 1].poll()}"
                          + (f": {tail[0]}" if tail else ""), hint=f"see {study_dir}/worker-{i}.log", exit_code=1)


def _exited(proc: Any, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a worker (a Popen or a :class:`_ForkedWorker`) to exit."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _threads_per_worker(jobs: int) -> int | None:
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None


def start_workers(config: Config, study_name: str, storage: str | None, study_dir: Path, jobs: int) -> list[Any]:
    """Workers 1 … jobs−1 (this process is worker 0), each with its share of the CPU threads or its own GPU.

    See :func:`forks_workers` for when they are forked from this process rather than started fresh.
    Call this before any progress display starts: a fork copies no threads, and a lock one of them
    held would stay locked in the child.
    """
    import torch

    threads = _threads_per_worker(jobs)
    fork = forks_workers(config, storage, jobs)
    n_gpus = torch.cuda.device_count() if not fork and config.device.accelerator != "cpu" and \
        torch.cuda.is_available() else 0
    procs: list[Any] = []
    each = "1" if fork else str(threads)  # forking implies one thread a trial
    for i in range(1, jobs):
        env = {"OMP_NUM_THREADS": each, "MKL_NUM_THREADS": each, "OPENBLAS_NUM_THREADS": each,
               "RECSYS_NO_PROGRESS": "1"}
        if fork:
            procs.append(_ForkedWorker(config, study_name, study_dir, i, env))
            continue
        env = dict(os.environ, **env)
        env.pop(ENV_STORAGE, None)
        if storage:
            env[ENV_STORAGE] = storage  # the URL travels in the environment, never on a command line
        if n_gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % n_gpus)
        log = open(study_dir / f"worker-{i}.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        cmd = [sys.executable, "-m", "recsys_cli.tuning.worker", str(study_dir), "--worker", str(i),
               "--threads", str(threads)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def forks_workers(config: Config, storage: str | None, jobs: int) -> bool:
    """Whether start_workers forks the extra workers: on Linux, for a CPU study in the journal file
    whose trials run on one thread each. A forked worker starts at once with torch and the data
    modules imported (a fresh interpreter spends ~2 s importing, as long as ten EASE trials on
    MovieLens-100K). Otherwise fresh ``python -m recsys_cli.tuning.worker`` processes: CUDA must not
    be initialised before a fork, a database's open connections must not be shared, and a forked
    child that runs OpenMP regions of several threads after the parent used OpenMP hangs in GNU
    libgomp (tried: torch 2.13, 2 threads), so trials of several threads each need a fresh process.
    """
    import torch

    cpu_run = config.device.accelerator == "cpu" or not torch.cuda.is_available()
    threads = config.device.threads or _threads_per_worker(jobs)
    return jobs > 1 and sys.platform == "linux" and cpu_run and storage is None and threads == 1


class _ForkedWorker:
    """A worker forked from this process, with the part of ``subprocess.Popen``'s interface that
    :func:`_workers` uses; its output goes to ``worker-I.log`` like a fresh one's."""

    def __init__(self, config: Config, study_name: str, study_dir: Path, index: int, env: dict[str, str]):
        import multiprocessing

        self.proc = multiprocessing.get_context("fork").Process(
            target=_forked_main, args=(config, study_name, study_dir, index, env),
            name=f"recsys-tune-worker-{index}", daemon=False)
        self.proc.start()

    def poll(self) -> int | None:
        return self.proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.proc.name, timeout or 0)
        return self.proc.exitcode

    def send_signal(self, signum: int) -> None:
        if self.proc.pid is not None and self.proc.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        self.proc.kill()


def run_worker(config: Config, study_name: str, storage: str | None, study_dir: Path, *, worker: int,
               threads: int | None) -> int:
    """A worker process's body, fresh (``tuning/worker.py``) or forked: its trials, then its exit code
    (0; 130 after Ctrl-C or SIGTERM; a RecsysError's own code, its message on the worker's log)."""
    console.set_quiet(True)
    try:
        with terminate_as_interrupt():
            work(config, study_name, storage, study_dir, worker=worker, threads=threads)
    except KeyboardInterrupt:
        return 130
    except RecsysError as exc:
        console.error(exc.one_line())
        return exc.exit_code
    return 0


def _forked_main(config: Config, study_name: str, study_dir: Path, index: int, env: dict[str, str]) -> None:
    """A forked worker: output to ``worker-I.log``, one thread (see :func:`forks_workers`), then
    :func:`run_worker`. A Ctrl-C or SIGTERM that lands after the study's loop is ignored and the
    process exits at once, without multiprocessing's own exit path (which would print a traceback)."""
    code = 130
    try:
        log = os.open(study_dir / f"worker-{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        # the parent's sys.stdout/stderr may be objects of their own (a test's capture, a notebook's
        # stream) that a fork copies but does not connect to the log
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        os.environ.update(env)
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(1)
        threadpool_limits(1)  # NumPy's and SciPy's BLAS are loaded: their environment variables were read
        code = run_worker(config, study_name, None, study_dir, worker=index, threads=1)
    except KeyboardInterrupt:  # before run_worker took over
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class _Progress:
    """Trials done of the budget, with the best value so far."""

    def __init__(self, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.total = total
        self.progress = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[best]}"), TimeElapsedColumn(),
                                 console=console.console, transient=True, disable=not console.progress_enabled())
        self.task = self.progress.add_task("trials", total=total, best="")
        self.seen = 0

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update(self, study: Any) -> None:
        import optuna

        trials = [t for t in counted(study.get_trials(deepcopy=False)) if t.state.is_finished()]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        best = ""
        if complete:
            pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
            best = f"best {pick(t.value for t in complete):.6g}"
        self.progress.update(self.task, completed=min(len(trials), self.total), best=best)
        for t in trials[self.seen:]:
            if t.state == optuna.trial.TrialState.FAIL:  # printed past console.muted(): the user must see it
                console.console.print(f"warning: trial {t.number} failed: {t.user_attrs.get('message', '?')}",
                                      style="yellow", markup=False, highlight=False)
        self.seen = max(self.seen, len(trials))
