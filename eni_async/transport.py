"""The aiohttp adapter: moves bytes and translates aiohttp's errors into ours, nothing else.

The one rule that matters here is which failures surely had no effect (the connection was never made:
``ConnectError``) and which may have reached the server (``ConnectionLostError``: a read timeout, a dropped
connection after sending). Answers larger than ``max_body`` are refused as a ``ProtocolError``. A ``proxy``
is passed on every request, so it overrides whatever proxy the session would take from the environment
(``trust_env``); ``None`` leaves that choice to the session. ``Transport`` is the seam under the call
pipeline: anything with ``send`` (``eni_async.testing.MockTransport`` in tests) can stand in for this adapter.
"""

from __future__ import annotations

import logging
from typing import Protocol

import aiohttp

from eni_async.errors import ConnectError, ConnectionLostError, InputError, ProtocolError
from eni_async.models import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024


class Transport(Protocol):
    """Moves one request and its answer: raises a ``TransportError`` when the exchange itself fails."""

    async def send(self, request: HttpRequest) -> HttpResponse: ...


class AiohttpTransport:
    """Send ``HttpRequest`` values over an ``aiohttp.ClientSession`` it may not own."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        proxy: str | None = None,
        ssl: bool | object = True,
        max_body: int = MAX_BODY,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._proxy = proxy
        self._ssl = ssl
        self._max_body = max_body

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send one request and return the raw answer, or raise a ``TransportError``."""
        action = request.action
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                timeout=self._timeout if self._timeout is not None else aiohttp.helpers.sentinel,
                proxy=self._proxy,
                ssl=self._ssl,  # type: ignore[arg-type]
                allow_redirects=False,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > self._max_body:
                        raise ProtocolError(
                            f"{action}: answer larger than {self._max_body} bytes",
                            action=action,
                            status=response.status,
                        )
                    chunks.append(chunk)
                return HttpResponse(response.status, dict(response.headers), b"".join(chunks))
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # Never connected (refused, unreachable, DNS, TLS handshake): nothing was sent.
            raise ConnectError(f"{action}: cannot connect ({_describe(exc)})", action=action) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise ConnectionLostError(f"{action}: read timed out", action=action) from exc
        except aiohttp.ClientResponseError as exc:
            raise ProtocolError(
                f"{action}: bad HTTP answer ({exc.message})", action=action, status=exc.status
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            # Disconnected, payload broken mid-way, reset: the request may have been processed.
            raise ConnectionLostError(f"{action}: connection lost ({_describe(exc)})", action=action) from exc
        except ValueError as exc:
            # aiohttp refuses to send a request it cannot encode (e.g. a control character in a header).
            raise InputError("request", action, f"cannot be sent ({exc})") from None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
