"""The bad input drill: malformed inputs and malformed server answers, each met by a typed error or a clear
one-line CLI message, never a traceback, a hang or the end of a batch.

Three corpora: command lines, files, settings and credentials through ``main([...])``; server answers with
every envelope field missing or of the wrong type (and bodies that are not JSON at all) through
``EniClient`` in both dialects; and a whole batch against the simulator's ``hostile`` fault profile. Every
mock is bounded (a small retry policy on a fake clock) and every client call runs under ``asyncio.timeout``,
so a regression shows up as a failure, never as a hung test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import io
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eni_async.cli import main
from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.errors import EniAsyncError, InputError, OutcomeUnknownError, ProtocolError, TaskTimeoutError
from eni_async.inputs import parse_jsonl_text, read_csv
from eni_async.models import Credentials, EniInfo, TaskState
from eni_async.outcomes import STATUSES, InvalidItem, Item, as_item, check_against_truth
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator, load_fault_profile
from eni_async.testing import jsonl_lines
from eni_async.transport import MAX_BODY
from tests.aioresp import Mocked, mocked
from tests.batchhelpers import world

VPC, ENI = "vpc-7t9nf3pu", "eni-m6dyj72l"
SECRET_ID, SECRET_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"
SERVED = {"enis": 4, "ips_per_eni": 2, "seed": 11}
GUARD = 30.0  # seconds of real time any single client call may take before the test fails


# -- command lines, files, settings and credentials that cannot be used: exit 2, one line ------------------

BASE = ("unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2")
GOOD_LINE = jsonl_lines([{"vpc_id": VPC, "eni_id": ENI, "ips": ["10.0.0.2"]}], ips="ips")


@dataclass(frozen=True)
class Unusable:
    """A command line that must be refused before any request. ``{tmp}`` in argv is the test's folder;
    ``files`` are created under it (``None``: a directory); ``env`` is applied (``None``: unset)."""

    argv: tuple[str, ...]
    needle: str
    files: Mapping[str, bytes | None] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)


def unassign(vpc: str = VPC, eni: str = ENI, *ips: str) -> tuple[str, ...]:
    ips = ips or ("10.0.0.2",)
    return ("unassign", "--vpc-id", vpc, "--eni-id", eni, *(arg for ip in ips for arg in ("--ip", ip)))


def with_config(text: bytes, needle: str, *extra: str) -> Unusable:
    return Unusable((*BASE, *extra, "--config", "{tmp}/c.toml"), needle, {"c.toml": text})


def with_credentials_file(text: bytes | None, needle: str, *extra: str) -> Unusable:
    unset: dict[str, str | None] = {"TENCENTCLOUD_SECRET_ID": None, "TENCENTCLOUD_SECRET_KEY": None}
    return Unusable((*BASE, *extra), needle, {".tencentcloud/credentials": text}, unset)


UNUSABLE = [
    # ids and IPs
    pytest.param(Unusable(unassign(""), "vpc_id"), id="vpc-empty"),
    pytest.param(Unusable(unassign("vpc-7t9nf3p"), "vpc_id"), id="vpc-short"),
    pytest.param(Unusable(unassign("VPC-7T9NF3PU"), "vpc_id"), id="vpc-upper"),
    pytest.param(Unusable(unassign(VPC, "eni-m6dyj72l "), "eni_id"), id="eni-trailing-space"),
    pytest.param(Unusable(unassign(VPC, "eni-m6dyj72\u0131"), "eni_id"), id="eni-unicode"),
    pytest.param(Unusable(unassign(VPC, "eni-" + "a" * 10_000), "eni_id"), id="eni-huge"),
    pytest.param(Unusable(unassign(VPC, "subnet-m6dyj72l"), "eni_id"), id="eni-other-kind"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0"), "ips"), id="ip-three-parts"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0.01"), "ips"), id="ip-leading-zero"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0.256"), "ips"), id="ip-octet-256"),
    pytest.param(Unusable(unassign(VPC, ENI, "::1"), "ips"), id="ip-v6"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0.2/32"), "ips"), id="ip-cidr"),
    pytest.param(Unusable(unassign(VPC, ENI, ""), "ips"), id="ip-empty"),
    pytest.param(Unusable(unassign(VPC, ENI, "\u0661\u0660.0.0.1"), "ips"), id="ip-arabic-digits"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0.2\n"), "ips"), id="ip-newline"),
    pytest.param(Unusable(unassign(VPC, ENI, "10.0.0.2", "10.0.0.2"), "duplicate"), id="ip-duplicate"),
    pytest.param(Unusable((*BASE, "--timeout", "0"), "--timeout"), id="timeout-zero"),
    pytest.param(Unusable((*BASE, "--timeout", "nan"), "--timeout"), id="timeout-nan"),
    pytest.param(Unusable((*BASE, "--timeout", "soon"), "--timeout"), id="timeout-word"),
    pytest.param(Unusable((*BASE, "--dialect", "v4"), "--dialect"), id="dialect-unknown"),
    pytest.param(Unusable((*BASE, "--region", ""), "region"), id="region-empty"),
    pytest.param(
        Unusable((*BASE, "--dialect", "v3", "--region", "ap-guangzhou\nX: y"), "region"), id="region-newline"
    ),
    pytest.param(Unusable((*BASE, "--endpoint", "http://[::1"), "endpoint"), id="endpoint-bad-ipv6"),
    pytest.param(Unusable((*BASE, "--endpoint", "https://host:99999"), "endpoint"), id="endpoint-bad-port"),
    pytest.param(Unusable((*BASE, "--endpoint", "https://h/v2/index.php"), "endpoint"), id="endpoint-path"),
    pytest.param(Unusable((*BASE, "--endpoint", "https://user:pw@h"), "endpoint"), id="endpoint-userinfo"),
    # batch files that cannot be used at all
    pytest.param(Unusable(("batch", "{tmp}/in.csv"), "header", {"in.csv": b""}), id="csv-empty"),
    pytest.param(
        Unusable(
            ("batch", "{tmp}/in.csv"),
            "header",
            {"in.csv": b"vpc,eni,ip\nvpc-7t9nf3pu,eni-m6dyj72l,10.0.0.2\n"},
        ),
        id="csv-wrong-header",
    ),
    pytest.param(
        Unusable(("batch", "{tmp}/in.csv"), "header", {"in.csv": b"eni_id,vpc_id,ip\n"}),
        id="csv-header-order",
    ),
    pytest.param(Unusable(("batch", "{tmp}/missing.csv"), "cannot read"), id="file-missing"),
    pytest.param(Unusable(("batch", "{tmp}/missing.jsonl"), "cannot read"), id="jsonl-missing"),
    pytest.param(Unusable(("batch", "{tmp}/dir.csv"), "cannot read", {"dir.csv": None}), id="csv-directory"),
    pytest.param(
        Unusable(("batch", "{tmp}/d.jsonl"), "cannot read", {"d.jsonl": None}), id="jsonl-directory"
    ),
    pytest.param(Unusable(("batch", "{tmp}/in.txt"), ".csv", {"in.txt": GOOD_LINE.encode()}), id="ext-txt"),
    pytest.param(Unusable(("batch", "{tmp}/in"), ".csv", {"in": GOOD_LINE.encode()}), id="ext-none"),
    pytest.param(Unusable(("batch", "{tmp}/in.csv.gz"), ".csv", {"in.csv.gz": b"\x1f\x8b"}), id="ext-gz"),
    pytest.param(
        Unusable(
            ("batch", "{tmp}/in.jsonl", "--concurrency", "0"), "concurrency", {"in.jsonl": GOOD_LINE.encode()}
        ),
        id="concurrency-zero",
    ),
    pytest.param(
        Unusable(("batch", "{tmp}/in.jsonl", "--concurrency", "many"), "--concurrency", {"in.jsonl": b""}),
        id="concurrency-word",
    ),
    # settings files
    pytest.param(with_config(b'colour = "blue"\n', "colour"), id="config-unknown-key"),
    pytest.param(with_config(b"[retry]\nbackoff = 2\n", "retry.backoff"), id="config-unknown-section-key"),
    pytest.param(with_config(b"[weather]\nsunny = true\n", "weather"), id="config-unknown-section"),
    pytest.param(with_config(b'concurrency = "many"\n', "concurrency"), id="config-str-for-int"),
    pytest.param(with_config(b"concurrency = true\n", "concurrency"), id="config-bool-for-int"),
    pytest.param(with_config(b'verify_tls = "no"\n', "verify_tls"), id="config-str-for-bool"),
    pytest.param(with_config(b"[retry]\nattempts = 1.5\n", "retry.attempts"), id="config-float-for-int"),
    pytest.param(with_config(b"retry = 5\n", "retry"), id="config-int-for-table"),
    pytest.param(with_config(b"[poll]\ntimeout = -1\n", "poll.timeout"), id="config-negative"),
    pytest.param(with_config(b"[poll]\ntimeout = nan\n", "poll.timeout"), id="config-nan-poll-timeout"),
    pytest.param(with_config(b"[retry]\ndeadline = nan\n", "retry.deadline"), id="config-nan-retry-deadline"),
    pytest.param(with_config(b"[timeouts]\nread = nan\n", "timeouts.read"), id="config-nan-read-timeout"),
    pytest.param(with_config(b'dialect = "v4"\n', "dialect"), id="config-dialect"),
    pytest.param(with_config(b'sign_method = "MD5"\n', "sign_method"), id="config-sign-method"),
    pytest.param(with_config(b'endpoint = "ftp://x"\n', "endpoint"), id="config-endpoint-scheme"),
    pytest.param(with_config(b'proxy = "socks5://p:1080"\n', "proxy"), id="config-proxy-scheme"),
    pytest.param(with_config(b"endpoint = \n", "not valid TOML"), id="config-bad-toml"),
    pytest.param(with_config(b'region = "\xff\xfe"\n', "not valid TOML"), id="config-not-utf8"),
    pytest.param(with_config(b"[retry]\n[retry]\n", "not valid TOML"), id="config-duplicate-table"),
    pytest.param(Unusable((*BASE, "--config", "{tmp}/none.toml"), "cannot read"), id="config-missing"),
    pytest.param(Unusable((*BASE, "--config", "{tmp}/d"), "cannot read", {"d": None}), id="config-directory"),
    # credentials
    pytest.param(
        Unusable(BASE, "TENCENTCLOUD_SECRET_KEY", env={"TENCENTCLOUD_SECRET_KEY": None}), id="env-id-only"
    ),
    pytest.param(
        Unusable(BASE, "TENCENTCLOUD_SECRET_ID", env={"TENCENTCLOUD_SECRET_ID": None}), id="env-key-only"
    ),
    pytest.param(
        Unusable((*BASE, "--dialect", "v3"), "SECRET_ID", env={"TENCENTCLOUD_SECRET_ID": "AKID\nX-Evil: 1"}),
        id="env-id-newline",
    ),
    pytest.param(
        Unusable((*BASE, "--dialect", "v3"), "TOKEN", env={"TENCENTCLOUD_TOKEN": "tok\r\nX-Evil: 1"}),
        id="env-token-newline",
    ),
    pytest.param(
        with_credentials_file(b"secret_id = a\nsecret_key = b\n", "unreadable"), id="credfile-no-section"
    ),
    pytest.param(
        with_credentials_file(b"[default]\nsecret_id = \xff\n", "unreadable"), id="credfile-not-utf8"
    ),
    pytest.param(
        with_credentials_file(b"[default]\nsecret_id=a\n[default]\nsecret_id=b\n", "unreadable"),
        id="credfile-duplicate-section",
    ),
    pytest.param(with_credentials_file(b"[default]\nsecret_id = AKID\n", "secret_key"), id="credfile-no-key"),
    pytest.param(with_credentials_file(b"[default\n", "unreadable"), id="credfile-garbage"),
    pytest.param(with_credentials_file(None, "credentials"), id="credfile-directory"),
    pytest.param(
        Unusable(
            (*BASE, "--config", "{tmp}/c.toml"),
            "profile",
            {
                "c.toml": b'profile = "prod"\n',
                ".tencentcloud/credentials": b"[default]\nsecret_id=a\nsecret_key=b\n",
            },
            {"TENCENTCLOUD_SECRET_ID": None, "TENCENTCLOUD_SECRET_KEY": None},
        ),
        id="credfile-missing-profile",
    ),
]


@pytest.mark.parametrize("case", UNUSABLE)
def test_unusable_input_exits_2_with_one_line_and_no_request(
    case: Unusable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unusable ids, IPs, files, settings or credentials exit 2 with one line naming them, before any request."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv("TENCENTCLOUD_TOKEN", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECURITY_TOKEN", raising=False)
    monkeypatch.delenv("ENI_ASYNC_CONFIG", raising=False)
    for name, value in case.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    for name, content in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    with mocked() as m:
        code = main(argv)
        sent = sum(len(calls) for calls in m.requests.values())
    err = capsys.readouterr().err
    assert (code, sent) == (2, 0), err
    assert case.needle.lower() in err.lower()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_empty_jsonl_batch_does_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty JSON Lines file is a batch of 0 ENIs: exit 0, no output line, a summary and no request."""
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n\n")
    with mocked() as m:
        code = main(["batch", str(source), "--no-progress"])
        assert m.requests == {}
    captured = capsys.readouterr()
    assert (code, captured.out) == (0, "")
    assert "ENIs" in captured.err
    assert "Traceback" not in captured.err


# -- batch files with some malformed lines: those lines are outcomes, the rest succeed -------------------


def jsonl(vpc: object, eni: object, ips: object) -> bytes:
    return json.dumps({"vpc_id": vpc, "eni_id": eni, "ips": ips}).encode()


HUGE = 2_000_000
BAD_JSONL_LINES = {
    "not-json": b"{not json",
    "array": b'["vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"]]',
    "string": b'"vpc-7t9nf3pu"',
    "number": b"42",
    "null": b"null",
    "bool": b"true",
    "ips-as-string": jsonl(VPC, ENI, "10.0.0.2"),
    "ids-as-numbers": jsonl(7, 9, ["10.0.0.2"]),
    "ids-nested": jsonl({"id": VPC}, [ENI], ["10.0.0.2"]),
    "ips-numbers": jsonl(VPC, ENI, [167772162]),
    "ips-nested": jsonl(VPC, ENI, [["10.0.0.2"]]),
    "ips-null": jsonl(VPC, ENI, None),
    "unknown-key": b'{"vpc_id": "vpc-7t9nf3pu", "eni_id": "eni-m6dyj72l", "ips": ["10.0.0.2"], "ip": "10.0.0.3"}',
    "ips-empty": jsonl(VPC, ENI, []),
    "ips-object": jsonl(VPC, ENI, {"ip": "10.0.0.2"}),
    "missing-keys": b'{"vpc_id": "vpc-7t9nf3pu"}',
    "nan": b'{"vpc_id": "vpc-7t9nf3pu", "eni_id": "eni-m6dyj72l", "ips": NaN}',
    "long-number": b'{"vpc_id": ' + b"1" * 5000 + b"}",
    "nul-byte": b'{"vpc_id": "vpc-7t9nf3pu\x00", "eni_id": "eni-m6dyj72l", "ips": ["10.0.0.2"]}',
    "huge-garbage": b"x" * HUGE,
    "huge-array": b'["' + b"a" * HUGE + b'"]',
    "huge-eni-id": jsonl(VPC, "eni-" + "a" * HUGE, ["10.0.0.2"]),
    "not-utf8": b'{"vpc_id": "vpc-\xff\xfe", "eni_id": "eni-m6dyj72l", "ips": ["10.0.0.2"]}',
}


async def run_batch(source: Path, endpoint: str, tmp_path: Path) -> tuple[int, list[dict[str, Any]], str]:
    output = tmp_path / "out.jsonl"
    log = tmp_path / "stderr.txt"

    def call() -> int:
        with log.open("w") as err, contextlib.redirect_stderr(err):
            return main(
                ["batch", str(source), "--endpoint", endpoint, "--output", str(output), "--no-progress"]
            )

    code = await asyncio.to_thread(call)
    lines = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    return code, lines, log.read_text()


def assert_one_bad_line(
    code: int, lines: list[dict[str, Any]], err: str, *, line: int, good: int, sim: Simulator
) -> None:
    assert "Traceback" not in err, err[-2000:]
    assert "unexpected error" not in err, err[-2000:]
    assert code == 1, err[-2000:]
    failed = [out for out in lines if out["status"] != "succeeded"]
    assert [(out.get("line"), out["error"]["code"]) for out in failed] == [(line, "InvalidInput")], failed
    assert len(failed[0]["error"]["message"]) < 1000, "a malformed line's message stays readable"
    assert sum(out["status"] == "succeeded" for out in lines) == good
    present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in sim.ground_truth()["enis"]}
    assert [p for out in lines for p in check_against_truth(out, present)] == []


@pytest.mark.parametrize("bad", BAD_JSONL_LINES.values(), ids=BAD_JSONL_LINES.keys())
async def test_malformed_jsonl_line_is_its_own_outcome(
    bad: bytes, served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A malformed JSON line is one failed outcome carrying its line number; the lines around it succeed."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    good = [jsonl(e["vpc_id"], e["eni_id"], e["secondary_ips"]) for e in enis[:2]]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([good[0], bad, good[1]]) + b"\n")
    code, lines, err = await run_batch(source, endpoint, tmp_path)
    assert_one_bad_line(code, lines, err, line=2, good=2, sim=sim)


async def test_json_line_nested_too_deep_is_its_own_outcome_and_the_batch_ends(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A JSON line nested deeper than the parser's recursion limit is one failed outcome, and the batch ends.

    Run in a child process with a deadline: a batch that hangs must fail this test, not stall the suite.
    """
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    good = [jsonl(e["vpc_id"], e["eni_id"], e["secondary_ips"]) for e in enis[:2]]
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"\n".join([good[0], b"[" * 20_000, good[1]]) + b"\n")
    argv = ["batch", str(source), "--endpoint", endpoint, "--output", str(output), "--no-progress"]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eni_async",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):  # a hang guard: a loaded machine starts Python slowly
            _, err = await child.communicate()
    except TimeoutError:
        child.kill()
        await child.wait()
        pytest.fail("the batch hung on a deeply nested JSON line")
    lines = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    assert_one_bad_line(child.returncode or 0, lines, err.decode(), line=2, good=2, sim=sim)


async def test_batch_ends_when_its_source_raises_an_unexpected_error() -> None:
    """An item source that raises something other than our errors ends the batch (an error or outcomes),
    never a hang."""

    def source() -> Iterator[object]:
        yield from w.items()[:2]
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    async with world(task_latency=(0.0, 0.0)) as w:
        seen: list[object] = []
        try:
            async with asyncio.timeout(20.0):
                seen.extend([outcome async for outcome in w.client.unassign_many(source(), concurrency=4)])
        except TimeoutError:
            pytest.fail(f"the batch hung after {len(seen)} outcome(s)")
        except Exception:  # ending with the error is fine: the caller learns of it
            pass


BAD_CSV_ROWS = {
    "two-columns": b"vpc-7t9nf3pu,eni-m6dyj72l",
    "four-columns": b"vpc-7t9nf3pu,eni-m6dyj72l,10.0.0.2,extra",
    "one-column": b"garbage",
    "bad-ip": b"vpc-7t9nf3pu,eni-m6dyj72l,10.0.0.300",
    "bad-eni": b"vpc-7t9nf3pu,eni-!,10.0.0.2",
    "nul-byte": b"vpc-7t9nf3pu,eni-m6dyj72l,10.0.0.2\x00",
    "unbalanced-quote": b'"vpc-7t9nf3pu,eni-m6dyj72l,10.0.0.2',
    "binary": b"\xff\xfe\x00\x01,\x80\x81,\xc3\x28",
    "huge-field": b"vpc-7t9nf3pu,eni-m6dyj72l," + b"1" * 200_000,
}


@pytest.mark.parametrize("bad", BAD_CSV_ROWS.values(), ids=BAD_CSV_ROWS.keys())
async def test_malformed_csv_row_is_its_own_outcome(
    bad: bytes, served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A malformed CSV row is one failed outcome carrying its line number; the rows around it succeed."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    first, second = enis[0], enis[1]
    rows = [b"vpc_id,eni_id,ip"]
    rows += [f"{first['vpc_id']},{first['eni_id']},{ip}".encode() for ip in first["secondary_ips"]]
    rows.append(bad)
    rows += [f"{second['vpc_id']},{second['eni_id']},{ip}".encode() for ip in second["secondary_ips"]]
    source = tmp_path / "in.csv"
    source.write_bytes(b"\n".join(rows) + b"\n")
    code, lines, err = await run_batch(source, endpoint, tmp_path)
    assert_one_bad_line(code, lines, err, line=2 + len(first["secondary_ips"]), good=2, sim=sim)


def test_a_stray_quote_costs_only_its_own_line() -> None:
    """A header, ``"vpc,eni,ip`` on line 2, then 100 good rows: line 2 is one invalid item naming
    its line, and the 100 rows are 100 items (a quote never runs on into the lines after it)."""
    rows = [b"vpc_id,eni_id,ip", b'"vpc,eni,ip'] + [
        f"{VPC},eni-{n:08d},10.0.0.2".encode() for n in range(100)
    ]
    found = list(read_csv(io.BytesIO(b"\n".join(rows) + b"\n")))
    bad = [entry for entry in found if isinstance(entry, InvalidItem)]
    assert [(entry.line, str(entry.error).split(":")[0]) for entry in bad] == [(2, "line 2")]
    assert sorted(entry.eni_id for entry in found if isinstance(entry, Item)) == [
        f"eni-{n:08d}" for n in range(100)
    ]


def test_an_unknown_jsonl_key_names_its_line_and_key() -> None:
    """A JSON Lines item with a key an item does not have (a typo) is that line's error, naming the key, as
    the service refuses it; the lines around it are items."""
    text = (
        GOOD_LINE
        + '{"vpc_id": "vpc-7t9nf3pu", "eni_id": "eni-m6dyj72l", "ip": ["10.0.0.3"], "ips": []}\n'
        + GOOD_LINE
    )
    first, bad, third = parse_jsonl_text(text)
    assert isinstance(first, Item)
    assert isinstance(third, Item)
    assert isinstance(bad, InvalidItem)
    assert bad.line == 2
    assert "line 2: ip" in str(bad.error)
    assert "unknown key" in str(bad.error)


# -- malformed server answers through EniClient, both dialects -------------------------------------------

URLS = {"v2": "https://vpc.api.qcloud.com/v2/index.php", "v3": "https://vpc.tencentcloudapi.com/"}
RETRY = RetryPolicy(attempts=2, initial=0.01, maximum=0.05, deadline=30.0)
MISSING = object()
WRONG_TYPES: tuple[object, ...] = (MISSING, None, "x", [], {}, True, 1.5)

V2_OK = {"code": 0, "message": "", "codeDesc": "Success"}
VALID: dict[tuple[str, str], dict[str, Any]] = {
    ("v2", "submit"): V2_OK | {"data": {"taskId": 16284}},
    ("v2", "task"): V2_OK | {"data": {"status": 0}},
    ("v2", "describe"): V2_OK
    | {
        "data": {
            "totalNum": 1,
            "data": [
                {
                    "networkInterfaceId": ENI,
                    "vpcId": VPC,
                    "privateIpAddressesSet": [
                        {"privateIpAddress": "10.0.0.1", "primary": True},
                        {"privateIpAddress": "10.0.0.2", "primary": False, "eipId": "eip-1"},
                    ],
                }
            ],
        }
    },
    ("v3", "submit"): {"Response": {"RequestId": "req-1"}},
    ("v3", "task"): {"Response": {"Status": "SUCCESS", "Output": "done", "RequestId": "req-2"}},
    ("v3", "describe"): {
        "Response": {
            "TotalCount": 1,
            "NetworkInterfaceSet": [
                {
                    "NetworkInterfaceId": ENI,
                    "VpcId": VPC,
                    "PrivateIpAddressSet": [
                        {"PrivateIpAddress": "10.0.0.1", "Primary": True},
                        {"PrivateIpAddress": "10.0.0.2", "Primary": False, "AddressId": "eip-1"},
                    ],
                }
            ],
            "RequestId": "req-3",
        }
    },
    ("v2", "error"): {"code": 4000, "message": "bad", "codeDesc": "InvalidParameter"},
    ("v3", "error"): {
        "Response": {"Error": {"Code": "InvalidParameter", "Message": "bad"}, "RequestId": "r"}
    },
}

# Envelope paths per (dialect, operation): True when the field is required (missing or mistyped must fail).
PATHS: dict[tuple[str, str], list[tuple[tuple[str | int, ...], bool]]] = {
    ("v2", "submit"): [
        (("code",), True),
        (("message",), False),
        (("codeDesc",), False),
        (("data",), True),
        (("data", "taskId"), True),
    ],
    ("v2", "task"): [
        (("code",), True),
        (("message",), False),
        (("codeDesc",), False),
        (("data",), True),
        (("data", "status"), True),
    ],
    ("v2", "describe"): [
        (("code",), True),
        (("data",), True),
        (("data", "totalNum"), True),
        (("data", "data"), True),
        (("data", "data", 0), True),
        (("data", "data", 0, "networkInterfaceId"), True),
        (("data", "data", 0, "vpcId"), True),
        (("data", "data", 0, "privateIpAddressesSet"), True),
        (("data", "data", 0, "privateIpAddressesSet", 0), True),
        (("data", "data", 0, "privateIpAddressesSet", 0, "privateIpAddress"), True),
        (("data", "data", 0, "privateIpAddressesSet", 0, "primary"), False),
        (("data", "data", 0, "privateIpAddressesSet", 1, "eipId"), False),
    ],
    ("v2", "error"): [(("code",), True), (("message",), False), (("codeDesc",), False)],
    ("v3", "submit"): [(("Response",), True), (("Response", "RequestId"), True)],
    ("v3", "task"): [
        (("Response",), True),
        (("Response", "RequestId"), True),
        (("Response", "Status"), True),
        (("Response", "Output"), False),
    ],
    ("v3", "describe"): [
        (("Response",), True),
        (("Response", "RequestId"), True),
        (("Response", "TotalCount"), True),
        (("Response", "NetworkInterfaceSet"), True),
        (("Response", "NetworkInterfaceSet", 0), True),
        (("Response", "NetworkInterfaceSet", 0, "NetworkInterfaceId"), True),
        (("Response", "NetworkInterfaceSet", 0, "VpcId"), True),
        (("Response", "NetworkInterfaceSet", 0, "PrivateIpAddressSet"), True),
        (("Response", "NetworkInterfaceSet", 0, "PrivateIpAddressSet", 0), True),
        (("Response", "NetworkInterfaceSet", 0, "PrivateIpAddressSet", 0, "PrivateIpAddress"), True),
        (("Response", "NetworkInterfaceSet", 0, "PrivateIpAddressSet", 0, "Primary"), False),
        (("Response", "NetworkInterfaceSet", 0, "PrivateIpAddressSet", 1, "AddressId"), False),
    ],
    ("v3", "error"): [
        (("Response", "Error"), True),
        (("Response", "Error", "Code"), True),
        (("Response", "Error", "Message"), False),
        (("Response", "RequestId"), False),
    ],
}


# Values of a field's own type that it still may not hold.
EXTRA_VALUES: dict[tuple[str | int, ...], tuple[object, ...]] = {
    ("code",): ("abc", "", "0x0"),
    ("data", "taskId"): ("", "12a", " "),
    ("data", "status"): (3, -1, "2x", 2**70),
    ("Response", "Status"): ("DONE", "", "running"),
    ("Response", "RequestId"): ("",),
}


def lookup(doc: dict[str, Any], path: tuple[str | int, ...]) -> object:
    value: Any = doc
    for key in path:
        value = value[key]
    return value


def mutate(doc: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``doc`` with the field at ``path`` replaced by ``value`` (or removed: ``MISSING``)."""
    out = copy.deepcopy(doc)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


Op = Callable[[EniClient], Awaitable[object]]
OPS: dict[str, tuple[Op, bool]] = {
    "submit": (lambda c: c.submit_unassign(VPC, ENI, ["10.0.0.2"]), True),
    "task": (lambda c: c.task_state("16284"), False),
    "describe": (lambda c: c.describe_eni(ENI), False),
}
WELL_TYPED: dict[str, type] = {"submit": str, "task": TaskState, "describe": EniInfo}


@pytest.fixture(params=["v2", "v3"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[EniClient]:
    """A client of one dialect on a fake clock, with a small retry policy so every mock is bounded."""
    settings = Settings(dialect=request.param, retry=RETRY, poll=PollPolicy(timeout=60.0))
    async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as c:
        yield c


@contextlib.asynccontextmanager
async def local_server(
    status: int, body: bytes, *, chunked: bool = False
) -> AsyncIterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that gives this answer to every request; yields (endpoint, paths requested).
    ``chunked``: the answer states no length (chunked transfer encoding, sent in pieces of 64 KiB).

    For bodies too large for aioresponses, which feeds them into aiohttp's stream in one piece and trips
    its flow control (an AssertionError inside aiohttp, not ours).
    """
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        hits.append(request.path)
        if not chunked:
            return web.Response(status=status, body=body, headers={"Content-Type": "application/json"})
        answer = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for start in range(0, len(body), 65536):
            await answer.write(body[start : start + 65536])
        await answer.write_eof()
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", hits
    finally:
        await runner.cleanup()


async def answer(
    client: EniClient, op: str, status: int, body: bytes, mock: Mocked | None = None
) -> tuple[object, int]:
    """Run ``op`` once against a server that always gives this answer; return (result or error, requests).
    ``mock``: an open ``mocked()`` to script afresh (one patch for many answers), else one of its own."""
    if mock is None:
        with mocked() as own:
            return await answer(client, op, status, body, own)
    call, _ = OPS[op]
    mock.inner.clear()
    mock.requests.clear()
    mock.post(URLS[client.settings.dialect], status=status, body=body, repeat=True)
    try:
        async with asyncio.timeout(GUARD):
            result: object = await call(client)
    except EniAsyncError as exc:
        result = exc
    return result, sum(len(calls) for calls in mock.requests.values())


def check_typed(op: str, result: object, sent: int, *, required: bool, what: str) -> None:
    """A well-typed result, or a typed error; read-only calls retry transient faults; submits never do."""
    _, mutating = OPS[op]
    if not isinstance(result, EniAsyncError):
        assert not required, f"{what}: accepted as {result!r}"
        assert result is None or isinstance(result, WELL_TYPED[op]), f"{what}: {result!r}"
        return
    assert not isinstance(result, InputError), f"{what}: a server answer is not our input: {result!r}"
    assert str(result), f"{what}: the error says nothing"
    if mutating and isinstance(result, OutcomeUnknownError):
        assert sent == 1, f"{what}: an ambiguous submit was resent {sent - 1} time(s)"
        assert isinstance(result.cause, EniAsyncError)
    elif mutating:
        assert sent == (RETRY.attempts if result.no_effect and result.transient else 1), what
    else:
        assert sent == (RETRY.attempts if result.transient else 1), f"{what}: {sent} requests for {result!r}"


def envelope_cases() -> Iterator[Any]:
    for (dialect, kind), paths in PATHS.items():
        ops = list(OPS) if kind == "error" else [kind]
        for op in ops:
            for path, required in paths:
                name = ".".join(str(p) for p in path)
                yield pytest.param(dialect, op, kind, path, required, id=f"{dialect}-{op}-{kind}-{name}")


@pytest.mark.parametrize(("dialect", "op", "kind", "path", "required"), list(envelope_cases()))
async def test_envelope_field_missing_or_mistyped_gives_a_typed_error(
    dialect: str, op: str, kind: str, path: tuple[str | int, ...], required: bool
) -> None:
    """Each envelope field, missing or of any wrong JSON type, gives a typed error or a well-typed result."""
    settings = Settings(dialect=dialect, retry=RETRY, poll=PollPolicy(timeout=60.0))
    original = lookup(VALID[(dialect, kind)], path)
    with mocked() as mock:
        async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
            for value in (*WRONG_TYPES, *EXTRA_VALUES.get(path, ())):
                if value is not MISSING and value in EXTRA_VALUES.get(path, ()):
                    pass  # a value of the right type but outside what the field may hold
                elif type(value) is type(original):
                    continue  # not a wrong type for this field
                elif value is MISSING and (isinstance(path[-1], int) or path == ("Response", "Error")):
                    continue  # removing a list entry or the error object leaves a valid answer
                body = json.dumps(mutate(VALID[(dialect, kind)], path, value)).encode()
                result, sent = await answer(client, op, 200, body, mock)
                shown = "missing" if value is MISSING else json.dumps(value)
                what = f"{op} with {'.'.join(map(str, path))} {shown}"
                # An error answer stays an error whatever its optional fields hold.
                check_typed(op, result, sent, required=required or kind == "error", what=what)


def bodies() -> Iterator[Any]:
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
    for op in OPS:
        for dialect in ("v2", "v3"):
            valid = json.dumps(VALID[(dialect, op)]).encode()
            cases: dict[str, tuple[int, bytes]] = {
                "not-json": (200, b"hello"),
                "html": (200, html),
                "empty": (200, b""),
                "whitespace": (200, b" \r\n "),
                "truncated": (200, valid[: len(valid) // 2]),
                "array": (200, b"[]"),
                "array-of-envelope": (200, b"[" + valid + b"]"),
                "string": (200, b'"Success"'),
                "null": (200, b"null"),
                "number": (200, b"0"),
                "deeply-nested-array": (200, b"[" * 20_000 + b"]" * 20_000),
                "deeply-nested-object": (200, b'{"a":' * 20_000),
                "long-number": (200, b'{"code": ' + b"9" * 5000 + b"}"),
                "invalid-utf8": (200, valid[:-1] + b', "x": "\xff\xfe"}'),
                "nan": (200, b'{"code": NaN, "Response": NaN}'),
                "infinity": (200, b'{"code": Infinity, "Response": {"RequestId": Infinity}}'),
                "oversized": (200, valid + b" " * MAX_BODY),
                "http-500-html": (500, html),
                "http-502-html": (502, html),
                "http-503-empty": (503, b""),
                "http-404-html": (404, b"<html>Not Found</html>"),
                "http-500-valid-body": (500, valid),
                "http-302": (302, b""),
                "http-429": (429, b"slow down"),
            }
            for name, (status, body) in cases.items():
                yield pytest.param(dialect, op, status, body, id=f"{dialect}-{op}-{name}")


@pytest.mark.parametrize(("dialect", "op", "status", "body"), list(bodies()))
async def test_answer_that_is_not_the_envelope_gives_a_typed_error(
    dialect: str, op: str, status: int, body: bytes
) -> None:
    """Non-JSON, HTML, empty, truncated, array, deep, oversized or non-200 answers are typed errors."""
    settings = Settings(dialect=dialect, retry=RETRY, poll=PollPolicy(timeout=60.0))
    if len(body) <= 64 * 1024:
        async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
            result, sent = await answer(client, op, status, body)
    else:
        async with local_server(status, body) as (endpoint, hits):
            settings = dataclasses.replace(settings, endpoint=endpoint)
            async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
                call, _ = OPS[op]
                try:
                    async with asyncio.timeout(GUARD):
                        result = await call(client)
                except EniAsyncError as exc:
                    result = exc
            sent = len(hits)
    assert isinstance(result, EniAsyncError), f"accepted: {result!r}"
    check_typed(op, result, sent, required=True, what=f"{op} answered HTTP {status} {body[:40]!r}")
    _, mutating = OPS[op]
    if mutating:
        assert isinstance(result, OutcomeUnknownError), "a submit answered with garbage may have acted"
    else:
        assert result.transient, "a garbled answer to a read-only call is worth another try"


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_large_valid_answer_under_the_limit_is_read_whole(dialect: str) -> None:
    """A valid answer bigger than one network read (here ~1 MB, under MAX_BODY) is read whole and parsed."""
    count = 12_000
    ips = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(1, count + 1)]
    if dialect == "v2":
        entries = [{"privateIpAddress": ip, "primary": n == 0} for n, ip in enumerate(ips)]
        eni = {"networkInterfaceId": ENI, "vpcId": VPC, "privateIpAddressesSet": entries}
        document: dict[str, Any] = V2_OK | {"data": {"totalNum": 1, "data": [eni]}}
    else:
        entries = [{"PrivateIpAddress": ip, "Primary": n == 0} for n, ip in enumerate(ips)]
        eni = {"NetworkInterfaceId": ENI, "VpcId": VPC, "PrivateIpAddressSet": entries}
        document = {"Response": {"TotalCount": 1, "NetworkInterfaceSet": [eni], "RequestId": "r"}}
    body = json.dumps(document).encode()
    assert 256 * 1024 < len(body) < MAX_BODY
    async with local_server(200, body) as (endpoint, hits):
        settings = Settings(dialect=dialect, endpoint=endpoint, retry=RETRY)
        async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
            async with asyncio.timeout(GUARD):
                info = await client.describe_eni(ENI)
    assert info is not None
    assert (info.primary_ip, len(info.secondary_ips), len(hits)) == (ips[0], count - 1, 1)


@pytest.mark.parametrize("oversized", [False, True], ids=["under-the-bound", "past-the-bound"])
async def test_answer_of_no_stated_length_is_read_to_its_bound(oversized: bool) -> None:
    """An answer that states no length (chunked) is read piece by piece: whole when it stays within
    MAX_BODY, refused as soon as it passes it (an answer that states its length is read at once)."""
    entries = [{"PrivateIpAddress": f"10.0.{i // 256}.{i % 256}", "Primary": i == 0} for i in range(3000)]
    eni = {"NetworkInterfaceId": ENI, "VpcId": VPC, "PrivateIpAddressSet": entries}
    body = json.dumps(
        {"Response": {"TotalCount": 1, "NetworkInterfaceSet": [eni], "RequestId": "r"}}
    ).encode()
    if oversized:
        body += b" " * MAX_BODY
    async with local_server(200, body, chunked=True) as (endpoint, hits):
        settings = Settings(dialect="v3", endpoint=endpoint, retry=RetryPolicy(attempts=1))
        async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings, clock=FakeClock()) as client:
            async with asyncio.timeout(GUARD):
                if oversized:
                    with pytest.raises(ProtocolError, match=f"answer larger than {MAX_BODY} bytes"):
                        await client.describe_eni(ENI)
                    return
                info = await client.describe_eni(ENI)
    assert info is not None
    assert (len(info.secondary_ips), len(hits)) == (2999, 1)


async def test_poll_of_a_garbled_task_ends_with_a_typed_error(client: EniClient) -> None:
    """Waiting on a task whose every answer is garbage polls on to the deadline, then ends in a typed
    timeout that says the task's state was never read: not a loop, and not a guess."""
    with mocked() as m:
        m.post(URLS[client.settings.dialect], status=200, body=b"<html>", repeat=True)
        with pytest.raises(TaskTimeoutError) as info:
            async with asyncio.timeout(GUARD):
                await client.wait_for_task("16284", timeout=60.0)
        sent = sum(len(calls) for calls in m.requests.values())
    assert info.value.last_status is None
    assert RETRY.attempts < sent < 200, (
        "each poll retried per the policy, and the polls bounded by the deadline"
    )


# -- a whole batch against a hostile server ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["v2", "v3"])
async def test_hostile_server_batch_gives_every_item_one_true_outcome(dialect: str) -> None:
    """Under the hostile fault profile every item, malformed ones included, gets one outcome that agrees
    with the simulator's ground truth, and the batch ends."""
    settings = Settings(
        dialect=dialect,
        retry=RetryPolicy(attempts=4, initial=0.05, maximum=0.5, deadline=30.0),
        poll=PollPolicy(timeout=600.0),
    )
    async with world(
        settings=settings, enis=40, ips_per_eni=4, seed=17, faults=load_fault_profile("hostile")
    ) as w:
        good = w.items()
        bad: list[object] = [
            ("vpc-x", good[0].eni_id, good[0].ips),
            (good[1].vpc_id, good[1].eni_id, ("10.0.0.999",)),
            (good[2].vpc_id, "eni-zzzzzzzz", ("10.9.9.9",)),
            "not a triple",
            (good[3].vpc_id, good[3].eni_id, ()),
        ]
        items = [*good[:20], *bad, *good[20:]]
        async with asyncio.timeout(60):
            outcomes = [outcome async for outcome in w.client.unassign_many(items, concurrency=8)]
        present = w.present()
    assert Counter(o.eni_id for o in outcomes) == Counter(as_item(i).eni_id for i in items)
    assert all(o.status in STATUSES for o in outcomes)
    assert [p for o in outcomes for p in check_against_truth(o.to_json(), present)] == []
    assert sum(o.status == "succeeded" for o in outcomes) > len(good) // 2, (
        "the hostile server left some good"
    )
