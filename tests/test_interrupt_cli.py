"""SIGINT and SIGTERM sent to a real ``eni-async batch`` process, judged against the simulator's ground truth.

The simulator and the batch run as separate processes on 127.0.0.1, in real time (a signal cannot be sent in
fake time). The simulator holds every task RUNNING (``POST /_sim/hold``), so the signal always finds work in
flight, and the test ends the held tasks (``POST /_sim/finish``) when the scene needs them ended: after the
batch said it stopped submitting, or once it exited, so the truth is final. Nothing waits for a latency.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eni_async.outcomes import check_against_truth
from eni_async.testing import jsonl_lines
from tests.conftest import FAST_TOML
from tests.simhelpers import sim_get, sim_post, simulator_thread

CLI = [sys.executable, "-m", "eni_async"]
ENIS, IPS, CONCURRENCY = 40, 2, 8
STOPPING = "stopping, nothing more is submitted"  # the batch's line on the first signal


@contextlib.contextmanager
def simulator() -> Iterator[dict[str, Any]]:
    """A simulator beside the batch process, every task held RUNNING (and ending at once when not held);
    yields its ready line."""
    with simulator_thread(enis=ENIS, ips_per_eni=IPS, seed=11, task_latency=(0.0, 0.0)) as ready:
        assert sim_post(ready["endpoint"], "/_sim/hold", {"hold": True}) == {"hold": True}
        yield ready


def _finish_all(endpoint: str) -> list[str]:
    finished: list[str] = sim_post(endpoint, "/_sim/finish", {})["finished"]
    return finished


class _Stderr:
    """A process's stderr read by a thread, so a test can wait for one line without blocking on the pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        with stream:
            for line in stream:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of the stream
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self._changed:
            self._changed.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines, timeout
            )
            assert any(text in line for line in self.lines), "".join(self.lines)

    def text(self) -> str:
        """Everything written, once the process ended."""
        self._thread.join(timeout=30)
        return "".join(self.lines)


def _submits(endpoint: str) -> int:
    return int(sim_get(endpoint, "/_sim/stats")["requests"].get("UnassignPrivateIpAddresses", 0))


def _present(endpoint: str) -> dict[str, set[str]]:
    return {
        e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in sim_get(endpoint, "/_sim/state")["enis"]
    }


def _start_batch(ready: dict[str, Any], tmp_path: Path, grace: float, *extra: str) -> subprocess.Popen[str]:
    config = tmp_path / "client.toml"
    config.write_text(f"grace = {grace}\n{FAST_TOML}")
    source = tmp_path / "in.jsonl"
    enis = sim_get(ready["endpoint"], "/_sim/state")["enis"]
    source.write_text(jsonl_lines(enis))
    env = dict(os.environ, ENI_ASYNC_CONFIG=str(config))
    env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
    command = [*CLI, "batch", str(source), "--endpoint", ready["endpoint"], "--region", ready["region"]]
    command += ["--output", str(tmp_path / "out.jsonl"), "--no-progress", "--concurrency", str(CONCURRENCY)]
    return subprocess.Popen([*command, *extra], env=env, stderr=subprocess.PIPE, text=True)


def _wait_for_submits(proc: subprocess.Popen[str], endpoint: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while _submits(endpoint) < count:
        assert proc.poll() is None, "the process ended before any signal"
        assert time.monotonic() < deadline, "the process never got busy"
        time.sleep(0.02)


def _signal_when_busy(proc: subprocess.Popen[str], endpoint: str, signals: list[signal.Signals]) -> _Stderr:
    """Once every slot holds a task in flight, send ``signals``, each once the batch said it heard the one
    before; the reader of its stderr."""
    stderr = _Stderr(proc)
    _wait_for_submits(proc, endpoint, CONCURRENCY)
    for n, sig in enumerate(signals):
        proc.send_signal(sig)
        stderr.wait_for(STOPPING if n == 0 else "again: stopping now")
    return stderr


def _ended(proc: subprocess.Popen[str], stderr: _Stderr) -> str:
    proc.wait(timeout=30)
    return stderr.text()


def _judge(tmp_path: Path, endpoint: str) -> list[dict[str, Any]]:
    """Every outcome agrees with the truth once all tasks ended; every ENI the server changed was reported."""
    _finish_all(endpoint)  # end the tasks submitted before the stop, so the truth is final
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
        err = _ended(proc, _signal_when_busy(proc, ready["endpoint"], [sig]))
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
        stderr = _signal_when_busy(proc, ready["endpoint"], [signal.SIGTERM])
        assert len(_finish_all(ready["endpoint"])) == CONCURRENCY, "the tasks in flight end within the grace"
        err = _ended(proc, stderr)
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
        sim_post(ready["endpoint"], "/_sim/hold", {"hold": False})  # the resumed tasks end at once
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
        err = _ended(proc, _signal_when_busy(proc, ready["endpoint"], [signal.SIGINT, signal.SIGINT]))
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
        eni = sim_get(ready["endpoint"], "/_sim/state")["enis"][0]
        env = dict(os.environ, ENI_ASYNC_CONFIG=str(config))
        env.update(TENCENTCLOUD_SECRET_ID=ready["secret_id"], TENCENTCLOUD_SECRET_KEY=ready["secret_key"])
        command = [*CLI, "unassign", "--endpoint", ready["endpoint"], "--region", ready["region"]]
        command += ["--vpc-id", eni["vpc_id"], "--eni-id", eni["eni_id"]]
        command += [a for ip in eni["secondary_ips"] for a in ("--ip", ip)]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_submits(proc, ready["endpoint"], 1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert len(_finish_all(ready["endpoint"])) == 1  # the task in flight ends now: the truth is final
        present = _present(ready["endpoint"])
    assert proc.returncode == 130, err
    outcome = json.loads(out)
    assert len(outcome["task_ids"]) == 1
    assert sorted(outcome["unknown"]) == sorted(eni["secondary_ips"])
    assert outcome["not_released"] == []
    assert check_against_truth(outcome, present) == []
