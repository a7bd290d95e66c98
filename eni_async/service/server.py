"""``running_service``: one service (journal, client, engine, HTTP face) served for the length of a block.

The composition root shared by ``eni-async serve``, the example and the benchmarks: it opens the journal,
the client and the engine, resumes unfinished releases, listens (port 0 picks a free one; ``listener``
caps connections and times out slow ones, as the ``service_*`` settings say; ``tls`` makes it HTTPS) and,
at the end of the block, stops the engine (with no grace unless the caller already stopped it with some),
the listener, the HTTP server and the journal, in that order. It checks nothing about addresses or tokens:
the command does.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from eni_async.client import EniClient
from eni_async.client_metrics import prometheus
from eni_async.credentials import CredentialProvider
from eni_async.errors import ConfigError
from eni_async.journal import JournalError, open_journal
from eni_async.models import Credentials
from eni_async.service.engine import Engine
from eni_async.service.http import make_app
from eni_async.service.listener import Listener, connection_cap, listening_socket, reachable
from eni_async.service.service_metrics import ServiceMetrics
from eni_async.settings import Settings

log = logging.getLogger("eni_async.service")

# Seconds the HTTP server gives open requests once the engine has stopped (long polls were answered).
HTTP_SHUTDOWN_S = 2.0


@dataclass(frozen=True)
class RunningService:
    """A service being served: where (an address a local caller reaches, and the one it listens on), its
    engine, its listener and its metrics (``None`` without prometheus-client)."""

    endpoint: str
    engine: Engine
    metrics: ServiceMetrics | None
    resumed: int
    listener: Listener
    listening: str


def metrics_available() -> bool:
    """Whether prometheus-client is installed (``/metrics`` answers 501 otherwise)."""
    try:
        prometheus()
    except ConfigError:
        return False
    return True


@asynccontextmanager
async def running_service(
    credentials: Credentials | CredentialProvider,
    settings: Settings,
    journal: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tokens: Sequence[str] = (),
    metrics: bool = True,
    metrics_tokens: Sequence[str] = (),
    tls: ssl.SSLContext | None = None,
    reload: Callable[[], Awaitable[CredentialProvider]] | None = None,
) -> AsyncIterator[RunningService]:
    """Serve releases for the block; see the module docstring. ``reload`` reads the credentials again from
    their source while the API refuses them (default: the provider renews itself)."""
    # Bound before anything else: an address that cannot be used stops the start before any API call
    # (the credentials check, resumed releases).
    with closing(_bind(host, port)) as sock:
        async with _serving(
            credentials, settings, journal, sock, host, tokens, metrics, metrics_tokens, tls, reload
        ) as running:
            yield running


@asynccontextmanager
async def _serving(
    credentials: Credentials | CredentialProvider,
    settings: Settings,
    journal: str | Path,
    sock: socket.socket,
    host: str,
    tokens: Sequence[str],
    metrics: bool,
    metrics_tokens: Sequence[str],
    tls: ssl.SSLContext | None,
    reload: Callable[[], Awaitable[CredentialProvider]] | None,
) -> AsyncIterator[RunningService]:
    service_metrics = ServiceMetrics.create() if metrics and metrics_available() else None
    try:
        # Replicas share a PostgreSQL journal.
        opened = await open_journal(journal, exclusive=False, wait_s=settings.service_journal_timeout)
    except JournalError as exc:
        raise ConfigError("--journal", exc.path, exc.reason) from None
    async with opened:
        client_metrics = service_metrics.client if service_metrics else None
        async with EniClient(credentials, settings, metrics=client_metrics) as client:
            engine = Engine(client, opened, max_unfinished=settings.service_max_unfinished, reload=reload)
            resumed = await engine.start()
            try:
                if service_metrics is not None:
                    service_metrics.watch(engine.registry, engine.ready)
                    service_metrics.watch_leases(engine.leases)
                app = make_app(
                    engine,
                    tokens=tokens,
                    max_body=settings.service_max_body,
                    body_timeout=settings.service_body_timeout,
                    metrics_registry=service_metrics.registry if service_metrics else None,
                    requests_counter=service_metrics.requests if service_metrics else None,
                    metrics_tokens=metrics_tokens,
                    before_scrape=service_metrics.refresh if service_metrics else None,
                )
                async with _listening(app, settings, sock, tls) as listener:
                    if service_metrics is not None:
                        service_metrics.watch_connections(listener.counts)
                    where = listener.sock.getsockname()
                    listening = (
                        f"{where[0]}:{where[1]}" if ":" not in where[0] else f"[{where[0]}]:{where[1]}"
                    )
                    endpoint = reachable(host, listener.sock, tls=tls is not None)
                    try:
                        yield RunningService(endpoint, engine, service_metrics, resumed, listener, listening)
                    finally:  # before the HTTP server closes, so long polls answer at once
                        await engine.stop(0)
            finally:
                await engine.stop(0)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket on ``host:port`` (port 0: a free one), or a one-line ``ConfigError``."""
    try:
        return listening_socket(host, port)
    except OSError as exc:
        # create_server's text repeats the address: "... (while attempting to bind on address ('H', P))"
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):  # the host's fault
            raise ConfigError("--host", host, f"cannot listen on it: {reason}") from None
        raise ConfigError("--port", port, f"cannot listen on {host}: {reason}") from None


@asynccontextmanager
async def _listening(
    app: web.Application, settings: Settings, sock: socket.socket, tls: ssl.SSLContext | None
) -> AsyncIterator[Listener]:
    """Serve ``app`` on the bound ``sock`` for the block, through a ``Listener``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S)
    await runner.setup()
    assert runner.server is not None
    cap = connection_cap(settings.service_max_connections)
    if cap < settings.service_max_connections:
        log.warning(
            "at most %d connections at once (service_max_connections is %d, but the descriptor limit "
            "leaves room for %d; raise it with ulimit -n or LimitNOFILE=)",
            cap, settings.service_max_connections, cap,
        )  # fmt: skip
    listener = Listener(
        runner.server, sock, cap=cap, header_timeout=settings.service_header_timeout, ssl_context=tls
    )
    listener.start()
    try:
        yield listener
    finally:
        await listener.close()
        await runner.cleanup()


__all__ = ["RunningService", "metrics_available", "running_service"]
