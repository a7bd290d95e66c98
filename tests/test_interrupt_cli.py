"""SIGINT and SIGTERM sent to a real ``eni-async batch`` process, judged against the simulator's ground truth.

The simulator and the batch run as separate processes on 127.0.0.1, in real time (a signal cannot be sent in
fake time); tasks take three seconds, so the signal always finds work in flight.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from eni_async.outcomes import check_against_truth
from eni_async.testing import jsonl_lines, simulator_process
from tests.conftest import FAST_TOML

CLI = [sys.executable, "-m", "eni_async"]
ENIS, IPS, LATENCY, CONCURRENCY = 40, 2, 3.0, 8


def _get(endpoint: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{endpoint}{path}", timeout=10) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def simulator() -> AbstractContextManager[dict[str, Any]]:
    """``eni-async simulate`` in its own process; yields its ready line."""
    return simulator_process(
        "--enis", str(ENIS), "--ips-per-eni", str(IPS), "--seed", "11", "--task-latency", f"{LATENCY},0"
    )


def _submits(endpoint: str) -> int:
    return int(_get(endpoint, "/_sim/stats")["requests"].get("UnassignPrivateIpAddresses", 0))


def _present(endpoint: str) -> dict[str, set[str]]:
    return {
        e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in _get(endpoint, "/_sim/state")["enis"]
    }


def _start_batch(ready: dict[str, Any], tmp_path: Path, grace: float, *extra: str) -> subprocess.Popen[str]:
    config = tmp_path / "client.toml"
    config.write_text(f"grace = {grace}\n{FAST_TOML}")
    source = tmp_path / "in.jsonl"
    enis = _get(ready["endpoint"], "/_sim/state")["enis"]
    source.write_text(jsonl_lines(enis))
    env = dict(os.environ, ENI_ASYNC_CONFIG=str(config))
    env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
    command = [*CLI, "batch", str(source), "--endpoint", ready["endpoint"], "--region", ready["region"]]
    command += ["--output", str(tmp_path / "out.jsonl"), "--no-progress", "--concurrency", str(CONCURRENCY)]
    return subprocess.Popen([*command, *extra], env=env, stderr=subprocess.PIPE, text=True)


def _signal_when_busy(proc: subprocess.Popen[str], endpoint: str, signals: list[signal.Signals]) -> None:
    deadline = time.monotonic() + 30
    while _submits(endpoint) < CONCURRENCY:
        assert proc.poll() is None, "the batch ended before any signal"
        assert time.monotonic() < deadline, "the batch never got busy"
        time.sleep(0.02)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.2)


def _judge(tmp_path: Path, endpoint: str) -> list[dict[str, Any]]:
    """Every outcome agrees with the truth once all tasks ended; every ENI the server changed was reported."""
    time.sleep(LATENCY + 0.5)  # let tasks submitted before the stop end, so the truth is final
    outcomes = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    present = _present(endpoint)
    assert [p for o in outcomes for p in check_against_truth(o, present)] == []
    reported = [o["eni_id"] for o in outcomes]
    assert len(reported) == len(set(reported)), "no ENI reported twice"
    changed = {eni for eni, ips in present.items() if len(ips) < IPS + 1}
    assert changed <= set(reported), "every ENI released on the server has an outcome"
    assert _submits(endpoint) == sum(len(o["task_ids"]) for o in outcomes), "every submit is in an outcome"
    return outcomes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_with_short_grace_reports_in_flight_ips_as_unknown(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """With the grace shorter than the tasks, the batch exits 128+signal with in-flight IPs under unknown."""
    with simulator() as ready:
        proc = _start_batch(ready, tmp_path, 0.3)
        _signal_when_busy(proc, ready["endpoint"], [sig])
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig, err
        outcomes = _judge(tmp_path, ready["endpoint"])
    assert "unknown" in err
    assert "absent" in err
    assert "Traceback" not in err
    unknown = [o for o in outcomes if o["unknown"]]
    assert unknown, "work was in flight when the grace ended"
    assert all(o["status"] == "failed" and o["error"]["code"] == "Interrupted" for o in unknown)
    assert all(set(o["unknown"]) <= set(o["ips"]) for o in unknown)
    assert len(outcomes) < ENIS, "it stopped taking new items"


def test_sigterm_with_enough_grace_finishes_work_in_flight_then_resume_ends_the_batch(tmp_path: Path) -> None:
    """A grace longer than the tasks lets every in-flight item finish; the summary gives the count left and
    the exact resume command, which run as printed does the rest (exit 0), its summary showing this run
    beside the journal's total."""
    journal = tmp_path / "batch.journal"
    with simulator() as ready:
        proc = _start_batch(ready, tmp_path, 20.0, "--journal", str(journal))
        _signal_when_busy(proc, ready["endpoint"], [signal.SIGTERM])
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        outcomes = _judge(tmp_path, ready["endpoint"])
        assert outcomes
        assert all(o["status"] == "succeeded" for o in outcomes), "every task in flight was seen to end"
        left = ENIS - len(outcomes)
        hint = re.search(r"stopped: (\d+) item\(s\) left in the journal; finish them with: (.*)", err)
        assert hint is not None, err
        assert int(hint[1]) == left
        command = shlex.split(hint[2])
        assert command == [
            "eni-async",
            "resume",
            str(journal),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--append",
        ]
        resumed = subprocess.run(
            [*CLI, *command[1:]],
            env=dict(os.environ, ENI_ASYNC_CONFIG=str(tmp_path / "client.toml"),
                     TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"]),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        header, enis = resumed.stderr.splitlines()[:2]
        assert header.split() == ["this", "run", "journal", "total"]
        assert enis.split() == ["ENIs", str(left), str(ENIS)]
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert len(lines) == ENIS, "the appended output holds every item once"
        assert all(
            ips == {e for e in ips if e} and len(ips) == 1 for ips in _present(ready["endpoint"]).values()
        )


def test_a_second_signal_stops_waiting_at_once(tmp_path: Path) -> None:
    """A second SIGINT ends a long grace at once: exit 130 well before the tasks end, in-flight IPs unknown."""
    with simulator() as ready:
        proc = _start_batch(ready, tmp_path, 60.0)
        started = time.monotonic()
        _signal_when_busy(proc, ready["endpoint"], [signal.SIGINT, signal.SIGINT])
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
        assert proc.returncode == 130, err
        outcomes = _judge(tmp_path, ready["endpoint"])
    assert took < 30, "it did not wait for the 60 s grace"
    assert any(o["unknown"] for o in outcomes)


def test_unassign_interrupted_prints_its_task_and_unknown_ips(tmp_path: Path) -> None:
    """SIGINT during unassign: one outcome with the submitted task id and its IPs unknown, exit 130."""
    with simulator() as ready:
        config = tmp_path / "client.toml"
        config.write_text(f"grace = 0.2\n{FAST_TOML}")
        eni = _get(ready["endpoint"], "/_sim/state")["enis"][0]
        env = dict(os.environ, ENI_ASYNC_CONFIG=str(config))
        env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
        command = [*CLI, "unassign", "--endpoint", ready["endpoint"], "--region", ready["region"]]
        command += ["--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"]]
        command += [a for ip in eni["secondary_ips"] for a in ("--ip", ip)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while _submits(ready["endpoint"]) < 1:
            assert time.monotonic() < deadline
            assert proc.poll() is None
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        time.sleep(LATENCY + 0.5)
        present = _present(ready["endpoint"])
    assert proc.returncode == 130, err
    outcome = json.loads(out)
    assert len(outcome["task_ids"]) == 1
    assert sorted(outcome["unknown"]) == sorted(eni["secondary_ips"])
    assert outcome["not_released"] == []
    assert check_against_truth(outcome, present) == []
