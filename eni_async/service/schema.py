"""What callers may send: request bodies, query parameters and headers, checked into plain values.

Pure functions, no I/O: each takes what arrived and returns checked values or raises ``BadRequest`` naming
the field (``releases[3].ips``, ``wait``, ``Idempotency-Key``) and the rule broken, never the value sent (a
caller's bytes may hold a secret; a field name the caller made up is shown only when it is a short plain
word). Bodies are UTF-8 JSON objects with exactly the documented keys, each once; query parameters are the
documented ones, each once; ids and IPs go through the same checks as every other entry point
(``eni_async.validation``). The ``*_PATTERN`` constants state these rules for the OpenAPI document. The body
hash that idempotency compares is taken over the checked, normalised requests, so whitespace and key order
do not make two bodies differ.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from eni_async import validation
from eni_async.errors import InputError

# Largest batch form and largest IP list of one release: beyond these a body is refused, not queued.
MAX_RELEASES_PER_REQUEST = 1000
MAX_IPS_PER_RELEASE = 1000
MAX_WAIT_S = 60.0
DEFAULT_PAGE, MAX_PAGE = 100, 1000
RELEASE_KEYS = ("vpc_id", "eni_id", "ips")
IDEMPOTENCY_KEY_MAX = 255
# The rules as the OpenAPI document states them (ECMA-262 patterns; the checks below are the same rules).
VPC_PATTERN = f"^{validation.VPC_ID.pattern}$"
ENI_PATTERN = f"^{validation.ENI_ID.pattern}$"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
IDEMPOTENCY_KEY_PATTERN = f"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX}}}$"
# A cursor is ``c`` and a release's sequence number (at most 18 digits, far below SQLite's 2**63), or empty
# for the first page.
CURSOR_PATTERN = "^(c[0-9]{1,18})?$"
_CURSOR = re.compile("c[0-9]{1,18}")
# A JSON number as text (what a caller's ?wait= may be): no Python spellings like "1_0", "inf" or " 5".
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# An RFC 3339 date-time (section 5.6: "T" and "Z" in either case, fractions of a second, a leap second 60,
# an offset), as OpenAPI's ``format: date-time`` means it; the day is then checked against the calendar.
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"([Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
# A name a caller made up (an unknown key) is shown back only when it is a short plain word.
_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

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


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers the first key it was given twice (``None``: none was)."""

    repeated: str | None = None


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    found = _Object()
    for key, value in pairs:
        if key in found and found.repeated is None:
            found.repeated = key
        found[key] = value
    return found


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """UTF-8 JSON text -> value; NaN and Infinity are refused, as JSON has no such numbers. Objects come
    back as dicts that remember a repeated key (see ``_only``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body", f"not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("body", "empty; expected a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
    except RecursionError:
        raise BadRequest("body", "JSON nested too deeply") from None
    except ValueError as exc:
        # json's message names a line, a column and a character offset, never the text itself
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
        raise BadRequest(exc.field, exc.reason) from None  # the reason only: the value is the caller's
    return vpc, eni, checked


def _only(data: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    """Refuse a key given twice (JSON parsers differ on which one wins) and keys not in ``allowed``."""
    repeated = getattr(data, "repeated", None)
    if repeated is not None:
        raise BadRequest(_shown(prefix, repeated), "given more than once in one object")
    for key in data:
        if key not in allowed:
            raise BadRequest(_shown(prefix, key), f"unknown field (expected {', '.join(allowed)})")


def _shown(prefix: str, name: str) -> str:
    """The field to name for a key the caller sent: itself when plain, else where it was."""
    return f"{prefix}{name}" if _PLAIN.fullmatch(name) else (prefix.rstrip(".") or "body")


def _kind(value: object) -> str:
    kinds = (
        (dict, "an object"),
        (list, "a list"),
        (str, "a string"),
        (bool, "a boolean"),
        (type(None), "null"),
    )
    return next((name for kind, name in kinds if isinstance(value, kind)), "a number")


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


def only_params(query: MultiMapping[str], allowed: tuple[str, ...]) -> None:
    """Refuse query parameters other than ``allowed``, and any given more than once."""
    for key in query:
        if key not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise BadRequest(_shown("", key), f"unknown query parameter (expected {expected})")
        if len(query.getall(key)) > 1:
            raise BadRequest(key, "given more than once")


def wait_seconds(value: str | None) -> float:
    """``?wait=SECONDS``: a number from 0 to 60 (0 when absent)."""
    if value is None:
        return 0.0
    seconds = float(value) if _NUMBER.fullmatch(value) else math.nan
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WAIT_S:
        raise BadRequest("wait", f"expected a number of seconds from 0 to {MAX_WAIT_S:g}")
    return seconds


def page_limit(value: str | None) -> int:
    """``?limit=N``: 1 to 1000 (100 when absent)."""
    if value is None:
        return DEFAULT_PAGE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest("limit", f"expected a whole number from 1 to {MAX_PAGE}")
    return int(value)


def cursor(value: str | None) -> int | None:
    """``?cursor=``: the ``next_cursor`` of an earlier page; empty (or absent) means the first page."""
    if not value:
        return None
    if not _CURSOR.fullmatch(value):
        raise BadRequest("cursor", "not a cursor this service gives (use next_cursor of the previous page)")
    return int(value[1:])


def make_cursor(before: int | None) -> str | None:
    """The cursor for the page after one that ended at ``before``."""
    return None if before is None else f"c{before}"


def id_filter(name: str, value: str | None) -> str | None:
    """``?eni_id=`` or ``?vpc_id=``: an id of that kind, or absent."""
    if value is None:
        return None
    check = validation.eni_id if name == "eni_id" else validation.vpc_id
    try:
        return check(value, name)
    except InputError as exc:
        raise BadRequest(name, exc.reason) from None


def date_time(name: str, value: str | None) -> float | None:
    """``?created_after=`` or ``?created_before=``: an RFC 3339 date-time (``2026-12-03T14:00:00Z``,
    ``...+08:00``) as seconds since the epoch, or absent."""
    if value is None:
        return None
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise BadRequest(name, "expected an RFC 3339 date-time, e.g. 2026-12-03T14:00:00Z")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    offset = 0
    if match.group(9) is not None:
        hours, minutes = int(match.group(10)), int(match.group(11))
        if hours > 23 or minutes > 59:
            raise BadRequest(name, "the offset is not a time of day (at most 23:59)")
        offset = (hours * 60 + minutes) * 60 * (1 if match.group(9) == "+" else -1)
    if year < 1:
        raise BadRequest(name, "years start at 0001")
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise BadRequest(name, "not a day of the calendar")
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second
        raise BadRequest(name, "not a time of day")
    fraction = float(match.group(7) or 0)
    stamp = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))
    return stamp + (second - min(second, 59)) + fraction - offset


def status_filter(value: str | None, statuses: tuple[str, ...]) -> str | None:
    """``?status=``: one of the release statuses, or absent."""
    if value is None:
        return None
    if value not in statuses:
        raise BadRequest("status", f"expected one of {', '.join(statuses)}")
    return value


__all__ = [
    "CURSOR_PATTERN",
    "ENI_PATTERN",
    "IDEMPOTENCY_KEY_PATTERN",
    "IPV4_PATTERN",
    "MAX_IPS_PER_RELEASE",
    "MAX_RELEASES_PER_REQUEST",
    "MAX_WAIT_S",
    "VPC_PATTERN",
    "BadRequest",
    "ReleaseBody",
    "cursor",
    "date_time",
    "id_filter",
    "idempotency_key",
    "make_cursor",
    "only_params",
    "page_limit",
    "parse_json",
    "release_body",
    "status_filter",
    "wait_seconds",
]
