"""The journal's schema as numbered SQL files shipped in the package, one directory per database.

``sql/sqlite/NNNN_name.sql`` and ``sql/postgresql/NNNN_name.sql`` carry the same numbers for the same
change, so a journal's format (the number of the last file applied) means one thing in either database.
A new journal gets every file, in order, in one transaction; an older one (format 1 and up) is brought
forward by the files it lacks when it is opened for writing, also in one transaction. A journal of a newer
format, or of format 0 (written before the format was versioned), is refused by the connector in one line.
Nothing here touches a database; ``refuse`` is the one-line refusal of a format this code cannot use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from eni_async.journal.seam import JournalError

DIALECTS = ("sqlite", "postgresql")
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    """One schema step: its number, file name and SQL (statements separated by ``;`` at line ends)."""

    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments dropped, for drivers that run one statement at a time."""
        lines = [line for line in self.sql.splitlines() if not line.lstrip().startswith("--")]
        return [part.strip() for part in "\n".join(lines).split(";\n") if part.strip().rstrip(";")]


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    """Every migration of ``dialect`` in order; the numbers run 1, 2, ... without a gap."""
    folder = resources.files("eni_async.journal").joinpath("sql", dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the {dialect} migrations are not numbered 1..n: {[m.name for m in found]}")
    return tuple(found)


def latest(dialect: str) -> int:
    """The format this code writes."""
    return migrations(dialect)[-1].version


def pending(dialect: str, version: int) -> tuple[Migration, ...]:
    """The migrations a journal of format ``version`` lacks."""
    return tuple(m for m in migrations(dialect) if m.version > version)


def refuse(where: str, version: int, current: int) -> None:
    """The one-line refusal of a journal format this code cannot use (0: before formats; above: newer)."""
    if version < 1:
        raise JournalError(
            where,
            f"was written by an older eni-async (journal format {version}, this one reads {current}); "
            "finish it with the version that wrote it",
        )
    if version > current:
        raise JournalError(
            where, f"was written by a newer eni-async (journal format {version}, this one reads {current})"
        )


__all__ = ["DIALECTS", "Migration", "latest", "migrations", "pending", "refuse"]
