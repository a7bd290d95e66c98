"""The watch table and the pacing schedule, as pure values: every row does what it says, nothing else passes."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from eni_async.models import BY_ENI, BY_TASK, NOT_RELEASED, RELEASED, EniInfo, TaskState, TaskStatus
from eni_async.tracker.pacing import LookPacing
from eni_async.tracker.watch import (
    ASKING,
    LOOKING,
    TRANSITIONS,
    Do,
    Event,
    Phase,
    Step,
    TransitionError,
    Watch,
    read_description,
)

VPC = "vpc-aaaaaaaa"
IPS = ("10.0.0.2", "10.0.0.3")
LIVE = [phase for phase in Phase if phase is not Phase.DONE]
MISSING = sorted(set(itertools.product(Phase, Event)) - set(TRANSITIONS), key=str)
# Events the engine makes only while it looks (descriptions, no room to look) or asks (readings).
DESCRIPTIONS = {
    Event.SETTLED,
    Event.LISTED,
    Event.LISTED_LATE,
    Event.DELETING,
    Event.STALE,
    Event.MIXED,
    Event.NOT_FOUND,
    Event.DESCRIBE_FAILED,
    Event.DESCRIBE_REFUSED,
    Event.BUDGET_REFUSED,
}
READINGS = {Event.RUNNING, Event.SUCCESS, Event.FAILED, Event.QUERY_FAILED, Event.UNREADABLE}
V3_ONLY = {Event.DELETING, Event.STALE, Event.MIXED}


def watch_in(phase: Phase) -> Watch:
    watch = Watch(VPC, "eni-1", "t1", IPS, submitted_at=0.0, registered_at=0.0, deadline=60.0)
    watch.phase = phase
    return watch


@pytest.mark.parametrize(("key", "step"), sorted(TRANSITIONS.items(), key=str), ids=str)
def test_each_row_moves_to_its_phase_and_settles_what_it_names(key: tuple[Phase, Event], step: Step) -> None:
    """Stepping a watch by a row lands in the row's phase; a SUCCESS row releases by task, KEEP_BY_ENI keeps."""
    phase, event = key
    watch = watch_in(phase)
    assert watch.step(event) is step
    assert watch.phase is step.phase
    if Do.RELEASE_BY_TASK in step.do:
        assert watch.fates == dict.fromkeys(IPS, (RELEASED, BY_TASK))
    elif Do.KEEP_BY_ENI in step.do:
        assert watch.fates == dict.fromkeys(IPS, (NOT_RELEASED, BY_ENI))
    else:
        assert watch.fates == {}, "only the two settling actions settle IPs in a step"


@pytest.mark.parametrize(("phase", "event"), MISSING, ids=str)
def test_anything_not_in_the_table_fails_loudly(phase: Phase, event: Event) -> None:
    """An observation with no row in the watch's phase raises TransitionError and changes nothing."""
    watch = watch_in(phase)
    with pytest.raises(TransitionError, match=str(event)):
        watch.step(event)
    assert watch.phase is phase
    assert watch.pending == list(IPS)


@pytest.mark.parametrize("phase", LIVE)
def test_every_live_phase_ends_at_the_deadline_and_on_close_with_a_reason(phase: Phase) -> None:
    """Deadline and close end every live watch, saying why its pending IPs are unknown."""
    for event in (Event.DEADLINE, Event.CLOSED):
        step = TRANSITIONS[(phase, event)]
        assert step.phase is Phase.DONE
        assert Do.END in step.do
        assert step.why


def test_nothing_follows_the_end() -> None:
    """A watch that is DONE has no row: no observation may change a settled fate."""
    assert not [key for key in TRANSITIONS if key[0] is Phase.DONE]


@pytest.mark.parametrize(("key", "step"), sorted(TRANSITIONS.items(), key=str), ids=str)
def test_a_watch_ends_only_with_every_ip_accounted_for(key: tuple[Phase, Event], step: Step) -> None:
    """A row to DONE settles every IP (the description did, or the task or ENI does) or says why not."""
    if step.phase is not Phase.DONE:
        assert Do.END not in step.do
        return
    settles = {Do.RELEASE_BY_TASK, Do.KEEP_BY_ENI} & set(step.do)
    assert key[1] is Event.SETTLED or settles or (Do.END in step.do and step.why)


def test_listed_ips_are_kept_only_where_the_fate_rules_allow() -> None:
    """Only an unreadable task's ENI listing none of its IPs DELETING keeps IPs by a table row (API 3.0);
    otherwise listed IPs are kept only by a description sent after a FAILED reading (read_description)."""
    keeping = [key for key, step in TRANSITIONS.items() if Do.KEEP_BY_ENI in step.do]
    assert keeping == [(Phase.UNREADABLE, Event.STALE)]


def test_only_success_releases_by_task() -> None:
    """The task's word releases IPs only when it is SUCCESS (D12), in whatever phase it arrives."""
    releasing = {key[1] for key, step in TRANSITIONS.items() if Do.RELEASE_BY_TASK in step.do}
    assert releasing == {Event.SUCCESS}


@pytest.mark.parametrize("phase", sorted(LOOKING))
def test_a_phase_that_looks_takes_every_description(phase: Phase) -> None:
    """Where the ENI is looked at, every description the dialect can give has a row (API 2.0 never asks
    OVERDUE watches for API 3.0's states)."""
    expected = DESCRIPTIONS - (V3_ONLY if phase is Phase.OVERDUE else set())
    assert {e for p, e in TRANSITIONS if p is phase} >= expected


@pytest.mark.parametrize("phase", sorted(ASKING))
def test_a_phase_that_asks_takes_every_reading(phase: Phase) -> None:
    """Where the task may be asked, every reading (and query failure) has a row."""
    assert {e for p, e in TRANSITIONS if p is phase} >= READINGS


def test_every_phase_is_reachable_and_every_live_phase_can_end() -> None:
    """No phase is an orphan, and from every live phase some path reaches DONE."""
    targets = {step.phase for step in TRANSITIONS.values()}
    assert set(Phase) - {Phase.WATCHING} <= targets
    ends = {Phase.DONE}
    while True:
        more = {p for (p, _), step in TRANSITIONS.items() if step.phase in ends} - ends
        if not more:
            break
        ends |= more
    assert ends == set(Phase)


def info(*ips: str, state: str = "DELETING", vpc: str = VPC) -> EniInfo:
    return EniInfo(vpc, "eni-1", "10.9.9.9", ips, ip_states=dict.fromkeys(ips, state))


@pytest.mark.parametrize(
    ("seen", "lists_state", "ended", "late", "event", "fates"),
    [
        (info(), True, False, False, Event.SETTLED, {ip: (RELEASED, BY_ENI) for ip in IPS}),
        (info("10.0.0.3"), True, False, False, Event.DELETING, {"10.0.0.2": (RELEASED, BY_ENI)}),
        (info(*IPS, state="AVAILABLE"), True, False, False, Event.STALE, {}),
        (info(*IPS), True, True, False, Event.SETTLED, {ip: (NOT_RELEASED, BY_ENI) for ip in IPS}),
        (info(*IPS), False, False, False, Event.LISTED, {}),
        (info(*IPS), False, False, True, Event.LISTED_LATE, {}),
        (None, True, False, False, Event.NOT_FOUND, {}),
        (info(*IPS, vpc="vpc-bbbbbbbb"), True, False, False, Event.NOT_FOUND, {}),
    ],
    ids=["gone", "one gone", "stale", "after FAILED", "v2 listed", "v2 late", "not found", "other VPC"],
)
def test_a_description_settles_what_it_shows(
    seen: EniInfo | None,
    lists_state: bool,
    ended: bool,
    late: bool,
    event: Event,
    fates: dict[str, tuple[str, str]],
) -> None:
    """Gone is released; listed is kept only after a FAILED reading; otherwise the description is summed up."""
    watch = watch_in(Phase.ENDED if ended else Phase.WATCHING)
    watch.ended_at = 1.0 if ended else None
    assert read_description(watch, seen, sent=2.0, lists_state=lists_state, late=late) is event
    assert watch.fates == fates


def test_a_description_sent_before_a_failed_reading_keeps_nothing() -> None:
    """A look sent before the FAILED reading may have seen an IP the task then released: it keeps nothing."""
    watch = watch_in(Phase.ENDED)
    watch.ended_at = 5.0
    assert read_description(watch, info(*IPS), sent=4.9, lists_state=True) is Event.DELETING
    assert watch.fates == {}


def test_mixed_states_are_told_apart_from_stale() -> None:
    """API 3.0: one IP DELETING and one AVAILABLE is MIXED (the task may run), not STALE."""
    watch = watch_in(Phase.WATCHING)
    mixed = EniInfo(VPC, "eni-1", None, IPS, ip_states={"10.0.0.2": "DELETING", "10.0.0.3": "AVAILABLE"})
    assert read_description(watch, mixed, sent=1.0, lists_state=True) is Event.MIXED


def test_a_failed_reading_marks_when_the_task_was_seen_ended() -> None:
    """A FAILED reading stamps the watch's end with the time it arrived; RUNNING does not."""
    watch = watch_in(Phase.WATCHING)
    assert watch.read(TaskState("t1", TaskStatus.RUNNING), 3.0) is Event.RUNNING
    assert watch.ended_at is None
    assert watch.read(TaskState("t1", TaskStatus.FAILED), 4.0) is Event.FAILED
    assert watch.ended_at == 4.0
    assert watch.readings == 2


# -- pacing ------------------------------------------------------------------------------------------


def test_gaps_grow_with_the_tasks_age_while_many_are_watched() -> None:
    """A task that has run 20 s is looked at every 5 s, one of 0.5 s on the young schedule (min_gap growing to
    max_gap)."""
    pacing = LookPacing()
    assert pacing.gap(None, age=20.0, watched=500) == pytest.approx(pacing.age_share * 20.0)
    young = [pacing.gap(None, age=0.5, watched=500)]
    for _ in range(10):
        young.append(pacing.gap(young[-1], age=0.5, watched=500))
    assert young[0] == pacing.min_gap
    assert max(young) == pytest.approx(pacing.max_gap)


def test_first_looks_from_the_remembered_grid_match_those_computed_afresh() -> None:
    """``first_at`` keeps the grid of the last first look: every answer equals a fresh pacing's (no memory),
    across first delays, watched counts on both sides of the tail and submit times on and off the grid."""
    pacing = LookPacing()
    rng = random.Random(3)
    firsts = [0.3, 0.3, 1.7, pacing.min_gap, 0.04, 12.5, 2.0 / 3.0]
    counts = [1, pacing.tail, pacing.tail + 1, 500, pacing.tail - 1, 10_000]
    for _ in range(2000):
        first, watched = rng.choice(firsts), rng.choice(counts)
        sent = rng.choice([0.0, 0.6, 1.2000000000000002, rng.uniform(0.0, 100.0)])
        assert pacing.first_at(sent, first, watched=watched) == LookPacing().first_at(
            sent, first, watched=watched
        )
    assert pacing == LookPacing()  # the memory is not part of the value


def test_gaps_stay_short_while_latencies_are_being_learnt() -> None:
    """Before enough latencies are seen the first tasks' ends size the batch: their gaps grow more slowly."""
    pacing = LookPacing()
    warming = pacing.gap(None, age=10.0, watched=500, warm=False)
    assert pacing.max_gap <= warming == pytest.approx(pacing.warming_share * 10.0)
    assert warming < pacing.gap(None, age=10.0, watched=500, warm=True)


def test_the_tail_of_a_batch_is_watched_closely() -> None:
    """With at most ``tail`` tasks watched the gap is short whatever the age: the makespan waits on them."""
    pacing = LookPacing()
    assert pacing.gap(None, age=20.0, watched=pacing.tail) < pacing.gap(
        None, age=20.0, watched=pacing.tail + 1
    )
    assert pacing.gap(None, age=1.0, watched=10) == pacing.tail_gap


@pytest.mark.parametrize("gap", [0.15, 0.2, 0.35, 1.0, 2.5, 7.0])
def test_looks_land_on_a_shared_grid_never_later_than_their_gap(gap: float) -> None:
    """The next look comes within (gap - tick, gap] of now, on the tick grid, so tasks paced alike share it."""
    pacing = LookPacing()
    tick = pacing.tick(gap)
    assert tick <= max(gap, pacing.min_gap) + 1e-12
    for now in (0.0, 3.07, 11.5, 123.456):
        at = pacing.at(now, gap)
        assert now <= at <= now + gap + 1e-9
        assert at > now + gap - tick - 1e-9
        assert abs(at / tick - round(at / tick)) < 1e-6


def test_tasks_looked_at_apart_fall_due_together() -> None:
    """Two tasks paced alike, looked at 0.4 s apart within one grid step, are next due at the same time."""
    pacing = LookPacing()
    assert pacing.at(12.1, 3.0) == pacing.at(12.5, 3.0)


def test_ticks_nest_so_slower_looks_meet_faster_ones() -> None:
    """Each tick is the fastest one times a power of two: a slow task's look time is a fast task's too."""
    pacing = LookPacing()
    ticks = {pacing.tick(g) for g in (0.15, 0.3, 0.5, 1.0, 2.0, 5.0, 9.0)}
    for tick in ticks:
        assert math.log2(tick / pacing.min_gap) == pytest.approx(round(math.log2(tick / pacing.min_gap)))


def test_a_watchs_fate_puts_every_value_in_its_field() -> None:
    """``Watch.fate`` builds its ``ChunkFate`` by position: each value lands in the field named for it."""
    watch = Watch(VPC, "eni-1", "t1", ("10.0.0.2", "10.0.0.3", "10.0.0.4"), 0.0, 0.0, 60.0)
    watch.settle("10.0.0.3", NOT_RELEASED, BY_ENI)
    watch.settle("10.0.0.2", RELEASED, BY_TASK)
    state = TaskState("t1", TaskStatus.RUNNING)
    watch.state, watch.error = state, TimeoutError("late")
    fate = watch.fate("why")
    assert (fate.vpc_id, fate.eni_id, fate.task_id) == (VPC, "eni-1", "t1")
    assert fate.ips == ("10.0.0.2", "10.0.0.3", "10.0.0.4")
    assert (fate.released, fate.not_released, fate.unknown) == (("10.0.0.2",), ("10.0.0.3",), ("10.0.0.4",))
    assert fate.confirmed_by == {"10.0.0.3": BY_ENI, "10.0.0.2": BY_TASK}
    assert list(fate.confirmed_by) == ["10.0.0.3", "10.0.0.2"]  # in the order the fates were seen
    assert fate.state is state
    assert fate.reason == "why"
    assert fate.error is watch.error
    settled = Watch(VPC, "eni-1", "t2", ("10.0.0.2",), 0.0, 0.0, 60.0)
    settled.settle("10.0.0.2", RELEASED, BY_ENI)
    settled.error = TimeoutError("old")
    done = settled.fate("why")
    assert (done.released, done.reason, done.error) == (("10.0.0.2",), None, None)  # nothing left unknown
