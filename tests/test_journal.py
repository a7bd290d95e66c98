"""The SQLite journal's own guarantees (the contract both journals share is in test_journal_contract.py):
atomic loads on a full disk, a step undone whole by ``kill -9``, formats refused or upgraded, and a one-line
error for every bad file."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eni_async.journal import FORMAT, SUBMITTING, JournalError, Resumed, SqliteJournal, explain
from eni_async.journal.migrations import migrations
from eni_async.outcomes import Item

IPS = ("10.0.0.2", "10.0.0.3", "10.0.0.4")


def items(n: int) -> Iterator[Item]:
    for i in range(n):
        yield Item("vpc-7t9nf3pu", f"eni-{i:08d}", IPS, line=i + 1)


async def test_a_full_disk_during_load_leaves_no_item_and_says_so(tmp_path: Path) -> None:
    """A database that cannot grow (as on a full disk) fails the load in one line and keeps none of it."""
    async with SqliteJournal(tmp_path / "j") as journal:
        journal.connector._db.execute("PRAGMA max_page_count = 20")
        with pytest.raises(JournalError) as caught:
            await journal.load(items(5000))
        assert sum((await journal.counts()).values()) == 0
    assert "the disk is full" in str(caught.value)
    assert "\n" not in str(caught.value)


KILL_INSIDE_SUBMITTED = """
import asyncio, os, signal, sys
from eni_async.journal import SqliteJournal
from eni_async.outcomes import Item, Outcome

class KillOnUpdate:
    # The connection, except that the statement after the task insert kills the process, as kill -9 would.
    def __init__(self, db):
        self.db = db
    def execute(self, sql, *args):
        if sql.startswith("UPDATE items SET state"):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.db.execute(sql, *args)

async def main():
    journal = SqliteJournal(sys.argv[1])
    await journal.load([Item("vpc-7t9nf3pu", "eni-00000001", ("10.0.0.2", "10.0.0.3"), line=1)])
    chunk = ("10.0.0.2", "10.0.0.3")
    outcome = Outcome("vpc-7t9nf3pu", "eni-00000001", chunk)
    await journal.submitting(1, chunk, outcome)
    outcome.task_ids.append("1234")
    journal.connector._db = KillOnUpdate(journal.connector._db)
    await journal.submitted(1, "1234", "req-1", chunk, outcome)

asyncio.run(main())
"""


def test_a_kill_inside_submitted_leaves_the_step_undone_as_a_whole(tmp_path: Path) -> None:
    """SIGKILL between the two statements of ``submitted`` leaves neither: the chunk is in doubt, no task."""
    path = tmp_path / "j"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_INSIDE_SUBMITTED, str(path)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr
    journal = SqliteJournal(path)
    counts = asyncio.run(journal.counts())
    (resumed,) = asyncio.run(unfinished(journal))
    asyncio.run(journal.close())
    assert counts[SUBMITTING] == 1
    assert resumed.plan.tasks == [], "a task row without its item update would be polled AND reconciled"
    assert resumed.plan.in_doubt == ("10.0.0.2", "10.0.0.3")


async def unfinished(journal: SqliteJournal) -> list[Resumed]:
    return [r async for r in journal.unfinished()]


def test_an_older_format_is_refused(tmp_path: Path) -> None:
    """A journal written before the format was versioned is refused in one line, not resumed."""
    path = tmp_path / "old.journal"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE items (id INTEGER PRIMARY KEY, vpc_id TEXT, eni_id TEXT, ips TEXT, line INTEGER,"
        " state TEXT, in_doubt TEXT, outcome TEXT);"
        "CREATE TABLE tasks (item_id INTEGER, task_id TEXT, request_id TEXT, ips TEXT, done INTEGER);"
    )
    db.close()
    with pytest.raises(JournalError) as caught:
        SqliteJournal(path)
    assert f"older eni-async (journal format 0, this one reads {FORMAT})" in str(caught.value)


async def test_a_format_1_journal_is_upgraded_and_resumes_with_its_work(tmp_path: Path) -> None:
    """A journal of the previous eni-async (format 1) is brought forward when opened to write: its items,
    tasks and in-doubt chunk resume as they stood, and the IPs it had in doubt count as sent."""
    path = tmp_path / "v1.journal"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(migrations("sqlite")[0].sql + "\nPRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO items (vpc_id, eni_id, ips, line, state, in_doubt, outcome) VALUES (?, ?, ?, 1, ?, ?, ?)",
        ("vpc-7t9nf3pu", "eni-00000001", '["10.0.0.2", "10.0.0.3"]', SUBMITTING, '["10.0.0.3"]',
         '{"unknown": ["10.0.0.2"], "task_ids": ["7"]}'),
    )  # fmt: skip
    db.execute("INSERT INTO tasks (item_id, task_id, ips, done) VALUES (1, '7', '[\"10.0.0.2\"]', 0)")
    db.close()
    async with SqliteJournal(path, read_only=True) as reader:  # reading does not upgrade
        assert (await reader.counts())[SUBMITTING] == 1
    async with SqliteJournal(path) as journal:
        assert journal.connector.version == FORMAT
        (resumed,) = [r async for r in journal.unfinished()]
        async with journal.connector.reading() as tx:  # a lease row for every ENI the journal held
            assert await tx.run("SELECT eni_id, owner FROM leases") == [("eni-00000001", None)]
    assert resumed.plan.tasks == [("7", None, ("10.0.0.2",))]
    assert resumed.plan.in_doubt == ("10.0.0.3",)
    assert resumed.plan.outcome.sent == {"10.0.0.2"}
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == FORMAT


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a database, just text\n" * 200, "is corrupt or not a journal"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "corrupt"),
    ],
)
def test_a_corrupt_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    """A file that is not an SQLite journal gives a one-line JournalError saying so."""
    path = tmp_path / "bad.journal"
    path.write_bytes(content)
    with pytest.raises(JournalError) as caught:
        SqliteJournal(path)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_another_sqlite_file_is_not_a_journal(tmp_path: Path) -> None:
    """An SQLite database with other tables is refused, not written into."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="not an eni-async journal"):
        SqliteJournal(path)


async def test_a_read_only_file_is_refused_for_writing(tmp_path: Path) -> None:
    """A journal without write permission is refused for a batch (even as root) but can still be read."""
    path = tmp_path / "j"
    async with SqliteJournal(path) as journal:
        await journal.load(items(2))
    path.chmod(0o444)
    with pytest.raises(JournalError, match="is read-only"):
        SqliteJournal(path)
    async with SqliteJournal(path, read_only=True) as reader:
        assert (await reader.counts())["pending"] == 2


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EACCES, "Permission denied"), "Permission denied"),
    ],
)
def test_os_errors_are_explained(exc: OSError, expected: str) -> None:
    """OS failures around the journal read as one plain reason."""
    assert expected in explain(exc)
