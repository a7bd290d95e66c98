"""The seam between the signed call pipeline and everything built on it: the ``Calls`` protocol.

What the tracker, the release path, the batch and the service need of a client is exactly this: the clock,
the dialect's ``Capabilities``, the rate budgets, the task latencies learnt so far, the retry and poll
policies, and five calls (submit, submit once the ENI is free, read a task, describe ENIs by id, describe a
VPC's page), each already budgeted, signed, sent, parsed and retried per the retry table. ``EniClient``'s
pipeline implements it; tests use a fake of it (``eni_async.testing``) or a fake transport under the real
pipeline. Nothing here performs I/O, and nothing outside the pipeline reaches past this protocol into a
client's private names.

A ``Gate`` is asked before every submit (and after every wait for the ENI's mutex): once it returns True,
no further submit is made and ``StopSubmitting`` is raised instead (every try so far met the mutex or was
never made, so none had an effect).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from eni_async.clock import Clock
    from eni_async.dialects.base import Capabilities
    from eni_async.models import EniInfo, Submitted, TaskState
    from eni_async.policy import PollPolicy, RetryPolicy
    from eni_async.poller import LatencyTracker
    from eni_async.throttle import BudgetTable

Gate = Callable[[], bool]  # True once no new submit may start


class StopSubmitting(Exception):
    """Raised instead of a submit once the gate has closed (the batch is stopping); nothing was sent."""


class Calls(Protocol):
    """The signed call pipeline, as every layer above it sees it (see the module docstring)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def budgets(self) -> BudgetTable: ...

    @property
    def latencies(self) -> LatencyTracker: ...

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def poll(self) -> PollPolicy: ...

    async def submit(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Submitted:
        """One UnassignPrivateIpAddresses call for ids and at most 10 IPs already validated.

        Raises ``OutcomeUnknownError`` (carrying what was sent) when the server may have acted, ``MutexError``
        while another task holds the ENI, or the typed error of the answer."""
        ...

    async def submit_when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        """``submit``, waiting out another task's mutex on the poll schedule until ``timeout`` (default: the
        poll policy's); raises ``StopSubmitting`` once ``gate()`` is true before a try."""
        ...

    async def task_state(self, task_id: str) -> TaskState:
        """One DescribeVpcTaskResult reading, stamped with when it was sent."""
        ...

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        """Describe ENIs by id, as many per call as the dialect takes; an ENI missing from the answer does
        not exist (or is not visible to this key)."""
        ...

    async def describe_vpc(self, vpc_id: str, *, offset: int, limit: int) -> tuple[list[EniInfo], int]:
        """One page of a VPC's ENIs, and how many the VPC has."""
        ...

    def sent_at(self, task_id: str) -> float | None:
        """When the submit that started ``task_id`` was sent (``Clock.monotonic``), if this pipeline sent it;
        asked once, by the tracker (budget and mutex waits before it are not the task's latency)."""
        ...

    def task_seen(self, task_id: str, status: str, seen_at: float | None) -> None:
        """The tracker's word that it stopped watching ``task_id``, with its final status (for metrics)."""
        ...


__all__ = ["Calls", "Gate", "StopSubmitting"]
