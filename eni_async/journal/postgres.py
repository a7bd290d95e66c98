"""The shared journal: PostgreSQL through psycopg 3, asynchronously, with one connection pool per process.

psycopg 3 over asyncpg: it is typed (``mypy --strict`` with no stubs), its binary wheel carries libpq, and
``psycopg_pool.AsyncConnectionPool`` reconnects by itself after the database restarts; the journal's load is
a few short transactions per item, far below what either driver can do, so asyncpg's speed buys nothing
here. Every statement is awaited on the event loop (psycopg's async connections never block it); each step
is one short transaction on a connection borrowed from the pool and given back at once.

The schema is the project's own (``migrations``): created in one transaction on first use and brought
forward when older, under a transaction-level advisory lock so that processes starting together do not
race; a newer format or a database holding other tables named like ours is refused in one line. A writer
holds a session-level advisory lock on a connection of its own (the server drops it when the process dies):
exclusive for ``batch`` and ``resume`` (one writer, as with SQLite), shared for ``serve`` replicas, which
divide the work by leases (D27): replicas exclude a batch and a batch excludes replicas. ``hold`` takes it
again after the database restarted (a restart drops every lock silently). Replicas hear of each other's
work by LISTEN/NOTIFY on a connection of its own that reconnects by itself (``listen``). Every driver
failure becomes a one-line ``JournalError``; the URL's password never appears in one (nor in a log or a
repr); a failure that says the server cannot be reached also has the pool check its idle connections, so
that connections dead since a restart are replaced rather than handed out one failure at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from eni_async.journal import migrations
from eni_async.journal.seam import (
    CONNECTED,
    DISCONNECTED,
    RELEASE_CHANNEL,
    WORK_CHANNEL,
    Deliver,
    JournalError,
)
from eni_async.journal.sql import Row, SqlJournal, Tx

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("eni_async.journal")

DIALECT = "postgresql"
FORMAT = migrations.latest(DIALECT)
# Advisory lock keys (below 2**31, so pg_locks shows them whole in objid): the writer, and migrations.
WRITER_KEY = 0x656E6961  # "enia"
MIGRATE_KEY = 0x656E696D  # "enim"
POOL_SIZE = 10
CONNECT_TIMEOUT_S = 10
# How long a step waits for a pooled connection: steps are short, so a longer wait means the server is
# gone (the caller hears so, and the service's writes try again), not that the pool is busy.
POOL_WAIT_S = 5.0
# The listening connection: how long it waits for a notification before it checks that the server is still
# there (a silent network partition never closes a socket), and its reconnection backoff.
LISTEN_CHECK_S = 5.0
LISTEN_BACKOFF_S = (0.2, 5.0)
INSTALL_HINT = (
    "PostgreSQL journals need psycopg: pip install 'eni-async[postgresql]' (from a clone: '.[postgresql]')"
)
# SQLSTATE (or its class, the first two characters) -> what to tell the user.
_REASONS = {
    "53100": "the database's disk is full",
    "53": "the database is out of resources",
    "25006": "is read-only (a read-only transaction or a standby server)",
    "42501": "is not accessible (permission denied)",
    "3D000": "names a database that does not exist",
    "28P01": "refused the password",
    "28": "refused the connection (authentication)",
    "08": "cannot be reached",
    "57P": "was shut down or restarted",
}
# What a failed connection says (libpq gives it no SQLSTATE) -> what to tell the user.
_CONNECT_REASONS = (
    ("does not exist", "names a database or role that does not exist"),
    ("password authentication failed", "refused the password"),
    ("no password supplied", "needs a password"),
    ("no pg_hba.conf entry", "refused the connection (pg_hba.conf)"),
)
_NOW = "extract(epoch FROM clock_timestamp())::double precision"


def explain(exc: BaseException, secret: str | None) -> str:
    """A one-line reason for a driver failure, with ``secret`` (the URL's password) never in it."""
    state = getattr(exc, "sqlstate", None) or ""
    reason = next((text for code, text in _REASONS.items() if state.startswith(code)), None)
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if reason is None:
        reason = next((text for found, text in _CONNECT_REASONS if found in detail), None)
    if secret:
        detail = detail.replace(secret, "***")
    if reason is None:
        kind = type(exc).__name__
        reason = "cannot be reached" if kind in ("OperationalError", "PoolTimeout") else "failed"
    return f"{reason} ({detail[:300]})"


class _Tx:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        cursor = await self.conn.execute(sql.replace("?", "%s"), tuple(args))
        if cursor.description is None:
            return []
        return await cursor.fetchall()

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.conn.cursor() as cursor:
            await cursor.executemany(sql.replace("?", "%s"), rows)


class PostgresConnector:
    """A pool on one PostgreSQL database; ``open()`` it before use. See the module docstring."""

    markers: ClassVar[dict[str, str]] = {
        "now": _NOW,
        "skip_locked": "FOR UPDATE OF l SKIP LOCKED",
        "for_share": "FOR SHARE OF l",
    }

    def __init__(
        self,
        url: str,
        *,
        where: str,
        secret: str | None,
        read_only: bool = False,
        exclusive: bool = True,
        wait_s: float | None = None,
    ) -> None:
        self.url = url
        self.wait_s = POOL_WAIT_S if wait_s is None else wait_s
        self.exclusive = exclusive and not read_only
        self.shared = not exclusive and not read_only
        self.where = where
        self.read_only = read_only
        self.version = 0
        self._secret = secret
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._checking: asyncio.Task[None] | None = None
        self._name = f"eni-async pid {os.getpid()}"

    def __repr__(self) -> str:
        return f"PostgresConnector({self.where!r})"

    def _error(self, exc: BaseException) -> JournalError:
        return JournalError(self.where, explain(exc, self._secret))

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            yield
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise self._error(exc) from None

    async def open(self) -> None:
        """Connect, take the writer's lock (unless reading only), check and migrate the schema, start the
        pool. Raises ``JournalError``."""
        try:
            import psycopg  # noqa: F401 - installed with the pool: the same extra
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise JournalError(self.where, INSTALL_HINT) from None
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": self._name}
        first = await self._connect()
        try:
            if self.exclusive or self.shared:
                await self._take_lock(first)
            await self._check_format(first)
        except BaseException:
            with contextlib.suppress(Exception):
                await first.close()
            raise
        if self.exclusive or self.shared:
            self._writer = first  # holds the lock for the journal's life
        else:
            await first.close()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs=kwargs,
            open=False,
            timeout=self.wait_s,
            name="eni-async journal",
        )
        try:
            with self._guard():
                await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            await self.close()
            with contextlib.suppress(Exception):
                await pool.close()
            raise
        self._pool = pool

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        with self._guard():
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name=self._name, connect_timeout=int(CONNECT_TIMEOUT_S)
            )

    async def close(self) -> None:
        """Close the pool, then the writer's connection (which drops its lock)."""
        if self._checking is not None:
            self._checking.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            unlock = "pg_advisory_unlock" if self.exclusive else "pg_advisory_unlock_shared"
            with contextlib.suppress(Exception):  # at once: the server may see the close only later
                await writer.execute(f"SELECT {unlock}(%s)", (WRITER_KEY,))
            with contextlib.suppress(Exception):
                await writer.close()

    async def hold(self) -> None:
        """Make sure the writer's lock is still held: after the database restarted (the lock went with the
        old connection), connect and take it again. Raises ``JournalError`` (another process took it)."""
        writer = self._writer
        if writer is None:
            return
        if not writer.closed:
            try:
                with self._guard():
                    await writer.execute("SELECT 1")
                return
            except JournalError:
                pass
        with contextlib.suppress(Exception):
            await writer.close()
        conn = await self._connect()
        try:
            await self._take_lock(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._writer = conn
        log.warning(
            "journal %s: the writer's lock was lost (the database restarted?) and is held again", self.where
        )

    async def _take_lock(self, conn: psycopg.AsyncConnection[Any]) -> None:
        take = "pg_try_advisory_lock" if self.exclusive else "pg_try_advisory_lock_shared"
        with self._guard():
            cursor = await conn.execute(f"SELECT {take}(%s)", (WRITER_KEY,))
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            cursor = await conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objid::text = %s AND a.datname = current_database()",
                (str(WRITER_KEY),),
            )
            holder = await cursor.fetchone()
        who = (
            f" ({holder[0].removeprefix('eni-async ')})"
            if holder and holder[0].startswith("eni-async pid")
            else ""
        )
        raise JournalError(
            self.where, f"is in use by another eni-async process{who}; wait for it to end or stop it"
        )

    async def _check_format(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._guard():
            async with conn.transaction():
                if not self.read_only:
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_KEY,))
                cursor = await conn.execute(
                    "SELECT to_regclass('schema_version') IS NOT NULL, to_regclass('items') IS NOT NULL"
                )
                row = await cursor.fetchone()
                assert row is not None
                versioned, has_items = row
                version = 0
                if versioned:
                    cursor = await conn.execute("SELECT max(version) FROM schema_version")
                    found = await cursor.fetchone()
                    version = int(found[0]) if found and found[0] is not None else 0
                elif has_items:
                    raise JournalError(
                        self.where,
                        "is not an eni-async journal (the database has other tables named like ours)",
                    )
                elif self.read_only:
                    raise JournalError(self.where, "holds no journal yet (nothing was recorded there)")
                if versioned:
                    migrations.refuse(self.where, version, FORMAT)
                if version < FORMAT and not self.read_only:
                    for step in migrations.pending(DIALECT, version):
                        for statement in step.statements():
                            await conn.execute(statement.encode())
                    if not versioned:
                        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                    await conn.execute("DELETE FROM schema_version")
                    await conn.execute("INSERT INTO schema_version VALUES (%s)", (FORMAT,))
                    if version:
                        log.info("journal %s upgraded from format %d to %d", self.where, version, FORMAT)
                    version = FORMAT
        self.version = version

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        """One short write transaction on a pooled connection."""
        assert self._pool is not None, "open() the connector first"
        try:
            with self._guard():
                async with self._pool.connection() as conn, conn.transaction():
                    yield _Tx(conn)
        except JournalError:
            self._check_pool()
            raise

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[_Tx]:
        """One consistent read: a read-only transaction on a pooled connection."""
        import psycopg

        assert self._pool is not None, "open() the connector first"
        try:
            with self._guard():
                async with self._pool.connection() as conn:
                    await conn.set_read_only(True)  # BEGIN READ ONLY: no round trip of its own
                    try:
                        async with conn.transaction():
                            yield _Tx(conn)
                    finally:
                        with contextlib.suppress(psycopg.Error):  # a broken connection leaves the pool
                            await conn.set_read_only(None)
        except JournalError:
            self._check_pool()
            raise

    def _check_pool(self) -> None:
        """After a failure, have the pool drop idle connections that died with the server (once at a time)."""
        pool = self._pool
        if pool is not None and (self._checking is None or self._checking.done()):
            self._checking = asyncio.get_running_loop().create_task(self._check(pool))

    async def _check(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]]) -> None:
        with contextlib.suppress(Exception):
            await pool.check()

    async def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """``pg_notify`` in ``tx``: delivered to every listener when ``tx`` commits, never before."""
        await tx.run("SELECT pg_notify(?, ?)", (channel, payload))

    async def listen(self, deliver: Deliver) -> None:
        """LISTEN on both channels on a connection of its own, for ever: reconnects with backoff, checks the
        server every ``LISTEN_CHECK_S`` seconds while nothing arrives, and says so through ``deliver``."""
        import psycopg

        delay, longest = LISTEN_BACKOFF_S
        while True:
            try:
                conn = await self._connect()
            except JournalError as exc:
                log.debug("journal %s: cannot listen yet: %s", self.where, exc.reason)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
                continue
            try:
                async with conn:
                    for channel in (WORK_CHANNEL, RELEASE_CHANNEL):
                        await conn.execute(f"LISTEN {channel}")
                    deliver(CONNECTED, "")
                    delay = LISTEN_BACKOFF_S[0]
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK_S):
                            deliver(note.channel, note.payload)
                        await conn.execute("SELECT 1")
            except (psycopg.Error, OSError) as exc:
                reason = explain(exc, self._secret)
                log.warning("journal %s: listening connection lost: %s", self.where, reason)
                deliver(DISCONNECTED, reason)
            await asyncio.sleep(delay)


class PostgresJournal(SqlJournal):
    """A journal in a PostgreSQL database; made by ``eni_async.journal.open_journal``."""

    connector: PostgresConnector

    def __init__(self, connector: PostgresConnector) -> None:
        super().__init__(connector)


__all__ = ["FORMAT", "PostgresJournal", "explain"]
