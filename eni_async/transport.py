"""The one aiohttp adapter: moves bytes and translates aiohttp's errors into ours, nothing else.

The one rule that matters here is which failures surely had no effect (the connection was never made:
``ConnectError``) and which may have reached the server (``ConnectionLostError``: a read timeout, a dropped
connection after sending). Answers larger than ``max_body`` are refused as a ``ProtocolError``. A ``proxy``
is passed on every request, so it overrides whatever proxy the session would take from the environment
(``trust_env``); ``None`` leaves that choice to the session. Every HTTP exchange of the package goes through
here: the client's calls (``AiohttpTransport`` over its long-lived session) and the occasional ones of the
credential sources (``exchange``: one request on a session of its own), with the same proxy rule
(``proxy_for``) and the same TLS rule (``tls_for``).
``Transport`` is the seam under the call pipeline: anything with ``send`` (``eni_async.testing.MockTransport``
in tests) can stand in for ``AiohttpTransport``.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl as ssl_module
import urllib.request
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from eni_async.errors import ConfigError, ConnectError, ConnectionLostError, InputError, ProtocolError
from eni_async.models import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024
TLS_OFF_WARNING = "TLS certificate verification is OFF (verify_tls = false); use only for testing"


def proxy_for(url: str, configured: str = "") -> str | None:
    """The proxy for ``url``: ``configured`` when set, else the environment's for its scheme
    (``HTTPS_PROXY``/``HTTP_PROXY``) unless ``NO_PROXY`` covers its host. Decided once per endpoint: leaving
    it to aiohttp's ``trust_env`` would read the environment and ``.netrc`` in a thread for every call."""
    if configured:
        return configured
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.netloc):
        return proxy
    return None


def tls_for(
    url: str, *, verify: bool = True, ca_file: str = "", context: ssl_module.SSLContext | None = None
) -> bool | ssl_module.SSLContext:
    """What to pass as aiohttp's ``ssl=`` for ``url``: ``context`` when given; ``True`` for plain HTTP (no
    context to build: it costs tens of milliseconds); ``False``, with a warning, when ``verify`` is off; else a
    default context trusting ``ca_file`` (a ``ConfigError`` naming it when it cannot be loaded) or the system's
    certificates."""
    if context is not None:
        return context
    if not verify:
        log.warning(TLS_OFF_WARNING)
        return url.startswith("http://")
    if not url.startswith("https://"):
        return True
    try:
        return ssl_module.create_default_context(cafile=ca_file) if ca_file else _system_context()
    except (OSError, ssl_module.SSLError) as exc:
        raise ConfigError("ca_file", ca_file, f"cannot load certificates ({exc})") from None


@functools.cache
def _system_context() -> ssl_module.SSLContext:
    """One default context trusting the system's certificates for the process (as aiohttp keeps one): loading
    them costs about 30 ms, once per client otherwise. Nothing changes it after it is built."""
    return ssl_module.create_default_context()


def client_timeout(*, connect: float, read: float, total: float) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for one call from our three (``settings.Timeouts``)."""
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)


async def exchange(
    request: HttpRequest,
    *,
    timeout: aiohttp.ClientTimeout,
    proxy: str | None = None,
    ssl: bool | ssl_module.SSLContext = True,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """Send one request on a session of its own (for calls minutes apart, such as credential renewals) and
    return the answer, or raise a ``TransportError`` as ``AiohttpTransport.send`` does."""
    async with aiohttp.ClientSession(trust_env=False) as session:
        transport = AiohttpTransport(session, timeout=timeout, proxy=proxy, ssl=ssl, max_body=max_body)
        return await transport.send(request)


def json_request(action: str, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> HttpRequest:
    """A POST of a JSON body."""
    return HttpRequest(action, "POST", url, {"Content-Type": "application/json", **(headers or {})}, body)


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
        ssl: bool | ssl_module.SSLContext = True,
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
                headers=request.headers,
                data=request.body,
                timeout=self._timeout if self._timeout is not None else aiohttp.helpers.sentinel,
                proxy=self._proxy,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                length = response.content_length
                if length is not None and length <= self._max_body:
                    # A stated length within the bound (the common case): aiohttp reads exactly that many.
                    body = await response.read()
                else:
                    body = await self._bounded(response, action)
                # The answer's headers as aiohttp parsed them (read-only, case-insensitive), not copied.
                return HttpResponse(response.status, response.headers, body)
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # Never connected (refused, unreachable, DNS, TLS handshake): nothing was sent.
            raise ConnectError(f"{action}: cannot connect {_connect_failure(exc)}", action=action) from exc
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

    async def _bounded(self, response: aiohttp.ClientResponse, action: str) -> bytes:
        """The body of an answer of no stated length, or one stated past the bound: read chunk by chunk,
        refused once it passes ``max_body``."""
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
        return b"".join(chunks)


def _connect_failure(exc: BaseException) -> str:
    """``to HOST:PORT (Connection refused)``: aiohttp's own text names the address twice ("Cannot connect to
    host H:P ssl:default [Connect call failed ('H', P)]"); TLS and DNS failures keep their own words."""
    code = exc.os_error.errno if type(exc) is aiohttp.ClientConnectorError else None
    if isinstance(exc, aiohttp.ClientConnectorError) and code is not None and code > 0:
        return f"to {exc.host}:{exc.port} ({os.strerror(code)})"
    return f"({_describe(exc)})"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
