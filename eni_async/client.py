"""``EniClient``: the facade most code uses, over the call pipeline, its tracker and the one release path.

A client is an async context manager around three parts, each its own module: the signed call pipeline
(``eni_async.pipeline.Pipeline``, the ``Calls`` seam: budgets, signing, transport, retries, metrics hooks),
the tracker that watches every task it submits (``eni_async.tracker``), and the release path
(``eni_async.release.Releaser``) that every release goes through. ``unassign`` is that path plus
``Outcome.raise_for_failure``; ``unassign_many`` is a ``Batch`` over it. It is safe to share between many
coroutines, and one client per process keeps all of them within the account's rate limits. Tasks are
counted in ``eni_async_tasks_total`` here, once each, by the final status their fate shows.
"""

from __future__ import annotations

import asyncio
import random
import ssl as ssl_module
from collections.abc import AsyncIterable, Callable, Collection, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import aiohttp

from eni_async import validation
from eni_async.batch import Batch
from eni_async.clock import Clock
from eni_async.credentials.refresh import CredentialProvider
from eni_async.errors import ApiError, InputError, TaskTimeoutError
from eni_async.journal import Journal
from eni_async.models import ChunkFate, Credentials, EniInfo, TaskState, TaskStatus
from eni_async.models import UnassignResult as UnassignResult
from eni_async.outcomes import Item, Outcome
from eni_async.pipeline import Pipeline
from eni_async.policy import LookPolicy
from eni_async.poller import LatencyTracker, poll_until_done
from eni_async.release import Releaser
from eni_async.settings import Settings
from eni_async.throttle import Budgets
from eni_async.tracker import Tracker
from eni_async.transport import Transport

if TYPE_CHECKING:
    from eni_async.client_metrics import Metrics
    from eni_async.shared_quota import SharedBudgets


class EniClient:
    """Release secondary IPs from ENIs, one ``await`` per ENI.

    ``credentials`` are fixed ``Credentials`` or a ``CredentialProvider`` (``await credential_chain()``),
    asked before every call; a call refused for an expired token is signed again, once, with fresh ones.
    ``session`` is borrowed when given (the caller closes it); otherwise the client opens its own on entry
    and closes it on exit. ``transport`` replaces the aiohttp adapter altogether (``MockTransport`` in
    tests). ``clock`` is the time seam (tests pass a ``FakeClock``); ``rng`` seeds jitter. ``metrics`` is an
    ``eni_async.client_metrics.Metrics`` to keep up to date (``None``: no metrics). ``calls`` is the pipeline, for
    code written against the ``Calls`` protocol.
    """

    def __init__(
        self,
        credentials: Credentials | CredentialProvider,
        settings: Settings = Settings(),  # noqa: B008 - frozen value
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        ssl_context: ssl_module.SSLContext | None = None,
        metrics: Metrics | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.settings = settings
        self.calls = Pipeline(
            credentials,
            settings,
            transport=transport,
            session=session,
            clock=clock,
            rng=rng,
            ssl_context=ssl_context,
            metrics=metrics,
        )
        self.tracker = Tracker(self.calls, confirm=settings.confirm, rng=self.calls.rng)
        # The describe rounds of the release path pause as long as a call's retries at most.
        looks = LookPolicy(pause=settings.retry.maximum)
        self.releaser = Releaser(self.calls, _Counted(self.tracker, metrics), looks=looks)

    def __repr__(self) -> str:
        return repr(self.calls).replace("Pipeline(", "EniClient(", 1)

    @property
    def clock(self) -> Clock:
        """The client's clock (the pipeline's)."""
        return self.calls.clock

    @property
    def budgets(self) -> Budgets | SharedBudgets:
        """The per-action rate budgets every call takes from."""
        return self.calls.budgets

    @property
    def latencies(self) -> LatencyTracker:
        """The task latencies observed so far."""
        return self.calls.latencies

    @property
    def metrics(self) -> Metrics | None:
        """The metrics kept up to date, if any."""
        return self.calls.metrics

    @property
    def credentials(self) -> CredentialProvider:
        """Where every call's credentials come from; may be replaced (a renewed source)."""
        return self.calls.credentials

    @credentials.setter
    def credentials(self, provider: CredentialProvider) -> None:
        self.calls.credentials = provider

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.calls.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the tracker (tasks still watched end ``unknown``), then close the pipeline (its session, if
        the client opened it, and the connections to a shared quota)."""
        await self.tracker.close()
        await self.calls.close()

    # -- one ENI --------------------------------------------------------------------------------------

    async def unassign(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        submitted: list[str] | None = None,
        release_deadline: float | None = None,
    ) -> UnassignResult:
        """Release ``ips`` from the ENI through the release path and return once every task has ended.

        More than 10 IPs go in chunks of at most 10, one after another (one task per ENI at a time); ``timeout``
        bounds the wait for each task (default ``settings.poll.timeout``). This is ``unassign_many``'s path
        for one item, then ``Outcome.raise_for_failure``: IPs not on the ENI are ``absent`` in the result
        (not a failure); an item with any IP not released or of unknown fate raises. A chunk that left IPs
        on the ENI (a FAILED task) raises ``TaskFailedError``; one whose IPs' fate was not seen by the deadline
        ``TaskTimeoutError`` (a ``TimeoutError``; the task may still release its IPs) or the error that kept
        it from being seen; a refused call its typed ``ApiError``. The error is the first one met, and once a
        chunk was submitted it carries ``.result`` (an ``UnassignResult`` with every task id submitted and
        every IP released so far, IP by IP) and ``.fate`` (the last watched chunk's ``ChunkFate``).

        Cancellation is never swallowed or replaced (``asyncio.timeout``, ``TaskGroup`` and ``wait_for``
        rely on seeing ``CancelledError``), so a cancelled call raises ``CancelledError`` as asyncio
        requires; a task already submitted goes on at Tencent. To know which, pass ``submitted``: a list
        each task id is appended to the moment the server accepts it. The ids are also added to the
        ``CancelledError`` as a note, and logged at INFO when submitted. ``release_deadline`` (seconds):
        outages are waited out until then, as ``unassign_many`` does.
        """
        vpc, eni, checked = validation.release_request(vpc_id, eni_id, ips)
        item = Item(vpc, eni, checked)
        outcome = Outcome.for_item(item)
        try:
            await self.releaser.release(
                item,
                outcome,
                recorder=_TaskIds(submitted) if submitted is not None else None,
                timeout=timeout,
                deadline=None if release_deadline is None else self.clock.monotonic() + release_deadline,
            )
        except asyncio.CancelledError as exc:
            if outcome.task_ids:
                exc.add_note(
                    f"eni_async: task(s) {', '.join(outcome.task_ids)} submitted on {eni}; "
                    f"released confirmed: {', '.join(outcome.released) or 'none'}"
                )
            raise
        return outcome.raise_for_failure()

    def unassign_many(
        self,
        items: Iterable[object] | AsyncIterable[object],
        *,
        concurrency: int | None = None,
        preflight: bool = False,
        journal: Journal | None = None,
        release_deadline: float | None = None,
    ) -> Batch:
        """Release IPs from many ENIs; iterate the result for one ``Outcome`` per ENI as each finishes.

        ``items`` is any iterable or async iterable of ``(vpc_id, eni_id, ips)`` triples or ``Item`` values,
        consumed lazily. ``concurrency`` (ENIs worked on at once) is ``settings.concurrency`` when not
        given. With ``preflight`` (and always on API 3.0), each ENI is described before its first submit: IPs
        not on it are ``absent``, a primary IP is refused without a request, and an ENI not in the item's VPC
        is refused. With a ``journal``, every step is recorded durably before it is taken, and
        ``Journal.unfinished()`` can be fed back in to resume after a crash. ``Batch.stop(grace)``,
        ``Batch.aclose()``, cancelling or leaving the loop early stop it; every item pulled is then either
        yielded or in ``Batch.unconfirmed``, with IPs whose fate was not observed under ``unknown``.
        ``release_deadline`` (seconds from when an item is taken up): outages (the API unreachable, 5xx,
        throttling) are waited out until then, where by default each call's ``RetryPolicy`` bounds them.
        """
        return Batch(
            self.releaser,
            items,
            concurrency=self.settings.concurrency if concurrency is None else concurrency,
            target=self.tracker.releases_in_flight,
            listen=self.tracker.listen,
            preflight=preflight,
            journal=journal,
            deadline=None if release_deadline is None else self._deadline_after(release_deadline),
        )

    def _deadline_after(self, seconds: float) -> Callable[[Item], float]:
        clock = self.calls.clock
        return lambda item: clock.monotonic() + seconds

    # -- the lower-level steps ------------------------------------------------------------------------

    async def check_credentials(self) -> None:
        """One cheap call, tried once: ``AuthError`` when the API refuses the credentials (a readiness
        check; ``Pipeline.check_credentials``)."""
        await self.calls.check_credentials()

    async def submit_unassign(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> str:
        """Send one UnassignPrivateIpAddresses call (at most 10 IPs) and return its task id."""
        vpc, eni, checked = validation.release_request(vpc_id, eni_id, ips)
        if len(checked) > validation.MAX_IPS_PER_CALL:
            raise InputError("ips", len(checked), "at most 10 IPs per call; use unassign()")
        return (await self.calls.submit(vpc, eni, checked)).task_id

    async def task_status(self, task_id: str) -> TaskStatus:
        """Query a task once and return RUNNING, SUCCESS or FAILED."""
        return (await self.task_state(task_id)).status

    async def task_state(self, task_id: str) -> TaskState:
        """Query a task once and return its full reading (status, request id, output)."""
        return await self.calls.task_state(task_id)

    async def wait_for_task(
        self, task_id: str, *, timeout: float | None = None, submitted_at: float | None = None
    ) -> TaskState:
        """Poll until the task is SUCCESS or FAILED; raise ``TaskTimeoutError`` after ``timeout`` seconds.

        ``timeout`` defaults to ``settings.poll.timeout``. The task's final state is returned, FAILED
        included: deciding what a failure means is the caller's business.
        """
        calls, metrics = self.calls, self.calls.metrics
        waiting = poll_until_done(
            calls.task_state,
            task_id,
            policy=calls.poll,
            clock=calls.clock,
            latencies=calls.latencies,
            rng=calls.rng,
            timeout=calls.poll.timeout if timeout is None else timeout,
            submitted_at=submitted_at,
        )
        if metrics is None:
            return await waiting
        try:
            state = await waiting
        except TaskTimeoutError:
            metrics.task_ended("TIMEOUT")
            calls.task_seen(task_id, "TIMEOUT", None)
            raise
        except BaseException:  # an unreadable task, a bug or a cancellation: the client stops watching it
            metrics.task_ended("UNKNOWN")
            calls.task_seen(task_id, "UNKNOWN", None)
            raise
        metrics.task_ended(state.status.value)
        calls.task_seen(task_id, state.status.value, state.observed_at)
        return state

    async def describe_eni(self, eni_id: str) -> EniInfo | None:
        """Return what DescribeNetworkInterfaces says about one ENI, or ``None`` when it does not exist.

        Where the dialect takes many ids per call (API 3.0), ENIs asked for at about the same time share one
        call (see ``Tracker.describe``).
        """
        return await self.tracker.describe(validation.eni_id(eni_id))


class _Counted:
    """The tracker as the release path watches through it: each task's fate, once known, counts the task
    in ``eni_async_tasks_total`` by its final status (the tracker's own last reading may be RUNNING)."""

    def __init__(self, tracker: Tracker, metrics: Metrics | None) -> None:
        self.tracker = tracker
        self.metrics = metrics

    def track(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: Sequence[str],
        *,
        submitted_at: float | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, ChunkFate]:
        watched = self.tracker.track(vpc_id, eni_id, task_id, ips, submitted_at=submitted_at, timeout=timeout)
        # Without metrics the tracker's own awaitable: no frame of ours between the awaiter and the watch.
        return watched if self.metrics is None else self._counted(watched)

    async def _counted(self, watched: Coroutine[Any, Any, ChunkFate]) -> ChunkFate:
        assert self.metrics is not None
        try:
            fate = await watched
        except BaseException:  # credentials lost, or a cancellation: the task's end was not seen
            self.metrics.task_ended("UNKNOWN")
            raise
        self.metrics.task_ended(fate.final_status)
        return fate

    def describe(self, eni_id: str) -> Coroutine[Any, Any, EniInfo | None]:
        return self.tracker.describe(eni_id)  # the tracker's own awaitable: no frame of ours between


class _TaskIds:
    """A ``Recorder`` that only appends each accepted task id to the caller's list (``unassign``'s
    ``submitted``)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    async def add(self, item: Item) -> int:
        raise AssertionError("unassign records no items")  # pragma: no cover

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        return None

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        self.ids.append(task_id)

    async def progressed(
        self, item: Item, outcome: Outcome, *, ended: Collection[str] = (), taken_back: bool = False
    ) -> None:
        return None

    async def finished(self, key: int, outcome: Outcome) -> None:
        return None


__all__ = ["ApiError", "EniClient", "UnassignResult"]
