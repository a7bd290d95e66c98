"""The commands' event loop (``--loop``): uvloop where it is installed, asyncio's own when asked for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvloop

from eni_async import cli, terminal
from eni_async.cli import main

DEMO = ["demo", "--enis", "6", "--ips-per-eni", "3", "--task-latency", "0", "--no-progress"]


def test_auto_takes_uvloop_where_it_is_installed() -> None:
    assert cli.loop_factory("auto") is uvloop.new_event_loop
    assert cli.loop_factory("uvloop") is uvloop.new_event_loop
    assert cli.loop_factory("asyncio") is None


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # ``import uvloop`` raises ImportError
    assert cli.loop_factory("auto") is None


def test_uvloop_asked_for_but_missing_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert main(["--loop", "uvloop", "config", "--defaults"]) == 2
    err = capsys.readouterr().err
    assert "--loop" in err
    assert "uvloop is not installed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (["--loop", "asyncio", *DEMO], asyncio.SelectorEventLoop),
        (["--loop", "uvloop", *DEMO], uvloop.Loop),
        ([*DEMO, "--loop", "asyncio"], asyncio.SelectorEventLoop),  # after the command, as -v
        (DEMO, uvloop.Loop),  # auto
    ],
)
def test_the_demo_runs_whole_on_the_loop_chosen(
    where: list[str],
    expected: type,
    fast_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The whole job (embedded simulator, batch, signals) runs on the loop chosen, and releases every IP."""
    seen: list[type] = []
    real = terminal.with_signals

    async def spy(*args: Any) -> int:
        seen.append(type(asyncio.get_running_loop()))
        return await real(*args)

    monkeypatch.setattr("eni_async.cli.with_signals", spy)  # as imported there
    assert main(where) == 0
    assert "mismatches: 0" in capsys.readouterr().out.splitlines()
    assert seen == [expected]


@pytest.mark.parametrize("closed", ["<&-", "2>&-"])
def test_a_command_started_with_a_standard_descriptor_closed_ends_normally(closed: str) -> None:
    """``cmd <&-`` (a closed stdin, as some supervisors start services): libuv would take descriptor 0 for its
    own and abort the process at exit (SIGABRT, exit 134); the command ends as on asyncio's loop."""
    script = f'exec "$0" -m eni_async --loop uvloop config --defaults {closed}'
    done = subprocess.run(["sh", "-c", script, sys.executable], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"[rate_limits]" in done.stdout
