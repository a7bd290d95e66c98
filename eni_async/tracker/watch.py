"""The life of one watched task as a table: its phases, what can be observed of it, and what each observation does.

Rules (the spec every transition below keeps). A watch starts once the server has accepted the task, so every
description of its ENI is sent after acceptance: an IP gone from the ENI was released by the task (D20). An IP
still listed is settled as not released only by a description sent after the task was read FAILED, or, on API
3.0 once the task cannot be read, by one in which none of the task's IPs still listed is ``DELETING``. A
SUCCESS reading releases every IP (D12). An ENI that is not found (or cannot be described, for good) leaves
the task alone to decide; a task that cannot be read leaves the ENI alone to decide. Nothing is guessed: an
IP whose fate was not observed when the watch ends (deadline, close, nothing left to observe it by) is
``unknown``.

``TRANSITIONS`` maps ``(Phase, Event)`` to a ``Step``: the next phase, the actions the engine carries out
(when to look or ask next; IPs settled by the task or by the ENI; ending the watch) and, for an ending with
IPs still pending, why they are unknown. A pair missing from the table is a bug, raised as
``TransitionError``. ``read_description`` turns one description into its ``Event``, settling the IPs it
decides. Nothing here performs I/O, reads a clock or awaits: times are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from eni_async.models import BY_ENI, BY_TASK, NOT_RELEASED, RELEASED, ChunkFate, EniInfo, TaskState


class TransitionError(RuntimeError):
    """An observation the table has no row for in the watch's phase: a bug in the tracker, never an API
    answer (deliberately not an ``EniAsyncError``, so no caller mistakes it for an outcome)."""


class Phase(StrEnum):
    """Where a watch stands: what is known of its task and its ENI, and so what is looked at or asked."""

    WATCHING = "watching"  # the ENI is looked at; the task is not known to have ended
    FLAKY = "flaky"  # the last look failed (transiently)
    BLIND = "blind"  # looks keep failing: the task is asked as well
    OVERDUE = "overdue"  # API 2.0: IPs still listed past the expected latency: the task is asked, on backoff
    ENDED = "ended"  # the task read FAILED: a look sent after that reading settles the IPs still listed
    UNREADABLE = "unreadable"  # the task cannot be read (for good): the ENI alone decides
    VANISHED = "vanished"  # the ENI is not found or cannot be described (for good): the task alone decides
    DONE = "done"  # every IP settled, or the watch ended with some unknown


class Event(StrEnum):
    """What can be observed of a watched task (or happen to its watch)."""

    # One description of the ENI, as ``read_description`` sums it up.
    SETTLED = "settled"  # no IP of the task is left pending
    LISTED = "listed"  # API 2.0: IPs still listed (no state shown)
    LISTED_LATE = "listed_late"  # API 2.0: still listed past the expected latency
    DELETING = "deleting"  # API 3.0: every IP still listed is DELETING
    STALE = "stale"  # API 3.0: IPs still listed, none of them DELETING
    MIXED = "mixed"  # API 3.0: IPs still listed, some DELETING and some not
    NOT_FOUND = "not_found"  # described by id and not there (or in another VPC than the task's)
    DESCRIBE_FAILED = "describe_failed"  # the call failed transiently, after its own retries
    DESCRIBE_REFUSED = "describe_refused"  # refused for good, for this ENI
    # One reading of the task.
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    QUERY_FAILED = "query_failed"  # transiently, after its own retries
    UNREADABLE = "unreadable"  # for good (the server does not know the task, or refuses to say)
    # The engine.
    BUDGET_REFUSED = "budget_refused"  # a due look found no describe capacity: it waits for room
    DEADLINE = "deadline"
    CLOSED = "closed"


class Do(StrEnum):
    """An action a step asks of the engine (the IP-settling ones are carried out here, by ``Watch.step``)."""

    LOOK = "look"  # look again after the pacing gap
    LOOK_NOW = "look_now"
    ASK_NOW = "ask_now"
    ASK_WHEN_EXPECTED = "ask_when_expected"  # at submit + the expected latency: earliest expected end first
    ASK_LATER = "ask_later"  # after a RUNNING reading: not before another expected latency has passed
    ASK_AGAIN = "ask_again"  # after a transient failure: on the poll backoff
    RELEASE_BY_TASK = "release_by_task"  # SUCCESS: every IP still pending is released (D12)
    KEEP_BY_ENI = "keep_by_eni"  # every IP still pending is not released, as the ENI shows
    END = "end"  # the watch ends: IPs still pending are unknown, for the step's ``why``


@dataclass(frozen=True, slots=True)
class Step:
    """One row of the table: the next phase, what to do, and why IPs left pending are unknown."""

    phase: Phase
    do: tuple[Do, ...] = ()
    why: str | None = None  # formatted with eni, task, error, pending, waited


P, E, D = Phase, Event, Do
# On Python 3.11 a member reached through its class (``Phase.WATCHING``) runs ``EnumType.__getattr__``'s hook
# (~0.14 us, five times a plain attribute): what runs per task names the members it needs at module level.
_WATCHING, _SETTLED, _RELEASE_BY_TASK, _KEEP_BY_ENI = P.WATCHING, E.SETTLED, D.RELEASE_BY_TASK, D.KEEP_BY_ENI
_DEADLINE = "task {task} still running at the deadline ({waited:.0f}s)"
_CLOSED = "the client was closed before the task's fate was seen"
_VANISHED_FAILED = "{eni} not described (not found or refused) and task {task} FAILED"
_VANISHED_UNREADABLE = "{eni} not described and task {task} unreadable ({error})"
_UNREADABLE_LISTED = "task {task} unreadable ({error}); {pending} IP(s) still listed"

# Rows every live phase has.
_ENDINGS: Mapping[Event, Step] = {
    E.DEADLINE: Step(P.DONE, (D.END,), _DEADLINE),
    E.CLOSED: Step(P.DONE, (D.END,), _CLOSED),
}
# What a description does while the ENI is looked at and the task is not known to have ended: a successful
# one brings a watch back to WATCHING (a flaky ENI described again is watched as before).
_DESCRIBED: Mapping[Event, Step] = {
    E.SETTLED: Step(P.DONE),
    E.LISTED: Step(P.WATCHING, (D.LOOK,)),
    E.LISTED_LATE: Step(P.OVERDUE, (D.ASK_WHEN_EXPECTED, D.LOOK)),
    E.DELETING: Step(P.WATCHING, (D.LOOK,)),
    E.STALE: Step(P.WATCHING, (D.ASK_NOW, D.LOOK)),  # ended without them, or a stale view: the task says
    E.MIXED: Step(P.WATCHING, (D.ASK_NOW, D.LOOK)),
    E.NOT_FOUND: Step(P.VANISHED, (D.ASK_NOW,)),
    E.DESCRIBE_REFUSED: Step(P.VANISHED, (D.ASK_NOW,)),
}


def _kept(phase: Phase) -> dict[Event, Step]:
    """What a reading (or no news) does while the task is not known to have ended: the phase is kept."""
    return {
        E.RUNNING: Step(phase),  # the ENI is looked at meanwhile: gone IPs settle it without a query
        E.SUCCESS: Step(P.DONE, (D.RELEASE_BY_TASK,)),
        E.FAILED: Step(P.ENDED, (D.LOOK_NOW,)),
        E.QUERY_FAILED: Step(phase, (D.ASK_AGAIN,)),
        E.UNREADABLE: Step(P.UNREADABLE, (D.LOOK_NOW,)),
        E.BUDGET_REFUSED: Step(phase, (D.LOOK_NOW,)),
        **_ENDINGS,
    }


def _rows(phase: Phase, rows: Mapping[Event, Step]) -> dict[tuple[Phase, Event], Step]:
    return {(phase, event): step for event, step in rows.items()}


TRANSITIONS: Mapping[tuple[Phase, Event], Step] = {
    **_rows(P.WATCHING, {**_DESCRIBED, **_kept(P.WATCHING), E.DESCRIBE_FAILED: Step(P.FLAKY, (D.LOOK,))}),
    # One look failed: a second failure in a row makes the task worth asking too (it may settle it: SUCCESS).
    **_rows(
        P.FLAKY,
        {**_DESCRIBED, **_kept(P.FLAKY), E.DESCRIBE_FAILED: Step(P.BLIND, (D.ASK_WHEN_EXPECTED, D.LOOK))},
    ),
    **_rows(
        P.BLIND,
        {
            **_DESCRIBED,
            **_kept(P.BLIND),
            E.DESCRIBE_FAILED: Step(P.BLIND, (D.LOOK,)),
            E.RUNNING: Step(P.BLIND, (D.ASK_LATER,)),
        },
    ),
    # API 2.0: asked past the expected latency, the task is asked on backoff until it ends; the ENI is still
    # looked at meanwhile (gone IPs settle it sooner). API 3.0 never gets here (its descriptions show state).
    **_rows(
        P.OVERDUE,
        {
            E.SETTLED: Step(P.DONE),
            E.LISTED: Step(P.OVERDUE, (D.LOOK,)),
            E.LISTED_LATE: Step(P.OVERDUE, (D.LOOK,)),
            E.NOT_FOUND: Step(P.VANISHED, (D.ASK_NOW,)),
            E.DESCRIBE_REFUSED: Step(P.VANISHED, (D.ASK_NOW,)),
            E.DESCRIBE_FAILED: Step(P.OVERDUE, (D.LOOK,)),
            **_kept(P.OVERDUE),
            E.RUNNING: Step(P.OVERDUE, (D.ASK_LATER,)),
        },
    ),
    # Read FAILED: only a look sent after the reading settles what is still listed (an earlier one may have
    # seen an IP the task then released). No more readings are asked for.
    **_rows(
        P.ENDED,
        {
            E.SETTLED: Step(P.DONE),
            E.LISTED: Step(P.ENDED, (D.LOOK_NOW,)),
            E.LISTED_LATE: Step(P.ENDED, (D.LOOK_NOW,)),
            E.DELETING: Step(P.ENDED, (D.LOOK_NOW,)),
            E.STALE: Step(P.ENDED, (D.LOOK_NOW,)),
            E.MIXED: Step(P.ENDED, (D.LOOK_NOW,)),
            E.NOT_FOUND: Step(P.DONE, (D.END,), _VANISHED_FAILED),
            E.DESCRIBE_REFUSED: Step(P.DONE, (D.END,), _VANISHED_FAILED),
            E.DESCRIBE_FAILED: Step(P.ENDED, (D.LOOK,)),
            E.BUDGET_REFUSED: Step(P.ENDED, (D.LOOK_NOW,)),
            **_ENDINGS,
        },
    ),
    # The task cannot be read: IPs listed and none of them DELETING (API 3.0) ended without being released;
    # one still DELETING means the task runs. Without IP states (API 2.0) listed IPs cannot be settled.
    **_rows(
        P.UNREADABLE,
        {
            E.SETTLED: Step(P.DONE),
            E.LISTED: Step(P.DONE, (D.END,), _UNREADABLE_LISTED),
            E.LISTED_LATE: Step(P.DONE, (D.END,), _UNREADABLE_LISTED),
            E.DELETING: Step(P.UNREADABLE, (D.LOOK,)),
            E.MIXED: Step(P.UNREADABLE, (D.LOOK,)),
            E.STALE: Step(P.DONE, (D.KEEP_BY_ENI,)),
            E.NOT_FOUND: Step(P.DONE, (D.END,), _VANISHED_UNREADABLE),
            E.DESCRIBE_REFUSED: Step(P.DONE, (D.END,), _VANISHED_UNREADABLE),
            E.DESCRIBE_FAILED: Step(P.UNREADABLE, (D.LOOK,)),
            E.BUDGET_REFUSED: Step(P.UNREADABLE, (D.LOOK_NOW,)),
            **_ENDINGS,
        },
    ),
    # The ENI is gone from view: only the task can tell, and only its SUCCESS tells anything of the IPs.
    **_rows(
        P.VANISHED,
        {
            E.RUNNING: Step(P.VANISHED, (D.ASK_LATER,)),
            E.SUCCESS: Step(P.DONE, (D.RELEASE_BY_TASK,)),
            E.FAILED: Step(P.DONE, (D.END,), _VANISHED_FAILED),
            E.QUERY_FAILED: Step(P.VANISHED, (D.ASK_AGAIN,)),
            E.UNREADABLE: Step(P.DONE, (D.END,), _VANISHED_UNREADABLE),
            **_ENDINGS,
        },
    ),
}

# Phases in which the ENI is looked at, and in which a due task query is still worth sending.
LOOKING = frozenset({P.WATCHING, P.FLAKY, P.BLIND, P.OVERDUE, P.ENDED, P.UNREADABLE})
ASKING = frozenset({P.WATCHING, P.FLAKY, P.BLIND, P.OVERDUE, P.VANISHED})
# Readings as events.
READINGS: Mapping[str, Event] = {"RUNNING": E.RUNNING, "SUCCESS": E.SUCCESS, "FAILED": E.FAILED}


@dataclass(eq=False, slots=True, init=False)
class Watch:
    """One accepted task being watched: its IPs still pending, those settled, and its phase.

    Times are ``Clock.monotonic`` readings taken by the engine: ``submitted_at`` when the submit was sent,
    ``ended_at`` when a FAILED reading was asked for, ``deadline`` when the watch gives up.
    """

    vpc_id: str
    eni_id: str
    task_id: str
    ips: tuple[str, ...]
    submitted_at: float
    registered_at: float
    deadline: float
    phase: Phase = Phase.WATCHING
    pending: list[str] = field(init=False)  # every IP at first (one per watch: built once, in ``__init__``)
    fates: dict[str, tuple[str, str]] = field(init=False)
    state: TaskState | None = None  # the task's last reading
    ended_at: float | None = None
    readings: int = 0
    error: BaseException | None = None

    def __init__(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: tuple[str, ...],
        submitted_at: float,
        registered_at: float,
        deadline: float,
    ) -> None:
        # Written out rather than generated: the generated one would build ``pending`` twice (a default,
        # then ``__post_init__``), and a watch is built per task.
        self.vpc_id, self.eni_id, self.task_id, self.ips = vpc_id, eni_id, task_id, ips
        self.submitted_at, self.registered_at, self.deadline = submitted_at, registered_at, deadline
        self.phase, self.pending, self.fates = _WATCHING, list(ips), {}
        self.state, self.ended_at, self.readings, self.error = None, None, 0, None

    def settle(self, ip: str, fate: str, by: str) -> None:
        """Record ``ip``'s fate, as established by ``by`` (``"eni"`` or ``"task"``)."""
        self.pending.remove(ip)
        self.fates[ip] = (fate, by)

    def step(self, event: Event) -> Step:
        """Apply ``event``: move to the table's next phase and settle the IPs it settles; return the step.

        Raises ``TransitionError`` for a pair the table does not hold."""
        step = TRANSITIONS.get((self.phase, event))
        if step is None:
            raise TransitionError(f"task {self.task_id}: no transition for {event} in phase {self.phase}")
        self.phase = step.phase
        if _RELEASE_BY_TASK in step.do:
            for ip in list(self.pending):
                self.settle(ip, RELEASED, BY_TASK)
        if _KEEP_BY_ENI in step.do:
            for ip in list(self.pending):
                self.settle(ip, NOT_RELEASED, BY_ENI)
        return step

    def read(self, state: TaskState, at: float) -> Event:
        """Take one reading of the task (asked at ``at``); return it as an event."""
        self.readings += 1
        self.state = state
        self.error = None
        event = READINGS[state.status.value]
        if event is E.FAILED:
            self.ended_at = at
        return event

    def fate(self, why: str | None = None) -> ChunkFate:
        """The task's fate, IP by IP; ``why`` (a ``Step.why``) says why IPs still pending are unknown."""
        fates = self.fates
        released: list[str] = []
        not_released: list[str] = []
        unknown: list[str] = []
        for ip in self.ips:  # one pass (every watch ends here)
            seen = fates.get(ip)
            if seen is None:
                unknown.append(ip)
            elif seen[0] == RELEASED:
                released.append(ip)
            elif seen[0] == NOT_RELEASED:
                not_released.append(ip)
        # By position, in the order of ChunkFate's fields: a call naming them costs ~3,000 instructions more
        # (one per watch), and ``tests/test_tracker_table.py`` checks the fields each value lands in.
        return ChunkFate(
            self.vpc_id,
            self.eni_id,
            self.task_id,
            self.ips,
            tuple(released),  # released
            tuple(not_released),  # not_released
            tuple(unknown),  # unknown
            {ip: by for ip, (_, by) in fates.items()},  # confirmed_by
            self.state,  # state
            why if unknown else None,  # reason
            self.error if unknown else None,  # error
        )

    def final_status(self) -> str:
        """The status reported when the watch ends (for metrics): the last reading's, else what was seen."""
        if self.state is not None:
            return self.state.status.value
        if self.pending:
            return "UNKNOWN"
        for fate, _ in self.fates.values():  # a loop, not a generator: every watch ends here
            if fate == NOT_RELEASED:
                return "FAILED"
        return "SUCCESS"


def read_description(
    watch: Watch, info: EniInfo | None, *, sent: float, lists_state: bool, late: bool = False
) -> Event:
    """Settle what one description of the watch's ENI (sent at ``sent``) shows, and sum it up as an event.

    ``info`` ``None`` (or an ENI in another VPC than the task's) is not found. An IP gone is released; one
    still listed is not released when the description was sent after a FAILED reading, and otherwise pending:
    DELETING, or (API 3.0) listed in another state. ``late``: the engine's word that the task has run past
    its expected latency (API 2.0, which shows no state, then asks it).
    """
    if info is None or info.vpc_id != watch.vpc_id:
        return E.NOT_FOUND
    after_end = watch.ended_at is not None and sent >= watch.ended_at
    deleting = stale = False
    for ip in list(watch.pending):
        if not info.listed(ip):
            watch.settle(ip, RELEASED, BY_ENI)
        elif after_end:
            watch.settle(ip, NOT_RELEASED, BY_ENI)
        elif lists_state and info.ip_states.get(ip, "DELETING") != "DELETING":
            stale = True
        else:
            deleting = True
    if not watch.pending:
        return _SETTLED
    if not lists_state:
        return E.LISTED_LATE if late else E.LISTED
    if stale:
        return E.MIXED if deleting else E.STALE
    return E.DELETING


__all__ = [
    "ASKING",
    "LOOKING",
    "TRANSITIONS",
    "Do",
    "Event",
    "Phase",
    "Step",
    "TransitionError",
    "Watch",
    "read_description",
]
