"""The journal through the command: kills during load and mid-batch, resume's complete output, status
--outcomes, line-by-line output to a pipe, and a full disk on the output or the journal."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any, TextIO

import pytest

from eni_async import cli_batch
from eni_async.cli import main
from eni_async.journal import SqliteJournal
from eni_async.journal.sql import SqlJournal
from eni_async.simulator import Simulator
from eni_async.testing import jsonl_lines, verdict
from tests import journalhelpers
from tests.conftest import DOC_SECRET_ID, DOC_SECRET_KEY, FAST_TOML
from tests.simhelpers import sim_get, sim_post, simulator_thread

CLI = [sys.executable, "-m", "eni_async"]
SERVED = {"enis": 12, "ips_per_eni": 2, "seed": 7}


def env_with(tmp_path: Path, secret_id: str, secret_key: str) -> dict[str, str]:
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    return dict(
        os.environ,
        TENCENTCLOUD_SECRET_ID=secret_id,
        TENCENTCLOUD_SECRET_KEY=secret_key,
        ENI_ASYNC_CONFIG=str(config),
    )


def sim_state(endpoint: str) -> dict[str, Any]:
    return sim_get(endpoint, "/_sim/state")


def _use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The credentials and settings file of ``env_with`` for a command run in this process."""
    for name in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "ENI_ASYNC_CONFIG"):
        monkeypatch.setenv(name, env[name])


def pipe_backlog(fd: int) -> int:
    """Bytes written to a pipe and not yet read by the other end."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def test_sigkill_during_load_leaves_nothing_and_resume_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed while loading a 20,000-line input, the journal holds no item; resume (in this process) exits 2
    saying why."""
    journal = tmp_path / "b.journal"
    env = env_with(tmp_path, DOC_SECRET_ID, DOC_SECRET_KEY)
    line = '{"vpc_id": "vpc-7t9nf3pu", "eni_id": "eni-%08d", "ips": ["10.0.0.2", "10.0.0.3"]}\n'
    proc = subprocess.Popen(
        [*CLI, "batch", "-", "--journal", str(journal), "--endpoint", "http://127.0.0.1:9", "--no-progress"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None
    try:
        # All but the last line: the load cannot end while stdin is open, so the kill lands inside it.
        proc.stdin.write("".join(line % i for i in range(19_999)).encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while pipe_backlog(proc.stdin.fileno()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipe_backlog(proc.stdin.fileno()) == 0, "the batch read its input"
        assert proc.poll() is None, "the batch is still loading"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    assert sum(journalhelpers.counts(journal).values()) == 0, "all or none: none"
    _use_env(monkeypatch, env)
    assert main(["resume", str(journal)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds no items" in err
    assert "run the batch again" in err


def test_second_process_on_a_journal_is_refused(tmp_path: Path) -> None:
    """While a journal is open here, ``resume`` in another process exits 2 naming the lock holder."""
    path = tmp_path / "b.journal"
    journal = SqliteJournal(path)
    try:
        proc = subprocess.run(
            [*CLI, "resume", str(path)],
            capture_output=True,
            text=True,
            env=env_with(tmp_path, DOC_SECRET_ID, DOC_SECRET_KEY),
            timeout=60,
            check=False,
        )
    finally:
        asyncio.run(journal.close())
    assert proc.returncode == 2
    assert f"in use by another eni-async process (pid {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["corrupt", "older", "read-only", "missing", "empty"])
def test_unusable_journals_exit_2_in_one_line(
    tmp_path: Path, creds: None, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """resume and status on a corrupt, older, read-only, missing or empty journal (a disk full before its
    schema was written): one line naming the cause, exit 2."""
    path = tmp_path / "b.journal"
    if case == "empty":
        made = sqlite3.connect(path)
        made.execute("PRAGMA journal_mode=WAL")  # what Journal() writes before its schema
        made.close()
        assert path.stat().st_size > 0
    if case == "corrupt":
        path.write_bytes(b"garbage" * 1000)
    elif case == "older":
        journalhelpers.execute(path, "PRAGMA user_version = 0")
    elif case == "read-only":
        journalhelpers.execute(path, "SELECT 1")
        path.chmod(0o444)
    expected = {
        "corrupt": "corrupt",
        "older": "older",
        "read-only": "read-only",
        "missing": "no such file",
        "empty": "holds no items",
    }[case]
    if case == "empty":  # status only reads: it finds no schema (resume below writes the empty one)
        assert main(["status", str(path)]) == 2
        assert expected in capsys.readouterr().err
    assert main(["resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1
    assert "unexpected" not in err
    if case not in ("read-only", "empty"):  # a read-only journal can still be read
        assert main(["status", str(path)]) == 2
        assert expected in capsys.readouterr().err


async def test_full_disk_on_the_journal_mid_batch_stops_and_resume_finishes(
    served: tuple[Simulator, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The journal filling up mid-batch stops it with exit 2 and a resume hint; resume then finishes every item."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "b.journal"
    real_load = SqlJournal.load

    async def load_then_fill(self: SqliteJournal, *args: Any, **kwargs: Any) -> Any:
        settled = await real_load(self, *args, **kwargs)
        (pages,) = self.connector._db.execute("PRAGMA page_count").fetchone()
        self.connector._db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk were now full
        return settled

    monkeypatch.setattr(SqlJournal, "load", load_then_fill)
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--no-progress"]
    assert await asyncio.to_thread(main, [*args, "--output", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the disk is full" in err
    assert f"eni-async resume {journal}" in err
    monkeypatch.setattr(SqlJournal, "load", real_load)
    out = tmp_path / "all.jsonl"
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    result = verdict(lines, sim.ground_truth(), [e["eni_id"] for e in enis])
    assert result.mismatches == 0, result.summary()
    assert result.reported == len(enis), result.summary()


class FullDisk:
    """An output file on a disk that fills up after ``room`` lines."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.lines: list[str] = []
        self.name = "full.jsonl"

    def write(self, text: str) -> int:
        if len(self.lines) >= self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


async def test_full_disk_on_the_output_stops_cleanly_with_outcomes_in_the_journal(
    served: tuple[Simulator, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC on the output: exit 1, one line pointing at the journal, and status --outcomes lists every
    finished outcome, the one that could not be written included."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "b.journal"
    disk = FullDisk(room=3)

    def open_full(path: str, *, append: bool) -> TextIO:
        return disk  # type: ignore[return-value]

    monkeypatch.setattr(cli_batch, "_open_output", open_full)
    args = [
        "batch",
        str(source),
        "--endpoint",
        endpoint,
        "--journal",
        str(journal),
        "--output",
        "x",
        "--no-progress",
    ]
    assert await asyncio.to_thread(main, [*args, "--concurrency", "1"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert f"eni-async status {journal} --outcomes" in err
    assert "unexpected" not in err
    assert len(disk.lines) == 3
    assert await asyncio.to_thread(main, ["status", str(journal), "--outcomes"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(listed) >= 4, "the outcome whose line failed is in the journal"
    assert [json.loads(x) for x in disk.lines] == listed[:3]


async def test_resume_writes_every_outcome_and_refuses_the_batch_output(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resume --output gives every item (finished before included); the batch's own file needs --append,
    which adds only the outcomes it lacks."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "b.journal"
    first = tmp_path / "first.jsonl"
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--output", str(first)]
    assert await asyncio.to_thread(main, [*args, "--no-progress"]) == 0
    # As if killed: the last items unfinished, their lines never written.
    await asyncio.to_thread(
        journalhelpers.execute, journal, "UPDATE items SET state = 'pending', outcome = NULL WHERE id > 8"
    )
    kept = first.read_text().splitlines()
    first.write_text("\n".join(kept[:8]) + "\n" + kept[8][:20])  # and a line cut mid-write
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", str(first)]) == 2
    assert "batch's own output file" in capsys.readouterr().err
    assert first.read_text().startswith(kept[0]), "refused before touching the file"
    whole = tmp_path / "whole.jsonl"
    # The reset items' IPs are already gone, so resuming them may find them absent (exit 1): not a refusal.
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", str(whole)]) in (0, 1)
    lines = [json.loads(x) for x in whole.read_text().splitlines()]
    assert sorted(x["eni_id"] for x in lines) == sorted(e["eni_id"] for e in enis)
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", str(first), "--append"]) in (
        0,
        1,
    )
    appended = [json.loads(x) for x in first.read_text().splitlines()]
    assert sorted(x["line"] for x in appended) == list(range(1, len(enis) + 1))


def test_output_to_a_pipe_arrives_line_by_line(tmp_path: Path) -> None:
    """Each outcome reaches a pipe as its item finishes, not when the batch ends: the simulator holds the
    tasks, and the first line arrives once the first task is finished, while the others cannot end."""
    with simulator_thread(enis=3, ips_per_eni=1, task_latency=(0.0, 0.0)) as ready:
        sim_post(ready["endpoint"], "/_sim/hold", {"hold": True})
        source = tmp_path / "in.jsonl"
        source.write_text(jsonl_lines(sim_state(ready["endpoint"])["enis"]))
        proc = subprocess.Popen(
            [
                *CLI,
                "batch",
                str(source),
                "--endpoint",
                ready["endpoint"],
                "--concurrency",
                "1",
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env_with(tmp_path, ready["secret_id"], ready["secret_key"]),
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while not sim_post(ready["endpoint"], "/_sim/finish", {"count": 1})["finished"]:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "the batch never submitted"
            time.sleep(0.02)
        first = json.loads(proc.stdout.readline())
        running = proc.poll() is None
        sim_post(ready["endpoint"], "/_sim/hold", {"hold": False})
        sim_post(ready["endpoint"], "/_sim/finish")
        rest = proc.stdout.read()
        proc.wait(timeout=60)
        proc.stdout.close()
    assert first["status"] == "succeeded"
    assert running, "the first line arrived while two items were still to run"
    assert len(rest.splitlines()) == 2


def test_sigkill_mid_batch_then_resume_output_is_the_complete_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After SIGKILL mid-batch, resume --output alone holds one outcome per ENI, each agreeing with /_sim/state.

    The simulator holds the tasks and the test ends them in rounds until 8 items finished, so the kill lands
    with tasks in flight and items pending; resume, in this process, finds those tasks ended."""
    with simulator_thread(enis=40, ips_per_eni=3, task_latency=(0.0, 0.0), seed=3) as ready:
        endpoint = ready["endpoint"]
        sim_post(endpoint, "/_sim/hold", {"hold": True})
        enis = sim_state(endpoint)["enis"]
        source = tmp_path / "in.jsonl"
        source.write_text(jsonl_lines(enis))
        journal = tmp_path / "b.journal"
        env = env_with(tmp_path, ready["secret_id"], ready["secret_key"])
        proc = subprocess.Popen(
            [*CLI, "batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--concurrency", "4",
             "--output", str(tmp_path / "first.jsonl"), "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        finished = 0
        deadline = time.monotonic() + 60
        while finished < 8 and proc.poll() is None and time.monotonic() < deadline:
            sim_post(endpoint, "/_sim/finish")
            time.sleep(0.02)
            with contextlib.suppress(Exception):
                finished = journalhelpers.counts(journal)["finished"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        now = journalhelpers.counts(journal)
        left = sum(now.values()) - now["finished"]
        assert left > 0, "killed mid-batch"
        sim_post(endpoint, "/_sim/hold", {"hold": False})
        sim_post(endpoint, "/_sim/finish")  # the tasks in flight at the kill end: resume finds them ended
        out = tmp_path / "all.jsonl"
        _use_env(monkeypatch, env)
        resumed = main(["resume", str(journal), "--output", str(out), "--no-progress"])
        truth = sim_state(endpoint)
    assert resumed == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    result = verdict(lines, truth, [e["eni_id"] for e in enis])
    assert result.reported == len(enis), result.summary()
    assert result.mismatches == 0, result.summary()


async def test_resume_may_write_to_dev_null_again(served: tuple[Simulator, str], tmp_path: Path) -> None:
    """Only a regular file counts as the batch's own output: a batch to /dev/null resumes to /dev/null."""
    sim, endpoint = served
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(sim.ground_truth()["enis"]))
    journal = tmp_path / "b.journal"
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--output", os.devnull]
    assert await asyncio.to_thread(main, [*args, "--no-progress"]) == 0
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", os.devnull]) == 0


async def test_resume_of_a_finished_journal_still_writes_every_outcome(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With nothing left to do, resume --output still writes the whole result and sends no request."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "b.journal"
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--no-progress"]
    assert await asyncio.to_thread(main, args) == 0
    batch_lines = capsys.readouterr().out.splitlines()
    before = sum(sim.stats()["requests"].values())
    out = tmp_path / "again.jsonl"
    assert await asyncio.to_thread(main, ["resume", str(journal), "--output", str(out)]) == 0
    assert sum(sim.stats()["requests"].values()) == before
    assert sorted(out.read_text().splitlines()) == sorted(batch_lines)


async def test_full_disk_during_load_records_nothing_sends_nothing_and_resume_refuses(
    served: tuple[Simulator, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A journal that fills up while loading: batch exits 2 before any request, and resume exits 2 too."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis) * 300)
    journal = tmp_path / "b.journal"
    real_load = SqlJournal.load

    async def load_on_full_disk(self: SqliteJournal, *args: Any, **kwargs: Any) -> Any:
        (pages,) = self.connector._db.execute("PRAGMA page_count").fetchone()
        self.connector._db.execute(f"PRAGMA max_page_count = {pages + 2}")
        return await real_load(self, *args, **kwargs)

    monkeypatch.setattr(SqlJournal, "load", load_on_full_disk)
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--no-progress"]
    assert await asyncio.to_thread(main, args) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err
    assert "nothing was recorded and nothing sent" in err
    assert err.count("\n") == 1
    assert sum(sim.stats()["requests"].values()) == 0
    monkeypatch.setattr(SqlJournal, "load", real_load)
    assert await asyncio.to_thread(main, ["resume", str(journal)]) == 2
    assert "holds no items" in capsys.readouterr().err
