"""Releasing one ENI's IPs without ever guessing: submit, wait, and look at the ENI whenever unsure.

After an ambiguous submit (read timeout, connection lost after sending, HTTP 5xx, ``InternalError``) or a
FAILED task, the ENI is described before anything is resubmitted: IPs already gone count as released, IPs
still there are submitted again (ambiguous case) or reported not released (FAILED task, D12). After an
ambiguous submit a gone IP is released only when the whole submit is gone or we saw it on the ENI before;
else it may never have been there, and is ``unknown``. An IP that is
not on the ENI when we look is ``absent`` (D20): found so by a describe before the first submit, or named by
the server as not on the ENI and gone when described (unless an earlier call of ours may have released it,
which makes it released). A primary IP is refused and the rest go on. Before the first submit the ENI is
described when asked (preflight) and always on API 3.0, whose release call carries no VPC: a VPC that does
not match is refused there as API 2.0 refuses it. A ``gate`` that closes stops any further submit
(``StopSubmitting``); the caller then closes the outcome with ``Outcome.interrupt``. Every decision is
written into the outcome. Rounds are bounded, so an item always ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from eni_async import validation
from eni_async.calls import Calls, Gate, StopSubmitting
from eni_async.errors import (
    AuthError,
    EniAsyncError,
    IpNotOnEniError,
    NotFoundError,
    OutcomeUnknownError,
    PrimaryIpError,
    TaskFailedError,
    TaskTimeoutError,
)
from eni_async.models import ChunkFate, EniInfo, TaskStatus
from eni_async.outcomes import Item, Outcome

if TYPE_CHECKING:
    from eni_async.tracker import Tracker

log = logging.getLogger("eni_async.reconcile")

# Resubmissions of one chunk after ambiguous answers before the item is given up as failed.
MAX_ROUNDS = 6
# Describe calls (each already retried by the retry policy) before an IP's fate is left in doubt.
DESCRIBE_ROUNDS = 3


def decide(outcome: Outcome, decision: str) -> None:
    """Record a reconciliation decision in the outcome and in the log (INFO), with the ENI."""
    outcome.decisions.append(decision)
    log.info("%s: %s", outcome.eni_id, decision)


class Releaser(Calls, Protocol):
    """What releasing needs of a client (``EniClient`` is one): the call pipeline and its tracker."""

    @property
    def tracker(self) -> Tracker: ...

    async def describe_eni(self, eni_id: str) -> EniInfo | None: ...


class Recorder(Protocol):
    """Told of every step, before the work it announces goes on (the journal implements it): an item taken
    in (``add`` returns its key), a chunk about to be sent, a task accepted, progress, the final outcome."""

    async def add(self, item: Item) -> int: ...

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None: ...

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None: ...

    async def progressed(self, item: Item, outcome: Outcome) -> None: ...

    async def finished(self, key: int, outcome: Outcome) -> None: ...


def _split(info: EniInfo | None, ips: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(gone, present) for ``ips`` on the ENI as described."""
    on_eni = set(info.secondary_ips) if info else set()
    if info and info.primary_ip:
        on_eni.add(info.primary_ip)
    return [ip for ip in ips if ip not in on_eni], [ip for ip in ips if ip in on_eni]


async def look_first(client: Releaser, item: Item, outcome: Outcome) -> tuple[str, ...]:
    """Describe the ENI before any submit; return the IPs worth submitting.

    An ENI that does not exist, or is not in the item's VPC, is refused (every IP ``not_released``); IPs not
    on it are ``absent``; a primary IP is refused without a request (``not_released``).
    """
    info = await client.describe_eni(item.eni_id)
    if info is None or info.vpc_id != item.vpc_id:
        where = f" (it is in {info.vpc_id})" if info is not None else ""
        outcome.error = {
            "code": "InvalidNetworkInterface.NotFound",
            "message": f"{item.eni_id} not found in {item.vpc_id}{where}",
        }
        outcome.not_released.extend(ip for ip in item.ips if ip not in outcome.accounted())
        decide(outcome, f"described before submitting: ENI not in {item.vpc_id}{where}; nothing submitted")
        return ()
    todo: list[str] = []
    for ip in item.ips:
        if ip in outcome.accounted():
            continue
        if ip == info.primary_ip:
            outcome.not_released.append(ip)
            decide(outcome, f"described before submitting: {ip} is the primary IP; refused without a request")
            outcome.error = outcome.error or {
                "code": "InvalidPrivateip.IsPrimary",
                "message": f"{ip} is the primary IP of {item.eni_id} and cannot be released",
            }
        elif ip not in info.secondary_ips:
            outcome.absent.append(ip)
            decide(outcome, f"described before submitting: {ip} is not on {item.eni_id}; absent")
        else:
            todo.append(ip)
    return tuple(todo)


async def release_item(
    client: Releaser,
    item: Item,
    outcome: Outcome,
    *,
    ips: tuple[str, ...] | None = None,
    recorder: Recorder | None = None,
    look: bool | None = None,
    gate: Gate | None = None,
) -> Outcome:
    """Release ``ips`` (default: the item's) chunk by chunk, reconciling every doubt.

    ``look``: describe the ENI before the first submit (``None``: on API 3.0 only, to check the VPC); it is
    done only while nothing of the item has been sent. Raises ``AuthError``, and ``StopSubmitting`` once
    ``gate()`` is true before a submit; any other failure is written into the outcome.
    """
    todo = item.ips if ips is None else ips
    if look is None:
        look = not client.capabilities.release_names_vpc
    seen: set[str] = set()  # IPs a describe of ours found on the ENI
    if look and not outcome.sent and not outcome.task_ids:
        todo = await look_first(client, item, outcome)
        seen.update(todo)
    for chunk in validation.chunks(todo):
        await _release_chunk(client, item, outcome, chunk, recorder, gate, seen)
    return outcome.settle()


async def finish_task(
    client: Releaser,
    item: Item,
    outcome: Outcome,
    task_id: str,
    chunk: tuple[str, ...],
    request_id: str | None = None,
    *,
    submitted_at: float | None = None,
) -> None:
    """Hand a submitted task to the client's tracker and record each IP's fate; used directly on resume.

    ``request_id`` is the submit's, named in a failure (the request that started the task)."""
    fate = await client.tracker.track(item.vpc_id, item.eni_id, task_id, chunk, submitted_at=submitted_at)
    record_fate(outcome, fate, request_id)


def record_fate(outcome: Outcome, fate: ChunkFate, request_id: str | None = None) -> None:
    """Write a chunk's fate into the outcome, IP by IP, with how each was established and why any is in doubt."""
    outcome.released.extend(fate.released)
    outcome.not_released.extend(fate.not_released)
    outcome.unknown.extend(fate.unknown)
    outcome.confirmed_by.update(fate.confirmed_by)
    state = fate.state
    failed = state is not None and state.status is TaskStatus.FAILED
    if fate.not_released or failed:  # the task's failure is the error, even where a look then failed
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
        outcome.fail(fate.error or TaskTimeoutError(fate.task_id, None, 0.0))
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


async def _settle_by_looking(
    client: Releaser, outcome: Outcome, chunk: tuple[str, ...], why: str, *, doubt: bool = False
) -> None:
    """Describe the ENI: IPs gone are released; those present are not released (in doubt if a task may run)."""
    info = await _describe_or_none(client, outcome)
    if info is None:
        outcome.unknown.extend(chunk)
        decide(outcome, f"{why}; could not describe the ENI: {len(chunk)} IP(s) in doubt")
        return
    gone, present = _split(info, chunk)
    outcome.released.extend(gone)
    (outcome.unknown if doubt else outcome.not_released).extend(present)
    state = "in doubt (a task may still run)" if doubt else "still assigned"
    decide(outcome, f"{why}; described ENI: {len(gone)} gone, {len(present)} {state}")


async def _release_chunk(
    client: Releaser,
    item: Item,
    outcome: Outcome,
    chunk: tuple[str, ...],
    recorder: Recorder | None,
    gate: Gate | None,
    seen: set[str],
) -> None:
    todo = chunk
    for _round in range(MAX_ROUNDS):
        if not todo:
            return
        if gate is not None and gate():
            raise StopSubmitting
        earlier = set(outcome.sent)  # IPs an earlier call of ours may have released
        outcome.sent.update(todo)
        outcome.attempts += 1
        if recorder is not None:
            await recorder.submitting(item, todo, outcome)
        started = client.clock.monotonic()
        try:
            sent = await client.submit_when_free(item.vpc_id, item.eni_id, todo, gate=gate)
            task_id, request_id = sent.task_id, sent.request_id
        except StopSubmitting:  # every try of this round met the mutex: none of them had an effect
            outcome.sent.difference_update(ip for ip in todo if ip not in earlier)
            raise
        except AuthError:
            raise
        except OutcomeUnknownError as exc:
            log.warning("%s: %s; describing the ENI before resubmitting", item.eni_id, exc)
            doubts = len(outcome.unknown)
            still = await reconcile_in_doubt(
                client, outcome, todo, f"ambiguous submit ({exc.cause})", seen=seen
            )
            if still is None:
                outcome.fail(exc)
                outcome.unknown.extend(todo)
                return
            if len(outcome.unknown) > doubts:
                outcome.fail(exc)
            todo = still
            continue
        except (IpNotOnEniError, PrimaryIpError) as exc:
            info = await _describe_or_none(client, outcome)
            if info is None:
                outcome.fail(exc)
                outcome.unknown.extend(ip for ip in todo if ip in earlier)
                outcome.not_released.extend(ip for ip in todo if ip not in earlier)
                return
            gone, present = _split(info, todo)
            ours = [ip for ip in gone if ip in earlier]
            if ours:
                outcome.released.extend(ours)
                decide(outcome, f"{', '.join(ours)} gone after an earlier call of ours: counted as released")
            never = [ip for ip in gone if ip not in earlier]
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
                return
            todo = tuple(present)
            continue
        except NotFoundError as exc:  # VPC or ENI gone: nothing on it can be released
            outcome.fail(exc)
            outcome.not_released.extend(todo)
            return
        except EniAsyncError as exc:
            outcome.fail(exc)
            if earlier & set(todo):  # e.g. still locked by the task our ambiguous submit started
                await _settle_by_looking(client, outcome, todo, f"gave up ({exc})", doubt=True)
            else:
                outcome.not_released.extend(todo)
            return
        outcome.task_ids.append(task_id)
        if request_id:
            outcome.request_ids.append(request_id)
        if recorder is not None:
            await recorder.submitted(item, task_id, request_id, todo, outcome)
        await finish_task(client, item, outcome, task_id, todo, request_id, submitted_at=started)
        if recorder is not None:
            await recorder.progressed(item, outcome)
        return
    if not todo:  # the last round settled every IP
        return
    outcome.fail(
        OutcomeUnknownError(
            "UnassignPrivateIpAddresses",
            item.vpc_id,
            item.eni_id,
            todo,
            RuntimeError("too many ambiguous rounds"),
        )
    )
    await _settle_by_looking(client, outcome, todo, "too many ambiguous rounds", doubt=True)


async def _describe_or_none(client: Releaser, outcome: Outcome) -> EniInfo | None:
    """Describe the ENI, trying a few times more than one call's retries: it is how we avoid guessing."""
    for attempt in range(DESCRIBE_ROUNDS):
        try:
            return await client.describe_eni(outcome.eni_id)
        except AuthError:
            raise
        except EniAsyncError as exc:
            if attempt == DESCRIBE_ROUNDS - 1:
                decide(outcome, f"could not describe the ENI ({exc})")
                return None
            await client.clock.sleep(client.retry.maximum * (attempt + 1))
    return None


async def reconcile_in_doubt(
    client: Releaser,
    outcome: Outcome,
    todo: tuple[str, ...],
    why: str,
    *,
    seen: set[str] | None = None,
) -> tuple[str, ...] | None:
    """After an ambiguous submit: return the IPs still present (None: the ENI could not be described).

    A gone IP is released when every IP of the submit is gone (the call, all or nothing, took effect) or a
    describe of ours saw it on the ENI before (``seen``, updated here). Otherwise the call may have been
    refused because that IP was never there, or a task of ours may have released it before failing: nothing
    tells the two apart, so its fate is ``unknown``, never guessed.
    """
    info = await _describe_or_none(client, outcome)
    if info is None:
        return None
    gone, present = _split(info, todo)
    known = seen if seen is not None else set()
    doubtful = [ip for ip in gone if present and ip not in known]
    outcome.released.extend(ip for ip in gone if ip not in doubtful)
    outcome.unknown.extend(doubtful)
    known.update(present)
    decide(
        outcome,
        f"{why}: described ENI, {len(gone) - len(doubtful)} already gone (released), "
        f"{len(present)} still assigned (resubmitted)",
    )
    if doubtful:
        decide(
            outcome,
            f"{', '.join(doubtful)} gone but never seen on the ENI, while others of the submit are still there "
            "(refused for an IP not on the ENI, or released by a task that then failed): unknown",
        )
    return tuple(present)


__all__ = [
    "Gate",
    "Recorder",
    "Releaser",
    "StopSubmitting",
    "decide",
    "finish_task",
    "look_first",
    "reconcile_in_doubt",
    "release_item",
]
