"""The tracker's schedule in fake time, against a fake client whose ENIs and tasks the tests set by hand."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.errors import PermissionDeniedError, TaskNotFoundError, TaskTimeoutError
from eni_async.models import EniInfo, TaskState, TaskStatus
from eni_async.policy import PollPolicy
from eni_async.testing import FakeCalls
from eni_async.tracker import Tracker
from eni_async.tracker.pacing import LookPacing
from eni_async.tracker.sizing import InFlight, InFlightPolicy

VPC = "vpc-aaaaaaaa"


async def test_ips_gone_from_the_eni_are_released_by_eni_without_a_task_query() -> None:
    """API 3.0: IPs DELETING while the task runs, then absent: released, confirmed by the ENI, no task query."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"])
    calls.tasks["t1"] = TaskState("t1", TaskStatus.RUNNING)
    calls.later(2.5, lambda: calls.release("eni-1", "10.0.0.2", "10.0.0.3"))
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3"])
    assert fate.released == ("10.0.0.2", "10.0.0.3")
    assert dict(fate.confirmed_by) == {"10.0.0.2": "eni", "10.0.0.3": "eni"}
    assert calls.calls("query") == []
    assert len(calls.calls("ids")) >= 2, "looked while DELETING, then saw them gone"
    assert calls.seen == [("t1", "SUCCESS")]


async def test_enis_are_packed_a_hundred_to_a_call() -> None:
    """250 tasks due together are looked at in three describe calls, not 250."""
    calls = FakeCalls(FakeClock())
    tracker = Tracker(calls)
    for i in range(250):
        calls.add(f"eni-{i}", [f"10.0.{i // 200}.{i % 200 + 2}"], state="DELETING")
    calls.later(0.5, lambda: calls.clear())
    fates = await asyncio.gather(
        *(tracker.track(VPC, f"eni-{i}", f"t{i}", list(calls.enis[f"eni-{i}"].ips)) for i in range(250))
    )
    assert all(f.released and not f.unknown for f in fates)
    assert [len(ids) for _, _, ids in calls.calls("ids")] == [100, 100, 50]


async def test_failed_task_leaves_listed_ips_not_released_with_its_reason() -> None:
    """API 3.0: an IP listed and AVAILABLE after submit is read from the task (FAILED, reason) and not released."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    calls.end("t1", TaskStatus.FAILED, output="subnet busy")
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert (fate.released, fate.not_released, fate.unknown) == ((), ("10.0.0.2",), ())
    assert fate.confirmed_by == {"10.0.0.2": "eni"}
    assert fate.state is not None
    assert fate.state.output == "subnet busy"
    assert len(calls.calls("query")) == 1
    query_at = calls.calls("query")[0][0]
    assert any(at >= query_at for at, _, _ in calls.calls("ids")), "settled by a look after the reading"


async def test_part_failed_task_is_reported_ip_by_ip() -> None:
    """A FAILED task that released some IPs: those gone are released, those listed are not released."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    calls.end("t1", TaskStatus.RUNNING)

    def part_fail() -> None:
        calls.release("eni-1", "10.0.0.3")
        calls.enis["eni-1"].ips.update({"10.0.0.2": "AVAILABLE", "10.0.0.4": "AVAILABLE"})
        calls.end("t1", TaskStatus.FAILED, output="partly")

    calls.later(1.5, part_fail)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert fate.released == ("10.0.0.3",)
    assert fate.not_released == ("10.0.0.2", "10.0.0.4")
    assert set(fate.confirmed_by.values()) == {"eni"}


async def test_a_stale_view_is_not_taken_for_a_failure() -> None:
    """An IP listed AVAILABLE while the task still reads RUNNING stays pending; it is released when it goes."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    calls.end("t1", TaskStatus.RUNNING)
    calls.later(3.0, lambda: calls.release("eni-1", "10.0.0.2"))
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert fate.not_released == ()


async def test_ip_moved_to_another_eni_was_released_from_this_one() -> None:
    """An IP that left its ENI (now listed on another) is released from the ENI the task named."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.add("eni-2", [], state="AVAILABLE")

    def move() -> None:
        calls.release("eni-1", "10.0.0.2")
        calls.enis["eni-2"].ips["10.0.0.2"] = "AVAILABLE"

    calls.later(1.2, move)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert fate.confirmed_by == {"10.0.0.2": "eni"}


@pytest.mark.parametrize(
    ("status", "released", "unknown"),
    [(TaskStatus.SUCCESS, ("10.0.0.2",), ()), (TaskStatus.FAILED, (), ("10.0.0.2",))],
)
async def test_an_eni_described_as_not_found_is_settled_by_its_task(
    status: TaskStatus, released: tuple[str, ...], unknown: tuple[str, ...]
) -> None:
    """An ENI that vanished: a SUCCESS task released its IPs (by task); after a FAILED one they are unknown."""
    calls = FakeCalls(FakeClock())
    calls.end("t1", status)
    fate = await Tracker(calls).track(VPC, "eni-gone", "t1", ["10.0.0.2"])
    assert (fate.released, fate.unknown) == (released, unknown)
    assert fate.confirmed_by == dict.fromkeys(released, "task")
    assert len(calls.calls("query")) == 1


async def test_an_eni_in_another_vpc_counts_as_not_found() -> None:
    """An ENI described in another VPC than the task's is not the task's ENI: its task decides."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], vpc="vpc-bbbbbbbb")
    calls.end("t1", TaskStatus.SUCCESS)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.confirmed_by == {"10.0.0.2": "task"}


async def test_ips_still_deleting_at_the_deadline_are_unknown() -> None:
    """Past its deadline, a task whose IPs are still DELETING leaves them unknown, with a timeout error."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"], timeout=20.0)
    assert fate.unknown == ("10.0.0.2",)
    assert isinstance(fate.error, TaskTimeoutError)
    assert calls.calls("query") == [], "DELETING is an answer: no task query needed to know it runs"
    assert calls.clock.monotonic() == pytest.approx(20.0, abs=0.01)


async def test_v2_listed_past_the_expected_latency_asks_the_task() -> None:
    """API 2.0: IPs listed past the expected latency cost one task query; FAILED then a look settles them."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"], state="")
    calls.end("t1", TaskStatus.FAILED)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3"])
    assert fate.not_released == ("10.0.0.2", "10.0.0.3")
    (query,) = calls.calls("query")
    assert query[0] >= 2.0 * calls.poll.first - 1e-9, "not before the expected latency"


async def test_v2_tasks_that_end_in_time_cost_no_task_query() -> None:
    """API 2.0: IPs gone before the expected latency are released by the ENI; no task is queried."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2"], state="")
    calls.later(1.1, lambda: calls.release("eni-1", "10.0.0.2"))
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert calls.calls("query") == []


async def test_v2_many_enis_of_one_vpc_are_paged_by_vpc() -> None:
    """API 2.0: 120 ENIs of one VPC due together cost three pages of 50, not 120 calls by id."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    tracker = Tracker(calls)
    for i in range(120):
        calls.add(f"eni-{i}", [f"10.1.{i // 200}.{i % 200 + 2}"], state="")
    calls.later(0.5, lambda: calls.clear())
    fates = await asyncio.gather(
        *(tracker.track(VPC, f"eni-{i}", f"t{i}", list(calls.enis[f"eni-{i}"].ips)) for i in range(120))
    )
    assert all(f.released for f in fates)
    assert calls.calls("ids") == []
    assert sorted(offset for _, _, (_, offset) in calls.calls("vpc")) == ["0", "100", "50"]


async def test_v2_a_lone_eni_is_described_by_id() -> None:
    """API 2.0: one ENI due in a large VPC costs one call by id, not the VPC's pages."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    for i in range(200):
        calls.add(f"eni-{i}", ["10.2.0.2"], state="")
    calls.later(1.1, lambda: calls.release("eni-7", "10.2.0.2"))
    fate = await Tracker(calls).track(VPC, "eni-7", "t7", ["10.2.0.2"])
    assert fate.released == ("10.2.0.2",)
    assert calls.calls("vpc") == []


async def test_task_queries_go_by_expected_end_not_by_arrival() -> None:
    """With room for one query at a time, tasks are asked about earliest expected end first."""
    calls = FakeCalls(FakeClock(), dialect="v2", rates={TASK_QUERY: 1})
    tracker = Tracker(calls)
    for i in range(4):
        calls.add(f"eni-{i}", ["10.3.0.2"], vpc=f"vpc-{i:08d}", state="")
        calls.end(f"t{i}", TaskStatus.FAILED)
    # Registered newest first: submitted at 3, 2, 1, 0 seconds before now.
    calls.clock.advance(3.0)
    waits = [
        tracker.track(f"vpc-{i:08d}", f"eni-{i}", f"t{i}", ["10.3.0.2"], submitted_at=float(i))
        for i in (3, 2, 1, 0)
    ]
    await asyncio.gather(*waits)
    assert [ids[0] for _, _, ids in calls.calls("query")] == ["t0", "t1", "t2", "t3"]


async def test_looks_share_the_describe_budget() -> None:
    """Looks by id never exceed the describe budget, however many tasks are due."""
    calls = FakeCalls(FakeClock(), dialect="v2", rates={DESCRIBE: 4})
    tracker = Tracker(calls)
    for i in range(12):
        calls.add(f"eni-{i}", ["10.4.0.2"], vpc=f"vpc-{i:08d}", state="")
    calls.later(1.5, lambda: calls.clear())
    fates = await asyncio.gather(
        *(tracker.track(f"vpc-{i:08d}", f"eni-{i}", f"t{i}", ["10.4.0.2"]) for i in range(12))
    )
    assert all(f.released for f in fates)
    times = [at for at, kind, _ in calls.log if kind != "query"]
    assert all(sum(1 for t in times if start <= t < start + 1.0) <= 4 for start in times)


async def test_cancelling_the_awaiter_drops_the_watch() -> None:
    """A cancelled ``track`` stops the tracker from looking at that task (and its loop from running)."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    tracker = Tracker(calls)
    waiting = asyncio.create_task(tracker.track(VPC, "eni-1", "t1", ["10.0.0.2"]))
    await calls.clock.sleep(2.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    looks = len(calls.log)
    await calls.clock.sleep(10.0)
    assert len(calls.log) <= looks + 1, "at most a look already on its way"


async def test_closing_leaves_watched_ips_unknown() -> None:
    """Closing the tracker ends every watched task with its pending IPs unknown, never guessed."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    tracker = Tracker(calls)
    waiting = asyncio.create_task(tracker.track(VPC, "eni-1", "t1", ["10.0.0.2"]))
    await calls.clock.sleep(1.5)
    await tracker.close()
    fate = await waiting
    assert fate.unknown == ("10.0.0.2",)
    assert fate.reason is not None
    assert "closed" in fate.reason


async def test_first_looks_follow_the_observed_latency() -> None:
    """Once latencies are known, a task's first look comes at their quantile after submit (at most one pacing
    step early, on the grid looks share), not at ``poll.first``."""
    calls = FakeCalls(FakeClock())
    for _ in range(10):
        calls.latencies.observe(0.4)
    calls.add("eni-1", [])
    tracker = Tracker(calls)
    await tracker.track(VPC, "eni-1", "t1", [])
    ((at, _, _),) = calls.calls("ids")
    assert 0.4 - tracker.pacing.min_gap < at <= 0.4 + 1e-9


def test_in_flight_follows_the_budgets_and_latency() -> None:
    """Releases in flight are submit rate x hold time (with headroom): a tenfold quota keeps tenfold in flight."""
    base = FakeCalls(FakeClock())
    tenfold = FakeCalls(FakeClock(), rates={UNASSIGN: 1000, TASK_QUERY: 200, DESCRIBE: 1000})
    task = FakeCalls(FakeClock())
    for calls in (base, tenfold, task):
        for _ in range(10):
            calls.latencies.observe(1.0)
    small, big = (Tracker(c).releases_in_flight() for c in (base, tenfold))
    polled = Tracker(task, confirm="task").releases_in_flight()
    assert big == pytest.approx(10 * small, rel=0.05)
    assert polled < small / 4, "task-only confirmation is bound by 20 queries a second"


async def test_v2_a_task_still_running_when_asked_is_asked_again_later() -> None:
    """API 2.0: a task read RUNNING is asked again on the poll backoff until it ends, then settled."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2"], state="")
    calls.end("t1", TaskStatus.RUNNING)
    calls.later(6.0, lambda: calls.end("t1", TaskStatus.FAILED))
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.not_released == ("10.0.0.2",)
    asked = [at for at, _, _ in calls.calls("query")]
    assert len(asked) >= 2
    assert all(b - a >= calls.poll.initial - 1e-9 for a, b in itertools.pairwise(asked))


async def test_v2_a_task_unknown_to_the_server_leaves_listed_ips_unknown_at_once() -> None:
    """API 2.0: a task the server no longer knows, its IPs still listed: unknown now, not at the deadline."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"], state="")
    calls.later(0.5, lambda: calls.release("eni-1", "10.0.0.3"))
    fate = await Tracker(calls).track(VPC, "eni-1", "t-gone", ["10.0.0.2", "10.0.0.3"])
    assert (fate.released, fate.unknown) == (("10.0.0.3",), ("10.0.0.2",))
    assert isinstance(fate.error, TaskNotFoundError)
    assert calls.clock.monotonic() < 10.0


async def test_an_eni_refused_to_describe_is_settled_by_its_task() -> None:
    """An ENI whose description is refused for good is confirmed by its task (SUCCESS: released by task)."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.denied.add("eni-1")
    calls.end("t1", TaskStatus.SUCCESS)
    fate = await Tracker(calls).track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.confirmed_by == {"10.0.0.2": "task"}


async def test_one_refused_eni_does_not_fail_the_descriptions_sharing_its_call() -> None:
    """Descriptions packed into one call: one ENI refused fails that ENI's only; the others are answered."""
    calls = FakeCalls(FakeClock())
    tracker = Tracker(calls)
    for i in range(5):
        calls.add(f"eni-{i}", ["10.5.0.2"], state="AVAILABLE")
    calls.denied.add("eni-3")
    results = await asyncio.gather(*(tracker.describe(f"eni-{i}") for i in range(5)), return_exceptions=True)
    assert isinstance(results[3], PermissionDeniedError)
    assert [isinstance(r, EniInfo) for r in results] == [True, True, True, False, True]
    assert len(calls.calls("ids")[0][2]) == 5, "asked together first"


async def test_descriptions_asked_together_share_one_call() -> None:
    """Up to 100 ENIs asked for within the coalescing window are described in one call."""
    calls = FakeCalls(FakeClock())
    tracker = Tracker(calls)
    for i in range(150):
        calls.add(f"eni-{i}", ["10.6.0.2"], state="AVAILABLE")
    found = await asyncio.gather(
        *(tracker.describe(f"eni-{i}") for i in range(150)), tracker.describe("eni-none")
    )
    assert found[-1] is None, "an ENI not returned does not exist"
    assert all(isinstance(info, EniInfo) for info in found[:-1])
    assert sorted(len(ids) for _, _, ids in calls.calls("ids")) == [51, 100]


async def test_latency_counts_from_the_submits_own_send_time() -> None:
    """A task's first look is timed from when its submit was sent, not from before the waits that preceded it."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", [])
    calls.clock.advance(5.0)
    calls.sent_at = lambda task_id: 4.5 if task_id == "t1" else None  # type: ignore[method-assign]
    tracker = Tracker(calls)
    await tracker.track(VPC, "eni-1", "t1", [], submitted_at=0.0)
    ((at, _, _),) = calls.calls("ids")
    assert 4.5 + calls.poll.first - tracker.pacing.min_gap < at <= 4.5 + calls.poll.first + 1e-9


def test_the_expected_latency_counts_tasks_still_running() -> None:
    """The latencies seen first are the shortest: read with the tasks still running (Kaplan-Meier), the
    95th percentile is unknown until nearly all have ended, and then close to the truth."""
    from eni_async.tracker.pacing import censored_quantile

    ended = [float(x) for x in range(1, 101)]
    assert censored_quantile(ended, [], 0.95) == 95.0
    # 8 of 600 ended, the rest running for 15 s already: nothing is known of the 95th percentile.
    assert censored_quantile([12.0 + i / 10 for i in range(8)], [15.0] * 592, 0.95) is None
    # A task running for 2 s says nothing of latencies past 2 s (it leaves the risk set there).
    assert censored_quantile(ended, [2.0] * 1000, 0.95) in (95.0, 96.0)


async def test_v2_only_the_first_tasks_are_asked_while_no_latency_is_known() -> None:
    """API 2.0, 30 tasks listed for 6 s before any ends: only the first few (the sample that would show a
    FAILED task) are asked; the rest wait for the estimate, and are seen gone by their ENI."""
    from eni_async.poller import MIN_SAMPLES

    calls = FakeCalls(FakeClock(), dialect="v2")
    for i in range(30):
        calls.add(f"eni-{i}", [f"10.0.0.{i + 2}"], state="")
        calls.end(f"t{i}", TaskStatus.RUNNING)

    def release_all() -> None:
        for i in range(30):
            calls.release(f"eni-{i}", f"10.0.0.{i + 2}")

    calls.later(6.0, release_all)
    tracker = Tracker(calls)
    fates = await asyncio.gather(
        *(tracker.track(VPC, f"eni-{i}", f"t{i}", [f"10.0.0.{i + 2}"]) for i in range(30))
    )
    assert all(f.released for f in fates)
    asked = {task for _, _, (task,) in calls.calls("query")}
    assert asked, "the first tasks listed past 2 x poll.first are asked"
    assert asked <= {f"t{i}" for i in range(MIN_SAMPLES)}


def test_in_flight_target_grows_while_no_latency_is_known() -> None:
    """Before any task is seen to end, every task sent since may still hold its ENI: the target grows with
    the time since it was first asked for, so it never holds the submits back."""
    calls = FakeCalls(FakeClock())
    tracker = Tracker(calls)
    first = tracker.releases_in_flight()
    calls.clock.advance(10.0)
    later = tracker.releases_in_flight()
    assert later >= 100 * 10.0 > first


def _cpu_bound(rates: dict[str, float]) -> tuple[FakeCalls, InFlight, list[float]]:
    """An in-flight target fed a process CPU reading the test moves (``cpu[0]``), tasks of 1 s seen."""
    calls = FakeCalls(FakeClock(), rates=rates)
    for _ in range(10):
        calls.latencies.observe(1.0)
    cpu = [0.0]
    return calls, InFlight(calls, policy=InFlightPolicy(), pacing=LookPacing(), cpu=lambda: cpu[0]), cpu


def test_where_the_cpu_binds_the_in_flight_target_follows_the_cpu_not_the_queueing() -> None:
    """Limits out of the way: while the process is saturated the target shrinks (to the minimum at most),
    with CPU to spare it grows again, never past Little's law's."""
    off = float(10**6)
    calls, in_flight, cpu = _cpu_bound({UNASSIGN: off, TASK_QUERY: off, DESCRIBE: off})
    policy = InFlightPolicy()
    little = in_flight.target(off)
    targets = []
    for _ in range(60):  # 15 s of a saturated process
        calls.clock.advance(policy.refresh)
        cpu[0] += policy.refresh
        targets.append(in_flight.target(off))
    assert little > 1000
    assert targets[0] == int(little * policy.backoff)
    assert all(b <= a for a, b in itertools.pairwise(targets))
    assert targets[-1] == policy.minimum
    grown = []
    for _ in range(30):  # a fifth of a core used
        calls.clock.advance(policy.refresh)
        cpu[0] += policy.refresh / 5
        grown.append(in_flight.target(off))
    assert grown[0] <= policy.minimum * policy.growth + 1
    assert all(b >= a for a, b in itertools.pairwise(grown))
    assert grown[-1] == little


def test_under_the_budgets_a_saturated_process_does_not_shrink_the_in_flight_target() -> None:
    """Tencent's limits bind: the count stays Little's law's however busy the process is."""
    calls, in_flight, cpu = _cpu_bound({UNASSIGN: 100, TASK_QUERY: 20, DESCRIBE: 100})
    little = in_flight.target(100)
    for _ in range(8):
        calls.clock.advance(InFlightPolicy().refresh)
        cpu[0] += InFlightPolicy().refresh
        assert in_flight.target(100) == little


async def _waves(tracker: Tracker, calls: FakeCalls, starts: list[float], size: int = 5) -> None:
    """``size`` tasks handed to the tracker at each of ``starts`` (fake seconds), their IPs already gone."""

    async def wave(k: int, start: float) -> None:
        await calls.clock.sleep(start)
        enis = [f"eni-{k * size + j}" for j in range(size)]
        fates = await asyncio.gather(*(tracker.track(VPC, eni, f"t-{eni}", ["10.0.0.2"]) for eni in enis))
        assert all(f.released == ("10.0.0.2",) for f in fates)

    for k in range(len(starts) * size):
        calls.add(f"eni-{k}", [])
    await asyncio.gather(*(wave(k, start) for k, start in enumerate(starts)))


# Tasks looked at as soon as they are accepted (the scale benchmark's settings): every track is due at once.
AT_ONCE = PollPolicy(first=0.0, adaptive=False, timeout=60.0)


async def test_a_look_that_would_not_fill_a_call_waits_for_the_call_in_flight() -> None:
    """Nagle's rule: looks due while a describe is in flight wait for it to end and then share one call,
    rather than a call of their own each round (three waves of 5 during a 20 ms call: one call of 15)."""
    calls = FakeCalls(FakeClock(), poll=AT_ONCE)
    calls.describe_delay = 0.02
    await _waves(Tracker(calls), calls, [0.0, 0.005, 0.01, 0.015])
    looks = calls.calls("ids")
    sizes = [len(ids) for _, _, ids in looks]
    assert sizes == [5, 15], sizes
    assert round(looks[1][0], 6) == 0.02, "sent the moment the call in flight ended"


async def test_a_look_waits_for_a_call_in_flight_no_longer_than_the_coalescing_window() -> None:
    """A call that takes long does not hold the looks due meanwhile: they go ``Packing.coalesce`` (50 ms)
    after the first of them was due, and with no call in flight a look never waits."""
    calls = FakeCalls(FakeClock(), poll=AT_ONCE)
    calls.describe_delay = 1.0
    await _waves(Tracker(calls), calls, [0.0, 0.01, 2.0])
    looks = calls.calls("ids")
    sizes, times = [len(ids) for _, _, ids in looks], [round(at, 6) for at, _, _ in looks]
    assert (sizes, times) == ([5, 5, 5], [0.0, 0.06, 2.0]), (sizes, times)
