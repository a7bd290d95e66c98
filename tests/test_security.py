"""Security: TLS verification is on unless explicitly turned off (with a warning), a self-signed simulator is
reachable only when its certificate is trusted explicitly, and no secret ever leaks.

Secrets are the secret key, the session token, and every signature actually sent (the API 2.0 ``Signature``
parameter and the API 3.0 ``Signature=`` of the ``Authorization`` header, recorded at the transport). The
client, a batch and the CLI run at DEBUG logging, and every log line, exception, output line and journal is
scanned for each of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import traceback
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
import trustme

from eni_async.cli import main
from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.dialects import SignContext, get_dialect
from eni_async.errors import (
    ApiError,
    AuthError,
    ConfigError,
    ConnectError,
    EniAsyncError,
    OutcomeUnknownError,
    ProtocolError,
    SignatureError,
    TaskFailedError,
)
from eni_async.journal import SqliteJournal
from eni_async.models import Credentials, HttpRequest, HttpResponse
from eni_async.outcomes import Item, Outcome
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig, load_fault_profile, running
from eni_async.testing import jsonl_lines
from eni_async.transport import AiohttpTransport
from tests.conftest import FAST_TOML

SECRET_ID = "AKIDsecurityTESTid0123456789abcdef"
SECRET_KEY = "SKEYnever-shown-0123456789ABCDEFghij"
WRONG_KEY = "WKEYalso-never-shown-9876543210zyxw"
TOKEN = "TOKENsession-never-shown-5f1e2d3c4b5a"
FAST = Settings(
    retry=RetryPolicy(attempts=3, initial=0.01, maximum=0.02, deadline=10.0),
    poll=PollPolicy(first=0.01, initial=0.01, maximum=0.05, timeout=10.0),
)


# -- TLS ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    """A private CA, its PEM file, and a server context whose certificate it signed."""

    ca: trustme.CA
    ca_file: Path
    server: ssl.SSLContext


def make_tls(tmp_path: Path, *names: str) -> Tls:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server)
    return Tls(ca, ca_file, server)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1 (an IP SAN)."""
    return make_tls(tmp_path, "127.0.0.1")


@asynccontextmanager
async def https_sim(server: ssl.SSLContext, **config: Any) -> AsyncIterator[tuple[Simulator, str]]:
    """A real-time simulator served over HTTPS on 127.0.0.1, tasks ending at once."""
    defaults: dict[str, Any] = {"enis": 3, "ips_per_eni": 2, "seed": 21, "task_latency": (0.0, 0.0)}
    sim = Simulator(SimulatorConfig(**(defaults | config)))
    async with running(sim, host="127.0.0.1", port=0, ssl_context=server) as served:
        assert served.endpoint.startswith("https://127.0.0.1:")
        yield sim, served.endpoint


def first_eni(sim: Simulator) -> dict[str, Any]:
    eni: dict[str, Any] = sim.ground_truth()["enis"][0]
    return eni


def still_assigned(sim: Simulator, eni_id: str) -> list[str]:
    return next(list(e["secondary_ips"]) for e in sim.ground_truth()["enis"] if e["eni_id"] == eni_id)


def test_tls_verification_is_on_by_default() -> None:
    """Settings verify certificates unless told otherwise, and trust the system's CAs by default."""
    assert Settings().verify_tls is True
    assert Settings().ca_file == ""


async def test_untrusted_self_signed_certificate_is_refused_with_a_typed_error(tls: Tls) -> None:
    """With default settings, a server whose certificate no trusted CA signed gives ConnectError; no request
    reaches it and nothing is released."""
    async with https_sim(tls.server) as (sim, endpoint):
        eni = first_eni(sim)
        settings = replace(FAST, endpoint=endpoint, region=sim.region)
        async with EniClient(sim.credentials, settings) as client:
            with pytest.raises(ConnectError, match=r"(?i)certificate") as caught:
                await client.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])
            with pytest.raises(ConnectError):
                await client.describe_eni(eni["eni_id"])
        assert not isinstance(caught.value, OutcomeUnknownError)
        assert sum(sim.stats()["requests"].values()) == 0
        assert still_assigned(sim, eni["eni_id"]) == eni["secondary_ips"]


async def test_trusting_the_ca_file_releases_ips_over_https(
    tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    """Settings(ca_file=PEM) trusts the self-signed simulator: IPs are released, with no TLS warning."""
    caplog.set_level(logging.WARNING)
    async with https_sim(tls.server) as (sim, endpoint):
        eni = first_eni(sim)
        settings = replace(FAST, endpoint=endpoint, region=sim.region, ca_file=str(tls.ca_file))
        async with EniClient(sim.credentials, settings) as client:
            result = await client.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])
        assert result.released == tuple(eni["secondary_ips"])
        assert still_assigned(sim, eni["eni_id"]) == []
    assert not [r for r in caplog.records if "TLS" in r.getMessage()]


async def test_trusting_an_ssl_context_releases_ips_over_https(tls: Tls) -> None:
    """EniClient(ssl_context=ctx) with the CA loaded trusts the simulator and releases IPs."""
    context = ssl.create_default_context()
    tls.ca.configure_trust(context)
    async with https_sim(tls.server) as (sim, endpoint):
        eni = first_eni(sim)
        settings = replace(FAST, endpoint=endpoint, region=sim.region)
        async with EniClient(sim.credentials, settings, ssl_context=context) as client:
            result = await client.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])
        assert result.released == tuple(eni["secondary_ips"])


async def test_a_certificate_for_another_host_is_refused_even_from_a_trusted_ca(tmp_path: Path) -> None:
    """Verification checks the host name too: a trusted CA's certificate for another name is refused."""
    other = make_tls(tmp_path, "vpc.example.test")
    async with https_sim(other.server) as (sim, endpoint):
        eni = first_eni(sim)
        settings = replace(FAST, endpoint=endpoint, region=sim.region, ca_file=str(other.ca_file))
        async with EniClient(sim.credentials, settings) as client:
            with pytest.raises(ConnectError):
                await client.describe_eni(eni["eni_id"])
        assert sum(sim.stats()["requests"].values()) == 0


async def test_turning_verification_off_is_explicit_and_warns(
    tls: Tls, caplog: pytest.LogCaptureFixture
) -> None:
    """verify_tls=False reaches the untrusted simulator, and logs a WARNING saying verification is off."""
    caplog.set_level(logging.DEBUG)
    async with https_sim(tls.server) as (sim, endpoint):
        eni = first_eni(sim)
        settings = replace(FAST, endpoint=endpoint, region=sim.region, verify_tls=False)
        async with EniClient(sim.credentials, settings) as client:
            result = await client.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])
        assert result.released == tuple(eni["secondary_ips"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("eni_async")]
    assert any("verification is OFF" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]


@pytest.mark.parametrize(
    ("content", "why"), [(None, "missing"), (b"not a certificate\n", "garbage"), (b"", "empty")]
)
async def test_an_unusable_ca_file_is_a_config_error(tmp_path: Path, content: bytes | None, why: str) -> None:
    """A ca_file that is missing, empty or not PEM is a ConfigError naming ca_file, before any request."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    settings = replace(FAST, endpoint="https://127.0.0.1:9", ca_file=str(path))
    with pytest.raises(ConfigError, match="ca_file"):
        async with EniClient(Credentials(SECRET_ID, SECRET_KEY), settings):
            pass


async def test_cli_over_https_trusts_only_what_it_is_told(
    tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI refuses the self-signed simulator by default (exit 1), accepts it with ca_file (exit 0), and
    with verify_tls = false accepts it while warning on stderr."""
    async with https_sim(tls.server, enis=3, ips_per_eni=1) as (sim, endpoint):
        monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", sim.credentials.secret_id)
        monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", sim.credentials.secret_key)
        enis = sim.ground_truth()["enis"]
        configs = {
            "default": FAST_TOML,
            "ca_file": f'ca_file = "{tls.ca_file}"\n' + FAST_TOML,
            "off": "verify_tls = false\n" + FAST_TOML,
        }
        results: dict[str, tuple[int, str, str]] = {}
        for (name, text), eni in zip(configs.items(), enis, strict=True):
            config = tmp_path / f"{name}.toml"
            config.write_text(text)
            argv = ["unassign", "--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"], "--ip"]
            argv += [
                eni["secondary_ips"][0],
                "--endpoint",
                endpoint,
                "--region",
                sim.region,
                "--config",
                str(config),
            ]
            code = await asyncio.to_thread(main, argv)
            captured = capsys.readouterr()
            results[name] = (code, captured.out, captured.err)
    code, out, err = results["default"]
    assert code == 1
    assert json.loads(out)["error"]["code"] == "ConnectFailed"
    assert "certificate" in out.lower()
    assert "Traceback" not in err
    code, out, err = results["ca_file"]
    assert (code, json.loads(out)["status"]) == (0, "succeeded")
    assert "verification is OFF" not in err
    code, out, err = results["off"]
    assert (code, json.loads(out)["status"]) == (0, "succeeded")
    assert "verification is OFF" in err


# -- secrets never leak ------------------------------------------------------------------------------------

V3_SIGNATURE = re.compile(r"Signature=([0-9a-f]+)")


def signatures_of(request: HttpRequest) -> list[str]:
    """The signatures a request carries (v2 form or query ``Signature``, v3 ``Authorization``)."""
    found: list[str] = []
    authorization = request.headers.get("Authorization")
    if authorization:
        found += V3_SIGNATURE.findall(authorization)
    if request.body and "x-www-form-urlencoded" in request.headers.get("Content-Type", ""):
        found += parse_qs(request.body.decode())["Signature"]
    query = urlsplit(request.url).query
    if query:
        found += parse_qs(query).get("Signature", [])
    return found


@pytest.fixture
def sent_signatures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature sent through any ``AiohttpTransport`` during the test."""
    seen: list[str] = []
    original = AiohttpTransport.send

    async def recording(self: AiohttpTransport, request: HttpRequest) -> HttpResponse:
        seen.extend(signatures_of(request))
        return await original(self, request)

    monkeypatch.setattr(AiohttpTransport, "send", recording)
    return seen


def forms(secret: str) -> set[str]:
    """A secret as it could appear in text: raw, URL-encoded (form or path), JSON-escaped."""
    return {secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1]}


def secrets(signatures: Iterable[str], *keys: str) -> dict[str, str]:
    """needle -> what it is, for every form of every secret."""
    table = {form: "secret key" for key in keys for form in forms(key)}
    table |= {form: "token" for form in forms(TOKEN)}
    table |= {form: "signature" for sig in signatures for form in forms(sig)}
    return table


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr, attributes and the formatted chain of an exception."""
    yield str(exc)
    yield repr(exc)
    yield repr(vars(exc))
    yield "".join(traceback.format_exception(exc))
    for inner in (exc.__cause__, exc.__context__, getattr(exc, "cause", None)):
        if isinstance(inner, BaseException) and inner is not exc:
            yield from exception_texts(inner)


def log_texts(records: Iterable[logging.LogRecord]) -> Iterator[str]:
    for record in records:
        yield record.getMessage()
        yield repr(record.args)
        if record.exc_info and record.exc_info[1] is not None:
            yield from exception_texts(record.exc_info[1])
        if record.exc_text:
            yield record.exc_text


def assert_no_leak(texts: Iterable[str], table: dict[str, str]) -> int:
    """Fail naming the first secret found in any text; return how many texts were scanned."""
    scanned = 0
    for text in texts:
        scanned += 1
        for needle, what in table.items():
            assert needle not in text, f"{what} leaked in: {text[:300]!r}"
    return scanned


def read_all(folder: Path, pattern: str) -> str:
    """Every file matching ``pattern`` (a SQLite journal and its -wal/-shm companions), as text."""
    return b"".join(path.read_bytes() for path in sorted(folder.glob(pattern))).decode("latin-1")


def test_the_scanner_finds_each_secret_in_each_form() -> None:
    """The leak scan itself finds a key, the token or a signature, raw, URL-encoded or JSON-escaped."""
    signature = "ab+c/d=="
    table = secrets([signature], SECRET_KEY)
    for leaked in (SECRET_KEY, TOKEN, signature, quote_plus(signature), quote(signature, safe="")):
        with pytest.raises(AssertionError, match="leaked"):
            assert_no_leak(["fine", f"log line with {leaked} inside"], table)
    assert assert_no_leak(["fine", "also fine"], table) == 2


def outcome_texts(outcomes: Iterable[Outcome]) -> Iterator[str]:
    for outcome in outcomes:
        yield json.dumps(outcome.to_json())
        yield repr(outcome)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, "eni_async" included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="eni_async")
    return caplog


@asynccontextmanager
async def sim_world(
    dialect: str, key: str, *, faults: str = "hostile", **config: Any
) -> AsyncIterator[tuple[Simulator, EniClient]]:
    """A fake-clock simulator knowing SECRET_ID/SECRET_KEY, and a client signing with ``key`` and TOKEN."""
    clock = FakeClock()
    defaults: dict[str, Any] = {"enis": 12, "ips_per_eni": 3, "seed": 29, "task_latency": (1.0, 0.3)}
    sim = Simulator(
        SimulatorConfig(
            **(defaults | config), keys={SECRET_ID: SECRET_KEY}, faults=load_fault_profile(faults)
        ),
        clock=clock,
    )
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(
            endpoint=server.endpoint,
            region=sim.region,
            dialect=dialect,
            retry=RetryPolicy(attempts=4, initial=0.05, maximum=0.5, deadline=30.0),
            poll=PollPolicy(timeout=300.0),
        )
        async with EniClient(Credentials(SECRET_ID, key, TOKEN), settings, clock=clock) as client:
            yield sim, client


DIALECTS = ["v2", "v3"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_client_calls_leak_no_secret(
    dialect: str, debug_logs: pytest.LogCaptureFixture, sent_signatures: list[str]
) -> None:
    """Single calls under a hostile server, successes and failures alike, at DEBUG: no secret in any log
    line, exception or result."""
    texts: list[str] = []
    async with sim_world(dialect, SECRET_KEY) as (sim, client):
        enis = sim.ground_truth()["enis"]
        texts += [repr(client), str(client)]
        calls = [
            client.unassign(enis[0]["vpc_id"], enis[0]["eni_id"], enis[0]["secondary_ips"]),
            client.unassign(enis[1]["vpc_id"], enis[1]["eni_id"], ["10.99.0.1"]),
            client.unassign(enis[2]["vpc_id"], enis[2]["eni_id"], [enis[2]["primary_ip"]]),
            client.unassign(enis[3]["vpc_id"], "eni-zzzzzzzz", ["10.0.0.2"]),
            client.describe_eni(enis[4]["eni_id"]),
            client.task_state("99999"),
            client.submit_unassign(enis[5]["vpc_id"], enis[5]["eni_id"], enis[5]["secondary_ips"]),
        ]
        for call in calls:
            try:
                texts.append(repr(await call))
            except EniAsyncError as exc:
                texts += exception_texts(exc)
    assert sent_signatures, "no signature was recorded: the scan would prove nothing"
    table = secrets(sent_signatures, SECRET_KEY)
    assert assert_no_leak([*texts, *log_texts(debug_logs.records)], table) > len(calls)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_batch_with_failures_and_a_journal_leaks_no_secret(
    dialect: str, tmp_path: Path, debug_logs: pytest.LogCaptureFixture, sent_signatures: list[str]
) -> None:
    """A journalled batch with failing items under a hostile server, at DEBUG: no secret in any log line,
    outcome or the journal file."""
    journal_path = tmp_path / "batch.journal"
    async with sim_world(dialect, SECRET_KEY, enis=16) as (sim, client):
        enis = sim.ground_truth()["enis"]
        items = [Item(e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"])) for e in enis[:12]]
        items += [
            Item(enis[12]["vpc_id"], enis[12]["eni_id"], ("10.99.0.1",)),
            Item(enis[13]["vpc_id"], enis[13]["eni_id"], (enis[13]["primary_ip"],)),
            Item(enis[14]["vpc_id"], "eni-zzzzzzzz", ("10.0.0.2",)),
        ]
        async with SqliteJournal(journal_path) as journal:
            outcomes = [o async for o in client.unassign_many(items, concurrency=4, journal=journal)]
    assert len(outcomes) == len(items)
    assert any(o.status != "succeeded" for o in outcomes)
    assert sent_signatures
    table = secrets(sent_signatures, SECRET_KEY)
    journal_text = read_all(tmp_path, "batch.journal*")
    assert_no_leak([*outcome_texts(outcomes), *log_texts(debug_logs.records), journal_text], table)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_auth_failure_with_a_wrong_key_leaks_no_secret(
    dialect: str, debug_logs: pytest.LogCaptureFixture, sent_signatures: list[str]
) -> None:
    """A wrong secret key stops the batch with an auth error; neither key, the token nor any signature
    appears in the outcomes, the error or the logs."""
    async with sim_world(dialect, WRONG_KEY, faults="none") as (sim, client):
        items = [
            Item(e["vpc_id"], e["eni_id"], tuple(e["secondary_ips"])) for e in sim.ground_truth()["enis"]
        ]
        outcomes = [o async for o in client.unassign_many(items, concurrency=2)]
        with pytest.raises(AuthError) as caught:
            await client.describe_eni(items[0].eni_id)
    assert {o.status for o in outcomes} <= {"failed", "not_attempted"}
    assert any(o.error and o.error["code"].startswith("AuthFailure") for o in outcomes)
    assert sent_signatures
    table = secrets(sent_signatures, SECRET_KEY, WRONG_KEY)
    texts = [*outcome_texts(outcomes), *exception_texts(caught.value), *log_texts(debug_logs.records)]
    assert_no_leak(texts, table)


@pytest.fixture
async def cli_sim(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[tuple[Simulator, str]]:
    """A real-time simulator knowing SECRET_ID/SECRET_KEY; the environment holds them and TOKEN."""
    sim = Simulator(
        SimulatorConfig(enis=6, ips_per_eni=2, seed=31, task_latency=(0.0, 0.0), keys={SECRET_ID: SECRET_KEY})
    )
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", SECRET_ID)
        monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
        monkeypatch.setenv("TENCENTCLOUD_TOKEN", TOKEN)
        config = tmp_path / "fast.toml"
        config.write_text(FAST_TOML)
        monkeypatch.setenv("ENI_ASYNC_CONFIG", str(config))
        yield sim, server.endpoint


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("log_format", ["human", "json"])
async def test_cli_at_debug_leaks_no_secret(
    dialect: str,
    log_format: str,
    cli_sim: tuple[Simulator, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug_logs: pytest.LogCaptureFixture,
    sent_signatures: list[str],
) -> None:
    """unassign and a journalled batch (with failures), then a wrong key, all with -vv: no secret on stdout,
    stderr, the output file or the journal."""
    sim, endpoint = cli_sim
    enis = sim.ground_truth()["enis"]
    common = ["--endpoint", endpoint, "--region", sim.region, "--dialect", dialect]
    verbose = ["-vv", "--log-format", log_format]
    source = tmp_path / "in.jsonl"
    odd = [
        {"vpc_id": enis[4]["vpc_id"], "eni_id": enis[4]["eni_id"], "ips": ["10.99.0.1"]},
        {"vpc_id": enis[4]["vpc_id"], "eni_id": "eni-zzzzzzzz", "ips": ["10.0.0.2"]},
    ]
    source.write_text(jsonl_lines(enis[1:4]) + jsonl_lines(odd, ips="ips") + "{broken\n")
    journal, output = tmp_path / "b.journal", tmp_path / "out.jsonl"
    first = enis[0]
    runs = [
        [
            *verbose,
            "unassign",
            "--vpc-id",
            first["vpc_id"],
            "--eni-id",
            first["eni_id"],
            "--ip",
            first["secondary_ips"][0],
            *common,
        ],
        [
            *verbose,
            "batch",
            str(source),
            "--journal",
            str(journal),
            "--output",
            str(output),
            "--no-progress",
            *common,
        ],
        [*verbose, "status", str(journal)],
    ]
    codes = [await asyncio.to_thread(main, argv) for argv in runs]
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", WRONG_KEY)
    wrong = [*verbose, "unassign", "--vpc-id", enis[5]["vpc_id"], "--eni-id", enis[5]["eni_id"], "--ip"]
    codes.append(await asyncio.to_thread(main, [*wrong, enis[5]["secondary_ips"][0], *common]))
    captured = capsys.readouterr()
    assert codes == [0, 1, 0, 1]
    assert "DEBUG" in captured.err, "the run was not at DEBUG: the scan would prove little"
    assert sent_signatures
    table = secrets(sent_signatures, SECRET_KEY, WRONG_KEY)
    files = [read_all(tmp_path, "out.jsonl"), read_all(tmp_path, "b.journal*")]
    assert_no_leak([captured.out, captured.err, *files, *log_texts(debug_logs.records)], table)


# -- reprs and messages ------------------------------------------------------------------------------------


def test_reprs_show_no_secret() -> None:
    """repr() and str() of credentials, client, sign context, signed requests, settings and errors hold no
    secret key, token or signature."""
    creds = Credentials(SECRET_ID, SECRET_KEY, TOKEN)
    ctx = SignContext(creds, "https://vpc.tencentcloudapi.com", "ap-guangzhou", 1_700_000_000, 42)
    requests = [
        get_dialect(name).build_unassign(ctx, "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"])
        for name in ("v2", "v3")
    ]
    signatures = [sig for request in requests for sig in signatures_of(request)]
    assert len(signatures) == 2
    cause = ProtocolError(
        "UnassignPrivateIpAddresses: HTTP 502", action="UnassignPrivateIpAddresses", status=502
    )
    values: list[object] = [
        creds,
        ctx,
        *requests,
        EniClient(creds),
        EniClient(creds, Settings(dialect="v3")),
        Settings(),
        SignatureError("AuthFailure.SignatureFailure", "signature mismatch", action="X", request_id="r"),
        ApiError("InternalError", "oops"),
        OutcomeUnknownError(
            "UnassignPrivateIpAddresses", "vpc-7t9nf3pu", "eni-m6dyj72l", ["10.0.0.2"], cause
        ),
        TaskFailedError("16284", eni_id="eni-m6dyj72l", ips=["10.0.0.2"], output="failed"),
    ]
    texts = [text for value in values for text in (repr(value), str(value), f"{value}", f"{value!r}")]
    assert SECRET_ID in repr(creds), "the SecretId is not secret and helps tell keys apart"
    assert_no_leak(texts, secrets(signatures, SECRET_KEY))


def test_settings_repr_hides_proxy_password() -> None:
    """A password in the proxy URL is a secret too: repr() and str() of Settings do not show it."""
    settings = Settings(proxy="http://ops:hunter2-proxy-pass@proxy.internal:3128")
    assert "hunter2-proxy-pass" not in repr(settings)
    assert "hunter2-proxy-pass" not in str(settings)
