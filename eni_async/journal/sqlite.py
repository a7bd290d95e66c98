"""The embedded journal: one SQLite file, so that a crash or ``kill -9`` loses nothing.

Every step is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) in WAL mode, so a commit survives the
process dying; loading the input is one transaction too, so a journal holds all of a batch's items or none.
One process writes a journal at a time: an ``flock`` on a sidecar file (``JOURNAL.lock``), held while the
journal is open and dropped by the kernel when the process dies, so a crash never leaves a stale lock
(SQLite's own locks are per transaction, and a POSIX lock on the database file itself would be released by
SQLite closing any of its descriptors). Being the only writer, this journal implements leases trivially:
the same statements as PostgreSQL's, with nothing to skip. Statements run in place on the event loop's
thread: each is a local commit of well under a millisecond, which a hop to a thread would only slow down.
Every SQLite failure becomes a ``JournalError`` that says in one line what is wrong (full disk, read-only,
corrupt, older or newer format, in use). A failed write (a full disk) rolls its transaction back, so the
next one may succeed once there is room again. The file's identity (device and inode) is taken when it is
opened for writing and checked before every write and by ``hold``: a journal deleted or replaced while in use
refuses every write from then on (SQLite would go on writing the unlinked file, or mix the new file with
the old one's WAL), and what this process knew of it is saved once, by SQLite's backup API, to a new file
``JOURNAL.rescued-TIMESTAMP`` beside it (never to the journal's own name), which the log names; its WAL,
still at the journal's path, is then emptied into the file this process holds, so that SQLite does not
read it over the new file. A journal created beside a rescue file says so (its work is in the rescue file).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from eni_async.journal import migrations
from eni_async.journal.seam import Deliver, JournalError
from eni_async.journal.sql import Row, SqlJournal, Tx

if sys.platform == "win32":  # untested there: the lock is msvcrt's byte-range lock instead of flock
    import msvcrt
else:
    import fcntl

log = logging.getLogger("eni_async.journal")

DIALECT = "sqlite"
FORMAT = migrations.latest(DIALECT)
TABLES = frozenset({"meta", "items", "tasks"})

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
# In SQLite's own SQL, "now" in seconds since the epoch (unixepoch('subsec') needs SQLite 3.42).
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"


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


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self.db.execute(sql, tuple(args)).fetchall()

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)


class SqliteConnector:
    """One SQLite file, its lock and its format; see the module docstring."""

    markers: ClassVar[dict[str, str]] = {"now": _NOW, "skip_locked": "", "for_share": ""}
    shared = False  # one writer, by the file's lock

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.where = str(path)
        self.read_only = read_only
        self.version = 0
        self._lock: int | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened for writing
        self.lost: str | None = None  # why writes are refused for good (the file was deleted or replaced)
        self._busy = asyncio.Lock()  # one transaction at a time on the one connection
        self._db: sqlite3.Connection
        if read_only:
            if not self.path.is_file():
                raise JournalError(self.where, "no such file")
            with self._guard():
                uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._check_format(create=False)
            return
        if self.path.is_file() and not self.path.stat().st_mode & 0o222:
            raise JournalError(
                self.where, "is read-only (no write permission); progress could not be recorded"
            )
        self._take_lock()
        try:
            with self._guard():
                self._db = sqlite3.connect(self.path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                found = os.stat(self.path)
                self._identity = (found.st_dev, found.st_ino)
            self._check_format(create=True)
        except BaseException:
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            self._drop_lock()
            raise

    def __repr__(self) -> str:
        return f"SqliteConnector({self.where!r})"

    async def close(self) -> None:
        """Close the database (every step is already committed) and release the lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._drop_lock()

    # -- opening -----------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock_path = Path(f"{self.path}.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise JournalError(
                self.where, f"cannot create its lock file {lock_path}: {explain(exc)}"
            ) from None
        if not _try_lock(fd):
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise JournalError(
                self.where, f"is in use by another eni-async process{who}; wait for it to end or stop it"
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
            self._migrate(0)
            self._tell_of_rescues()
            return
        if not tables:  # created, then the batch stopped before its schema and input were recorded
            raise JournalError(
                self.where,
                "holds no items: its batch stopped before recording its input, so nothing was sent",
            )
        if not tables >= TABLES:
            raise JournalError(self.where, "is not an eni-async journal (an SQLite file with other tables)")
        migrations.refuse(self.where, version, FORMAT)
        self.version = version
        if version < FORMAT and create:
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        steps = migrations.pending(DIALECT, version)
        script = "".join(f"{step.sql}\n;\n" for step in steps)
        with self._guard():
            try:
                self._db.executescript(f"BEGIN IMMEDIATE;\n{script}PRAGMA user_version = {FORMAT};\nCOMMIT;")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        if version:
            log.info("journal %s upgraded from format %d to %d", self.where, version, FORMAT)
        self.version = FORMAT

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite and OS failures into one-line ``JournalError``s."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(self.where, explain(exc)) from None

    # -- one process: nothing to tell others, nothing to hear ---------------------------------------------

    async def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """Nothing: no other process writes this journal."""

    async def listen(self, deliver: Deliver) -> None:
        """Nothing to hear: returns at once."""

    async def hold(self) -> None:
        """The file's lock is held for the journal's life; check that the file is still the one opened."""
        self.check_identity()

    def check_identity(self) -> None:
        """Raise ``JournalError`` if the journal's file was deleted or replaced since it was opened (and
        from then on); the first time, save what this process knew of it to a rescue file."""
        if self.lost is not None:
            raise JournalError(self.where, self.lost)
        if self._identity is None:  # opened for reading only
            return
        try:
            found = os.stat(self.path)
            now = (found.st_dev, found.st_ino)
        except FileNotFoundError:
            now = None
        except OSError:  # e.g. a directory made unreadable: the write itself will say so
            return
        if now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        self.lost = f"was {what} while in use; writes refused (restart on the right file)"
        rescued = self._rescue()
        # Our WAL is still at the journal's path: emptied into the file we hold (the old one), so that
        # whoever opens the new file does not read our frames over it.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.error(
            "journal %s was %s while this process used it (device %d, inode %d); no more writes. %s",
            self.where, what, *self._identity, rescued,
        )  # fmt: skip
        raise JournalError(self.where, self.lost)

    def _tell_of_rescues(self) -> None:
        """A new journal beside a rescue file: say so, since its releases are not in the new one."""
        found = sorted(self.path.parent.glob(f"{self.path.name}.rescued-*"))
        if found:
            log.warning(
                "journal %s is new, but %s beside it holds what an earlier process knew when this journal "
                "was deleted or replaced: stop, move it to %s and start again to resume that work",
                self.where, found[-1], self.path,
            )  # fmt: skip

    def _rescue(self) -> str:
        """Copy what this connection sees (the WAL included) to a new file beside the journal; say where."""
        target = self.path.with_name(f"{self.path.name}.rescued-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            copy = sqlite3.connect(target, isolation_level=None)
            try:
                self._db.backup(copy)
            finally:
                copy.close()
        except (sqlite3.Error, OSError) as exc:
            return f"Its last state could not be saved ({explain(exc)}): stop this process with SIGTERM."
        return (
            f"Its last state is saved in {target}: stop this process (SIGTERM), check that file, move it to "
            f"{self.path} and start again (unfinished work resumes from it)."
        )

    # -- transactions ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        """One write transaction: all of it is committed, or (on any error, or if the process dies) none."""
        async with self._busy:
            self.check_identity()
            with self._guard():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(self._db)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite rolls back by itself after some failures
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[_Tx]:
        """One consistent read (a deferred transaction, which takes no write lock)."""
        async with self._busy:
            with self._guard():
                self._db.execute("BEGIN")
                try:
                    yield _Tx(self._db)
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("COMMIT")


class SqliteJournal(SqlJournal):
    """A journal in one SQLite file (``read_only``: for reading only, without the lock, e.g. ``status``
    on a journal a batch is writing)."""

    connector: SqliteConnector

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        super().__init__(SqliteConnector(path, read_only=read_only))

    @property
    def path(self) -> Path:
        """The journal's file."""
        return self.connector.path


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


__all__ = ["FORMAT", "SqliteJournal", "explain"]
