"""The command line through ``main([...])``: output, exit codes, and no traceback for bad input."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eni_async import __version__
from eni_async.cli import main
from eni_async.simulator import Simulator
from eni_async.testing import jsonl_lines
from tests.aioresp import mocked
from tests.conftest import FAST_TOML

URL = "https://vpc.api.qcloud.com/v2/index.php"
VPC, ENI = "vpc-7t9nf3pu", "eni-m6dyj72l"
SERVED = {"enis": 8, "ips_per_eni": 3, "seed": 5}


# The keys of every outcome line, from batch and unassign alike ("decisions" and "line" when there are any).
SCHEMA = {
    "vpc_id", "eni_id", "ips", "status", "released", "not_released", "unknown", "absent", "confirmed_by",
    "task_ids", "request_ids", "error", "attempts", "elapsed_s",
}  # fmt: skip


def ok(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 0, "message": "", "codeDesc": "Success", "data": data}


def test_unassign_success_prints_one_json_object(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """unassign prints status, task ids and released IPs as one JSON object, and exits 0."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}))
        m.post(URL, payload=ok({"status": 0}))
        code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--ip", "10.0.0.3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "succeeded"
    assert out["task_ids"] == ["16284"]
    assert out["released"] == ["10.0.0.2", "10.0.0.3"]
    assert out["error"] is None


def test_unassign_task_failure_exits_1(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A FAILED task gives status failed, the TaskFailed code, and exit 1."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 5}))
        m.post(URL, payload=ok({"status": 1}))
        code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["status"] == "failed"
    assert out["error"]["code"] == "TaskFailed"
    assert out["task_ids"] == ["5"]


def test_unassign_api_error_exits_1(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A business error is reported with its code and message, exit 1."""
    with mocked() as m:
        m.post(URL, payload={"code": 4000, "message": "primary", "codeDesc": "InvalidPrivateip.IsPrimary"})
        code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["error"]["code"] == "InvalidPrivateip.IsPrimary"


def test_no_wait_prints_submitted(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """--no-wait submits, prints status submitted with the task id, and never polls."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 9}))
        code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--no-wait"])
    out = json.loads(capsys.readouterr().out)
    assert (code, out["status"], out["task_ids"]) == (0, "submitted", ["9"])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["unassign", "--vpc-id", "vpc-BAD", "--eni-id", ENI, "--ip", "10.0.0.2"], "vpc_id"),
        (["unassign", "--vpc-id", VPC, "--eni-id", "eni-1", "--ip", "10.0.0.2"], "eni_id"),
        (["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.256"], "10.0.0.256"),
        (["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--ip", "10.0.0.2"], "duplicate"),
        (["unassign", "--vpc-id", VPC, "--eni-id", ENI], "--ip"),
        (
            ["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--endpoint", "ftp://x"],
            "endpoint",
        ),
        (["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--timeout", "-1"], "--timeout"),
        (["batch", "/nonexistent/file.csv"], "cannot read"),
        (["batch", "items.txt"], ".csv"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_request(
    creds: None, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    """Bad input exits 2 with a one-line message naming the problem, no traceback and no request."""
    with mocked() as m:
        code = main(argv)
        assert m.requests == {}
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_credentials_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without credentials anywhere, unassign exits 2 and says where it looked."""
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID", raising=False)
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"])
    assert code == 2
    assert "TENCENTCLOUD_SECRET_ID" in capsys.readouterr().err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version; every command's --help shows an example."""
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    for command in ("unassign", "batch", "demo", "simulate", "resume", "status", "config"):
        assert main([command, "--help"]) == 0
        assert "example: eni-async" in capsys.readouterr().out


async def test_batch_csv_end_to_end_matches_ground_truth(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """batch on a CSV (rows of one ENI apart) writes one line per ENI that agrees with the simulator."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    rows = [(e["vpc_id"], e["eni_id"], ip) for e in enis for ip in e["secondary_ips"]]
    rows = rows[::2] + rows[1::2]  # split each ENI's rows apart
    source = tmp_path / "in.csv"
    source.write_text("vpc_id,eni_id,ip\n" + "".join(f"{v},{e},{ip}\n" for v, e, ip in rows))
    output = tmp_path / "out.jsonl"
    code = await asyncio.to_thread(
        main, ["batch", str(source), "--endpoint", endpoint, "--region", sim.region, "--output", str(output)]
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert code == 0
    assert len(lines) == len(enis)
    assert {line["status"] for line in lines} == {"succeeded"}
    assert all(not e["secondary_ips"] for e in sim.ground_truth()["enis"])
    keys = {
        "vpc_id",
        "eni_id",
        "ips",
        "status",
        "released",
        "not_released",
        "task_ids",
        "request_ids",
        "error",
        "attempts",
        "elapsed_s",
    }
    assert all(keys <= set(line) for line in lines)


async def test_batch_jsonl_reports_malformed_lines_and_runs_the_rest(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """A malformed JSON line is its own failed outcome with its line number; the rest succeed; exit 1."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"][:3]
    good = jsonl_lines(enis).splitlines()
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([good[0], "{not json", good[1], '{"vpc_id": "vpc-x"}', good[2]]) + "\n")
    output = tmp_path / "out.jsonl"
    code = await asyncio.to_thread(
        main, ["batch", str(source), "--endpoint", endpoint, "--output", str(output)]
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert code == 1
    bad = sorted((line["line"], line["error"]["code"]) for line in lines if line["status"] == "failed")
    assert bad == [(2, "InvalidInput"), (4, "InvalidInput")]
    assert sum(line["status"] == "succeeded" for line in lines) == 3


async def test_batch_with_journal_then_status_and_resume(
    served: tuple[Simulator, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journalled batch finishes every item; status counts them; resuming a finished journal does nothing."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "batch.journal"
    args = [
        "batch",
        str(source),
        "--endpoint",
        endpoint,
        "--journal",
        str(journal),
        "--output",
        str(tmp_path / "o"),
    ]
    assert await asyncio.to_thread(main, args) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["status", str(journal)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["items"]["finished"] == len(enis)
    assert status["outcomes"] == {"succeeded": len(enis)}
    before = sum(sim.stats()["requests"].values())
    assert await asyncio.to_thread(main, ["resume", str(journal)]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert sum(sim.stats()["requests"].values()) == before
    assert await asyncio.to_thread(main, args) == 2, "a used journal is not silently reused"


def test_demo_reports_no_mismatch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo releases every seeded IP and prints 'mismatches: 0', exit 0."""
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    monkeypatch.setenv("ENI_ASYNC_CONFIG", str(config))
    code = main(["demo", "--enis", "6", "--ips-per-eni", "12", "--task-latency", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "mismatches: 0" in out.splitlines()


async def test_every_command_speaks_api_3(served: tuple[Simulator, str], tmp_path: Path) -> None:
    """unassign, batch and demo work end to end with --dialect v3."""
    sim, endpoint = served
    first, *rest = sim.ground_truth()["enis"]
    code = await asyncio.to_thread(
        main,
        ["unassign", "--dialect", "v3", "--endpoint", endpoint, "--region", sim.region,
         "--vpc-id", first["vpc_id"], "--eni-id", first["eni_id"], *[a for ip in first["secondary_ips"] for a in ("--ip", ip)]],
    )  # fmt: skip
    assert code == 0
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(rest))
    output = tmp_path / "out.jsonl"
    args = ["batch", str(source), "--dialect", "v3", "--endpoint", endpoint, "--output", str(output)]
    assert await asyncio.to_thread(main, args) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert {line["status"] for line in lines} == {"succeeded"}
    assert all(line["request_ids"] == line["task_ids"] for line in lines), (
        "API 3.0: the RequestId is the task id"
    )
    assert all(not e["secondary_ips"] for e in sim.ground_truth()["enis"])
    demo = ["demo", "--dialect", "v3", "--enis", "4", "--task-latency", "0", "--no-progress"]
    assert await asyncio.to_thread(main, demo) == 0


# -- conventions: profile, region, settings from the environment -------------------------------------------


async def test_profile_option_picks_the_credentials_section_and_its_region(
    served: tuple[Simulator, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--profile NAME reads [NAME] of ~/.tencentcloud/credentials, and -v logs the region it names."""
    sim, endpoint = served
    monkeypatch.delenv("TENCENTCLOUD_SECRET_ID")
    monkeypatch.delenv("TENCENTCLOUD_SECRET_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".tencentcloud").mkdir()
    (tmp_path / ".tencentcloud" / "credentials").write_text(
        "[default]\nsecret_id = AKIDwrong\nsecret_key = wrong\n"
        f"[ops]\nsecret_id = {sim.credentials.secret_id}\nsecret_key = {sim.credentials.secret_key}\n"
        f"region = {sim.region}\n"
    )
    eni = sim.ground_truth()["enis"][0]
    argv = ["unassign", "-v", "--profile", "ops", "--endpoint", endpoint, "--vpc-id", eni["vpc_id"],
            "--eni-id", eni["eni_id"], "--ip", eni["secondary_ips"][0]]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    err = capsys.readouterr().err
    assert f"region {sim.region} (from {tmp_path / '.tencentcloud' / 'credentials'} [ops])" in err


async def test_tccli_profile_variable_names_the_profile(
    served: tuple[Simulator, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TCCLI_PROFILE names the profile, which then beats the environment for keys and region: the profile's
    keys sign (the environment's would be refused) and its region is used, not TENCENTCLOUD_REGION's."""
    sim, endpoint = served
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDnotknownbythesimulator")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "wrong")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TCCLI_PROFILE", "ops")
    monkeypatch.setenv("TENCENTCLOUD_REGION", "ap-elsewhere")
    (tmp_path / ".tencentcloud").mkdir()
    (tmp_path / ".tencentcloud" / "credentials").write_text(
        f"[ops]\nsecret_id = {sim.credentials.secret_id}\nsecret_key = {sim.credentials.secret_key}\n"
        f"region = {sim.region}\n"
    )
    eni = sim.ground_truth()["enis"][1]
    argv = ["unassign", "-v", "--endpoint", endpoint, "--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"],
            "--ip", eni["secondary_ips"][0]]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    err = capsys.readouterr().err
    assert (
        f"region {sim.region} (from {tmp_path / '.tencentcloud' / 'credentials'} [ops]), profile ops" in err
    )
    assert "TENCENTCLOUD_REGION not read" in err
    assert "TENCENTCLOUD_SECRET_ID in the environment not read" in err


def test_config_prints_settings_with_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``config`` prints the settings in force: ENI_ASYNC_* applied, fractional rates kept."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ENI_ASYNC_RATE_LIMITS_TASK_QUERY", "6.5")
    monkeypatch.setenv("ENI_ASYNC_DIALECT", "v3")
    assert main(["config", "--region", "ap-shanghai"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["rate_limits"]["task_query"], shown["dialect"], shown["region"]) == (
        6.5,
        "v3",
        "ap-shanghai",
    )


def test_config_masks_passwords_in_urls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``config`` shows the proxy and shared-quota URLs with their passwords masked."""
    monkeypatch.setenv("ENI_ASYNC_PROXY", "http://user:PASSWORD123@127.0.0.1:3128")
    assert main(["config", "--shared-quota", "redis://:REDISPASS@127.0.0.1:6379/0"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert "PASSWORD123" not in out
    assert "REDISPASS" not in out
    assert (shown["proxy"], shown["shared_quota"]) == (
        "http://user:***@127.0.0.1:3128",
        "redis://:***@127.0.0.1:6379/0",
    )


def test_config_defaults_prints_the_documented_file(capsys: pytest.CaptureFixture[str]) -> None:
    """``config --defaults`` prints config/eni-async.toml exactly."""
    assert main(["config", "--defaults"]) == 0
    documented = Path(__file__).resolve().parent.parent / "config" / "eni-async.toml"
    assert capsys.readouterr().out == documented.read_text(encoding="utf-8")


def test_unknown_environment_setting_exits_2_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt ENI_ASYNC_* variable is one line naming it and the variable probably meant, exit 2."""
    monkeypatch.setenv("ENI_ASYNC_CONCURENCY", "8")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert "ENI_ASYNC_CONCURENCY" in err
    assert "did you mean 'ENI_ASYNC_CONCURRENCY'?" in err
    assert len(err.strip().splitlines()) == 1


# -- small things a user hits first -------------------------------------------------------------------------


def test_status_ignores_settings_it_does_not_use(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` works with a broken ENI_ASYNC_CONFIG, since it reads no settings."""
    from tests.journalhelpers import execute

    journal_path = tmp_path / "j.journal"
    execute(journal_path, "SELECT 1")
    monkeypatch.setenv("ENI_ASYNC_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["status", str(journal_path)]) == 0
    assert json.loads(capsys.readouterr().out)["items"]["pending"] == 0


@pytest.mark.parametrize(
    ("command", "option"),
    [(["simulate", "--port"], "--port"), (["simulate", "--metrics-port"], "--metrics-port"),
     (["demo", "--enis", "1", "--metrics-port"], "--metrics-port")],
)  # fmt: skip
def test_busy_port_is_one_line_exit_2(
    command: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port in use (the simulator's or the metrics'): one line naming the option, exit 2, no 'please report it'."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main([*command, str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"eni-async: error: {option}: cannot listen on 127.0.0.1: ")
    assert "report" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["demo", "simulate"])
def test_unknown_fault_profile_names_the_option_once(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message for a bad --faults names the option once and lists the profiles."""
    assert main([command, "--faults", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("faults:") == 1
    assert err.startswith("eni-async: error: --faults: unknown fault profile")


def test_v2_unassign_output_has_no_null_request_ids(creds: None, capsys: pytest.CaptureFixture[str]) -> None:
    """API 2.0 answers carry no request id: the output lists none rather than nulls, and the error has none."""
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 9}))
        assert main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2", "--no-wait"]) == 0
        m.post(URL, payload={"code": 4000, "message": "primary", "codeDesc": "InvalidPrivateip.IsPrimary"})
        assert main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"]) == 1
    submitted, failed = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert submitted["request_ids"] == []
    assert failed["request_ids"] == []
    assert "request_id" not in failed["error"]
    assert "null" not in json.dumps([submitted, failed]).replace('"error": null', "")


async def test_error_object_carries_the_request_id(
    served: tuple[Simulator, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An API 3.0 error in the output (here a refused signature) has ``request_id`` as its own field."""
    sim, endpoint = served
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "not-the-key")
    eni = sim.ground_truth()["enis"][2]
    argv = ["unassign", "--dialect", "v3", "--endpoint", endpoint, "--region", sim.region,
            "--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"], "--ip", eni["secondary_ips"][0]]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "AuthFailure.SignatureFailure"
    assert error["request_id"]
    assert error["request_id"] in error["message"]


def test_result_lines_and_logs_never_share_a_line_with_the_bar() -> None:
    """On one terminal, each JSON line, each log line and each line told (a signal's) starts its own line,
    never glued after the bar."""
    import fcntl
    import logging
    import os
    import re
    import struct
    import termios

    from eni_async.batch import BatchStats
    from eni_async.progress import Progress
    from eni_async.terminal import logging_to_stderr, tell

    master, worker = os.openpty()
    # A terminal of 100 columns (a new pty has 0, and tqdm would draw nothing).
    fcntl.ioctl(worker, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with open(worker, "w", encoding="utf-8", closefd=True) as screen:
        # stdout and stderr on one terminal: the same tty, two file objects.
        with open(os.dup(screen.fileno()), "w", encoding="utf-8") as out:
            stats = BatchStats()
            with logging_to_stderr(0, "human", stream=screen):
                bar = Progress(stats, total=3, enabled=True, stream=screen)
                for n in range(3):
                    stats.done = n
                    bar.update()
                    bar._bar.refresh()  # type: ignore[union-attr]
                    bar.write(out, json.dumps({"n": n}) + "\n")
                    logging.getLogger("eni_async.test").warning(f"line {n}")  # three conditions
                    tell(f"eni-async: told {n}", as_json=False)  # a signal's line, say
                bar.close()
        screen.flush()
        data = b""
        while chunk := _read_ready(master):
            data += chunk
    os.close(master)
    segments = re.split(r"[\r\n]", data.decode("utf-8", "replace"))
    assert any("eni/s" in s for s in segments), "the bar was drawn"
    for n in range(3):
        assert json.dumps({"n": n}) in segments, f"result line {n} shares a line with the bar"
        assert any(s.endswith(f"WARNING eni_async.test: line {n}") and "eni/s" not in s for s in segments)
        assert f"eni-async: told {n}" in segments, f"told line {n} shares a line with the bar"


def _read_ready(fd: int) -> bytes:
    """What the terminal has to read now (nothing when it is drained)."""
    import os
    import select

    ready, _, _ = select.select([fd], [], [], 0.05)
    return os.read(fd, 65536) if ready else b""


async def _unassign(
    sim: Simulator, endpoint: str, eni: dict[str, Any], ips: list[str], *extra: str
) -> tuple[int, Any]:
    """Run ``eni-async unassign`` in a thread against ``sim``; return the exit code and the printed object."""
    import contextlib
    import io

    out = io.StringIO()
    argv = ["unassign", "--endpoint", endpoint, "--region", sim.region, "--vpc-id", eni["vpc_id"]]
    argv += ["--eni-id", eni["eni_id"], *[a for ip in ips for a in ("--ip", ip)], *extra]
    with contextlib.redirect_stdout(out):
        code = await asyncio.to_thread(main, argv)
    return code, json.loads(out.getvalue())


@pytest.fixture
async def slow_world(monkeypatch: pytest.MonkeyPatch, fast_config: Path) -> Any:
    """A real-time simulator with 12 IPs per ENI whose tasks take 50 ms or (on demand) much longer."""
    from eni_async.simulator import SimulatorConfig, running

    sim = Simulator(SimulatorConfig(enis=3, ips_per_eni=12, seed=2, task_latency=(0.05, 0.0)))
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", sim.credentials.secret_id)
        monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", sim.credentials.secret_key)
        yield sim, server.endpoint


async def test_unassign_prints_the_batch_schema_with_every_task_id(slow_world: tuple[Simulator, str]) -> None:
    """unassign prints one outcome in the batch schema; a chunk refused later keeps every task id submitted."""
    sim, endpoint = slow_world
    eni = sim.ground_truth()["enis"][0]
    ips = [*eni["secondary_ips"][:11], eni["primary_ip"], "10.250.0.1"]
    code, out = await _unassign(sim, endpoint, eni, ips)
    assert set(out) - {"decisions"} == SCHEMA
    assert code == 1
    assert out["status"] == "failed"
    assert sorted(out["released"]) == sorted(eni["secondary_ips"][:11])
    assert out["not_released"] == [eni["primary_ip"]]
    assert out["absent"] == ["10.250.0.1"]
    assert len(out["task_ids"]) == 2, "the first chunk's task and the retried second chunk's"
    assert out["error"]["code"] == "InvalidPrivateip.IsPrimary"


async def test_unassign_timeout_reports_the_task_and_unknown_ips(slow_world: tuple[Simulator, str]) -> None:
    """With --timeout shorter than the task, the output names the task and lists its IPs as unknown."""
    sim, endpoint = slow_world
    sim.world.task_latency = (30.0, 0.0)
    eni = sim.ground_truth()["enis"][1]
    code, out = await _unassign(sim, endpoint, eni, eni["secondary_ips"][:2], "--timeout", "0.1")
    assert code == 1
    assert len(out["task_ids"]) == 1
    assert sorted(out["unknown"]) == sorted(eni["secondary_ips"][:2])
    assert out["not_released"] == []
    assert out["error"]["code"] == "TaskTimeout"


async def test_batch_preflight_with_a_journal_describes_first(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """batch --preflight --journal refuses a primary IP and lists a stray IP as absent without sending them."""
    sim, endpoint = served
    a, b = sim.ground_truth()["enis"][:2]
    source = tmp_path / "in.jsonl"
    rows = [
        {"vpc_id": a["vpc_id"], "eni_id": a["eni_id"], "ips": [a["primary_ip"]]},
        {"vpc_id": b["vpc_id"], "eni_id": b["eni_id"], "ips": [b["secondary_ips"][0], "10.250.0.7"]},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    args = ["batch", str(source), "--endpoint", endpoint, "--preflight", "--journal", str(tmp_path / "j")]
    assert await asyncio.to_thread(main, [*args, "--output", str(output)]) == 1
    first, second = sorted(
        (json.loads(line) for line in output.read_text().splitlines()),
        key=lambda o: o["eni_id"] != a["eni_id"],
    )
    assert (first["not_released"], first["task_ids"]) == ([a["primary_ip"]], [])
    assert first["error"]["code"] == "InvalidPrivateip.IsPrimary"
    assert (second["status"], second["released"], second["absent"]) == (
        "succeeded",
        [b["secondary_ips"][0]],
        ["10.250.0.7"],
    )
    assert sim.stats()["requests"]["UnassignPrivateIpAddresses"] == 1, "only the real secondary IP was sent"


class _FullDisk:
    """A stdout on a full disk: every write fails with ENOSPC."""

    name = "<stdout>"

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        raise OSError(28, "No space left on device")


def test_unassign_to_a_full_stdout_is_one_line_and_exit_1(
    creds: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outcome that cannot be written to stdout is one line on stderr and exit 1, not "unexpected"."""
    monkeypatch.setattr("sys.stdout", _FullDisk())
    with mocked() as m:
        m.post(URL, payload=ok({"taskId": 16284}))
        m.post(URL, payload=ok({"status": 0}))
        code = main(["unassign", "--vpc-id", VPC, "--eni-id", ENI, "--ip", "10.0.0.2"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "eni-async: error: cannot write the output stdout: No space left on device\n"


async def test_status_outcomes_into_a_closed_pipe_is_one_line(
    served: tuple[Simulator, str], tmp_path: Path
) -> None:
    """`status --outcomes | head -1`: the closed pipe is one line on stderr and exit 1, never a traceback."""
    sim, endpoint = served
    enis = sim.ground_truth()["enis"]
    source = tmp_path / "in.jsonl"
    source.write_text(jsonl_lines(enis))
    journal = tmp_path / "batch.journal"
    args = ["batch", str(source), "--endpoint", endpoint, "--journal", str(journal), "--output", os.devnull]
    assert await asyncio.to_thread(main, args) == 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "eni_async", "status", str(journal), "--outcomes"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == "eni-async: error: cannot write the output stdout: Broken pipe\n"


@pytest.mark.parametrize(
    ("argv", "verbose", "loop", "log_format"),
    [
        (["journal", "copy", "a.db", "b.db", "-vv", "--loop", "asyncio"], 2, "asyncio", None),
        (["journal", "copy", "a.db", "b.db", "--log-format", "json"], 0, None, "json"),
        # Given before the action, kept: the action's parser sets only what it was given.
        (["journal", "-v", "--loop", "asyncio", "copy", "a.db", "b.db"], 1, "asyncio", None),
        (["journal", "--log-format", "json", "copy", "a.db", "b.db", "-v"], 1, None, "json"),
    ],
)
def test_log_and_loop_options_after_a_commands_action(
    argv: list[str], verbose: int, loop: str | None, log_format: str | None
) -> None:
    """``eni-async journal copy A B -v`` takes -v, --loop and --log-format as every command does."""
    from eni_async.cli import build_parser

    args, extras = build_parser("journal").parse_known_args(argv)
    assert extras == []
    assert (args.sub_verbose, args.sub_loop, args.sub_log_format) == (verbose, loop, log_format)
