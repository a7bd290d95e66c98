"""``producer | eni-async batch -``: items read from a pipe as the producer writes them, and each outcome
written as soon as it is known, while the producer is still silent (reading stdin never holds the event
loop: a release in flight keeps being tracked). A real process on a real pipe, against a simulator."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import re
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eni_async.cli import loop_factory
from eni_async.inputs import StreamedJsonl, read_jsonl, streams
from eni_async.outcomes import InvalidItem, Item
from tests.simhelpers import cli_env, sim_get, simulator_thread

CLI = [sys.executable, "-m", "eni_async"]


def _line(out: Any, seconds: float) -> str | None:
    """The next line of ``out`` within ``seconds`` (``None``: none came)."""
    with selectors.DefaultSelector() as selector:
        selector.register(out, selectors.EVENT_READ)
        if not selector.select(timeout=seconds):
            return None
    line: str = out.readline()
    return line


def test_each_outcome_is_written_while_the_producer_is_still_silent(tmp_path: Path) -> None:
    with simulator_thread(enis=3, ips_per_eni=1, task_latency=(0.0, 0.0)) as ready:
        enis = sim_get(ready["endpoint"], "/_sim/state")["enis"]
        lines = [
            json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]}) + "\n"
            for e in enis
        ]
        command = [*CLI, "batch", "-", "--endpoint", ready["endpoint"], "--no-progress"]
        proc = subprocess.Popen(
            command,
            env=cli_env(ready, tmp_path),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            seen = []
            for line in lines:  # one item, then silence until its outcome is out
                proc.stdin.write(line)
                proc.stdin.flush()
                out = _line(proc.stdout, 30.0)
                assert out is not None, "an outcome was held back while stdin was silent"
                seen.append(json.loads(out))
            _, err = proc.communicate(timeout=60)  # stdin closed: the input ends
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert [o["eni_id"] for o in seen] == [e["eni_id"] for e in enis]
    assert all(o["status"] == "succeeded" for o in seen)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_stream_reads_as_a_file_does_whatever_the_writes(loop: str) -> None:
    """Lines split across writes, blank lines (counted, as in a file), a bad line (its own invalid item with
    its number), a last line without a newline: the same items as ``read_jsonl`` reads from the bytes. The
    descriptor's flags are left as found (uvloop makes a descriptor it watches non-blocking)."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        runner.run(_stream_reads_as_a_file())


async def _stream_reads_as_a_file() -> None:
    good = '{"vpc_id": "vpc-12345678", "eni_id": "eni-1234567%d", "ips": ["10.0.0.%d"]}'
    text = (good % (1, 2) + "\n\n" + good % (2, 3) + "\nnot json\n" + good % (3, 4)).encode()

    def seen(items: list[Item | InvalidItem]) -> list[tuple[int | None, str | None]]:
        return [(i.line, i.eni_id if isinstance(i, Item) else None) for i in items]

    read, write = os.pipe()
    flags = fcntl.fcntl(read, fcntl.F_GETFL)
    try:
        assert streams(read)

        async def collect() -> list[Item | InvalidItem]:
            return [item async for item in StreamedJsonl(read)]

        reading = asyncio.create_task(collect())
        for part in (text[:30], text[30:75], text[75:]):  # the first line arrives in two reads
            os.write(write, part)
            for _ in range(5):
                await asyncio.sleep(0)
        os.close(write)
        write = -1
        got = await asyncio.wait_for(reading, 10)
        assert fcntl.fcntl(read, fcntl.F_GETFL) == flags  # left as found
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert seen(got) == seen(list(read_jsonl(io.BytesIO(text))))
    assert seen(got) == [(1, "eni-12345671"), (3, "eni-12345672"), (4, None), (5, "eni-12345673")]


def test_a_file_is_not_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("")
    with path.open("rb") as handle:
        assert not streams(handle.fileno())
    with open(os.devnull, "rb") as handle:
        assert not streams(handle.fileno())


def test_a_stop_does_not_wait_on_a_silent_producer(tmp_path: Path) -> None:
    """SIGINT while the producer is silent and nothing is in flight: the batch ends at once with its summary,
    not after the grace (600 s here: the test would time out) waiting for a line that may never come."""
    with simulator_thread(enis=1, ips_per_eni=1, task_latency=(0.0, 0.0)) as ready:
        eni = sim_get(ready["endpoint"], "/_sim/state")["enis"][0]
        env = cli_env(ready, tmp_path)
        config = Path(env["ENI_ASYNC_CONFIG"])
        config.write_text("grace = 600.0\n" + config.read_text())  # a top-level key, before [poll]
        command = [*CLI, "batch", "-", "--endpoint", ready["endpoint"], "--no-progress"]
        pipe = subprocess.PIPE
        with subprocess.Popen(command, env=env, text=True, stdin=pipe, stdout=pipe, stderr=pipe) as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            assert proc.stderr is not None
            try:
                line = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
                proc.stdin.write(json.dumps(line) + "\n")
                proc.stdin.flush()
                first = _line(
                    proc.stdout, 30.0
                )  # running, its signals handled; stdin open and silent from here
                assert first is not None
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)  # stdin still open (``communicate`` would close it: an end of input)
                err = proc.stderr.read()
            finally:
                if proc.poll() is None:
                    proc.kill()
    assert json.loads(first)["status"] == "succeeded"
    assert "SIGINT: stopping" in err
    assert re.search(r"^ENIs\s+1$", err, re.MULTILINE), err
