"""Helpers for testing code that uses eni_async, and for our own drills: a transport to script, inputs to
write, worlds to seed, verdicts to reach.

``MockTransport(handler)`` stands in for the aiohttp adapter under the real call pipeline
(``EniClient(..., transport=MockTransport(handler))``), as httpx's does: ``handler`` gets each
``HttpRequest`` and returns an ``HttpResponse`` (or raises a ``TransportError``), so a test states an
exchange as a function. ``jsonl_lines`` writes batch input. ``drill_state`` builds a simulator state (the
``/_sim/state`` shape) with a varied number of IPs per ENI; ``verdict`` compares reported outcomes with the
simulator's ground truth (``outcomes.disagreements``, the one checker) and counts every kind of
disagreement. ``simulator_process`` runs ``eni-async simulate`` in a process of its own, for tests and
drills that kill or signal real processes; nothing else here starts a server. ``FakeCalls`` is a fake of the
``eni_async.calls.Calls`` protocol (the seam under the tracker and the release path): a world of ENIs and
tasks set by hand, on a ``FakeClock``, every call logged.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import itertools
import json
import random
import string
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from eni_async.calls import Gate, StopSubmitting
from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN, Capabilities, get_dialect
from eni_async.errors import (
    IpNotOnEniError,
    MutexError,
    PermissionDeniedError,
    TaskNotFoundError,
    TaskTimeoutError,
    api_error,
)
from eni_async.models import EniInfo, HttpRequest, HttpResponse, Submitted, TaskState, TaskStatus
from eni_async.outcomes import disagreements
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.poller import LatencyTracker
from eni_async.settings import RateLimits
from eni_async.throttle import Budgets

_ALPHABET = string.ascii_lowercase + string.digits

Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class MockTransport:
    """A ``Transport`` that answers every request with ``handler(request)`` (a function or a coroutine
    function); ``requests`` lists what was sent, in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    def __repr__(self) -> str:
        return f"MockTransport(sent={len(self.requests)})"

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        answer = self.handler(request)
        return await answer if inspect.isawaitable(answer) else answer


def jsonl_lines(enis: Iterable[Mapping[str, Any]], *, ips: str = "secondary_ips") -> str:
    """Batch input in JSON Lines, one line per ENI: ``{"vpc_id", "eni_id", "ips"}`` from ENIs in the
    ``/_sim/state`` shape (``ips`` names the key holding each ENI's IPs), each line ending in a newline."""
    return "".join(
        json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": list(e[ips])}) + "\n" for e in enis
    )


@contextmanager
def simulator_process(*args: str) -> Iterator[dict[str, Any]]:
    """``eni-async simulate ARGS`` on 127.0.0.1, any free port, in its own process: yields its ready line
    (``endpoint``, ``region``, ``secret_id``, ``secret_key``) and ends the process on exit."""
    command = [sys.executable, "-m", "eni_async", "simulate", "--host", "127.0.0.1", "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        ready: dict[str, Any] = json.loads(proc.stdout.readline())
        yield ready
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _rid(rng: random.Random, prefix: str, taken: set[str]) -> str:
    while True:
        rid = prefix + "-" + "".join(rng.choice(_ALPHABET) for _ in range(8))
        if rid not in taken:
            taken.add(rid)
            return rid


def drill_state(
    enis: int, *, seed: int = 1, min_ips: int = 1, max_ips: int = 25, per_vpc: int = 500
) -> dict[str, Any]:
    """A world of ``enis`` ENIs with ``min_ips``..``max_ips`` secondary IPs each, reproducible by ``seed``."""
    rng = random.Random(seed)
    taken: set[str] = set()
    out: list[dict[str, Any]] = []
    vpc = ""
    base = 0
    for n in range(enis):
        if n % per_vpc == 0:
            vpc = _rid(rng, "vpc", taken)
            network = ipaddress.IPv4Network(f"10.{(n // per_vpc) % 256}.0.0/16")
            base = int(network.network_address) + 2
        count = rng.randint(min_ips, max_ips)
        primary = str(ipaddress.IPv4Address(base))
        secondary = [str(ipaddress.IPv4Address(base + 1 + i)) for i in range(count)]
        base += count + 1
        eips = {ip: _rid(rng, "eip", taken) for ip in secondary if rng.random() < 0.2}
        out.append(
            {
                "vpc_id": vpc,
                "eni_id": _rid(rng, "eni", taken),
                "primary_ip": primary,
                "secondary_ips": secondary,
                "eips": eips,
                "cidr": f"{primary.rsplit('.', 2)[0]}.0.0/16",
            }
        )
    return {"enis": out, "tasks": []}


# ``Disagreement.kind`` -> the ``Verdict`` list that counts it.
_KINDS = {
    "listed_twice": "listed_twice",
    "released_but_assigned": "released_but_assigned",
    "not_released_but_gone": "unreleased_but_gone",
    "absent_but_assigned": "absent_but_assigned",
    "succeeded_but_assigned": "succeeded_but_assigned",
}


@dataclass
class Verdict:
    """What a drill found: outcomes against ground truth, item by item and IP by IP."""

    expected: int = 0
    reported: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    released_but_assigned: list[str] = field(default_factory=list)
    unreleased_but_gone: list[str] = field(default_factory=list)
    absent_but_assigned: list[str] = field(default_factory=list)
    succeeded_but_assigned: list[str] = field(default_factory=list)
    listed_twice: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return (
            len(self.lost) + len(self.duplicated) + sum(len(getattr(self, name)) for name in _KINDS.values())
        )

    def summary(self) -> dict[str, Any]:
        return {
            "expected_items": self.expected,
            "reported_items": self.reported,
            "lost_items": len(self.lost),
            "duplicated_items": len(self.duplicated),
            "released_but_still_assigned": len(self.released_but_assigned),
            "not_released_but_gone": len(self.unreleased_but_gone),
            "absent_but_still_assigned": len(self.absent_but_assigned),
            "succeeded_but_still_assigned": len(self.succeeded_but_assigned),
            "listed_twice": len(self.listed_twice),
            "statuses": self.statuses,
            "mismatches": self.mismatches,
        }


def verdict(
    outcomes: Iterable[Mapping[str, Any]], truth: Mapping[str, Any], expected_enis: Iterable[str]
) -> Verdict:
    """Compare outcomes (batch output JSON) with ``/_sim/state``; every expected ENI must appear once."""
    present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in truth["enis"]}
    result = Verdict()
    seen: set[str] = set()
    expected = list(expected_enis)
    result.expected = len(expected)
    for outcome in outcomes:
        eni = outcome["eni_id"]
        result.reported += 1
        result.statuses[outcome["status"]] = result.statuses.get(outcome["status"], 0) + 1
        if eni in seen:
            result.duplicated.append(eni)
        seen.add(eni)
        for found in disagreements(outcome, present):
            getattr(result, _KINDS[found.kind]).append(f"{eni} {found.ip}")
    result.lost = [eni for eni in expected if eni not in seen]
    return result


# -- FakeCalls: a fake of the ``Calls`` protocol --------------------------------------------------------------

# How a describe by ids answers for an ENI that does not exist (docs/protocol.md D31), per dialect: the code
# (and API 2.0 number) of the error that fails the whole call; "omit" leaves the id out of the answer.
_MISSING_ERRORS: Mapping[str, Mapping[str, tuple[str, int | None]]] = {
    "v3": {
        "ResourceNotFound": ("ResourceNotFound", None),
        "InvalidParameterValue": ("InvalidParameterValue", None),
    },
    "v2": {
        "ResourceNotFound": ("InvalidNetworkInterface.NotFound", 5000),
        "InvalidParameterValue": ("InvalidParameter", 4000),
    },
}


@dataclass
class FakeEni:
    """An ENI of a ``FakeCalls`` world: its VPC and its IPs, each with its ``State``."""

    vpc_id: str
    ips: dict[str, str] = field(default_factory=dict)  # ip -> State (DELETING, AVAILABLE, ...)


class FakeCalls:
    """A fake of ``eni_async.calls.Calls``: a world of ENIs and tasks set by hand, every call logged.

    Calls take the real rate budgets (``rates``, Tencent's by default) on the fake clock and are logged as
    ``(time, kind, args)`` with kind ``ids``, ``vpc``, ``query`` or ``submit``. A describe answers from the
    world (IP states on dialects that list them); an id no ENI has is left out, or, with ``missing`` set to
    ``"ResourceNotFound"`` or ``"InvalidParameterValue"``, fails the whole call as Tencent may (D31); ENIs in
    ``denied`` fail it with ``PermissionDeniedError``. A task query answers the reading set with ``end``
    (``TaskNotFoundError`` for a task never set). A submit starts a RUNNING task whose IPs show ``DELETING``;
    ``release`` and ``end`` then play the task out. ``describe_delay``: fake seconds a describe by id takes
    to answer (after it is logged). Nothing here opens a socket.
    """

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        dialect: str = "v3",
        poll: PollPolicy = PollPolicy(timeout=60.0),  # noqa: B008 - frozen value
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen value
        rates: Mapping[str, float] | None = None,
        missing: str = "omit",
    ) -> None:
        if missing != "omit" and missing not in _MISSING_ERRORS["v3"]:
            raise ValueError(
                f"missing must be omit, ResourceNotFound or InvalidParameterValue, not {missing!r}"
            )
        self.clock = clock if clock is not None else FakeClock()
        self.dialect_name = dialect
        self._dialect = get_dialect(dialect)
        self.poll = poll
        self.retry = retry
        self.budgets = Budgets(RateLimits().by_action() | dict(rates or {}), self.clock)
        self.latencies = LatencyTracker()
        self.missing = missing
        self.enis: dict[str, FakeEni] = {}
        self.tasks: dict[str, TaskState] = {}
        self.log: list[tuple[float, str, tuple[str, ...]]] = []
        self.seen: list[tuple[str, str]] = []  # (task, final status) as the tracker reported them
        self.denied: set[str] = set()
        self._running: dict[str, str] = {}  # ENI -> its RUNNING task
        self._sent: dict[str, float] = {}
        self._ids = itertools.count(1)
        self._later: set[asyncio.Task[None]] = set()
        self.describe_delay = 0.0

    def __repr__(self) -> str:
        return f"FakeCalls(dialect={self.dialect_name!r}, enis={len(self.enis)}, tasks={len(self.tasks)})"

    # -- setting the world ------------------------------------------------------------------------------

    def add(
        self, eni: str, ips: Iterable[str], *, vpc: str = "vpc-aaaaaaaa", state: str = "DELETING"
    ) -> None:
        """Put an ENI in the world with ``ips``, each in ``state``."""
        self.enis[eni] = FakeEni(vpc, dict.fromkeys(ips, state))

    def release(self, eni: str, *ips: str) -> None:
        """Take ``ips`` off the ENI (as a task that released them does)."""
        for ip in ips:
            self.enis[eni].ips.pop(ip)

    def clear(self) -> None:
        """Take every IP off every ENI."""
        for eni in self.enis.values():
            eni.ips.clear()

    def end(self, task_id: str, status: TaskStatus, *, output: str | None = None) -> None:
        """Set the reading a query of ``task_id`` gets from now on."""
        self.tasks[task_id] = TaskState(task_id, status, output=output)
        if status.done:
            self._running = {eni: task for eni, task in self._running.items() if task != task_id}

    def later(self, seconds: float, change: Callable[[], object]) -> None:
        """Run ``change`` once the fake clock has moved ``seconds`` on."""

        async def run() -> None:
            await self.clock.sleep(seconds)
            change()

        task = asyncio.get_running_loop().create_task(run())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    def calls(self, kind: str) -> list[tuple[float, str, tuple[str, ...]]]:
        """The logged calls of one kind."""
        return [entry for entry in self.log if entry[1] == kind]

    def info(self, eni: str) -> EniInfo:
        """The ENI as a describe shows it now."""
        e = self.enis[eni]
        states = dict(e.ips) if self._dialect.capabilities.lists_ip_state else {}
        return EniInfo(e.vpc_id, eni, "10.9.9.9", tuple(e.ips), ip_states=states)

    # -- the Calls protocol ------------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._dialect.capabilities

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        if len(eni_ids) > self.capabilities.describe_ids_per_call:
            raise AssertionError(f"{len(eni_ids)} ids in one call; the dialect takes {self.capabilities}")
        await self.budgets[DESCRIBE].acquire()
        self.log.append((self.clock.monotonic(), "ids", tuple(eni_ids)))
        if self.describe_delay > 0:
            await self.clock.sleep(self.describe_delay)
        if self.denied & set(eni_ids):
            raise PermissionDeniedError("UnauthorizedOperation", "not allowed on this resource")
        unknown = [eni for eni in eni_ids if eni not in self.enis]
        if unknown and self.missing != "omit":
            code, numeric = _MISSING_ERRORS[self.dialect_name][self.missing]
            raise api_error(code, f"NetworkInterfaceIds: {', '.join(unknown)} not found", numeric=numeric)
        return {eni: self.info(eni) for eni in eni_ids if eni in self.enis}

    async def describe_vpc(self, vpc_id: str, *, offset: int, limit: int) -> tuple[list[EniInfo], int]:
        await self.budgets[DESCRIBE].acquire()
        self.log.append((self.clock.monotonic(), "vpc", (vpc_id, str(offset))))
        enis = [eni for eni, e in self.enis.items() if e.vpc_id == vpc_id]
        return [self.info(eni) for eni in enis[offset : offset + limit]], len(enis)

    async def task_state(self, task_id: str) -> TaskState:
        await self.budgets[TASK_QUERY].acquire()
        sent = self.clock.monotonic()
        self.log.append((sent, "query", (task_id,)))
        state = self.tasks.get(task_id)
        if state is None:
            raise TaskNotFoundError("ResourceNotFound", f"no task {task_id}")
        return TaskState(state.task_id, state.status, state.request_id, state.output, observed_at=sent)

    async def submit(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Submitted:
        await self.budgets[UNASSIGN].acquire()
        now = self.clock.monotonic()
        self.log.append((now, "submit", (eni_id, *ips)))
        eni = self.enis.get(eni_id)
        if eni is None or eni.vpc_id != vpc_id:
            code, numeric = _MISSING_ERRORS[self.dialect_name]["ResourceNotFound"]
            raise api_error(code, f"{eni_id} not found in {vpc_id}", numeric=numeric)
        if eni_id in self._running:
            raise MutexError("UnsupportedOperation.MutexOperationTaskRunning", f"a task runs on {eni_id}")
        absent = [ip for ip in ips if ip not in eni.ips]
        if absent:
            raise IpNotOnEniError(
                "UnsupportedOperation.AttachmentNotFound", f"{', '.join(absent)} not on {eni_id}"
            )
        task_id = f"t{next(self._ids)}"
        self.tasks[task_id] = TaskState(task_id, TaskStatus.RUNNING)
        self._running[eni_id] = task_id
        self._sent[task_id] = now
        for ip in ips:
            eni.ips[ip] = "DELETING"
        return Submitted(task_id, None)

    async def submit_when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        deadline = self.clock.monotonic() + (self.poll.timeout if timeout is None else timeout)
        while True:
            if gate is not None and gate():
                raise StopSubmitting
            try:
                return await self.submit(vpc_id, eni_id, ips)
            except MutexError:
                if self.clock.monotonic() + self.poll.initial > deadline:
                    raise TaskTimeoutError(
                        f"(another task on {eni_id})", "RUNNING", self.poll.initial
                    ) from None
                await self.clock.sleep(self.poll.initial)

    def sent_at(self, task_id: str) -> float | None:
        return self._sent.pop(task_id, None)

    def task_seen(self, task_id: str, status: str, seen_at: float | None) -> None:
        self.seen.append((task_id, status))
