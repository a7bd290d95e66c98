"""The release registry's cancel, list filters and retention, on both journals (an SQLite file and a real
PostgreSQL database): cancel against a concurrent submit decided by the database, filters combined with
paging, pruning and expired idempotency keys, and the format 3 indexes an older journal is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from eni_async.journal import (
    Cancellation,
    Release,
    ReleaseFilter,
    SqliteJournal,
    WorkCancelledError,
    is_postgres,
)
from eni_async.journal.migrations import migrations
from eni_async.journal.sql import SqlJournal
from eni_async.outcomes import Outcome
from tests.journalhelpers import opened

VPC, OTHER_VPC = "vpc-7t9nf3pu", "vpc-0000abcd"
INDEXES = {
    "service_releases_eni",
    "service_releases_vpc",
    "service_releases_created",
    "service_releases_finished",
    "service_idempotency_created",
}


def eni(n: int) -> str:
    return f"eni-{n:08d}"


def request(n: int, *, vpc: str = VPC) -> tuple[str, str, tuple[str, ...]]:
    return (vpc, eni(n), (f"10.0.{n}.2", f"10.0.{n}.3"))


async def row(journal: SqlJournal, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    async with journal.connector.reading() as tx:
        (found,) = await tx.run(sql, args)
    return found


# -- cancel ----------------------------------------------------------------------------------------------


async def test_a_release_nothing_was_sent_for_is_cancelled_and_never_submitted(journal_url: str) -> None:
    """Cancel finishes a release with nothing sent: cancelled, its IPs not released (never sent), its item
    finished; the item's submit is then refused and nothing is claimable."""
    async with opened(journal_url) as journal:
        (release,), _ = await journal.releases.create([request(1)], ["rel-1"], now=10.0)
        found = await journal.releases.cancel("rel-1", now=11.0)
        assert found is not None
        assert found.cancelled
        after = found.release
        assert (after.status, after.finished_at) == ("cancelled", 11.0)
        assert after.outcome is not None
        assert after.outcome["status"] == "not_attempted"
        assert after.outcome["not_released"] == list(release.ips)
        assert after.outcome["released"] == after.outcome["unknown"] == []
        assert after.outcome["error"]["code"] == "Cancelled"
        assert after.to_json()["outcome_status"] == "not_attempted"
        outcome = Outcome(VPC, eni(1), release.ips)
        with pytest.raises(WorkCancelledError):
            await journal.submitting(release.item_key, release.ips, outcome)
        with pytest.raises(WorkCancelledError):
            await journal.finished(release.item_key, outcome)
        assert await row(journal, "SELECT state, sent FROM items WHERE id = ?", (release.item_key,)) == (
            "finished",
            "[]",
        )
        assert await journal.releases.unfinished() == []
        assert await journal.claim("owner", lease_s=30.0, limit=10) == []
        again = await journal.releases.cancel("rel-1", now=12.0)
        assert again is not None
        assert not again.cancelled
        assert again.release == after  # left as it is
        assert await journal.releases.cancel("rel-none", now=12.0) is None
        assert (await journal.releases.counts())["cancelled"] == 1


async def test_a_release_with_a_call_sent_is_not_cancelled_and_names_its_tasks(journal_url: str) -> None:
    """Once a chunk is recorded as being sent the cancel is refused (in doubt), then it names the task in
    flight; a finished release is refused too; none of them changes."""
    async with opened(journal_url) as journal:
        (release,), _ = await journal.releases.create([request(1)], ["rel-1"], now=10.0)
        key, ips = release.item_key, release.ips
        outcome = Outcome(VPC, eni(1), ips)
        await journal.submitting(key, ips, outcome)
        found = await journal.releases.cancel("rel-1", now=11.0)
        assert found is not None
        assert (found.cancelled, found.task_ids, found.in_doubt) == (False, (), True)
        outcome.sent.update(ips)
        await journal.submitted(key, "task-7", "req-7", ips, outcome)
        found = await journal.releases.cancel("rel-1", now=12.0)
        assert found is not None
        assert (found.cancelled, found.task_ids, found.in_doubt) == (False, ("task-7",), False)
        assert found.release.status == "pending"
        outcome.released = list(ips)
        outcome.status = "succeeded"
        await journal.finished(key, outcome)
        await journal.releases.finish("rel-1", "succeeded", outcome.to_json(), now=13.0)
        found = await journal.releases.cancel("rel-1", now=14.0)
        assert found is not None
        assert (found.cancelled, found.release.status, found.task_ids) == (False, "succeeded", ())


async def test_cancels_racing_submits_from_another_replica_each_end_one_way(journal_url: str) -> None:
    """Forty cancels raced against submits under another owner's leases (a second journal pool on
    PostgreSQL): each release ends either cancelled with nothing sent and its submit refused, or submitted
    with the cancel refused, never both, as the journal's rows show."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(journal_url, exclusive=False))
        second = first
        if is_postgres(journal_url):
            second = await stack.enter_async_context(opened(journal_url, exclusive=False))
        made, _ = await first.releases.create(
            [request(n) for n in range(40)], [f"rel-{n}" for n in range(40)], now=1.0
        )
        leases = {lease.eni_id: lease for lease in await second.claim("b", lease_s=60.0, limit=100)}
        assert len(leases) == 40

        async def submit(key: int, eni_id: str, ips: tuple[str, ...]) -> bool:
            try:
                await second.submitting(key, ips, Outcome(VPC, eni_id, ips), lease=leases[eni_id])
            except WorkCancelledError:
                return False
            return True

        answers = await asyncio.gather(*(
            asyncio.gather(first.releases.cancel(r.id, now=2.0), submit(r.item_key, r.eni_id, r.ips))
            for r in made
        ))  # fmt: skip
        await _each_ended_one_way(first, made, answers)


async def test_cancels_racing_the_retry_of_a_submit_that_had_no_effect_each_end_one_way(
    journal_url: str,
) -> None:
    """Forty items whose submit was recorded, then taken back after a failure with surely no effect (the
    release path's step before it waits out an outage): a cancel alone wins on one; raced against the
    retry's submit under another owner's leases (a second pool on PostgreSQL), each release ends either
    cancelled with nothing sent and the retry refused, or sent again with the cancel refused in doubt."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(journal_url, exclusive=False))
        second = first
        if is_postgres(journal_url):
            second = await stack.enter_async_context(opened(journal_url, exclusive=False))
        made, _ = await first.releases.create(
            [request(n) for n in range(41)], [f"rel-{n}" for n in range(41)], now=1.0
        )
        leases = {lease.eni_id: lease for lease in await second.claim("b", lease_s=60.0, limit=100)}
        outcomes = {r.id: Outcome(VPC, r.eni_id, r.ips) for r in made}
        for r in made:  # sent, refused with no effect, taken back: nothing sent, nothing in doubt
            outcome = outcomes[r.id]
            await second.submitting(r.item_key, r.ips, outcome, lease=leases[r.eni_id])
            outcome.error = {"code": "ConnectFailed", "message": "cannot connect"}
            await second.progressed(r.item_key, outcome, lease=leases[r.eni_id], taken_back=True)
            assert await row(first, "SELECT sent, in_doubt FROM items WHERE id = ?", (r.item_key,)) == (
                "[]",
                None,
            )
        alone = await first.releases.cancel(made[-1].id, now=2.0)
        assert alone is not None
        assert alone.cancelled

        async def retry(key: int, eni_id: str, ips: tuple[str, ...], outcome: Outcome) -> bool:
            try:
                await second.submitting(key, ips, outcome, lease=leases[eni_id])
            except WorkCancelledError:
                return False
            return True

        answers = await asyncio.gather(*(
            asyncio.gather(
                first.releases.cancel(r.id, now=2.0), retry(r.item_key, r.eni_id, r.ips, outcomes[r.id])
            )
            for r in made[:-1]
        ))  # fmt: skip
        await _each_ended_one_way(first, made[:-1], answers)


async def _each_ended_one_way(
    journal: SqlJournal, releases: list[Release], answers: list[tuple[Cancellation | None, bool]]
) -> None:
    """Each release raced by a cancel and a submit ended one way: cancelled with nothing sent (finished),
    or sent with the cancel refused in doubt (still submitting, pending)."""
    for release, (cancel, sent) in zip(releases, answers, strict=True):
        assert cancel is not None
        assert cancel.cancelled != sent, release.id
        state, sent_ips = await row(
            journal, "SELECT state, sent FROM items WHERE id = ?", (release.item_key,)
        )
        status = (await journal.releases.get(release.id)).status  # type: ignore[union-attr]
        if cancel.cancelled:
            assert (state, sent_ips, status) == ("finished", "[]", "cancelled")
        else:
            assert (state, status) == ("submitting", "pending")
            assert sent_ips != "[]"
            assert cancel.in_doubt


async def _wait_for_a_lock_wait(journal: SqlJournal) -> None:
    """Until a statement of this database waits on a row lock (read from pg_stat_activity, no sleeping)."""
    for _ in range(2000):
        (waiting,) = await row(
            journal,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()",
        )
        if waiting:
            return
        await asyncio.sleep(0)
    raise AssertionError("no statement waited on the lock")


async def test_on_postgresql_a_submit_committed_first_makes_the_waiting_cancel_refuse(
    postgres_url: str,
) -> None:
    """A cancel that waits on the row a replica's submit is writing re-reads it once that commits: refused."""
    async with (
        opened(postgres_url, exclusive=False) as first,
        opened(postgres_url, exclusive=False) as second,
    ):
        (release,), _ = await first.releases.create([request(1)], ["rel-1"], now=1.0)
        async with second.connector.transaction() as tx:  # the submitting step, held open
            await tx.run(
                "UPDATE items SET state = 'submitting', sent = ? WHERE id = ? AND state <> 'finished' "
                "RETURNING id",
                ('["10.0.1.2"]', release.item_key),
            )
            cancel = asyncio.create_task(first.releases.cancel("rel-1", now=2.0))
            await _wait_for_a_lock_wait(first)
            assert not cancel.done()
        found = await cancel
        assert found is not None
        assert not found.cancelled
        assert found.release.status == "pending"


async def test_on_postgresql_a_cancel_committed_first_makes_the_waiting_submit_refuse(
    postgres_url: str,
) -> None:
    """A replica's submit that waits on the row a cancel is finishing re-reads it once that commits: it
    raises ``WorkCancelledError`` and records nothing as sent."""
    async with (
        opened(postgres_url, exclusive=False) as first,
        opened(postgres_url, exclusive=False) as second,
    ):
        (release,), _ = await first.releases.create([request(1)], ["rel-1"], now=1.0)
        (lease,) = await second.claim("b", lease_s=60.0, limit=1)
        outcome = Outcome(VPC, eni(1), release.ips)
        async with first.connector.transaction() as tx:  # the cancel's update of the item, held open
            await tx.run(
                "UPDATE items SET state = 'finished' WHERE id = ? AND state <> 'finished' AND sent = '[]'",
                (release.item_key,),
            )
            submit = asyncio.create_task(
                second.submitting(release.item_key, release.ips, outcome, lease=lease)
            )
            await _wait_for_a_lock_wait(first)
            assert not submit.done()
        with pytest.raises(WorkCancelledError):
            await submit
        assert await row(first, "SELECT sent FROM items WHERE id = ?", (release.item_key,)) == ("[]",)


# -- list filters -----------------------------------------------------------------------------------------


async def test_pages_filter_by_eni_vpc_status_and_creation_time_and_page_through(journal_url: str) -> None:
    """Each filter, and all of them combined, lists exactly the matching releases newest first, a page at a
    time."""
    async with opened(journal_url) as journal:
        releases = journal.releases
        for n in range(12):  # ENIs 0..2 in turn, VPCs alternating, created at 100, 110, ...
            await releases.create(
                [request(n % 3, vpc=VPC if n % 2 else OTHER_VPC)], [f"rel-{n:02d}"], now=100.0 + 10 * n
            )
        await releases.finish("rel-04", "failed", {"status": "failed"}, now=300.0)
        await releases.cancel("rel-07", now=300.0)

        async def listed(wanted: ReleaseFilter, limit: int = 2) -> list[str]:
            seen: list[str] = []
            before = None
            for _ in range(20):
                page, before = await releases.page(limit=limit, before=before, filters=wanted)
                seen += [r.id for r in page]
                if before is None:
                    return seen
            raise AssertionError("the pages never ended")

        assert await listed(ReleaseFilter(eni_id=eni(1))) == ["rel-10", "rel-07", "rel-04", "rel-01"]
        assert await listed(ReleaseFilter(vpc_id=OTHER_VPC)) == [f"rel-{n:02d}" for n in (10, 8, 6, 4, 2, 0)]
        assert await listed(ReleaseFilter(status="failed")) == ["rel-04"]
        assert await listed(ReleaseFilter(status="cancelled")) == ["rel-07"]
        window = ReleaseFilter(created_after=120.0, created_before=150.0)
        assert await listed(window) == ["rel-04", "rel-03", "rel-02"]
        both = ReleaseFilter(status="pending", eni_id=eni(1), vpc_id=OTHER_VPC, created_after=100.0)
        assert await listed(both, limit=1) == ["rel-10"]
        assert await listed(ReleaseFilter(eni_id=eni(9))) == []


# -- retention --------------------------------------------------------------------------------------------


async def test_pruning_deletes_old_finished_releases_with_their_items_and_old_keys(journal_url: str) -> None:
    """Releases finished before the cutoff go with their items and tasks; unfinished ones and newer ones
    stay; keys recorded before their cutoff go."""
    async with opened(journal_url) as journal:
        releases = journal.releases
        made, _ = await releases.create(
            [request(n) for n in range(4)], [f"rel-{n}" for n in range(4)], now=100.0, idempotency_key="k"
        )
        await releases.create([request(9)], ["rel-late"], now=400.0, idempotency_key="late")
        old = made[0]
        outcome = Outcome(VPC, eni(0), old.ips)
        await journal.submitting(old.item_key, old.ips, outcome)
        await journal.submitted(old.item_key, "task-1", None, old.ips, outcome)
        outcome.status = "succeeded"
        await journal.finished(old.item_key, outcome)
        await releases.finish("rel-0", "succeeded", outcome.to_json(), now=200.0)
        await releases.cancel("rel-1", now=250.0)
        await releases.finish("rel-2", "failed", {"status": "failed"}, now=350.0)
        pruned = await releases.prune(finished_before=300.0, keys_before=300.0, limit=1)
        assert (pruned.releases, pruned.keys) == (2, 1)
        assert [r.id for r in (await releases.page(limit=10))[0]] == ["rel-late", "rel-3", "rel-2"]
        assert await releases.get("rel-0") is None
        assert await row(
            journal, "SELECT count(*) FROM items WHERE id IN (?, ?)", (old.item_key, made[1].item_key)
        ) == (0,)
        assert await row(journal, "SELECT count(*) FROM tasks") == (0,)
        assert await releases.replay("k", "") is None
        assert await releases.replay("late", "") is not None
        again = await releases.prune(finished_before=300.0, keys_before=300.0)
        assert (again.releases, again.keys) == (0, 0)


async def test_an_expired_key_makes_a_new_release_before_and_after_pruning(journal_url: str) -> None:
    """A key recorded before the expiry moment is no replay: it makes a new release, even with another
    body; a live one still replays or conflicts."""
    async with opened(journal_url) as journal:
        releases = journal.releases
        (first,), _ = await releases.create(
            [request(1)], ["rel-1"], now=100.0, idempotency_key="k", body_hash="a"
        )
        assert await releases.replay("k", "a", keys_expire_before=100.0) == [first]
        assert await releases.replay("k", "a", keys_expire_before=100.5) is None
        (second,), created = await releases.create(
            [request(2)], ["rel-2"], now=200.0, idempotency_key="k", body_hash="b", keys_expire_before=150.0
        )
        assert created
        assert second.id == "rel-2"
        replayed, fresh = await releases.create(
            [request(3)], ["rel-3"], now=210.0, idempotency_key="k", body_hash="b", keys_expire_before=150.0
        )
        assert (not fresh, [r.id for r in replayed]) == (True, ["rel-2"])
        await releases.prune(finished_before=0.0, keys_before=250.0)
        (third,), created = await releases.create(
            [request(3)], ["rel-3"], now=300.0, idempotency_key="k", body_hash="c", keys_expire_before=250.0
        )
        assert created
        assert third.id == "rel-3"


# -- format 3 -----------------------------------------------------------------------------------------------


async def test_a_format_2_sqlite_journal_gets_the_filter_and_retention_indexes(tmp_path: Path) -> None:
    """An SQLite journal of format 2 is brought to the current format when opened to write, its releases
    kept, with the indexes the filters and retention use."""
    path = tmp_path / "v2.journal"
    db = sqlite3.connect(path, isolation_level=None)
    first, second = migrations("sqlite")[:2]
    db.executescript(f"{first.sql}\n;\n{second.sql}\n;\nPRAGMA user_version = 2;")
    db.close()
    async with SqliteJournal(path) as journal:
        await journal.releases.create([request(1)], ["rel-1"], now=1.0)
    async with SqliteJournal(path) as journal:
        assert journal.connector.version == migrations("sqlite")[-1].version
        assert [r.id for r in (await journal.releases.page(filters=ReleaseFilter(eni_id=eni(1))))[0]] == [
            "rel-1"
        ]
    found = {
        name
        for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert found >= INDEXES


async def test_a_format_2_postgresql_journal_gets_the_filter_and_retention_indexes(
    postgres_database: str,
) -> None:
    """A PostgreSQL journal of format 2 gets the format 3 indexes when opened to write."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(postgres_database, autocommit=True) as conn:
        for step in migrations("postgresql")[:2]:
            for statement in step.statements():
                await conn.execute(statement.encode())
        await conn.execute(b"CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await conn.execute(b"INSERT INTO schema_version VALUES (2)")
    async with opened(postgres_database) as journal:
        assert journal.connector.version == migrations("postgresql")[-1].version
        async with journal.connector.reading() as tx:
            rows = await tx.run("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    assert {name for (name,) in rows} >= INDEXES


async def test_racing_requests_with_one_expired_key_make_one_new_release(journal_url: str) -> None:
    """Twenty concurrent creates with a key that has expired (two pools on PostgreSQL): one takes it anew,
    the others replay that one, never the expired key's release."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(journal_url, exclusive=False))
        journals = [first]
        if is_postgres(journal_url):
            journals.append(await stack.enter_async_context(opened(journal_url, exclusive=False)))
        await first.releases.create([request(1)], ["rel-old"], now=1.0, idempotency_key="k", body_hash="h")
        answers = await asyncio.gather(*(
            journals[i % len(journals)].releases.create(
                [request(2)], [f"rel-{i}"], now=100.0, idempotency_key="k", body_hash="h",
                keys_expire_before=50.0,
            )
            for i in range(20)
        ))  # fmt: skip
        assert sum(created for _, created in answers) == 1
        assert len({made[0].id for made, _ in answers}) == 1
        assert answers[0][0][0].id != "rel-old"
