"""Verified downloads: streaming, Range resume, retries with backoff, MD5 check, atomic rename.

Tunables (environment): ``RECSYS_DOWNLOAD_RETRIES`` (attempts, default 5), ``RECSYS_DOWNLOAD_BACKOFF``
(first wait in seconds, doubled each retry, default 1), ``RECSYS_DOWNLOAD_TIMEOUT`` (socket timeout in
seconds, default 30). A partial download is kept as ``<file>.part`` so the next attempt resumes it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from recsys_cli import __version__, console
from recsys_cli.data.cache import write_failure
from recsys_cli.data.registry import DatasetSpec
from recsys_cli.errors import DataError

CHUNK = 1 << 20
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 1.0
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        def number(var: str, default: float, kind=float):
            raw = os.environ.get(var)
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise DataError(f"{var}={raw!r} is not a number", hint=f"unset it or give a number like {default}") from None
            if value < 0:
                raise DataError(f"{var}={raw!r} must not be negative", hint=f"e.g. {var}={default}")
            return value

        return cls(attempts=max(1, number("RECSYS_DOWNLOAD_RETRIES", 5, int)),
                   backoff=number("RECSYS_DOWNLOAD_BACKOFF", 1.0), timeout=number("RECSYS_DOWNLOAD_TIMEOUT", 30.0) or 30.0)


@dataclass
class FetchResult:
    path: Path  # the verified zip
    md5: str
    verified: bool
    expected_md5: str | None
    source: str  # URL or local path it came from
    note: str  # how it was checked, for the manifest


# The same fix is spelled differently by `recsys download` (options) and by commands that take a config.
_OPTIONS = {"source": ("--source FILE.zip", "--set data.source=FILE.zip"), "md5": ("--md5 HEX", "--set data.md5=HEX"),
            "no_verify": ("--no-verify", "--set data.verify=false")}
_FROM_CONFIG = contextvars.ContextVar("recsys_download_from_config", default=False)
# getaddrinfo's answers for a name that does not exist (EAI_AGAIN, a DNS server not answering, is retried)
_NO_SUCH_NAME = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)}


def option(kind: str) -> str:
    """How the running command spells the ``source``, ``md5`` or ``no_verify`` option in a hint."""
    return _OPTIONS[kind][_FROM_CONFIG.get()]


@contextlib.contextmanager
def options_from_config():
    """Within this block, hints name ``--set data.*`` keys instead of `recsys download`'s options."""
    token = _FROM_CONFIG.set(True)
    try:
        yield
    finally:
        _FROM_CONFIG.reset(token)


class _Transient(Exception):
    """A failure worth retrying (network trouble, 5xx, a dropped connection)."""


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https")


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 8):
            h.update(chunk)
    return h.hexdigest()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=console.console, transient=True, disable=not console.progress_enabled(),
    )


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": f"recsys-cli/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _host(url: str) -> str:
    return urllib.parse.urlparse(url).netloc or url


def _stream_once(url: str, part: Path, policy: RetryPolicy, label: str) -> None:
    """One attempt: resume ``part`` with a Range request when it has bytes; raise _Transient to retry."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=policy.timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            part.unlink(missing_ok=True)
            raise _Transient("the server refused to resume; starting over") from None
        if exc.code in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DataError(f"HTTP {exc.code} {exc.reason} for {url}",
                        hint=f"check the data set name and the mirror URL, or use {option('source')}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, socket.gaierror) and exc.reason.errno in _NO_SUCH_NAME:
            raise DataError(f"cannot reach {_host(url)}: {exc.reason.strerror or exc.reason} (no such host name)",
                            hint=f"check the host name in the URL (RECSYS_MOVIELENS_BASE_URL or the mirror), or use "
                                 f"{option('source')}") from None
        raise _Transient(f"cannot reach {_host(url)}: {getattr(exc.reason, 'strerror', None) or exc.reason}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(f"cannot reach {_host(url)}: {exc}") from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        if offset and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                part.unlink(missing_ok=True)
                raise _Transient(f"unexpected Content-Range {content_range!r}; starting over")
            mode = "ab"
        else:
            if offset:
                console.info(f"{_host(url)} does not resume downloads; starting {label} over")
            offset, mode = 0, "wb"
        total = offset + int(length) if length and length.isdigit() else None
        written = offset
        try:
            fh = open(part, mode)
        except OSError as exc:
            raise write_failure(part, exc) from None
        with fh, _progress() as bar:
            task = bar.add_task(label, total=total, completed=offset)
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"connection dropped after {written} bytes ({exc})") from None
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise write_failure(part, exc) from None
                written += len(chunk)
                bar.update(task, completed=written)
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise write_failure(part, exc) from None
        if total is not None and written != total:
            raise _Transient(f"connection dropped after {written} of {total} bytes")


def fetch_url(url: str, target: Path, *, policy: RetryPolicy | None = None, label: str | None = None) -> None:
    """Download ``url`` to ``target.part`` with retries and resume; the caller verifies and renames."""
    policy = policy or RetryPolicy.from_env()
    part = target.with_name(target.name + ".part")
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(part.parent, exc) from None
    label = label or target.name
    for attempt in range(1, policy.attempts + 1):
        try:
            _stream_once(url, part, policy, label)
            return
        except _Transient as exc:
            if attempt == policy.attempts:
                kept = f"; {part.stat().st_size} bytes kept in {part} for the next try" if part.exists() and part.stat().st_size else ""
                raise DataError(f"download of {url} failed after {attempt} attempt(s): {exc}{kept}",
                                hint=f"check your connection and rerun to resume, or use {option('source')}") from None
            wait = policy.backoff * 2 ** (attempt - 1)
            console.warn(f"{exc}; retrying in {wait:.3g} s (attempt {attempt + 1} of {policy.attempts})")
            time.sleep(wait)


def published_md5(url: str, policy: RetryPolicy) -> str | None:
    """The checksum in ``<url>.md5`` when the server has one; None when it cannot be had."""
    try:
        with urllib.request.urlopen(_request(url + ".md5", 0), timeout=min(policy.timeout, 10)) as response:
            text = response.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError):
        return None
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    return match.group(0).lower() if match else None


def _check(path: Path, md5: str, expected: str | None, what: str, *, remove: bool) -> None:
    if expected is not None and md5 != expected:
        if remove:
            path.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {what}: MD5 {md5}, expected {expected}",
                        hint="the file is corrupt or a different release; rerun to download it again, "
                             f"or pass {option('md5')} / {option('no_verify')} if you trust it")


def check_md5(md5: str) -> str:
    """``--md5`` normalised to lower-case hex, or a DataError."""
    md5 = md5.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise DataError(f"--md5 {md5!r} is not an MD5 checksum", hint="give 32 hexadecimal digits")
    return md5


def obtain(spec: DatasetSpec, data_dir: Path, *, source: str | None = None, md5: str | None = None,
           verify: bool = True, force: bool = False) -> FetchResult:
    """The verified zip of ``spec``: a local file, a mirror URL, or GroupLens (kept in data/downloads/)."""
    if md5 is not None:
        md5 = check_md5(md5)
        if md5 != spec.md5:
            console.warn(f"verifying {spec.name} against --md5 {md5} instead of GroupLens's checksum {spec.md5}")
    policy = RetryPolicy.from_env()
    expected = md5 or spec.md5
    if source is not None and not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"--source {source} is neither an existing file nor an http(s) URL",
                            hint="pass the path of a local zip or a mirror URL")
        actual = file_md5(path)
        if verify:
            if expected is None:
                console.warn(f"no checksum is known for {spec.name}; {path} was not verified (pass --md5 HEX)")
            _check(path, actual, expected, str(path), remove=False)
        else:
            console.warn(f"checksum verification disabled (--no-verify): {path} has MD5 {actual}")
        note = _note(verify, expected, md5)
        return FetchResult(path.resolve(), actual, verify and expected is not None, expected, str(path.resolve()), note)

    url = source or spec.url
    target = Path(data_dir) / "downloads" / spec.filename
    if force:  # the verified zip stays until its replacement has verified (os.replace below)
        target.with_name(target.name + ".part").unlink(missing_ok=True)
    if verify and md5 is None:
        published = published_md5(url, policy)
        if published is not None and spec.md5 is not None and published != spec.md5:
            console.warn(f"{url}.md5 says {published} but the pinned checksum is {spec.md5}; verifying against the pinned one")
        expected = spec.md5 or published
    if target.is_file() and not force:
        actual = file_md5(target)
        if not verify or expected is None or actual == expected:
            console.info(f"using the downloaded {target}")
            return FetchResult(target, actual, verify and expected is not None, expected, url, _note(verify, expected, md5))
        console.warn(f"{target} does not match its checksum; downloading it again")
        target.unlink()
    console.info(f"downloading {url}")
    fetch_url(url, target, policy=policy, label=spec.filename)
    part = target.with_name(target.name + ".part")
    actual = file_md5(part)
    if verify:
        if expected is None:
            console.warn(f"no checksum is known for {spec.name} and {url}.md5 could not be read; not verified")
        _check(part, actual, expected, url, remove=True)
    else:
        console.warn(f"checksum verification disabled (--no-verify): {url} has MD5 {actual}")
    try:
        os.replace(part, target)
    except OSError as exc:
        raise write_failure(target, exc) from None
    console.success(f"downloaded {target} (MD5 {actual}{', verified' if verify and expected else ''})")
    return FetchResult(target, actual, verify and expected is not None, expected, url, _note(verify, expected, md5))


def _note(verify: bool, expected: str | None, md5: str | None) -> str:
    if not verify:
        return "not verified (--no-verify)"
    if expected is None:
        return "not verified (no known checksum)"
    if md5 is not None:
        return f"verified against the --md5 given ({md5}), not GroupLens's checksum"
    return "verified against GroupLens's checksum"
