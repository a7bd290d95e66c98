"""Credential providers: the ``CredentialProvider`` protocol, fixed credentials, and one shared refresher.

A client asks its provider for credentials before signing each call (``get``), and asks again after the
server refused a token that expired anyway (``refresh(stale)``). ``RefreshingCredentials`` renews temporary
credentials on their source's ``Renewal`` schedule, the official SDK's (and tccli's): the CVM role and
tccli's login keys 300 s before they expire, an assumed role at ``ExpiredTime - 0.9 x DurationSeconds``,
TKE's OIDC role at ``ExpiredTime - 0.1 x DurationSeconds`` (where a schedule would fall before the fetch, a
lifetime shorter than it assumes, halfway through the lifetime instead), through one ``asyncio.Lock``: while one coroutine fetches, every other keeps signing with the credentials in hand, which
are still valid, so in-flight work never stops; only when they have really expired do callers wait for the
fetch. A failed renewal while the old credentials still hold is logged and tried again ``retry_after``
seconds later. Time is the injected clock's wall time (``expires_at`` is epoch seconds). No secret is ever
logged or shown in a repr.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from eni_async.clock import Clock, SystemClock
from eni_async.errors import AuthError, EniAsyncError
from eni_async.models import Credentials

log = logging.getLogger("eni_async.credentials")

# CVMRoleCredential._expired_timeout in the official SDK: renew 300 s before expiry, because a request
# whose timestamp is more than 300 s off is refused anyway.
DEFAULT_MARGIN = 300.0
RETRY_AFTER = 10.0


@dataclass(frozen=True)
class Renewal:
    """When temporary credentials are renewed: ``margin`` seconds before they expire, or, with ``share``, at
    ``expires_at - share x duration`` (the requested ``DurationSeconds``), as the official SDK renews STS keys."""

    margin: float = DEFAULT_MARGIN
    share: float = 0.0
    duration: float = 0.0

    def renew_at(self, expires_at: float, now: float) -> float:
        """When credentials fetched at ``now`` and expiring at ``expires_at`` are renewed."""
        at = expires_at - (self.share * self.duration if self.share else self.margin)
        # A lifetime shorter than the schedule assumes would renew at every call: halfway instead.
        return at if at > now else now + max(0.0, expires_at - now) / 2


# The official SDK's schedules (CVMRoleCredential._expired_timeout; STSAssumeRoleCredential and
# OIDCRoleArnCredential's _expired_time) and tccli's (oauth.py/sso.py _CRED_REFRESH_SAFE_DUR).
CVM_ROLE = Renewal(margin=DEFAULT_MARGIN)
ASSUME_ROLE = Renewal(share=0.9, duration=7200.0)
OIDC_ROLE = Renewal(share=0.1, duration=7200.0)
TCCLI_LOGIN = Renewal(margin=DEFAULT_MARGIN)


class CredentialError(AuthError):
    """Credentials could not be obtained (metadata service or STS unreachable or answering nonsense).

    An ``AuthError``: every later call would fail the same way, so a batch stops.
    """

    def __init__(
        self, message: str, *, code: str = "CredentialsUnavailable", request_id: str | None = None
    ) -> None:
        super().__init__(code, message, request_id=request_id)


@runtime_checkable
class CredentialProvider(Protocol):
    """Where a client gets the credentials to sign with. ``source`` says where they come from (no secret)."""

    @property
    def source(self) -> str:
        """A human description of the source, e.g. ``environment (TENCENTCLOUD_SECRET_ID)``."""
        ...

    async def get(self) -> Credentials:
        """Credentials to sign one call with now."""
        ...

    async def refresh(self, stale: Credentials | None = None) -> Credentials:
        """Fresh credentials after ``stale`` was refused; the same ones when there is nothing fresher."""
        ...


class StaticCredentials:
    """Fixed credentials: ``get`` and ``refresh`` both return them."""

    def __init__(self, credentials: Credentials, source: str = "explicit credentials") -> None:
        self._credentials = credentials
        self._source = source

    @property
    def credentials(self) -> Credentials:
        """The fixed credentials."""
        return self._credentials

    def __repr__(self) -> str:
        return f"StaticCredentials(secret_id={self._credentials.secret_id!r}, source={self._source!r})"

    @property
    def source(self) -> str:
        """Where the credentials came from."""
        return self._source

    async def get(self) -> Credentials:
        """The credentials."""
        return self._credentials

    async def refresh(self, stale: Credentials | None = None) -> Credentials:
        """The same credentials: there is nothing to renew."""
        return self._credentials


class RefreshingCredentials:
    """Temporary credentials from ``fetch``, renewed before expiry by one refresher shared by all callers."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Credentials]],
        *,
        source: str,
        clock: Clock | None = None,
        margin: float = DEFAULT_MARGIN,
        schedule: Renewal | None = None,
        retry_after: float = RETRY_AFTER,
        initial: Credentials | None = None,
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.schedule = schedule if schedule is not None else Renewal(margin=margin)
        self._retry_after = retry_after
        self._lock = asyncio.Lock()
        self._current = initial
        self._renew_at = self._renewal_time(initial) if initial is not None else 0.0
        self._next_try = 0.0
        self.fetches = 0  # how many times ``fetch`` ran (for tests and logs)

    def __repr__(self) -> str:
        secret_id = self._current.secret_id if self._current else None
        return f"RefreshingCredentials(source={self._source!r}, secret_id={secret_id!r})"

    @property
    def source(self) -> str:
        """Where the credentials come from."""
        return self._source

    def _renewal_time(self, credentials: Credentials) -> float:
        if credentials.expires_at is None:
            return float("inf")
        return self.schedule.renew_at(credentials.expires_at, self._clock.time())

    def _valid(self, credentials: Credentials, now: float) -> bool:
        return credentials.expires_at is None or now < credentials.expires_at

    async def get(self) -> Credentials:
        """The current credentials; renewed first when due, fetched first when there are none or they expired."""
        current = self._current
        now = self._clock.time()
        if current is not None and now < self._renew_at:
            return current
        if (
            current is not None
            and self._valid(current, now)
            and (self._lock.locked() or now < self._next_try)
        ):
            return current  # another coroutine is renewing them, or a renewal failed a moment ago
        return await self._renew(lambda held: held is None or self._clock.time() >= self._renew_at)

    async def refresh(self, stale: Credentials | None = None) -> Credentials:
        """Fetch new credentials unless someone already replaced ``stale`` (then return theirs)."""
        return await self._renew(lambda held: held is None or stale is None or held == stale)

    async def _renew(self, needed: Callable[[Credentials | None], bool]) -> Credentials:
        async with self._lock:
            held = self._current
            if held is not None and not needed(held):
                return held  # renewed by whoever held the lock before us
            try:
                self.fetches += 1
                fresh = await self._fetch()
            except EniAsyncError as exc:
                now = self._clock.time()
                if held is not None and self._valid(held, now):
                    self._next_try = now + self._retry_after
                    log.warning(
                        "could not renew credentials from %s (%s); the current ones hold until %.0f",
                        self._source, exc, held.expires_at or 0.0,
                    )  # fmt: skip
                    return held
                raise
            self._current = fresh
            self._renew_at = self._renewal_time(fresh)
            self._next_try = 0.0
            log.debug(
                "credentials from %s renewed (SecretId %s, expiring at %s)",
                self._source, fresh.secret_id, fresh.expires_at,
            )  # fmt: skip
            return fresh


def as_provider(credentials: Credentials | CredentialProvider) -> CredentialProvider:
    """A provider for either fixed credentials or a provider."""
    if isinstance(credentials, Credentials):
        return StaticCredentials(credentials)
    return credentials
