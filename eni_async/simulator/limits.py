"""Per-account per-action rate limits and API 2.0 nonce replay protection, both on the injected clock.

Rate limits count requests per action, region and sub-account (docs/protocol.md D21; a SecretId is its own
sub-account unless ``accounts`` says which one it belongs to; ``account_of`` may decide instead, as the app's
key ring does, so that a role's temporary keys count as the role) in fixed one-second windows of
``clock.monotonic()`` (D8): the
request that makes the count exceed the limit, and every later one in that second, is refused with Tencent's
message (D6) and has no effect. The replay guard remembers each (SecretId, Nonce) for the replay window (D15)
and forgets it afterwards, in O(1) amortised per request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from eni_async.clock import Clock
from eni_async.simulator.rejects import Reason, Reject

DEFAULT_RATE_LIMITS: Mapping[str, int] = {
    "UnassignPrivateIpAddresses": 100,
    "AssignPrivateIpAddresses": 100,
    "DescribeNetworkInterfaces": 100,
    "DescribeVpcTaskResult": 20,
}
REPLAY_WINDOW = 300.0


# Tencent's throttle texts in the three forms it sends, from which a client may read the limit (D6, D18):
# plain, the numbers in backticks, and Chinese. Written out here, not shared with the client, so a client
# that cannot read one of them fails its tests.
THROTTLE_MESSAGES: Mapping[str, str] = {
    "plain": "request times equals to {count} in a second, which exceeds the frequency limit {limit}",
    "backticks": (
        "request times equals to `{count}` in a second, which exceeds the frequency limit `{limit}` for a second"
    ),
    "chinese": "您当前每秒请求 `{count}` 次，超过了每秒频率上限 `{limit}`，请稍后重试",
}


def throttle_message(count: int, limit: int, form: str = "plain") -> str:
    """Tencent's throttle text in ``form`` (one of ``THROTTLE_MESSAGES``)."""
    return THROTTLE_MESSAGES[form].format(count=count, limit=limit)


class RateLimiter:
    """Fixed one-second windows per (sub-account, region, action). A limit of 0 or None means unlimited.

    The windows are seconds of the limiter's own clock: the simulator's, ``skew`` seconds ahead and running
    ``drift`` faster (as a server's clock and a client's disagree)."""

    def __init__(
        self,
        clock: Clock,
        limits: Mapping[str, int | None] | None,
        *,
        accounts: Mapping[str, str] | None = None,
        account_of: Callable[[str], str] | None = None,
        region: str = "",
        skew: float = 0.0,
        drift: float = 0.0,
    ) -> None:
        self._clock = clock
        self._skew = skew
        self._rate = 1.0 + drift
        self._limits = {action: n for action, n in (limits or {}).items() if n}
        known = dict(accounts or {})
        self._account_of = account_of or (lambda secret_id: known.get(secret_id, secret_id))
        self._region = region
        self._windows: dict[tuple[str, str, str], list[int]] = {}

    def limit(self, action: str) -> int | None:
        """The configured per-second limit for ``action``, or None when unlimited."""
        return self._limits.get(action)

    # The form of the throttle message (a key of THROTTLE_MESSAGES); the app sets it from the fault profile.
    message_form: str = "plain"

    def check(self, secret_id: str, action: str) -> None:
        """Count one request; refuse it as THROTTLED if it exceeds the action's limit this second."""
        limit = self._limits.get(action)
        if limit is None:
            return
        second = int(self._clock.monotonic() * self._rate + self._skew)
        key = (self._account_of(secret_id), self._region, action)
        window = self._windows.get(key)
        if window is None or window[0] != second:
            self._windows[key] = [second, 1]
            count = 1
        else:
            window[1] += 1
            count = window[1]
        if count > limit:
            raise Reject(Reason.THROTTLED, throttle_message(count, limit, self.message_form))


class ReplayGuard:
    """Checks the timestamp window and remembers nonces for ``window`` seconds."""

    def __init__(self, clock: Clock, window: float = REPLAY_WINDOW) -> None:
        self._clock = clock
        self._window = window
        self._seen: set[tuple[str, str]] = set()
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def check_timestamp(self, timestamp: int, reason: Reason = Reason.EXPIRED) -> None:
        """Refuse a timestamp more than the window away from the simulator's wall clock."""
        skew = abs(self._clock.time() - timestamp)
        if skew > self._window:
            raise Reject(
                reason,
                f"timestamp {timestamp} is {skew:.0f}s away from server time (limit {self._window:.0f}s)",
            )

    def check_nonce(self, secret_id: str, nonce: str) -> None:
        """Refuse a nonce this SecretId already used within the window; otherwise remember it."""
        now = self._clock.monotonic()
        order = self._order
        while order and order[0][0] <= now:
            self._seen.discard(order.popleft()[1])
        key = (secret_id, nonce)
        if key in self._seen:
            raise Reject(Reason.NONCE_REUSED, f"nonce {nonce} was already used")
        self._seen.add(key)
        order.append((now + self._window, key))
