"""The one release path: outcomes as D24 and D25 state them, the submit-failure cases over a scripted
transport, one mapping of an outcome to an exception, credentials lost mid-batch, and a batch whose workers
follow a falling target to the last item (a property test drives targets, latencies and kills)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eni_async.batch import Batch
from eni_async.calls import Gate
from eni_async.cli import main
from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.credentials import CredentialError
from eni_async.dialects import Capabilities, get_dialect
from eni_async.errors import (
    CODE_CLASSES,
    ApiError,
    IpNotOnEniError,
    PrimaryIpError,
    TaskFailedError,
    api_error,
    error_info,
)
from eni_async.journal import ResumePlan, SqliteJournal
from eni_async.models import ChunkFate, Credentials, EniInfo, HttpRequest, HttpResponse, Submitted, TaskState
from eni_async.outcomes import SUBMITTED, SUCCEEDED, Item, Outcome, check_against_truth
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.poller import LatencyTracker
from eni_async.release import SUBMIT_FAILURES, Releaser
from eni_async.settings import RateLimits, Settings
from eni_async.simulator import Simulator
from eni_async.testing import MockTransport, jsonl_lines
from eni_async.throttle import Budgets
from tests.batchhelpers import world

VPC, ENI, PRIMARY = "vpc-7t9nf3pu", "eni-m6dyj72l", "10.0.0.9"
CREDS = Credentials("AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA")
UNASSIGN = "UnassignPrivateIpAddresses"


# -- outcomes: one meaning per status, nothing guessed ---------------------------------------------------


def test_an_item_of_released_and_absent_ips_succeeded() -> None:
    """D24: every IP released or absent is ``succeeded``, with no error, and its result lists the absent."""
    outcome = Outcome(VPC, ENI, ("10.0.0.2", "10.0.0.3"), task_ids=["7"])
    outcome.released, outcome.absent = ["10.0.0.2"], ["10.0.0.3"]
    assert outcome.settle().status == SUCCEEDED
    result = outcome.raise_for_failure()
    assert (result.released, result.absent, result.task_ids) == (("10.0.0.2",), ("10.0.0.3",), ("7",))


def test_an_item_of_absent_ips_alone_succeeded_with_nothing_sent() -> None:
    """D24: an item whose IPs were all gone before we asked succeeded (no ``skipped``, no error)."""
    outcome = Outcome(VPC, ENI, ("10.0.0.2",), absent=["10.0.0.2"]).settle()
    assert (outcome.status, outcome.error, outcome.failure()) == (SUCCEEDED, None, None)


def test_an_ip_sent_and_never_observed_is_unknown_on_settling() -> None:
    """D25: an IP of a submit whose fate was not seen is ``unknown`` when the work ends in an error; an IP
    never sent is ``not_released``."""
    outcome = Outcome(VPC, ENI, ("10.0.0.2", "10.0.0.3", "10.0.0.4"), task_ids=["7"])
    outcome.sent.update({"10.0.0.2", "10.0.0.3"})
    outcome.fail(CredentialError("the metadata service is gone"))
    outcome.settle()
    assert (outcome.status, outcome.unknown, outcome.not_released) == (
        "failed",
        ["10.0.0.2", "10.0.0.3"],
        ["10.0.0.4"],
    )


def test_an_error_met_on_the_way_of_a_succeeded_item_is_kept_as_a_decision() -> None:
    """An item whose IPs all ended released succeeded even after an error on the way, which is kept among
    its decisions rather than reported as its error."""
    outcome = Outcome(VPC, ENI, ("10.0.0.2",), released=["10.0.0.2"])
    outcome.fail(TaskFailedError("7", eni_id=ENI, ips=("10.0.0.2",)))
    outcome.settle()
    assert (outcome.status, outcome.error) == (SUCCEEDED, None)
    assert any("ended FAILED" in d for d in outcome.decisions)


def test_accepted_and_unwatched_is_submitted() -> None:
    """``--no-wait``: IPs of accepted tasks nobody watches are unknown and the item is ``submitted``."""
    outcome = Outcome(VPC, ENI, ("10.0.0.2",), unknown=["10.0.0.2"], task_ids=["7"])
    assert outcome.settle(watched=False).status == SUBMITTED
    assert outcome.failure() is None


@pytest.mark.parametrize("code", sorted(CODE_CLASSES))
def test_an_outcome_read_back_raises_its_error_saying_each_thing_once(code: str) -> None:
    """An outcome read back from JSON (a service's release) raises the class its code names, and the
    message says the action, the code and the request id once each, as the original did."""
    original = api_error(code, "this IP is not on the ENI", action=UNASSIGN, request_id="req-1")
    data = Outcome(
        VPC, ENI, ("10.0.0.2",), status="failed", not_released=["10.0.0.2"], task_ids=["7"]
    ).to_json()
    data["error"] = error_info(original)
    exc = Outcome.from_json(data).failure()
    assert isinstance(exc, ApiError)
    assert type(exc) is type(original)
    assert (str(exc), exc.message, exc.request_id) == (str(original), original.message, "req-1")
    assert str(exc).count(UNASSIGN) == 1
    assert exc.result.task_ids == ("7",)


def test_a_failed_task_read_back_keeps_its_reason() -> None:
    """A ``TaskFailed`` error read back is a ``TaskFailedError`` with the server's reason, said once."""
    original = TaskFailedError("7", eni_id=ENI, ips=("10.0.0.2",), output="quota")
    data = Outcome(
        VPC, ENI, ("10.0.0.2",), status="failed", not_released=["10.0.0.2"], task_ids=["7"]
    ).to_json()
    data["error"] = error_info(original)
    exc = Outcome.from_json(data).failure()
    assert isinstance(exc, TaskFailedError)
    assert (str(exc), exc.output, exc.task_id) == (str(original), "quota", "7")


# -- the release path over a scripted transport ---------------------------------------------------------


def answer(data: dict[str, Any] | None = None, *, code: int = 0, desc: str = "Success") -> HttpResponse:
    """An API 2.0 answer: the envelope and its ``data``."""
    body = {"code": code, "message": "scripted", "codeDesc": desc, "data": data or {}}
    return HttpResponse(200, {}, json.dumps(body).encode())


class ScriptedEni:
    """One API 2.0 ENI behind a ``MockTransport`` handler: a release of an IP it lacks is refused as
    Tencent refuses it; an accepted release takes the IPs off at once; every task reads SUCCESS."""

    def __init__(self, ips: Sequence[str]) -> None:
        self.ips = list(ips)
        self.tasks = itertools.count(100)
        self.actions: list[str] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        form = {k: v[0] for k, v in parse_qs((request.body or b"").decode()).items()}
        self.actions.append(request.action)
        if request.action == UNASSIGN:
            asked = [v for k, v in sorted(form.items()) if k.startswith("privateIpAddress.")]
            if any(ip not in self.ips for ip in asked):
                return answer(code=4000, desc="InvalidPrivateIpAddress.NotFound")
            self.ips = [ip for ip in self.ips if ip not in asked]
            return answer({"taskId": next(self.tasks)})
        if request.action == "DescribeNetworkInterfaces":
            addresses = [{"privateIpAddress": PRIMARY, "primary": True}]
            addresses += [{"privateIpAddress": ip, "primary": False} for ip in self.ips]
            eni = {"networkInterfaceId": ENI, "vpcId": VPC, "privateIpAddressesSet": addresses}
            return answer({"totalNum": 1, "data": [eni]})
        return answer({"status": 0})  # DescribeVpcTaskResult: SUCCESS


def scripted(handler: ScriptedEni) -> EniClient:
    settings = Settings(
        confirm="task", poll=PollPolicy(first=0.5, timeout=60.0), endpoint="https://vpc.api.qcloud.com"
    )
    return EniClient(CREDS, settings, clock=FakeClock(), transport=MockTransport(handler))


async def test_unassign_returns_an_ip_not_on_the_eni_as_absent() -> None:
    """D24 through the library: a submit refused for an IP not on the ENI is looked into, the IP is absent,
    the rest is released by a second submit, and ``unassign`` returns (it does not raise)."""
    eni = ScriptedEni(["10.0.0.2"])
    async with scripted(eni) as client:
        result = await client.unassign(VPC, ENI, ["10.0.0.2", "10.0.0.5"])
    assert (result.released, result.absent, result.task_ids) == (("10.0.0.2",), ("10.0.0.5",), ("100",))
    assert eni.actions == [UNASSIGN, "DescribeNetworkInterfaces", UNASSIGN, "DescribeVpcTaskResult"]


async def test_unassign_raises_the_primary_ip_refusal_with_its_result() -> None:
    """The primary IP is refused: ``unassign`` raises ``PrimaryIpError``, whose ``.result`` says the other
    IP was released by its task."""
    eni = ScriptedEni(["10.0.0.2"])

    def refuse_primary(request: HttpRequest) -> HttpResponse:
        if request.action == UNASSIGN and PRIMARY in (request.body or b"").decode():
            return answer(code=4000, desc="InvalidPrivateip.IsPrimary")
        return eni(request)

    settings = Settings(confirm="task", poll=PollPolicy(first=0.5, timeout=60.0))
    async with EniClient(
        CREDS, settings, clock=FakeClock(), transport=MockTransport(refuse_primary)
    ) as client:
        with pytest.raises(PrimaryIpError) as caught:
            await client.unassign(VPC, ENI, ["10.0.0.2", PRIMARY])
    assert caught.value.result.released == ("10.0.0.2",)


class Flaky(ScriptedEni):
    """A ``ScriptedEni`` whose first submit takes effect and then answers HTTP 503 (ambiguous), and whose
    first task reading fails the task when ``failing``."""

    def __init__(self, ips: Sequence[str], *, failing: bool = False) -> None:
        super().__init__(ips)
        self.flaked = False
        self.failing = failing

    def __call__(self, request: HttpRequest) -> HttpResponse:
        answered = super().__call__(request)
        if request.action == UNASSIGN and not self.flaked:
            self.flaked = True
            return HttpResponse(503, {}, b"busy")
        if request.action == "DescribeVpcTaskResult" and self.failing:
            return answer({"status": 1, "output": "scripted failure"})
        return answered


class Vanishing(ScriptedEni):
    """A ``ScriptedEni`` whose IPs are all released by another hand just after its first describe."""

    def __init__(self, ips: Sequence[str]) -> None:
        super().__init__(ips)
        self.looked = False

    def __call__(self, request: HttpRequest) -> HttpResponse:
        answered = super().__call__(request)
        if request.action == "DescribeNetworkInterfaces" and not self.looked:
            self.looked = True
            self.ips = []
        return answered


ReleasePath = tuple[list[str], list[str], Callable[[Sequence[str]], ScriptedEni], bool, tuple[str, ...]]
# A path's name -> (the ENI's IPs, the IPs asked for, the handler around them, look first, resumed in doubt).
PATHS: dict[str, ReleasePath] = {
    "released": (["10.0.0.2"], ["10.0.0.2"], ScriptedEni, False, ()),
    "released, looked at first": (["10.0.0.2", "10.0.0.3"], ["10.0.0.2", "10.0.0.3"], ScriptedEni, True, ()),
    "absent, refused by the server": (["10.0.0.2"], ["10.0.0.2", "10.0.0.5"], ScriptedEni, False, ()),
    "absent and primary, looked at first": (
        ["10.0.0.2"],
        ["10.0.0.2", "10.0.0.5", PRIMARY],
        ScriptedEni,
        True,
        (),
    ),
    "ambiguous, then looked at": (["10.0.0.2", "10.0.0.3"], ["10.0.0.2", "10.0.0.3"], Flaky, False, ()),
    # Seen on the ENI by the look before: gone after the ambiguous submit is its effect (released).
    "ambiguous, seen first": (["10.0.0.2", "10.0.0.3"], ["10.0.0.2", "10.0.0.3"], Flaky, True, ()),
    "task failed": (["10.0.0.2"], ["10.0.0.2"], lambda ips: Flaky(ips, failing=True), False, ()),
    "more than one chunk": (
        [f"10.0.1.{i}" for i in range(12)],
        [f"10.0.1.{i}" for i in range(12)],
        ScriptedEni,
        False,
        (),
    ),
    "resumed in doubt, then gone before the submit": (
        ["10.0.0.2"],
        ["10.0.0.2"],
        Vanishing,
        False,
        ("10.0.0.2",),
    ),
}


class Listening:
    """A release's ``Recorder`` that keeps nothing: it only takes the release off its common path."""

    async def add(self, item: Item) -> int:
        return 0

    async def submitting(self, item: Item, chunk: tuple[str, ...], outcome: Outcome) -> None:
        pass

    async def submitted(
        self, item: Item, task_id: str, request_id: str | None, chunk: tuple[str, ...], outcome: Outcome
    ) -> None:
        pass

    async def progressed(
        self, item: Item, outcome: Outcome, *, ended: Collection[str] = (), taken_back: bool = False
    ) -> None:
        pass

    async def finished(self, key: int, outcome: Outcome) -> None:
        pass


@pytest.mark.parametrize("path", sorted(PATHS))
async def test_a_release_on_its_common_path_agrees_with_one_off_it(path: str) -> None:
    """Without a deadline or a recorder, the release makes a chunk's first try and awaits the describe,
    the submit and the watch itself (no chunk object, no patience in between); with a deadline that no
    outage reaches (through the patience), or with a recorder, it goes the general way: all three make the
    same calls in the same order and reach the same outcome, decision by decision."""
    on_eni, asked, handler, look, in_doubt = PATHS[path]
    seen = []
    for deadline, recorder in ((None, None), (600.0, None), (None, Listening())):
        eni = handler(on_eni)
        item = Item(VPC, ENI, tuple(asked))
        plan = ResumePlan(Outcome.for_item(item), in_doubt=in_doubt) if in_doubt else None
        async with scripted(eni) as client:
            clock = client.calls.clock
            outcome = await client.releaser.release(
                item,
                plan.outcome if plan is not None else None,
                plan=plan,
                look=look,
                recorder=recorder,
                deadline=None if deadline is None else clock.monotonic() + deadline,
            )
            assert client.releaser.patience.items == {}
            assert client.releaser.patience.watching == set()
        seen.append((outcome.to_json(), eni.actions))
    assert seen[0] == seen[1] == seen[2]
    json = seen[0][0]
    assert json["released"] or json["not_released"] or json["unknown"], "the path does something"


def test_every_submit_error_has_exactly_one_case() -> None:
    """The submit-failure table answers for every class of the tree, and the most specific entry wins."""
    case_of = {
        cls: next(SUBMIT_FAILURES[c] for c in cls.__mro__ if c in SUBMIT_FAILURES)
        for cls in CODE_CLASSES.values()
    }
    assert case_of[IpNotOnEniError] is SUBMIT_FAILURES[IpNotOnEniError]
    assert case_of[type(api_error("InvalidVpc.NotFound", ""))].__name__ == "_gone"
    assert case_of[type(api_error("UnauthorizedOperation", ""))].__name__ == "_refused"


# -- credentials lost mid-batch --------------------------------------------------------------------------


class FailingLater:
    """A credential source that works until ``at`` on the clock, then cannot be reached (a metadata
    service gone with short-lived credentials)."""

    def __init__(self, credentials: Credentials, clock: FakeClock, at: float) -> None:
        self.credentials, self.clock, self.at = credentials, clock, at

    @property
    def source(self) -> str:
        return "a metadata service that goes away"

    async def get(self) -> Credentials:
        if self.clock.monotonic() >= self.at:
            raise CredentialError("the metadata service did not answer")
        return self.credentials

    async def refresh(self, stale: Credentials | None = None) -> Credentials:
        return await self.get()


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_credentials_lost_while_tasks_run_leave_their_ips_unknown(dialect: str) -> None:
    """Credentials lost after every submit was accepted: the released IPs are ``unknown`` (their fate was
    never observed), never ``not_released``, and the outcomes agree with the simulator once tasks end."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=300.0))
    async with world(enis=4, ips_per_eni=2, task_latency=(5.0, 0.0), settings=settings) as w:
        w.client.credentials = FailingLater(w.sim.credentials, w.clock, at=1.0)
        outcomes = [o async for o in w.client.unassign_many(w.items())]
        await w.clock.sleep(10.0)  # the tasks end at Tencent all the same
        present = w.present()
    sent = [o for o in outcomes if o.task_ids]
    assert sent, "the submits went out before the credentials were lost"
    for o in sent:
        assert (o.status, sorted(o.unknown), o.not_released) == ("failed", sorted(o.ips), []), o.to_json()
        assert o.error is not None
        assert o.error["code"] == "CredentialsUnavailable"
    assert [p for o in outcomes for p in check_against_truth(o.to_json(), present)] == []
    assert all(present[o.eni_id].isdisjoint(o.ips) for o in sent), "the tasks released them"


async def test_unassign_with_credentials_lost_raises_and_reports_unknown() -> None:
    """``unassign`` whose credentials are lost while its task runs raises the credential error, and its
    result lists the task and no IP as released."""
    async with world(enis=1, ips_per_eni=2, task_latency=(5.0, 0.0)) as w:
        (item,) = w.items()
        w.client.credentials = FailingLater(w.sim.credentials, w.clock, at=1.0)
        with pytest.raises(CredentialError) as caught:
            await w.client.unassign(item.vpc_id, item.eni_id, item.ips)
    assert (len(caught.value.result.task_ids), caught.value.result.released) == (1, ())


# -- the batch follows its target to the last item ----------------------------------------------------


class FakeCalls:
    """A ``Calls`` that accepts every submit at once (a fresh task id); nothing else is asked of it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.capabilities: Capabilities = get_dialect("v2").capabilities
        self.budgets = Budgets(RateLimits().by_action(), clock)
        self.latencies = LatencyTracker()
        self.retry, self.poll = RetryPolicy(), PollPolicy()
        self.ids = itertools.count(1)

    async def submit(self, vpc_id: str, eni_id: str, ips: Sequence[str]) -> Submitted:
        return Submitted(str(next(self.ids)), None)

    async def submit_when_free(
        self,
        vpc_id: str,
        eni_id: str,
        ips: Sequence[str],
        *,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        return await self.submit(vpc_id, eni_id, ips)

    async def task_state(self, task_id: str) -> TaskState:
        raise AssertionError("the watcher reads no task here")

    async def describe_many(self, eni_ids: Sequence[str]) -> dict[str, EniInfo]:
        raise AssertionError("nothing is described here")

    async def describe_vpc(self, vpc_id: str, *, offset: int, limit: int) -> tuple[list[EniInfo], int]:
        raise AssertionError("nothing is described here")

    def sent_at(self, task_id: str) -> float | None:
        return None

    def task_seen(self, task_id: str, status: str, seen_at: float | None) -> None:
        return None


class SleepyWatcher:
    """Every task releases its IPs after the latency its ENI is given (in fake time)."""

    def __init__(self, clock: FakeClock, latency: dict[str, float]) -> None:
        self.clock, self.latency = clock, latency

    async def track(
        self,
        vpc_id: str,
        eni_id: str,
        task_id: str,
        ips: Sequence[str],
        *,
        submitted_at: float | None = None,
        timeout: float | None = None,
    ) -> ChunkFate:
        await self.clock.sleep(self.latency[eni_id])
        return ChunkFate(vpc_id, eni_id, task_id, tuple(ips), released=tuple(ips))

    async def describe(self, eni_id: str) -> EniInfo | None:
        raise AssertionError("nothing is described here")


def items(count: int) -> list[Item]:
    return [Item(VPC, f"eni-{n:08d}", (f"10.1.{n // 250}.{n % 250 + 1}",)) for n in range(count)]


async def test_a_target_that_falls_while_every_worker_ends_in_one_tick_leaves_a_worker() -> None:
    """Workers ending together as the target falls to 1 retire one by one and never the last: the batch
    yields every item (it stopped early with none of its workers left)."""
    clock = FakeClock()
    todo = items(300)
    releaser = Releaser(FakeCalls(clock), SleepyWatcher(clock, dict.fromkeys((i.eni_id for i in todo), 10.0)))
    target = iter([64] * 64)  # the target for the first 64 questions, then it falls to 1
    batch = Batch(releaser, todo, concurrency=64, target=lambda: next(target, 1))
    yielded = [o.eni_id async for o in batch]
    assert sorted(yielded) == sorted(i.eni_id for i in todo)


async def test_a_resume_after_slow_tasks_finishes_every_item(tmp_path: Path) -> None:
    """A journalled batch of slow tasks stopped part-way is resumed with a new client,
    whose tracker sees the resumed tasks end at once and shrinks its target: every item still ends."""
    # At 10 submits/s the tracker starts with about 33 releases in flight and grows while none ends; seen
    # to end at once, resumed tasks bring its target down to 18 while all those workers end in one tick.
    settings = Settings(rate_limits=RateLimits(unassign=10), poll=PollPolicy(timeout=300.0))
    async with world(enis=120, ips_per_eni=1, task_latency=(10.0, 0.0), settings=settings) as w:
        journal = SqliteJournal(tmp_path / "j.sqlite")
        await journal.load(w.items())
        target = w.client.tracker.releases_in_flight()  # before any latency is known
        first = w.client.unassign_many(journal.unfinished(), journal=journal)
        done: list[Outcome] = []

        async def run_first() -> None:
            done.extend([o async for o in first])

        running = asyncio.create_task(run_first())
        await w.clock.sleep(5.0)  # 33 tasks submitted, none ended: the process "dies" here
        await first.aclose()
        await running
        async with EniClient(w.sim.credentials, w.client.settings, clock=w.clock) as again:
            await w.clock.sleep(20.0)  # the resumed tasks ended meanwhile: their latency looks short
            rest = [o async for o in again.unassign_many(journal.unfinished(), journal=journal)]
        counts = await journal.counts()
        await journal.close()
    assert counts["finished"] == 120, counts
    assert done == []
    # Every worker was busy with a slow task when it stopped; while no latency is known the target grows
    # with the time nothing has ended, so more than the first target were.
    assert len(first.unconfirmed) == first.stats.pulled > target
    assert len(rest) == 120
    assert all(o.status == SUCCEEDED for o in rest)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 60))
    return {
        "count": count,
        "concurrency": draw(st.integers(1, 24)),
        # The target over time, a step each half second: rises and falls of any size (0 and 1 included).
        "targets": draw(st.lists(st.sampled_from([0, 1, 2, 3, 8, 20, 30]), min_size=1, max_size=6)),
        # Often one latency for all: workers then end in the same tick, the hardest case for retiring.
        "latencies": draw(
            st.one_of(
                st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.5]).map(lambda latency: [latency] * count),
                st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=count, max_size=count),
            )
        ),
        "kill": draw(st.sampled_from([None, None, None, "stop", "stop-grace", "aclose", "cancel"])),
        "kill_at": draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0])),
    }


async def run_scenario(s: dict[str, Any]) -> None:
    clock = FakeClock()
    todo = items(s["count"])
    latency = {i.eni_id: s["latencies"][n] for n, i in enumerate(todo)}
    releaser = Releaser(FakeCalls(clock), SleepyWatcher(clock, latency))
    targets = s["targets"]  # the target moves every half fake second: workers ending together see one value
    pulled: list[str] = []

    def source() -> Iterator[Item]:
        for item in todo:
            pulled.append(item.eni_id)
            yield item

    rest = source()
    batch = Batch(
        releaser,
        rest,
        concurrency=s["concurrency"],
        target=lambda: targets[int(clock.monotonic() * 2) % len(targets)],
    )
    yielded: list[str] = []

    async def consume() -> None:
        async for outcome in batch:
            yielded.append(outcome.eni_id)

    consumer = asyncio.create_task(consume())

    async def kill() -> None:
        await clock.sleep(s["kill_at"])
        match s["kill"]:
            case "stop":
                batch.stop()
            case "stop-grace":
                batch.stop(1.0)
            case "aclose":
                await batch.aclose()
            case "cancel":
                consumer.cancel()

    killer = asyncio.create_task(kill()) if s["kill"] else None
    with contextlib.suppress(asyncio.CancelledError):
        await consumer
    if killer is not None:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer
    taken = list(pulled)
    ended = yielded + [o.eni_id for o in batch.unconfirmed]
    assert sorted(ended) == sorted(taken), "every item pulled ends exactly once"
    assert len(ended) == len(set(ended))
    left = [i.eni_id for i in rest]
    assert sorted(taken + left) == sorted(i.eni_id for i in todo)
    if s["kill"] is None or (s["kill_at"] >= 10.0 and not batch.unconfirmed and not left):
        assert sorted(yielded) == sorted(i.eni_id for i in todo), "a batch nobody stopped finishes its input"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_item_ends_exactly_once_whatever_the_targets_latencies_and_kills(s: dict[str, Any]) -> None:
    """Property: with random in-flight targets (0 included), latencies and a stop, close or cancel at a
    random time, every item pulled ends exactly once (yielded or unconfirmed), the rest stays in the
    input, and a batch nobody stopped yields every item."""
    asyncio.run(run_scenario(s))


async def test_a_batch_that_ends_with_input_left_says_so_and_fails(
    served: tuple[Simulator, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever ends a batch early without a signal (here a stop nobody asked for, after three outcomes),
    the command says so in one line with the count of items never taken and exits 1, never quietly."""
    sim, endpoint = served
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    enis = sim.ground_truth()["enis"]
    source.write_text(jsonl_lines(enis))

    class StopsEarly(Batch):
        def __aiter__(self) -> AsyncIterator[Outcome]:
            inner = super().__aiter__()

            async def outcomes() -> AsyncIterator[Outcome]:
                async for n, outcome in _numbered(inner):
                    yield outcome
                    if n == 3:
                        self.stop()

            return outcomes()

    def unassign_many(client: EniClient, items: Any, **options: Any) -> Batch:
        return StopsEarly(client.releaser, items, concurrency=1, **options)

    monkeypatch.setattr(EniClient, "unassign_many", unassign_many)
    argv = ["batch", str(source), "--endpoint", endpoint, "--no-progress", "--output", str(output)]
    code = await asyncio.to_thread(main, argv)
    written = len(output.read_text().splitlines())
    lines = [line for line in capsys.readouterr().err.splitlines() if "never taken" in line]
    assert code == 1
    assert 3 <= written < len(enis)
    assert lines == [
        f"eni-async: error: the batch ended with {len(enis) - written} item(s) of its input never taken"
    ]


async def _numbered(outcomes: AsyncIterator[Outcome]) -> AsyncIterator[tuple[int, Outcome]]:
    n = 0
    async for outcome in outcomes:
        n += 1
        yield n, outcome


async def test_re_running_finished_work_is_one_answer_everywhere(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once released, the same IPs asked for again are ``absent`` and the item ``succeeded``:
    a re-run ``batch`` exits 0, ``unassign`` exits 0, and ``status`` counts them succeeded."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    common = ["--endpoint", endpoint, "--no-progress"]
    assert (
        await asyncio.to_thread(main, ["batch", str(source), *common, "--output", str(tmp_path / "1.jsonl")])
        == 0
    )
    again = [
        "batch",
        str(source),
        *common,
        "--output",
        str(tmp_path / "2.jsonl"),
        "--journal",
        str(tmp_path / "j"),
    ]
    assert await asyncio.to_thread(main, again) == 0
    rerun = [json.loads(line) for line in (tmp_path / "2.jsonl").read_text().splitlines()]
    assert {(o["status"], o["error"]) for o in rerun} == {("succeeded", None)}
    assert all(sorted(o["absent"]) == sorted(o["ips"]) and o["task_ids"] == [] for o in rerun)
    first = enis[0]
    one = ["unassign", "--endpoint", endpoint, "--vpc-id", first["vpc_id"], "--eni-id", first["eni_id"]]
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*one, "--ip", first["secondary_ips"][0]]) == 0
    assert json.loads(capsys.readouterr().out)["absent"] == [first["secondary_ips"][0]]
    assert await asyncio.to_thread(main, ["status", str(tmp_path / "j")]) == 0
    assert json.loads(capsys.readouterr().out)["outcomes"] == {"succeeded": len(enis)}


@pytest.mark.parametrize(("look", "released", "unknown"), [(True, 2, 0), (False, 0, 2)])
async def test_gone_after_an_ambiguous_submit_is_released_only_if_seen_before(
    look: bool, released: int, unknown: int
) -> None:
    """A submit that took effect and answered 503: the describe after it finds both IPs gone. Seen on the
    ENI by the look before the submit, they are released; never seen (API 2.0 sends without looking), gone
    says nothing about the call (refused for IPs never there looks the same): unknown."""
    ips = ["10.0.0.2", "10.0.0.3"]
    async with scripted(Flaky(ips)) as client:
        outcome = await client.releaser.release(Item(VPC, ENI, tuple(ips)), look=look)
    assert (len(outcome.released), len(outcome.unknown)) == (released, unknown)
    assert not outcome.not_released
