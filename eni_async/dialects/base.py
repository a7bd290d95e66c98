"""What both dialects share: the action names, the signing context, a describe page and the ``Dialect``
protocol. Nothing here awaits, reads the clock or draws random numbers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from eni_async.models import (
    Credentials,
    EniInfo,
    HttpRequest,
    HttpResponse,
    Submitted,
    TaskState,
    quick_init,
)

UNASSIGN = "UnassignPrivateIpAddresses"
TASK_QUERY = "DescribeVpcTaskResult"
DESCRIBE = "DescribeNetworkInterfaces"
ASSIGN = "AssignPrivateIpAddresses"
ACTIONS = (UNASSIGN, TASK_QUERY, DESCRIBE, ASSIGN)


@quick_init
@dataclass(frozen=True, slots=True)
class SignContext:
    """Everything a request needs besides its parameters. ``endpoint`` is ``scheme://host[:port]``."""

    credentials: Credentials
    endpoint: str
    region: str
    timestamp: int
    nonce: int
    sign_method: str = "HmacSHA256"

    def __repr__(self) -> str:
        return f"SignContext(endpoint={self.endpoint!r}, region={self.region!r}, timestamp={self.timestamp})"

    @property
    def host(self) -> str:
        """The ``Host`` header as sent, with the port when there is one (docs/protocol.md D16)."""
        return endpoint_parts(self.endpoint)[0]


@functools.lru_cache(maxsize=32)  # asked for every call, of a few endpoints
def endpoint_parts(endpoint: str) -> tuple[str, str]:
    """The ``Host`` header of ``endpoint`` (with the port when there is one) and the URL of its ``/``."""
    return urlsplit(endpoint).netloc, endpoint.rstrip("/") + "/"


# What ``json.loads`` applies to a text when given no options (its own default decoder's ``decode``).
_decode = json.JSONDecoder().decode


def json_document(body: bytes) -> Any:
    """``json.loads(body)``, read without its encoding detection (a Python call per answer) in the case
    every answer is in: UTF-8 without a byte-order mark. Anything that is not read so (a BOM, UTF-16 or 32,
    bytes that are not UTF-8, bad JSON) goes to ``json.loads`` itself, which reads it or raises as ever: JSON
    text never holds a NUL in its first two bytes, so a body ``json.loads`` would read in another encoding
    is never valid JSON as UTF-8 (``test_json_document_is_json_loads`` pins the agreement)."""
    try:
        return _decode(body.decode())
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return json.loads(body)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a dialect can do, in the terms the tracker and the release path ask about (never its name).

    ``describe_ids_per_call``: ENI ids one DescribeNetworkInterfaces call can name (API 3.0: 100; API 2.0: one,
    or a VPC's page). ``describe_page_limit``: the largest page of a VPC's ENIs. ``lists_ip_state``: each
    listed IP carries a ``State`` (API 3.0: ``DELETING`` while an unassign task runs on it, D22).
    ``release_names_vpc``: the release call carries the VPC and the server refuses a wrong one (API 2.0);
    where it does not (API 3.0) the ENI is described before the first submit to check it.
    """

    describe_ids_per_call: int
    describe_page_limit: int
    lists_ip_state: bool
    release_names_vpc: bool


@quick_init
@dataclass(frozen=True, slots=True)
class DescribePage:
    """One page of DescribeNetworkInterfaces."""

    enis: tuple[EniInfo, ...]
    total: int
    request_id: str | None


class Dialect(Protocol):
    """One API dialect: request builders and response parsers, all pure."""

    name: str
    default_endpoint: str
    max_describe_limit: int
    describe_ids_per_call: int
    lists_ip_state: bool
    capabilities: Capabilities

    def build_unassign(
        self, ctx: SignContext, vpc_id: str, eni_id: str, ips: Sequence[str]
    ) -> HttpRequest: ...

    def build_task_query(self, ctx: SignContext, task_id: str) -> HttpRequest: ...

    def build_describe(
        self,
        ctx: SignContext,
        *,
        vpc_id: str | None = None,
        eni_ids: Sequence[str] = (),
        offset: int = 0,
        limit: int = 20,
    ) -> HttpRequest: ...

    def parse_unassign(self, response: HttpResponse) -> Submitted:
        """Return the task started, or raise the typed error (``ApiError`` / ``ProtocolError``)."""
        ...

    def parse_task_query(self, response: HttpResponse, task_id: str) -> TaskState: ...

    def parse_describe(self, response: HttpResponse) -> DescribePage: ...


__all__ = [
    "ACTIONS",
    "ASSIGN",
    "DESCRIBE",
    "TASK_QUERY",
    "UNASSIGN",
    "Capabilities",
    "DescribePage",
    "Dialect",
    "SignContext",
    "endpoint_parts",
    "json_document",
]
