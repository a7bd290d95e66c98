"""Resume keeps its books: ``--append`` ends with one final line per item, IPs once sent stay sent across
every resume, and a tampered journal is one line and exit 2 (each reproduces a defect found by an adversary)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from eni_async.cli import main
from eni_async.client import EniClient
from eni_async.journal import JournalError, SqliteJournal
from eni_async.models import Credentials
from eni_async.outcomes import Item, Outcome
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator
from eni_async.testing import jsonl_lines, verdict
from tests import journalhelpers
from tests.simhelpers import sim_post, simulator_thread
from tests.test_journal_cli import CLI, env_with, sim_state

SERVED = {"enis": 2, "ips_per_eni": 2, "seed": 11}


def by_item(path: Path) -> dict[int, list[dict[str, Any]]]:
    lines: dict[int, list[dict[str, Any]]] = {}
    for raw in path.read_text().splitlines():
        data = json.loads(raw)
        lines.setdefault(data["line"], []).append(data)
    return lines


def test_resume_append_after_sigterm_leaves_one_final_line_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch stopped by SIGTERM wrote interrupted lines; resume --append on its output leaves exactly one
    line per item, each final and true, and a second --append after completion changes nothing. The
    simulator holds the batch's tasks (the signal finds them in flight) and ends them before the resumes,
    which run in this process."""
    with simulator_thread(enis=8, ips_per_eni=2, task_latency=(0.0, 0.0), seed=3) as ready:
        endpoint = ready["endpoint"]
        sim_post(endpoint, "/_sim/hold", {"hold": True})
        enis = sim_state(endpoint)["enis"]
        source = tmp_path / "in.jsonl"
        source.write_text(jsonl_lines(enis))
        journal, out = tmp_path / "b.journal", tmp_path / "out.jsonl"
        env = env_with(tmp_path, ready["secret_id"], ready["secret_key"]) | {"ENI_ASYNC_GRACE": "0"}
        proc = subprocess.Popen(
            [*CLI, "batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--output", str(out),
             "--concurrency", "8", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            with contextlib.suppress(JournalError):  # until the batch has recorded its input
                if os.path.exists(journal) and journalhelpers.counts(journal)["submitted"] >= 4:
                    break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        stopped = by_item(out)
        assert any(x["error"] and x["error"]["code"] == "Interrupted" for v in stopped.values() for x in v)
        sim_post(endpoint, "/_sim/hold", {"hold": False})
        sim_post(
            endpoint, "/_sim/finish"
        )  # the tasks in flight at the signal end: the resumes find them ended
        for name in (
            "TENCENTCLOUD_SECRET_ID",
            "TENCENTCLOUD_SECRET_KEY",
            "ENI_ASYNC_CONFIG",
            "ENI_ASYNC_GRACE",
        ):
            monkeypatch.setenv(name, env[name])
        resume = ["resume", str(journal), "--output", str(out), "--append", "--no-progress"]
        first = main(resume)
        first_err = capsys.readouterr().err
        after = by_item(out)
        second = main(resume)
        again = by_item(out)
        truth = sim_state(endpoint)
    assert first == 0, first_err
    assert second == 0, capsys.readouterr().err
    assert sorted(after) == list(range(1, len(enis) + 1))
    assert all(len(lines) == 1 for lines in after.values()), "one line per item"
    finals = [lines[0] for lines in after.values()]
    assert all(x["status"] == "succeeded" for x in finals)
    assert verdict(finals, truth, [e["eni_id"] for e in enis]).mismatches == 0
    assert again == after
    assert not (tmp_path / "out.jsonl.partial").exists()


async def test_ips_sent_before_a_resume_are_never_reported_absent(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IPs our earlier task released, left unknown, then carried through a resume that wrote progress and
    stopped, are reported released by the next resume, never 'absent (nothing to release)'."""
    sim, endpoint = served
    eni = sim.ground_truth()["enis"][0]
    ips = tuple(eni["secondary_ips"])
    settings = Settings(endpoint=endpoint, region=sim.region, confirm="task", poll=PollPolicy(first=0.01))
    credentials = Credentials(sim.credentials.secret_id, sim.credentials.secret_key)
    async with EniClient(credentials, settings) as client:  # run 1's task: it released both IPs...
        await client.unassign(eni["vpc_id"], eni["eni_id"], list(ips))
    path = tmp_path / "b.journal"
    async with SqliteJournal(path) as journal:  # ...but run 1 never saw it end: unknown
        await journal.load([Item(eni["vpc_id"], eni["eni_id"], ips, line=1)])
        outcome = Outcome(eni["vpc_id"], eni["eni_id"], ips, line=1)
        outcome.sent.update(ips)
        await journal.submitting(1, ips, outcome)
        outcome.task_ids.append("101")
        await journal.submitted(1, "101", None, ips, outcome)
        outcome.unknown.extend(ips)
        await journal.progressed(1, outcome)
    async with SqliteJournal(path) as journal:  # run 2 resumes, records progress, and is stopped
        (resumed,) = [r async for r in journal.unfinished()]
        await journal.progressed(1, resumed.plan.outcome)
    out = tmp_path / "out.jsonl"
    code = await asyncio.to_thread(main, ["resume", str(path), "--endpoint", endpoint, "--output", str(out)])
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["absent"] == [], "IPs our own task released were reported absent"
    assert sorted(line["released"]) == sorted(ips)
    assert (code, line["status"]) == (0, "succeeded")


def _tamper(path: Path, statement: str) -> None:
    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("statement", "expected", "status_reads_it"),
    [
        ("UPDATE items SET outcome = '{\"released\": [' WHERE id = 2", "item 2 is damaged (outcome", False),
        (
            "UPDATE items SET state = 'lost' WHERE id = 2",
            "item 2 is damaged (state: unknown state 'lost'",
            True,
        ),
        ("UPDATE meta SET value = 'not json' WHERE key = 'region'", "item meta 'region' is damaged", False),
        ("UPDATE items SET outcome = '{\"status\": 1}' WHERE id = 1", "item 1 is damaged (outcome", True),
    ],
)
def test_a_tampered_journal_is_one_line_and_exit_2(
    tmp_path: Path,
    statement: str,
    expected: str,
    status_reads_it: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """resume (and status, where it reads the damaged row) on a valid SQLite file with a damaged row: exit 2
    before anything is written or sent, one line naming the item, never 'unexpected error' nor 'nothing was
    sent'."""
    path = tmp_path / "b.journal"

    async def build() -> None:
        async with SqliteJournal(path) as journal:
            ips = ("10.0.0.2",)
            await journal.load([Item("vpc-7t9nf3pu", f"eni-0000000{i}", ips, line=i) for i in (1, 2)], meta={"region": "ap-guangzhou"})  # fmt: skip
            await journal.finished(
                1, Outcome("vpc-7t9nf3pu", "eni-00000001", ips, status="succeeded", line=1)
            )
            await journal.submitting(2, ips, Outcome("vpc-7t9nf3pu", "eni-00000002", ips, line=2))

    asyncio.run(build())
    _tamper(path, statement)
    env = env_with(tmp_path, "AKIDexample", "example-key") | {"ENI_ASYNC_ENDPOINT": "http://127.0.0.1:9"}
    if 'outcome = \'{"released"' in statement:  # the case as reported, in a process of its own
        done = subprocess.run([*CLI, "resume", str(path)], env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        answers = [(done.returncode, done.stdout, done.stderr)]
    else:
        for name in (
            "TENCENTCLOUD_SECRET_ID",
            "TENCENTCLOUD_SECRET_KEY",
            "ENI_ASYNC_CONFIG",
            "ENI_ASYNC_ENDPOINT",
        ):
            monkeypatch.setenv(name, env[name])
        answers = []
    for command in (["resume", str(path)], ["status", str(path), "--outcomes"]):
        code = main(command)
        out, err = capsys.readouterr()
        if command[0] == "status" and not status_reads_it:
            assert code == 0, err  # status reads no meta, nor unfinished outcomes
            continue
        answers.append((code, out, err))
    for code, out, err in answers:
        assert code == 2, err
        assert err.count("\n") == 1, err
        assert expected in err
        assert "unexpected" not in err
        assert "nothing was sent" not in err
        assert out == ""
