"""The ``journal`` command (part of the CLI): ``eni-async journal copy SRC DST``.

``copy`` moves a journal between SQLite and PostgreSQL, either way (``eni_async.journal.copy``): one line
on stderr saying what moved, exit 0; a journal that cannot be used (missing, in use, not empty, refused
format, unreachable) is one line on stderr and exit 2. A URL's password is never shown.
"""

from __future__ import annotations

import argparse

from eni_async.cli_batch import JournalUnusable
from eni_async.errors import InputError
from eni_async.journal import JournalError, describe, is_postgres, sqlite_path
from eni_async.journal.copy import copy_journal
from eni_async.settings import Settings
from eni_async.terminal import json_lines, tell


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``journal ACTION ...``: for now ``copy``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy a journal into an empty one (SQLite <-> PostgreSQL)",
        description="Copy every item, task, lease and release of SOURCE into DESTINATION, which must hold "
        "no journal yet, in one transaction. SOURCE is locked while it is copied (refused while a batch or "
        "serve uses it); stop its writer, copy, then point the writer at DESTINATION.",
        epilog="example: eni-async journal copy releases.db postgresql://eni@db.internal/eni_async",
    )
    copy.add_argument("source", metavar="SOURCE", help="a journal file (SQLite) or postgresql://... URL")
    copy.add_argument("destination", metavar="DESTINATION", help="an empty journal: a new file or a database")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """``eni-async journal copy``: 0 once every row is in the destination."""
    if not is_postgres(args.source):
        try:
            missing = not sqlite_path(args.source).is_file()
        except JournalError as exc:
            raise JournalUnusable(exc) from None
        if missing:
            raise InputError("SOURCE", args.source, "no such file")
    try:
        copied = await copy_journal(args.source, args.destination)
    except JournalError as exc:
        raise JournalUnusable(exc) from None
    tell(
        f"copied {copied.summary()} from {describe(args.source)} to {describe(args.destination)}",
        as_json=json_lines(args),
        rows=copied.rows,
    )
    return 0


__all__ = ["add_arguments", "run"]
