"""The service's listening socket: connections under a cap, slow ones closed, framework errors as JSON.

aiohttp's ``TCPSite`` accepts without limit, and once descriptors run out asyncio logs a traceback for every
failed ``accept()`` (hundreds a second, 62 MB in 25 s); an idle connection stays open for an hour. So one
accept loop here owns the socket. At most ``cap`` connections are open at once (``connection_cap``: the
setting, less what the descriptor limit leaves for the journal and the calls to Tencent). At the cap, the
connection that has waited longest for a whole request (idle, or trickling its headers) is closed to admit
the new one, so idle or slow sockets cannot lock callers and probes out; only when every connection is in a
request is a newcomer answered one ``503`` in the service's JSON shape and closed. Refusals, evictions and
failed accepts are logged through a ``LogLimiter`` (one line a minute with a count, never one each). A connection must send a request's headers within
``header_timeout`` seconds of opening or of its previous answer (aiohttp's keep-alive timer, which closes a
connection still waiting for a whole request; the TLS handshake has the same bound). Requests aiohttp
cannot parse are answered by ``Connection.handle_error``: the JSON error shape, and a log line that names
the kind of error but never quotes it (aiohttp's own message quotes the request line, tokens included).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import uuid
from typing import Any

from aiohttp import http_exceptions as hx
from aiohttp import web

from eni_async.service.http import error_response
from eni_async.service.lograte import LogLimiter

log = logging.getLogger("eni_async.service.http")

# Descriptors kept for everything but callers' connections: stdio, the journal (and its WAL), the event
# loop, the client's pool of connections to Tencent (aiohttp's default limit is 100), Redis, metrics.
RESERVED_DESCRIPTORS = 200
# Refusals being written at once; beyond, a newcomer is closed without an answer (each holds a descriptor).
REFUSALS_AT_ONCE = 32
REFUSAL_LINGER_S = 1.0
ACCEPT_RETRY_S = 0.1
# Loop turns a newcomer at the cap waits for connections of the same burst to be set up (and so to count as
# idle) before it is refused; a plain connection is set up within about three.
SETUP_TICKS = 8
# How long the rest of a refused request's body is read and dropped before closing (aiohttp's default: 10 s,
# for a caller that may keep sending).
LINGER_S = 1.0
BACKLOG = 511
MAX_LINE = 8190  # aiohttp's limit for the request line and each header line
# Errors aiohttp's parser raises, most specific first -> what the caller is told (never the request's text).
FRAMEWORK_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (hx.LineTooLong, f"a request line or header line is over {MAX_LINE} bytes"),
    (hx.BadHttpMethod, "not an HTTP/1.1 request, or an unknown method"),
    (hx.BadStatusLine, "malformed request line"),
    (hx.InvalidHeader, "malformed header"),
    (hx.InvalidURLError, "malformed URL"),
    (hx.PayloadEncodingError, "malformed body framing (Content-Length, Transfer-Encoding or encoding)"),
    (hx.BadHttpMessage, "malformed HTTP request"),
)
_FULL = ("TooManyConnections", "every connection the service allows is busy; retry shortly")


def connection_cap(wanted: int, descriptors: int | None = None) -> int:
    """How many callers' connections may be open at once: ``wanted``, or fewer when the process's soft
    descriptor limit (``RLIMIT_NOFILE``, or ``descriptors``) leaves less room (at least 1)."""
    if descriptors is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        descriptors = soft if soft != resource.RLIM_INFINITY else wanted + RESERVED_DESCRIPTORS
    return max(1, min(wanted, descriptors - RESERVED_DESCRIPTORS - REFUSALS_AT_ONCE))


def _refusal() -> bytes:
    body = error_response(503, *_FULL).body
    assert isinstance(body, bytes)
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


REFUSAL = _refusal()


class Connection(web.RequestHandler):
    """aiohttp's handler for one connection, which also tells the listener whether it is in a request (its
    headers arrived, its answer is not yet written) or waiting for one, and since when; and answers
    unparsable requests in the JSON error shape."""

    def __init__(self, manager: web.Server, listener: Listener, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.listener = listener
        self.in_request = False
        self.waiting_since = listener.loop.time()  # opened, or its last answer written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.listener.closed(self)

    def log_access(self, request: web.BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # Called once the answer is written: the connection waits for its next request from now.
        self.in_request = False
        self.waiting_since = self.listener.loop.time()
        super().log_access(request, response, time)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "error"
        self.listener.logs.log(
            logging.ERROR, f"server:{kind}", "HTTP server error (%s); the connection was closed", kind
        )

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception(exc_info=exc)
            response = error_response(500, "InternalError", "internal error; see the service log")
        else:
            text = next((t for kind, t in FRAMEWORK_ERRORS if isinstance(exc, kind)), "malformed request")
            kind = type(exc).__name__ if exc is not None else "error"
            self.listener.logs.log(
                logging.INFO, f"malformed:{kind}", "refused a malformed HTTP request (%s) from %s",
                kind, request.remote,
            )  # fmt: skip
            response = error_response(status, "BadRequest", text)
        response.headers["X-Request-Id"] = uuid.uuid4().hex
        response.force_close()
        return response


class Listener:
    """The accept loop of one listening socket; see the module docstring."""

    def __init__(
        self,
        server: web.Server,
        sock: socket.socket,
        *,
        cap: int,
        header_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        handler_args: dict[str, Any] | None = None,
    ) -> None:
        self.server = server
        self.sock = sock
        self.cap = cap
        self.header_timeout = header_timeout
        self.ssl_context = ssl_context
        self.loop = asyncio.get_running_loop()
        self.logs = LogLimiter(log)
        self.connections: set[Connection] = set()
        self.open = 0  # sockets admitted and not yet closed (TLS handshakes included)
        self.refused = 0
        self.evicted = 0
        self._refusing = 0
        self._handler_args = {
            "keepalive_timeout": header_timeout,
            "lingering_time": LINGER_S,
            "access_log": None,
            **(handler_args or {}),
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._handshakes: dict[asyncio.Task[None], float] = {}  # TLS handshakes under way, since when
        self._evicting: set[asyncio.Task[None]] = set()
        self._accepting: asyncio.Task[None] | None = None
        # aiohttp builds each request through the server's request_factory once its headers are in: the one
        # public point where a connection's request begins. Handlers read it when made, so wrap it first.
        make_request = server.request_factory

        def request_started(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
            if isinstance(protocol, Connection):
                protocol.in_request = True
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = request_started

    def __repr__(self) -> str:
        return f"Listener(open={self.open}, cap={self.cap})"

    def start(self) -> None:
        """Start accepting."""
        self.sock.setblocking(False)
        self._accepting = asyncio.create_task(self._accept_loop())

    async def close(self) -> None:
        """Stop accepting and close the socket; connections stay for the HTTP server's own shutdown."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        self.sock.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.logs.flush()

    def counts(self) -> dict[str, int]:
        """Connections open now, the cap, and those refused and evicted since start (for metrics)."""
        return {"open": self.open, "cap": self.cap, "refused": self.refused, "evicted": self.evicted}

    def closed(self, connection: Connection) -> None:
        """A connection ended (called once per admitted connection that reached its handler)."""
        if connection in self.connections:
            self.connections.discard(connection)
        self.open -= 1

    async def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = await self.loop.sock_accept(self.sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The kernel keeps the backlog; try again shortly, and say so once a minute.
                    self.logs.log(
                        logging.WARNING, "accept", "cannot accept connections: %s (%d open; cap %d)",
                        exc.strerror, self.open, self.cap,
                    )  # fmt: skip
                    await asyncio.sleep(ACCEPT_RETRY_S)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the caller gave up before we accepted
                raise
            await self._admit(conn)
            # One loop turn per connection: sock_accept() does not yield while connections wait, and the
            # callbacks that close evicted connections (and free their descriptors) must run in between.
            await asyncio.sleep(0)

    async def _admit(self, conn: socket.socket) -> None:
        for _ in range(SETUP_TICKS):
            if self.open < self.cap or self._evict():
                self.open += 1
                self._spawn(self._serve(conn))
                return
            if len(self.connections) + len(self._handshakes) >= self.open:  # all made or in TLS, all busy
                break
            await asyncio.sleep(0)  # connections accepted in this burst become candidates once made
        self._refuse(conn)

    def _evict(self) -> bool:
        """Close the connection that has waited longest for a whole request (idle, sending its headers
        slowly, or still in its TLS handshake), to make room; ``False`` if every one is in a request."""
        waiting: list[tuple[float, Connection | asyncio.Task[None]]] = [
            (c.waiting_since, c) for c in self.connections if not c.in_request
        ]
        waiting += [(since, task) for task, since in self._handshakes.items() if task not in self._evicting]
        if not waiting:
            return False
        _, victim = min(waiting, key=lambda pair: pair[0])
        if isinstance(victim, Connection):
            self.connections.discard(victim)
            victim.force_close()
        else:
            self._evicting.add(victim)
            victim.cancel()
        self.evicted += 1
        self.logs.log(
            logging.INFO, "evict", "at the cap of %d connections: closed the longest idle one", self.cap
        )
        return True

    def _refuse(self, conn: socket.socket) -> None:
        self.refused += 1
        self.logs.log(
            logging.WARNING, "refuse", "at the cap of %d connections, all busy: refused a connection (503)",
            self.cap,
        )  # fmt: skip
        if self._refusing >= REFUSALS_AT_ONCE:
            conn.close()
            return
        self._refusing += 1
        self._spawn(self._answer_refusal(conn))

    async def _answer_refusal(self, conn: socket.socket) -> None:
        try:
            async with asyncio.timeout(REFUSAL_LINGER_S):
                if self.ssl_context is None:
                    conn.setblocking(False)
                    await self.loop.sock_sendall(conn, REFUSAL)
                    conn.shutdown(socket.SHUT_WR)
                    while await self.loop.sock_recv(conn, 65536):  # until the caller closes: no RST
                        pass
                else:
                    transport, _ = await self.loop.connect_accepted_socket(
                        asyncio.Protocol, conn, ssl=self.ssl_context, ssl_handshake_timeout=REFUSAL_LINGER_S
                    )
                    transport.write(REFUSAL)
                    transport.close()
        except (OSError, TimeoutError):
            pass
        finally:
            conn.close()
            self._refusing -= 1

    async def _serve(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.ssl_context is not None:
            self._handshakes[task] = self.loop.time()
        try:
            await self.loop.connect_accepted_socket(
                self._handler,
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.header_timeout if self.ssl_context else None,
            )
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:  # a failed handshake, or evicted
            conn.close()
            self.open -= 1
            self.logs.log(
                logging.INFO, "handshake", "a connection ended before its first request (%s)",
                type(exc).__name__,
            )  # fmt: skip
            if isinstance(exc, asyncio.CancelledError) and task not in self._evicting:
                raise  # the listener is closing
        finally:
            self._handshakes.pop(task, None)
            self._evicting.discard(task)

    def _handler(self) -> Connection:
        return Connection(self.server, self, loop=self.loop, **self._handler_args)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for ``host:port`` (``::`` accepts IPv4 too where the system can)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    dual = family == socket.AF_INET6 and address[0] == "::" and socket.has_dualstack_ipv6()
    return socket.create_server(address[:2], family=family, backlog=BACKLOG, dualstack_ipv6=dual)


def reachable(host: str, sock: socket.socket, *, tls: bool) -> str:
    """The endpoint URL a local caller can use: the wildcard addresses become their loopback."""
    port = sock.getsockname()[1]
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown.strip('[]')}]"
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate chain and key (TLS 1.2 or newer); raises ``OSError`` or
    ``ssl.SSLError`` for files that cannot be read or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key or None, password=_no_pass_phrase)
    return context


def _no_pass_phrase() -> bytes:
    """Asked only for an encrypted key: refuse, rather than let OpenSSL prompt on the terminal."""
    raise ValueError(
        "the private key is encrypted and serve reads no pass phrase; store it decrypted (chmod 600)"
    )


__all__ = [
    "REFUSAL",
    "Connection",
    "Listener",
    "connection_cap",
    "listening_socket",
    "reachable",
    "tls_context",
]
