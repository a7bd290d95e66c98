"""``ApiHealth``: what the service knows of the API and its credentials, and the wait for refused ones.

The state is one line for ``/readyz`` (never a secret, only error codes): ``checking credentials`` until the
cheap call made at start (``EniClient.check_credentials``: one DescribeNetworkInterfaces with ``Limit`` 1)
answers, ``ok``, ``unreachable (Code)`` once any call the service makes (a submit, a look, a task query,
the probe) failed transiently after its retries (``throttled (Code)`` when that was throttling: the API
answers, over its rate limit), until one is answered again (the API is meanwhile probed
with the cheap call on the ``PROBE_WAIT`` backoff, so that a replica with no work still learns it, and items
waiting out the outage wait for that probe rather than each trying: ``down``), or ``credentials refused:
Code``. Refused credentials are read again from their source
(``reload``: the credential chain, so a rewritten file, a renewed role or new variables count; without it
the provider renews itself) and tried with the same cheap call, on the ``CREDENTIALS_WAIT`` backoff, until
the API takes them; then ``resume`` is awaited (the engine starts a new batch). Nothing is failed for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from tenacity import RetryCallState

from eni_async.errors import (
    AuthError,
    EniAsyncError,
    OutcomeUnknownError,
    ServerError,
    ThrottledError,
    error_code,
)
from eni_async.patience import PARKED_S, outlastable
from eni_async.policy import OutagePolicy, outlasting

if TYPE_CHECKING:
    from eni_async.client import EniClient
    from eni_async.credentials import CredentialProvider

log = logging.getLogger("eni_async.service")

# How often refused credentials are read again and tried: jittered, doubling from 1 s, at most a minute.
CREDENTIALS_WAIT = OutagePolicy(initial=1.0, maximum=60.0)
# How often an unreachable API is probed with the cheap call: every item waiting for it waits for this probe
# (``Patience.api_down``), so it is the whole load an outage puts on the API and sets how soon work resumes.
PROBE_WAIT = OutagePolicy(initial=1.0, maximum=10.0)
OK, CHECKING, UNREACHABLE, REFUSED = "ok", "checking credentials", "unreachable", "credentials refused"
THROTTLED = "throttled"
OUTAGES = (UNREACHABLE, THROTTLED)  # the states an outage puts the API in (probed until it answers)
# Error codes of an outcome that say the API could not be reached.
UNREACHABLE_CODES = frozenset({"ConnectFailed", "ConnectionLost", "BadAnswer"})


class ApiHealth:
    """The API's state as the service sees it; see the module docstring."""

    def __init__(
        self,
        client: EniClient,
        *,
        reload: Callable[[], Awaitable[CredentialProvider]] | None,
        resume: Callable[[], Awaitable[None]],
        first_wait: float = PROBE_WAIT.initial,
    ) -> None:
        self.client = client
        # ``first_wait``: the first wait of both backoffs (the ``service_outage_wait`` setting); work parked
        # while the API is down looks every five times it.
        self.probe_wait = dataclasses.replace(PROBE_WAIT, initial=min(first_wait, PROBE_WAIT.maximum))
        self.credentials_wait = dataclasses.replace(
            CREDENTIALS_WAIT, initial=min(first_wait, CREDENTIALS_WAIT.maximum)
        )
        self.reload = reload
        self.resume = resume
        self.state = CHECKING
        self.outages = 0  # items waiting out an outage now
        self.stopping = False
        self._recovery: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._down: EniAsyncError | None = None  # the last call's error that made the API unreachable
        client.releaser.patience.on_outage = self.outage
        client.releaser.patience.api_down = self.down
        client.releaser.patience.parked_s = PARKED_S * self.probe_wait.initial / PROBE_WAIT.initial
        client.calls.heard = self.heard

    def __repr__(self) -> str:
        return f"ApiHealth({self.state!r})"

    @property
    def ok(self) -> bool:
        """Whether the API takes our credentials and answers."""
        return self.state == OK

    @property
    def refused(self) -> bool:
        """Whether the API refuses the credentials (work is paused)."""
        return self.state.startswith(REFUSED)

    def down(self) -> EniAsyncError | None:
        """The error that made the API known not to answer, while it is so and the probe runs (without a
        probe to say when it is back, say nothing: the items then try on their own backoff)."""
        probing = self._probe is not None and not self._probe.done()
        return self._down if probing and self.state.startswith(OUTAGES) else None

    def heard(self, error: EniAsyncError | None) -> None:
        """How one API call ended, after its retries (every call the service makes: submits, looks, task
        queries, the probe): one that failed transiently (an ambiguous submit for its cause's reason) makes
        the API unreachable; any answer (``None``, or an error the API answered with) makes it ok again.
        A refusal of the credentials is the batch's to report (``refuse``)."""
        cause = error.cause if isinstance(error, OutcomeUnknownError) else error
        if isinstance(cause, EniAsyncError) and outlastable(cause):
            self._unreachable(error_code(cause), cause)
        elif not isinstance(cause, AuthError) and self.state.startswith(OUTAGES):
            log.info("the API answers again")
            self.state = OK

    def outage(self, error: BaseException | None) -> None:
        """The release path's word that an item began waiting out an outage (``error``) or that its wait
        ended (``None``; the calls themselves say whether the API answers again, ``heard``)."""
        if error is not None:
            self.outages += 1
            self._unreachable(error_code(error), error if isinstance(error, EniAsyncError) else None)
            return
        self.outages = max(0, self.outages - 1)

    def finished(self, code: str | None) -> None:
        """A release ended here with the error ``code`` (``None``: none)."""
        if code in UNREACHABLE_CODES:
            self._unreachable(code)

    async def first_check(self) -> None:
        """At start: one cheap call says whether the API takes the credentials."""
        try:
            await self.client.check_credentials()
        except AuthError as exc:
            self.refuse(exc)
        except EniAsyncError as exc:
            if not self.refused:
                log.warning("the API cannot be reached at start (%s); accepted work waits for it", exc)
                self._unreachable(error_code(exc), exc)
        else:
            if self.state == CHECKING or self.state.startswith(OUTAGES):
                self.state = OK

    def _unreachable(self, code: str, error: EniAsyncError | None = None) -> None:
        """The API could not be reached, or throttles (``error``, when known: what waiting items show): say
        so, and probe it (on the backoff) until it answers, since a replica that is not ready may get no
        release that would tell."""
        if self.refused:
            return
        self.state = f"{THROTTLED if isinstance(error, ThrottledError) else UNREACHABLE} ({code})"
        if error is not None or self._down is None:
            self._down = error if error is not None else ServerError(code, "the API could not be reached")
        if (self._probe is None or self._probe.done()) and not self.stopping:
            self._probe = asyncio.create_task(self._probing())

    async def _probing(self) -> None:
        async def attempt() -> None:
            await self.client.check_credentials()

        retrying = outlasting(
            self.probe_wait,
            self.client.clock,
            math.inf,
            retry=lambda exc: outlastable(exc) and not self.stopping,
        )
        await self.client.clock.sleep(self.probe_wait.initial)
        try:
            await retrying(attempt)
        except AuthError as exc:
            self.refuse(exc)
            return
        except EniAsyncError:  # stopping
            return
        if self.state.startswith(OUTAGES):  # (``heard`` has said so already, unless it is not installed)
            log.info("the API answers again")
            self.state = OK

    def refuse(self, exc: BaseException) -> None:
        """The API refused the credentials: say so, and read them again until it takes them."""
        self.state = f"{REFUSED}: {error_code(exc)}"
        if self._recovery is None or self._recovery.done():
            log.error(
                "the API refuses the credentials (%s): work paused, reading them again", error_code(exc)
            )
            self._recovery = asyncio.create_task(self._recover())

    async def close(self) -> None:
        """Stop waiting for credentials."""
        self.stopping = True
        tasks = [task for task in (self._recovery, self._probe) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _recover(self) -> None:
        clock = self.client.clock

        async def attempt() -> None:
            provider = await self.reload() if self.reload is not None else self.client.credentials
            if self.reload is None:
                await provider.refresh()
            self.client.credentials = provider
            await self.client.check_credentials()

        def waited(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, AuthError):
                self.state = f"{REFUSED}: {error_code(exc)}"
            wait = state.next_action.sleep if state.next_action else 0.0
            code = error_code(exc) if exc is not None else "Unknown"
            log.info("credentials still not usable (%s); trying again in %.0fs", code, wait)

        retrying = outlasting(
            self.credentials_wait,
            clock,
            math.inf,
            retry=lambda exc: isinstance(exc, EniAsyncError) and not self.stopping,
            before_sleep=waited,
        )
        await clock.sleep(self.credentials_wait.initial)
        try:
            await retrying(attempt)
        except EniAsyncError:  # stopping
            return
        log.info("the API accepts the credentials (%s): work goes on", self.client.credentials.source)
        self.state = OK
        await self.resume()


__all__ = ["CREDENTIALS_WAIT", "OUTAGES", "PROBE_WAIT", "UNREACHABLE_CODES", "ApiHealth"]
