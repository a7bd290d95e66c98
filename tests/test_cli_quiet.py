"""A quiet, exact command line: one line per condition, counts that agree, the bar's counts, typo'd flags,
unreadable lines, JSON log times, and a closed pipe (real processes where the behaviour lives in one)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eni_async.batch import BatchStats
from eni_async.cli import main
from eni_async.outcomes import Outcome
from eni_async.progress import Progress, Summary
from eni_async.terminal import generic, iso_time, logging_to_stderr
from tests.simhelpers import cli_env, sim_get, sim_post, simulator_thread

CLI = [sys.executable, "-m", "eni_async"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["batch", "in.csv", "--conc", "5"],
         "eni-async batch: error: unrecognized arguments: --conc 5 (--conc: did you mean --concurrency?)"),
        (["batch", "in.csv", "--concurency=5"],
         "eni-async batch: error: unrecognized arguments: --concurency=5 (--concurency: did you mean --concurrency?)"),
        (["bach", "in.csv"], "did you mean 'batch'?"),
        (["demo", "--enis"], "eni-async demo: error: argument --enis: expected one argument"),
    ],
    ids=["abbreviation", "typo", "command", "missing-value"],
)  # fmt: skip
def test_flag_typos_get_one_prefix_and_a_suggestion_and_no_abbreviation_runs(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd or abbreviated flag is refused (exit 2) in one line, with one prefix and the flag meant."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert expected in err
    assert err.count("error:") == 1
    assert "eni-async: error: eni-async" not in err


def test_each_condition_is_one_line_at_the_default_level_and_every_line_with_v() -> None:
    """Repeats of a condition (same message template, action and error codes) are counted, not written; the
    count closes the block in one line; -v writes them all."""
    log = logging.getLogger("eni_async.test")
    for verbosity, expected in ((0, 4), (1, 7)):  # three conditions and the count; every record
        stream = io.StringIO()
        with logging_to_stderr(verbosity, "human", stream=stream):
            for n in range(5):
                log.warning("throttled on %s eni-%08d (attempt %d)", "Describe", n, n, extra={"action": "A"})
            log.warning("throttled on %s eni-%08d (attempt %d)", "Describe", 9, 1, extra={"action": "B"})
            log.warning("something else")
        lines = stream.getvalue().splitlines()
        assert len(lines) == expected, lines
    assert lines[-1].endswith("something else")
    stream = io.StringIO()
    with logging_to_stderr(0, "human", stream=stream):
        for n in range(5):
            log.warning("throttled on %s eni-%08d (attempt %d)", "Describe", n, n, extra={"action": "A"})
    assert stream.getvalue().splitlines()[-1] == (
        "eni-async: 5 times in all: throttled on Describe ENI (attempt n) (-v shows each)"
    )


def test_errors_of_different_causes_are_different_conditions() -> None:
    """An unknown outcome caused by a dropped connection and one caused by HTTP 503 are two conditions."""

    class Lost(Exception):
        code = "ConnectionLost"

    class Unknown(Exception):
        code = "OutcomeUnknown"

        def __init__(self, cause: Exception) -> None:
            super().__init__("outcome unknown")
            self.cause = cause

    stream = io.StringIO()
    with logging_to_stderr(0, "human", stream=stream):
        for cause in (Lost(), Lost(), ValueError()):
            logging.getLogger("eni_async.test").warning("%s: %s", "eni-1", Unknown(cause))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # two conditions, and the count of the repeated one


def test_generic_names_leave_out_ids_ips_attempts_and_request_ids() -> None:
    """A condition's name keeps the words and codes, not what is particular to one record."""
    message = (
        "eni-17tmy187: UnassignPrivateIpAddresses on eni-17tmy187 for 10.0.0.3, 10.0.0.4: outcome unknown "
        "(task 27648, attempt 2) request 481e9b6e-81d1-4859-b8cf-a673e010b388 (attempt 3)"
    )
    assert generic(message) == (
        "ENI: UnassignPrivateIpAddresses on ENI for IPs: outcome unknown (task …, attempt 2) request … (attempt n)"
    )


def test_json_log_lines_carry_iso_8601_utc_times(
    creds: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every JSON log line's time is ISO 8601 in UTC with milliseconds."""
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert main(["--log-format", "json", "-v", "config"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)


def test_the_bars_counts_are_the_summarys_statuses() -> None:
    """The bar shows succeeded, failed and not attempted apart (a not attempted ENI is not counted as failed)."""
    stream = io.StringIO()
    stats = BatchStats(done=4, failed=3, by_status={"succeeded": 1, "failed": 1, "not_attempted": 2})
    bar = Progress(stats, total=4, enabled=True, stream=stream)
    bar.update()
    bar.close()
    drawn = stream.getvalue()
    assert "succeeded=1" in drawn
    assert "failed=1" in drawn
    assert "not_attempted=2" in drawn
    assert "failed=3" not in drawn


def test_an_unreadable_line_has_its_own_summary_row() -> None:
    """An item that could not be read is counted as unreadable, its IPs apart from the not released ones."""
    bad = Outcome("vpc-12345678", "eni-12345678", ("10.0.0.300",), status="failed", line=3)
    bad.error = {"code": "InvalidInput", "message": "line 3: bad IP"}
    good = Outcome("vpc-12345678", "eni-87654321", ("10.0.0.2",), status="succeeded", released=["10.0.0.2"])
    summary = Summary()
    summary.add(bad)
    summary.add(good)
    rows = dict(line.rsplit(None, 1) for line in summary.render(1.0).splitlines() if "elapsed" not in line)
    assert rows["  unreadable lines"] == "1"
    assert rows["  in unreadable lines"] == "1"
    assert rows["  not released"] == "0"
    assert rows["IPs asked for"] == "2"


def test_a_closed_pipe_ends_quietly_with_a_true_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``batch | head -1``: the batch stops, every outcome it had is counted (the journal agrees), stderr holds
    the summary and no error line, and the exit is 1. The simulator holds the tasks: the first is finished
    for the first line, the rest once the pipe is closed."""
    with simulator_thread(enis=30, ips_per_eni=1, task_latency=(0.0, 0.0)) as ready:
        sim_post(ready["endpoint"], "/_sim/hold", {"hold": True})
        enis = sim_get(ready["endpoint"], "/_sim/state")["enis"]
        source = tmp_path / "in.jsonl"
        source.write_text("".join(
            json.dumps({"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]}) + "\n"
            for e in enis
        ))  # fmt: skip
        journal = tmp_path / "j.db"
        command = [*CLI, "batch", str(source), "--endpoint", ready["endpoint"], "--journal", str(journal),
                   "--concurrency", "3", "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(
            command,
            env=cli_env(ready, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while not sim_post(ready["endpoint"], "/_sim/finish", {"count": 1})["finished"]:
            assert time.monotonic() < deadline, "the batch never submitted"
            time.sleep(0.02)
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()  # what `head -1` does
        sim_post(ready["endpoint"], "/_sim/hold", {"hold": False})
        sim_post(ready["endpoint"], "/_sim/finish")
        _, err = proc.communicate(timeout=60)
    assert first["status"] == "succeeded"
    assert proc.returncode == 1, err
    assert "error:" not in err
    assert "Traceback" not in err
    assert "the output closed" in err
    counted = int(re.search(r"^ENIs\s+(\d+)$", err, re.MULTILINE)[1])  # type: ignore[index]
    capsys.readouterr()
    assert main(["status", str(journal)]) == 0
    finished = json.loads(capsys.readouterr().out)["items"]["finished"]
    assert counted == finished >= 1, "the summary counts what the journal holds as finished"
    assert re.search(rf"stopped: {30 - finished} item\(s\) left in the journal", err)


def test_the_demos_throttle_count_agrees_with_what_it_warned(
    tmp_path: Path, fast_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's 'throttled: N' counts every throttle answer, injected ones included, and equals the
    throttle warnings of its stderr (each condition once, the rest counted). Fast polls and retries."""
    profile = tmp_path / "throttles.toml"
    profile.write_text('name = "throttles"\n[rates]\nthrottle = 0.2\n')
    code = main(
        ["demo", "--enis", "40", "--ips-per-eni", "1", "--faults", str(profile), "--task-latency", "0"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    said = re.search(r"throttled: (\d+) \((\d+) by the rate limits, (\d+) injected\)", out)
    assert said is not None, out
    shown = re.findall(r"WARNING eni_async: throttled on (\w+)", err)  # each condition's first
    counted = {m[2]: int(m[1]) for m in re.finditer(r"warned (\d+) times: throttled on (\w+)", err)}
    total = sum(counted.values()) + len([action for action in shown if action not in counted])
    assert int(said[1]) == total > 0
    assert "rate now" not in err
    assert len(err.splitlines()) < 25, "one line per condition, not one per throttle"
