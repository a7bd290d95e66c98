"""What every API front end (``v2``, ``v3``) offers the app: read, authenticate, dispatch, render an error.

The app runs one pipeline for both dialects (read, count, authenticate, faults, rate limit, dispatch); a
front end only knows its own wire format and its own code table. Front ends raise ``Reject``; they never
build HTTP responses themselves, so the app alone decides status codes, headers and injected faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from eni_async.simulator.rejects import Reject
from eni_async.simulator.resources import TaskFate


@dataclass
class Call:
    """One parsed request: the action name and its parameters (flat for API 2.0, nested JSON for 3.0)."""

    action: str
    params: dict[str, Any]
    body: bytes = b""


class Frontend(Protocol):
    """One dialect's wire format over the shared world."""

    dialect: str

    @property
    def actions(self) -> frozenset[str]:
        """The actions served."""
        ...

    async def read(self, request: web.Request) -> Call:
        """Parse the request; raise ``Reject`` when it cannot be parsed."""
        ...

    def authenticate(self, request: web.Request, call: Call) -> str:
        """Verify the request's signature and freshness; return the SecretId."""
        ...

    def dispatch(self, call: Call, fate: TaskFate) -> dict[str, Any]:
        """Run the action; return the success body."""
        ...

    def error(self, reject: Reject) -> dict[str, Any]:
        """The error body for a refused call."""
        ...
