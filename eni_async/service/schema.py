"""What callers may send: request bodies, query parameters and headers, checked into plain values.

Pure functions, no I/O: each takes what arrived and returns checked values or raises ``BadRequest`` naming
the field (``releases[3].ips``, ``wait``, ``Idempotency-Key``) and the problem. Bodies are UTF-8 JSON objects
with exactly the documented keys; ids and IPs go through the same checks as every other entry point
(``eni_async.validation``). The body hash that idempotency compares is taken over the checked, normalised
requests, so whitespace and key order do not make two bodies differ.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eni_async import validation
from eni_async.errors import InputError

# Largest batch form and largest IP list of one release: beyond these a body is refused, not queued.
MAX_RELEASES_PER_REQUEST = 1000
MAX_IPS_PER_RELEASE = 1000
MAX_WAIT_S = 60.0
DEFAULT_PAGE, MAX_PAGE = 100, 1000
RELEASE_KEYS = ("vpc_id", "eni_id", "ips")
IDEMPOTENCY_KEY_MAX = 255

Request = tuple[str, str, tuple[str, ...]]


class BadRequest(Exception):
    """A caller's mistake: answered 400 with ``field`` and ``message``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ReleaseBody:
    """A checked ``POST /v1/releases`` body: its requests, whether it was the batch form, and its hash."""

    requests: list[Request]
    batch: bool
    body_hash: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """UTF-8 JSON text -> value; NaN and Infinity are refused, as JSON has no such numbers."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body", f"not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("body", "empty; expected a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest("body", "JSON nested too deeply") from None
    except ValueError as exc:
        raise BadRequest("body", f"malformed JSON ({exc})") from None


def release_body(raw: bytes) -> ReleaseBody:
    """Check a release body: one release ``{vpc_id, eni_id, ips}`` or ``{"releases": [...]}``."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("body", f"expected a JSON object, got {_kind(data)}")
    if "releases" in data:
        _only(data, ("releases",), "")
        entries = data["releases"]
        if not isinstance(entries, list):
            raise BadRequest("releases", f"expected a list of releases, got {_kind(entries)}")
        if not entries:
            raise BadRequest("releases", "at least one release is required")
        if len(entries) > MAX_RELEASES_PER_REQUEST:
            raise BadRequest(
                "releases", f"{len(entries)} releases; at most {MAX_RELEASES_PER_REQUEST} per request"
            )
        requests = [_release(entry, f"releases[{i}].") for i, entry in enumerate(entries)]
        return ReleaseBody(requests, True, _hash(requests, batch=True))
    requests = [_release(data, "")]
    return ReleaseBody(requests, False, _hash(requests, batch=False))


def _release(entry: object, prefix: str) -> Request:
    if not isinstance(entry, dict):
        raise BadRequest(prefix.rstrip(".") or "body", f"expected a JSON object, got {_kind(entry)}")
    _only(entry, RELEASE_KEYS, prefix)
    for key in RELEASE_KEYS:
        if key not in entry:
            raise BadRequest(f"{prefix}{key}", "required")
    ips = entry["ips"]
    if not isinstance(ips, list):
        raise BadRequest(f"{prefix}ips", f"expected a list of IPv4 addresses, got {_kind(ips)}")
    if len(ips) > MAX_IPS_PER_RELEASE:
        raise BadRequest(f"{prefix}ips", f"{len(ips)} IPs; at most {MAX_IPS_PER_RELEASE} per release")
    try:
        vpc = validation.vpc_id(entry["vpc_id"], f"{prefix}vpc_id")
        eni = validation.eni_id(entry["eni_id"], f"{prefix}eni_id")
        for i, ip in enumerate(ips):
            validation.ipv4(ip, f"{prefix}ips[{i}]")
        checked = validation.ip_list(ips, f"{prefix}ips")
    except InputError as exc:
        raise BadRequest(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None
    return vpc, eni, checked


def _only(data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in data:
        if key not in allowed:
            raise BadRequest(f"{prefix}{key}", f"unknown field (expected {', '.join(allowed)})")


def _kind(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _hash(requests: list[Request], *, batch: bool) -> str:
    canonical = json.dumps({"batch": batch, "releases": [[v, e, list(i)] for v, e, i in requests]})
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, or absent."""
    if value is None:
        return None
    if not 1 <= len(value) <= IDEMPOTENCY_KEY_MAX or not all(33 <= ord(c) <= 126 for c in value):
        raise BadRequest("Idempotency-Key", f"expected 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters")
    return value


def only_params(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse query parameters other than ``allowed``."""
    for key in query:
        if key not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise BadRequest(key, f"unknown query parameter (expected {expected})")


def wait_seconds(value: str | None) -> float:
    """``?wait=SECONDS``: a number from 0 to 60 (0 when absent)."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest("wait", f"expected seconds from 0 to {MAX_WAIT_S:g}, got {value[:40]!r}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WAIT_S:
        raise BadRequest("wait", f"expected seconds from 0 to {MAX_WAIT_S:g}, got {value[:40]!r}")
    return seconds


def page_limit(value: str | None) -> int:
    """``?limit=N``: 1 to 1000 (100 when absent)."""
    if value is None:
        return DEFAULT_PAGE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest("limit", f"expected a whole number from 1 to {MAX_PAGE}, got {value[:40]!r}")
    return int(value)


def cursor(value: str | None) -> int | None:
    """``?cursor=``: the ``next_cursor`` of an earlier page."""
    if value is None:
        return None
    if not value.startswith("c") or not (value[1:].isascii() and value[1:].isdigit()) or len(value) > 20:
        raise BadRequest("cursor", "not a cursor this service gave (use next_cursor of the previous page)")
    return int(value[1:])


def make_cursor(before: int | None) -> str | None:
    """The cursor for the page after one that ended at ``before``."""
    return None if before is None else f"c{before}"


def status_filter(value: str | None, statuses: tuple[str, ...]) -> str | None:
    """``?status=``: one of the release statuses, or absent."""
    if value is None:
        return None
    if value not in statuses:
        raise BadRequest("status", f"expected one of {', '.join(statuses)}, got {value[:40]!r}")
    return value


__all__ = [
    "MAX_IPS_PER_RELEASE",
    "MAX_RELEASES_PER_REQUEST",
    "MAX_WAIT_S",
    "BadRequest",
    "ReleaseBody",
    "cursor",
    "idempotency_key",
    "make_cursor",
    "only_params",
    "page_limit",
    "parse_json",
    "release_body",
    "status_filter",
    "wait_seconds",
]
