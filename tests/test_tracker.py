"""The tracker's schedule in fake time, against a fake client whose ENIs and tasks the tests set by hand."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from eni_async.calls import Gate
from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE, TASK_QUERY, Capabilities, get_dialect
from eni_async.errors import PermissionDeniedError, TaskNotFoundError, TaskTimeoutError
from eni_async.models import EniInfo, Submitted, TaskState, TaskStatus
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.poller import LatencyTracker
from eni_async.settings import RateLimits, Settings
from eni_async.throttle import Budgets
from eni_async.tracker import Tracker

VPC = "vpc-aaaaaaaa"


@dataclass
class FakeEni:
    """An ENI of the fake world: its IPs and each one's state."""

    vpc_id: str
    ips: dict[str, str] = field(default_factory=dict)  # ip -> State


class FakeCalls:
    """A client for the tracker: describes and task queries answered from a hand-set world, all logged."""

    def __init__(self, clock: FakeClock, *, dialect: str = "v3", **settings: object) -> None:
        self.clock = clock
        self.settings = Settings(dialect=dialect, poll=PollPolicy(timeout=60.0), **settings)  # type: ignore[arg-type]
        self.budgets = Budgets(self.settings.rate_limits.by_action(), clock)
        self.latencies = LatencyTracker()
        self.dialect = get_dialect(dialect)
        self.enis: dict[str, FakeEni] = {}
        self.tasks: dict[str, TaskState] = {}
        self.log: list[tuple[float, str, tuple[str, ...]]] = []
        self.seen: list[tuple[str, str]] = []
        self.denied: set[str] = set()

    def add(self, eni: str, ips: Iterable[str], *, vpc: str = VPC, state: str = "DELETING") -> None:
        self.enis[eni] = FakeEni(vpc, dict.fromkeys(ips, state))

    def info(self, eni: str) -> EniInfo:
        e = self.enis[eni]
        states = e.ips if self.dialect.lists_ip_state else {}
        return EniInfo(e.vpc_id, eni, "10.9.9.9", tuple(e.ips), ip_states=dict(states))

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        assert len(eni_ids) <= self.dialect.describe_ids_per_call
        await self.budgets[DESCRIBE].acquire()
        self.log.append((self.clock.monotonic(), "ids", tuple(eni_ids)))
        if self.denied & set(eni_ids):
            raise PermissionDeniedError("UnauthorizedOperation", "not allowed on this resource")
        return {eni: self.info(eni) for eni in eni_ids if eni in self.enis}

    async def describe_vpc(self, vpc_id: str, *, offset: int, limit: int) -> tuple[list[EniInfo], int]:
        await self.budgets[DESCRIBE].acquire()
        self.log.append((self.clock.monotonic(), "vpc", (vpc_id, str(offset))))
        enis = [eni for eni, e in self.enis.items() if e.vpc_id == vpc_id]
        return [self.info(eni) for eni in enis[offset : offset + limit]], len(enis)

    async def task_state(self, task_id: str) -> TaskState:
        await self.budgets[TASK_QUERY].acquire()
        self.log.append((self.clock.monotonic(), "query", (task_id,)))
        state = self.tasks.get(task_id)
        if state is None:
            raise TaskNotFoundError("ResourceNotFound", f"no task {task_id}")
        return state

    @property
    def capabilities(self) -> Capabilities:
        return self.dialect.capabilities

    @property
    def poll(self) -> PollPolicy:
        return self.settings.poll

    @property
    def retry(self) -> RetryPolicy:
        return self.settings.retry

    async def submit(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Submitted:
        raise AssertionError("the tracker never submits")

    async def submit_when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        raise AssertionError("the tracker never submits")

    def tracker(self) -> Tracker:
        """A tracker over this fake, confirming as its settings say."""
        return Tracker(self, confirm=self.settings.confirm)

    def task_seen(self, task_id: str, status: str, seen_at: float | None) -> None:
        self.seen.append((task_id, status))

    def sent_at(self, task_id: str) -> float | None:
        return None

    def calls(self, kind: str) -> list[tuple[float, str, tuple[str, ...]]]:
        return [entry for entry in self.log if entry[1] == kind]

    def end(self, task_id: str, status: TaskStatus, *, output: str | None = None) -> None:
        self.tasks[task_id] = TaskState(task_id, status, output=output)

    def later(self, seconds: float, change: Callable[[], object]) -> None:
        async def run() -> None:
            await self.clock.sleep(seconds)
            change()

        self._later = asyncio.get_running_loop().create_task(run())


def clear_all(calls: FakeCalls) -> None:
    for eni in calls.enis.values():
        eni.ips.clear()


def release(calls: FakeCalls, eni: str, *ips: str) -> None:
    for ip in ips:
        calls.enis[eni].ips.pop(ip)


async def test_ips_gone_from_the_eni_are_released_by_eni_without_a_task_query() -> None:
    """API 3.0: IPs DELETING while the task runs, then absent: released, confirmed by the ENI, no task query."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"])
    calls.tasks["t1"] = TaskState("t1", TaskStatus.RUNNING)
    calls.later(2.5, lambda: release(calls, "eni-1", "10.0.0.2", "10.0.0.3"))
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3"])
    assert fate.released == ("10.0.0.2", "10.0.0.3")
    assert dict(fate.confirmed_by) == {"10.0.0.2": "eni", "10.0.0.3": "eni"}
    assert calls.calls("query") == []
    assert len(calls.calls("ids")) >= 2, "looked while DELETING, then saw them gone"
    assert calls.seen == [("t1", "SUCCESS")]


async def test_enis_are_packed_a_hundred_to_a_call() -> None:
    """250 tasks due together are looked at in three describe calls, not 250."""
    calls = FakeCalls(FakeClock())
    tracker = calls.tracker()
    for i in range(250):
        calls.add(f"eni-{i}", [f"10.0.{i // 200}.{i % 200 + 2}"], state="DELETING")
    calls.later(0.5, lambda: clear_all(calls))
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
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
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
        release(calls, "eni-1", "10.0.0.3")
        calls.enis["eni-1"].ips.update({"10.0.0.2": "AVAILABLE", "10.0.0.4": "AVAILABLE"})
        calls.end("t1", TaskStatus.FAILED, output="partly")

    calls.later(1.5, part_fail)
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    assert fate.released == ("10.0.0.3",)
    assert fate.not_released == ("10.0.0.2", "10.0.0.4")
    assert set(fate.confirmed_by.values()) == {"eni"}


async def test_a_stale_view_is_not_taken_for_a_failure() -> None:
    """An IP listed AVAILABLE while the task still reads RUNNING stays pending; it is released when it goes."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], state="AVAILABLE")
    calls.end("t1", TaskStatus.RUNNING)
    calls.later(3.0, lambda: release(calls, "eni-1", "10.0.0.2"))
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert fate.not_released == ()


async def test_ip_moved_to_another_eni_was_released_from_this_one() -> None:
    """An IP that left its ENI (now listed on another) is released from the ENI the task named."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.add("eni-2", [], state="AVAILABLE")

    def move() -> None:
        release(calls, "eni-1", "10.0.0.2")
        calls.enis["eni-2"].ips["10.0.0.2"] = "AVAILABLE"

    calls.later(1.2, move)
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
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
    fate = await calls.tracker().track(VPC, "eni-gone", "t1", ["10.0.0.2"])
    assert (fate.released, fate.unknown) == (released, unknown)
    assert fate.confirmed_by == dict.fromkeys(released, "task")
    assert len(calls.calls("query")) == 1


async def test_an_eni_in_another_vpc_counts_as_not_found() -> None:
    """An ENI described in another VPC than the task's is not the task's ENI: its task decides."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"], vpc="vpc-bbbbbbbb")
    calls.end("t1", TaskStatus.SUCCESS)
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.confirmed_by == {"10.0.0.2": "task"}


async def test_ips_still_deleting_at_the_deadline_are_unknown() -> None:
    """Past its deadline, a task whose IPs are still DELETING leaves them unknown, with a timeout error."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"], timeout=20.0)
    assert fate.unknown == ("10.0.0.2",)
    assert isinstance(fate.error, TaskTimeoutError)
    assert calls.calls("query") == [], "DELETING is an answer: no task query needed to know it runs"
    assert calls.clock.monotonic() == pytest.approx(20.0, abs=0.01)


async def test_v2_listed_past_the_expected_latency_asks_the_task() -> None:
    """API 2.0: IPs listed past the expected latency cost one task query; FAILED then a look settles them."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"], state="")
    calls.end("t1", TaskStatus.FAILED)
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2", "10.0.0.3"])
    assert fate.not_released == ("10.0.0.2", "10.0.0.3")
    (query,) = calls.calls("query")
    assert query[0] >= 2.0 * calls.settings.poll.first - 1e-9, "not before the expected latency"


async def test_v2_tasks_that_end_in_time_cost_no_task_query() -> None:
    """API 2.0: IPs gone before the expected latency are released by the ENI; no task is queried."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2"], state="")
    calls.later(1.1, lambda: release(calls, "eni-1", "10.0.0.2"))
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.released == ("10.0.0.2",)
    assert calls.calls("query") == []


async def test_v2_many_enis_of_one_vpc_are_paged_by_vpc() -> None:
    """API 2.0: 120 ENIs of one VPC due together cost three pages of 50, not 120 calls by id."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    tracker = calls.tracker()
    for i in range(120):
        calls.add(f"eni-{i}", [f"10.1.{i // 200}.{i % 200 + 2}"], state="")
    calls.later(0.5, lambda: clear_all(calls))
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
    calls.later(1.1, lambda: release(calls, "eni-7", "10.2.0.2"))
    fate = await calls.tracker().track(VPC, "eni-7", "t7", ["10.2.0.2"])
    assert fate.released == ("10.2.0.2",)
    assert calls.calls("vpc") == []


async def test_task_queries_go_by_expected_end_not_by_arrival() -> None:
    """With room for one query at a time, tasks are asked about earliest expected end first."""
    calls = FakeCalls(FakeClock(), dialect="v2", rate_limits=RateLimits(task_query=1))
    tracker = calls.tracker()
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
    calls = FakeCalls(FakeClock(), dialect="v2", rate_limits=RateLimits(describe=4))
    tracker = calls.tracker()
    for i in range(12):
        calls.add(f"eni-{i}", ["10.4.0.2"], vpc=f"vpc-{i:08d}", state="")
    calls.later(1.5, lambda: clear_all(calls))
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
    tracker = calls.tracker()
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
    tracker = calls.tracker()
    waiting = asyncio.create_task(tracker.track(VPC, "eni-1", "t1", ["10.0.0.2"]))
    await calls.clock.sleep(1.5)
    await tracker.close()
    fate = await waiting
    assert fate.unknown == ("10.0.0.2",)
    assert fate.reason is not None
    assert "closed" in fate.reason


async def test_first_looks_follow_the_observed_latency() -> None:
    """Once latencies are known, a task's first look comes at their median after submit, not ``poll.first``."""
    calls = FakeCalls(FakeClock())
    for _ in range(10):
        calls.latencies.observe(0.4)
    calls.add("eni-1", [])
    await calls.tracker().track(VPC, "eni-1", "t1", [])
    ((at, _, _),) = calls.calls("ids")
    assert at == pytest.approx(0.4)


def test_in_flight_follows_the_budgets_and_latency() -> None:
    """Releases in flight are submit rate x hold time (with headroom): a tenfold quota keeps tenfold in flight."""
    base = FakeCalls(FakeClock())
    tenfold = FakeCalls(FakeClock(), rate_limits=RateLimits(unassign=1000, task_query=200, describe=1000))
    task = FakeCalls(FakeClock(), confirm="task")
    for calls in (base, tenfold, task):
        for _ in range(10):
            calls.latencies.observe(1.0)
    small, big, polled = (c.tracker().releases_in_flight() for c in (base, tenfold, task))
    assert big == pytest.approx(10 * small, rel=0.05)
    assert polled < small / 4, "task-only confirmation is bound by 20 queries a second"


async def test_v2_a_task_still_running_when_asked_is_asked_again_later() -> None:
    """API 2.0: a task read RUNNING is asked again on the poll backoff until it ends, then settled."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2"], state="")
    calls.end("t1", TaskStatus.RUNNING)
    calls.later(6.0, lambda: calls.end("t1", TaskStatus.FAILED))
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.not_released == ("10.0.0.2",)
    asked = [at for at, _, _ in calls.calls("query")]
    assert len(asked) >= 2
    assert all(b - a >= calls.settings.poll.initial - 1e-9 for a, b in itertools.pairwise(asked))


async def test_v2_a_task_unknown_to_the_server_leaves_listed_ips_unknown_at_once() -> None:
    """API 2.0: a task the server no longer knows, its IPs still listed: unknown now, not at the deadline."""
    calls = FakeCalls(FakeClock(), dialect="v2")
    calls.add("eni-1", ["10.0.0.2", "10.0.0.3"], state="")
    calls.later(0.5, lambda: release(calls, "eni-1", "10.0.0.3"))
    fate = await calls.tracker().track(VPC, "eni-1", "t-gone", ["10.0.0.2", "10.0.0.3"])
    assert (fate.released, fate.unknown) == (("10.0.0.3",), ("10.0.0.2",))
    assert isinstance(fate.error, TaskNotFoundError)
    assert calls.clock.monotonic() < 10.0


async def test_an_eni_refused_to_describe_is_settled_by_its_task() -> None:
    """An ENI whose description is refused for good is confirmed by its task (SUCCESS: released by task)."""
    calls = FakeCalls(FakeClock())
    calls.add("eni-1", ["10.0.0.2"])
    calls.denied.add("eni-1")
    calls.end("t1", TaskStatus.SUCCESS)
    fate = await calls.tracker().track(VPC, "eni-1", "t1", ["10.0.0.2"])
    assert fate.confirmed_by == {"10.0.0.2": "task"}


async def test_one_refused_eni_does_not_fail_the_descriptions_sharing_its_call() -> None:
    """Descriptions packed into one call: one ENI refused fails that ENI's only; the others are answered."""
    calls = FakeCalls(FakeClock())
    tracker = calls.tracker()
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
    tracker = calls.tracker()
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
    await calls.tracker().track(VPC, "eni-1", "t1", [], submitted_at=0.0)
    ((at, _, _),) = calls.calls("ids")
    assert at == pytest.approx(4.5 + calls.settings.poll.first)
