"""unassign_many against the in-process simulator: bounds, laziness, serialisation, failures, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from eni_async.batch import Batch
from eni_async.models import Credentials
from eni_async.outcomes import Item, Outcome, check_against_truth
from tests.batchhelpers import World, world


async def collect(w: World, items: Any, **kwargs: Any) -> list[Outcome]:
    return [outcome async for outcome in w.client.unassign_many(items, **kwargs)]


def agree(w: World, outcomes: list[Outcome]) -> list[str]:
    present = w.present()
    return [p for o in outcomes for p in check_against_truth(o.to_json(), present)]


async def test_every_ip_is_released_and_agrees_with_ground_truth() -> None:
    """A batch over every seeded ENI succeeds item by item, and the simulator shows the IPs gone."""
    async with world(enis=12) as w:
        items = w.items()
        outcomes = await collect(w, items, concurrency=4)
        assert sorted(o.eni_id for o in outcomes) == sorted(i.eni_id for i in items)
        assert all(o.status == "succeeded" for o in outcomes), [o.to_json() for o in outcomes]
        assert all(not e["secondary_ips"] for e in w.sim.ground_truth()["enis"])
        assert agree(w, outcomes) == []


async def test_concurrency_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No more than ``concurrency`` items are worked on at once."""
    active, peak = 0, 0

    async with world(enis=20) as w:
        original = w.client.releaser.release

        async def counting(*args: Any, **kwargs: Any) -> Outcome:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                return await original(*args, **kwargs)
            finally:
                active -= 1

        monkeypatch.setattr(w.client.releaser, "release", counting)
        outcomes = await collect(w, w.items(), concurrency=3)
    assert len(outcomes) == 20
    assert peak == 3


async def test_input_is_consumed_lazily() -> None:
    """Items are pulled only as workers free up: after the first outcome, little more than the bound."""
    async with world(enis=30) as w:
        items = w.items()
        pulled = 0

        def source() -> Iterator[Item]:
            nonlocal pulled
            for item in items:
                pulled += 1
                yield item

        batch = w.client.unassign_many(source(), concurrency=2)
        seen = 0
        async for _ in batch:
            seen += 1
            if seen == 1:
                assert pulled <= 2 + 2
        assert pulled == 30
        assert seen == 30


async def test_async_iterable_input() -> None:
    """An async iterable of plain triples is accepted."""
    async with world(enis=3) as w:
        triples = [(i.vpc_id, i.eni_id, list(i.ips)) for i in w.items()]

        async def source() -> Any:
            for triple in triples:
                yield triple

        outcomes = await collect(w, source(), concurrency=2)
    assert [o.status for o in outcomes] == ["succeeded"] * 3


async def test_same_eni_twice_is_serialised_not_raced() -> None:
    """Two items naming one ENI run one after the other and both succeed (no mutex error)."""
    async with world(enis=1, ips_per_eni=6) as w:
        (item,) = w.items()
        first = Item(item.vpc_id, item.eni_id, item.ips[:3])
        second = Item(item.vpc_id, item.eni_id, item.ips[3:])
        outcomes = await collect(w, [first, second], concurrency=4)
        stats = w.sim.stats()
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"]
    assert all(o.attempts == 1 for o in outcomes)
    assert stats["requests"]["UnassignPrivateIpAddresses"] == 2


async def test_more_than_ten_ips_are_chunked() -> None:
    """An ENI with 25 IPs is released in three tasks, all recorded in its outcome."""
    async with world(enis=1, ips_per_eni=25) as w:
        outcomes = await collect(w, w.items())
    (outcome,) = outcomes
    assert outcome.status == "succeeded"
    assert len(outcome.task_ids) == 3
    assert len(outcome.released) == 25


async def test_one_failure_is_that_items_outcome() -> None:
    """An ENI that does not exist fails alone; the other items succeed."""
    async with world(enis=4) as w:
        items = w.items()
        ghost = Item(items[0].vpc_id, "eni-zzzzzzzz", ("10.9.9.9",))
        outcomes = await collect(w, [*items[:2], ghost, *items[2:]], concurrency=2)
        by_eni = {o.eni_id: o for o in outcomes}
        assert by_eni["eni-zzzzzzzz"].status == "failed"
        assert by_eni["eni-zzzzzzzz"].error is not None
        assert by_eni["eni-zzzzzzzz"].error["code"] == "InvalidNetworkInterface.NotFound"
        assert sum(o.status == "succeeded" for o in outcomes) == len(items)
        assert agree(w, outcomes) == []


async def test_invalid_item_is_its_own_outcome() -> None:
    """A malformed item fails with InvalidInput naming the field, and the rest still run."""
    async with world(enis=2) as w:
        items = w.items()
        bad = Item(items[0].vpc_id, "ENI-BAD", ("10.0.0.1",))
        outcomes = await collect(w, [bad, *items])
    statuses = {o.eni_id: o.status for o in outcomes}
    assert statuses.pop("ENI-BAD") == "failed"
    assert set(statuses.values()) == {"succeeded"}
    bad_outcome = next(o for o in outcomes if o.eni_id == "ENI-BAD")
    assert bad_outcome.error is not None
    assert "eni_id" in bad_outcome.error["message"]


async def test_auth_failure_ends_the_batch_early() -> None:
    """With a wrong key, the first failures are AuthFailure and every later item is not_attempted."""
    async with world(enis=20) as w:
        wrong = Credentials(w.sim.credentials.secret_id, "not-the-key")
        from eni_async.client import EniClient

        async with EniClient(wrong, w.client.settings, clock=w.clock) as client:
            outcomes = [o async for o in client.unassign_many(w.items(), concurrency=2)]
        requests = sum(w.sim.stats()["requests"].values())
    statuses = [o.status for o in outcomes]
    assert len(outcomes) == 20
    assert statuses.count("not_attempted") >= 17
    failed = [o for o in outcomes if o.status == "failed"]
    assert failed
    assert all(o.error and o.error["code"] == "AuthFailure" for o in failed)
    assert requests <= 3
    assert all(e["secondary_ips"] for e in w.sim.ground_truth()["enis"])


async def test_cancelling_reports_unconfirmed_and_leaks_nothing() -> None:
    """Cancelling mid-batch stops submitting, lists submitted-but-unconfirmed items, and leaves no task."""
    async with world(enis=30, task_latency=(5.0, 0.1)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=5)
        got: list[Outcome] = []

        async def consume() -> None:
            async for outcome in batch:
                got.append(outcome)

        before = asyncio.all_tasks()
        consumer = asyncio.create_task(consume())
        for _ in range(500):
            await asyncio.sleep(0)
            if w.sim.stats()["requests"].get("UnassignPrivateIpAddresses", 0) >= 5:
                break
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        submitted_after = w.sim.stats()["requests"]["UnassignPrivateIpAddresses"]
        await asyncio.sleep(0.05)
        assert w.sim.stats()["requests"]["UnassignPrivateIpAddresses"] == submitted_after
        ours = [t for t in asyncio.all_tasks() - before if "RequestHandler" not in repr(t.get_coro())]
        assert ours == [], "the simulator's own keep-alive handlers aside, no task is left running"
    assert batch.unconfirmed, "in-flight items are reported"
    unconfirmed_with_tasks = [o for o in batch.unconfirmed if o.task_ids]
    assert unconfirmed_with_tasks
    assert all(
        o.status == "failed" and o.error and o.error["code"] == "Interrupted" and o.unknown
        for o in unconfirmed_with_tasks
    )
    assert len(got) + len(batch.unconfirmed) == batch.stats.pulled


async def test_preflight_finds_absent_ips_and_refuses_the_primary() -> None:
    """With preflight, an IP not on the ENI is absent (an item of only such IPs succeeded, nothing sent) and
    the primary IP is refused without a request."""
    async with world(enis=2, ips_per_eni=2) as w:
        truth = {e["eni_id"]: e for e in w.sim.ground_truth()["enis"]}
        eni_a, eni_b = sorted(truth)
        a, b = truth[eni_a], truth[eni_b]
        items = [
            Item(a["vpc_id"], eni_a, (a["secondary_ips"][0], "10.200.0.1")),
            Item(b["vpc_id"], eni_b, (b["primary_ip"], b["secondary_ips"][0])),
            Item(a["vpc_id"], eni_a, ("10.200.0.2",)),
        ]
        outcomes = await collect(w, items, preflight=True, concurrency=1)
        assert agree(w, outcomes) == []
    first, second, third = outcomes
    assert first.status == "succeeded"
    assert first.released == [a["secondary_ips"][0]]
    assert any("not on" in d for d in first.decisions)
    assert second.status == "failed"
    assert second.not_released == [b["primary_ip"]]
    assert second.released == [b["secondary_ips"][0]]
    assert second.error is not None
    assert second.error["code"] == "InvalidPrivateip.IsPrimary"
    assert (third.status, third.absent, third.task_ids, third.error) == (
        "succeeded",
        ["10.200.0.2"],
        [],
        None,
    )


async def test_items_cut_short_by_bad_credentials_stay_pending_for_resume(tmp_path: Any) -> None:
    """With a journal, the items a credential failure cut short are not recorded as finished, so a resume
    with good credentials releases every IP."""
    from eni_async.client import EniClient
    from eni_async.journal import SqliteJournal

    async with world(enis=6) as w:
        items = w.items()
        wrong = Credentials(w.sim.credentials.secret_id, "not-the-key")
        async with SqliteJournal(tmp_path / "j.sqlite") as journal:
            await journal.load(items)
            async with EniClient(wrong, w.client.settings, clock=w.clock) as client:
                first = [o async for o in client.unassign_many(journal.unfinished(), journal=journal)]
            assert {o.error["code"] for o in first if o.error} <= {"AuthFailure", "NotAttempted"}
            assert (await journal.counts())["finished"] == 0
            second = [o async for o in w.client.unassign_many(journal.unfinished(), journal=journal)]
            assert (await journal.counts())["finished"] == len(items)
        assert agree(w, second) == []
        assert all(not e["secondary_ips"] for e in w.sim.ground_truth()["enis"])
    assert [o.status for o in second] == ["succeeded"] * len(items)


async def test_slow_tasks_do_not_starve_the_submits_while_no_latency_is_known() -> None:
    """Tasks of 30 s and a first poll of 0.2 s: before any task ends, the in-flight target (Little's law on
    2 x 0.2 s) would hold about 90 ENIs; it grows with the time nothing has ended instead, so all 150 ENIs
    are submitted at the submit rate, long before the first task ends."""
    from eni_async.policy import PollPolicy
    from eni_async.settings import Settings

    settings = Settings(poll=PollPolicy(first=0.2, timeout=300.0))
    async with world(enis=150, ips_per_eni=1, task_latency=(30.0, 0.01), settings=settings) as w:
        outcomes = await collect(w, w.items())
        assert [o.status for o in outcomes] == ["succeeded"] * 150
        assert agree(w, outcomes) == []
        tasks = w.sim.ground_truth()["tasks"]
        started = sorted(t["started_s"] for t in tasks)
        assert len(started) == 150
        assert started[-1] - started[0] < 5.0, "every submit went out before the first task could end"
        assert min(t["latency_s"] for t in tasks) > 25.0


async def test_an_enis_turn_passes_past_waiters_cancelled_before_or_after_being_handed_it() -> None:
    """Items of one ENI wait their turn in order; a waiter cancelled while waiting is skipped, and one
    cancelled after the turn was handed to it (before it ran) passes the turn on: nobody waits forever."""
    async with world(enis=1) as w:
        batch = Batch(w.client.releaser, [], concurrency=4)
        waiting: list[asyncio.Future[None]] = []
        batch._eni_turns["eni-00000001"] = waiting  # the first item holds the ENI
        second, third, fourth = (asyncio.create_task(batch._turn("eni-00000001", waiting)) for _ in range(3))
        await asyncio.sleep(0)
        second.cancel()  # cancelled while waiting: skipped
        await asyncio.sleep(0)
        batch._pass_on("eni-00000001")  # the first is done: the third's turn
        third.cancel()  # cancelled after being handed the turn, before it ran: it passes the turn on
        for _ in range(3):
            await asyncio.sleep(0)
        assert second.cancelled()
        assert third.cancelled()
        assert fourth.done()
        assert not fourth.cancelled()
        assert "eni-00000001" in batch._eni_turns  # the fourth holds it now
        batch._pass_on("eni-00000001")
        assert batch._eni_turns == {}


async def test_a_consumer_slower_than_the_workers_gets_every_outcome_once() -> None:
    """A consumer that awaits between outcomes, so that the batch's workers all end while outcomes still wait
    to be yielded: each of those is yielded, and none of them is in ``unconfirmed`` as well."""
    async with world(enis=12) as w:
        items = w.items()
        batch = w.client.unassign_many(items, concurrency=4)
        got: list[Outcome] = []
        async for outcome in batch:
            got.append(outcome)
            await asyncio.sleep(0.05)
    assert sorted(o.eni_id for o in got) == sorted(i.eni_id for i in items)
    assert all(o.status == "succeeded" for o in got)
    assert batch.unconfirmed == []


async def test_a_slow_consumer_stopping_the_batch_gets_each_pulled_item_once() -> None:
    """Stopped while outcomes wait to be yielded: every item pulled is either yielded or in ``unconfirmed``,
    never both."""
    async with world(enis=20, task_latency=(2.0, 0.5)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=6)
        got: list[Outcome] = []
        async for outcome in batch:
            got.append(outcome)
            if len(got) == 2:
                batch.stop(1.0)
            await asyncio.sleep(0.1)
    yielded = [id(o) for o in got]
    assert not set(yielded) & {id(o) for o in batch.unconfirmed}
    assert len(got) + len(batch.unconfirmed) == batch.stats.pulled


async def test_closed_after_its_workers_ended_the_outcomes_not_yet_yielded_are_unconfirmed() -> None:
    """The batch ended (every worker done) while outcomes still wait to be yielded, then the consumer stops:
    those outcomes are in ``unconfirmed`` (final, not interrupted), so every item is accounted for once."""
    async with world(enis=12) as w:
        batch = w.client.unassign_many(w.items(), concurrency=12)  # room for every outcome: none waits
        got: list[Outcome] = []
        async for outcome in batch:
            got.append(outcome)
            await asyncio.sleep(0.05)
            if len(got) == 3:
                break
        await batch.aclose()
    assert len(got) == 3
    assert batch.stats.pulled == batch.stats.done == 12
    assert len(batch.unconfirmed) == 12 - 3
    assert all(o.status == "succeeded" and not o.interrupted for o in batch.unconfirmed)
    assert not {id(o) for o in got} & {id(o) for o in batch.unconfirmed}


async def test_the_gate_closes_on_stop_with_a_guard_and_without_one() -> None:
    """Without a guard every item shares one gate; with one, each item's gate asks the guard first: both
    are open until the batch stops and closed after, and only the guarded one asks the guard."""
    async with world(enis=1) as w:
        item = w.items()[0]
        asked: list[Item] = []
        plain = Batch(w.client.releaser, [item], concurrency=1)
        guarded = Batch(w.client.releaser, [item], concurrency=1, guard=asked.append)
        gates = [plain._closed, guarded._gate(item)]
        assert [gate() for gate in gates] == [False, False]
        plain.stop()
        guarded.stop()
        assert [gate() for gate in gates] == [True, True]
        assert asked == [item, item]
        for batch in (plain, guarded):
            await batch.aclose()


def test_an_item_already_in_checked_form_is_released_as_it_is_else_as_its_checked_copy() -> None:
    """``_checked`` hands an item whose fields validation leaves as they are to the release path itself (no
    copy), and an item it normalises as a new, equal ``Item``: both paths give the same item."""
    given = Item("vpc-abcdefgh", "eni-abcdefgh", ("10.0.0.1", "10.0.0.2"), line=7, key=3)
    as_list = Item("vpc-abcdefgh", "eni-abcdefgh", ["10.0.0.1", "10.0.0.2"], line=7, key=3)  # type: ignore[arg-type]
    same = Batch._checked(given, Outcome.for_item(given))
    copied = Batch._checked(as_list, Outcome.for_item(as_list))
    assert same is not None
    assert copied is not None
    assert same[0] is given
    assert copied[0] is not as_list
    assert copied == same == (given, None)
    assert type(copied[0]) is Item
