"""The tracker's hard cases in fake time: unreadable tasks, stale views, failing calls, closing, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from eni_async.clock import FakeClock
from eni_async.errors import ServerError
from eni_async.models import EniInfo, TaskState, TaskStatus
from eni_async.policy import RetryPolicy
from eni_async.testing import FakeCalls
from eni_async.tracker import Tracker
from eni_async.tracker.looks import LookEngine
from eni_async.tracker.watch import Event, Phase, TransitionError
from tests.test_tracker import VPC


class LateTask(FakeCalls):
    """A world where the server does not know the task yet when first asked, and the ENI then shows DELETING."""

    async def task_state(self, task_id: str) -> TaskState:
        for eni in self.enis.values():
            for ip in eni.ips:
                eni.ips[ip] = "DELETING"
        return await super().task_state(task_id)


async def test_an_unreadable_task_never_makes_a_deleting_ip_not_released() -> None:
    """A stale AVAILABLE view, then the task unreadable: an IP since seen DELETING is not called not released."""
    calls = LateTask(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    calls.later(3.0, lambda: calls.release("eni-1", "10.0.0.2"))
    fate = await Tracker(calls).track(VPC, "eni-1", "t-unknown", ["10.0.0.2"])
    assert calls.calls("query"), "the stale view was asked about"
    assert fate.not_released == ()
    assert fate.released == ("10.0.0.2",)


async def test_an_unreadable_task_with_ips_listed_available_leaves_them_not_released() -> None:
    """API 3.0: task unknown to the server, its IP listed and not DELETING in later looks: not released."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    fate = await Tracker(calls).track(VPC, "eni-1", "t-gone", ["10.0.0.2"])
    assert (fate.released, fate.not_released, fate.unknown) == ((), ("10.0.0.2",), ())
    assert fate.confirmed_by == {"10.0.0.2": "eni"}
    assert calls.clock.monotonic() < 10.0


class Broken(FakeCalls):
    """Describes fail with an error no call should raise (a bug)."""

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        raise RuntimeError("a bug in parsing")


async def test_a_bug_in_a_look_reaches_the_awaiter_at_once() -> None:
    """A look that fails with an unexpected error makes ``track`` raise it, not wait for the deadline."""
    calls = Broken(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    with pytest.raises(RuntimeError, match="a bug in parsing"):
        await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert calls.clock.monotonic() < 10.0


class Unreachable(FakeCalls):
    """Every describe fails with a transient server error (after its retries); task queries are answered."""

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        self.log.append((self.clock.monotonic(), "ids", tuple(eni_ids)))
        raise ServerError("InternalError", "describe is down")


async def test_describes_failing_for_good_fall_back_to_the_task() -> None:
    """Describes that keep failing: the task is asked, and its SUCCESS settles the IPs before the deadline."""
    calls = Unreachable(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.end("t1", TaskStatus.SUCCESS)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert fate.confirmed_by == {"10.0.0.2": "task"}
    assert calls.clock.monotonic() < 10.0


async def test_describes_failing_and_a_failed_task_leave_ips_unknown() -> None:
    """Describes that keep failing and a FAILED task: the listed IPs' fate is never observed, so unknown."""
    calls = Unreachable(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.end("t1", TaskStatus.FAILED)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert (fate.released, fate.not_released, fate.unknown) == ((), (), ("10.0.0.2",))


async def test_cancelling_one_waiter_leaves_the_others_sharing_its_call() -> None:
    """Two tasks looked at in one call: cancelling one awaiter does not disturb the other's fate."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.add("eni-2", ["10.0.0.3"])
    tracker = Tracker(calls)
    first = asyncio.create_task(tracker.track(VPC, "eni-1", "t1", ["10.0.0.2"]))
    second = asyncio.create_task(tracker.track(VPC, "eni-2", "t2", ["10.0.0.3"]))

    def both() -> None:
        calls.release("eni-1", "10.0.0.2")
        calls.release("eni-2", "10.0.0.3")

    calls.later(2.0, both)
    await calls.clock.sleep(1.5)
    assert any(len(ids) == 2 for _, _, ids in calls.calls("ids")), "looked at together"
    first.cancel()
    fate = await second
    assert fate.released == ("10.0.0.3",)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancelling_one_description_leaves_the_others_sharing_its_call() -> None:
    """Descriptions packed into one call: a cancelled asker does not fail the others."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    calls.add("eni-2", ["10.0.0.3"], state="AVAILABLE")
    tracker = Tracker(calls)
    first = asyncio.create_task(tracker.describe("eni-1"))
    second = asyncio.create_task(tracker.describe("eni-2"))
    await asyncio.sleep(0)
    first.cancel()
    info = await second
    assert info is not None
    assert info.secondary_ips == ("10.0.0.3",)
    assert len(calls.calls("ids")) == 1


async def test_closing_fails_waiting_descriptions_with_an_error_not_a_cancellation() -> None:
    """Closing while a description is awaited: the asker gets an error it can report, not CancelledError."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    tracker = Tracker(calls)
    asking = asyncio.create_task(tracker.describe("eni-1"))
    await asyncio.sleep(0)
    await tracker.close()
    with pytest.raises(Exception, match="closed") as info:
        await asking
    assert not isinstance(info.value, asyncio.CancelledError)


class SlowDescribe(FakeCalls):
    """Descriptions show the world as it was when sent, and arrive a second later; task readings are logged."""

    def __init__(self, clock: FakeClock, *, dialect: str = "v3") -> None:
        super().__init__(clock, dialect=dialect)
        self.read_failed_at: float | None = None
        # (sent, arrived) of looks that straddled the FAILED reading
        self.late: list[tuple[float, float]] = []

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        sent = self.clock.monotonic()
        found = await super().describe_many(eni_ids)
        await self.clock.sleep(1.0)
        if self.read_failed_at is not None and sent < self.read_failed_at:
            self.late.append((sent, self.clock.monotonic()))
        return found

    async def task_state(self, task_id: str) -> TaskState:
        state = await super().task_state(task_id)
        if state.status is TaskStatus.FAILED and self.read_failed_at is None:
            self.read_failed_at = self.clock.monotonic()
        return state


async def test_a_description_sent_before_a_failed_reading_settles_nothing_as_not_released() -> None:
    """API 2.0: a look sent before the task was read FAILED (it saw an IP the task then released) decides nothing."""
    calls = SlowDescribe(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"], state="")
    calls.end("t1", TaskStatus.RUNNING)

    def part_fail() -> None:
        calls.release("eni-1", "10.0.0.2")
        calls.end("t1", TaskStatus.FAILED)

    calls.later(4.0, part_fail)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3"])
    assert calls.late, "a look was in flight across the FAILED reading"
    assert (fate.released, fate.not_released) == (("10.0.0.2",), ("10.0.0.3",))


async def test_a_bug_that_stops_the_loop_reaches_every_awaiter_and_a_later_track_restarts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop dying of a bug fails every watched task (descriptions, sent apart, are still answered); the
    next ``track`` works."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.add("eni-2", ["10.0.0.3"], state="AVAILABLE")
    tracker = Tracker(calls)
    original = LookEngine._start_looks

    def broken(self: LookEngine, now: float) -> None:
        if now >= 0.5:
            raise RuntimeError("a bug in the loop")
        original(self, now)

    monkeypatch.setattr(LookEngine, "_start_looks", broken)
    watched = asyncio.create_task(tracker.track(VPC, "eni-1", "t1", ["10.0.0.2"]))
    await calls.clock.sleep(0.6)
    asking = asyncio.create_task(tracker.describe("eni-2"))
    results = await asyncio.wait_for(asyncio.gather(watched, asking, return_exceptions=True), timeout=5.0)
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], EniInfo)
    monkeypatch.setattr(LookEngine, "_start_looks", original)
    calls.release("eni-1", "10.0.0.2")
    fate = await asyncio.wait_for(tracker.track(VPC, "eni-1", "t2", ["10.0.0.2"]), timeout=5.0)
    assert fate.released == ("10.0.0.2",)


class FailsOnce(FakeCalls):
    """The first describe call fails with a transient server error (after its retries); the rest are answered."""

    failed = False

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        if not self.failed:
            self.failed = True
            self.log.append((self.clock.monotonic(), "ids-failed", tuple(eni_ids)))
            raise ServerError("InternalError", "try again")
        return await super().describe_many(eni_ids)


async def test_one_failed_shared_look_does_not_split_its_enis_for_good() -> None:
    """A transient failure of a call shared by 50 ENIs: they are looked at together again, not one by one."""
    calls = FailsOnce(FakeClock())
    tracker = Tracker(calls)
    for i in range(50):
        calls.add(f"eni-{i}", [f"10.7.0.{i + 2}"])
    calls.later(3.0, lambda: calls.clear())
    fates = await asyncio.gather(
        *(tracker.track(VPC, f"eni-{i}", f"t{i}", list(calls.enis[f"eni-{i}"].ips)) for i in range(50))
    )
    assert all(f.released for f in fates)
    assert len(calls.calls("ids-failed")[0][2]) == 50
    assert len(calls.calls("ids")) <= 20, "looks stay packed after the failure"


async def test_an_observation_missing_from_the_table_reaches_the_awaiter_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table without the row a look needs: ``track`` raises TransitionError now, not at the deadline."""
    from eni_async.tracker import watch

    rows = {key: step for key, step in watch.TRANSITIONS.items() if key != (Phase.WATCHING, Event.DELETING)}
    monkeypatch.setattr(watch, "TRANSITIONS", rows)
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    with pytest.raises(TransitionError, match="deleting"):
        await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert calls.clock.monotonic() < 10.0


async def test_task_confirmation_pauses_between_describe_rounds_as_long_as_the_retry_policy_waits() -> None:
    """confirm = "task": a FAILED task whose ENI cannot be described is described three times, pausing
    ``retry.maximum`` then twice that, and its IPs are left unknown."""
    calls = Unreachable(FakeClock(), retry=RetryPolicy(maximum=0.5))
    calls.add("eni-1", ["10.0.0.2"])
    calls.end("t1", TaskStatus.FAILED)
    fate = await Tracker(calls, confirm="task").track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.unknown == ("10.0.0.2",)
    assert len(calls.calls("ids")) == 3
    assert calls.clock.sleeps[-2:] == [0.5, 1.0], "the last waits are the pauses between rounds"
