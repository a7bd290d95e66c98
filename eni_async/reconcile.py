"""Releasing one ENI's IPs without ever guessing: submit, wait, and look at the ENI whenever unsure.

After an ambiguous submit (read timeout, connection lost after sending, HTTP 5xx, ``InternalError``) or a
FAILED task, the ENI is described before anything is resubmitted: IPs already gone count as released, IPs
still there are submitted again (ambiguous case) or reported not released (FAILED task, D12). An IP that the
server says is not on the ENI is checked the same way; a primary IP is refused and the rest go on. Every
decision is written into the outcome. Rounds are bounded, so an item always ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from eni_async import validation
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
from eni_async.models import ChunkFate, EniInfo
from eni_async.outcomes import SKIPPED, Item, Outcome

if TYPE_CHECKING:
    from eni_async.client import EniClient

log = logging.getLogger("eni_async.reconcile")

# Resubmissions of one chunk after ambiguous answers before the item is given up as failed.
MAX_ROUNDS = 6
# Describe calls (each already retried by the retry policy) before an IP's fate is left in doubt.
DESCRIBE_ROUNDS = 3


def decide(outcome: Outcome, decision: str) -> None:
    """Record a reconciliation decision in the outcome and in the log (INFO), with the ENI."""
    outcome.decisions.append(decision)
    log.info("%s: %s", outcome.eni_id, decision)


class Recorder(Protocol):
    """Told of every step, before the work it announces goes on (the journal implements it)."""

    def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None: ...

    def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None: ...

    def progressed(self, item: Item, outcome: Outcome) -> None: ...


def _split(info: EniInfo | None, ips: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(gone, present) for ``ips`` on the ENI as described."""
    on_eni = set(info.secondary_ips) if info else set()
    if info and info.primary_ip:
        on_eni.add(info.primary_ip)
    return [ip for ip in ips if ip not in on_eni], [ip for ip in ips if ip in on_eni]


async def preflight(client: EniClient, item: Item, outcome: Outcome) -> tuple[str, ...]:
    """Check the item against DescribeNetworkInterfaces; return the IPs worth submitting."""
    info = await client.describe_eni(item.eni_id)
    if info is None or info.vpc_id != item.vpc_id:
        outcome.status = SKIPPED
        outcome.not_released = []
        outcome.error = {
            "code": "InvalidNetworkInterface.NotFound",
            "message": f"{item.eni_id} not found in {item.vpc_id}",
        }
        decide(outcome, "preflight: ENI not found in that VPC; nothing submitted")
        return ()
    todo: list[str] = []
    for ip in item.ips:
        if ip == info.primary_ip:
            outcome.not_released.append(ip)
            decide(outcome, f"preflight: {ip} is the primary IP; refused without a request")
            outcome.error = outcome.error or {
                "code": "InvalidPrivateip.IsPrimary",
                "message": f"{ip} is the primary IP of {item.eni_id} and cannot be released",
            }
        elif ip not in info.secondary_ips:
            decide(outcome, f"preflight: {ip} is not on {item.eni_id}; skipped")
        else:
            todo.append(ip)
    if not todo and outcome.error is None:
        outcome.status = SKIPPED
        outcome.error = {
            "code": "InvalidPrivateIpAddress.NotFound",
            "message": "no IP asked for is on the ENI",
        }
    return tuple(todo)


async def release_item(
    client: EniClient,
    item: Item,
    outcome: Outcome,
    *,
    ips: tuple[str, ...] | None = None,
    recorder: Recorder | None = None,
) -> Outcome:
    """Release ``ips`` (default: the item's) chunk by chunk, reconciling every doubt. Raises only AuthError."""
    for chunk in validation.chunks(item.ips if ips is None else ips):
        await _release_chunk(client, item, outcome, chunk, recorder)
    return outcome.settle()


async def finish_task(
    client: EniClient,
    item: Item,
    outcome: Outcome,
    task_id: str,
    chunk: tuple[str, ...],
    *,
    submitted_at: float | None = None,
) -> None:
    """Hand a submitted task to the client's tracker and record each IP's fate; used directly on resume."""
    fate = await client.tracker.track(item.vpc_id, item.eni_id, task_id, chunk, submitted_at=submitted_at)
    record_fate(outcome, fate)


def record_fate(outcome: Outcome, fate: ChunkFate) -> None:
    """Write a chunk's fate into the outcome, IP by IP, with how each was established and why any is in doubt."""
    outcome.released.extend(fate.released)
    outcome.not_released.extend(fate.not_released)
    outcome.unknown.extend(fate.unknown)
    outcome.confirmed_by.update(fate.confirmed_by)
    state = fate.state
    if fate.unknown:
        error = fate.error or TaskTimeoutError(fate.task_id, None, 0.0)
        outcome.fail(error)
        decide(
            outcome,
            f"{fate.reason or f'task {fate.task_id} not confirmed'}: {len(fate.released)} gone, "
            f"{len(fate.unknown)} in doubt (a task may still run)",
        )
    elif fate.not_released:
        outcome.fail(
            TaskFailedError(
                fate.task_id,
                eni_id=fate.eni_id,
                ips=fate.ips,
                request_id=state.request_id if state is not None else None,
                output=state.output if state is not None else None,
            )
        )
        ended = f"task {fate.task_id} {state.status.value}" if state is not None else f"task {fate.task_id}"
        decide(
            outcome,
            f"{ended}; described ENI: {len(fate.released)} gone, {len(fate.not_released)} still assigned",
        )


async def _settle_by_looking(
    client: EniClient, outcome: Outcome, chunk: tuple[str, ...], why: str, *, doubt: bool = False
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
    client: EniClient, item: Item, outcome: Outcome, chunk: tuple[str, ...], recorder: Recorder | None
) -> None:
    todo = chunk
    in_doubt = False  # an ambiguous submit of this chunk may have started a task we never heard of
    for _round in range(MAX_ROUNDS):
        if not todo:
            return
        outcome.attempts += 1
        if recorder is not None:
            recorder.submitting(item, todo, outcome)
        started = client.clock.monotonic()
        try:
            task_id, request_id = await client._submit_waiting_out_mutex(item.vpc_id, item.eni_id, todo, None)
        except AuthError:
            raise
        except OutcomeUnknownError as exc:
            log.warning("%s: %s; describing the ENI before resubmitting", item.eni_id, exc)
            in_doubt = True
            still = await reconcile_in_doubt(client, outcome, todo, f"ambiguous submit ({exc.cause})")
            if still is None:
                outcome.fail(exc)
                outcome.unknown.extend(todo)
                return
            todo = still
            continue
        except (IpNotOnEniError, PrimaryIpError) as exc:
            info = await _describe_or_none(client, outcome)
            if info is None:
                outcome.fail(exc)
                (outcome.unknown if in_doubt else outcome.not_released).extend(todo)
                return
            gone, present = _split(info, todo)
            if gone:
                outcome.released.extend(gone)
                decide(outcome, f"{', '.join(gone)} not on the ENI: counted as released")
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
            if in_doubt:  # e.g. still locked by the task our ambiguous submit started
                await _settle_by_looking(client, outcome, todo, f"gave up ({exc})", doubt=True)
            else:
                outcome.not_released.extend(todo)
            return
        outcome.task_ids.append(task_id)
        if request_id:
            outcome.request_ids.append(request_id)
        if recorder is not None:
            recorder.submitted(item, task_id, request_id, todo, outcome)
        await finish_task(client, item, outcome, task_id, todo, submitted_at=started)
        if recorder is not None:
            recorder.progressed(item, outcome)
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


async def _describe_or_none(client: EniClient, outcome: Outcome) -> EniInfo | None:
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
            await client.clock.sleep(client.settings.retry.maximum * (attempt + 1))
    return None


async def reconcile_in_doubt(
    client: EniClient, outcome: Outcome, todo: tuple[str, ...], why: str
) -> tuple[str, ...] | None:
    """After an ambiguous submit: IPs gone count as released; return those still present (None: unknown)."""
    info = await _describe_or_none(client, outcome)
    if info is None:
        return None
    gone, present = _split(info, todo)
    outcome.released.extend(gone)
    decide(
        outcome,
        f"{why}: described ENI, {len(gone)} already gone (released), {len(present)} still assigned (resubmitted)",
    )
    return tuple(present)


__all__ = ["Recorder", "decide", "finish_task", "preflight", "reconcile_in_doubt", "release_item"]
