"""Serving Prometheus metrics, for the client's commands and the simulator alike; no metric of its own.

prometheus-client is behind the optional ``metrics`` extra: it is imported only when metrics are asked for
(``prometheus``), and asking without it installed is a ``ConfigError`` that says how to install it.
``serve_metrics`` serves a registry on 127.0.0.1 unless told otherwise; ``add_arguments`` and
``endpoint_from`` give a command ``--metrics-port`` and ``--metrics-host``. Nothing here knows the client or
the simulator: each registers its own families (``eni_async.client_metrics``, ``eni_async.simulator.sim_metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from eni_async.errors import ConfigError, InputError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("eni_async.prometheus")

INSTALL_HINT = "prometheus-client is not installed; install the extra: pip install '.[metrics]' from a clone"

# How long a scrape waits for an event loop's answer, and a server's thread to stop.
SCRAPE_TIMEOUT = 5.0


def prometheus(field: str = "metrics", value: object = "prometheus_client") -> ModuleType:
    """Import prometheus_client, or raise a ``ConfigError`` naming ``field`` and how to install it."""
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise ConfigError(field, value, INSTALL_HINT) from None


@asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry, *, port: int, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve ``registry`` at ``http://host:port/metrics`` for the block (port 0 picks a free one); yield the URL.

    prometheus-client serves from a daemon thread; the block's end stops it (within its 0.5 s poll) and
    closes the socket. An address that cannot be bound raises ``OSError``.
    """
    prom = prometheus("--metrics-port", port)
    httpd, thread = prom.start_http_server(port, addr=host, registry=registry)
    try:
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{httpd.server_port}/metrics"
    finally:
        await asyncio.to_thread(httpd.shutdown)
        httpd.server_close()
        thread.join(timeout=SCRAPE_TIMEOUT)


# -- the command-line side: ``--metrics-port`` and ``--metrics-host`` on ``batch``, ``resume``, ``demo`` and
# ``simulate`` (declared here so the client's and the simulator's commands share one definition)


@dataclass(frozen=True)
class MetricsEndpoint:
    """A registry being served, and where."""

    registry: CollectorRegistry
    url: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--metrics-port`` and ``--metrics-host`` on a command's parser."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (0 picks a free port; needs the "
        "'metrics' extra)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --metrics-port (default 127.0.0.1)",
    )


@asynccontextmanager
async def endpoint_from(args: argparse.Namespace) -> AsyncIterator[MetricsEndpoint | None]:
    """Serve a fresh registry when ``--metrics-port`` was given (else yield ``None``); bad values raise
    ``InputError`` or ``ConfigError`` naming the option."""
    port: int | None = getattr(args, "metrics_port", None)
    if port is None:
        yield None
        return
    if not 0 <= port <= 65535:
        raise InputError("--metrics-port", port, "must be between 0 and 65535")
    prom = prometheus("--metrics-port", port)
    registry: CollectorRegistry = prom.CollectorRegistry()
    host: str = getattr(args, "metrics_host", "127.0.0.1")
    async with AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(serve_metrics(registry, port=port, host=host))
        except OSError as exc:
            raise ConfigError(
                "--metrics-port", port, f"cannot listen on {host}: {exc.strerror or exc}"
            ) from None
        log.info("serving metrics at %s", url)
        yield MetricsEndpoint(registry, url)


__all__ = ["MetricsEndpoint", "add_arguments", "endpoint_from", "prometheus", "serve_metrics"]
