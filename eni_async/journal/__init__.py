"""The journal: the durable record of every item's work, for ``resume`` and the service, behind one seam.

A journal is named by a URL (D26): a path or ``sqlite:///PATH`` is the embedded SQLite journal (one file,
one writer, the default), ``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DATABASE[?...]`` a PostgreSQL one
that processes can share (the ``postgresql`` extra). ``open_journal`` opens either as a ``Journal`` (the
protocol in ``seam``); one contract suite holds both to the same behaviour. Each item moves ``pending`` ->
``submitting`` (a chunk is about to be sent: its IPs are recorded as sent first) -> ``submitted`` (task id,
request id and IPs known) -> ... -> ``finished`` (the outcome). Every step is one transaction, committed
before the work it announces goes on; loading the input is one transaction too, so a journal holds all of a
batch's items or none. Resuming never resubmits a known task: submitted tasks are polled (every one not
seen ending: a progress write never closes another, nor a chunk in doubt unless its try surely had no
effect), a chunk caught ``submitting`` is reconciled against the ENI first, and pending IPs run. Every failure is a ``JournalError``
whose text is one line naming the journal (a URL's password masked: ``where``) and the cause. The journal
holds ids, IPs, task ids and outcomes, never a credential.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from eni_async.journal.seam import (
    CANCELLED,
    FINISHED,
    PENDING,
    STATES,
    SUBMITTED,
    SUBMITTING,
    Cancellation,
    IdempotencyConflictError,
    Journal,
    JournalError,
    JournalRecorder,
    Lease,
    LeaseLostError,
    Pruned,
    Release,
    ReleaseFilter,
    Releases,
    Resumed,
    ResumePlan,
    WorkCancelledError,
)
from eni_async.journal.sqlite import FORMAT, SqliteJournal, explain
from eni_async.settings_check import mask_url

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def describe(url: str | Path) -> str:
    """A journal's name as it may be shown: its password masked, in the authority or the query."""
    text = str(url)
    return mask_url(text) if is_postgres(text) else text


def is_postgres(url: str | Path) -> bool:
    """Whether ``url`` names a PostgreSQL journal."""
    return str(url).split(":", 1)[0].lower() in POSTGRES_SCHEMES and "://" in str(url)


def sqlite_path(url: str | Path) -> Path:
    """The file of an SQLite journal URL (a path, ``sqlite:///ABSOLUTE`` or ``sqlite:RELATIVE``); a
    ``JournalError`` for any other scheme."""
    text = str(url)
    if not text:
        raise JournalError("''", "expected a path, sqlite:///PATH or postgresql://HOST/DATABASE")
    if isinstance(url, Path) or not _SCHEME.match(text) or re.match(r"[A-Za-z]:[\\/]", text):
        return Path(text)  # a plain path (a Windows drive letter is not a scheme)
    scheme = text.split(":", 1)[0].lower()
    if scheme != "sqlite":
        raise JournalError(
            describe(text),
            f"unknown journal scheme {scheme!r}: expected a path, sqlite:///PATH or postgresql://...",
        )
    rest = text.split(":", 1)[1]
    if rest.startswith("//"):
        parts = urlsplit(text)
        if parts.netloc:
            raise JournalError(
                text, "an SQLite URL names no host: sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE"
            )
        rest = parts.path
    if not rest:
        raise JournalError(text, "names no file: sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE")
    return Path(unquote(rest))


def _password(url: str) -> str | None:
    parts = urlsplit(url)
    found = parts.password or dict(parse_qsl(parts.query)).get("password")
    return unquote(found) if found else None


async def open_journal(
    url: str | Path, *, read_only: bool = False, exclusive: bool = True, wait_s: float | None = None
) -> Journal:
    """Open (creating or upgrading when writing) the journal ``url`` names; ``read_only`` reads without
    taking the writer's lock (``status`` on a journal in use). ``exclusive=False`` writes a PostgreSQL
    journal under the writer's lock shared (``serve`` replicas, which divide the work by leases, D27; a
    ``batch`` holds it exclusively, so the two exclude each other; SQLite always has one writer). ``wait_s``:
    how long a PostgreSQL step waits for a pooled connection (``postgres.POOL_WAIT_S`` when None). Raises
    ``JournalError``."""
    if is_postgres(url):
        from eni_async.journal.postgres import PostgresConnector, PostgresJournal

        text = str(url)
        secret = _password(text)
        connector = PostgresConnector(
            text, where=describe(text), secret=secret, read_only=read_only, exclusive=exclusive, wait_s=wait_s
        )
        await connector.open()
        return PostgresJournal(connector)
    return SqliteJournal(sqlite_path(url), read_only=read_only)


__all__ = [
    "CANCELLED",
    "FINISHED",
    "FORMAT",
    "PENDING",
    "STATES",
    "SUBMITTED",
    "SUBMITTING",
    "Cancellation",
    "IdempotencyConflictError",
    "Journal",
    "JournalError",
    "JournalRecorder",
    "Lease",
    "LeaseLostError",
    "Pruned",
    "Release",
    "ReleaseFilter",
    "Releases",
    "ResumePlan",
    "Resumed",
    "SqliteJournal",
    "WorkCancelledError",
    "describe",
    "explain",
    "is_postgres",
    "open_journal",
    "sqlite_path",
]
