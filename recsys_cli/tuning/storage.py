"""Where a study lives: Optuna's journal file in the study folder, or a database every machine shares.

Workers take a lock around "count the trials, ask for one more", so that however many workers (or
machines) share a study, together they start exactly the requested number of trials: a file lock
for the journal file, a PostgreSQL advisory lock for a PostgreSQL study.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys_cli.errors import ConfigError
from recsys_cli.redact import redact

JOURNAL = "journal.log"
ENV_STORAGE = "RECSYS_TUNE_STORAGE"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's bare default is psycopg2, which we do not ship)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0].split("+")[0] in ("postgresql", "postgres")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the study's storage is written or read: a journal lock is never
    left half released, a trial never asked and lost nor half told. They land when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Python runs signal handlers in the main thread whichever thread the OS delivered the signal to
    # (a progress bar's, BLAS's), so masking this thread alone is not enough: hold them at the
    # handler instead, and hand the first one held to the previous handler when the block ends.
    # (a handler installed outside Python reads as None and cannot be put back: left alone)
    previous = {signum: handler for signum in (signal.SIGINT, signal.SIGTERM)
                if (handler := signal.getsignal(signum)) is not None}
    held: list[int] = []
    for signum in previous:
        signal.signal(signum, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            _deliver(held[0], previous[held[0]])


def _deliver(signum: int, handler: Any) -> None:
    """What the handler that was in place would have done with ``signum``."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)  # the default action (terminate), now that it is back in place


def _deferring(storage: Any) -> Any:
    """Every public method of ``storage`` runs with signals deferred (the storage's own locks are files
    and rows that an exception in the middle of a call would leave behind)."""
    for name in dir(storage):
        method = getattr(storage, name, None)
        if name.startswith("_") or not callable(method):
            continue

        def wrapped(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with signals_deferred():
                return __method(*args, **kwargs)

        setattr(storage, name, wrapped)
    return storage


def open_storage(url: str | None, study_dir: Path) -> Any:
    return _deferring(_open_storage(url, study_dir))


def _open_storage(url: str | None, study_dir: Path) -> Any:
    import optuna

    if not url:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(study_dir / JOURNAL)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a database URL",
                          hint="e.g. postgresql://user@host:5432/db (leave it out for a journal file in the study folder)")
    try:
        return optuna.storages.RDBStorage(normalise_url(url))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many kinds; all mean "cannot reach the study"
        raise _unreachable(url, exc) from None


def _unreachable(url: str, exc: Exception) -> ConfigError:
    """The one-line error for a database that cannot be opened (no driver, no server, wrong password)."""
    if isinstance(exc, ImportError):
        return ConfigError(f"--storage {redact(url)} needs a database driver ({exc.name} is missing)",
                           hint="pip install 'recsys-cli[distributed]'")
    first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return ConfigError(f"cannot open the study storage {redact(url)}: {first}",
                       hint="check the host, port, database and credentials (~/.pgpass or PGPASSWORD)")


_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def ask_lock(url: str | None, study_dir: Path, name: str) -> Iterator[None]:
    """The lock ``name``: held while a worker counts the trials and asks for one more, or creates the study."""
    if is_postgres(url):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        try:  # the lock is the study's first connection: an unreachable server is reported here
            engine = _ENGINES.get(url) or _ENGINES.setdefault(url, sqlalchemy.create_engine(normalise_url(url),
                                                                                          poolclass=NullPool))
            conn = engine.connect()
        except Exception as exc:  # noqa: BLE001 - as in _open_storage
            raise _unreachable(url, exc) from None
        key = int.from_bytes(hashlib.sha256(f"recsys-tune:{name}".encode()).digest()[:8], "big", signed=True)
        with conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    # journal file, or another database shared by the workers of this machine only
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
