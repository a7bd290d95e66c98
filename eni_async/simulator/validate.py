"""Shape checks for ids and IP lists, shared by both front ends; each failure is a ``Reject``.

Tencent is strict about formats, so the simulator is too: ``vpc-``/``eni-``/``subnet-`` plus eight lower-case
letters or digits, dotted-quad IPv4 addresses without leading zeros, at most 10 IPs per call (docs/protocol.md D9)
and no IP twice. Nothing here touches state.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from eni_async.simulator.rejects import Reason, Reject

MAX_IPS_PER_CALL = 10
_ID_RE = {prefix: re.compile(rf"{prefix}-[0-9a-z]{{8}}") for prefix in ("vpc", "eni", "subnet", "eip")}


def resource_id(prefix: str, value: object, *, name: str) -> str:
    """Return ``value`` if it is a well-formed ``<prefix>-xxxxxxxx`` id; refuse it otherwise."""
    if value is None or value == "":
        raise Reject(Reason.MISSING, f"missing required parameter {name}")
    if not isinstance(value, str) or not _ID_RE[prefix].fullmatch(value):
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not a valid {prefix} id")
    return value


def ipv4(value: object, *, name: str) -> str:
    """Return ``value`` if it is a canonical dotted-quad IPv4 address; refuse it otherwise."""
    if not isinstance(value, str):
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not an IPv4 address")
    try:
        parsed = ipaddress.IPv4Address(value)
    except ValueError:
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not an IPv4 address") from None
    if str(parsed) != value:
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not an IPv4 address")
    return value


def ip_list(values: Sequence[object], *, name: str, required: bool = True) -> list[str]:
    """Check a list of IPs for one call: not empty (when ``required``), at most 10, well-formed, no repeats."""
    if not values:
        if required:
            raise Reject(Reason.MISSING, f"missing required parameter {name}")
        return []
    if len(values) > MAX_IPS_PER_CALL:
        raise Reject(
            Reason.TOO_MANY, f"{name} has {len(values)} addresses; at most {MAX_IPS_PER_CALL} per call"
        )
    ips = [ipv4(value, name=name) for value in values]
    seen: set[str] = set()
    for ip in ips:
        if ip in seen:
            raise Reject(Reason.DUPLICATE, f"{name} lists {ip} more than once")
        seen.add(ip)
    return ips


def integer(value: object, *, name: str, default: int, low: int, high: int | None = None) -> int:
    """Parse an integer parameter (a number or a decimal string) and check its range."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
        number = int(value)
    else:
        raise Reject(Reason.MALFORMED, f"{name} {value!r} is not an integer")
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Reject(Reason.OUT_OF_RANGE, f"{name} must be {bound} (got {number})")
    return number
