"""The service's Prometheus families, beside the client's, in one registry it owns.

``eni_async_service_requests_total{route,code}`` counts answers by route template and HTTP status;
``eni_async_service_releases{status}`` is read from the release registry at scrape time (``refresh``,
awaited by ``/metrics`` before it renders, since a collector cannot await the journal), so it costs nothing
per release; ``eni_async_service_ready`` is 1 when ``/readyz`` would answer 200, else 0 (read the same way);
``eni_async_service_connections{state="open"|"cap"}``, ``eni_async_service_connections_refused_total`` (at
the cap, all busy: 503) and ``eni_async_service_connections_evicted_total`` (at the cap, the longest waiting
one closed) are read from the listener. This replica's leases (D27): ``eni_async_service_replica_info{replica}``
(its owner name in the journal), ``eni_async_service_leases_held`` and the counters
``eni_async_service_leases_{claimed,adopted,renewed,lost,given_back}_total``,
``eni_async_service_leases_adopted_releases_total`` (releases taken over part-done) and
``eni_async_service_lease_journal_failures_total`` (claims and renewals the journal did not answer).
Requires the optional ``metrics`` extra, like every metric of eni_async.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eni_async.client_metrics import Metrics, prometheus
from eni_async.service.leases import Leases
from eni_async.service.registry import Registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.metrics_core import Metric


class ReleasesCollector:
    """``eni_async_service_releases{status}``: releases now in each status."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._core = prometheus().metrics_core
        self._counts: dict[str, int] = {}

    async def refresh(self) -> None:
        """Read the registry's counts for the next collection."""
        self._counts = await self.registry.counts()

    def __repr__(self) -> str:
        return f"ReleasesCollector({self.registry!r})"

    def describe(self) -> Iterator[Metric]:
        """The family without samples (registering reads nothing)."""
        yield self._core.GaugeMetricFamily(
            "eni_async_service_releases", "Releases by status", labels=["status"]
        )

    def collect(self) -> Iterator[Metric]:
        """The family with the registry's counts."""
        family = self._core.GaugeMetricFamily(
            "eni_async_service_releases", "Releases by status", labels=["status"]
        )
        for status, count in self._counts.items():
            family.add_metric([status], count)
        yield family


class ReadinessCollector:
    """``eni_async_service_ready``: 1 when the service can take work (``/readyz`` 200), else 0."""

    def __init__(self, ready: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        self.ready = ready
        self._core = prometheus().metrics_core
        self._ready = False

    async def refresh(self) -> None:
        """Ask readiness for the next collection."""
        self._ready, _ = await self.ready()

    def __repr__(self) -> str:
        return "ReadinessCollector()"

    def describe(self) -> Iterator[Metric]:
        """The family without samples."""
        yield self._core.GaugeMetricFamily("eni_async_service_ready", "1 when /readyz answers 200, else 0")

    def collect(self) -> Iterator[Metric]:
        """The family with readiness as it stands."""
        yield self._core.GaugeMetricFamily(
            "eni_async_service_ready", "1 when /readyz answers 200, else 0", value=1 if self._ready else 0
        )


class ConnectionsCollector:
    """The listener's connections: open and the cap, refused and evicted since start."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts  # {"open", "cap", "refused", "evicted"}
        self._core = prometheus().metrics_core

    def __repr__(self) -> str:
        return "ConnectionsCollector()"

    def describe(self) -> Iterator[Metric]:
        """The families without samples."""
        yield from self._families({"open": 0, "cap": 0, "refused": 0, "evicted": 0}, samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families with the listener's counts."""
        yield from self._families(self.counts(), samples=True)

    def _families(self, counts: dict[str, int], *, samples: bool) -> Iterator[Metric]:
        core = self._core
        connections = core.GaugeMetricFamily(
            "eni_async_service_connections", "Callers' connections: open now, and the cap", labels=["state"]
        )
        refused = core.CounterMetricFamily(
            "eni_async_service_connections_refused", "Connections refused with 503 at the cap (all busy)"
        )
        evicted = core.CounterMetricFamily(
            "eni_async_service_connections_evicted", "Connections closed at the cap to admit a newcomer"
        )
        if samples:
            connections.add_metric(["open"], counts["open"])
            connections.add_metric(["cap"], counts["cap"])
            refused.add_metric([], counts["refused"])
            evicted.add_metric([], counts["evicted"])
        yield from (connections, refused, evicted)


# Counter family -> (help, the ``LeaseCounts`` field it reads).
LEASE_COUNTERS = {
    "eni_async_service_leases_claimed": ("ENIs this replica claimed while free", "claimed"),
    "eni_async_service_leases_adopted": ("ENIs this replica took over from an expired lease", "adopted"),
    "eni_async_service_leases_renewed": ("Lease renewals this replica made", "renewed"),
    "eni_async_service_leases_lost": ("Leases this replica lost (moved, or not renewed in time)", "lost"),
    "eni_async_service_leases_given_back": (
        "Leases this replica gave back (work done, or stopping)",
        "given_back",
    ),
    "eni_async_service_leases_adopted_releases": (
        "Releases this replica took over part-done",
        "adopted_releases",
    ),
    "eni_async_service_lease_journal_failures": (
        "Claims and renewals the journal did not answer",
        "journal_failures",
    ),
}


class LeasesCollector:
    """This replica's name, leases held and lease counters (read from ``Leases`` at collection)."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self._core = prometheus().metrics_core

    def __repr__(self) -> str:
        return f"LeasesCollector({self.leases!r})"

    def describe(self) -> Iterator[Metric]:
        """The families without samples."""
        yield from self._families(samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families as the leases stand."""
        yield from self._families(samples=True)

    def _families(self, *, samples: bool) -> Iterator[Metric]:
        core = self._core
        info = core.GaugeMetricFamily(
            "eni_async_service_replica_info",
            "This replica's name in the journal's leases",
            labels=["replica"],
        )
        held = core.GaugeMetricFamily("eni_async_service_leases_held", "ENIs this replica holds a lease on")
        if samples:
            info.add_metric([self.leases.owner], 1)
            held.add_metric([], len(self.leases.held))
        yield from (info, held)
        for name, (text, attribute) in LEASE_COUNTERS.items():
            counter = core.CounterMetricFamily(name, text)
            if samples:
                counter.add_metric([], getattr(self.leases.counts, attribute))
            yield counter


@dataclass(frozen=True)
class ServiceMetrics:
    """The registry served at ``/metrics``, the client's families in it, and the request counter."""

    registry: CollectorRegistry
    client: Metrics
    requests: Counter
    collectors: list[ReleasesCollector | ReadinessCollector]

    @classmethod
    def create(cls) -> ServiceMetrics:
        """A fresh registry with the client's families and the request counter."""
        prom = prometheus()
        registry: CollectorRegistry = prom.CollectorRegistry()
        requests = prom.Counter(
            "eni_async_service_requests",
            "HTTP answers by route and status code",
            ["route", "code"],
            registry=registry,
        )
        return cls(registry, Metrics(registry), requests, [])

    def watch(
        self, releases: Registry, ready: Callable[[], Awaitable[tuple[bool, str]]] | None = None
    ) -> None:
        """Export the release counts of ``releases``, and readiness as ``ready`` (the engine's) says."""
        collectors: list[ReleasesCollector | ReadinessCollector] = [ReleasesCollector(releases)]
        if ready is not None:
            collectors.append(ReadinessCollector(ready))
        for collector in collectors:
            self.collectors.append(collector)
            self.registry.register(collector)

    def watch_connections(self, counts: Callable[[], dict[str, int]]) -> None:
        """Export the listener's connection counts (``{"open", "cap", "refused", "evicted"}``)."""
        self.registry.register(ConnectionsCollector(counts))

    def watch_leases(self, leases: Leases) -> None:
        """Export this replica's leases."""
        self.registry.register(LeasesCollector(leases))

    async def refresh(self) -> None:
        """Read what the collectors export from the journal (before each scrape)."""
        for collector in self.collectors:
            await collector.refresh()


__all__ = [
    "ConnectionsCollector",
    "LeasesCollector",
    "ReadinessCollector",
    "ReleasesCollector",
    "ServiceMetrics",
]
