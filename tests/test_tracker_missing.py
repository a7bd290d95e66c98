"""Both readings of a missing ENI (docs/protocol.md D31): left out of a describe, or failing the whole call.

Against the shipped fake of ``Calls`` (fake time) and, end to end, against the simulator in each mode: the
missing ENI is found by bisection (never one call per ENI), watched tasks on it are settled by their task,
and the look before a submit gives the ``InvalidNetworkInterface.NotFound`` outcome instead of raising.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest

from eni_async.clock import FakeClock
from eni_async.dialects import DESCRIBE
from eni_async.errors import (
    EniAsyncError,
    EniNotFoundError,
    InvalidParameterError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    TaskNotFoundError,
    VpcNotFoundError,
)
from eni_async.models import EniInfo, TaskStatus
from eni_async.outcomes import Item
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.testing import FakeCalls
from eni_async.tracker import Tracker
from eni_async.tracker.describing import names_missing
from tests.batchhelpers import world

VPC = "vpc-aaaaaaaa"
MODES = ["omit", "ResourceNotFound", "InvalidParameterValue"]
GHOST = "eni-zzzzzzzz"


def bound(n: int) -> int:
    """The most calls bisection may spend on ``n`` ids with one of them failing: two per level, plus one."""
    return 2 * math.ceil(math.log2(n)) + 1


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        (NotFoundError("ResourceNotFound", "the resource does not exist"), True),
        (EniNotFoundError("InvalidNetworkInterface.NotFound", "no such ENI"), True),
        (InvalidParameterError("InvalidParameterValue", f"NetworkInterfaceIds: {GHOST} not found"), True),
        (InvalidParameterError("InvalidParameter", f"{GHOST} not found"), True),
        (InvalidParameterError("InvalidParameterValue", "something else is wrong"), False),
        (InvalidParameterError("InvalidParameterValue.Malformed", f"{GHOST} is malformed"), False),
        (VpcNotFoundError("InvalidVpc.NotFound", "no such VPC"), False),
        (PermissionDeniedError("UnauthorizedOperation", f"not allowed on {GHOST}"), False),
    ],
    ids=["ResourceNotFound", "v2 not found", "value naming it", "v2 naming it", "value not naming it",
         "malformed", "VPC not found", "denied"],
)  # fmt: skip
def test_what_says_an_eni_is_missing(error: EniAsyncError, missing: bool) -> None:
    """A not-found code, or a plain parameter error naming the id, says the ENI named alone is missing."""
    assert names_missing(error, GHOST) is missing


@pytest.mark.parametrize("mode", MODES)
async def test_a_missing_eni_among_a_hundred_costs_a_few_calls_not_a_hundred(mode: str) -> None:
    """The look before submit: 100 ENIs asked together, one missing: it is None, the others described."""
    calls = FakeCalls(FakeClock(), missing=mode)
    tracker = Tracker(calls)
    names = [f"eni-{i:08d}" for i in range(99)]
    for i, eni in enumerate(names):
        calls.add(eni, [f"10.6.0.{i + 2}"], state="AVAILABLE")
    asked = [*names[:40], GHOST, *names[40:]]
    found = await asyncio.gather(*(tracker.describe(eni) for eni in asked))
    assert found[40] is None
    assert all(isinstance(info, EniInfo) for i, info in enumerate(found) if i != 40)
    assert 1 <= len(calls.calls("ids")) <= (1 if mode == "omit" else bound(100))
    assert tracker.describe_calls == len(calls.calls("ids"))


@pytest.mark.parametrize("mode", MODES)
async def test_watched_tasks_beside_a_missing_eni_are_settled_by_their_enis(mode: str) -> None:
    """50 watched tasks, one on an ENI that no longer exists: its SUCCESS task releases it (by task), the
    others are released by their ENIs, and no look splits into one call per ENI."""
    calls = FakeCalls(FakeClock(), missing=mode)
    tracker = Tracker(calls)
    for i in range(49):
        calls.add(f"eni-{i:08d}", [f"10.7.0.{i + 2}"])
    calls.end("t-ghost", TaskStatus.SUCCESS)
    calls.later(2.0, calls.clear)
    waits = [tracker.track(VPC, f"eni-{i:08d}", f"t{i}", [f"10.7.0.{i + 2}"]) for i in range(49)]
    fates = await asyncio.gather(*waits, tracker.track(VPC, GHOST, "t-ghost", ["10.7.1.2"]))
    assert all(f.released and f.confirmed_by == dict.fromkeys(f.ips, "eni") for f in fates[:49])
    assert fates[49].confirmed_by == {"10.7.1.2": "task"}
    looks = calls.calls("ids")
    assert max(len(ids) for _, _, ids in looks) == 50, "looked at together"
    assert sum(1 for _, _, ids in looks if len(ids) == 1) <= math.ceil(math.log2(50)) + 1


async def test_a_failed_task_on_a_missing_eni_leaves_its_ips_unknown() -> None:
    """ResourceNotFound for the ENI and a FAILED task: nothing observed the IPs, so they are unknown."""
    calls = FakeCalls(FakeClock(), missing="ResourceNotFound")
    calls.end("t1", TaskStatus.FAILED)
    fate = await Tracker(calls).track(VPC, GHOST, "t1", ["10.7.1.2"])
    assert (fate.released, fate.not_released, fate.unknown) == ((), (), ("10.7.1.2",))
    assert fate.reason is not None
    assert "not found" in fate.reason


@pytest.mark.parametrize("mode", ["ResourceNotFound", "InvalidParameterValue"])
async def test_api_2_reads_a_failing_describe_of_one_eni_as_not_found(mode: str) -> None:
    """API 2.0 describes one ENI per call: InvalidNetworkInterface.NotFound (or InvalidParameter naming it)
    for it means it is missing, not that the look failed."""
    calls = FakeCalls(FakeClock(), dialect="v2", missing=mode)
    tracker = Tracker(calls)
    calls.add("eni-00000001", ["10.8.0.2"], state="")
    assert await tracker.describe(GHOST) is None
    assert isinstance(await tracker.describe("eni-00000001"), EniInfo)


async def test_a_transient_failure_is_never_read_as_missing() -> None:
    """A call failing transiently says nothing of one ENI: the asker gets the error, nothing is split."""

    class Down(FakeCalls):
        async def describe_many(self, eni_ids: object) -> dict[str, EniInfo]:
            self.log.append((self.clock.monotonic(), "ids", ()))
            raise ServerError("InternalError", f"down ({eni_ids})")

    calls = Down(FakeClock(), missing="ResourceNotFound")
    tracker = Tracker(calls)
    results = await asyncio.gather(
        *(tracker.describe(f"eni-{i:08d}") for i in range(8)), return_exceptions=True
    )
    assert all(isinstance(r, ServerError) for r in results)
    assert len(calls.calls("ids")) == 1


async def test_a_refused_task_and_a_missing_eni_leave_the_ips_unknown_at_once() -> None:
    """No ENI to look at and no task to read: the IPs are unknown now, not at the deadline."""
    calls = FakeCalls(FakeClock(), missing="InvalidParameterValue")
    fate = await Tracker(calls).track(VPC, GHOST, "t-unknown", ["10.7.1.2"])
    assert fate.unknown == ("10.7.1.2",)
    assert isinstance(fate.error, TaskNotFoundError)
    assert calls.clock.monotonic() < 10.0


# -- end to end, against the simulator ------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["v2", "v3"])
@pytest.mark.parametrize("mode", MODES)
async def test_the_look_before_submit_gives_the_not_found_outcome(dialect: str, mode: str) -> None:
    """A batch with one ENI that does not exist, against a simulator answering either way: that item fails
    with InvalidNetworkInterface.NotFound and nothing submitted; every other one is released."""
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=120.0))
    async with world(settings=settings, enis=30, ips_per_eni=1, describe_missing=mode) as w:
        items = w.items()
        ghost = Item(items[0].vpc_id, GHOST, ("10.250.0.9",))
        batch = [*items[:10], ghost, *items[10:]]
        outcomes = {o.eni_id: o async for o in w.client.unassign_many(batch, preflight=True)}
        stats = w.sim.stats()
    missing = outcomes[GHOST]
    assert missing.error is not None
    assert missing.error["code"] == "InvalidNetworkInterface.NotFound"
    assert (missing.not_released, missing.task_ids) == (["10.250.0.9"], [])
    assert all(o.status == "succeeded" for eni, o in outcomes.items() if eni != GHOST)
    # API 3.0 packs the 31 looks into shared calls: one split costs a handful, never one call per ENI.
    if dialect == "v3":
        assert stats["requests"][DESCRIBE] < 31


@pytest.mark.parametrize("mode", MODES)
async def test_the_simulator_answers_a_missing_id_as_configured(mode: str) -> None:
    """A describe by ids naming a missing ENI: left out (omit), or the call fails naming it."""
    settings = replace(Settings(dialect="v3"), poll=PollPolicy(timeout=30.0))
    async with world(settings=settings, enis=2, ips_per_eni=1, describe_missing=mode) as w:
        real = w.items()[0].eni_id
        try:
            found: dict[str, EniInfo] | EniAsyncError = await w.client.calls.describe_many([real, GHOST])
        except EniAsyncError as exc:
            found = exc
    if mode == "omit":
        assert isinstance(found, dict)
        assert list(found) == [real]
    else:
        assert isinstance(found, EniAsyncError)
        assert getattr(found, "code", None) == mode
        assert GHOST in str(found)


def test_simulate_takes_the_mode_as_an_option_and_refuses_others() -> None:
    """``eni-async simulate --describe-missing`` sets the mode (default omit); a config value outside the three
    is refused naming the field."""
    from eni_async.errors import ConfigError
    from eni_async.simulator import SimulatorConfig
    from eni_async.simulator.command import build_config
    from tests.test_simulator_command import _args

    assert build_config(_args()).describe_missing == "omit"
    assert (
        build_config(_args("--describe-missing", "ResourceNotFound")).describe_missing == "ResourceNotFound"
    )
    with pytest.raises(SystemExit):
        _args("--describe-missing", "Sometimes")
    with pytest.raises(ConfigError, match="describe_missing"):
        SimulatorConfig(describe_missing="Sometimes")
