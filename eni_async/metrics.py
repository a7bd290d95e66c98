"""Prometheus metrics for the client and the simulator, behind the optional ``metrics`` extra.

Nothing here touches prometheus-client's global registry: ``Metrics`` registers its families in the
registry it is given, and ``EniClient(..., metrics=Metrics(registry))`` keeps it up to date; a client
without one pays nothing (one ``is None`` test per call). prometheus-client is imported only when metrics
are asked for, so the package works without it; asking without it installed is a ``ConfigError`` that says
how to install it. ``SimulatorCollector`` reads ``Simulator.stats()`` when scraped, so the simulator pays
nothing per request; because ``/metrics`` is served from a thread, the reading is made on the simulator's
event loop. ``serve_metrics`` serves a registry on 127.0.0.1 unless told otherwise.

Client families (``eni_async_``): ``calls_total{action,code}`` (``code`` is ``Success``, the API's error
code or a local one such as ``ConnectionLost``), ``throttled_total{action}``, ``retries_total{action,reason}``,
``tasks_total{status}`` (``SUCCESS``, ``FAILED``; ``TIMEOUT`` when the poll deadline passed, ``UNKNOWN``
when the wait ended in an error or was cancelled), ``call_latency_seconds{action}``,
``task_latency_seconds`` (submit sent -> final state seen, for tasks this client submitted) and
``tasks_in_flight`` (submitted by this client, final state not yet seen). Simulator families
(``eni_sim_``): ``requests_total{action}``, ``throttled_total{action}``, ``faults_total{kind}`` and
``tasks{status}`` (tasks now in each status). ``add_arguments`` and ``endpoint_from`` give the commands
``--metrics-port`` and ``--metrics-host``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from eni_async.errors import ConfigError, InputError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from eni_async.simulator import Simulator

log = logging.getLogger(__name__)

INSTALL_HINT = "prometheus-client is not installed; install the extra: pip install 'eni-async[metrics]'"

# Task latencies run from about a second to the poll deadline (10 minutes by default).
TASK_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)

# How long a scrape waits for the simulator's event loop before failing.
SCRAPE_TIMEOUT = 5.0


def prometheus(field: str = "metrics", value: object = "prometheus_client") -> ModuleType:
    """Import prometheus_client, or raise a ``ConfigError`` naming ``field`` and how to install it."""
    try:
        return importlib.import_module("prometheus_client")
    except ImportError:
        raise ConfigError(field, value, INSTALL_HINT) from None


class Metrics:
    """The client's metric families, registered in ``registry`` (a fresh ``CollectorRegistry`` when ``None``).

    One ``Metrics`` may be shared by several clients (their counts add up), but a registry holds at most
    one, since the names would clash. The methods are the client's hooks; users read ``registry``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        prom = prometheus()
        self.registry: CollectorRegistry = registry if registry is not None else prom.CollectorRegistry()
        reg = self.registry
        self.calls = prom.Counter(
            "eni_async_calls", "API calls by action and result code", ["action", "code"], registry=reg
        )
        self.throttled = prom.Counter(
            "eni_async_throttled", "Throttled answers by action", ["action"], registry=reg
        )
        self.retries = prom.Counter(
            "eni_async_retries", "Calls retried, by action and the error that caused it", ["action", "reason"],
            registry=reg,
        )  # fmt: skip
        self.tasks = prom.Counter(
            "eni_async_tasks", "Tasks whose wait ended, by final status", ["status"], registry=reg
        )
        self.call_latency = prom.Histogram(
            "eni_async_call_latency_seconds", "Latency of one API call attempt", ["action"], registry=reg
        )
        self.task_latency = prom.Histogram(
            "eni_async_task_latency_seconds",
            "From sending the submit to seeing the task's final state",
            buckets=TASK_BUCKETS,
            registry=reg,
        )
        self.in_flight = prom.Gauge(
            "eni_async_tasks_in_flight", "Tasks submitted whose final state is not yet seen", registry=reg
        )
        self._submitted: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Metrics(in_flight={len(self._submitted)})"

    def call(self, action: str, code: str, seconds: float) -> None:
        """One attempt of ``action`` answered with ``code`` (``Success`` or an error code)."""
        self.calls.labels(action, code).inc()
        self.call_latency.labels(action).observe(seconds)

    def throttle(self, action: str) -> None:
        """One throttled answer to ``action``."""
        self.throttled.labels(action).inc()

    def retry(self, action: str, reason: str) -> None:
        """``action`` is about to be tried again because of ``reason`` (an error code)."""
        self.retries.labels(action, reason).inc()

    def task_submitted(self, task_id: str, sent_at: float) -> None:
        """A submit sent at ``sent_at`` (``Clock.monotonic``) started ``task_id``."""
        if task_id not in self._submitted:
            self.in_flight.inc()
        self._submitted[task_id] = sent_at

    def task_ended(self, task_id: str, status: str, seen_at: float | None) -> None:
        """The wait for ``task_id`` ended with ``status``; ``seen_at`` is when a final state was read."""
        self.tasks.labels(status).inc()
        sent_at = self._submitted.pop(task_id, None)
        if sent_at is None:  # not submitted by a client of ours (resumed from a journal)
            return
        self.in_flight.dec()
        if seen_at is not None:
            self.task_latency.observe(max(0.0, seen_at - sent_at))


class SimulatorCollector:
    """Export a simulator's counters, read from ``Simulator.stats()`` at scrape time.

    ``loop`` is the event loop the simulator runs on (the running one when created inside it); a scrape
    from another thread reads the stats there, so it never races the request pipeline.
    """

    def __init__(self, sim: Simulator, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.sim = sim
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self.loop = loop
        self._prom = prometheus()

    def __repr__(self) -> str:
        return f"SimulatorCollector({self.sim!r})"

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (so registering never reads the simulator)."""
        return iter(self._families({"requests": {}, "throttled": {}, "faults": {}, "tasks": {}}))

    def collect(self) -> Iterator[Metric]:
        """The families with the simulator's current counts."""
        return iter(self._families(self._stats()))

    def _stats(self) -> dict[str, Any]:
        loop = self.loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop or loop.is_closed() or not loop.is_running():
            return self.sim.stats()

        async def read() -> dict[str, Any]:
            return self.sim.stats()

        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=SCRAPE_TIMEOUT)

    def _families(self, stats: dict[str, Any]) -> list[Metric]:
        core = self._prom.metrics_core
        requests = core.CounterMetricFamily("eni_sim_requests", "Requests by action", labels=["action"])
        throttled = core.CounterMetricFamily(
            "eni_sim_throttled", "Requests refused by the rate limit, by action", labels=["action"]
        )
        faults = core.CounterMetricFamily("eni_sim_faults", "Faults injected, by kind", labels=["kind"])
        tasks = core.GaugeMetricFamily("eni_sim_tasks", "Tasks now in each status", labels=["status"])
        for family, key in ((requests, "requests"), (throttled, "throttled"), (faults, "faults")):
            for label, value in sorted(stats[key].items()):
                family.add_metric([label], value)
        for status, count in sorted(stats["tasks"].items()):
            tasks.add_metric([status], count)
        return [requests, throttled, faults, tasks]


def register_simulator(sim: Simulator, registry: CollectorRegistry) -> SimulatorCollector:
    """Register a ``SimulatorCollector`` for ``sim`` in ``registry`` (call it on the simulator's loop)."""
    collector = SimulatorCollector(sim)
    registry.register(collector)
    return collector


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


__all__ = [
    "Metrics",
    "MetricsEndpoint",
    "SimulatorCollector",
    "add_arguments",
    "endpoint_from",
    "register_simulator",
    "serve_metrics",
]
