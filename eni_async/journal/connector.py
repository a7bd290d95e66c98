"""What the journal's SQL needs of a database: the ``Tx`` and ``Connector`` protocols, and sizes of reads.

``journal.sqlite`` and ``journal.postgres`` each implement ``Connector``; the journal's logic
(``journal.sql``) and the service's registry (``journal.releases``) are written once over it. Nothing here
does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol

from eni_async.journal.seam import Deliver

PAGE = 500  # rows per read of a paged scan
# Ids per ``IN (...)`` list: well below SQLite's 32,766 variables and PostgreSQL's 65,535 parameters.
IN_LIST = 500
Row = tuple[Any, ...]


class Tx(Protocol):
    """One transaction (or one consistent read) on the database."""

    async def run(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Execute one statement; its rows (those of ``RETURNING`` too), or none."""
        ...

    async def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Connector(Protocol):
    """What the shared logic needs of a database: transactions, reads, its dialect's three markers, and
    what processes sharing it need (notifications, the lock they opened it with)."""

    where: str
    version: int  # the journal's format, as found (then as migrated)
    shared: bool  # other processes may write it at the same time
    markers: ClassVar[dict[str, str]]

    def transaction(self) -> AbstractAsyncContextManager[Tx]: ...

    def reading(self) -> AbstractAsyncContextManager[Tx]: ...

    async def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """Tell the processes listening on ``channel``, when ``tx`` commits (nothing where none can listen)."""
        ...

    async def listen(self, deliver: Deliver) -> None: ...

    async def hold(self) -> None: ...

    async def close(self) -> None: ...


__all__ = ["IN_LIST", "PAGE", "Connector", "Row", "Tx"]
