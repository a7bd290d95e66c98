"""Rate budgets let at most N calls through per second, in order, slow down on throttles and recover."""

from __future__ import annotations

import asyncio

import pytest

from eni_async.clock import FakeClock
from eni_async.throttle import DECREASE, GROWTH, RECOVERY, STRAY_LIMIT, WINDOW, Budgets, RateBudget


async def _acquire_times(budget: RateBudget, clock: FakeClock, count: int) -> list[float]:
    """Acquire ``count`` slots one after another and return the fake time of each."""
    times = []
    for _ in range(count):
        await budget.acquire()
        times.append(clock.monotonic())
    return times


def _max_in_any_window(times: list[float], period: float = 1.0) -> int:
    """The most acquisitions found in any half-open window ``[t, t + period)`` starting at an acquisition."""
    return max(sum(1 for u in times if t <= u < t + period) for t in times)


async def test_full_budget_is_spent_evenly_then_waits_for_the_period() -> None:
    """A budget of 20 passes 2 calls at once, then 2 per tenth of the period, and the 21st after 1 s."""
    clock = FakeClock()
    budget = RateBudget(20, clock)
    times = await _acquire_times(budget, clock, 20)
    assert times[:2] == [0.0, 0.0]
    assert all(times[i] == pytest.approx(times[i - 2] + 0.1, abs=0.001) for i in range(2, 20))
    await budget.acquire()
    assert 1.0 <= clock.monotonic() < 1.001


@pytest.mark.parametrize("rate", [3, 15, 20, 1000])
async def test_no_tenth_of_the_period_holds_more_than_a_tenth_of_the_rate(rate: int) -> None:
    """Bursts are cut: any tenth of the period holds at most a tenth of the rate, rounded up."""
    clock = FakeClock()
    budget = RateBudget(rate, clock)
    times = await _acquire_times(budget, clock, 2 * rate)
    cap = -(-rate // 10)
    assert max(sum(1 for t in times if start <= t < start + 0.1 - 1e-9) for start in times) <= cap


@pytest.mark.parametrize("rate", [1, 5, 20, 100])
async def test_never_more_than_rate_in_any_second(rate: int) -> None:
    """Over 3 s of fake time, no 1-second window holds more than ``rate`` acquisitions."""
    clock = FakeClock()
    budget = RateBudget(rate, clock)
    times = await _acquire_times(budget, clock, 3 * rate + 1)
    assert times[-1] >= 3.0
    assert _max_in_any_window(times) == rate
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[rate:], strict=False))


async def test_budget_uses_the_whole_rate_every_second() -> None:
    """A saturated budget of 20 serves 20 calls in each of the first three seconds, not fewer."""
    clock = FakeClock()
    times = await _acquire_times(RateBudget(20, clock), clock, 60)
    per_second = [sum(1 for t in times if second <= t < second + 1) for second in range(3)]
    assert per_second == [20, 20, 20]


async def test_slots_free_up_as_the_window_slides() -> None:
    """Calls spread over a second free their slots one by one, a second after each was taken."""
    clock = FakeClock()
    budget = RateBudget(2, clock)
    await budget.acquire()
    clock.advance(0.4)
    await budget.acquire()
    await budget.acquire()
    assert 1.0 <= clock.monotonic() < 1.001
    await budget.acquire()
    assert 1.4 <= clock.monotonic() < 1.401


async def test_concurrent_acquirers_are_served_in_order() -> None:
    """Coroutines waiting on a full budget get their slots first come, first served."""
    clock = FakeClock()
    budget = RateBudget(5, clock)
    served: list[tuple[int, float]] = []

    async def worker(index: int) -> None:
        await budget.acquire()
        served.append((index, clock.monotonic()))

    await asyncio.gather(*(worker(i) for i in range(17)))
    assert [index for index, _ in served] == list(range(17))
    assert _max_in_any_window([t for _, t in served]) == 5


async def test_concurrent_acquirers_never_exceed_the_rate() -> None:
    """Many coroutines sharing one budget stay within its rate together."""
    clock = FakeClock()
    budget = RateBudget(20, clock)
    times: list[float] = []

    async def worker() -> None:
        for _ in range(5):
            await budget.acquire()
            times.append(clock.monotonic())

    await asyncio.gather(*(worker() for _ in range(12)))
    assert len(times) == 60
    assert _max_in_any_window(times) <= 20


def sustained(budget: RateBudget, stated: int | None = None) -> None:
    """Throttle ``budget`` enough times at once to count as sustained throttling."""
    for _ in range(STRAY_LIMIT):
        budget.on_throttled(stated)


def test_a_stray_throttle_does_not_cut_the_rate() -> None:
    """One or two throttle answers in a window (a fault, a neighbour's burst) leave the rate as it was."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    for _ in range(STRAY_LIMIT - 1):
        budget.on_throttled()
    assert budget.rate == 100
    clock.advance(1.1)
    budget.on_throttled()
    assert budget.rate == 100, "throttles of an earlier window no longer count"


async def test_stray_throttles_among_many_calls_do_not_cut_the_rate() -> None:
    """Throttles below ``SHARE`` of a busy window's calls are strays, even more than ``STRAY_LIMIT`` of them."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    await _acquire_times(budget, clock, 100)
    for _ in range(STRAY_LIMIT):
        budget.on_throttled()
    assert budget.rate == 100


def test_sustained_throttles_cut_the_rate() -> None:
    """Throttles that keep coming cut the rate to DECREASE of itself, once per period, and again later."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    sustained(budget)
    assert budget.rate == int(100 * DECREASE)
    clock.advance(0.5)
    sustained(budget)
    assert budget.rate == int(100 * DECREASE), "throttles within one period are one signal"
    clock.advance(0.6)
    sustained(budget)
    assert budget.rate == int(int(100 * DECREASE) * DECREASE)
    assert budget.throttles == 3 * STRAY_LIMIT


async def test_discovery_probes_up_and_settles_at_the_stated_limit() -> None:
    """With discovery, a busy budget grows by GROWTH per window until throttled, then holds the stated limit."""
    clock = FakeClock()
    budget = RateBudget(10, clock, discovery=True)
    await _acquire_times(budget, clock, 60)
    assert budget.rate > 10 * GROWTH, "grew while demand exceeded the rate"
    budget.on_throttled(37)
    assert (budget.rate, budget.ceiling, budget.discovered) == (37, 37, 37)
    clock.advance(5.0)
    await _acquire_times(budget, clock, 200)
    assert budget.rate == 37, "no more probing once a limit was stated"


async def test_without_discovery_the_rate_never_exceeds_the_configured() -> None:
    """By default a busy budget stays at its configured rate, and a stated higher limit does not raise it."""
    clock = FakeClock()
    budget = RateBudget(10, clock)
    await _acquire_times(budget, clock, 60)
    budget.on_throttled(37)
    assert (budget.rate, budget.ceiling) == (10, 10)


async def test_an_idle_budget_does_not_probe() -> None:
    """Discovery grows only a budget that had to wait: an idle one keeps its rate."""
    clock = FakeClock()
    budget = RateBudget(10, clock, discovery=True)
    for _ in range(20):
        clock.advance(0.5)
        await budget.acquire()
    assert budget.rate == 10


def test_throttle_never_goes_below_one() -> None:
    """Cutting never takes the rate below one call per period."""
    clock = FakeClock()
    budget = RateBudget(1, clock)
    for _ in range(3):
        sustained(budget)
        clock.advance(1.0)
    assert budget.rate == 1


@pytest.mark.parametrize(
    ("configured", "stated", "rate", "ceiling"),
    [
        (100, 20, 20, 20),
        (100, 80, 80, 80),
        (20, 8, 8, 8),
        (20, 100, 14, 20),
        (20, 0, 14, 20),
    ],
)
def test_throttle_respects_a_stated_limit(configured: int, stated: int, rate: int, ceiling: int) -> None:
    """A stated limit caps the rate and the ceiling at once (never above the configuration); more throttles cut."""
    budget = RateBudget(configured, FakeClock())
    sustained(budget, stated)
    assert (budget.rate, budget.ceiling) == (rate, ceiling)


async def test_cut_rate_applies_to_the_next_window() -> None:
    """After a throttle, the next second lets through only the cut rate."""
    clock = FakeClock()
    budget = RateBudget(20, clock)
    await _acquire_times(budget, clock, 20)
    sustained(budget)
    before = await _acquire_times(budget, clock, 0)
    times = await _acquire_times(budget, clock, 30)
    assert before == []
    assert times[0] >= 1.0, "the full window must drain below the cut rate first"
    assert budget.rate >= 14
    # 20 calls went out 2 per tenth over [0, 0.9]; under the cut rate of 14 the next waits until 7 have left.
    assert times[0] == pytest.approx(1.3, abs=0.01)


async def test_recovery_adds_a_step_per_quiet_period() -> None:
    """Each full quiet period after a throttle adds RECOVERY of the configured rate back."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    sustained(budget)
    clock.advance(0.99)
    await budget.acquire()
    assert budget.rate == 70
    clock.advance(0.01)
    await budget.acquire()
    assert budget.rate == 70 + int(100 * RECOVERY)
    clock.advance(3.0)
    await budget.acquire()
    assert budget.rate == 70 + 4 * int(100 * RECOVERY)


async def test_recovery_step_is_at_least_one() -> None:
    """A small budget still recovers by one per quiet period."""
    clock = FakeClock()
    budget = RateBudget(10, clock)
    sustained(budget)
    assert budget.rate == 7
    clock.advance(2.0)
    await budget.acquire()
    assert budget.rate == 9


async def test_recovery_stops_at_the_configured_rate() -> None:
    """Recovery never takes the rate above the configured rate."""
    clock = FakeClock()
    budget = RateBudget(20, clock)
    sustained(budget)
    clock.advance(1000.0)
    await budget.acquire()
    assert budget.rate == 20


async def test_recovery_stops_at_a_stated_limit() -> None:
    """After the server states a limit, recovery stops there, below the configured rate."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    sustained(budget, 20)
    clock.advance(1.0)
    sustained(budget)
    assert budget.rate == 14
    clock.advance(1000.0)
    await budget.acquire()
    assert budget.rate == 20


async def test_recovery_counts_quiet_time_between_uneven_calls() -> None:
    """Quiet time is not lost between calls that fall mid-period: 4.2 s without a throttle add back 4 steps."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    sustained(budget)
    for _ in range(7):
        clock.advance(0.6)
        await budget.acquire()
    assert clock.monotonic() == pytest.approx(4.2)
    assert budget.rate == 70 + 4 * 5


async def test_another_throttle_restarts_the_quiet_period() -> None:
    """A second throttle cuts again and recovery counts from it, not from the first."""
    clock = FakeClock()
    budget = RateBudget(100, clock)
    sustained(budget)
    clock.advance(1.1)
    sustained(budget)
    clock.advance(0.9)
    await budget.acquire()
    assert budget.rate == 49


def test_client_window_is_a_little_over_a_second() -> None:
    """Budgets count over WINDOW seconds, a little over the server's one-second windows."""
    budgets = Budgets({"DescribeVpcTaskResult": 20}, FakeClock())
    assert 1.0 < budgets["DescribeVpcTaskResult"].period == WINDOW <= 1.1


@pytest.mark.parametrize("rate", [0, -1])
def test_rate_must_be_positive(rate: int) -> None:
    """A budget of less than one call per period is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        RateBudget(rate, FakeClock())


def test_budgets_are_keyed_by_action() -> None:
    """``Budgets`` holds one named budget per action at its own rate, the same object on every lookup."""
    budgets = Budgets({"UnassignPrivateIpAddresses": 100, "DescribeVpcTaskResult": 20}, FakeClock())
    unassign, query = budgets["UnassignPrivateIpAddresses"], budgets["DescribeVpcTaskResult"]
    assert (unassign.name, unassign.rate) == ("UnassignPrivateIpAddresses", 100)
    assert (query.name, query.rate) == ("DescribeVpcTaskResult", 20)
    assert budgets["DescribeVpcTaskResult"] is query
    assert unassign is not query


def test_unknown_action_has_no_budget() -> None:
    """Asking for an action without a budget is a ``KeyError``, not a silent unlimited budget."""
    budgets = Budgets({"DescribeVpcTaskResult": 20}, FakeClock())
    with pytest.raises(KeyError):
        budgets["AssignPrivateIpAddresses"]


async def test_budgets_are_independent() -> None:
    """Exhausting one action's budget does not slow another action."""
    clock = FakeClock()
    budgets = Budgets({"A": 20, "B": 20}, clock)
    await _acquire_times(budgets["A"], clock, 2)
    budgets["A"].on_throttled()
    assert await _acquire_times(budgets["B"], clock, 2) == [0.0, 0.0]
    assert budgets["B"].rate == 20


async def test_a_retry_does_not_queue_behind_waiting_calls() -> None:
    """A retried call takes the next free slot instead of waiting behind every call already queued."""
    clock = FakeClock()
    budget = RateBudget(10, clock)
    queued: list[float] = []

    async def first_timer() -> None:
        await budget.acquire()
        queued.append(clock.monotonic())

    waiting = [asyncio.create_task(first_timer()) for _ in range(40)]
    await asyncio.sleep(0)
    await budget.acquire_retry()
    retried_at = clock.monotonic()
    await asyncio.gather(*waiting)
    assert retried_at < 1.5, "not after the 40 calls queued before it (4 s of budget)"
    assert _max_in_any_window([*queued, retried_at]) <= 10


async def _against_a_server(budget: RateBudget, clock: FakeClock, *, limit: int, other: int, error: float,
                            seconds: int, seed: int = 1) -> dict[int, list[int]]:  # fmt: skip
    """Send as fast as ``budget`` allows for ``seconds`` to a server counting fixed one-second windows,
    where another process has spent ``other`` of each second's ``limit`` first and a share ``error`` of the
    answers are throttles regardless; a throttled call is retried. Returns second -> [ok, throttled]."""
    import random

    rng = random.Random(seed)
    counts: dict[int, int] = {}
    seen: dict[int, list[int]] = {}

    async def worker() -> None:
        retry = False
        for _ in range(10 * limit * seconds):  # bounded
            if clock.monotonic() >= seconds:
                return
            await (budget.acquire_retry() if retry else budget.acquire())
            second = int(clock.monotonic())
            counts[second] = counts.get(second, other) + 1
            throttled = counts[second] > limit or rng.random() < error
            seen.setdefault(second, [0, 0])[throttled] += 1
            if throttled:
                budget.on_throttled(limit)
            retry = throttled

    await asyncio.gather(*(worker() for _ in range(50)))
    return seen


async def test_random_throttles_are_strays_even_at_five_percent() -> None:
    """A gateway that throttles 5% of calls at random, with nobody else on the quota: the rate stays."""
    clock = FakeClock()
    budget = RateBudget(100, clock, period=WINDOW)
    seen = await _against_a_server(budget, clock, limit=100, other=0, error=0.05, seconds=10)
    assert budget.rate == 100
    assert sum(t for _, t in seen.values()) > 20, "throttles did come"
    assert sum(ok for ok, _ in seen.values()) > 0.85 * 10 * 100 / WINDOW, "throttled calls cost only a slot"


async def test_another_process_on_the_quota_brings_the_rate_down_within_seconds() -> None:
    """Another process spends 40 of the 100 calls a second: within seconds the budget is cut to about what
    is left (it then probes up and is cut again), and the share of calls throttled falls from the first
    second's."""
    clock = FakeClock()
    budget = RateBudget(100, clock, period=WINDOW)
    seen = await _against_a_server(budget, clock, limit=100, other=40, error=0.0, seconds=6)
    assert budget.rate <= 80
    first, late = seen[0], seen[5]
    assert late[1] / sum(late) < first[1] / sum(first)
    assert late[1] / sum(late) < 0.2


def test_a_timed_budgets_window_follows_the_spread_of_answer_times() -> None:
    """Answers within 3 ms of each other: the window shrinks to a second plus the drift margin and that
    spread; a throttle answer puts it back to ``WINDOW`` (the spread did not cover what the server saw)."""
    from eni_async.throttle import DRIFT, MIN_TIMED

    clock = FakeClock()
    budget = Budgets({"A": 100}, clock)["A"]
    assert budget.period == WINDOW
    for i in range(MIN_TIMED):
        budget.observe(0.002 + (0.003 if i % 2 else 0.0))
    assert budget.period == pytest.approx(1.0 + DRIFT + 0.003)
    budget.on_throttled()
    assert budget.period == WINDOW
    for _ in range(2 * MIN_TIMED):
        budget.observe(0.002)
    assert budget.period == WINDOW, "careful for a while after a throttle"
    assert RateBudget(100, clock).period == 1.0, "an untimed budget keeps its period"


def test_the_simulators_limiter_counts_seconds_of_its_own_skewed_drifting_clock() -> None:
    """The limiter's windows are seconds of its clock: 0.6 s ahead, a request at 0.5 s of the simulator's
    falls in its second 1; running 1% fast, its 100th second starts at 99.0 s of the simulator's."""
    from eni_async.simulator.limits import RateLimiter
    from eni_async.simulator.rejects import Reject

    clock = FakeClock()
    limiter = RateLimiter(clock, {"A": 1}, skew=0.6)
    clock.advance(0.3)
    limiter.check("key", "A")
    clock.advance(0.2)  # 1.1 on the limiter's clock: a new second
    limiter.check("key", "A")
    with pytest.raises(Reject):
        limiter.check("key", "A")
    other = FakeClock()
    fast = RateLimiter(other, {"A": 1}, drift=0.01)
    other.advance(99.05)  # 100.04 on the limiter's clock
    fast.check("key", "A")
    other.advance(0.1)
    with pytest.raises(Reject):
        fast.check("key", "A")
