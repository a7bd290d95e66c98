"""Sans-I/O protocol dialects: API 2.0 (``v2``) and API 3.0 (``v3``) behind one interface.

A dialect turns an operation into an ``HttpRequest`` (signed, ready to send) and an ``HttpResponse`` into a
model or a typed exception. Nothing here awaits, reads the clock or draws random numbers: the timestamp and
nonce arrive in ``SignContext``. The client picks a dialect once, by name, from ``DIALECTS``; no other module
branches on the dialect.
"""

from __future__ import annotations

from eni_async.dialects import v2, v3
from eni_async.dialects.base import (
    ACTIONS,
    ASSIGN,
    DESCRIBE,
    TASK_QUERY,
    UNASSIGN,
    Capabilities,
    DescribePage,
    Dialect,
    SignContext,
)

DIALECTS: dict[str, Dialect] = {"v2": v2.DIALECT, "v3": v3.DIALECT}


def get_dialect(name: str) -> Dialect:
    """Return the dialect called ``name`` (``v2`` or ``v3``)."""
    return DIALECTS[name]


__all__ = [
    "ACTIONS",
    "ASSIGN",
    "DESCRIBE",
    "DIALECTS",
    "TASK_QUERY",
    "UNASSIGN",
    "Capabilities",
    "DescribePage",
    "Dialect",
    "SignContext",
    "get_dialect",
]
