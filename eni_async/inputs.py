"""Reading batch input: CSV (``vpc_id,eni_id,ip``, one row per IP) or JSON Lines, chosen by extension.

JSON Lines stream: one line is read only when the batch wants another item. CSV rows of one ENI need not
be adjacent, so a CSV file is grouped by ENI in one pass first (memory grows with the file; prefer JSON Lines
for very large batches). A malformed line becomes an ``InvalidItem`` carrying its line number and the rest
still runs; a file that cannot be read at all raises ``InputError``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from eni_async import validation
from eni_async.errors import InputError
from eni_async.outcomes import InvalidItem, Item

CSV_HEADER = ["vpc_id", "eni_id", "ip"]


def read_items(source: str) -> Iterator[Item | InvalidItem]:
    """Items from a path (``.csv``, ``.jsonl``/``.json``/``.ndjson``) or ``-`` (JSON Lines on stdin)."""
    if source == "-":
        return read_jsonl(sys.stdin)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise InputError("INPUT", source, "expected a .csv or .jsonl file, or - for JSON Lines on stdin")
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError("INPUT", source, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        if suffix == ".csv":
            return iter(list(read_csv(handle, source)))
    # Checked readable above; reopened lazily so that an unstarted batch leaves no file open.
    return _streamed(path)


def count_lines(source: str) -> int | None:
    """How many items a file will give at most (for progress), or ``None`` for stdin or CSV."""
    if source == "-" or source.lower().endswith(".csv"):
        return None
    try:
        with open(source, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def _streamed(path: Path) -> Iterator[Item | InvalidItem]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from read_jsonl(handle)


def read_jsonl(stream: IO[str]) -> Iterator[Item | InvalidItem]:
    """Items from JSON Lines ``{"vpc_id": ..., "eni_id": ..., "ips": [...]}``, lazily."""
    number = 0
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError as exc:
            yield InvalidItem(number + 1, InputError(f"line {number + 1}", "", f"not UTF-8 ({exc.reason})"))
            return
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        yield _jsonl_item(line, number)


def _jsonl_item(line: str, number: int) -> Item | InvalidItem:
    where = f"line {number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return InvalidItem(number, InputError(where, line.strip()[:80], f"not JSON ({exc.msg})"))
    except ValueError as exc:  # e.g. numbers too long to convert
        return InvalidItem(number, InputError(where, line.strip()[:80], f"not JSON ({exc})"))
    if not isinstance(data, dict):
        return InvalidItem(number, InputError(where, data, "expected a JSON object"))
    missing = [key for key in ("vpc_id", "eni_id", "ips") if key not in data]
    if missing:
        return InvalidItem(number, InputError(where, line.strip()[:80], f"missing {', '.join(missing)}"))
    vpc, eni, ips = data["vpc_id"], data["eni_id"], data["ips"]
    try:
        vpc, eni, checked = validation.release_request(vpc, eni, ips)
    except InputError as exc:
        error = InputError(f"{where}: {exc.field}", exc.value, exc.reason)
        return InvalidItem(
            number,
            error,
            vpc_id=str(vpc),
            eni_id=str(eni),
            ips=tuple(str(ip) for ip in ips) if isinstance(ips, list) else (),
        )
    return Item(vpc, eni, checked, number)


def read_csv(stream: IO[str], name: str = "INPUT") -> Iterator[Item | InvalidItem]:
    """Items from CSV with the header ``vpc_id,eni_id,ip``, grouped by ENI (first-seen order)."""
    try:
        reader = csv.reader(stream)
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(name, "", f"unreadable CSV ({exc})") from None
    if header is None or [h.strip() for h in header] != CSV_HEADER:
        raise InputError(
            name, ",".join(header or []), f"the first line must be the header {','.join(CSV_HEADER)}"
        )
    groups: dict[str, tuple[str, list[str], int]] = {}
    seen: dict[tuple[str, str], int] = {}
    bad: list[InvalidItem] = []
    try:
        for row in reader:
            number = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"line {number}"
            if len(row) != 3:
                bad.append(
                    InvalidItem(
                        number, InputError(where, ",".join(row), "expected 3 columns: vpc_id,eni_id,ip")
                    )
                )
                continue
            try:
                vpc = validation.vpc_id(row[0].strip(), f"{where}: vpc_id")
                eni = validation.eni_id(row[1].strip(), f"{where}: eni_id")
                ip = validation.ipv4(row[2].strip(), f"{where}: ip")
            except InputError as exc:
                bad.append(
                    InvalidItem(
                        number, exc, vpc_id=row[0].strip(), eni_id=row[1].strip(), ips=(row[2].strip(),)
                    )
                )
                continue
            if (eni, ip) in seen:
                bad.append(
                    InvalidItem(
                        number,
                        InputError(f"{where}: ip", ip, f"duplicate of line {seen[(eni, ip)]}"),
                        vpc,
                        eni,
                        (ip,),
                    )
                )
                continue
            group = groups.get(eni)
            if group is not None and group[0] != vpc:
                bad.append(
                    InvalidItem(
                        number,
                        InputError(f"{where}: vpc_id", vpc, f"{eni} is in {group[0]} on line {group[2]}"),
                        vpc,
                        eni,
                        (ip,),
                    )
                )
                continue
            seen[(eni, ip)] = number
            if group is None:
                groups[eni] = (vpc, [ip], number)
            else:
                group[1].append(ip)
    except (csv.Error, UnicodeDecodeError) as exc:
        bad.append(
            InvalidItem(None, InputError(name, "", f"unreadable from line {reader.line_num} on ({exc})"))
        )
    yield from bad
    for eni, (vpc, ips, first) in groups.items():
        yield Item(vpc, eni, tuple(ips), first)


def parse_jsonl_text(text: str) -> list[Item | InvalidItem]:
    """Convenience for tests and examples: items from a JSON Lines string."""
    return list(read_jsonl(io.StringIO(text)))
