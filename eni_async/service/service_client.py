"""``ServiceClient``: the Python way into ``eni-async serve``, with the exception tree of ``EniClient``.

``submit`` posts a release (always with an ``Idempotency-Key``, generated when not given, so a retried
submit can never make a second release), ``get`` reads one, ``wait`` long-polls until it ends, and
``unassign`` is submit-then-wait returning an ``UnassignResult`` exactly like ``EniClient.unassign``. A
release that failed raises the error it carries, rebuilt into the same classes ``EniClient`` raises
(``PrimaryIpError``, ``TaskFailedError``, ...) with ``.release`` holding the release; a release whose IPs
were all released or absent succeeded and returns its result. Failures of the
service itself are ``ServiceError`` (HTTP status, code, field); failures to reach it are ``ConnectError``
or ``ConnectionLostError``. 429 and 503 answers are retried after their ``Retry-After``. The token never
appears in a repr, an error or a log line.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp

from eni_async.clock import Clock, SystemClock
from eni_async.errors import ConnectError, ConnectionLostError, EniAsyncError, TaskTimeoutError
from eni_async.models import UnassignResult
from eni_async.outcomes import FAILED, SUCCEEDED, Outcome

FINISHED = (SUCCEEDED, FAILED)
MAX_WAIT_S = 60.0
RETRIED_STATUSES = (429, 503)


class ServiceError(EniAsyncError):
    """An error answer from the service: ``status``, ``code``, ``message`` and, for 400, ``field``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        where = f" ({field})" if field else ""
        super().__init__(f"service answered {status} {code}{where}: {message}")


def release_error(release: dict[str, Any]) -> EniAsyncError:
    """The exception a failed release stands for, as ``EniClient`` would raise it (``Outcome.failure``,
    rebuilt from the release's error), with ``.release`` holding the release."""
    exc = Outcome.from_json(release | {"status": FAILED}).failure()
    assert exc is not None  # a failed outcome always stands for an exception
    exc.release = release
    return exc


class ServiceClient:
    """An async client of ``eni-async serve``; use as ``async with ServiceClient(endpoint, token) as c``."""

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Clock | None = None,
        retries: int = 3,
        timeout: float = 75.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._session = session
        self._owns_session = session is None
        self.clock: Clock = clock or SystemClock()
        self.retries = retries
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ServiceClient({self.endpoint!r}, token={'***' if self._token else None})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client opened it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self._owns_session = True
        return self._session

    async def _request(
        self, method: str, path: str, *, body: object = None, headers: Mapping[str, str] | None = None
    ) -> Any:
        sent = dict(headers or {})
        if self._token:
            sent["Authorization"] = f"Bearer {self._token}"
        for attempt in range(self.retries + 1):
            try:
                async with self._http().request(
                    method, f"{self.endpoint}{path}", json=body, headers=sent
                ) as resp:
                    data = await resp.json(content_type=None)
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                if attempt < self.retries:
                    await self.clock.sleep(0.2 * 2**attempt)
                    continue
                raise ConnectError(f"cannot connect to {self.endpoint} ({type(exc).__name__})") from None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise ConnectionLostError(f"{method} {path}: {type(exc).__name__}") from None
            if status < 400:
                return data
            error = data.get("error", {}) if isinstance(data, dict) else {}
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            if status in RETRIED_STATUSES and attempt < self.retries:
                await self.clock.sleep(min(wait if wait is not None else 1.0, 30.0))
                continue
            raise ServiceError(
                status,
                str(error.get("code", "Error")),
                str(error.get("message", "")),
                field=error.get("field"),
                retry_after=wait,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def submit(
        self, vpc_id: str, eni_id: str, ips: Sequence[str], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Post one release; return it (status ``pending`` unless an earlier identical submit moved it)."""
        key = idempotency_key or uuid.uuid4().hex
        body = {"vpc_id": vpc_id, "eni_id": eni_id, "ips": list(ips)}
        release: dict[str, Any] = await self._request(
            "POST", "/v1/releases", body=body, headers={"Idempotency-Key": key}
        )
        return release

    async def submit_many(
        self, releases: Sequence[tuple[str, str, Sequence[str]]], *, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Post many releases in one request (the batch form); return them in order."""
        key = idempotency_key or uuid.uuid4().hex
        body = {"releases": [{"vpc_id": v, "eni_id": e, "ips": list(i)} for v, e, i in releases]}
        data = await self._request("POST", "/v1/releases", body=body, headers={"Idempotency-Key": key})
        found: list[dict[str, Any]] = data["releases"]
        return found

    async def get(self, release_id: str, *, wait: float = 0.0) -> dict[str, Any]:
        """One release; with ``wait``, held by the service until it ends or ``wait`` seconds pass."""
        query = f"?wait={min(wait, MAX_WAIT_S):g}" if wait > 0 else ""
        release: dict[str, Any] = await self._request("GET", f"/v1/releases/{release_id}{query}")
        return release

    async def list_releases(
        self, *, status: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of releases, newest first, and the cursor of the next page."""
        query = (
            f"?limit={limit}"
            + (f"&status={status}" if status else "")
            + (f"&cursor={cursor}" if cursor else "")
        )
        data = await self._request("GET", f"/v1/releases{query}")
        return data["releases"], data["next_cursor"]

    async def wait(self, release_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The release once finished; ``TaskTimeoutError`` when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        while True:
            left = MAX_WAIT_S if deadline is None else deadline - self.clock.monotonic()
            release = await self.get(release_id, wait=max(0.0, min(left, MAX_WAIT_S)))
            if release["status"] in FINISHED:
                return release
            if deadline is not None and self.clock.monotonic() >= deadline:
                raise TaskTimeoutError(f"(release {release_id})", release["status"], timeout or 0.0)

    async def unassign(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> UnassignResult:
        """Submit and wait, like ``EniClient.unassign``: the result, or the release's error raised."""
        release = await self.submit(vpc_id, eni_id, ips, idempotency_key=idempotency_key)
        done = await self.wait(release["id"], timeout)
        if done["status"] != SUCCEEDED:
            raise release_error(done)
        return Outcome.from_json(done).result()


__all__ = ["ServiceClient", "ServiceError", "release_error"]
