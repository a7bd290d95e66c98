"""Reading an SQLite journal from synchronous tests (while a subprocess writes it, say), through the seam; and
``opened``, a journal of any URL opened for an async test and closed after it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from eni_async.journal import SqliteJournal, open_journal
from eni_async.journal.sql import SqlJournal


async def _read(path: str | Path) -> tuple[dict[str, int], list[dict[str, Any]]]:
    async with SqliteJournal(path, read_only=True) as journal:
        return await journal.counts(), [data async for data in journal.finished_outcomes()]


def counts(path: str | Path) -> dict[str, int]:
    """The journal's items by state, read without its lock."""
    return asyncio.run(_read(path))[0]


def finished_outcomes(path: str | Path) -> list[dict[str, Any]]:
    """The journal's finished outcomes (JSON), read without its lock."""
    return asyncio.run(_read(path))[1]


def execute(path: str | Path, statement: str) -> None:
    """One statement run on the journal's file, behind the seam's back (to set a test's scene)."""

    async def run() -> None:
        async with SqliteJournal(path) as journal, journal.connector.transaction() as tx:
            await tx.run(statement)

    asyncio.run(run())


@contextlib.asynccontextmanager
async def opened(url: str, **kwargs: Any) -> AsyncIterator[SqlJournal]:
    """The journal at ``url`` (an SQL one), closed when the block ends."""
    journal = await open_journal(url, **kwargs)
    assert isinstance(journal, SqlJournal)
    try:
        yield journal
    finally:
        await journal.close()
