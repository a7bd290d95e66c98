"""The shared refresher in fake time, and a token that expires mid-batch recovered over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from eni_async.clock import FakeClock
from eni_async.credentials import CredentialError, RefreshingCredentials, credential_chain
from eni_async.models import Credentials
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from tests.batchhelpers import world


@dataclass
class Issuer:
    """A fake credential source: each fetch issues a new pair valid ``lifetime`` seconds on ``clock``."""

    clock: FakeClock
    lifetime: float = 3600.0
    fetched: int = 0
    gate: asyncio.Event | None = None
    failing: bool = False
    issued: list[Credentials] = field(default_factory=list)

    async def __call__(self) -> Credentials:
        self.fetched += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise CredentialError("metadata service: cannot connect")
        credentials = Credentials(f"AKIDtmp{self.fetched}", "k", "t", self.clock.time() + self.lifetime)
        self.issued.append(credentials)
        return credentials


def refresher(issuer: Issuer, margin: float = 300.0) -> RefreshingCredentials:
    return RefreshingCredentials(issuer, source="test", clock=issuer.clock, margin=margin)


async def test_renewed_margin_seconds_before_expiry_and_not_earlier() -> None:
    """With a 300 s margin an hour-long pair is kept until 3300 s, then renewed once."""
    clock = FakeClock()
    issuer = Issuer(clock)
    provider = refresher(issuer)
    first = await provider.get()
    clock.advance(3299)
    assert await provider.get() is first
    clock.advance(2)
    second = await provider.get()
    assert second.secret_id == "AKIDtmp2"
    assert issuer.fetched == 2


async def test_margin_is_at_most_half_the_lifetime() -> None:
    """A pair living 60 s is renewed after 30 s, not at once, even with a 300 s margin."""
    clock = FakeClock()
    issuer = Issuer(clock, lifetime=60.0)
    provider = refresher(issuer)
    await provider.get()
    clock.advance(29)
    await provider.get()
    assert issuer.fetched == 1
    clock.advance(2)
    await provider.get()
    assert issuer.fetched == 2


async def test_many_coroutines_share_one_fetch() -> None:
    """Fifty coroutines asking at once with nothing in hand cause exactly one fetch."""
    issuer = Issuer(FakeClock())
    provider = refresher(issuer)
    got = await asyncio.gather(*(provider.get() for _ in range(50)))
    assert issuer.fetched == 1
    assert len({c.secret_id for c in got}) == 1


async def test_renewal_does_not_stop_work_while_the_old_pair_holds() -> None:
    """While one coroutine renews, others keep getting the still-valid pair at once; then all see the new one."""
    clock = FakeClock()
    issuer = Issuer(clock)
    provider = refresher(issuer)
    old = await provider.get()
    clock.advance(3400)  # inside the margin, not expired
    issuer.gate = asyncio.Event()
    renewing = asyncio.create_task(provider.get())
    await asyncio.sleep(0)
    others = await asyncio.wait_for(asyncio.gather(*(provider.get() for _ in range(10))), timeout=1.0)
    assert all(c is old for c in others)
    assert not renewing.done()
    issuer.gate.set()
    new = await renewing
    assert new.secret_id == "AKIDtmp2"
    assert await provider.get() is new
    assert issuer.fetched == 2


async def test_expired_pair_makes_callers_wait_for_the_one_fetch() -> None:
    """Once the pair has expired, callers wait for the renewal rather than sign with it."""
    clock = FakeClock()
    issuer = Issuer(clock)
    provider = refresher(issuer)
    await provider.get()
    clock.advance(3600)
    got = await asyncio.gather(*(provider.get() for _ in range(20)))
    assert {c.secret_id for c in got} == {"AKIDtmp2"}
    assert issuer.fetched == 2


async def test_failed_renewal_keeps_the_valid_pair_and_retries_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed renewal is logged, the old pair is kept, and the next try waits ten seconds."""
    clock = FakeClock()
    issuer = Issuer(clock)
    provider = refresher(issuer)
    old = await provider.get()
    clock.advance(3400)
    issuer.failing = True
    assert await provider.get() is old
    assert await provider.get() is old
    assert issuer.fetched == 2
    assert "could not renew credentials" in caplog.text
    clock.advance(11)
    issuer.failing = False
    assert (await provider.get()).secret_id == "AKIDtmp3"


async def test_failed_fetch_with_nothing_valid_raises() -> None:
    """With the pair expired and the source down, get raises CredentialError (an AuthError)."""
    clock = FakeClock()
    issuer = Issuer(clock)
    provider = refresher(issuer)
    await provider.get()
    clock.advance(3601)
    issuer.failing = True
    with pytest.raises(CredentialError):
        await provider.get()


async def test_refresh_after_someone_else_refreshed_fetches_nothing() -> None:
    """refresh(stale) fetches once; a second caller holding the same stale pair gets the new one for free."""
    issuer = Issuer(FakeClock())
    provider = refresher(issuer)
    stale = await provider.get()
    a, b = await asyncio.gather(provider.refresh(stale), provider.refresh(stale))
    assert a is b
    assert a.secret_id == "AKIDtmp2"
    assert issuer.fetched == 2


class LaggingClock(FakeClock):
    """The client's view of time, ``lag`` seconds behind the server's (a skewed host clock)."""

    def __init__(self, real: FakeClock, lag: float) -> None:
        super().__init__()
        self._real = real
        self._lag = lag

    def time(self) -> float:
        return self._real.time() - self._lag

    def monotonic(self) -> float:
        return self._real.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_role_credentials_renewed_before_expiry_through_a_long_batch(
    dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch running over three token lifetimes renews the CVM role ahead of expiry: no refusal, no failed
    item. Two rounds of two 15-minute tasks (each outliving a 10-minute token) last as long as six rounds of
    5-minute ones did, with a third of the describes (the tracker looks at a task more often while it is young)."""
    caplog.set_level(logging.INFO, logger="eni_async")
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=3000.0), credential_refresh_margin=120.0)
    async with world(
        settings=settings, enis=4, task_latency=(900.0, 0.2), credential_lifetime=600.0, rate_limits=None
    ) as w:
        endpoint_env = {"ENI_ASYNC_METADATA_ENDPOINT": w.endpoint}
        provider = await credential_chain(
            environ=endpoint_env, clock=w.clock, profile_files=(), settings=settings
        )
        w.client.credentials = provider
        items = w.items()
        start = w.clock.time()
        outcomes = [o async for o in w.client.unassign_many(items, concurrency=2)]
        elapsed = w.clock.time() - start
        issued = w.sim.metadata.issued
    assert all(o.status == "succeeded" for o in outcomes), [o.to_json() for o in outcomes]
    assert elapsed > 1500  # several lifetimes passed
    assert issued >= elapsed // 600
    assert "signing again" not in caplog.text  # renewed ahead of time: no call was refused


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_token_expired_mid_batch_is_resigned_without_a_failed_item(
    dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With a client clock behind the server's, tokens expire before renewal; each refused call is signed again.
    The first token expires (at 300 s) in the second of two rounds of 200 s tasks."""
    caplog.set_level(logging.INFO, logger="eni_async")
    settings = Settings(dialect=dialect, poll=PollPolicy(timeout=3000.0), credential_refresh_margin=0.0)
    async with world(
        settings=settings, enis=4, task_latency=(200.0, 0.2), credential_lifetime=300.0, rate_limits=None
    ) as w:
        provider = await credential_chain(
            environ={"ENI_ASYNC_METADATA_ENDPOINT": w.endpoint},
            clock=LaggingClock(w.clock, lag=200.0),
            profile_files=(),
            settings=settings,
        )
        w.client.credentials = provider
        outcomes = [o async for o in w.client.unassign_many(w.items(), concurrency=2)]
    assert all(o.status == "succeeded" for o in outcomes), [o.to_json() for o in outcomes]
    resigned = [r for r in caplog.records if "signing again with fresh credentials" in r.getMessage()]
    assert resigned, "no call was refused for its token: the test did not exercise expiry"
    assert all(o.error is None for o in outcomes)
