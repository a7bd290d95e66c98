"""``running_service``: one service (journal, client, engine, HTTP face) served for the length of a block.

The composition root shared by ``eni-async serve``, the example and the benchmarks: it opens the journal,
the client and the engine, resumes unfinished releases, listens (port 0 picks a free one) and, at the end
of the block, stops the engine (with no grace unless the caller already stopped it with some), the HTTP
server and the journal, in that order. It checks nothing about addresses or tokens: the command does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from eni_async.client import EniClient
from eni_async.credentials import CredentialProvider
from eni_async.errors import ConfigError
from eni_async.journal import JournalError, open_journal
from eni_async.metrics import prometheus
from eni_async.models import Credentials
from eni_async.service.engine import Engine
from eni_async.service.http import make_app
from eni_async.service.metrics import ServiceMetrics
from eni_async.settings import Settings

log = logging.getLogger("eni_async.service")

# Seconds the HTTP server gives open requests once the engine has stopped (long polls were answered).
HTTP_SHUTDOWN_S = 2.0


@dataclass(frozen=True)
class RunningService:
    """A service being served: where, its engine, and its metrics (``None`` without prometheus-client)."""

    endpoint: str
    engine: Engine
    metrics: ServiceMetrics | None
    resumed: int


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
) -> AsyncIterator[RunningService]:
    """Serve releases for the block; see the module docstring."""
    service_metrics = ServiceMetrics.create() if metrics and metrics_available() else None
    try:
        opened = await open_journal(journal, exclusive=False)  # replicas share a PostgreSQL journal
    except JournalError as exc:
        raise ConfigError("--journal", exc.path, exc.reason) from None
    async with opened:
        client_metrics = service_metrics.client if service_metrics else None
        async with EniClient(credentials, settings, metrics=client_metrics) as client:
            engine = Engine(client, opened, max_unfinished=settings.service_max_unfinished)
            resumed = await engine.start()
            try:
                if service_metrics is not None:
                    service_metrics.watch(engine.registry)
                    service_metrics.watch_leases(engine.leases)
                app = make_app(
                    engine,
                    tokens=tokens,
                    max_body=settings.service_max_body,
                    metrics_registry=service_metrics.registry if service_metrics else None,
                    requests_counter=service_metrics.requests if service_metrics else None,
                    before_scrape=service_metrics.refresh if service_metrics else None,
                )
                async with _listening(app, host, port) as endpoint:
                    try:
                        yield RunningService(endpoint, engine, service_metrics, resumed)
                    finally:  # before the HTTP server closes, so long polls answer at once
                        await engine.stop(0)
            finally:
                await engine.stop(0)


@asynccontextmanager
async def _listening(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` for the block; yield the endpoint URL (the real port for 0)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_S)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError("--port", port, f"cannot listen on {host}: {exc.strerror or exc}") from None
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


__all__ = ["RunningService", "metrics_available", "running_service"]
