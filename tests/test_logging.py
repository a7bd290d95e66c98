"""Logs: every API call at DEBUG with its details, throttles, retries and reconciliation with their reason, no
handler configured by the library, and the CLI's human and JSON-lines formats on stderr."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from eni_async.cli import main
from eni_async.dialects import DESCRIBE, TASK_QUERY, UNASSIGN
from eni_async.policy import PollPolicy
from eni_async.settings import Settings
from eni_async.simulator import FaultProfile, FaultRates, Simulator
from tests.aioresp import mocked
from tests.batchhelpers import world

V3 = Settings(dialect="v3", poll=PollPolicy(timeout=300.0))
URL = "https://vpc.api.qcloud.com/v2/index.php"
VPC, ENI = "vpc-7t9nf3pu", "eni-m6dyj72l"
UNASSIGN_ARGS = ["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"]
SERVED = {"enis": 3, "ips_per_eni": 2, "seed": 5}


def calls(records: list[logging.LogRecord], action: str) -> list[logging.LogRecord]:
    """The DEBUG records of one action's calls."""
    return [r for r in records if r.levelno == logging.DEBUG and getattr(r, "action", None) == action]


async def test_every_call_is_logged_at_debug_with_its_details(caplog: pytest.LogCaptureFixture) -> None:
    """Each API call logs action, subject (ENI or task), request id, attempt, latency and result at DEBUG."""
    caplog.set_level(logging.DEBUG, logger="eni_async")
    async with world(settings=replace(V3, confirm="task")) as w:
        item = w.items()[0]
        await w.client.describe_eni(item.eni_id)
        result = await w.client.unassign(item.vpc_id, item.eni_id, item.ips)
    (submit,) = calls(caplog.records, UNASSIGN)
    assert (submit.subject, submit.attempt, submit.code) == (item.eni_id, 1, "Success")  # type: ignore[attr-defined]
    assert submit.request_id == result.request_ids[0]  # type: ignore[attr-defined]
    assert submit.latency_s >= 0  # type: ignore[attr-defined]
    assert f"request_id={result.request_ids[0]}" in submit.getMessage()
    describes = calls(caplog.records, DESCRIBE)  # ours, then unassign's look before submitting (API 3.0)
    assert len(describes) == 2
    assert {d.subject for d in describes} == {item.eni_id}  # type: ignore[attr-defined]
    queries = calls(caplog.records, TASK_QUERY)
    assert queries
    assert {q.subject for q in queries} == {f"task {result.task_ids[0]}"}  # type: ignore[attr-defined]
    assert all(q.request_id for q in queries)  # type: ignore[attr-defined]


async def test_throttles_warn_and_retries_inform_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    """A throttled answer logs a WARNING with its code and request id; its retry logs at INFO with the reason."""
    caplog.set_level(logging.INFO, logger="eni_async")
    async with world(settings=V3, rate_limits={UNASSIGN: 2}) as w:
        outcomes = [o async for o in w.client.unassign_many(w.items())]
    assert {o.status for o in outcomes} == {"succeeded"}
    throttles = [
        r for r in caplog.records if r.levelno == logging.WARNING and "throttled on" in r.getMessage()
    ]
    assert throttles
    assert all(r.code == "RequestLimitExceeded" and r.request_id for r in throttles)  # type: ignore[attr-defined]
    retries = [
        r for r in caplog.records if r.levelno == logging.INFO and r.getMessage().startswith("retrying")
    ]
    assert len(retries) == len(throttles)
    assert all("after RequestLimitExceeded" in r.getMessage() for r in retries)


async def test_an_ambiguous_submit_is_reconciled_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A submit whose answer is lost logs a WARNING saying why the ENI is described before resubmitting."""
    caplog.set_level(logging.INFO, logger="eni_async")
    lost = FaultProfile(name="lost", actions={UNASSIGN: FaultRates(drop_after=1.0)})
    async with world(faults=lost, enis=1, task_latency=(0.0, 0.0)) as w:
        items = w.items()
        outcomes = [o async for o in w.client.unassign_many(items)]
    # Gone, but never seen on the ENI by a describe of ours (API 2.0 does not look first): unknown, not guessed.
    assert [o.unknown for o in outcomes] == [list(items[0].ips)]
    (warning,) = [r for r in caplog.records if r.name == "eni_async.release" and r.levelno == logging.WARNING]
    assert "outcome unknown" in warning.getMessage()
    assert "describing the ENI" in warning.getMessage()
    decisions = [
        r.getMessage() for r in caplog.records if r.name == "eni_async.release" and r.levelno == logging.INFO
    ]
    assert any("never seen on the ENI" in d for d in decisions), "the decision is logged too"


def test_the_library_configures_no_handler() -> None:
    """Importing every module and running the CLI leaves every eni_async logger propagating, with no handler
    that writes anywhere."""
    import eni_async.cli_batch
    import eni_async.client_metrics
    import eni_async.simulator.command  # noqa: F401

    main(["--version"])
    loggers = [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("eni_async") and isinstance(logger, logging.Logger)
    ]
    assert loggers
    assert all(logger.propagate for logger in loggers)
    assert all(isinstance(h, logging.NullHandler) for logger in loggers for h in logger.handlers)


def ok(data: dict[str, Any], request_id: str) -> dict[str, Any]:
    return {"code": 0, "message": "", "codeDesc": "Success", "data": data, "requestId": request_id}


def json_lines(err: str) -> list[dict[str, Any]]:
    """Every stderr line, parsed; fails if any line is not one JSON object."""
    lines = [json.loads(line) for line in err.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-format", "json", "-vv", *UNASSIGN_ARGS],
        [*UNASSIGN_ARGS, "-vv", "--log-format", "json"],
        ["-v", *UNASSIGN_ARGS, "-v", "--log-format", "json"],
    ],
    ids=["before-command", "after-command", "split"],
)
def test_json_log_format_writes_one_object_per_line(
    creds: None, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """``--log-format json`` (before or after the command) writes one JSON object per stderr line, with the
    call's fields, and ``-v`` counts wherever it is given."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}, "req-submit"))
        m.post(URL, payload=ok({"status": 0}, "req-query"))
        assert main(argv) == 0
    lines = json_lines(capsys.readouterr().err)
    submit = next(line for line in lines if line.get("action") == UNASSIGN and line["level"] == "DEBUG")
    assert submit["logger"] == "eni_async"
    assert (submit["subject"], submit["attempt"], submit["request_id"]) == (ENI, 1, "req-submit")
    assert isinstance(submit["latency_s"], float)
    assert any(line["level"] == "INFO" and line.get("task_id") == "16284" for line in lines)


def test_default_log_format_is_human_readable(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--log-format``, ``-v`` lines read as time, level, logger and message, not JSON."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}, "req-submit"))
        m.post(URL, payload=ok({"status": 0}, "req-query"))
        assert main([*UNASSIGN_ARGS, "-v"]) == 0
    err = capsys.readouterr().err
    assert err
    for line in err.splitlines():
        assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) eni_async[.\w]*: ", line), line
    assert "submitted release of 1 IP(s) from eni-m6dyj72l: task 16284 request_id=req-submit" in err


def test_without_v_a_success_logs_nothing(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """At the default level (WARNING) a successful command writes nothing on stderr."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}, "req-submit"))
        m.post(URL, payload=ok({"status": 0}, "req-query"))
        assert main(UNASSIGN_ARGS) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("log_format", ["human", "json"])
def test_a_failed_task_message_carries_the_request_id(
    creds: None, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    """The error shown for a FAILED task names the submit's request id, in both log formats."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 5}, "req-submit"))
        m.post(URL, payload=ok({"status": 1}, "req-query"))
        assert main([*UNASSIGN_ARGS, "--log-format", log_format]) == 1
    captured = capsys.readouterr()
    assert "request id req-submit" in json.loads(captured.out)["error"]["message"]
    assert "request id req-submit" in captured.err
    if log_format == "json":
        (line,) = json_lines(captured.err)
        assert line["level"] == "ERROR"


def test_an_api_error_message_carries_the_request_id(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """An API error answer is shown with its code and request id."""
    with mocked() as m:
        m.post(
            URL,
            payload={
                "code": 4000,
                "message": "primary",
                "codeDesc": "InvalidPrivateip.IsPrimary",
                "requestId": "r-9",
            },
        )
        assert main(UNASSIGN_ARGS) == 1
    err = capsys.readouterr().err
    assert "InvalidPrivateip.IsPrimary" in err
    assert "request id r-9" in err


def test_main_leaves_logging_as_it_found_it(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """After ``main`` returns, the eni_async logger has its handlers, level and propagation back."""
    logger = logging.getLogger("eni_async")
    before = (logger.handlers[:], logger.level, logger.propagate)
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}, "req-submit"))
        m.post(URL, payload=ok({"status": 0}, "req-query"))
        assert main(["-vv", "--log-format", "json", *UNASSIGN_ARGS]) == 0
    assert (logger.handlers, logger.level, logger.propagate) == before


async def test_batch_json_logs_keep_stderr_json_lines(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch ... -v --log-format json`` writes only JSON lines on stderr, the summary included."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.csv"
    rows = "".join(f"{e['vpc_id']},{e['eni_id']},{ip}\n" for e in enis for ip in e["secondary_ips"])
    source.write_text("vpc_id,eni_id,ip\n" + rows)
    argv = ["batch", str(source), "--endpoint", endpoint, "--output", str(tmp_path / "out.jsonl")]
    code = await asyncio.to_thread(main, [*argv, "-v", "--log-format", "json"])
    lines = json_lines(capsys.readouterr().err)
    assert code == 0
    assert sum(line["message"].startswith("submitted release") for line in lines) == len(enis)
    summary = lines[-1]
    assert summary["message"].startswith("batch finished")
    assert (summary["enis"], summary["statuses"], summary["released"]) == (3, {"succeeded": 3}, 6)
