"""A command started with a standard stream closed (``cmd >&-``, ``cmd <&-``, ``cmd 2>&-``): Python leaves
``sys.stdout`` (``stdin``, ``stderr``) ``None``; the command says what is wrong in one line and exits with its
code, never an "unexpected error" (an ``AttributeError`` on ``None``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eni_async.cli import main
from eni_async.terminal import EXIT_FAILED, EXIT_USAGE


@pytest.mark.parametrize("argv", [["config"], ["config", "--defaults"], ["config", "--show-origin"]])
def test_output_closed_is_one_line_and_a_failure(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert main(argv) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err == "eni-async: error: cannot write the output stdout: Bad file descriptor\n"


def test_input_closed_is_named_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDexampleexampleexample")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "secretsecretsecret")
    # Port 9 (discard) on loopback: nothing listens; the input is refused before any connection is tried.
    argv = ["batch", "-", "--endpoint", "http://127.0.0.1:9", "--region", "ap-guangzhou", "--no-progress"]
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.err == "eni-async: error: INPUT: standard input is closed (got '-')\n"
    assert captured.out == ""


def test_error_output_closed_keeps_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["status"]) == EXIT_USAGE  # no journal named: a usage error, told to nobody


def test_a_process_started_with_stdout_closed() -> None:
    """The real thing: the descriptor closed by the shell before Python starts."""
    script = 'exec "$0" -m eni_async config --defaults >&-'
    done = subprocess.run(["sh", "-c", script, sys.executable], capture_output=True, timeout=60, check=False)
    assert done.returncode == EXIT_FAILED
    assert done.stderr == b"eni-async: error: cannot write the output stdout: Bad file descriptor\n"
