"""Outages on demand, for drills: the API down for a span of simulated time, and keys refused until changed.

``Outage.start(kind, seconds)`` makes every API call (both dialects; the metadata service, STS and the login
service stay up) fail with ``kind`` until the simulator's clock has moved ``seconds`` on, so that on a fake
clock a five-minute outage takes milliseconds:

- ``unreachable``: ``running`` closes the listening socket (new connections are refused) and reopens it on
  the same port at the end; a request on a connection still open is dropped unanswered (the call had no
  effect, the client cannot know that);
- ``http_503``: a gateway's 503 page; ``internal_error``: an ``InternalError`` envelope; ``throttle``: a
  ``RequestLimitExceeded`` answer (each before any effect).

``refuse(secret_id)`` answers every call signed with that SecretId as an unknown key
(``AuthFailure.SecretIdNotFound``, API 2.0 4104) until ``accept(secret_id)``. ``POST /_sim/outage`` takes the
same controls as JSON: ``{"kind": "unreachable", "seconds": 30}``, ``{"refuse": [...]}``, ``{"accept": [...]}``.
Bad values are a ``ConfigError`` naming the field. Nothing here performs I/O or sleeps.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from eni_async.clock import Clock
from eni_async.errors import ConfigError

OUTAGE_KINDS = ("unreachable", "http_503", "internal_error", "throttle")
UNREACHABLE = "unreachable"


class Outage:
    """The simulator's outage switch and its refused keys (see the module docstring)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.kind: str | None = None
        self.until = 0.0
        self.refused: set[str] = set()
        self.struck: Counter[str] = Counter()  # calls each kind failed
        # One event per ``running`` server following the outages (each made in its server's event loop).
        self.followers: set[asyncio.Event] = set()

    def __repr__(self) -> str:
        return f"Outage(kind={self.active()!r}, refused={len(self.refused)})"

    def start(self, kind: str, seconds: float) -> None:
        """Fail every API call with ``kind`` for ``seconds`` of the simulator's time, from now."""
        if kind not in OUTAGE_KINDS:
            raise ConfigError("kind", kind, f"must be one of {', '.join(OUTAGE_KINDS)}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ConfigError("seconds", seconds, "must be a finite number of seconds")
        if seconds < 0:
            raise ConfigError("seconds", seconds, "must be 0 or more")
        self.kind = kind
        self.until = self.clock.monotonic() + float(seconds)
        for started in self.followers:
            started.set()

    def end(self) -> None:
        """End the outage now."""
        self.until = self.clock.monotonic()

    def active(self) -> str | None:
        """The kind of the outage under way, if one is."""
        if self.kind is not None and self.clock.monotonic() < self.until:
            return self.kind
        return None

    def strike(self) -> str | None:
        """The kind failing this call, counted, if an outage is under way."""
        kind = self.active()
        if kind is not None:
            self.struck[kind] += 1
        return kind

    def refuse(self, secret_ids: Iterable[str]) -> None:
        """Refuse calls signed with these SecretIds until they are accepted again."""
        self.refused.update(_ids("refuse", secret_ids))

    def accept(self, secret_ids: Iterable[str]) -> None:
        """Accept these SecretIds again."""
        self.refused.difference_update(_ids("accept", secret_ids))

    def control(self, body: object) -> dict[str, Any]:
        """Apply a ``POST /_sim/outage`` body; return the state after it."""
        if not isinstance(body, Mapping) or not body:
            raise ConfigError(
                "body", body, 'must be an object: {"kind", "seconds"}, {"refuse"} or {"accept"}'
            )
        unknown = set(body) - {"kind", "seconds", "refuse", "accept"}
        if unknown:
            raise ConfigError(sorted(unknown)[0], body[sorted(unknown)[0]], "unknown field")
        if "kind" in body or "seconds" in body:
            self.start(body.get("kind", ""), body.get("seconds", ""))
        if "refuse" in body:
            self.refuse(body["refuse"])
        if "accept" in body:
            self.accept(body["accept"])
        return self.state()

    def state(self) -> dict[str, Any]:
        """What is down, for how long yet, which keys are refused, and how many calls each kind failed."""
        kind = self.active()
        return {
            "kind": kind,
            "seconds_left": round(max(0.0, self.until - self.clock.monotonic()), 3) if kind else 0.0,
            "refused": sorted(self.refused),
            "struck": dict(self.struck),
        }


def _ids(field: str, secret_ids: object) -> list[str]:
    if isinstance(secret_ids, str) or not isinstance(secret_ids, Iterable):
        raise ConfigError(field, secret_ids, "must be a list of SecretIds")
    found = list(secret_ids)
    if not all(isinstance(one, str) and one for one in found):
        raise ConfigError(field, found, "must be a list of SecretIds")
    return found


__all__ = ["OUTAGE_KINDS", "Outage"]
