"""The storage seam's contract, run against both journals: an SQLite file and a real PostgreSQL database.

Every test here takes ``journal_url`` (conftest: one SQLite file, one empty database on the session's
PostgreSQL server), so each behaviour is asserted of both implementations by the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from eni_async.errors import InputError
from eni_async.journal import (
    FINISHED,
    SUBMITTED,
    SUBMITTING,
    IdempotencyConflictError,
    Journal,
    JournalError,
    LeaseLostError,
    Release,
    is_postgres,
    open_journal,
)
from eni_async.journal.seam import CONNECTED, RELEASE_CHANNEL, WORK_CHANNEL
from eni_async.journal.sql import SqlJournal, Tx
from eni_async.outcomes import InvalidItem, Item, Outcome
from tests.journalhelpers import opened

IPS = ("10.0.0.2", "10.0.0.3", "10.0.0.4")
VPC = "vpc-7t9nf3pu"


def items(n: int, *, start: int = 0) -> Iterator[Item]:
    for i in range(start, start + n):
        yield Item(VPC, f"eni-{i:08d}", IPS, line=i + 1)


async def raw(journal: SqlJournal, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """A statement run behind the seam's back (to damage a journal, or look at its rows)."""
    async with journal.connector.transaction() as tx:
        return await tx.run(sql, args)


async def test_load_records_every_item_and_meta_at_once(journal_url: str) -> None:
    """A load records all items, the unreadable ones finished, and the meta, in one go."""
    bad = InvalidItem(3, InputError("line 3", "", "not JSON"))
    async with opened(journal_url) as journal:
        settled = await journal.load([*items(2), bad, *items(1, start=5)], meta={"output": "/x/out.jsonl"})
        assert await journal.counts() == {"pending": 3, "submitting": 0, "submitted": 0, "finished": 1}
        assert await journal.meta() == {"output": "/x/out.jsonl"}
    assert [o.line for o in settled] == [3]
    assert settled[0].status == "failed"


async def test_a_load_that_fails_midway_leaves_no_item(journal_url: str) -> None:
    """When the input breaks after 2,500 items the journal holds none of them, nor the meta."""

    def broken() -> Iterator[Item]:
        yield from items(2500)
        raise InputError("INPUT", "in.jsonl", "cannot read: I/O error")

    async with opened(journal_url) as journal:
        with pytest.raises(InputError):
            await journal.load(broken(), meta={"input": "in.jsonl"})
        assert sum((await journal.counts()).values()) == 0
        assert await journal.meta() == {}


class FailingTx:
    """A transaction whose statements starting with ``prefix`` fail, as a dying disk would."""

    def __init__(self, tx: Tx, prefix: str) -> None:
        self.tx, self.prefix = tx, prefix

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if sql.startswith(self.prefix):
            raise JournalError("j", "cannot be read or written (I/O error)")
        return await self.tx.run(sql, args)

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.tx.run_many(sql, rows)


async def test_every_step_is_one_transaction(journal_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that fails between its statements rolls back whole: no task row without its item's update."""
    async with opened(journal_url) as journal:
        await journal.load(items(1))
        outcome = Outcome(VPC, "eni-00000000", IPS)
        await journal.submitting(1, IPS, outcome)
        real = journal.connector.transaction

        @contextlib.asynccontextmanager
        async def failing() -> AsyncIterator[FailingTx]:
            async with real() as tx:
                yield FailingTx(tx, "UPDATE items")

        monkeypatch.setattr(journal.connector, "transaction", failing)
        with pytest.raises(JournalError):
            await journal.submitted(1, "77", None, IPS, outcome)
        monkeypatch.undo()
        assert await raw(journal, "SELECT COUNT(*) FROM tasks") == [(0,)]
        assert (await journal.counts())[SUBMITTING] == 1


async def test_resume_plans_poll_known_tasks_and_reconcile_the_chunk_in_doubt(journal_url: str) -> None:
    """A submitted chunk comes back as a task to poll, a chunk caught mid-submit as in doubt."""
    async with opened(journal_url) as journal:
        await journal.load(items(2))
        first = Outcome(VPC, "eni-00000000", IPS)
        first.sent.update(IPS[:2])
        await journal.submitting(1, IPS[:2], first)
        first.task_ids.append("4001")
        await journal.submitted(1, "4001", "req-1", IPS[:2], first)
        second = Outcome(VPC, "eni-00000001", IPS)
        second.sent.update(IPS)
        await journal.submitting(2, IPS, second)
        assert await journal.counts() == {"pending": 0, "submitting": 1, "submitted": 1, "finished": 0}
        one, two = [r async for r in journal.unfinished()]
    assert one.plan.tasks == [("4001", "req-1", IPS[:2])]
    assert one.plan.in_doubt == ()
    assert one.plan.outcome.task_ids == ["4001"]
    assert two.plan.tasks == []
    assert two.plan.in_doubt == IPS


async def test_ips_sent_are_recorded_before_the_send_and_kept_across_resumes(journal_url: str) -> None:
    """An IP once sent stays sent in the journal through later steps that no longer list it."""
    async with opened(journal_url) as journal:
        await journal.load(items(1))
        outcome = Outcome(VPC, "eni-00000000", IPS)
        await journal.submitting(1, IPS[:1], outcome)  # recorded before the send: the chunk is sent
        (resumed,) = [r async for r in journal.unfinished()]
        assert resumed.plan.outcome.sent == {IPS[0]}
        # A resumed run polls another task and records progress; its outcome lists the first IP nowhere.
        later = resumed.plan.outcome
        await journal.progressed(1, later)
        (again,) = [r async for r in journal.unfinished()]
    assert IPS[0] in again.plan.outcome.sent, "the journal forgot an IP it sent"


async def test_finished_outcomes_come_back_as_written(journal_url: str) -> None:
    """``finished_items`` gives back the outcomes written, unknown and absent IPs included, in input order."""
    async with opened(journal_url) as journal:
        await journal.load(items(2))
        outcome = Outcome(VPC, "eni-00000001", IPS, status="failed", line=2)
        outcome.released, outcome.unknown, outcome.absent = ["10.0.0.2"], ["10.0.0.3"], ["10.0.0.4"]
        await journal.finished(2, outcome)
        (back,) = [o async for o in journal.finished_items()]
        assert await journal.outcome_counts() == {"failed": 1}
        assert await journal.item(2) == (FINISHED, outcome.to_json())
        assert await journal.item(99) is None
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(outcome.to_json(), sort_keys=True)


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [("outcome", "{not json", "outcome"), ("ips", '"10.0.0.2"', "ips"), ("sent", "[1, 2]", "sent")],
)
async def test_a_damaged_row_is_one_line_naming_the_item(
    journal_url: str, column: str, value: str, named: str
) -> None:
    """A row whose JSON was tampered with is a one-line JournalError naming the item and the column."""
    async with opened(journal_url) as journal:
        await journal.load(items(2))
        await journal.submitting(2, IPS, Outcome(VPC, "eni-00000001", IPS))
        await raw(journal, f"UPDATE items SET {column} = ? WHERE id = 2", (value,))
        with pytest.raises(JournalError) as caught:
            _ = [r async for r in journal.unfinished()]
    message = str(caught.value)
    assert "item 2 is damaged" in message
    assert named in message
    assert "\n" not in message


async def test_a_damaged_finished_outcome_is_one_line(journal_url: str) -> None:
    """A finished outcome without its fields is a JournalError, not a KeyError."""
    async with opened(journal_url) as journal:
        await journal.load(items(1))
        await journal.finished(1, Outcome(VPC, "eni-00000000", IPS, status="succeeded", line=1))
        await raw(journal, "UPDATE items SET outcome = ? WHERE id = 1", ('{"status": "succeeded"}',))
        with pytest.raises(JournalError, match="item 1 is damaged"):
            _ = [o async for o in journal.finished_items()]


async def test_an_unknown_state_is_damage_not_an_empty_journal(journal_url: str) -> None:
    """An item in a state this code does not know makes ``counts`` fail naming it (never 'nothing sent')."""
    async with opened(journal_url) as journal:
        await journal.load(items(2))
        await raw(journal, "UPDATE items SET state = 'weird'")
        with pytest.raises(JournalError, match=r"item 1 is damaged \(state: unknown state 'weird'"):
            await journal.counts()


async def test_a_newer_format_is_refused(journal_url: str) -> None:
    """A journal written by a newer eni-async is refused in one line."""
    async with opened(journal_url) as journal:
        version = journal.connector.version
        if is_postgres(journal_url):
            await raw(journal, "UPDATE schema_version SET version = 99")
        else:
            await raw(journal, "PRAGMA user_version = 99")
    with pytest.raises(JournalError) as caught:
        await open_journal(journal_url)
    assert f"newer eni-async (journal format 99, this one reads {version})" in str(caught.value)


async def test_one_writer_at_a_time_and_readers_meanwhile(journal_url: str) -> None:
    """While one journal is open for writing another writer is refused naming this process; readers are not."""
    async with opened(journal_url) as journal:
        await journal.load(items(1))
        with pytest.raises(JournalError, match=r"in use by another eni-async process \(pid \d+\)"):
            await open_journal(journal_url)
        async with opened(journal_url, read_only=True) as reader:
            assert (await reader.counts())["pending"] == 1
    async with opened(journal_url):  # the lock went with the first journal
        pass


# -- the release registry ----------------------------------------------------------------------------------


REQUEST = (VPC, "eni-00000042", ("10.0.0.9",))


async def test_a_release_and_its_item_are_one_record(journal_url: str) -> None:
    """Creating releases records each with its journal item; their lives are read back by id and item."""
    async with opened(journal_url) as journal:
        releases = journal.releases
        made, created = await releases.create([REQUEST, REQUEST], ["rel-a", "rel-b"], now=10.0)
        assert created
        assert [r.id for r in made] == ["rel-a", "rel-b"]
        assert await journal.counts() == {"pending": 2, "submitting": 0, "submitted": 0, "finished": 0}
        assert (await releases.by_item(made[1].item_key)) == made[1]
        await releases.started("rel-a", now=11.0)
        await releases.finish("rel-a", "succeeded", {"status": "succeeded"}, now=12.0)
        await releases.started("rel-b", now=11.0)
        await releases.requeue("rel-b")
        a, b = await releases.get("rel-a"), await releases.get("rel-b")
        assert a is not None
        assert (a.status, a.started_at, a.finished_at, a.outcome) == (
            "succeeded",
            11.0,
            12.0,
            {"status": "succeeded"},
        )
        assert b is not None
        assert b.status == "pending"
        assert [r.id for r in await releases.unfinished()] == ["rel-b"]
        assert await releases.counts() == {
            "pending": 1,
            "running": 0,
            "succeeded": 1,
            "failed": 0,
            "cancelled": 0,
        }
        page, following = await releases.page(limit=1)
        assert [r.id for r in page] == ["rel-b"]
        assert following is not None
        rest, end = await releases.page(limit=1, before=following)
        assert ([r.id for r in rest], end) == (["rel-a"], None)
        assert await releases.get("rel-none") is None


async def test_an_idempotency_key_makes_one_release_and_refuses_another_body(journal_url: str) -> None:
    """The same key again replays the first releases (nothing recorded); with another body it is refused."""
    async with opened(journal_url) as journal:
        releases = journal.releases
        first, created = await releases.create(
            [REQUEST], ["rel-1"], now=1.0, idempotency_key="k", body_hash="h"
        )
        again, fresh = await releases.create(
            [REQUEST], ["rel-2"], now=2.0, idempotency_key="k", body_hash="h"
        )
        assert created
        assert not fresh
        assert again == first
        assert await releases.replay("k", "h") == first
        assert await releases.replay("other", "h") is None
        with pytest.raises(IdempotencyConflictError):
            await releases.create([REQUEST], ["rel-3"], now=3.0, idempotency_key="k", body_hash="other")
        assert sum((await journal.counts()).values()) == 1


async def test_racing_requests_with_one_key_make_one_release(journal_url: str) -> None:
    """Twenty concurrent creates with one key (two journals at once on PostgreSQL): the database decides."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(journal_url, exclusive=False))
        journals: list[Journal] = [first]
        if is_postgres(journal_url):  # a second process's pool on the same database
            journals.append(await stack.enter_async_context(opened(journal_url, exclusive=False)))
        answers = await asyncio.gather(*(
            journals[i % len(journals)].releases.create(
                [REQUEST], [f"rel-{i}"], now=1.0, idempotency_key="same", body_hash="h"
            )
            for i in range(20)
        ))  # fmt: skip
        assert sum(created for _, created in answers) == 1
        assert len({made[0].id for made, _ in answers}) == 1
        assert sum((await first.counts()).values()) == 1


async def test_heartbeat_writes(journal_url: str) -> None:
    """The readiness heartbeat is a write the journal takes."""
    async with opened(journal_url) as journal:
        await journal.releases.heartbeat(5.0)
        await journal.releases.heartbeat(6.0)
        assert await raw(journal, "SELECT value FROM service_meta WHERE key = 'heartbeat'") == [("6.0",)]


# -- leases (D27) ------------------------------------------------------------------------------------------


def request(eni: int, ip: str = "10.0.0.9") -> tuple[str, str, tuple[str, ...]]:
    return (VPC, f"eni-{eni:08d}", (ip,))


async def releases_on(journal: Journal, *enis: int, prefix: str = "rel") -> list[Release]:
    """One pending release per ENI number given, in that order (the first the oldest)."""
    made: list[Release] = []
    for n, eni in enumerate(enis):
        ids = [f"{prefix}-{n}"]
        made += (await journal.releases.create([request(eni, f"10.0.0.{n + 2}")], ids, now=n))[0]
    return made


async def test_claims_lease_each_eni_to_one_owner(journal_url: str) -> None:
    """Claims hand out ENIs with unfinished releases, oldest first, to one owner each; finished ones stay."""
    async with opened(journal_url) as journal:
        made = await releases_on(journal, 1, 0, 2, 1)
        await journal.releases.finish(made[2].id, "succeeded", {}, now=9.0)
        mine = await journal.claim("a", lease_s=60, limit=1)
        theirs = await journal.claim("b", lease_s=60, limit=10)
        assert [(x.eni_id, x.owner, x.epoch, x.adopted_from) for x in mine] == [
            ("eni-00000001", "a", 1, None)
        ]
        assert [(x.eni_id, x.owner) for x in theirs] == [("eni-00000000", "b")], (
            "ENIs whose releases are finished are not claimed"
        )
        assert await journal.claim("c", lease_s=60, limit=10) == []
        on_mine = await journal.releases.unfinished(eni_ids=["eni-00000001"])
        assert [r.id for r in on_mine] == ["rel-0", "rel-3"]


async def test_an_expired_lease_is_adopted_and_the_old_owner_is_fenced_off(journal_url: str) -> None:
    """After expiry another owner adopts with a higher epoch; the old owner can neither write nor renew."""
    async with opened(journal_url) as journal:
        (release,) = await releases_on(journal, 0)
        key = release.item_key
        (old,) = await journal.claim("a", lease_s=0, limit=5)  # expires at once
        (new,) = await journal.claim("b", lease_s=60, limit=5)
        assert (new.owner, new.epoch, new.adopted_from) == ("b", old.epoch + 1, "a")
        stale = Outcome(VPC, "eni-00000000", release.ips)
        with pytest.raises(LeaseLostError):
            await journal.submitting(key, release.ips, stale, lease=old)
        with pytest.raises(LeaseLostError):
            await journal.renew(old, lease_s=60)
        with pytest.raises(LeaseLostError):
            await journal.releases.finish(release.id, "failed", {}, now=1.0, lease=old)
        assert (await journal.counts())["pending"] == 1, "the fenced write wrote nothing"
        assert (await journal.releases.get(release.id)) == release
        await journal.submitting(key, release.ips, stale, lease=new)
        renewed = await journal.renew(new, lease_s=120)
        assert renewed.epoch == new.epoch
        assert renewed.expires_at > new.expires_at
        with pytest.raises(LeaseLostError):  # a lease covers its own ENI's items only
            await journal.finished(key, stale, lease=type(new)("eni-other", "b", new.epoch, new.expires_at))


async def test_nothing_is_sent_under_an_expired_lease_but_what_was_seen_is_kept(journal_url: str) -> None:
    """A lease past its time, not yet taken by anyone: no new chunk may be recorded as about to be sent,
    while the task an earlier send started is still recorded (its epoch is unchanged: nobody else wrote)."""
    async with opened(journal_url) as journal:
        (release,) = await releases_on(journal, 0)
        (lease,) = await journal.claim("a", lease_s=0, limit=1)
        outcome = Outcome(VPC, "eni-00000000", release.ips)
        with pytest.raises(LeaseLostError):
            await journal.submitting(release.item_key, release.ips, outcome, lease=lease)
        await journal.submitted(release.item_key, "77", None, release.ips, outcome, lease=lease)
        await journal.releases.started(release.id, now=2.0, lease=lease)
        assert (await journal.counts())[SUBMITTED] == 1
        assert (await journal.releases.get(release.id)).status == "running"  # type: ignore[union-attr]


async def test_renewing_many_leases_keeps_those_held_and_leaves_out_the_lost(journal_url: str) -> None:
    """One renewal extends every lease still held and answers without the ones another owner took; giving
    them all back frees those still held and leaves the other owner's alone."""
    async with opened(journal_url) as journal:
        await releases_on(journal, 0, 1, 2)
        held = await journal.claim("a", lease_s=0, limit=3)
        (taken,) = await journal.claim("b", lease_s=60, limit=1)
        renewed = await journal.renew_many(held, lease_s=60)
        await journal.give_back_many(held)  # the lost one is left to its owner
        again = await journal.claim("c", lease_s=60, limit=3)
    assert [lease.eni_id for lease in renewed] == sorted({lease.eni_id for lease in held} - {taken.eni_id})
    assert all(lease.owner == "a" and lease.expires_at > held[0].expires_at for lease in renewed)
    assert [lease.eni_id for lease in again] == [lease.eni_id for lease in renewed]


async def test_a_lease_given_back_is_claimable_at_once(journal_url: str) -> None:
    """Giving a lease back frees the ENI for the next claim; a lost lease given back changes nothing."""
    async with opened(journal_url) as journal:
        await releases_on(journal, 0)
        (lease,) = await journal.claim("a", lease_s=60, limit=1)
        await journal.give_back(lease)
        (again,) = await journal.claim("b", lease_s=60, limit=1)
        await journal.give_back(lease)  # a's lease is gone already: b keeps the ENI
        assert await journal.claim("c", lease_s=60, limit=1) == []
        assert again.epoch == lease.epoch + 1
        assert again.adopted_from is None, "a lease given back is free, not adopted"
        await journal.clear_leases()
        (cleared,) = await journal.claim("d", lease_s=60, limit=1)
        assert cleared.epoch == again.epoch + 1


async def test_concurrent_claims_never_share_an_eni(journal_url: str) -> None:
    """Claims racing from two owners (two pools on PostgreSQL) take disjoint ENIs, every ENI once."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(opened(journal_url, exclusive=False))
        await first.releases.create([request(i) for i in range(40)], [f"rel-{i}" for i in range(40)], now=1.0)
        second = first
        if is_postgres(journal_url):
            second = await stack.enter_async_context(opened(journal_url, exclusive=False))
        rounds = await asyncio.gather(*(
            (first if i % 2 else second).claim(f"owner-{i}", lease_s=60, limit=3) for i in range(16)
        ))  # fmt: skip
    taken = [lease.eni_id for leases in rounds for lease in leases]
    assert len(taken) == len(set(taken)) == 40


async def test_releases_whose_items_are_under_way_are_claimable(journal_url: str) -> None:
    """Work part-done is still work to claim: running releases whose items were caught mid-submit or submitted."""
    async with opened(journal_url) as journal:
        one, two = await releases_on(journal, 0, 1)
        for release in (one, two):
            await journal.releases.started(release.id, now=1.0)
        await journal.submitting(one.item_key, one.ips, Outcome(VPC, one.eni_id, one.ips))
        await journal.submitted(two.item_key, "9", None, two.ips, Outcome(VPC, two.eni_id, two.ips))
        claimed = await journal.claim("a", lease_s=60, limit=10)
        statuses = await journal.releases.statuses([one.id, two.id, "rel-none"])
        assert await journal.releases.unfinished_count() == 2
    assert [lease.eni_id for lease in claimed] == ["eni-00000000", "eni-00000001"]
    assert statuses == {one.id: "running", two.id: "running"}


async def test_notifications_tell_other_processes_of_new_work_and_ended_releases(journal_url: str) -> None:
    """On PostgreSQL a listener hears a create (work) and a finish (the release id) made through another
    pool, after it says it is connected; SQLite, written by one process only, has nothing to listen to."""
    async with contextlib.AsyncExitStack() as stack:
        writer = await stack.enter_async_context(opened(journal_url, exclusive=False))
        heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        if not is_postgres(journal_url):
            await asyncio.wait_for(writer.listen(lambda *note: heard.put_nowait(note)), 1)
            assert heard.empty()
            return
        listener = await stack.enter_async_context(opened(journal_url, exclusive=False))
        task = asyncio.create_task(listener.listen(lambda *note: heard.put_nowait(note)))
        try:
            assert await asyncio.wait_for(heard.get(), 10) == (CONNECTED, "")
            (release,) = await releases_on(writer, 0)
            assert await asyncio.wait_for(heard.get(), 10) == (WORK_CHANNEL, "")
            await writer.releases.finish(release.id, "succeeded", {}, now=1.0)
            await writer.releases.finish(release.id, "succeeded", {}, now=2.0)  # finished once: no news
            await releases_on(writer, 1, prefix="later")
            assert await asyncio.wait_for(heard.get(), 10) == (RELEASE_CHANNEL, release.id)
            assert await asyncio.wait_for(heard.get(), 10) == (WORK_CHANNEL, "")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_release_that_cannot_be_recorded_leaves_no_item(journal_url: str) -> None:
    """When recording the releases fails (a release id taken twice), their journal items are not written."""
    async with opened(journal_url) as journal:
        with pytest.raises(JournalError):
            await journal.releases.create([REQUEST, REQUEST], ["rel-x", "rel-x"], now=1.0)
        assert sum((await journal.counts()).values()) == 0
        assert sum((await journal.releases.counts()).values()) == 0
        made, created = await journal.releases.create([REQUEST], ["rel-x"], now=1.0)
        assert created
        assert await journal.item(made[0].item_key) == ("pending", None)


TWELVE = tuple(f"10.0.1.{n}" for n in range(2, 14))  # one ENI, two chunks: ten IPs, then two


async def test_progress_keeps_a_submit_in_doubt_and_a_task_not_seen_ending(journal_url: str) -> None:
    """A progress write (an outage's error shown, a watch started again) while the second chunk's submit is
    in doubt, then while its task runs, erases neither: a resume still reconciles the chunk, then polls the
    task, and a cancel says which; the first chunk's task, seen ending, is not polled again."""
    first, second = TWELVE[:10], TWELVE[10:]
    async with opened(journal_url) as journal:
        made, _ = await journal.releases.create([(VPC, "eni-00000077", TWELVE)], ["rel-2c"], now=1.0)
        key = made[0].item_key
        outcome = Outcome(VPC, "eni-00000077", TWELVE)
        outcome.sent.update(first)
        await journal.submitting(key, first, outcome)
        outcome.task_ids.append("501")
        await journal.submitted(key, "501", None, first, outcome)
        outcome.released.extend(first)  # the first task was seen ending
        await journal.progressed(key, outcome, ended=("501",))
        outcome.sent.update(second)
        await journal.submitting(key, second, outcome)
        await journal.progressed(key, outcome)  # e.g. a look after an ambiguous submit waits out an outage
        (resumed,) = [r async for r in journal.unfinished()]
        assert resumed.plan.in_doubt == second, "a progress write erased the submit in doubt"
        assert resumed.plan.tasks == []
        assert (await journal.counts())[SUBMITTING] == 1
        doubt = await journal.releases.cancel("rel-2c", now=2.0)
        assert doubt is not None
        assert (doubt.cancelled, doubt.in_doubt, doubt.task_ids) == (False, True, ())
        outcome.task_ids.append("502")
        await journal.submitted(key, "502", None, second, outcome)
        await journal.progressed(key, outcome)  # the watch of 502 ended unseen and starts again
        (resumed,) = [r async for r in journal.unfinished()]
        assert resumed.plan.tasks == [("502", None, second)], "a progress write took a running task as ended"
        assert resumed.plan.in_doubt == ()
        running = await journal.releases.cancel("rel-2c", now=3.0)
        assert running is not None
        assert (running.cancelled, running.task_ids) == (False, ("502",))
        assert not running.in_doubt
        outcome.not_released.extend(second)
        await journal.progressed(key, outcome, ended=("502",))
        (resumed,) = [r async for r in journal.unfinished()]
        assert resumed.plan.tasks == []


async def test_a_submit_taken_back_is_no_longer_in_doubt(journal_url: str) -> None:
    """A try that surely had no effect is taken back by its progress write: nothing in doubt, nothing
    sent, and the release can be cancelled."""
    async with opened(journal_url) as journal:
        made, _ = await journal.releases.create([REQUEST], ["rel-tb"], now=1.0)
        key = made[0].item_key
        outcome = Outcome(*REQUEST)
        outcome.sent.update(REQUEST[2])
        await journal.submitting(key, REQUEST[2], outcome)
        outcome.sent.clear()
        await journal.progressed(key, outcome, taken_back=True)
        (resumed,) = [r async for r in journal.unfinished()]
        assert (resumed.plan.in_doubt, resumed.plan.outcome.sent) == ((), set())
        assert (await journal.counts())[SUBMITTED] == 1
        done = await journal.releases.cancel("rel-tb", now=2.0)
        assert done is not None
        assert done.cancelled
