"""The signed call pipeline: the one place where dialect, signing, transport, throttle and retry policy meet.

``Pipeline`` implements ``eni_async.calls.Calls``. Every call goes: budget -> sign -> send -> parse, inside a
tenacity retrier built from the retry table. A mutating call is retried only when it surely had no effect
(throttled, never connected); after an ambiguous failure it raises ``OutcomeUnknownError`` carrying what was
sent, so the caller can look before resubmitting. The pipeline owns (or borrows) one aiohttp session and one
set of rate budgets (in memory, or with ``shared_quota`` in Redis, shared with other processes), and is safe
to share between many coroutines. Under it sits a ``Transport``: the aiohttp adapter, or any object with
``send`` (``eni_async.testing.MockTransport``), so the whole pipeline runs over a handler in tests.

Logging (standard ``logging``, no handler configured here): every attempt at DEBUG with its action, subject
(ENI or task), request id, attempt number, latency and result code, also as ``extra`` fields for structured
formatters; throttles at WARNING, retries and mutex waits at INFO, each with the reason. With ``metrics``,
the same events update a ``Metrics`` (see ``eni_async.client_metrics``); without, they cost one ``is None`` test.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar, cast

import aiohttp
from tenacity import RetryCallState

from eni_async import validation
from eni_async.calls import Gate, StopSubmitting
from eni_async.clock import Clock, SystemClock
from eni_async.credentials.identity import quota_account
from eni_async.credentials.refresh import CredentialProvider, StaticCredentials, as_provider
from eni_async.dialects import (
    DESCRIBE,
    TASK_QUERY,
    UNASSIGN,
    Capabilities,
    Dialect,
    SignContext,
    get_dialect,
)
from eni_async.errors import (
    ConfigError,
    EniAsyncError,
    MutexError,
    OutcomeUnknownError,
    TaskTimeoutError,
    ThrottledError,
    TokenError,
    error_code,
)
from eni_async.models import Credentials, EniInfo, HttpRequest, HttpResponse, Submitted, TaskState
from eni_async.policy import PollPolicy, RetryPolicy, backoff, retrier, retryable
from eni_async.poller import LatencyTracker
from eni_async.settings import Settings
from eni_async.settings_check import mask_url
from eni_async.throttle import Budget, Budgets
from eni_async.transport import AiohttpTransport, Transport, client_timeout, proxy_for, tls_for

if TYPE_CHECKING:
    from eni_async.client_metrics import Metrics
    from eni_async.shared_quota import SharedBudgets

log = logging.getLogger("eni_async")

# Connections open to the API at once, at most (aiohttp's default): calls in flight are the call rate times the
# round trip, so even a budget of 1,000 calls/s over a 100 ms round trip needs no more; beyond it calls wait for
# a connection (within their total timeout). Each one more costs its set-up and its share of every poll: a
# batch with limits off opened ~400 at a limit of 1,000, for more CPU and no more speed (``bench/scale.py``).
CONNECTIONS = 100
# Send times of submits kept for the tracker, at most (the oldest go first).
SENT_REMEMBERED = 100_000

T = TypeVar("T")


class Pipeline:
    """The signed call pipeline (``Calls``); ``EniClient`` is the facade most code uses instead.

    ``credentials`` are fixed ``Credentials`` or a ``CredentialProvider``, asked before every call; a call
    refused for an expired token is signed again, once, with fresh ones. ``transport`` replaces the aiohttp
    adapter (no session is opened then); else ``session`` is borrowed when given (the caller closes it), or
    one is opened by ``open`` and closed by ``close``. ``clock`` is the time seam; ``rng`` seeds jitter.

    The proxy is decided once, on opening: ``settings.proxy`` when set, else ``HTTPS_PROXY``/``HTTP_PROXY``
    for the endpoint's scheme unless ``NO_PROXY`` covers its host. (Leaving that to aiohttp's ``trust_env``
    would look the environment and ``.netrc`` up in a thread for every single call.)
    """

    def __init__(
        self,
        credentials: Credentials | CredentialProvider,
        settings: Settings,
        *,
        transport: Transport | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        ssl_context: ssl_module.SSLContext | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # Told how every call ended, after its retries (``None``: answered); the service's ``ApiHealth``.
        self.heard: Callable[[EniAsyncError | None], None] | None = None
        self.dialect: Dialect = get_dialect(settings.dialect)
        self.endpoint = settings.resolved_endpoint
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.budgets: Budgets | SharedBudgets = self._make_budgets(credentials)
        self.latencies = LatencyTracker()
        self.credentials: CredentialProvider = as_provider(credentials)
        self.rng = rng if rng is not None else random.Random()
        self._sent_at: dict[str, float] = {}
        self._nonces = itertools.count(random.SystemRandom().randint(1, 2**30))
        self._session = session
        self._owns_session = session is None and transport is None
        self._ssl_context = ssl_context
        self._ssl: bool | ssl_module.SSLContext | None = None
        self._transport: Transport | None = transport
        if transport is None and session is not None:
            self._transport = self._make_transport(session)

    def __repr__(self) -> str:
        shown = self.credentials
        who = f"secret_id={shown.credentials.secret_id!r}" if isinstance(shown, StaticCredentials) else ""
        return (
            f"Pipeline(endpoint={self.endpoint!r}, dialect={self.settings.dialect!r}, "
            f"{who or f'credentials={shown.source!r}'})"
        )

    @property
    def capabilities(self) -> Capabilities:
        """What the dialect can do."""
        return self.dialect.capabilities

    @property
    def retry(self) -> RetryPolicy:
        """How failed calls are retried (``settings.retry``)."""
        return self.settings.retry

    @property
    def poll(self) -> PollPolicy:
        """How running tasks are polled (``settings.poll``)."""
        return self.settings.poll

    def _make_budgets(self, credentials: Credentials | CredentialProvider) -> Budgets | SharedBudgets:
        """In-memory budgets, or with ``shared_quota`` budgets in Redis (only then is ``redis`` imported)."""
        rates = self.settings.rate_limits.by_action()
        if not self.settings.shared_quota:
            return Budgets(rates, self.clock, discovery=self.settings.discovery)
        try:
            from eni_async.shared_quota import SharedBudgets, access_region
        except ImportError as exc:
            raise ConfigError(
                "shared_quota",
                mask_url(self.settings.shared_quota),
                f"needs the redis package (pip install '.[redis]' from a clone): {exc}",
            ) from None
        return SharedBudgets(
            rates,
            self.clock,
            url=self.settings.shared_quota,
            account=quota_account(credentials, self.settings, clock=self.clock),
            region=access_region(self.endpoint, self.settings.region),
            probe=self.settings.shared_quota_probe,
        )

    # -- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Reach the shared quota (when there is one) and open the session this pipeline owns."""
        if not isinstance(self.budgets, Budgets):
            await self.budgets.open()  # Redis unreachable at start: a ConfigError naming the URL
        if self._transport is None:
            ssl: bool | ssl_module.SSLContext = self._ssl_option()
            connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=ssl)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
            self._transport = self._make_transport(self._session)

    async def close(self) -> None:
        """Close the session if this pipeline opened it, and the connections to a shared quota."""
        if not isinstance(self.budgets, Budgets):
            await self.budgets.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._transport = None

    def _ssl_option(self) -> bool | ssl_module.SSLContext:
        if self._ssl is None:  # decided once: building a context costs tens of milliseconds
            s = self.settings
            self._ssl = tls_for(
                self.endpoint, verify=s.verify_tls, ca_file=s.ca_file, context=self._ssl_context
            )
        return self._ssl

    def _make_transport(self, session: aiohttp.ClientSession) -> AiohttpTransport:
        t = self.settings.timeouts
        return AiohttpTransport(
            session,
            timeout=client_timeout(connect=t.connect, read=t.read, total=t.total),
            proxy=proxy_for(self.endpoint, self.settings.proxy),
            ssl=self._ssl_option(),
        )

    # -- one call -------------------------------------------------------------------------------------

    def _context(self, credentials: Credentials) -> SignContext:
        return SignContext(
            credentials=credentials,
            endpoint=self.endpoint,
            region=self.settings.region,
            timestamp=int(self.clock.time()),
            nonce=next(self._nonces) % (2**31 - 1) + 1,
            sign_method=self.settings.sign_method,
        )

    def _call(
        self,
        action: str,
        build: Callable[[SignContext], HttpRequest],
        parse: Callable[[HttpResponse], T],
        *,
        mutating: bool,
        subject: str = "",
        retry: RetryPolicy | None = None,
    ) -> Awaitable[T]:
        """One API call through budget, signing, transport and parsing, retried per the table (and
        ``retry``, default the settings'); ``heard`` is told how it ended. The awaitable returned is the
        first attempt itself (without ``heard``): no frame of ours between the caller and the transport."""
        transport = self._transport
        if transport is None:
            raise RuntimeError("EniClient is not open: use 'async with EniClient(...) as client'")
        call = self._attempt(
            transport, self.budgets[action], action, subject, build, parse, 1, mutating=mutating, retry=retry
        )
        return call if self.heard is None else self._told(call)

    async def _told(self, call: Awaitable[T]) -> T:
        heard = self.heard
        assert heard is not None
        try:
            result = await call
        except EniAsyncError as exc:
            heard(exc)
            raise
        heard(None)
        return result

    async def _attempt(
        self,
        transport: Transport,
        budget: Budget,
        action: str,
        subject: str,
        build: Callable[[SignContext], HttpRequest],
        parse: Callable[[HttpResponse], T],
        attempt: int,
        *,
        mutating: bool,
        retry: RetryPolicy | None,
    ) -> T:
        """One attempt of a call: its budget slot, then sign, send and parse, logged. A first attempt that
        failed in a way worth retrying goes on to the retries (``_retries``); a later one raises."""
        if attempt == 1:
            await budget.acquire()
        else:  # a retry does not queue again behind every call waiting for the budget
            await budget.acquire_retry()
        clock = self.clock
        started = clock.monotonic()
        try:
            credentials = await self.credentials.get()
            try:
                result = parse(await transport.send(build(self._context(credentials))))
            except TokenError as exc:  # AuthFailure.TokenFailure; API 2.0 4100 naming the token, or 4105
                result = await self._signed_again(
                    transport, build, parse, budget.acquire, credentials, exc, f"{action} {subject}"
                )
        except EniAsyncError as exc:
            took = clock.monotonic() - started
            self._logged(
                action, subject, attempt, error_code(exc), getattr(exc, "request_id", None), took, exc
            )
            if isinstance(exc, ThrottledError):
                self._throttled(budget, action, subject, attempt, exc, took)
            if attempt > 1 or not retryable(mutating=mutating)(exc):
                raise
            failed = exc
        else:
            took = clock.monotonic() - started
            budget.observe(took)
            self._logged(action, subject, attempt, "Success", getattr(result, "request_id", None), took)
            if isinstance(result, TaskState):
                # When the task was seen in this state: the send time, not the answer's (budget waits excluded).
                result = cast(T, dataclasses.replace(result, observed_at=started))
            elif isinstance(result, Submitted):
                self._note_sent(result.task_id, started)
                if self.metrics is not None:
                    self.metrics.task_submitted(result.task_id, started)
            return result
        later = functools.partial(
            self._attempt, transport, budget, action, subject, build, parse, mutating=mutating, retry=retry
        )
        return await self._retries(failed, later, action, subject, mutating=mutating, retry=retry)

    async def _retries(
        self,
        failed: EniAsyncError,
        later: Callable[[int], Awaitable[T]],
        action: str,
        subject: str,
        *,
        mutating: bool,
        retry: RetryPolicy | None,
    ) -> T:
        """The retries of a call whose first attempt failed with ``failed`` (``later(n)``: its attempt n). The
        first attempt runs outside tenacity (most calls succeed at once, and building a retrier for each would
        cost more CPU than the call itself); its failure is replayed as tenacity's first attempt, so the
        schedule, the bound and the logs are exactly those of the policy."""
        replay: list[EniAsyncError] = [failed]
        attempts = itertools.count(2)

        async def again() -> T:
            if replay:
                raise replay.pop()
            return await later(next(attempts))

        metrics = self.metrics

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            reason = error_code(exc) if exc is not None else "Unknown"
            log.info(
                "retrying %s %s after %s: %s (attempt %d, waiting %.2fs)",
                action, subject, reason, exc, state.attempt_number, wait,
                extra={"action": action, "subject": subject, "attempt": state.attempt_number,
                       "code": reason, "wait_s": round(wait, 3)},
            )  # fmt: skip
            if metrics is not None:
                metrics.retry(action, reason)

        policy = self.settings.retry if retry is None else retry
        retrying = retrier(policy, self.clock, mutating=mutating, before_sleep=before_sleep)
        return await retrying(again)

    def _logged(
        self,
        action: str,
        subject: str,
        attempt: int,
        code: str,
        request_id: str | None,
        latency: float,
        error: EniAsyncError | None = None,
    ) -> None:
        """One attempt's end: into the metrics, and at DEBUG into the log."""
        if self.metrics is not None:
            self.metrics.call(action, code, latency)
        if not log.isEnabledFor(logging.DEBUG):
            return
        log.debug(
            "%s %s attempt %d: %s in %.3fs request_id=%s%s",
            action, subject, attempt, code, latency, request_id, f" ({error})" if error else "",
            extra={"action": action, "subject": subject, "attempt": attempt, "code": code,
                   "request_id": request_id, "latency_s": round(latency, 6)},
        )  # fmt: skip

    def _throttled(
        self, budget: Budget, action: str, subject: str, attempt: int, exc: ThrottledError, took: float
    ) -> None:
        """A throttle answer: the budget learns of it (and may slow down), the log says so at WARNING."""
        budget.observe(took)
        before = budget.rate
        budget.on_throttled(exc.limit)
        if self.metrics is not None:
            self.metrics.throttle(action)
        log.warning(
            "throttled on %s %s (attempt %d): %s: %s%s",
            action, subject, attempt, exc.code, exc.message,
            f"; rate lowered to {budget.rate:g}/s" if budget.rate < before else "",
            extra={"action": action, "subject": subject, "attempt": attempt, "code": error_code(exc),
                   "request_id": exc.request_id, "rate": budget.rate},
        )  # fmt: skip

    async def _signed_again(
        self,
        transport: Transport,
        build: Callable[[SignContext], HttpRequest],
        parse: Callable[[HttpResponse], T],
        acquire: Callable[[], Awaitable[None]],
        credentials: Credentials,
        refused: TokenError,
        label: str,
    ) -> T:
        """A call refused for its token, signed again once with fresh credentials (a refused token means the
        call had no effect, so even a mutating call may be); the refusal stands when nothing is fresher."""
        fresh = await self.credentials.refresh(credentials)
        if fresh == credentials:
            raise refused  # nothing fresher to sign with
        log.info("%s: %s; signing again with fresh credentials", label, refused.code)
        await acquire()
        return parse(await transport.send(build(self._context(fresh))))

    # -- the calls ------------------------------------------------------------------------------------

    async def submit(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Submitted:
        """One UnassignPrivateIpAddresses call for ids and IPs already validated (every caller validates
        once, up front)."""
        try:
            submitted = await self._unassign(vpc_id, eni_id, ips)
        except EniAsyncError as exc:
            _raise_submit_error(exc, vpc_id, eni_id, ips)
        return _submitted(submitted, eni_id, ips)

    def _unassign(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Awaitable[Submitted]:
        return self._call(
            UNASSIGN,
            lambda ctx: self.dialect.build_unassign(ctx, vpc_id, eni_id, ips),
            self.dialect.parse_unassign,
            mutating=True,
            subject=eni_id,
        )

    async def submit_when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        """Submit, and while another task holds the ENI's mutex, wait (the poll backoff) and try again.

        Once ``gate()`` is true no further try is made: ``StopSubmitting`` (every try so far met the mutex,
        so none had an effect)."""
        started = self.clock.monotonic()
        try:  # most submits find the ENI free: no backoff is built for them (``submit``, without its frame)
            submitted = await self._unassign(vpc_id, eni_id, ips)
        except MutexError as exc:  # surely no effect: never an OutcomeUnknownError
            busy = exc
        except EniAsyncError as exc:
            _raise_submit_error(exc, vpc_id, eni_id, ips)
        else:
            return _submitted(submitted, eni_id, ips)
        return await self._when_free(vpc_id, eni_id, ips, busy, started, timeout, gate)

    async def _when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        busy: MutexError,
        started: float,
        timeout: float | None,
        gate: Gate | None,
    ) -> Submitted:
        """``submit_when_free`` after its first try met the mutex (``busy``): tries again on the backoff."""
        policy = self.settings.poll
        deadline = started + (policy.timeout if timeout is None else timeout)
        for delay in backoff(policy):
            if gate is not None and gate():
                raise StopSubmitting from busy
            if self.clock.monotonic() + delay > deadline:
                raise TaskTimeoutError(f"(another task on {eni_id})", "RUNNING", delay) from busy
            log.info(
                "%s busy with another task (%s); retrying in %.2fs", eni_id, busy, delay,
                extra={"action": UNASSIGN, "subject": eni_id, "code": busy.code,
                       "request_id": busy.request_id, "wait_s": round(delay, 3)},
            )  # fmt: skip
            if self.metrics is not None:
                self.metrics.retry(UNASSIGN, busy.code)
            await self.clock.sleep(delay)
            if gate is not None and gate():
                raise StopSubmitting from busy
            try:
                return await self.submit(vpc_id, eni_id, ips)
            except MutexError as exc:
                busy = exc
        raise AssertionError("unreachable: the backoff never ends")  # pragma: no cover

    async def task_state(self, task_id: str) -> TaskState:
        """Query a task once and return its full reading (status, request id, output), stamped with when
        the query was sent."""
        return await self._call(
            TASK_QUERY,
            lambda ctx: self.dialect.build_task_query(ctx, task_id),
            lambda response: self.dialect.parse_task_query(response, task_id),
            mutating=False,
            subject=f"task {task_id}",
        )

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        """Describe ENIs by id, as many per call as the dialect takes (API 3.0: 100; API 2.0: one).

        An ENI missing from the answer does not exist (or is not visible to this key).
        """
        wanted = validation.eni_ids(eni_ids)
        per_call = self.dialect.describe_ids_per_call
        found: dict[str, EniInfo] = {}
        for start in range(0, len(wanted), per_call):
            group = wanted[start : start + per_call]
            page = await self._call(
                DESCRIBE,
                functools.partial(self.dialect.build_describe, eni_ids=group, limit=len(group)),
                self.dialect.parse_describe,
                mutating=False,
                subject=group[0] if len(group) == 1 else f"{len(group)} ENIs",
            )
            asked = set(group)
            found.update((info.eni_id, info) for info in page.enis if info.eni_id in asked)
        return found

    async def describe_vpc(self, vpc_id: str, *, offset: int, limit: int) -> tuple[list[EniInfo], int]:
        """One page of the ENIs of a VPC, and how many the VPC has."""
        page = await self._call(
            DESCRIBE,
            lambda ctx: self.dialect.build_describe(ctx, vpc_id=vpc_id, offset=offset, limit=limit),
            self.dialect.parse_describe,
            mutating=False,
            subject=vpc_id,
        )
        return list(page.enis), page.total

    async def check_credentials(self) -> None:
        """The cheapest call (DescribeNetworkInterfaces, ``Limit`` 1), tried once: ``AuthError`` if refused."""
        build = functools.partial(self.dialect.build_describe, limit=1)
        once = RetryPolicy(attempts=1)
        await self._call(DESCRIBE, build, self.dialect.parse_describe, mutating=False, retry=once)

    # -- what the tracker tells and asks --------------------------------------------------------------

    def _note_sent(self, task_id: str, at: float) -> None:
        sent = self._sent_at
        sent[task_id] = at
        if (
            len(sent) > SENT_REMEMBERED
        ):  # submits nobody tracks (``submit_unassign`` alone): forget the oldest
            del sent[next(iter(sent))]

    def sent_at(self, task_id: str) -> float | None:
        """When the submit that started ``task_id`` was sent (``Clock.monotonic``), if this pipeline sent
        it; asked once, by the tracker (budget and mutex waits before it are not the task's latency)."""
        return self._sent_at.pop(task_id, None)

    def task_seen(self, task_id: str, status: str, seen_at: float | None) -> None:
        """The tracker's word that it stopped watching ``task_id``: the task leaves the in-flight gauge and
        its latency is timed. Tasks are counted by their final status where their fate is known (the
        client's release path), since the tracker's last reading may be an old RUNNING."""
        if self.metrics is not None:
            self.metrics.task_seen(task_id, seen_at)


def _raise_submit_error(exc: EniAsyncError, vpc_id: str, eni_id: str, ips: Sequence[str]) -> NoReturn:
    """Raise a submit's error: one that may have had an effect (transient, not surely without effect) as an
    ``OutcomeUnknownError``, the rest as they are."""
    if exc.transient and not exc.no_effect:
        raise OutcomeUnknownError(UNASSIGN, vpc_id, eni_id, ips, exc) from exc
    raise exc


def _submitted(submitted: Submitted, eni_id: str, ips: Sequence[str]) -> Submitted:
    """A submit accepted: logged (at INFO), and returned."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "submitted release of %d IP(s) from %s: task %s request_id=%s",
            len(ips), eni_id, submitted.task_id, submitted.request_id,
            extra={"action": UNASSIGN, "subject": eni_id, "task_id": submitted.task_id,
                   "request_id": submitted.request_id},
        )  # fmt: skip
    return submitted


__all__ = ["Pipeline"]
