"""The in-flight target where the CPU binds (limits out of the way): a hill climb on throughput, in fake time.

A fake world stands in for the batch: every refresh the target is read, and the tasks seen to end over the
next refresh are what ``throughput`` says for the target in force one ``LAG`` earlier (what was started then
ends now), the process using ``busy`` of a core meanwhile. Nothing here sleeps or reads a real clock.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable

from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.testing import FakeCalls
from eni_async.tracker.pacing import LookPacing
from eni_async.tracker.sizing import InFlight, InFlightPolicy

OFF = float(10**6)  # a budget out of the way: above ``process_rate``, so the CPU binds
POLICY = InFlightPolicy()
LATENCY = 1.0  # every task's latency (the hold is this plus half the look gap)
LAG = 1.0  # seconds between the target a task was started under and its end


class World:
    """An ``InFlight`` fed a process CPU the test sets and tasks ending as ``throughput`` says."""

    def __init__(self, rate: float = OFF) -> None:
        self.rate = rate
        limits = {UNASSIGN: rate, TASK_QUERY: rate, DESCRIBE: rate}
        self.calls = FakeCalls(FakeClock(), rates=limits)
        for _ in range(10):
            self.calls.latencies.observe(LATENCY)
        self.cpu = 0.0
        self.in_flight = InFlight(self.calls, policy=POLICY, pacing=LookPacing(), cpu=lambda: self.cpu)
        # Little's law alone, on the same latencies (no CPU reading: no rule of the CPU applies).
        self.little = InFlight(self.calls, policy=POLICY, pacing=LookPacing())
        self._past: deque[int] = deque(maxlen=round(LAG / POLICY.refresh))
        self._owed = 0.0

    def run(
        self, seconds: float, throughput: Callable[[int], float], *, busy: float = 0.5
    ) -> list[tuple[int, int]]:
        """``seconds`` of refreshes: each returns (target, Little's law's target) as read then."""
        read = []
        for _ in range(round(seconds / POLICY.refresh)):
            target = self.in_flight.target(self.rate)
            read.append((target, self.little.target(self.rate)))
            self._past.append(target)
            self.calls.clock.advance(POLICY.refresh)
            self.cpu += busy * POLICY.refresh
            self._owed += throughput(self._past[0]) * POLICY.refresh
            while self._owed >= 1.0:
                self.calls.latencies.observe(LATENCY)
                self._owed -= 1.0
        return read


def levels(read: list[tuple[int, int]]) -> list[int]:
    """The targets read, each run of one value once."""
    return [target for target, _ in itertools.groupby(t for t, _ in read)]


def _down_to_the_minimum(world: World) -> list[tuple[int, int]]:
    """A saturated spell with nothing ending: the target shrinks to the minimum (the CPU rule, unchanged)."""
    read = world.run(15.0, lambda n: 0.0, busy=1.0)
    assert read[-1][0] == POLICY.minimum
    return read


def test_growth_stops_at_the_throughput_knee() -> None:
    """Throughput rises with the count up to 200 tasks a second, then no more: the target climbs while
    growing pays and stays near the knee (never past one step above it), far below Little's law's."""
    world = World()
    _down_to_the_minimum(world)
    read = world.run(120.0, lambda n: float(min(n, 200)))
    assert min(little for _, little in read) > 1500
    assert max(t for t, _ in read) <= 200 * POLICY.growth
    settled = [t for t, _ in read[len(read) // 2 :]]
    assert min(settled) >= 200 / POLICY.growth**2
    assert max(settled) > 200 / POLICY.growth, "climbed to the knee"


def test_a_growth_that_did_not_pay_is_stepped_back() -> None:
    """Knee at 100/s: 16 -> 24 -> ... -> 122 paid (each raised the throughput by more than a tenth); 183 did
    not, so the count goes back below it, tries less (81: costs a fifth, so 122 again), holds 122 for
    ``cruise`` seconds, probes 183 again, and so on: 122 most of the time, 183 and 81 only tried."""
    world = World()
    _down_to_the_minimum(world)
    read = world.run(60.0, lambda n: float(min(n, 100)))
    assert levels(read)[:12] == [16, 24, 36, 54, 81, 122, 183, 81, 122, 183, 81, 122]
    assert max(t for t, _ in read) == 183
    held = Counter(t for t, _ in read[len(read) // 4 :])
    assert held.most_common(1)[0][0] == 122, "81 (costly) and 183 (unpaid) are only tried"
    assert held[183] < len(read) / 4


def test_on_a_loaded_machine_the_count_falls_to_what_pays() -> None:
    """Throughput flat whatever the count (the CPU is another process's, and never 0.9 of a core ours):
    no growth is kept, each smaller count costs nothing, and the target falls from Little's law's to the
    minimum and stays there (the rule of the CPU alone grew it to Little's law's)."""
    world = World()
    read = world.run(240.0, lambda n: 150.0, busy=0.4)
    first = read[0][0]
    assert first == read[0][1] > 1500, "Little's law's to begin with"
    assert max(t for t, _ in read) == first
    assert min(t for t, _ in read) == POLICY.minimum
    assert all(t <= POLICY.minimum * POLICY.growth for t, _ in read[-40:])


def test_never_above_littles_law_even_as_it_falls() -> None:
    """Throughput that always rises with the count: the climb reaches Little's law's and stops there; when
    tasks get shorter (a smaller hold), the target follows Little's law's down at once."""
    world = World()
    _down_to_the_minimum(world)
    read = world.run(60.0, lambda n: float(n))
    assert all(target <= little for target, little in read)
    assert max(target for target, _ in read) == read[-1][1], "climbed to Little's law's"
    for _ in range(1024):  # the latencies seen lately are now 0.1 s: the hold, and Little's law, fall
        world.calls.latencies.observe(0.1)
    world.run(0.25, lambda n: 0.0)
    after = world.run(2.0, lambda n: float(n))
    assert after[0][1] < read[-1][1] / 2
    assert all(target <= little for target, little in after)
    assert after[0][0] == after[0][1]


def test_a_saturated_process_still_shrinks_the_count_while_growth_pays() -> None:
    """However much the throughput would rise, a process using 0.9 of a core or more shrinks the target by
    ``backoff`` per refresh, down to the minimum and never below."""
    world = World()
    _down_to_the_minimum(world)
    climbed = world.run(30.0, lambda n: float(n))
    assert climbed[-1][0] > 200
    read = world.run(15.0, lambda n: float(n), busy=1.0)
    targets = [t for t, _ in read]
    assert targets[1] == int(targets[0] * POLICY.backoff)
    assert all(b <= a for a, b in itertools.pairwise(targets))
    assert targets[-1] == POLICY.minimum


def test_under_the_budgets_throughput_changes_nothing() -> None:
    """Tencent's limits bind (rate <= process_rate): the target is Little's law's whatever ends."""
    world = World(rate=100.0)
    read = world.run(30.0, lambda n: float(min(n, 50)), busy=0.3)
    assert all(target == little for target, little in read)
