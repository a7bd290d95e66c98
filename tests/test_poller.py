"""The poller asks about a task on a growing, jittered, capped schedule and gives up exactly at the deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from collections.abc import Iterable

import pytest

from eni_async.clock import FakeClock
from eni_async.errors import ProtocolError, TaskNotFoundError, TaskTimeoutError, ThrottledError
from eni_async.models import TaskState, TaskStatus
from eni_async.policy import PollPolicy
from eni_async.poller import LatencyTracker, poll_until_done

TASK_ID = "16284"
RUNNING, SUCCESS, FAILED = TaskStatus.RUNNING, TaskStatus.SUCCESS, TaskStatus.FAILED
NO_JITTER = PollPolicy(first=1.0, initial=0.5, multiplier=2.0, maximum=4.0, jitter=0.0, timeout=600.0)


class ScriptedTask:
    """A fake task query: answers from a script (the last answer repeats) and records when it was asked."""

    def __init__(self, clock: FakeClock, script: Iterable[TaskStatus | BaseException]) -> None:
        self.clock = clock
        self.script = list(script)
        self.asked_at: list[float] = []
        self.asked_for: list[str] = []

    async def __call__(self, task_id: str) -> TaskState:
        self.asked_at.append(self.clock.monotonic())
        self.asked_for.append(task_id)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return TaskState(task_id=task_id, status=step, request_id=f"r-{len(self.asked_at)}")


async def _poll(
    task: ScriptedTask,
    *,
    policy: PollPolicy = NO_JITTER,
    latencies: LatencyTracker | None = None,
    seed: int = 7,
    timeout: float | None = None,
    submitted_at: float | None = None,
) -> TaskState:
    return await poll_until_done(
        task,
        TASK_ID,
        policy=policy,
        clock=task.clock,
        latencies=latencies if latencies is not None else LatencyTracker(),
        rng=random.Random(seed),
        timeout=policy.timeout if timeout is None else timeout,
        submitted_at=submitted_at,
    )


def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# -- results -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("final", [SUCCESS, FAILED])
async def test_returns_the_final_state(final: TaskStatus) -> None:
    """Polling returns the first SUCCESS or FAILED reading, after RUNNING ones, and asks no more."""
    task = ScriptedTask(FakeClock(), [RUNNING, RUNNING, final, RUNNING])
    state = await _poll(task)
    assert state == TaskState(task_id=TASK_ID, status=final, request_id="r-3")
    assert len(task.asked_at) == 3
    assert task.asked_for == [TASK_ID] * 3


async def test_done_at_the_first_query() -> None:
    """A task already done is asked about once, after ``policy.first``."""
    clock = FakeClock()
    task = ScriptedTask(clock, [SUCCESS])
    assert (await _poll(task)).status is SUCCESS
    assert task.asked_at == [1.0]
    assert clock.sleeps == [1.0]


# -- schedule ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [0.25, 1.0, 3.5])
async def test_first_query_after_policy_first(first: float) -> None:
    """Without observed latencies, the first query comes ``policy.first`` seconds after the start."""
    clock = FakeClock()
    clock.advance(100.0)
    task = ScriptedTask(clock, [SUCCESS])
    await _poll(task, policy=dataclasses.replace(NO_JITTER, first=first))
    assert task.asked_at == [pytest.approx(100.0 + first)]


async def test_first_query_counts_from_submission() -> None:
    """The first delay counts from ``submitted_at``, so time already spent submitting is not waited again."""
    clock = FakeClock()
    clock.advance(10.0)
    task = ScriptedTask(clock, [SUCCESS])
    await _poll(task, submitted_at=9.4)
    assert task.asked_at == [pytest.approx(10.4)]


async def test_first_query_at_once_when_submission_is_long_past() -> None:
    """If ``policy.first`` has already passed since submission, the first query is made without sleeping."""
    clock = FakeClock()
    clock.advance(10.0)
    task = ScriptedTask(clock, [SUCCESS])
    await _poll(task, submitted_at=2.0)
    assert task.asked_at == [10.0]
    assert clock.sleeps == []


async def test_waits_grow_and_are_capped_without_jitter() -> None:
    """Without jitter the waits are ``initial * multiplier**n``, capped at ``maximum``."""
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING] * 7 + [SUCCESS])
    await _poll(task)
    assert _gaps(task.asked_at) == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])


async def test_waits_with_jitter_stay_within_bounds() -> None:
    """With jitter each wait lies within ``base * (1 ± jitter)`` and never above ``maximum``."""
    policy = PollPolicy(first=1.0, initial=0.5, multiplier=1.5, maximum=10.0, jitter=0.25, timeout=10_000.0)
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING] * 30 + [SUCCESS])
    await _poll(task, policy=policy, seed=1234)
    gaps = clock.sleeps[1:]  # the first sleep is the first delay
    assert _gaps(task.asked_at) == pytest.approx(gaps)
    assert len(gaps) == 30
    for n, gap in enumerate(gaps):
        base = min(policy.maximum, policy.initial * policy.multiplier**n)
        assert (
            base * (1 - policy.jitter) - 1e-9 <= gap <= min(policy.maximum, base * (1 + policy.jitter)) + 1e-9
        )
    assert max(gaps) <= policy.maximum
    assert len({round(gap, 9) for gap in gaps}) > 10, "jitter should make the waits differ"


async def test_jitter_is_reproducible_with_a_seed() -> None:
    """The same seed gives the same schedule; another seed gives another."""
    policy = dataclasses.replace(NO_JITTER, jitter=0.25)

    async def schedule(seed: int) -> list[float]:
        task = ScriptedTask(FakeClock(), [RUNNING] * 6 + [SUCCESS])
        await _poll(task, policy=policy, seed=seed)
        return task.asked_at

    assert await schedule(1) == await schedule(1)
    assert await schedule(1) != await schedule(2)


# -- deadline ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.0, 0.3, 1.0, 7.3, 60.0, 600.0])
async def test_deadline_raises_task_timeout_and_ends(timeout: float) -> None:
    """A task RUNNING forever ends in ``TaskTimeoutError`` with its id and last status, at the deadline."""
    clock = FakeClock()
    clock.advance(5.0)
    task = ScriptedTask(clock, [RUNNING])
    with pytest.raises(TaskTimeoutError) as info:
        await _poll(task, timeout=timeout)
    assert (info.value.task_id, info.value.last_status) == (TASK_ID, "RUNNING")
    assert info.value.waited == pytest.approx(timeout)
    assert isinstance(info.value, TimeoutError)
    assert clock.monotonic() == pytest.approx(5.0 + timeout)
    assert max(task.asked_at) <= 5.0 + timeout + 1e-9
    # bounded: no more queries than a schedule of back-to-back minimum waits could fit
    assert len(task.asked_at) <= 2 + timeout / (NO_JITTER.initial * (1 - NO_JITTER.jitter))


@pytest.mark.parametrize("timeout", [0.3, 7.3, 60.0])
async def test_last_wait_is_cut_to_land_on_the_deadline(timeout: float) -> None:
    """The final query is made exactly at the deadline, after a wait shortened to reach it."""
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING])
    with pytest.raises(TaskTimeoutError):
        await _poll(task, timeout=timeout)
    assert task.asked_at[-1] == pytest.approx(timeout)
    assert clock.sleeps[-1] < NO_JITTER.maximum
    assert sum(clock.sleeps) == pytest.approx(timeout)


async def test_deadline_shorter_than_first_delay() -> None:
    """A deadline before ``policy.first`` still queries once, at the deadline, before timing out."""
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING])
    with pytest.raises(TaskTimeoutError):
        await _poll(task, policy=dataclasses.replace(NO_JITTER, first=5.0), timeout=2.0)
    assert task.asked_at == [pytest.approx(2.0)]


async def test_success_at_the_deadline_is_returned() -> None:
    """A task that ends by the deadline query is a result, not a timeout."""
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING, RUNNING, SUCCESS])
    state = await _poll(task, timeout=2.2)
    assert state.status is SUCCESS
    assert task.asked_at[-1] == pytest.approx(2.2)


async def test_deadline_counts_from_the_start_not_from_submission() -> None:
    """``timeout`` is measured from when polling starts, and ``waited`` reports that time."""
    clock = FakeClock()
    clock.advance(50.0)
    task = ScriptedTask(clock, [RUNNING])
    with pytest.raises(TaskTimeoutError) as info:
        await _poll(task, timeout=10.0, submitted_at=45.0)
    assert clock.monotonic() == pytest.approx(60.0)
    assert info.value.waited == pytest.approx(10.0)


# -- adaptive first delay ----------------------------------------------------------------------------------


def _tracker(samples: Iterable[float]) -> LatencyTracker:
    tracker = LatencyTracker()
    for sample in samples:
        tracker.observe(sample)
    return tracker


def test_tracker_has_no_estimate_before_eight_samples() -> None:
    """Fewer than 8 observed latencies give no estimate."""
    assert _tracker([3.0] * 7).estimate() is None
    assert _tracker([]).estimate() is None


@pytest.mark.parametrize(
    ("samples", "quantile", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 0.85, 7.0),
        ([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 0.85, 7.0),
        ([2.5] * 8, 0.85, 2.5),
        ([float(i) for i in range(1, 9)], 1.0, 8.0),
        ([float(i) for i in range(1, 9)], 0.0, 1.0),
    ],
)
def test_warm_up_starts_at_a_quantile(samples: list[float], quantile: float, expected: float) -> None:
    """After 8 timed tasks the delay starts at the ``quantile`` of their latencies, whatever their order."""
    tracker = LatencyTracker(quantile=quantile)
    for sample in samples:
        tracker.observe(sample)
    assert tracker.estimate() == expected


def test_done_at_the_first_query_moves_the_delay_earlier() -> None:
    """A task already done when first asked shrinks the delay by ``step``."""
    tracker = _tracker([2.0] * 8)
    tracker.first_answer(done=True)
    assert tracker.estimate() == pytest.approx(2.0 * (1 - tracker.step))


def test_running_at_the_first_query_moves_the_delay_later() -> None:
    """A task still RUNNING when first asked grows the delay, by more than a done task shrinks it."""
    tracker = _tracker([2.0] * 8)
    tracker.first_answer(done=False)
    grown = tracker.estimate()
    assert grown is not None
    assert grown == pytest.approx(2.0 * (1 + tracker.step * (1 - tracker.running) / tracker.running))


def test_delay_settles_where_the_target_share_needs_a_second_query() -> None:
    """Steered by tasks of latency uniform in [1, 3], the delay settles near their 90th percentile."""
    import random

    rng = random.Random(1)
    tracker = _tracker([5.0] * 8)
    for _ in range(5000):
        delay = tracker.estimate()
        assert delay is not None
        tracker.first_answer(done=rng.uniform(1.0, 3.0) <= delay)
    assert tracker.estimate() == pytest.approx(2.8, abs=0.25)


def test_observe_after_warm_up_changes_nothing() -> None:
    """Once warm, only first answers steer the delay; later latencies are not needed."""
    tracker = _tracker([2.0] * 8)
    tracker.observe(100.0)
    assert tracker.estimate() == 2.0


async def test_adaptive_first_delay_uses_the_estimate() -> None:
    """With 8+ observed latencies and ``adaptive``, the first query waits the latency quantile, not ``first``."""
    clock = FakeClock()
    task = ScriptedTask(clock, [SUCCESS])
    tracker = _tracker([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    await _poll(task, latencies=tracker)
    assert task.asked_at == [pytest.approx(8.0)]
    assert tracker.estimate() == pytest.approx(8.0 * (1 - tracker.step)), "done at once: next time earlier"


async def test_too_few_samples_fall_back_to_first() -> None:
    """With fewer than 8 observed latencies the first query waits ``policy.first``."""
    clock = FakeClock()
    task = ScriptedTask(clock, [SUCCESS])
    await _poll(task, latencies=_tracker([7.0] * 7))
    assert task.asked_at == [1.0]


async def test_non_adaptive_policy_ignores_the_estimate() -> None:
    """With ``adaptive=False`` the first query waits ``policy.first`` even when latencies are known."""
    clock = FakeClock()
    task = ScriptedTask(clock, [SUCCESS])
    await _poll(task, policy=dataclasses.replace(NO_JITTER, adaptive=False), latencies=_tracker([7.0] * 8))
    assert task.asked_at == [1.0]


async def test_adaptive_first_delay_is_cut_by_the_deadline() -> None:
    """An estimate longer than the timeout still lands the first query on the deadline."""
    clock = FakeClock()
    task = ScriptedTask(clock, [RUNNING])
    with pytest.raises(TaskTimeoutError):
        await _poll(task, latencies=_tracker([30.0] * 8), timeout=4.0)
    assert task.asked_at == [pytest.approx(4.0)]


async def test_completed_task_latency_is_observed() -> None:
    """A task that ends is recorded with its latency from submission, feeding later first delays."""
    clock = FakeClock()
    tracker = LatencyTracker()
    for _ in range(8):
        start = clock.monotonic()
        await _poll(ScriptedTask(clock, [RUNNING, SUCCESS]), latencies=tracker, submitted_at=start)
    assert len(tracker) == 8
    assert tracker.estimate() == pytest.approx(1.5)
    task = ScriptedTask(clock, [SUCCESS])
    start = clock.monotonic()
    await _poll(task, latencies=tracker)
    assert task.asked_at == [pytest.approx(start + 1.5)]


async def test_timed_out_task_is_not_observed() -> None:
    """A task that times out adds no latency to the tracker."""
    tracker = LatencyTracker()
    with pytest.raises(TaskTimeoutError):
        await _poll(ScriptedTask(FakeClock(), [RUNNING]), latencies=tracker, timeout=3.0)
    assert len(tracker) == 0


# -- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [TaskNotFoundError("InvalidTask.NotFound", "no such task"), KeyError("bug")],
    ids=lambda e: type(e).__name__,
)
async def test_lasting_query_exception_propagates(error: BaseException) -> None:
    """An error that another query would not cure is raised to the caller at once, not polled over."""
    task = ScriptedTask(FakeClock(), [RUNNING, error, SUCCESS])
    with pytest.raises(type(error)) as info:
        await _poll(task)
    assert info.value is error
    assert len(task.asked_at) == 2


@pytest.mark.parametrize(
    "error",
    [ProtocolError("HTTP 502", status=502), ThrottledError("RequestLimitExceeded", "over")],
    ids=lambda e: type(e).__name__,
)
async def test_transient_query_failure_is_polled_over(error: BaseException) -> None:
    """A query that still fails after its own retries leaves the task unknown, so polling goes on."""
    task = ScriptedTask(FakeClock(), [RUNNING, error, SUCCESS])
    state = await _poll(task)
    assert state.status is TaskStatus.SUCCESS
    assert len(task.asked_at) == 3


async def test_a_task_never_readable_times_out_with_its_last_known_status() -> None:
    """If every query fails transiently, the deadline ends the wait with the last status actually read."""
    task = ScriptedTask(FakeClock(), [RUNNING] + [ProtocolError("HTTP 502", status=502)] * 200)
    with pytest.raises(TaskTimeoutError) as info:
        await _poll(task, timeout=30.0)
    assert info.value.last_status == "RUNNING"


@pytest.mark.parametrize("burst", [16, 64, 1000])
def test_a_burst_of_running_answers_moves_the_delay_one_step(burst: int) -> None:
    """Many tasks first asked at one delay and all still RUNNING grow it once, not once per answer."""
    tracker = _tracker([1.0] * 8)
    used = tracker.estimate()
    assert used is not None
    for _ in range(burst):
        tracker.first_answer(done=False, delay=used)
    grown = tracker.estimate()
    assert grown == pytest.approx(used * (1 + tracker.step * (1 - tracker.running) / tracker.running))


@pytest.mark.parametrize("burst", [16, 64, 1000])
def test_a_burst_of_done_answers_moves_the_delay_one_step(burst: int) -> None:
    """Many tasks first asked at one delay and all done shrink it once, not to nothing."""
    tracker = _tracker([1.0] * 8)
    used = tracker.estimate()
    assert used is not None
    for _ in range(burst):
        tracker.first_answer(done=True, delay=used)
    assert tracker.estimate() == pytest.approx(used * (1 - tracker.step))


@pytest.mark.parametrize("burst", [16, 64, 1000])
def test_bursts_of_running_answers_never_pass_twice_the_95th_percentile(burst: int) -> None:
    """Burst after burst of RUNNING answers, the delay stays within twice the p95 of observed latencies."""
    tracker = _tracker([0.5, 0.8, 1.0, 1.0, 1.2, 1.5, 2.0, 3.0])
    for _ in range(50):
        used = tracker.estimate()
        assert used is not None
        for _ in range(burst):
            tracker.first_answer(done=False, delay=used)
    bound = tracker.bound()
    assert bound == pytest.approx(2 * 3.0)
    assert tracker.estimate() == pytest.approx(bound)


async def test_simultaneous_first_queries_do_not_compound_the_delay() -> None:
    """1,000 tasks polled at once, all RUNNING at their first query, leave the delay one step up."""
    clock = FakeClock()
    tracker = _tracker([1.0] * 8)
    before = tracker.estimate()
    assert before is not None
    tasks = [ScriptedTask(clock, [RUNNING, SUCCESS]) for _ in range(1000)]
    await asyncio.gather(*(_poll(task, latencies=tracker, submitted_at=0.0) for task in tasks))
    after = tracker.estimate()
    assert after is not None
    assert after <= before * (1 + tracker.step * (1 - tracker.running) / tracker.running) + 1e-9
