"""The journal itself: atomic steps and loads, one writer at a time, and a one-line error for every bad file."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from eni_async.errors import InputError
from eni_async.journal import FINISHED, FORMAT, SUBMITTING, Journal, JournalError, explain
from eni_async.outcomes import InvalidItem, Item, Outcome

IPS = ("10.0.0.2", "10.0.0.3", "10.0.0.4")


def items(n: int) -> Iterator[Item]:
    for i in range(n):
        yield Item("vpc-7t9nf3pu", f"eni-{i:08d}", IPS, line=i + 1)


def test_load_records_every_item_and_meta_at_once(tmp_path: Path) -> None:
    """A load records all items, the unreadable ones finished, and the meta, in one go."""
    bad = InvalidItem(3, InputError("line 3", "", "not JSON"))
    with Journal(tmp_path / "j") as journal:
        settled = journal.load([*items(2), bad, *items(1)], meta={"output": "/x/out.jsonl"})
        assert journal.counts() == {"pending": 3, "submitting": 0, "submitted": 0, "finished": 1}
        assert journal.meta() == {"output": "/x/out.jsonl"}
    assert [o.line for o in settled] == [3]
    assert settled[0].status == "failed"


def test_a_load_that_fails_midway_leaves_no_item(tmp_path: Path) -> None:
    """When the input breaks after 2,500 items the journal holds none of them, nor the meta."""

    def broken() -> Iterator[Item]:
        yield from items(2500)
        raise InputError("INPUT", "in.jsonl", "cannot read: I/O error")

    with Journal(tmp_path / "j") as journal:
        with pytest.raises(InputError):
            journal.load(broken(), meta={"input": "in.jsonl"})
        assert sum(journal.counts().values()) == 0
        assert journal.meta() == {}


def test_a_full_disk_during_load_leaves_no_item_and_says_so(tmp_path: Path) -> None:
    """A database that cannot grow (as on a full disk) fails the load in one line and keeps none of it."""
    with Journal(tmp_path / "j") as journal:
        journal._db.execute("PRAGMA max_page_count = 20")
        with pytest.raises(JournalError) as caught:
            journal.load(items(5000))
        assert sum(journal.counts().values()) == 0
    assert "the disk is full" in str(caught.value)
    assert "\n" not in str(caught.value)


KILL_INSIDE_SUBMITTED = """
import os, signal, sys
from eni_async.journal import Journal
from eni_async.outcomes import Item, Outcome

class KillOnUpdate:
    # The connection, except that the statement after the task insert kills the process, as kill -9 would.
    def __init__(self, db):
        self.db = db
    def execute(self, sql, *args):
        if sql.startswith("UPDATE items SET state"):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.db.execute(sql, *args)

journal = Journal(sys.argv[1])
journal.load([Item("vpc-7t9nf3pu", "eni-00000001", ("10.0.0.2", "10.0.0.3"), line=1)])
chunk = ("10.0.0.2", "10.0.0.3")
outcome = Outcome("vpc-7t9nf3pu", "eni-00000001", chunk)
journal.submitting(1, chunk, outcome)
outcome.task_ids.append("1234")
journal._db = KillOnUpdate(journal._db)
journal.submitted(1, "1234", "req-1", chunk, outcome)
"""


def test_a_kill_inside_submitted_leaves_the_step_undone_as_a_whole(tmp_path: Path) -> None:
    """SIGKILL between the two statements of ``submitted`` leaves neither: the chunk is in doubt, no task."""
    path = tmp_path / "j"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_INSIDE_SUBMITTED, str(path)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr
    with Journal(path) as journal:
        assert journal.counts()[SUBMITTING] == 1
        (resumed,) = journal.unfinished()
    assert resumed.plan.tasks == [], "a task row without its item update would be polled AND reconciled"
    assert resumed.plan.in_doubt == ("10.0.0.2", "10.0.0.3")


def test_every_step_is_one_transaction(tmp_path: Path) -> None:
    """A step that fails between its statements rolls back whole (nothing half-written is left)."""
    with Journal(tmp_path / "j") as journal:
        journal.load(items(1))
        outcome = Outcome("vpc-7t9nf3pu", "eni-00000000", IPS)
        journal.submitting(1, IPS, outcome)
        real = journal._db

        class FailOnUpdate:
            def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
                if sql.startswith("UPDATE items"):
                    raise sqlite3.OperationalError("disk I/O error")
                return real.execute(sql, *args)  # type: ignore[arg-type]

        journal._db = FailOnUpdate()  # type: ignore[assignment]
        with pytest.raises(JournalError):
            journal.submitted(1, "77", None, IPS, outcome)
        journal._db = real
        assert real.execute("SELECT COUNT(*) FROM tasks").fetchone() == (0,)
        assert journal.counts()[SUBMITTING] == 1


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    """While one Journal is open for writing, another (any process) is refused, naming the holder."""
    path = tmp_path / "j"
    with Journal(path):
        with pytest.raises(JournalError) as caught:
            Journal(path)
        assert f"in use by another eni-async process (pid {os.getpid()})" in str(caught.value)
        with Journal(path, read_only=True) as reader:  # status may read a journal being written
            assert reader.counts()[FINISHED] == 0
    with Journal(path):  # the lock went with the first journal
        pass


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
        Journal(path)
    assert f"older eni-async (journal format 0, this one reads {FORMAT})" in str(caught.value)


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
        Journal(path)
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
        Journal(path)


def test_a_read_only_file_is_refused_for_writing(tmp_path: Path) -> None:
    """A journal without write permission is refused for a batch (even as root) but can still be read."""
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.load(items(2))
    path.chmod(0o444)
    with pytest.raises(JournalError, match="is read-only"):
        Journal(path)
    with Journal(path, read_only=True) as reader:
        assert reader.counts()["pending"] == 2


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


def test_the_journal_stores_outcomes_as_batch_json(tmp_path: Path) -> None:
    """``finished_items`` gives back the outcomes written, unknown and absent IPs included."""
    with Journal(tmp_path / "j") as journal:
        journal.load(items(1))
        outcome = Outcome("vpc-7t9nf3pu", "eni-00000000", IPS, status="failed", line=1)
        outcome.released, outcome.unknown, outcome.absent = ["10.0.0.2"], ["10.0.0.3"], ["10.0.0.4"]
        journal.finished(1, outcome)
        (back,) = journal.finished_items()
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(outcome.to_json(), sort_keys=True)
