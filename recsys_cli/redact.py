"""Masking of credentials in URLs, so that a storage URL's password never lands on disk or screen.

``postgresql://ana:s3cret@db:5432/studies`` → ``postgresql://ana:***@db:5432/studies``. Applied to the
command line recorded in env.json, to every console line (and so to log.txt), and to the tuner's files.
"""

from __future__ import annotations

import re

# scheme://user:password@ — the password runs to the last '@' before the host (passwords may hold '@' or ':')
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^\s/]*)@(?=[^@\s/]*(?:[/\s?#]|$))")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced by ``***``."""
    if "://" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m.group('head')}***@", text)
