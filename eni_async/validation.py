"""Input checks made before any request is sent: ids of the documented shape, IPv4 addresses, IP lists.

Every failure is an ``InputError`` (a ``ValueError``) naming the field and the value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from eni_async.errors import InputError

VPC_ID = re.compile(r"vpc-[0-9a-z]{8}")
ENI_ID = re.compile(r"eni-[0-9a-z]{8}")
MAX_IPS_PER_CALL = 10  # docs/protocol.md D9


def vpc_id(value: object, field: str = "vpc_id") -> str:
    """Return ``value`` if it is a VPC id (``vpc-`` and 8 lowercase letters or digits)."""
    if not isinstance(value, str) or not VPC_ID.fullmatch(value):
        raise InputError(field, value, "expected 'vpc-' followed by 8 lowercase letters or digits")
    return value


def eni_id(value: object, field: str = "eni_id") -> str:
    """Return ``value`` if it is an ENI id (``eni-`` and 8 lowercase letters or digits)."""
    if not isinstance(value, str) or not ENI_ID.fullmatch(value):
        raise InputError(field, value, "expected 'eni-' followed by 8 lowercase letters or digits")
    return value


def eni_ids(values: Iterable[object], field: str = "eni_id") -> list[str]:
    """The ENI ids of ``values`` without repeats, in first-seen order, each checked as ``eni_id`` does
    (one call for a describe's hundred ids)."""
    unique = dict.fromkeys(values)
    match = ENI_ID.fullmatch
    checked = [value for value in unique if isinstance(value, str) and match(value)]
    if len(checked) != len(unique):
        for value in unique:
            eni_id(value, field)  # raises for the first value that is not an ENI id
    return checked


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def ipv4(value: object, field: str = "ip") -> str:
    """Return ``value`` if it is a dotted-quad IPv4 address, in canonical form."""
    if not isinstance(value, str):
        raise InputError(field, value, "expected an IPv4 address")
    if _CANONICAL_IPV4.fullmatch(value):  # already canonical (no leading zeros): the common case, cheaply
        return value
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise InputError(field, value, "not a valid IPv4 address") from None
    return str(address)


def ip_list(values: object, field: str = "ips") -> tuple[str, ...]:
    """Return the IPs as a tuple: non-empty, each valid, no duplicates."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InputError(field, values, "expected a list of IPv4 addresses")
    ips = tuple(ipv4(v, field) for v in values)
    if not ips:
        raise InputError(field, [], "at least one IP is required")
    seen: set[str] = set()
    for ip in ips:
        if ip in seen:
            raise InputError(field, ip, "duplicate IP")
        seen.add(ip)
    return ips


def release_request(vpc: object, eni: object, ips: object) -> tuple[str, str, tuple[str, ...]]:
    """Validate one release request: VPC id, ENI id and IP list."""
    if type(vpc) is str and type(eni) is str and type(ips) in (tuple, list):
        # The common case, well-formed ids and canonical IPs, checked in one pass (asked for every item).
        checked: tuple[str, ...] = tuple(ips)  # type: ignore[arg-type]
        if checked and VPC_ID.fullmatch(vpc) and ENI_ID.fullmatch(eni):
            canonical = _CANONICAL_IPV4.fullmatch
            for ip in checked:
                if type(ip) is not str or not canonical(ip):
                    break
            else:
                if len(checked) == 1 or len(set(checked)) == len(checked):
                    return vpc, eni, checked
    return vpc_id(vpc), eni_id(eni), ip_list(ips)


def chunks(ips: tuple[str, ...], size: int = MAX_IPS_PER_CALL) -> list[tuple[str, ...]]:
    """Split ``ips`` into consecutive chunks of at most ``size``."""
    if len(ips) <= size:
        return [ips] if ips else []
    return [ips[i : i + size] for i in range(0, len(ips), size)]
