"""The client's Prometheus metrics, behind the optional ``metrics`` extra.

Nothing here touches prometheus-client's global registry: ``Metrics`` registers its families in the
registry it is given, and ``EniClient(..., metrics=Metrics(registry))`` keeps it up to date; a client
without one pays nothing (one ``is None`` test per call). Serving a registry (``serve_metrics``,
``--metrics-port``) is ``eni_async.prometheus``'s job, re-exported here; the simulator's families are in
``eni_async.simulator.sim_metrics``.

Client families (``eni_async_``): ``calls_total{action,code}`` (``code`` is ``Success``, the API's error
code or a local one such as ``ConnectionLost``), ``throttled_total{action}``, ``retries_total{action,reason}``,
``tasks_total{status}`` (each task once, by its final status: ``SUCCESS``, ``FAILED``, as read or as its IPs
showed on the ENI; ``TIMEOUT`` when the deadline passed first, ``UNKNOWN`` when an error or a cancellation
kept it unseen), ``call_latency_seconds{action}``,
``task_latency_seconds`` (submit sent -> final state seen, for tasks this client submitted) and
``tasks_in_flight`` (submitted by this client, final state not yet seen).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eni_async.prometheus import MetricsEndpoint, add_arguments, endpoint_from, prometheus, serve_metrics

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Task latencies run from about a second to the poll deadline (10 minutes by default).
TASK_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


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

    def task_ended(self, status: str) -> None:
        """One task ended with ``status`` (its final one: see the module docstring); counted once per task."""
        self.tasks.labels(status).inc()

    def task_seen(self, task_id: str, seen_at: float | None) -> None:
        """``task_id`` is no longer watched; ``seen_at`` is when its end was seen (``None``: it was not)."""
        sent_at = self._submitted.pop(task_id, None)
        if sent_at is None:  # not submitted by a client of ours (resumed from a journal)
            return
        self.in_flight.dec()
        if seen_at is not None:
            self.task_latency.observe(max(0.0, seen_at - sent_at))


__all__ = [
    "Metrics",
    "MetricsEndpoint",
    "add_arguments",
    "endpoint_from",
    "prometheus",
    "serve_metrics",
]
