"""Rate budgets shared by many processes through Redis: one account's quota, however many replicas spend it.

With ``shared_quota = "redis://HOST:PORT/DB"`` every per-action budget of a client reserves its send times
in one Redis list per quota, by one server-side Lua script, so a reservation is atomic
whatever the number of processes and machines. The script reads the server's ``TIME`` (the clients' clocks
do not matter) and keeps ``throttle.RateBudget``'s rules: at most ``rate`` sends in any ``WINDOW``, spread
evenly (one slot every ``WINDOW / rate``, which also keeps a tenth of the rate in any tenth), the same AIMD
decrease on sustained throttles (``throttle.STRAY_LIMIT`` and ``SHARE``, counted over every process's
reports; applied once per window, seen by all; a stated limit caps at once) and the same recovery.
Slots are handed out first come, first served, one time per slot, and a process holds at most one
outstanding reservation per action, so busy processes take turns (fair shares) and an idle one costs
nothing. If Redis is lost mid-run, each budget falls back to a local ``RateBudget`` of ``rate / processes``
(the processes that used the action in the last ``HORIZON`` seconds; below one call per window each, one
call per proportionally longer window), starting one window after the last slot Redis may have granted,
logs one WARNING, tries Redis again every ``PROBE_INTERVAL`` seconds (the ``shared_quota_probe`` setting)
and goes back to it when it answers, still gated by the local share until the other processes must be back
too. A Redis
failure never fails a call: it only changes where the slot comes from. Why a script of our own, over
``redis-py``'s asyncio client (the reference client, kept by Redis; ``hiredis`` speeds it up when
installed): ``limits``, the well-kept limiter with Redis storage, answers only "allowed now or not" for a
fixed or moving window, so waiting processes would poll and race (unfair, and bursty at window edges) and
it has no shared adaptive rate; ``aiolimiter`` is in-process only. Nothing imports this module (nor
``redis``) unless ``shared_quota`` is set. The Redis password (from the URL or ``ENI_ASYNC_REDIS_PASSWORD``)
never appears in a log line, an error or a repr.

A quota is keyed as Tencent counts (docs/protocol.md D21, D29): by action, by sub-account and by access
region. The sub-account is ``quota_key`` when set, else what STS ``GetCallerIdentity`` names (the client
passes a coroutine that asks it, once per credential source, resolved by ``open``), so every key and every
renewal of one sub-account share one quota. The access region is the region in the endpoint's host
(``vpc.ap-guangzhou.tencentcloudapi.com``): ``access_region``; on the nearest-region host
(``vpc.tencentcloudapi.com``), API 2.0's and any other, the product region (``X-TC-Region``) stands in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from eni_async.clock import Clock
from eni_async.errors import ConfigError
from eni_async.settings_check import mask_url
from eni_async.throttle import DECREASE, RECOVERY, SHARE, STRAY_LIMIT, WINDOW, RateBudget

log = logging.getLogger("eni_async.shared_quota")

PASSWORD_ENV = "ENI_ASYNC_REDIS_PASSWORD"
# A process counts towards the fallback share while it has used the action within this many seconds.
HORIZON = 60.0
# Keys vanish after this long unused, so a forgotten quota costs Redis nothing.
TTL = 120.0
# While Redis is lost, try it again at most this often.
PROBE_INTERVAL = 2.0
# Redis on a LAN answers in milliseconds; a budget that waited longer would stall every call behind it.
SOCKET_TIMEOUT = 1.0

_MICRO = 1_000_000

# KEYS: the reservation list, the adaptive-rate hash, the members sorted set, the recent throttles (one hash
# slot: see key()).
# ARGV: configured rate, window (µs), member id, now (µs; '' = the server's TIME), throttle reports since
# the last call, stated limit (0 = none), decrease, recovery, TTL (ms), horizon (µs), the throttles in one
# window and their share of its calls that make them sustained (and cut the rate).
# Returns {delay until the reserved send time (µs), the current rate, the active processes}.
# Times are whole microseconds: exact in a double, unlike fractional seconds since 1970.
RESERVE = """
local configured, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local throttles, stated = tonumber(ARGV[5]), tonumber(ARGV[6])
local decrease, recovery, ttl, horizon = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], tonumber(ARGV[10])
local stray_limit, share = tonumber(ARGV[11]), tonumber(ARGV[12])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local st = redis.call('HMGET', KEYS[2], 'rate', 'ceiling', 'last_change', 'last_decrease')
local ceiling = math.min(tonumber(st[2]) or configured, configured)
local rate = math.min(tonumber(st[1]) or configured, ceiling)
local last_change = tonumber(st[3]) or now
local last_decrease = tonumber(st[4]) or (now - 2 * window)
if throttles > 0 then
  if stated >= 1 then
    ceiling = math.min(configured, stated)
    if rate > ceiling then  -- down to the stated limit at once: that is this window's cut
      rate, last_decrease, last_change = ceiling, now, now
    end
  end
  for _ = 1, throttles do redis.call('RPUSH', KEYS[4], string.format('%d', now)) end
  while tonumber(redis.call('LINDEX', KEYS[4], 0) or now) <= now - window do redis.call('LPOP', KEYS[4]) end
  local calls = 0
  for _, sent in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    if tonumber(sent) > now - window then calls = calls + 1 end
  end
  local sustained = redis.call('LLEN', KEYS[4]) >= math.max(stray_limit, share * calls)
  if not sustained or now - last_decrease < window then
    rate = math.min(rate, ceiling)
  else
    last_decrease = now
    rate = math.max(1, math.min(ceiling, math.floor(rate * decrease)))
    last_change = now
  end
end
if rate < ceiling then
  local periods = math.floor((now - last_change) / window)
  if periods > 0 then
    rate = math.min(ceiling, rate + periods * math.max(1, math.floor(configured * recovery)))
    last_change = last_change + periods * window
  end
else
  last_change = now
end
local n = redis.call('LLEN', KEYS[1])
local at = now
if n > 0 then at = math.max(at, tonumber(redis.call('LINDEX', KEYS[1], -1)) + math.floor(window / rate)) end
if n >= rate then at = math.max(at, tonumber(redis.call('LINDEX', KEYS[1], -rate)) + window) end
redis.call('RPUSH', KEYS[1], string.format('%d', at))
redis.call('LTRIM', KEYS[1], -configured, -1)
redis.call('HSET', KEYS[2], 'rate', rate, 'ceiling', ceiling,
  'last_change', string.format('%d', last_change), 'last_decrease', string.format('%d', last_decrease))
redis.call('ZADD', KEYS[3], now, member)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - horizon)
local active = redis.call('ZCARD', KEYS[3])
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
return {string.format('%d', at - now), rate, active}
"""


# ``<service>.<region>.tencentcloudapi.com`` (and its international twin) reaches that region's API servers.
REGIONAL_HOST = re.compile(
    r"[a-z0-9-]+\.(?P<region>[a-z]{2,}-[a-z0-9]+(?:-[a-z0-9]+)*)\.(?:intl\.)?tencentcloudapi\.com"
)
Account = str | Callable[[], Awaitable[str]]


def access_region(endpoint: str, region: str) -> str:
    """The region whose API servers ``endpoint`` reaches: the one its host names, else ``region`` (the
    nearest-region host routes by the caller's location, which a client cannot see: the product region stands
    in, so processes of one region share a quota and processes of two regions never do)."""
    host = urlsplit(endpoint).hostname or ""
    found = REGIONAL_HOST.fullmatch(host)
    return found["region"] if found else region


class RedisQuota:
    """One connection to the Redis that holds the quotas, and whether it is reachable just now.

    ``server_time=False`` sends ``clock.time()`` instead of reading the server's ``TIME``: a seam for tests
    on a ``FakeClock`` only, since then every process's clock must agree. ``probe``: seconds between tries
    while Redis is lost (the ``shared_quota_probe`` setting).
    """

    def __init__(
        self, url: str, clock: Clock, *, server_time: bool = True, probe: float = PROBE_INTERVAL
    ) -> None:
        self.url = url
        self.probe = probe
        self.masked = mask_url(url)
        self._clock = clock
        self._server_time = server_time
        self._redis: aioredis.Redis | None = None
        self._script: Any = None
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = False
        self.opened = False
        self._next_probe = 0.0

    def __repr__(self) -> str:
        return f"RedisQuota({self.masked!r}, lost={self.lost})"

    def _connect(self) -> aioredis.Redis:
        if self._redis is None:
            options: dict[str, Any] = {
                "socket_timeout": SOCKET_TIMEOUT,
                "socket_connect_timeout": SOCKET_TIMEOUT,
                # One immediate retry, on a fresh connection after a server restart; past that our own
                # fallback is the retry (redis-py's default backs off for seconds per call).
                "retry": Retry(NoBackoff(), 1),
            }
            if urlsplit(self.url).password is None and os.environ.get(PASSWORD_ENV):
                options["password"] = os.environ[PASSWORD_ENV]
            self._redis = aioredis.Redis.from_url(self.url, **options)
            self._script = self._redis.register_script(RESERVE)
        return self._redis

    async def open(self) -> None:
        """Check that Redis answers and load the script; unreachable is a ``ConfigError`` naming the URL."""
        client = self._connect()
        try:
            await client.script_load(RESERVE)
        except (RedisError, OSError) as exc:
            await self.close()
            raise ConfigError(
                "shared_quota", self.masked, f"cannot use Redis: {self._describe(exc)}"
            ) from None
        self.opened = True

    async def close(self) -> None:
        """Close the connections."""
        if self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in (urlsplit(self.url).password, os.environ.get(PASSWORD_ENV)):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def reserve(
        self, keys: list[str], configured: int, throttles: int, stated: int | None
    ) -> tuple[float, int, int] | None:
        """Reserve one send: (seconds to wait, current rate, active processes), or None while Redis is lost."""
        if not self.opened:  # a client used without ``async with``: the first call is the start
            await self.open()
        now = self._clock.monotonic()
        if self.lost:
            if now < self._next_probe:
                return None
            self._next_probe = now + self.probe  # one probe at a time, whichever budget makes it
        self._connect()
        args = [
            configured, int(WINDOW * _MICRO), self.member,
            "" if self._server_time else str(int(self._clock.time() * _MICRO)),
            throttles, stated or 0, DECREASE, RECOVERY, int(TTL * 1000), int(HORIZON * _MICRO),
            STRAY_LIMIT, SHARE,
        ]  # fmt: skip
        try:
            delay, rate, active = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if not self.lost:
                self.lost = True
                log.warning(
                    "shared quota at %s lost (%s); each budget falls back to its local share of the rate "
                    "until Redis answers again", self.masked, self._describe(exc),
                    extra={"shared_quota": self.masked},
                )  # fmt: skip
            self._next_probe = now + self.probe
            return None
        if self.lost:
            self.lost = False
            log.warning("shared quota at %s is back", self.masked, extra={"shared_quota": self.masked})
        return int(delay) / _MICRO, int(rate), int(active)


class SharedBudget:
    """One action's budget in Redis, with ``RateBudget``'s interface (``acquire``, ``on_throttled``, ``rate``)."""

    def __init__(
        self,
        quota: RedisQuota,
        keys: list[str],
        rate: int,
        clock: Clock,
        *,
        name: str = "",
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be at least 1, not {rate}")
        self._quota = quota
        self._keys = keys
        self._ready = (
            ready  # names the keys when the sub-account is still to be asked (``SharedBudgets.open``)
        )
        self._clock = clock
        self.name = name
        self.configured = rate
        self.ceiling = rate
        self._rate = rate
        self.active = 1
        self.throttles = 0
        self._reported = 0
        self._stated: int | None = None
        self._local: RateBudget | None = None
        self._gate: RateBudget | None = None
        self._local_until = float("-inf")
        self._local_from = float("-inf")
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SharedBudget({self.name!r}, rate={self._rate}/{WINDOW}s, {self._quota.masked})"

    @property
    def rate(self) -> float:
        """The current rate per window, shared by every process (the local share while Redis is lost)."""
        return self._local.rate if self._local is not None else self._rate

    @property
    def local(self) -> bool:
        """Whether the budget is spending its local share (Redis lost)."""
        return self._local is not None

    async def acquire(self) -> None:
        """Wait for this process's next slot: reserved in Redis, or from the local share while Redis is lost.

        The process's calls reserve one at a time, so each process holds at most one reservation ahead.
        """
        async with self._lock:
            await self._take()

    async def acquire_retry(self) -> None:
        """Take a slot for the retry of a refused call without queueing behind this process's other calls."""
        await self._take()

    async def _take(self) -> None:
        delay = await self.reserve()
        if delay is None:
            local = self._fallback()
            wait = self._local_from - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            await local.acquire()
            return
        if delay > 0:
            await self._clock.sleep(delay)
        if self._gate is not None and self._clock.monotonic() < self._local_until:
            await self._gate.acquire()

    async def reserve(self) -> float | None:
        """Reserve the next slot in Redis and return the seconds until it (None: Redis is lost just now).

        Throttle answers reported since the last reservation go with it, so every process slows at once.
        """
        if not self._keys and self._ready is not None:
            await self._ready()
        reported = self.throttles - self._reported
        self._reported += reported  # before the await: a concurrent retry must not report them again
        answer = await self._quota.reserve(self._keys, self.configured, reported, self._stated)
        if answer is None:
            self._reported -= reported
            return None
        delay, self._rate, self.active = answer
        if self._local is not None:
            # Back from a fallback: Redis knows nothing of the local sends of the last window, nor of the
            # other processes' until they too are back (their next probe), so the local budget keeps gating.
            self._local_until = self._clock.monotonic() + self._quota.probe + WINDOW
            self._gate, self._local = self._local, None
        return delay

    def _fallback(self) -> RateBudget:
        if self._local is None:
            processes = max(1, self.active)
            # Slots Redis granted stay good for a window, and the other processes may hold one each still
            # ahead: the local share starts after both, so the window that straddles the loss is not spent
            # twice.
            self._local_from = self._clock.monotonic() + processes * WINDOW / self._rate + WINDOW
            share = self._rate // processes
            if share >= 1:
                self._local = RateBudget(share, self._clock, period=WINDOW, name=self.name)
            else:  # fewer than one call per window each: one call per longer window
                self._local = RateBudget(
                    1, self._clock, period=WINDOW * processes / self._rate, name=self.name
                )
            self._gate = self._local
        return self._local

    def observe(self, seconds: float) -> None:
        """Answer times do not move the shared window: every process must count the same one."""

    def on_throttled(self, stated_limit: int | None = None) -> None:
        """Report a throttle answer: sent with the next reservation, it slows every process sharing the quota."""
        self.throttles += 1
        if stated_limit is not None and stated_limit >= 1:
            self._stated = stated_limit
            self.ceiling = min(self.configured, stated_limit)
        if self._local is not None:
            self._local.on_throttled(stated_limit)
        else:  # the script decides any cut; the next reservation brings the rate back
            self._rate = min(self._rate, self.ceiling)


class SharedBudgets:
    """One ``SharedBudget`` per action, all in one Redis; ``open`` before use, ``close`` at the end.

    ``account`` is the sub-account's name, or a coroutine function that finds it (asked once, by ``open``).
    """

    def __init__(
        self,
        rates: Mapping[str, float],
        clock: Clock,
        *,
        url: str,
        account: Account,
        region: str,
        server_time: bool = True,
        probe: float = PROBE_INTERVAL,
    ) -> None:
        self.quota = RedisQuota(url, clock, server_time=server_time, probe=probe)
        self.region = region
        self.account: str | None = account if isinstance(account, str) else None
        self._find_account = None if isinstance(account, str) else account
        self._opening = asyncio.Lock()
        # The shared window counts whole sends: a fractional rate is rounded down, never up.
        for action, rate in rates.items():
            if rate < 1:
                raise ConfigError(
                    "rate_limits", rate, f"{action} must be at least 1 per second with shared_quota"
                )
        self._budgets = {
            action: SharedBudget(
                self.quota, self._keys(action), int(rate), clock, name=action, ready=self.open
            )
            for action, rate in rates.items()
        }

    def _keys(self, action: str) -> list[str]:
        return key(self.account, self.region, action) if self.account is not None else []

    def __getitem__(self, action: str) -> SharedBudget:
        return self._budgets[action]

    def __repr__(self) -> str:
        rates = ", ".join(f"{a}={b.rate}/s" for a, b in self._budgets.items())
        return f"SharedBudgets({self.quota.masked}, {rates})"

    async def open(self) -> None:
        """Find the sub-account if it is still to be asked, and check that Redis answers (a ``ConfigError``
        naming the URL when it does not)."""
        async with self._opening:
            if not self.quota.opened:  # first: an unusable Redis is a configuration error, asked nothing
                await self.quota.open()
            if self.account is None and self._find_account is not None:
                try:
                    self.account = await self._find_account()
                except BaseException:
                    await self.quota.close()
                    raise
                log.info(
                    "shared quota of sub-account %s in %s", self.account, self.region,
                    extra={"quota_account": self.account, "access_region": self.region},
                )  # fmt: skip
                for action, budget in self._budgets.items():
                    budget._keys = self._keys(action)

    async def close(self) -> None:
        """Close the connections to Redis."""
        await self.quota.close()


def key(account: str, region: str, action: str) -> list[str]:
    """The keys of one quota, under one hash tag (``{...}``): one slot, should a cluster ever hold them."""
    tag = f"eni_async:{{{account}:{region}:{action}}}"
    return [f"{tag}:sends", f"{tag}:rate", f"{tag}:members", f"{tag}:throttles"]
