"""The one release path: every way of releasing an ENI's IPs goes through ``Releaser.release``.

``EniClient.unassign`` (then ``Outcome.raise_for_failure``), ``unassign_many`` and so ``batch``, ``resume`` and
the service's engine, and ``unassign --no-wait`` all call it. It returns the item's ``Outcome`` and raises
nothing of ours; cancellation alone passes through (the outcome passed in keeps what was learnt).

Rules: submit, wait, and look at the ENI whenever unsure. A submit that fails is one of a few named cases,
chosen by the error's class from ``SUBMIT_FAILURES``: after an ambiguous submit (read timeout, connection lost
after sending, HTTP 5xx, ``InternalError``) the ENI is described before anything is resubmitted; IPs already
gone count as released only when the whole submit is gone or we saw them on the ENI before (else they may
never have been there, and are ``unknown``), IPs still there are submitted again. An IP the server names as
not on the ENI is ``absent`` (D20) when the ENI confirms it and no earlier call of ours may have released
it (then it is released). A primary IP is refused and the rest go on. Before the first submit the ENI is
described when asked (preflight) and always where the release call carries no VPC (API 3.0): a VPC that
does not match is refused there as API 2.0 refuses it. An accepted task is handed to the watcher (the
client's tracker), whose ``ChunkFate`` is written into the outcome IP by IP: that is the one place a fate
becomes an error. A credential failure ends the item with ``Outcome.credentials_error`` set (a batch stops);
a ``gate`` that closes stops any further submit and interrupts the outcome. Every decision is written into
the outcome. Rounds and looks are bounded (``MAX_ROUNDS``, or the deadline below; ``LookPolicy``), so a
release always ends.

A release given a ``deadline`` (the service's accepted work) outlasts outages: a submit that surely had no
effect (never connected, throttled) and a look or a watch that failed transiently, each after its own call
retries, are tried again on the ``OutagePolicy`` backoff until the deadline passes, the last error shown in
the outcome meanwhile (and journalled). Only then do the cases above decide, so that IPs sent and not seen
are ``unknown``. Ambiguous submits are then bounded by the deadline, not ``MAX_ROUNDS``: from the second in a
row each look (still made before every resubmit) waits on the backoff first, so a flapping 5xx neither fails
the item early nor hammers the API. A chunk is in doubt (journalled as being sent) only while a try that may
have had an effect is out: each try is journalled just before it is sent, one that surely had none is taken
back before the wait (a cancel wins meanwhile), and refused credentials are journalled as the item's reason
to wait (``Patience.refused``). Without a deadline (the library's and ``batch``'s default) the calls' own
bounds and ``MAX_ROUNDS`` decide.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from eni_async import validation
from eni_async.calls import Calls, Gate, StopSubmitting
from eni_async.errors import (
    AuthError,
    EniAsyncError,
    EniNotFoundError,
    IpNotOnEniError,
    NotFoundError,
    OutcomeUnknownError,
    PrimaryIpError,
    TaskFailedError,
    TaskTimeoutError,
)
from eni_async.models import ChunkFate, EniInfo, Submitted, TaskStatus
from eni_async.outcomes import Item, Outcome
from eni_async.patience import Patience, Waiting, outlastable, taken_again
from eni_async.policy import LookPolicy, OutagePolicy

if TYPE_CHECKING:
    from eni_async.journal import ResumePlan

log = logging.getLogger("eni_async.release")

UNASSIGN = "UnassignPrivateIpAddresses"
# Resubmissions of one chunk after ambiguous answers before the item is given up as failed (without a
# deadline; with one, the deadline bounds them).
MAX_ROUNDS = 6


class Watcher(Protocol):
    """What the release path needs of the tracker: watch an accepted task, describe one ENI."""

    async def track(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: Sequence[str],
        *,
        submitted_at: float | None = None,
        timeout: float | None = None,
    ) -> ChunkFate: ...

    def describe(self, eni_id: str) -> Awaitable[EniInfo | None]: ...


class Recorder(Protocol):
    """Told of every step, before the work it announces goes on (the journal implements it): an item taken
    in (``add`` returns its key), a chunk about to be sent, a task accepted, progress (with the tasks seen
    ending, or the chunk's try ``taken_back``: it surely had no effect), the final outcome."""

    async def add(self, item: Item) -> int: ...

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None: ...

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None: ...

    async def progressed(
        self, item: Item, outcome: Outcome, *, ended: Collection[str] = (), taken_back: bool = False
    ) -> None: ...

    async def finished(self, key: int, outcome: Outcome) -> None: ...


def decide(outcome: Outcome, decision: str) -> None:
    """Record a reconciliation decision in the outcome and in the log (INFO), with the ENI."""
    outcome.decisions.append(decision)
    log.info("%s: %s", outcome.eni_id, decision)


_NOTHING: frozenset[str] = frozenset()


def _taken(sent: set[str]) -> AbstractSet[str]:
    """What an outcome's ``sent`` holds now (most often nothing: one empty set shared, not one made)."""
    return set(sent) if sent else _NOTHING


@dataclass(slots=True)
class _Chunk:
    """One chunk on its way: what is left to submit, and what the rounds so far know."""

    item: Item
    outcome: Outcome
    todo: tuple[str, ...]
    seen: set[str]  # IPs a describe of ours found on the ENI
    recorder: Recorder | None
    gate: Gate | None
    timeout: float | None
    waiting: Waiting | None  # the item's deadline, if it has one
    earlier: AbstractSet[str] = frozenset()  # IPs an earlier call of ours may have released (``_try``)
    ambiguous: int = 0  # ambiguous answers so far
    started: float = 0.0  # when the last try of the submit was sent (``Clock.monotonic``)

    def unsend(self) -> None:
        """The chunk was not sent after all (IPs an earlier call of ours was sent stay sent)."""
        self.outcome.sent.difference_update(ip for ip in self.todo if ip not in self.earlier)


class Releaser:
    """The release path over a call pipeline and the watcher of its tasks (see the module docstring).

    ``looks`` says how hard to try to describe an ENI before an IP's fate is left in doubt; ``outage`` how
    an item with a deadline waits out an outage (``patience``; its ``on_outage`` hears of each wait)."""

    def __init__(
        self,
        calls: Calls,
        watcher: Watcher,
        *,
        looks: LookPolicy = LookPolicy(),  # noqa: B008 - frozen value
        outage: OutagePolicy = OutagePolicy(),  # noqa: B008 - frozen value
    ) -> None:
        self.calls = calls
        self.watcher = watcher
        self.looks = looks
        self.patience = Patience(calls.clock, outage)

    def __repr__(self) -> str:
        return f"Releaser({self.calls!r})"

    async def release(
        self,
        item: Item,
        outcome: Outcome | None = None,
        *,
        plan: ResumePlan | None = None,
        recorder: Recorder | None = None,
        look: bool | None = None,
        gate: Gate | None = None,
        timeout: float | None = None,
        watch: bool = True,
        deadline: float | None = None,
    ) -> Outcome:
        """Release the item's IPs (ids and IPs already validated) chunk by chunk and return the settled
        outcome (``outcome``, when given, is filled in: a resumed item's carries what the journal knew).

        ``plan``: resume, polling its known tasks (never resubmitted) and reconciling its chunk in doubt
        first. ``look``: describe the ENI before the first submit (``None``: where the release call names
        no VPC), done only while nothing of the item was sent. ``gate``: once true, nothing more is submitted
        and the outcome is interrupted. ``timeout`` bounds each mutex wait and each task's watch (default
        the poll policy's). ``watch=False`` submits without watching (``--no-wait``): the IPs of accepted
        tasks are ``unknown`` and the status ``submitted``. ``deadline`` (a ``Clock.monotonic`` reading):
        outages are waited out until then (see the module docstring)."""
        outcome = outcome if outcome is not None else Outcome.for_item(item)
        waiting = None
        if deadline is not None:
            waiting = self.patience.items[id(outcome)] = Waiting(deadline, item, gate, recorder)
        if outcome.error is not None:  # (only an error can be a refusal of the credentials)
            taken_again(outcome)
        try:
            todo = item.ips if plan is None else await self._resume(item, outcome, plan, recorder, timeout)
            if look is None:
                look = not self.calls.capabilities.release_names_vpc
            seen: set[str] = set()
            if todo and look and not outcome.sent and not outcome.task_ids:
                # The describe awaited here, not in a coroutine of its own (a frame less at its resumption).
                described = (
                    self.watcher.describe(item.eni_id)
                    if waiting is None
                    else self.patience.outlast(
                        outcome, "describing", lambda: self.watcher.describe(item.eni_id)
                    )
                )
                todo = _worth_submitting(item, outcome, todo, await described)
                seen.update(todo)
            # Each chunk's first try and its watch are awaited here, not in a coroutine per chunk: every
            # resumption of the transport's and the watcher's coroutines goes through each frame above them.
            for chunk in validation.chunks(todo):
                if gate is not None and gate():
                    raise StopSubmitting
                if waiting is None and recorder is None:
                    # The common case: the try ``_try`` and ``_send`` would make, made here, and no _Chunk
                    # unless it fails (tests/test_release.py holds both ways to the same calls and outcome).
                    earlier = _taken(outcome.sent)
                    outcome.attempts += 1
                    outcome.sent.update(chunk)
                    started = self.calls.clock.monotonic()
                    try:
                        sent: Submitted | None = await self.calls.submit_when_free(
                            item.vpc_id, item.eni_id, chunk, gate=gate, timeout=timeout
                        )
                    except (StopSubmitting, EniAsyncError) as exc:
                        c = _Chunk(item, outcome, chunk, seen, None, gate, timeout, None, earlier, 0, started)
                        sent = await self._rounds(c, exc)
                        chunk, started = c.todo, c.started
                else:
                    c = _Chunk(item, outcome, chunk, seen, recorder, gate, timeout, waiting)
                    try:
                        sent = await self._try(c)
                    except (StopSubmitting, EniAsyncError) as exc:
                        sent = await self._rounds(c, exc)
                    chunk, started = c.todo, c.started
                if sent is None:  # settled without a task
                    continue
                outcome.task_ids.append(sent.task_id)
                if sent.request_id:
                    outcome.request_ids.append(sent.request_id)
                if recorder is not None:
                    await recorder.submitted(item, sent.task_id, sent.request_id, chunk, outcome)
                if not watch:  # --no-wait: accepted, deliberately not watched
                    outcome.unknown.extend(chunk)
                    continue
                fate = await self._watch(
                    item, outcome, sent.task_id, chunk, submitted_at=started, timeout=timeout
                )
                ended = self._fated(outcome, fate, sent.request_id, started)
                if recorder is not None:
                    await recorder.progressed(item, outcome, ended=(sent.task_id,) if ended else ())
        except StopSubmitting:
            return outcome.interrupt("stopped")
        except AuthError as exc:  # every later call would fail the same way: the item ends here
            shown = outcome.error is None
            outcome.fail(exc)
            outcome.credentials_error = exc
            await self.patience.refused(outcome, shown=shown)
        except EniAsyncError as exc:  # a look before the first submit that failed
            outcome.fail(exc)
        finally:
            self.patience.items.pop(id(outcome), None)
        return outcome.settle(watched=watch)

    # -- before submitting ----------------------------------------------------------------------------

    async def _resume(
        self, item: Item, outcome: Outcome, plan: ResumePlan, recorder: Recorder | None, timeout: float | None
    ) -> tuple[str, ...]:
        """Poll the tasks a journal knew, reconcile its chunk in doubt; return the IPs still to submit."""
        for _task_id, _request_id, chunk in plan.tasks:
            outcome.sent.update(chunk)
        outcome.sent.update(plan.in_doubt)
        for task_id, request_id, chunk in plan.tasks:
            left = tuple(ip for ip in chunk if ip not in outcome.accounted())  # a fate seen before stays
            decide(outcome, f"resumed: polling task {task_id}")
            ended = not left or self._fated(
                outcome,
                await self._watch(item, outcome, task_id, left, submitted_at=None, timeout=timeout),
                request_id,
                None,
            )
            if recorder is not None:  # a task not seen ending (and the chunk in doubt) stays journalled
                await recorder.progressed(item, outcome, ended=(task_id,) if ended else ())
        if plan.in_doubt:
            still = await self._in_doubt(outcome, plan.in_doubt, "resumed with a submit in doubt")
            if still is None:
                outcome.unknown.extend(plan.in_doubt)
        done = outcome.accounted()
        return tuple(ip for ip in item.ips if ip not in done)

    # -- one chunk ------------------------------------------------------------------------------------

    def _try(self, c: _Chunk) -> Awaitable[Submitted]:
        """A round: one try of the chunk's submit, waited out on the backoff until the deadline when the
        item has one (else ``_send`` itself: no frame between). The gate is asked before, by the caller."""
        outcome = c.outcome
        c.earlier = _taken(outcome.sent)
        outcome.attempts += 1
        if c.waiting is None:
            return self._send(c, False)
        return self.patience.outlast(outcome, "submitting", functools.partial(self._send, c, True))

    async def _rounds(self, c: _Chunk, failed: StopSubmitting | EniAsyncError) -> Submitted | None:
        """After a try of the chunk failed (``failed``): its case decides, and further rounds resubmit what
        is left, until a submit is accepted (returned) or every IP is settled (``None``). Without a deadline,
        ``MAX_ROUNDS`` tries at most; with one, the deadline bounds them (each round after an ambiguous
        answer paced on the outage backoff before its look, in ``_ambiguous``)."""
        outcome, waiting = c.outcome, c.waiting
        why = "too many ambiguous rounds"
        for tried in itertools.count(1):
            if isinstance(failed, (StopSubmitting, AuthError)):
                # Refused before any effect (the mutex at every try, or the credentials): not sent after all.
                c.unsend()
                raise failed
            left = await _case_for(failed)(self, c, failed)
            if not left:  # the case settled every IP
                return None
            c.todo = left
            if waiting is None and tried >= MAX_ROUNDS:
                break
            if c.gate is not None and c.gate():
                raise StopSubmitting
            if waiting is not None and self.calls.clock.monotonic() >= waiting.deadline:
                why = f"the release's deadline passed after {tried} ambiguous round(s)"
                break
            try:
                return await self._try(c)
            except (StopSubmitting, EniAsyncError) as exc:
                failed = exc
        outcome.fail(OutcomeUnknownError(UNASSIGN, c.item.vpc_id, c.item.eni_id, c.todo, RuntimeError(why)))
        await self._settle_by_looking(outcome, c.todo, why, doubt=True)
        return None

    def _send(self, c: _Chunk, waits: bool) -> Awaitable[Submitted]:
        """One try of a chunk's submit, announced to the recorder just before it is sent (a cancel that won
        meanwhile refuses it). One that failed with surely no effect and will be waited out (``waits``), or whose
        credentials were refused, is taken back, journalled before the wait: the chunk is then not in doubt,
        and a cancel may win. With neither a recorder nor a wait, the submit itself (no frame between)."""
        if waits or c.recorder is not None:
            return self._send_recorded(c, waits)
        c.outcome.sent.update(c.todo)
        c.started = self.calls.clock.monotonic()
        return self.calls.submit_when_free(
            c.item.vpc_id, c.item.eni_id, c.todo, gate=c.gate, timeout=c.timeout
        )

    async def _send_recorded(self, c: _Chunk, waits: bool) -> Submitted:
        c.outcome.sent.update(c.todo)
        if c.recorder is not None:
            try:
                await c.recorder.submitting(c.item, c.todo, c.outcome)
            except BaseException:  # refused (the release was cancelled, the lease lost): nothing sent
                c.unsend()
                raise
        c.started = self.calls.clock.monotonic()
        try:
            return await self.calls.submit_when_free(
                c.item.vpc_id, c.item.eni_id, c.todo, gate=c.gate, timeout=c.timeout
            )
        except EniAsyncError as exc:
            if waits and (isinstance(exc, AuthError) or (exc.no_effect and outlastable(exc))):
                c.unsend()
                if c.recorder is not None:
                    await c.recorder.progressed(c.item, c.outcome, taken_back=True)
            raise

    def _watch(
        self,
        item: Item,
        outcome: Outcome,
        task_id: str,
        chunk: tuple[str, ...],
        *,
        submitted_at: float | None,
        timeout: float | None,
    ) -> Awaitable[ChunkFate]:
        """Hand an accepted task to the watcher: the chunk's fate, for ``_fated``. Without a deadline, the
        watcher's own watch (no frame of ours between: it is resumed at every reading of the task)."""
        limit = self.calls.poll.timeout if timeout is None else timeout
        waiting = self.patience.items.get(id(outcome))
        if waiting is None:
            return self.watcher.track(
                item.vpc_id, item.eni_id, task_id, chunk, submitted_at=submitted_at, timeout=limit
            )
        return self._watch_until(waiting, item, outcome, task_id, chunk, submitted_at, limit)

    async def _watch_until(
        self,
        waiting: Waiting,
        item: Item,
        outcome: Outcome,
        task_id: str,
        chunk: tuple[str, ...],
        submitted_at: float | None,
        limit: float,
    ) -> ChunkFate:
        """The watch of an item with a deadline: one that ended with IPs unseen (its own deadline, or failing
        calls) while the task was not seen ending is started again until the item's deadline passes; every
        watch of it ends by that deadline (IPs then unseen are ``unknown``)."""
        for again in itertools.count():
            self.patience.watching.add(id(outcome))
            try:
                fate = await self.watcher.track(
                    item.vpc_id, item.eni_id, task_id, chunk,
                    submitted_at=submitted_at, timeout=self.patience.left(outcome, limit),
                )  # fmt: skip
            finally:
                self.patience.watching.discard(id(outcome))
            if fate.closed:
                break
            if again == 0:
                decide(outcome, f"{fate.reason or f'task {task_id} not confirmed'}: watching it again")
                if waiting.recorder is not None:
                    await waiting.recorder.progressed(item, outcome)
            if not await self.patience.pause_before_watching_again(outcome, again):
                break
        return fate

    def _fated(
        self, outcome: Outcome, fate: ChunkFate, request_id: str | None, submitted_at: float | None
    ) -> bool:
        """Write a watched chunk's fate into the outcome; whether its task need not be polled again: every
        IP's fate seen, or the task seen ending."""
        waited = self.calls.clock.monotonic() - submitted_at if submitted_at is not None else 0.0
        record_fate(outcome, fate, request_id, waited=waited)
        return fate.closed

    # -- looking --------------------------------------------------------------------------------------

    async def _describe(self, outcome: Outcome) -> EniInfo | None:
        """Describe the ENI, trying ``looks.rounds`` times (each call already retried): it is how we avoid
        guessing. ``None``: it could not be described (or was not found)."""
        for pause in itertools.chain(self.looks.pauses(), [None]):
            try:
                return await self.patience.outlast(
                    outcome, "describing", lambda: self.watcher.describe(outcome.eni_id)
                )
            except AuthError:
                raise
            except EniAsyncError as exc:
                if pause is None:
                    decide(outcome, f"could not describe the ENI ({exc})")
                    return None
                await self.calls.clock.sleep(pause)
        return None  # pragma: no cover - the last pause is None

    async def _settle_by_looking(
        self, outcome: Outcome, chunk: tuple[str, ...], why: str, *, doubt: bool = False
    ) -> None:
        """Describe the ENI: IPs gone are released; those present are not released (in doubt if a task may
        still run)."""
        info = await self._describe(outcome)
        if info is None:
            outcome.unknown.extend(chunk)
            decide(outcome, f"{why}; could not describe the ENI: {len(chunk)} IP(s) in doubt")
            return
        gone, present = _split(info, chunk)
        outcome.released.extend(gone)
        (outcome.unknown if doubt else outcome.not_released).extend(present)
        state = "in doubt (a task may still run)" if doubt else "still assigned"
        decide(outcome, f"{why}; described ENI: {len(gone)} gone, {len(present)} {state}")

    async def _in_doubt(
        self, outcome: Outcome, todo: tuple[str, ...], why: str, *, seen: set[str] | None = None
    ) -> tuple[str, ...] | None:
        """After an ambiguous submit: return the IPs still present (``None``: the ENI could not be described).

        A gone IP is released when a describe of ours saw it on the ENI before (``seen``, updated here).
        Otherwise the call may have been refused because that IP was never there, or a call of ours may have
        released it (a task that then failed, or this one): nothing tells them apart, so its fate is
        ``unknown``, never guessed. Without ``seen`` (a resume: what the earlier run's describes saw is not
        journalled), every IP of the submit gone is taken as the call's effect (all or nothing).
        """
        info = await self._describe(outcome)
        if info is None:
            return None
        gone, present = _split(info, todo)
        known = seen if seen is not None else set()
        doubtful = [ip for ip in gone if ip not in known and (present or seen is not None)]
        outcome.released.extend(ip for ip in gone if ip not in doubtful)
        outcome.unknown.extend(doubtful)
        known.update(present)
        decide(
            outcome,
            f"{why}: described ENI, {len(gone) - len(doubtful)} already gone (released), "
            f"{len(present)} still assigned (resubmitted)",
        )
        if doubtful and present:
            decide(
                outcome,
                f"{', '.join(doubtful)} gone but never seen on the ENI, while others of the submit are still "
                "there (refused for an IP not on the ENI, or released by a task that then failed): unknown",
            )
        elif doubtful:
            decide(
                outcome,
                f"{', '.join(doubtful)} gone but never seen on the ENI (released by this call, or never there "
                "and the call refused): unknown",
            )
        return tuple(present)


def record_fate(
    outcome: Outcome, fate: ChunkFate, request_id: str | None = None, *, waited: float = 0.0
) -> None:
    """Write a chunk's fate into the outcome, IP by IP, with how each was established and why any is in
    doubt: the one place a fate becomes an error (``TaskFailedError`` for IPs a task left on the ENI,
    ``TaskTimeoutError`` or the error that kept them unseen for IPs in doubt)."""
    outcome.released.extend(fate.released)
    outcome.not_released.extend(fate.not_released)
    outcome.unknown.extend(fate.unknown)
    outcome.confirmed_by.update(fate.confirmed_by)
    outcome.fate = fate
    state = fate.state
    failed = state is not None and state.status is TaskStatus.FAILED
    if fate.not_released or (
        failed and fate.unknown
    ):  # the task's failure is the error, even where a look then failed
        outcome.fail(
            TaskFailedError(
                fate.task_id,
                eni_id=fate.eni_id,
                ips=fate.ips,
                request_id=request_id or (state.request_id if state is not None else None),
                output=state.output if state is not None else None,
            )
        )
    if fate.unknown:
        error = fate.error
        if not isinstance(error, EniAsyncError):
            last = state.status.value if state is not None else None
            error = TaskTimeoutError(fate.task_id, last, waited)
        outcome.fail(error)
        decide(
            outcome,
            f"{fate.reason or f'task {fate.task_id} not confirmed'}: {len(fate.released)} gone, "
            f"{len(fate.unknown)} in doubt",
        )
    elif fate.not_released or failed:
        ended = f"task {fate.task_id} {state.status.value}" if state is not None else f"task {fate.task_id}"
        decide(
            outcome,
            f"{ended}; described ENI: {len(fate.released)} gone, {len(fate.not_released)} still assigned",
        )


def _worth_submitting(
    item: Item, outcome: Outcome, todo: tuple[str, ...], info: EniInfo | None
) -> tuple[str, ...]:
    """The IPs worth submitting, from the describe made before any submit.

    An ENI that does not exist, or is not in the item's VPC, is refused (every IP ``not_released``); IPs
    not on it are ``absent``; a primary IP is refused without a request (``not_released``).
    """
    if info is None or info.vpc_id != item.vpc_id:
        where = f" (it is in {info.vpc_id})" if info is not None else ""
        outcome.fail(
            EniNotFoundError(
                "InvalidNetworkInterface.NotFound", f"{item.eni_id} not found in {item.vpc_id}{where}"
            )
        )
        outcome.not_released.extend(todo)
        decide(outcome, f"described before submitting: ENI not in {item.vpc_id}{where}; nothing submitted")
        return ()
    worth: list[str] = []
    for ip in todo:
        if ip == info.primary_ip:
            outcome.not_released.append(ip)
            decide(outcome, f"described before submitting: {ip} is the primary IP; refused without a request")
            outcome.fail(
                PrimaryIpError(
                    "InvalidPrivateip.IsPrimary",
                    f"{ip} is the primary IP of {item.eni_id} and cannot be released",
                )
            )
        elif ip not in info.secondary_ips:
            outcome.absent.append(ip)
            decide(outcome, f"described before submitting: {ip} is not on {item.eni_id}; absent")
        else:
            worth.append(ip)
    return tuple(worth)


def _split(info: EniInfo | None, ips: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(gone, present) for ``ips`` on the ENI as described."""
    on_eni = set(info.secondary_ips) if info else set()
    if info and info.primary_ip:
        on_eni.add(info.primary_ip)
    return [ip for ip in ips if ip not in on_eni], [ip for ip in ips if ip in on_eni]


# -- what a failed submit means: one named case per kind of answer ------------------------------------

Case = Callable[[Releaser, _Chunk, EniAsyncError], Awaitable[tuple[str, ...] | None]]


async def _ambiguous(r: Releaser, c: _Chunk, exc: EniAsyncError) -> tuple[str, ...] | None:
    """The server may have acted: describe, count what is gone, resubmit what is still there."""
    cause = exc.cause if isinstance(exc, OutcomeUnknownError) else exc
    log.warning("%s: %s: outcome unknown; describing the ENI before resubmitting", c.item.eni_id, cause)
    c.ambiguous += 1
    if c.ambiguous > 1:  # a second ambiguous answer in a row: under a deadline, wait before looking again
        await r.patience.pause_before_looking_again(c.outcome, c.ambiguous - 2)
    doubts = len(c.outcome.unknown)
    still = await r._in_doubt(c.outcome, c.todo, f"ambiguous submit ({cause})", seen=c.seen)
    if still is None:
        c.outcome.fail(exc)
        c.outcome.unknown.extend(c.todo)
        return None
    if len(c.outcome.unknown) > doubts:
        c.outcome.fail(exc)
    return still


async def _not_on_eni(r: Releaser, c: _Chunk, exc: EniAsyncError) -> tuple[str, ...] | None:
    """The server named an IP as not on the ENI, or as its primary: describe, and resubmit the rest."""
    outcome, todo = c.outcome, c.todo
    info = await r._describe(outcome)
    if info is None:
        outcome.fail(exc)
        outcome.unknown.extend(ip for ip in todo if ip in c.earlier)
        outcome.not_released.extend(ip for ip in todo if ip not in c.earlier)
        return None
    gone, present = _split(info, todo)
    ours = [ip for ip in gone if ip in c.earlier]
    if ours:
        outcome.released.extend(ours)
        decide(outcome, f"{', '.join(ours)} gone after an earlier call of ours: counted as released")
    never = [ip for ip in gone if ip not in c.earlier]
    if never:
        outcome.absent.extend(never)
        decide(outcome, f"{', '.join(never)} not on the ENI: absent (nothing to release)")
    if info.primary_ip in present:
        outcome.fail(exc)
        outcome.not_released.append(info.primary_ip)
        decide(outcome, f"{info.primary_ip} is the primary IP: refused")
        present.remove(info.primary_ip)
    if tuple(present) == todo:  # the server's answer contradicts the ENI: give up
        outcome.fail(exc)
        outcome.not_released.extend(present)
        return None
    return tuple(present)


async def _gone(r: Releaser, c: _Chunk, exc: EniAsyncError) -> tuple[str, ...] | None:
    """The VPC or the ENI does not exist: nothing on it can be released."""
    c.outcome.fail(exc)
    c.outcome.not_released.extend(c.todo)
    return None


async def _refused(r: Releaser, c: _Chunk, exc: EniAsyncError) -> tuple[str, ...] | None:
    """Any other answer: nothing more is sent for the chunk. IPs an earlier call of ours may still be
    releasing (a task our ambiguous submit started holds the ENI) are settled by a look, in doubt."""
    c.outcome.fail(exc)
    if c.earlier & set(c.todo):
        await r._settle_by_looking(c.outcome, c.todo, f"gave up ({exc})", doubt=True)
    else:
        c.outcome.not_released.extend(c.todo)
    return None


# The error's class -> its case; the most specific class in the table wins (``IpNotOnEniError`` is a
# ``NotFoundError`` too), and ``EniAsyncError`` catches the rest.
SUBMIT_FAILURES: Mapping[type[EniAsyncError], Case] = {
    OutcomeUnknownError: _ambiguous,
    IpNotOnEniError: _not_on_eni,
    PrimaryIpError: _not_on_eni,
    NotFoundError: _gone,
    EniAsyncError: _refused,
}


def _case_for(exc: EniAsyncError) -> Case:
    return next(SUBMIT_FAILURES[cls] for cls in type(exc).__mro__ if cls in SUBMIT_FAILURES)


__all__ = [
    "SUBMIT_FAILURES", "Gate", "Recorder", "Releaser", "StopSubmitting", "Watcher", "decide", "record_fate",
]  # fmt: skip
