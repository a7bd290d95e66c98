"""The durable record of a batch, in SQLite, so that a crash or ``kill -9`` loses nothing.

Each item moves ``pending`` -> ``submitting`` (a chunk is about to be sent) -> ``submitted`` (task id,
request id and IPs known) -> ... -> ``finished`` (the outcome). Every step is one transaction, committed
before the work it announces goes on, in WAL mode (a commit survives the process dying); loading the input is
one transaction too, so a journal holds all of a batch's items or none. Resuming never resubmits a known task:
submitted tasks are polled, a chunk caught ``submitting`` is reconciled against the ENI first, and pending
IPs run. One process writes a journal at a time: an ``flock`` on a sidecar file (``JOURNAL.lock``), held while
the journal is open and dropped by the kernel when the process dies, so a crash never leaves a stale lock
(SQLite's own locks are per transaction, and a POSIX lock on the database file itself would be released by
SQLite closing any of its descriptors). Every SQLite failure becomes a ``JournalError`` that says in one line
what is wrong (full disk, read-only, corrupt, older format, in use). The journal holds ids, IPs, task ids and
outcomes, never a credential.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from eni_async.outcomes import FAILED as FAILED_STATUS
from eni_async.outcomes import InvalidItem, Item, Outcome

if sys.platform == "win32":  # untested there: the lock is msvcrt's byte-range lock instead of flock
    import msvcrt
else:
    import fcntl

# The journal format this code reads and writes (SQLite ``user_version``). Format 0 journals were loaded
# item by item, so one may hold part of its input: it is refused rather than resumed as if whole.
FORMAT = 1

SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    vpc_id TEXT NOT NULL,
    eni_id TEXT NOT NULL,
    ips TEXT NOT NULL,
    line INTEGER,
    state TEXT NOT NULL,
    in_doubt TEXT,
    outcome TEXT
);
CREATE TABLE tasks (
    item_id INTEGER NOT NULL REFERENCES items(id),
    task_id TEXT NOT NULL,
    request_id TEXT,
    ips TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, task_id)
);
CREATE INDEX items_state ON items(state);
PRAGMA user_version = {FORMAT};
COMMIT;
"""

PENDING, SUBMITTING, SUBMITTED, FINISHED = "pending", "submitting", "submitted", "finished"
STATES = (PENDING, SUBMITTING, SUBMITTED, FINISHED)

# SQLite primary result codes -> what to tell the user.
_REASONS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_READONLY: "is read-only",
    sqlite3.SQLITE_NOTADB: "is corrupt or not a journal",
    sqlite3.SQLITE_CORRUPT: "is corrupt",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
    sqlite3.SQLITE_BUSY: "is locked by another process",
    sqlite3.SQLITE_LOCKED: "is locked by another process",
    sqlite3.SQLITE_IOERR: "cannot be read or written (I/O error)",
    sqlite3.SQLITE_PERM: "is not accessible (permission denied)",
}


class JournalError(Exception):
    """The journal cannot be used or written; ``str()`` is one line naming the file and the cause.

    Deliberately not an ``EniAsyncError``: it is never one item's outcome, it stops the batch (the journal
    holds every step committed so far, so ``resume`` carries on once the cause is fixed)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"journal {self.path}: {reason}")


def explain(exc: BaseException) -> str:
    """A one-line reason for an SQLite or OS failure."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        reason = _REASONS.get(code & 0xFF) if isinstance(code, int) else None
        return f"{reason} ({exc})" if reason else f"unusable ({exc})"
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        return f"cannot be used ({exc.strerror or exc})"
    return str(exc)


@dataclass
class ResumePlan:
    """Where an unfinished item stood: its outcome so far, tasks to poll, and a chunk in doubt."""

    outcome: Outcome
    tasks: list[tuple[str, str | None, tuple[str, ...]]] = field(default_factory=list)
    in_doubt: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resumed:
    """An unfinished item read back from a journal, with its plan."""

    item: Item
    plan: ResumePlan


class Journal:
    """A batch journal in one SQLite file; see the module docstring.

    ``read_only`` opens an existing journal for reading only, without the lock (``status`` on a journal a
    batch is writing)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        if read_only:
            if not self.path.is_file():
                raise JournalError(path, "no such file")
            with self._guard():
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._check_format(create=False)
            return
        if self.path.is_file() and not self.path.stat().st_mode & 0o222:
            raise JournalError(path, "is read-only (no write permission); progress could not be recorded")
        self._take_lock()
        try:
            with self._guard():
                self._db = sqlite3.connect(self.path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._check_format(create=True)
        except BaseException:
            self._drop_lock()
            raise

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def close(self) -> None:
        """Close the database (every step is already committed) and release the lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._drop_lock()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock_path = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                self.path, f"cannot create its lock file {lock_path}: {explain(exc)}"
            ) from None
        if not _try_lock(fd):
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise JournalError(
                self.path, f"is in use by another eni-async process{who}; wait for it to end or stop it"
            ) from None
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def _drop_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock; the file stays, harmlessly
            self._lock = None

    def _check_format(self, *, create: bool) -> None:
        with self._guard():
            tables = {
                name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if not tables and create:
                self._db.executescript(SCHEMA)
                return
        if not tables:  # created, then the batch stopped before its schema and input were recorded
            raise JournalError(
                self.path, "holds no items: its batch stopped before recording its input, so nothing was sent"
            )
        if not {"meta", "items", "tasks"} <= tables:
            raise JournalError(self.path, "is not an eni-async journal (an SQLite file with other tables)")
        if version < FORMAT:
            raise JournalError(
                self.path,
                f"was written by an older eni-async (journal format {version}, this one reads {FORMAT}); "
                "finish it with the version that wrote it",
            )
        if version > FORMAT:
            raise JournalError(
                self.path,
                f"was written by a newer eni-async (journal format {version}, this one reads {FORMAT})",
            )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite and OS failures into one-line ``JournalError``s."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(self.path, explain(exc)) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or (on any error, or if the process dies) none."""
        with self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------------------

    def set_meta(self, data: dict[str, Any]) -> None:
        """Record settings needed to resume (endpoint, dialect, region); never credentials."""
        with self._transaction() as db:
            self._put_meta(db, data)

    @staticmethod
    def _put_meta(db: sqlite3.Connection, data: dict[str, Any]) -> None:
        for key, value in data.items():
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict[str, Any]:
        """The settings recorded by ``set_meta``."""
        with self._guard():
            return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # -- steps -----------------------------------------------------------------------------------------

    def add(self, item: Item) -> int:
        """Record a new pending item and return its key."""
        with self._transaction() as db:
            cur = db.execute(
                "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
                (item.vpc_id, item.eni_id, json.dumps(list(item.ips)), item.line, PENDING),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def add_many(
        self, items: Sequence[Item], *, also: Callable[[sqlite3.Connection, list[int]], None] | None = None
    ) -> list[int]:
        """Record new pending items in one transaction and return their keys; ``also(db, keys)`` runs in
        the same transaction, so a layer that keeps its own tables beside the journal's (the service's
        release registry) commits its rows together with the items, or neither."""
        keys: list[int] = []
        with self._transaction() as db:
            for item in items:
                cur = db.execute(
                    "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
                    (item.vpc_id, item.eni_id, json.dumps(list(item.ips)), item.line, PENDING),
                )
                assert cur.lastrowid is not None
                keys.append(cur.lastrowid)
            if also is not None:
                also(db, keys)
        return keys

    def submitting(self, key: int, chunk: tuple[str, ...], outcome: Outcome) -> None:
        """A chunk is about to be sent: if we die now, the chunk is in doubt."""
        with self._transaction() as db:
            db.execute(
                "UPDATE items SET state = ?, in_doubt = ?, outcome = ? WHERE id = ?",
                (SUBMITTING, json.dumps(list(chunk)), json.dumps(outcome.to_json()), key),
            )

    def submitted(
        self, key: int, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        """The server accepted the chunk as ``task_id``; from now on it is polled, never resubmitted."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO tasks (item_id, task_id, request_id, ips, done) VALUES (?, ?, ?, ?, 0)",
                (key, task_id, request_id, json.dumps(list(chunk))),
            )
            db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (SUBMITTED, json.dumps(outcome.to_json()), key),
            )

    def progressed(self, key: int, outcome: Outcome) -> None:
        """A chunk settled: its tasks are done and the outcome so far is recorded."""
        with self._transaction() as db:
            db.execute("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))
            db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (SUBMITTED, json.dumps(outcome.to_json()), key),
            )

    def finished(self, key: int, outcome: Outcome) -> None:
        """The item is over; its outcome is final."""
        with self._transaction() as db:
            db.execute("UPDATE tasks SET done = 1 WHERE item_id = ?", (key,))
            db.execute(
                "UPDATE items SET state = ?, in_doubt = NULL, outcome = ? WHERE id = ?",
                (FINISHED, json.dumps(outcome.to_json()), key),
            )

    # -- reading ---------------------------------------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The open database, for layers that keep their own tables beside the journal's (the service)."""
        return self._db

    def item(self, key: int) -> tuple[str, dict[str, Any] | None] | None:
        """One item's state and outcome so far (``None`` for an unknown key)."""
        row = self._db.execute("SELECT state, outcome FROM items WHERE id = ?", (key,)).fetchone()
        if row is None:
            return None
        state, text = row
        return state, (json.loads(text) if text else None)

    def counts(self) -> dict[str, int]:
        """Items by state (every state present, zero included)."""
        with self._guard():
            rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall()
        found = Counter(dict(rows))
        return {state: found.get(state, 0) for state in STATES}

    def outcome_counts(self) -> dict[str, int]:
        """Finished items by outcome status."""
        counts: Counter[str] = Counter()
        for data in self.finished_outcomes():
            counts[data["status"]] += 1
        return dict(counts)

    def finished_outcomes(self) -> Iterator[dict[str, Any]]:
        """The final outcomes, as JSON objects, in input order (read page by page)."""
        last = 0
        while True:
            with self._guard():
                rows = self._db.execute(
                    "SELECT id, outcome FROM items WHERE id > ? AND state = ? ORDER BY id LIMIT 500",
                    (last, FINISHED),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for _, text in rows:
                yield json.loads(text)

    def finished_items(self) -> Iterator[Outcome]:
        """The final outcomes as ``Outcome`` values, in input order."""
        for data in self.finished_outcomes():
            outcome = Outcome(
                data["vpc_id"],
                data["eni_id"],
                tuple(data["ips"]),
                status=data["status"],
                line=data.get("line"),
            )
            _restore(outcome, data)
            outcome.unknown = list(data.get("unknown", []))  # final: as reported, not to be retried
            yield outcome

    def load(
        self, items: Iterable[Item | InvalidItem], *, meta: dict[str, Any] | None = None
    ) -> list[Outcome]:
        """Record every input item (and ``meta``) in ONE transaction before any work starts: after a crash
        or a full disk the journal holds all of them or none. Items that could not be read are finished at
        once; their outcomes are returned for reporting."""
        settled: list[Outcome] = []
        with self._transaction() as db:
            if meta:
                self._put_meta(db, meta)
            batch: list[Item] = []
            for entry in items:
                if isinstance(entry, InvalidItem):
                    self._add_many(db, batch)
                    batch.clear()
                    outcome = Outcome(
                        entry.vpc_id, entry.eni_id, entry.ips, status=FAILED_STATUS, line=entry.line
                    )
                    outcome.fail(entry.error)
                    db.execute(
                        "INSERT INTO items (vpc_id, eni_id, ips, line, state, outcome) VALUES (?, ?, ?, ?, ?, ?)",
                        (entry.vpc_id, entry.eni_id, json.dumps(list(entry.ips)), entry.line, FINISHED,
                         json.dumps(outcome.to_json())),
                    )  # fmt: skip
                    settled.append(outcome)
                    continue
                batch.append(entry)
                if len(batch) >= 1000:
                    self._add_many(db, batch)
                    batch.clear()
            self._add_many(db, batch)
        return settled

    @staticmethod
    def _add_many(db: sqlite3.Connection, items: list[Item]) -> None:
        db.executemany(
            "INSERT INTO items (vpc_id, eni_id, ips, line, state) VALUES (?, ?, ?, ?, ?)",
            [(i.vpc_id, i.eni_id, json.dumps(list(i.ips)), i.line, PENDING) for i in items],
        )

    def unfinished(self) -> Iterator[Resumed]:
        """Every item not finished, with what is known of it, in input order (read page by page)."""
        last = 0
        while True:
            with self._guard():
                rows = self._db.execute(
                    "SELECT id, vpc_id, eni_id, ips, line, in_doubt, outcome FROM items "
                    "WHERE id > ? AND state != ? ORDER BY id LIMIT 500",
                    (last, FINISHED),
                ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            with self._guard():
                resumed = list(self._resumed(rows))
            yield from resumed

    def _resumed(self, rows: list[Any]) -> Iterator[Resumed]:
        for key, vpc, eni, ips, line, in_doubt, outcome_text in rows:
            item = Item(vpc, eni, tuple(json.loads(ips)), line, key=key)
            outcome = Outcome(vpc, eni, item.ips, line=line)
            if outcome_text:
                _restore(outcome, json.loads(outcome_text))
            plan = ResumePlan(outcome)
            for task_id, request_id, task_ips in self._db.execute(
                "SELECT task_id, request_id, ips FROM tasks WHERE item_id = ? AND done = 0", (key,)
            ):
                plan.tasks.append((task_id, request_id, tuple(json.loads(task_ips))))
            if in_doubt:
                plan.in_doubt = tuple(json.loads(in_doubt))
            yield Resumed(item, plan)


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting; ``False`` when another process holds it."""
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _restore(outcome: Outcome, data: dict[str, Any]) -> None:
    outcome.released = list(data.get("released", []))
    outcome.not_released = list(data.get("not_released", []))
    outcome.absent = list(data.get("absent", []))
    # IPs of unknown fate were sent by an earlier run: a resumed run retries them, and counts those found gone
    # as released by that earlier call (not as absent).
    outcome.sent.update(data.get("unknown", []))
    outcome.task_ids = list(data.get("task_ids", []))
    outcome.request_ids = list(data.get("request_ids", []))
    outcome.error = data.get("error")
    outcome.attempts = int(data.get("attempts", 0))
    outcome.elapsed_s = float(data.get("elapsed_s", 0.0))
    outcome.decisions = list(data.get("decisions", []))
    outcome.confirmed_by = {str(ip): str(by) for ip, by in dict(data.get("confirmed_by") or {}).items()}


class JournalRecorder:
    """Adapts a ``Journal`` to the ``Recorder`` hooks of the release path (items carry their journal key).

    The hooks are coroutines so that a journal reached over the network is never awaited on the event loop's
    thread; the SQLite journal's writes are short local transactions, made in place."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def add(self, item: Item) -> int:
        return self.journal.add(item)

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        if item.key is not None:
            self.journal.submitting(item.key, chunk, outcome)

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        if item.key is not None:
            self.journal.submitted(item.key, task_id, request_id, chunk, outcome)

    async def progressed(self, item: Item, outcome: Outcome) -> None:
        if item.key is not None:
            self.journal.progressed(item.key, outcome)

    async def finished(self, key: int, outcome: Outcome) -> None:
        self.journal.finished(key, outcome)
