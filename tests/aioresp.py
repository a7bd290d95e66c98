"""aioresponses, made to work with aiohttp >= 3.14.

aioresponses 0.7.9 builds ``ClientResponse`` without the keyword ``stream_writer`` that aiohttp 3.14 made
required (upstream: https://github.com/pnuckowski/aioresponses/issues/289, fixed by PR 288, unreleased).
``CompatResponse`` supplies it; pass ``response_class=CompatResponse`` (``mocked()`` does) and drop this
module once aioresponses releases the fix.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aioresponses import aioresponses


class CompatResponse(aiohttp.ClientResponse):
    """A ``ClientResponse`` that aioresponses 0.7.9 can build under aiohttp 3.14."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


class Mocked:
    """A thin wrapper over ``aioresponses`` that always uses ``CompatResponse``."""

    def __init__(self, inner: aioresponses) -> None:
        self.inner = inner

    def post(self, url: str, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        self.inner.post(url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        self.inner.get(url, **kwargs)

    @property
    def requests(self) -> dict[Any, Any]:
        return self.inner.requests


@contextmanager
def mocked() -> Iterator[Mocked]:
    """``with mocked() as m: m.post(url, payload=...)``: scripted HTTP exchanges."""
    with aioresponses() as inner:
        yield Mocked(inner)
