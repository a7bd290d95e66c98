"""Stopping a batch or a release part-way, in fake time: every item accounted once, no IP's fate guessed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eni_async.dialects import UNASSIGN
from eni_async.errors import TaskTimeoutError
from eni_async.journal import SqliteJournal
from eni_async.outcomes import Item, Outcome, check_against_truth
from eni_async.policy import PollPolicy
from eni_async.progress import Summary
from eni_async.settings import Settings
from eni_async.simulator import FaultProfile, FaultRates
from eni_async.testing import drill_state
from tests.batchhelpers import World, world

SUBMIT = "UnassignPrivateIpAddresses"


def submits(w: World) -> int:
    return int(w.sim.stats()["requests"].get(SUBMIT, 0))


async def until(w: World, predicate: Any, turns: int = 2000) -> None:
    """Let the loop run until ``predicate()`` holds (fake time moves while everything waits)."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def settle_tasks(w: World, seconds: float) -> None:
    """Let the simulator's running tasks end (fake time), so the ground truth is final."""
    await w.clock.sleep(seconds)


def judge(w: World, outcomes: list[Outcome]) -> list[str]:
    present = w.present()
    return [p for o in outcomes for p in check_against_truth(o.to_json(), present)]


def assert_accounted(outcomes: list[Outcome], pulled: int) -> None:
    """Each pulled item exactly once, and each IP of each in exactly one of the four lists."""
    assert len(outcomes) == pulled
    assert len({o.eni_id for o in outcomes}) == pulled
    for o in outcomes:
        lists = [*o.released, *o.not_released, *o.unknown, *o.absent]
        assert sorted(lists) == sorted(o.ips), o.to_json()


async def test_aclose_after_workers_filled_the_queue_loses_no_item() -> None:
    """Closing the iterator while finished outcomes wait unread puts every one of them in unconfirmed."""
    async with world(enis=30, task_latency=(2.0, 0.1)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=4)
        iterator = aiter(batch)
        first = await anext(iterator)
        # The consumer pauses: workers finish more items, fill the queue and block on it.
        await until(w, lambda: batch.stats.done >= 9)
        await iterator.aclose()  # type: ignore[attr-defined]
        after = submits(w)
        await settle_tasks(w, 60)
        assert submits(w) == after, "nothing submitted once the iteration was closed"
        outcomes = [first, *batch.unconfirmed]
        assert_accounted(outcomes, batch.stats.pulled)
        assert sum(o.status == "succeeded" for o in batch.unconfirmed) >= 4, "unread finished outcomes kept"
        assert judge(w, outcomes) == []
        touched = {e["eni_id"] for e in w.sim.ground_truth()["enis"] if len(e["secondary_ips"]) < 3}
        assert touched <= {o.eni_id for o in outcomes}, "every ENI changed on the server has an outcome"


async def test_break_accounts_every_pulled_item() -> None:
    """Leaving ``async for`` with break stops the batch; yielded plus unconfirmed is every pulled item."""
    async with world(enis=30, task_latency=(2.0, 0.5)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=5)
        got: list[Outcome] = []
        async for outcome in batch:
            got.append(outcome)
            if len(got) == 3:
                break
        await until(w, lambda: len(got) + len(batch.unconfirmed) == batch.stats.pulled)
        after = submits(w)
        await settle_tasks(w, 60)
        assert submits(w) == after
        assert_accounted([*got, *batch.unconfirmed], batch.stats.pulled)
        assert judge(w, [*got, *batch.unconfirmed]) == []
        touched = {e["eni_id"] for e in w.sim.ground_truth()["enis"] if len(e["secondary_ips"]) < 3}
        assert touched <= {o.eni_id for o in [*got, *batch.unconfirmed]}


async def test_cancelled_in_flight_ips_are_unknown_and_were_released() -> None:
    """Cancelled while tasks run, the submitted IPs are unknown (never not_released), and in truth they go."""
    async with world(enis=20, task_latency=(30.0, 0.1)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=6)

        async def consume() -> None:
            async for _ in batch:
                pass

        consumer = asyncio.create_task(consume())
        await until(w, lambda: submits(w) >= 6)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        in_flight = [o for o in batch.unconfirmed if o.task_ids]
        assert len(in_flight) == 6
        for o in in_flight:
            assert (o.status, o.error and o.error["code"]) == ("failed", "Interrupted")
            assert sorted(o.unknown) == sorted(o.ips)
            assert o.not_released == []
            assert any(o.task_ids[0] in d for d in o.decisions)
        await settle_tasks(w, 120)
        gone = {ip for o in in_flight for ip in o.ips} - {ip for ips in w.present().values() for ip in ips}
        assert gone == {ip for o in in_flight for ip in o.ips}, "calling them not_released would have lied"
        assert_accounted(batch.unconfirmed, batch.stats.pulled)


async def test_stop_with_grace_lets_tasks_in_flight_finish() -> None:
    """stop(grace) submits nothing more, yields items whose tasks end within the grace, and ends normally."""
    async with world(enis=20, task_latency=(3.0, 0.1)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=5)
        got: list[Outcome] = []
        async for outcome in batch:
            got.append(outcome)
            if len(got) == 1:
                batch.stop(grace=30.0)
                pulled_at_stop = batch.stats.pulled
        assert batch.stats.pulled == pulled_at_stop < 20
        assert submits(w) == sum(len(o.task_ids) for o in [*got, *batch.unconfirmed]), "no submit unaccounted"
        assert all(o.status == "succeeded" for o in got)
        assert [o for o in batch.unconfirmed if o.task_ids] == []
        assert_accounted([*got, *batch.unconfirmed], batch.stats.pulled)
        assert judge(w, [*got, *batch.unconfirmed]) == []


async def test_grace_expiring_reports_unknown_and_journals_nothing_as_finished(tmp_path: Path) -> None:
    """When the grace ends first, in-flight items are unknown, the journal keeps their tasks, and resume
    then finds them released."""
    async with world(enis=10, task_latency=(40.0, 0.1)) as w:
        journal = SqliteJournal(tmp_path / "j.sqlite")
        items = w.items()
        batch = w.client.unassign_many(items, concurrency=4, journal=journal)
        got: list[Outcome] = []

        async def stop_soon() -> None:
            await until(w, lambda: submits(w) >= 4)
            batch.stop(grace=1.0)

        stopper = asyncio.create_task(stop_soon())
        got = [o async for o in batch]
        await stopper
        assert got == []
        assert [sorted(o.unknown) for o in batch.unconfirmed] == [sorted(o.ips) for o in batch.unconfirmed]
        assert (await journal.counts())["finished"] == 0
        assert (await journal.counts())["submitted"] == 4
        resumed = [
            o async for o in w.client.unassign_many(journal.unfinished(), concurrency=4, journal=journal)
        ]
        assert {o.eni_id for o in resumed} == {o.eni_id for o in batch.unconfirmed}
        assert all(o.status == "succeeded" and sorted(o.released) == sorted(o.ips) for o in resumed)
        assert judge(w, resumed) == []
        await journal.close()


async def test_aclose_before_iterating_and_twice_is_harmless() -> None:
    """aclose on a batch never iterated, or closed twice, does nothing and reports nothing."""
    async with world(enis=2) as w:
        batch = w.client.unassign_many(w.items())
        await batch.aclose()
        await batch.aclose()
        assert batch.unconfirmed == []
        assert submits(w) == 0


async def test_aclosing_stops_at_a_known_point() -> None:
    """contextlib.aclosing around the batch closes it on leaving the block, with nothing left running."""
    async with world(enis=12, task_latency=(5.0, 0.1)) as w:
        batch = w.client.unassign_many(w.items(), concurrency=3)
        async with contextlib.aclosing(batch) as closing:
            async for _ in closing:
                break
        assert batch.stats.in_flight == 0
        assert_accounted([*batch.unconfirmed], batch.stats.pulled - 1)


async def test_unassign_cancelled_after_submitting_tells_the_task_ids() -> None:
    """Cancelling unassign re-raises CancelledError; the caller's list and the error's note name the task."""
    async with world(enis=1, task_latency=(30.0, 0.1)) as w:
        (item,) = w.items()
        submitted: list[str] = []
        call = asyncio.create_task(w.client.unassign(item.vpc_id, item.eni_id, item.ips, submitted=submitted))
        await until(w, lambda: bool(submitted))
        call.cancel()
        with pytest.raises(asyncio.CancelledError) as caught:
            await call
        assert len(submitted) == 1
        assert any(submitted[0] in note for note in getattr(caught.value, "__notes__", []))


async def test_unassign_timeout_carries_every_task_id() -> None:
    """A task still running at the deadline raises TaskTimeoutError whose result lists every task id."""
    ips_per_eni = 14  # two chunks: the first ends, the second outlives the deadline
    async with world(enis=1, ips_per_eni=ips_per_eni, task_latency=(5.0, 0.0)) as w:
        (item,) = w.items()
        with pytest.raises(TaskTimeoutError) as caught:
            await w.client.unassign(item.vpc_id, item.eni_id, item.ips, timeout=2.0)
        result = caught.value.result
        assert len(result.task_ids) >= 1
        assert caught.value.task_id in result.task_ids


async def _items_with_an_absent_ip(w: World) -> tuple[list[Item], str, str]:
    truth = {e["eni_id"]: e for e in w.sim.ground_truth()["enis"]}
    eni_a, eni_b = sorted(truth)[:2]
    a, b = truth[eni_a], truth[eni_b]
    stray = b["secondary_ips"][0]  # on another ENI
    return (
        [
            Item(a["vpc_id"], eni_a, (a["secondary_ips"][0], stray)),
            Item(a["vpc_id"], eni_a, ("10.200.0.9",)),
        ],
        stray,
        a["secondary_ips"][0],
    )


@pytest.mark.parametrize("preflight", [False, True])
@pytest.mark.parametrize("journalled", [False, True])
@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_an_ip_not_on_the_eni_is_absent_on_every_path(
    tmp_path: Path, preflight: bool, journalled: bool, dialect: str
) -> None:
    """An IP not on the ENI is absent (never released or not_released) with or without preflight or a
    journal, on both dialects; an item of only such IPs succeeded (D24: nothing was there to release)."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(enis=3, ips_per_eni=2, settings=settings) as w:
        items, stray, real = await _items_with_an_absent_ip(w)
        journal = SqliteJournal(tmp_path / "j.sqlite") if journalled else None
        source: Any = items
        if journal is not None:
            await journal.load(items)
            source = journal.unfinished()
        outcomes = [
            o
            async for o in w.client.unassign_many(source, concurrency=1, preflight=preflight, journal=journal)
        ]
        if journal is not None:
            await journal.close()
        assert judge(w, outcomes) == []
    first, second = sorted(outcomes, key=lambda o: len(o.ips), reverse=True)
    assert (first.status, first.released, first.absent) == ("succeeded", [real], [stray])
    assert (second.status, second.absent, second.task_ids, second.error) == (
        "succeeded",
        ["10.200.0.9"],
        [],
        None,
    )


async def test_preflight_with_a_journal_refuses_the_primary_without_a_request(tmp_path: Path) -> None:
    """--preflight works with a journal: the primary IP is refused before any submit."""
    async with world(enis=1, ips_per_eni=1) as w:
        eni = w.sim.ground_truth()["enis"][0]
        journal = SqliteJournal(tmp_path / "j.sqlite")
        await journal.load([Item(eni["vpc_id"], eni["eni_id"], (eni["primary_ip"],))])
        (outcome,) = [
            o async for o in w.client.unassign_many(journal.unfinished(), preflight=True, journal=journal)
        ]
        await journal.close()
        assert submits(w) == 0
    assert outcome.not_released == [eni["primary_ip"]]
    assert outcome.error is not None
    assert outcome.error["code"] == "InvalidPrivateip.IsPrimary"


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_a_wrong_vpc_is_refused_on_both_dialects(tmp_path: Path, dialect: str) -> None:
    """A vpc_id that is not the ENI's is refused on API 3.0 as on API 2.0, and nothing is released."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    state = tmp_path / "state.json"
    state.write_text(json.dumps(drill_state(2, seed=1, per_vpc=1)))
    async with world(settings=settings, state_file=state) as w:
        enis = w.sim.ground_truth()["enis"]
        other = next(e["vpc_id"] for e in enis if e["vpc_id"] != enis[0]["vpc_id"])
        item = Item(other, enis[0]["eni_id"], tuple(enis[0]["secondary_ips"]))
        (outcome,) = [o async for o in w.client.unassign_many([item])]
        assert all(e["secondary_ips"] for e in w.sim.ground_truth()["enis"])
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert outcome.error["code"] == "InvalidNetworkInterface.NotFound"
    assert sorted(outcome.not_released) == sorted(item.ips)


def test_summary_rows_add_up_to_the_ips_asked_for() -> None:
    """The summary counts released, not released, unknown and absent IPs, adding up to the IPs asked for."""
    summary = Summary()
    a = Outcome("vpc-1", "eni-1", ("10.0.0.1", "10.0.0.2", "10.0.0.3"), status="failed")
    a.released, a.unknown, a.absent = ["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3"]
    b = Outcome("vpc-1", "eni-2", ("10.0.0.4", "10.0.0.5"), status="not_attempted")
    b.not_released = ["10.0.0.4", "10.0.0.5"]
    for o in (a, b):
        summary.add(o)
    assert (summary.released, summary.not_released, summary.unknown, summary.absent) == (1, 2, 1, 1)
    assert summary.asked == 5
    rows = {line[:16].strip(): line[16:].strip() for line in summary.render(1.0).splitlines()}
    assert (rows["IPs asked for"], rows["unknown"], rows["absent"], rows["not released"]) == (
        "5",
        "1",
        "1",
        "2",
    )


def test_check_against_truth_judges_absent_and_duplicates() -> None:
    """An absent IP still assigned, or an IP in two lists, is a disagreement; unknown claims nothing."""
    outcome = Outcome("vpc-1", "eni-1", ("10.0.0.1", "10.0.0.2", "10.0.0.3"), status="failed")
    outcome.absent, outcome.unknown, outcome.released = ["10.0.0.1"], ["10.0.0.2"], ["10.0.0.3", "10.0.0.2"]
    problems = check_against_truth(outcome.to_json(), {"eni-1": {"10.0.0.1", "10.0.0.2"}})
    assert any("absent but assigned" in p for p in problems)
    assert any("10.0.0.2 listed under both released and unknown" in p for p in problems)
    assert any("10.0.0.2 reported released" in p for p in problems)
    twice = replace(outcome, absent=[], unknown=[], released=["10.0.0.3", "10.0.0.3"])
    assert check_against_truth(twice.to_json(), {"eni-1": set()}) == [
        "eni-1: 10.0.0.3 listed twice under released"
    ]
    assert (
        check_against_truth(replace(outcome, released=["10.0.0.3"]).to_json(), {"eni-1": {"10.0.0.2"}}) == []
    )


def test_interrupt_splits_sent_from_never_sent_ips() -> None:
    """An interrupted outcome lists IPs of a started submit as unknown and IPs never sent as not released."""
    outcome = Outcome("vpc-1", "eni-1", ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    outcome.released = ["10.0.0.1"]
    outcome.sent = {"10.0.0.1", "10.0.0.2"}
    outcome.task_ids = ["7"]
    outcome.interrupt("stopped")
    assert (outcome.status, outcome.unknown, outcome.not_released) == ("failed", ["10.0.0.2"], ["10.0.0.3"])
    assert outcome.error is not None
    assert outcome.error["code"] == "Interrupted"
    untouched = Outcome("vpc-1", "eni-2", ("10.0.0.4",)).interrupt("stopped")
    assert (untouched.status, untouched.not_released, untouched.unknown) == (
        "not_attempted",
        ["10.0.0.4"],
        [],
    )


def test_signals_reach_stoppers_first_gracefully_then_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """The first signal asks stoppers to stop with a grace, the second at once; the exit code is 128+signal."""
    import signal

    from eni_async.terminal import Interruption

    state = Interruption()
    calls: list[bool] = []
    unregister = state.register(calls.append)
    state.signalled(signal.SIGTERM)
    state.signalled(signal.SIGINT)
    unregister()
    assert calls == [False, True]
    assert state.exit_code == 143
    late: list[bool] = []
    state.register(late.append)
    assert late == [True], "a stopper registered after the signals is told at once"
    assert "SIGTERM" in capsys.readouterr().err


async def test_serve_and_simulate_share_the_one_signal_machine() -> None:
    """``signals_for_command`` registers with the running command's Signals (a signal is then expected, exit
    code kept); outside a command it installs its own for the block and puts the handlers back after."""
    import signal

    from eni_async.terminal import _INTERRUPTION, Signals, signals_for_command

    running = Signals()
    token = _INTERRUPTION.set(running)
    try:
        with signals_for_command(first_message="") as (signals, stop):
            assert signals is running
            hurried: list[bool] = []
            stop.hurry = lambda: hurried.append(True)
            running.signalled(signal.SIGTERM)
            assert stop.requested.is_set()
            running.signalled(signal.SIGTERM)
            assert hurried == [True]
    finally:
        _INTERRUPTION.reset(token)
    assert running.exit_code is None, "a stop the command asked for is not an interruption"
    before = signal.getsignal(signal.SIGTERM)
    with signals_for_command(first_message="") as (own, _):
        assert own is not running
        assert asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, own.signalled, signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("grace", [-1.0, float("nan"), float("inf")])
def test_grace_must_be_a_finite_number_of_seconds(grace: float) -> None:
    """A negative or non-finite grace is refused, naming the setting."""
    from eni_async.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        Settings(grace=grace)
    assert caught.value.field == "grace"


async def test_stop_while_waiting_out_the_mutex_submits_nothing_more() -> None:
    """An item waiting for another task's mutex makes no further try once stopped, and is not_attempted."""
    async with world(enis=1, ips_per_eni=3, task_latency=(60.0, 0.0)) as w:
        (item,) = w.items()
        await w.client.submit_unassign(item.vpc_id, item.eni_id, item.ips[:1])  # someone else's task
        batch = w.client.unassign_many([Item(item.vpc_id, item.eni_id, item.ips[1:])])
        got: list[Outcome] = []

        async def stop_when_locked_out() -> None:
            await until(w, lambda: submits(w) >= 3)  # ours, then the item's first try and one retry
            batch.stop(grace=1000.0)

        stopper = asyncio.create_task(stop_when_locked_out())
        got = [o async for o in batch]
        await stopper
        at_stop = submits(w)
        await settle_tasks(w, 120)
        assert submits(w) == at_stop
    assert got == []
    (outcome,) = batch.unconfirmed
    assert outcome.status == "not_attempted"
    assert sorted(outcome.not_released) == sorted(item.ips[1:])
    assert outcome.unknown == []


def test_main_leaves_signal_handlers_as_it_found_them() -> None:
    """main installs its SIGINT/SIGTERM handlers for the command only and puts the previous ones back."""
    import signal

    from eni_async.cli import main

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    found = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when the suite started so
    saved = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["status", "/nonexistent/journal"]) == 2
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is found
    finally:
        signal.signal(signal.SIGTERM, saved)


async def test_a_lost_answer_never_makes_a_stray_ip_released() -> None:
    """On API 2.0 without a describe first, a submit whose answer is lost never reports an IP that was not
    on the ENI as released: gone but never seen there, its fate is unknown, while the real IP is released."""
    lost = FaultProfile(name="lost", actions={UNASSIGN: FaultRates(drop_after=1.0)})
    async with world(enis=3, ips_per_eni=2, faults=lost, task_latency=(0.0, 0.0)) as w:
        items, stray, real = await _items_with_an_absent_ip(w)
        outcomes = [o async for o in w.client.unassign_many(items[:1], concurrency=1)]
        assert judge(w, outcomes) == []
    (outcome,) = outcomes
    assert stray not in outcome.released
    assert (outcome.released, outcome.unknown, outcome.status) == ([real], [stray], "failed")
    assert outcome.error is not None
    assert any("never seen on the ENI" in d for d in outcome.decisions)


async def test_a_lost_answer_after_a_describe_counts_ips_seen_there_as_released() -> None:
    """With a describe before the first submit (API 3.0), an IP seen on the ENI and gone after a lost answer
    is released even when a task of ours released only part of the submit."""
    lost = FaultProfile(name="lost", actions={UNASSIGN: FaultRates(drop_after=1.0, task_partial=1.0)})
    settings = Settings(dialect="v3", poll=PollPolicy(timeout=300.0))
    async with world(enis=1, ips_per_eni=3, faults=lost, settings=settings, task_latency=(0.0, 0.0)) as w:
        (item,) = w.items()
        (outcome,) = [o async for o in w.client.unassign_many([item])]
        assert judge(w, [outcome]) == []
        still = w.present()[item.eni_id]
    gone = [ip for ip in item.ips if ip not in still]
    assert gone, "a partial task released something"
    assert sorted(outcome.released) == sorted(gone) == sorted(item.ips)
    assert (outcome.unknown, outcome.status) == ([], "succeeded")


async def test_a_chunk_settled_in_the_last_round_is_not_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the last allowed round settles every IP of a chunk (all gone after our earlier call), the item
    succeeds: it is not failed as having had too many ambiguous rounds."""
    monkeypatch.setattr("eni_async.release.MAX_ROUNDS", 2)
    lost = FaultProfile(name="lost", actions={UNASSIGN: FaultRates(drop_after=1.0)})
    async with world(enis=1, ips_per_eni=2, faults=lost, task_latency=(5.0, 0.0)) as w:
        (item,) = w.items()
        watcher = w.client.releaser.watcher
        describe = watcher.describe
        looks = 0

        async def late_second_look(eni_id: str) -> Any:  # the task ends between the two rounds' looks
            nonlocal looks
            looks += 1
            if looks == 2:
                await w.clock.sleep(10.0)
            return await describe(eni_id)

        monkeypatch.setattr(watcher, "describe", late_second_look)
        (outcome,) = [o async for o in w.client.unassign_many([item])]
        assert judge(w, [outcome]) == []
        assert w.present()[item.eni_id].isdisjoint(item.ips)
    assert outcome.attempts == 2
    assert sorted(outcome.released) == sorted(item.ips)
    assert (outcome.status, outcome.error) == ("succeeded", None)


def tasks(w: World) -> dict[str, str]:
    """The simulator's tasks (ground truth): id -> status."""
    return {t["task_id"]: t["status"] for t in w.sim.ground_truth()["tasks"]}


@pytest.mark.parametrize("second", ["in doubt", "running"])
async def test_a_task_left_unseen_is_polled_on_resume_not_resubmitted(tmp_path: Path, second: str) -> None:
    """One ENI of twelve IPs is two chunks. The first chunk's task is held past its watch (its IPs unknown,
    progress journalled), then ends; the batch stops while the second chunk's submit is in doubt (the task
    made, its answer not read) or its task is held while watched. The journal still names every task the
    simulator made (or its chunk in doubt); once the simulator ends them, resume polls (nothing submitted
    again) and reports what the simulator's ground truth says."""
    settings = Settings(poll=PollPolicy(first=0.5, maximum=2.0, timeout=20.0))
    async with world(enis=1, ips_per_eni=12, settings=settings) as w:
        w.sim.hold_tasks()
        journal = SqliteJournal(tmp_path / "j.sqlite")
        (item,) = w.items()
        assert len(item.ips) == 12
        batch = w.client.unassign_many([item], concurrency=1, journal=journal)

        async def journalled_tasks() -> int:
            found = await journal.item(1)
            return len(found[1]["task_ids"]) if found is not None and found[1] else 0

        async def stop_at_the_second_chunk() -> None:
            await until(w, lambda: submits(w) >= 2, turns=20000)  # the second chunk meets the ENI's mutex
            (first,) = w.sim.finish_tasks()  # the first task ends, after its watch gave up on it
            await until(w, lambda: len(tasks(w)) == 2, turns=20000)
            for _ in range(20000 if second == "running" else 0):
                if await journalled_tasks() == 2:
                    break
                await asyncio.sleep(0)
            batch.stop()
            assert tasks(w)[first] == "SUCCESS"

        stopper = asyncio.create_task(stop_at_the_second_chunk())
        got = [o async for o in batch]
        await stopper
        assert got == []
        sent = submits(w)
        made = tasks(w)
        assert sorted(made.values()) == ["RUNNING", "SUCCESS"]
        (resumed,) = [r async for r in journal.unfinished()]
        polled = {t for t, _, _ in resumed.plan.tasks}
        if second == "running":
            assert polled == set(made), "a task not seen ending was lost"
        else:
            assert polled <= set(made)
            assert polled == set(made) or resumed.plan.in_doubt == item.ips[10:]
            assert polled & {t for t, s in made.items() if s == "SUCCESS"}, "a task not seen ending was lost"
        w.sim.hold_tasks(False)
        w.sim.finish_tasks()
        outcomes = [o async for o in w.client.unassign_many(journal.unfinished(), journal=journal)]
        await journal.close()
        assert submits(w) == sent, "resume resubmitted IPs whose task was never seen ending"
        assert len(tasks(w)) == 2
        (outcome,) = outcomes
        assert (outcome.status, sorted(outcome.released)) == ("succeeded", sorted(item.ips))
        assert judge(w, outcomes) == []
        assert w.present()[item.eni_id] == {w.sim.ground_truth()["enis"][0]["primary_ip"]}


async def test_a_task_polled_again_on_resume_adds_only_the_fates_not_yet_seen(tmp_path: Path) -> None:
    """A task whose watch saw one IP gone and left two unknown stays to be polled; resume polls it for the
    two (nothing submitted again), so no IP is listed twice and the outcome agrees with the simulator."""
    async with world(enis=1, ips_per_eni=3) as w:
        (item,) = w.items()
        await w.client.unassign(item.vpc_id, item.eni_id, list(item.ips))  # the task, seen by nobody
        ((task, _),) = tasks(w).items()
        journal = SqliteJournal(tmp_path / "j.sqlite")
        await journal.load([item])
        outcome = Outcome(item.vpc_id, item.eni_id, item.ips)
        outcome.sent.update(item.ips)
        await journal.submitting(1, item.ips, outcome)
        outcome.task_ids.append(task)
        await journal.submitted(1, task, None, item.ips, outcome)
        outcome.released.append(item.ips[0])
        outcome.unknown.extend(item.ips[1:])
        await journal.progressed(1, outcome)  # the watch gave up on the task: it is still to be polled
        sent = submits(w)
        outcomes = [o async for o in w.client.unassign_many(journal.unfinished(), journal=journal)]
        await journal.close()
    (done,) = outcomes
    assert submits(w) == sent
    assert sorted([*done.released, *done.not_released, *done.unknown, *done.absent]) == sorted(item.ips)
    assert (done.status, sorted(done.released)) == ("succeeded", sorted(item.ips))
    assert judge(w, outcomes) == []
