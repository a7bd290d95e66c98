"""How a submitted task's fate is confirmed: the strategies behind ``confirm = "eni"`` and ``confirm = "task"``.

``ByEni`` (the default) watches the task's ENI, asking the task only where the ENI cannot settle it (see
``looks`` and ``watch``); tasks start at the submit budget's rate. ``ByTask`` polls each task with the poll
policy until it ends, and describes the ENI only when it FAILED or its fate is in doubt (still running at the
deadline, unreadable): IPs gone are released, IPs listed are not released once the task has ended and
``unknown`` while it may still run. Its ENI is described up to ``LookPolicy.rounds`` times. Since about one
task query is spent per task (``queries_per_task``), tasks start no faster than the task-query budget allows.
``CONFIRMATIONS`` names each strategy; a name not in it is refused.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eni_async.errors import AuthError, EniAsyncError, TaskTimeoutError
from eni_async.models import BY_ENI, BY_TASK, ChunkFate, EniInfo, TaskState, TaskStatus
from eni_async.policy import LookPolicy
from eni_async.poller import poll_until_done
from eni_async.tracker.describing import Describer
from eni_async.tracker.looks import LookEngine
from eni_async.tracker.pacing import LookPacing, Packing

if TYPE_CHECKING:
    from eni_async.calls import Calls
    from eni_async.throttle import BudgetTable


@dataclass(frozen=True)
class Setup:
    """What every strategy is built from: the call pipeline, the tracker's describer and its schedules."""

    calls: Calls
    describer: Describer
    pacing: LookPacing
    packing: Packing
    looks: LookPolicy
    rng: random.Random


class Confirmation(Protocol):
    """One way of learning what became of a task's IPs."""

    @property
    def watching(self) -> int:
        """Tasks watched now."""
        ...

    @property
    def queries(self) -> int:
        """Task queries sent so far."""
        ...

    def start_rate(self, budgets: BudgetTable) -> float:
        """How many tasks per second the budgets let this strategy start (and confirm)."""
        ...

    async def track(
        self, vpc_id: str, eni_id: str, task_id: str, ips: tuple[str, ...], sent: float, timeout: float
    ) -> ChunkFate:
        """The fate of one accepted task whose submit was sent at ``sent``; waits at most ``timeout``."""
        ...

    async def close(self) -> None:
        """Stop: every task still watched ends with its pending IPs ``unknown``."""
        ...


class ByEni:
    """Confirmation by ENI state (``confirm = "eni"``)."""

    def __init__(self, setup: Setup) -> None:
        self._engine = LookEngine(setup.calls, setup.describer, setup.pacing, setup.packing)

    @property
    def watching(self) -> int:
        return self._engine.watching

    @property
    def queries(self) -> int:
        return self._engine.queries

    def start_rate(self, budgets: BudgetTable) -> float:
        return float(budgets["UnassignPrivateIpAddresses"].rate)

    def track(
        self, vpc_id: str, eni_id: str, task_id: str, ips: tuple[str, ...], sent: float, timeout: float
    ) -> Coroutine[Any, Any, ChunkFate]:
        return self._engine.track(vpc_id, eni_id, task_id, ips, sent, timeout)  # its own: no frame between

    async def close(self) -> None:
        await self._engine.close()


class ByTask:
    """Confirmation by task reading (``confirm = "task"``); see the module docstring."""

    queries_per_task = 1.2  # most tasks are asked once, some twice

    def __init__(self, setup: Setup) -> None:
        self._calls = setup.calls
        self._describer = setup.describer
        self._looks = setup.looks
        self._rng = setup.rng
        self._watching = 0
        self._queries = 0

    @property
    def watching(self) -> int:
        return self._watching

    @property
    def queries(self) -> int:
        return self._queries

    def start_rate(self, budgets: BudgetTable) -> float:
        submits = float(budgets["UnassignPrivateIpAddresses"].rate)
        return min(submits, budgets["DescribeVpcTaskResult"].rate / self.queries_per_task)

    async def _read(self, task_id: str) -> TaskState:
        self._queries += 1
        return await self._calls.task_state(task_id)

    async def track(
        self, vpc_id: str, eni_id: str, task_id: str, ips: tuple[str, ...], sent: float, timeout: float
    ) -> ChunkFate:
        calls = self._calls
        self._watching += 1
        try:
            state = await poll_until_done(
                self._read,
                task_id,
                policy=calls.poll,
                clock=calls.clock,
                latencies=calls.latencies,
                rng=self._rng,
                timeout=timeout,
                submitted_at=sent,
            )
        except AuthError:
            calls.task_seen(task_id, "UNKNOWN", None)
            raise
        except TaskTimeoutError as exc:
            calls.task_seen(task_id, "TIMEOUT", None)
            why = f"task {task_id} still running at the deadline"
            return await self._look_once(vpc_id, eni_id, task_id, ips, None, why, exc)
        except EniAsyncError as exc:
            calls.task_seen(task_id, "UNKNOWN", None)
            why = f"task {task_id} unreadable ({exc})"
            return await self._look_once(vpc_id, eni_id, task_id, ips, None, why, exc)
        except BaseException:  # a bug or a cancellation: the task is no longer watched
            calls.task_seen(task_id, "UNKNOWN", None)
            raise
        finally:
            self._watching -= 1
        calls.task_seen(task_id, state.status.value, state.observed_at)
        if state.status is TaskStatus.SUCCESS:
            by_task = dict.fromkeys(ips, BY_TASK)
            return ChunkFate(vpc_id, eni_id, task_id, ips, released=ips, confirmed_by=by_task, state=state)
        return await self._look_once(vpc_id, eni_id, task_id, ips, state, f"task {task_id} FAILED", None)

    async def _look_once(
        self,
        vpc: str,
        eni: str,
        task_id: str,
        ips: tuple[str, ...],
        state: TaskState | None,
        why: str,
        error: BaseException | None,
    ) -> ChunkFate:
        """Describe the ENI: IPs gone are released; those listed are not released once the task has ended,
        in doubt while it may still run."""
        ended = state is not None and state.status.done
        info: EniInfo | None = None
        found = False
        pauses = self._looks.pauses()
        for _ in range(self._looks.rounds):
            reading = (await self._describer.by_ids([eni]))[eni]
            if not isinstance(reading, EniAsyncError):
                info, found = reading, True
                break
            error = error or reading
            if not reading.transient:
                break  # refused for good: another round would be refused too
            pause = next(pauses, None)
            if pause is None:
                break
            await self._calls.clock.sleep(pause)
        if info is None or info.vpc_id != vpc:
            what = f"{eni} not found" if found else "could not describe the ENI"
            return ChunkFate(
                vpc, eni, task_id, ips, unknown=ips, state=state, reason=f"{why}; {what}", error=error
            )
        gone = tuple(ip for ip in ips if not info.listed(ip))
        listed = tuple(ip for ip in ips if info.listed(ip))
        return ChunkFate(
            vpc,
            eni,
            task_id,
            ips,
            released=gone,
            not_released=listed if ended else (),
            unknown=() if ended else listed,
            confirmed_by=dict.fromkeys(gone + (listed if ended else ()), BY_ENI),
            state=state,
            reason=None if ended else why,
            error=None if ended else error,
        )

    async def close(self) -> None:
        """Nothing to stop: each task is polled by the coroutine that awaits it."""


# Each strategy by its ``confirm`` setting.
CONFIRMATIONS: Mapping[str, Callable[[Setup], Confirmation]] = {"eni": ByEni, "task": ByTask}

__all__ = ["CONFIRMATIONS", "ByEni", "ByTask", "Confirmation", "Setup"]
