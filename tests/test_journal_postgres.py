"""What only the PostgreSQL journal has to show: refusals in one line without the password, a database that
is not ours, ``journal copy`` both ways, and ``batch``/``resume``/``status`` on a postgresql:// journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from eni_async.cli import main
from eni_async.journal import JournalError, SqliteJournal, open_journal
from eni_async.journal.postgres import FORMAT
from eni_async.journal.sql import SqlJournal
from eni_async.outcomes import Item, Outcome
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator
from eni_async.testing import jsonl_lines, verdict
from tests.pgserver import PostgresServer

SECRET = "s3cr3t-Pa55word"
VPC = "vpc-7t9nf3pu"
IPS = ("10.0.0.2", "10.0.0.3")


async def test_a_missing_database_is_one_line_without_the_password(postgres_server: PostgresServer) -> None:
    """A database that does not exist is one JournalError line naming it, the password (in the authority
    and as a query parameter) masked."""
    url = postgres_server.url("no_such_db", user="postgres", password=SECRET) + f"?password={SECRET}"
    with pytest.raises(JournalError) as caught:
        await open_journal(url)
    message = str(caught.value)
    assert SECRET not in message
    assert message.startswith("journal postgresql://postgres:***@127.0.0.1:")
    assert "names a database or role that does not exist" in message
    assert "\n" not in message


async def test_an_unreachable_server_is_one_line() -> None:
    """Nothing listening: one line saying the journal cannot be reached, the password masked."""
    with pytest.raises(JournalError) as caught:
        await open_journal(f"postgresql://eni:{SECRET}@127.0.0.1:9/eni")
    assert str(caught.value).startswith("journal postgresql://eni:***@127.0.0.1:9/eni: cannot be reached")
    assert SECRET not in str(caught.value)


async def test_a_database_with_tables_named_like_ours_is_not_written(postgres_database: str) -> None:
    """A database holding someone else's ``items`` table is refused, and left as it was."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_database, autocommit=True) as conn:
        await conn.execute("CREATE TABLE items (x INTEGER)")
    with pytest.raises(JournalError, match="not an eni-async journal"):
        await open_journal(postgres_database)
    async with await psycopg.AsyncConnection.connect(postgres_database, autocommit=True) as conn:
        cursor = await conn.execute("SELECT to_regclass('leases') IS NULL")
        assert await cursor.fetchone() == (True,)


async def test_reading_a_database_with_no_journal_says_so(postgres_database: str) -> None:
    """``status`` on a database nothing was recorded in is refused in one line, creating nothing."""
    with pytest.raises(JournalError, match="holds no journal yet"):
        await open_journal(postgres_database, read_only=True)


async def test_a_format_1_journal_is_upgraded_in_place(postgres_database: str) -> None:
    """A PostgreSQL journal of format 1 gets the later migrations when opened to write, rows kept."""
    import psycopg

    from eni_async.journal.migrations import migrations

    async with await psycopg.AsyncConnection.connect(postgres_database, autocommit=True) as conn:
        for statement in migrations("postgresql")[0].statements():
            await conn.execute(statement.encode())
        await conn.execute(b"CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await conn.execute(b"INSERT INTO schema_version VALUES (1)")
        await conn.execute(
            b"INSERT INTO items (vpc_id, eni_id, ips, state) VALUES ('vpc-1', 'eni-1', '[\"10.0.0.2\"]', 'pending')"
        )
    journal = await open_journal(postgres_database)
    try:
        assert isinstance(journal, SqlJournal)
        assert journal.connector.version == FORMAT
        async with journal.connector.reading() as tx:  # a lease row for every ENI the journal held
            assert await tx.run("SELECT eni_id, owner FROM leases") == [("eni-1", None)]
    finally:
        await journal.close()


async def test_replicas_share_a_journal_that_a_batch_has_to_itself(postgres_url: str) -> None:
    """Journals opened for replicas (not exclusive) share the writer's lock; a batch's exclusive open is
    refused while they hold it, and theirs while a batch holds it, each in one line."""
    first = await open_journal(postgres_url, exclusive=False)
    second = await open_journal(postgres_url, exclusive=False)
    try:
        with pytest.raises(JournalError) as caught:
            await open_journal(postgres_url)
        assert "in use by another eni-async process" in str(caught.value)
    finally:
        await first.close()
        await second.close()
    batch = await open_journal(postgres_url)
    try:
        with pytest.raises(JournalError) as refused:
            await open_journal(postgres_url, exclusive=False)
        assert "in use by another eni-async process" in str(refused.value)
    finally:
        await batch.close()


async def test_hold_takes_the_lock_again_after_its_connection_died(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    """A replica whose lock connection died (as in a database restart) holds the lock again on ``hold``,
    and says in one line when a batch took the journal meanwhile."""
    replica = await open_journal(postgres_url, exclusive=False)
    try:
        assert isinstance(replica, SqlJournal)
        writer = replica.connector._writer  # type: ignore[attr-defined]
        await postgres_server.asql(f"SELECT pg_terminate_backend({writer.info.backend_pid})")
        for _ in range(100):  # the lock goes with the connection, once the server has ended it
            try:
                batch = await open_journal(postgres_url)
                break
            except JournalError:
                await asyncio.sleep(0.05)
        with pytest.raises(JournalError) as caught:
            await replica.hold()
        assert "in use by another eni-async process" in str(caught.value)
        await batch.close()
        await replica.hold()
        with pytest.raises(JournalError):
            await open_journal(postgres_url)
        await replica.hold()  # still held: nothing to do
    finally:
        await replica.close()


async def _fill(journal: SqlJournal) -> None:
    """A journal mid-batch: one finished item, one submitted (task known, an IP sent), a release."""
    await journal.load(
        [Item(VPC, f"eni-{i:08d}", IPS, line=i + 1) for i in range(3)], meta={"region": "ap-x"}
    )
    done = Outcome(VPC, "eni-00000000", IPS, status="succeeded", line=1)
    done.released = list(IPS)
    await journal.finished(1, done)
    half = Outcome(VPC, "eni-00000001", IPS, line=2)
    half.sent.add(IPS[0])
    await journal.submitting(2, IPS[:1], half)
    half.task_ids.append("5001")
    await journal.submitted(2, "5001", "req-9", IPS[:1], half)
    await journal.releases.create(
        [(VPC, "eni-00000009", IPS)], ["rel-1"], now=1.0, idempotency_key="k", body_hash="h"
    )


async def _picture(journal: SqlJournal) -> tuple[object, ...]:
    unfinished = [(r.item.key, r.plan.tasks, sorted(r.plan.outcome.sent)) async for r in journal.unfinished()]
    finished = [o.to_json() async for o in journal.finished_items()]
    return (
        await journal.counts(), await journal.meta(), unfinished, finished,
        await journal.releases.replay("k", "h"), await journal.releases.counts(),
    )  # fmt: skip


async def test_copy_moves_a_journal_to_postgresql_and_back(tmp_path: Path, postgres_url: str) -> None:
    """SQLite -> PostgreSQL -> SQLite: every item, task, sent IP, release and key arrives; new rows follow."""
    from eni_async.journal.copy import copy_journal

    source = tmp_path / "batch.journal"
    async with SqliteJournal(source) as journal:
        await _fill(journal)
        before = await _picture(journal)
    copied = await copy_journal(str(source), postgres_url)
    assert copied.rows["items"] == 4
    back = tmp_path / "back.journal"
    await copy_journal(postgres_url, str(back))
    for url in (postgres_url, str(back)):
        copy = await open_journal(url)
        assert isinstance(copy, SqlJournal)
        try:
            assert await _picture(copy) == before
            assert await copy.add(Item(VPC, "eni-00000077", IPS)) == 5, "keys go on after the copied ones"
        finally:
            await copy.close()


async def test_copy_refuses_a_journal_that_is_not_empty(tmp_path: Path, postgres_url: str) -> None:
    """Copying into a journal that holds items is refused in one line, changing nothing."""
    from eni_async.journal.copy import copy_journal

    source = tmp_path / "a.journal"
    async with SqliteJournal(source) as journal:
        await _fill(journal)
    await copy_journal(str(source), postgres_url)
    with pytest.raises(JournalError, match="already holds a journal"):
        await copy_journal(str(source), postgres_url)


def test_journal_copy_command_masks_the_password(
    tmp_path: Path, postgres_server: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eni-async journal copy`` says what it moved without the URL's password; a missing source exits 2."""
    url = postgres_server.reset().replace("postgres@", f"postgres:{SECRET}@")  # trust: any password passes
    source = tmp_path / "batch.journal"

    async def fill() -> None:
        async with SqliteJournal(source) as journal:
            await _fill(journal)

    asyncio.run(fill())
    assert main(["journal", "copy", str(source), url]) == 0
    err = capsys.readouterr().err
    assert "copied 4 items, 1 tasks, 1 releases, 1 idempotency keys" in err
    assert SECRET not in err
    assert main(["journal", "copy", str(source), url]) == 2
    err = capsys.readouterr().err
    assert "already holds a journal" in err
    assert SECRET not in err
    assert err.count("\n") == 1
    assert main(["journal", "copy", str(tmp_path / "missing.journal"), url]) == 2
    assert "no such file" in capsys.readouterr().err


def test_config_shows_the_journal_url_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``config`` shows the journal setting from ENI_ASYNC_JOURNAL with its password masked."""
    monkeypatch.setenv("ENI_ASYNC_JOURNAL", f"postgresql://eni:{SECRET}@db.example/eni?password={SECRET}")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["journal"] == "postgresql://eni:***@db.example/eni?password=***"
    assert SECRET not in out


async def test_batch_resume_and_status_on_a_postgresql_journal(
    served: tuple[Simulator, str],
    postgres_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """batch --journal postgresql://..., then status and resume on it (the journal setting naming it)."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", postgres_url, "--no-progress"]
    assert await asyncio.to_thread(main, [*args, "--output", str(tmp_path / "first.jsonl")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("ENI_ASYNC_JOURNAL", postgres_url)
    assert await asyncio.to_thread(main, ["status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status == {"items": {"pending": 0, "submitting": 0, "submitted": 0, "finished": len(enis)},
                      "outcomes": {"succeeded": len(enis)}}  # fmt: skip
    out = tmp_path / "all.jsonl"
    assert await asyncio.to_thread(main, ["resume", "--output", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    result = verdict(lines, sim.ground_truth(), [e["eni_id"] for e in enis])
    assert (result.reported, result.mismatches) == (len(enis), 0), result.summary()


async def test_the_service_runs_on_a_postgresql_journal_and_resumes_from_it(
    served: tuple[Simulator, str], postgres_url: str
) -> None:
    """serve's engine on a postgresql:// journal: releases finish, an idempotent retry replays, /readyz and
    /metrics answer without the password, and a restart on the same database still knows every release."""
    from eni_async import ServiceClient
    from eni_async.service.server import running_service

    sim, endpoint = served
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@")  # trust: any password passes
    settings = Settings(endpoint=endpoint, region=sim.region, confirm="task", poll=PollPolicy(first=0.01))
    eni = sim.ground_truth()["enis"][0]
    async with running_service(sim.credentials, settings, url) as svc, ServiceClient(svc.endpoint) as client:
        first = await client.submit(
            eni["vpc_id"], eni["eni_id"], eni["secondary_ips"], idempotency_key="once"
        )
        again = await client.submit(
            eni["vpc_id"], eni["eni_id"], eni["secondary_ips"], idempotency_key="once"
        )
        done = await client.wait(first["id"], timeout=30)
        async with aiohttp.ClientSession() as http:
            for path in ("/readyz", "/metrics"):
                async with http.get(svc.endpoint + path) as answer:
                    text = await answer.text()
                    assert answer.status == 200, text
                    assert SECRET not in text
        assert 'eni_async_service_releases{status="succeeded"} 1.0' in text
    assert again["id"] == first["id"]
    assert done["status"] == "succeeded"
    async with running_service(sim.credentials, settings, url) as svc, ServiceClient(svc.endpoint) as client:
        known = await client.get(first["id"])
    assert known["status"] == "succeeded"
    assert sorted(known["released"]) == sorted(eni["secondary_ips"])
