"""A real PostgreSQL server for the tests: Debian's binaries, a temporary directory, a free port of 127.0.0.1.

Installed by ``.ci/run`` and the README's test command when missing (Debian's ``postgresql``). The server
runs as the invoking user, or as ``postgres`` when that is root (PostgreSQL refuses to run as root), with
trust authentication on 127.0.0.1 only and no durability (``fsync=off``): it lives for one test session.
Each test gets an emptied journal database (``reset``: our tables truncated, a few milliseconds), or where it
needs a database with no journal at all, a new one (``database``: ``CREATE DATABASE``, 40 to 250 ms here).
Nothing here is mocked: a server that cannot be started fails the tests that need it, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from eni_async.journal.postgres import FORMAT

BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL = "apt-get install -y postgresql (see the README's test command)"


def binaries() -> Path:
    """The directory of initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, else the PATH's."""
    found = sorted(
        glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError(f"PostgreSQL is not installed (no initdb under {BIN_GLOB} or on PATH): {INSTALL}")
    return Path(on_path).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One server for a test session; ``database()`` makes an empty database and returns its URL."""

    def __init__(self) -> None:
        self.bin = binaries()
        version = subprocess.run(
            [str(self.bin / "initdb"), "--version"], capture_output=True, text=True, check=False
        )
        self.major = int(re.search(r"(\d+)", version.stdout or "0").group(1))  # type: ignore[union-attr]
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="eni-async-pg-"))
        self.data = self.dir / "data"
        self._names = itertools.count(1)
        self._admin: Any = None
        self._shared = ""
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root: as the postgres user, in a directory it owns
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-800:]}")

    def start(self) -> None:
        """initdb, then start on 127.0.0.1 (no Unix socket but in our directory) and wait for it."""
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self._pg_ctl("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not listen on port {self.port}")

    def _pg_ctl(self, *action: str) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                  "-w", *action)  # fmt: skip

    def restart(self) -> None:
        """Restart at once, as after a crash (``-m immediate``), on the same port: every client's connection
        drops and the server is back a moment later (0.2 s here); committed data stays."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        self._pg_ctl("-m", "immediate", "restart")

    def stop(self) -> None:
        """Stop at once and remove the directory."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """``postgresql://USER[:PASSWORD]@127.0.0.1:PORT/DATABASE``."""
        auth = user or self.user
        if password is not None:
            auth += f":{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser, outside any transaction; its rows."""
        import psycopg

        if database != "postgres":
            with psycopg.connect(self.url(database), autocommit=True) as conn:
                cursor = conn.execute(statement.encode())
                return cursor.fetchall() if cursor.description else []
        if self._admin is None:
            self._admin = psycopg.connect(self.url(), autocommit=True)
        cursor = self._admin.execute(statement.encode())
        return cursor.fetchall() if cursor.description else []

    async def asql(self, statement: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """``sql`` from a test's event loop, in a thread: a statement that waits for a lock held by the code
        under test (a trigger created on a table a replica is writing) must not stop that code's loop."""
        return await asyncio.to_thread(self.sql, statement, database)

    def reset(self) -> str:
        """The session's journal database, emptied: every table of ours truncated and the format set back to
        the current one (a few milliseconds: the tables stay). Its URL."""
        if not self._shared:
            self._shared = self.database()
        name = self._shared.rsplit("/", 1)[1]
        self.sql(
            "DO $$ BEGIN IF to_regclass('schema_version') IS NOT NULL THEN "
            "TRUNCATE meta, items, tasks, leases, service_releases, service_meta, service_idempotency "
            "RESTART IDENTITY CASCADE; "
            f"UPDATE schema_version SET version = {FORMAT}; END IF; END $$",
            name,
        )
        return self._shared

    def database(self) -> str:
        """A new, empty database (a file copy of template1: about 40 ms); its URL."""
        name = f"t{next(self._names)}"
        strategy = " STRATEGY FILE_COPY" if self.major >= 15 else ""  # faster, from PostgreSQL 15 on
        self.sql(f"CREATE DATABASE {name}{strategy}")
        return self.url(name)


def started() -> PostgresServer:
    """A started server, or a test failure saying why not (never a skip)."""
    try:
        server = PostgresServer()
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as exc:
        pytest.fail(f"cannot start PostgreSQL for the tests: {exc}")
    return server
