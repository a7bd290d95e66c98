"""``ServiceClient``: the Python way into ``eni-async serve``, with the exception tree of ``EniClient``.

Every operation of the service: ``submit`` and ``submit_many`` post releases (always with an
``Idempotency-Key``, generated when not given, so a retried submit can never make a second release), ``get``
reads one, ``list_releases`` reads a page (filtered by status, ENI, VPC and creation time) and
``releases`` every page, ``cancel`` cancels one none of whose calls was sent, ``wait`` long-polls until it
ends, and ``unassign`` is submit-then-wait returning an ``UnassignResult`` exactly like
``EniClient.unassign``. A release that failed raises the error it carries, rebuilt into the same classes
``EniClient`` raises (``PrimaryIpError``, ``TaskFailedError``, ...) with ``.release`` holding the release;
a release whose IPs were all released or absent succeeded and returns its result; a cancelled one raises
``ReleaseCancelledError``. Failures of the service itself are ``ServiceError`` (HTTP status, code, field,
and for a refused cancel the tasks in flight); failures to reach it are ``ConnectError`` or
``ConnectionLostError``. 429 and 503 answers are retried after their ``Retry-After``. The token never
appears in a repr, an error or a log line.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import aiohttp

from eni_async.clock import Clock, SystemClock
from eni_async.errors import ConnectError, ConnectionLostError, EniAsyncError, TaskTimeoutError
from eni_async.models import UnassignResult
from eni_async.outcomes import FAILED, SUCCEEDED, Outcome

CANCELLED = "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
MAX_WAIT_S = 60.0
MAX_PAGES = 100_000  # ``releases`` follows cursors at most this far (a service that never ends its pages)
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
        task_ids: Sequence[str] = (),
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.task_ids = tuple(task_ids)  # a refused cancel's tasks in flight
        where = f" ({field})" if field else ""
        super().__init__(f"service answered {status} {code}{where}: {message}")


class ReleaseCancelledError(EniAsyncError):
    """The release was cancelled (by this caller or another) before any of its calls was sent: every IP is
    still on the ENI as far as the service did; ``.release`` holds the release."""

    def __init__(self, release: dict[str, Any]) -> None:
        self.release = release
        super().__init__(f"release {release.get('id')} was cancelled before any of its calls was sent")


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
                task_ids=[str(t) for t in error.get("task_ids") or ()],
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
        self,
        *,
        status: str | None = None,
        eni_id: str | None = None,
        vpc_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of releases, newest first, each filter given applied (times as timezone-aware datetimes
        or RFC 3339 text), and the cursor of the next page (``None`` on the last)."""
        query: dict[str, str] = {"limit": str(limit)}
        for name, value in (("status", status), ("eni_id", eni_id), ("vpc_id", vpc_id), ("cursor", cursor)):
            if value:
                query[name] = value
        for name, stamp in (("created_after", created_after), ("created_before", created_before)):
            if stamp is not None:
                query[name] = _rfc3339(name, stamp)
        data = await self._request("GET", f"/v1/releases?{urlencode(query)}")
        return data["releases"], data["next_cursor"]

    async def releases(
        self,
        *,
        status: str | None = None,
        eni_id: str | None = None,
        vpc_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every release matching the filters, newest first, a page of ``page`` at a time."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            found, cursor = await self.list_releases(
                status=status, eni_id=eni_id, vpc_id=vpc_id, created_after=created_after,
                created_before=created_before, limit=page, cursor=cursor,
            )  # fmt: skip
            for release in found:
                yield release
            if cursor is None:
                return

    async def cancel(self, release_id: str) -> dict[str, Any]:
        """Cancel a release none of whose calls was sent: the release, ``cancelled`` (also when it already
        was). ``ServiceError`` 409 otherwise: ``AlreadySubmitted`` (its ``task_ids`` in flight) or
        ``AlreadyFinished``; 404 for an unknown id."""
        release: dict[str, Any] = await self._request(
            "POST", f"/v1/releases/{quote(release_id, safe='')}:cancel"
        )
        return release

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
        if done["status"] == CANCELLED:
            raise ReleaseCancelledError(done)
        if done["status"] != SUCCEEDED:
            raise release_error(done)
        return Outcome.from_json(done).result()


def _rfc3339(name: str, stamp: datetime | str) -> str:
    """A filter's moment as RFC 3339 text; a naive datetime is refused (its zone would be a guess)."""
    if isinstance(stamp, str):
        return stamp
    if stamp.tzinfo is None or stamp.utcoffset() is None:
        raise ValueError(f"{name}: expected a timezone-aware datetime (a naive one's zone would be a guess)")
    return stamp.isoformat()


__all__ = ["ReleaseCancelledError", "ServiceClient", "ServiceError", "release_error"]
