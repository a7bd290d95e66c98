"""``eni-async simulate``: one JSON ready line, serving until SIGTERM or cancellation, and bad options named."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

import aiohttp
import pytest

from eni_async.errors import ConfigError, InputError
from eni_async.simulator.command import add_arguments, build_config, parse_latency, serve


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eni-async simulate")
    add_arguments(parser)
    return parser.parse_args(list(argv))


async def _ready_line(capsys: pytest.CaptureFixture[str], task: asyncio.Task[int]) -> dict[str, str]:
    out = ""
    for _ in range(500):
        out += capsys.readouterr().out
        if out.endswith("\n") or task.done():
            break
        await asyncio.sleep(0.01)
    assert out.count("\n") == 1
    line: dict[str, str] = json.loads(out)
    return line


async def test_serve_prints_ready_line_and_stops_on_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    """serve prints exactly one JSON line with endpoint, region and keys, serves, and returns 0 on SIGTERM."""
    args = _args("--enis", "3", "--seed", "4", "--secret-id", "AKIDtest", "--secret-key", "sekrit")
    task = asyncio.create_task(serve(args))
    line = await _ready_line(capsys, task)
    assert set(line) == {"endpoint", "region", "secret_id", "secret_key"}
    assert line["endpoint"].startswith("http://127.0.0.1:")
    assert (line["region"], line["secret_id"], line["secret_key"]) == ("ap-guangzhou", "AKIDtest", "sekrit")
    async with aiohttp.ClientSession() as session, session.get(line["endpoint"] + "/_sim/state") as resp:
        state = json.loads(await resp.read())
    assert len(state["enis"]) == 3
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, 5) == 0


async def test_serve_stops_on_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    """Cancelling serve closes the server and removes its signal handlers."""
    task = asyncio.create_task(serve(_args("--enis", "1", "--faults", "flaky", "--task-latency", "0")))
    await _ready_line(capsys, task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


@pytest.mark.parametrize(
    ("argv", "error", "option"),
    [
        (("--rate-limit", "Reboot=5"), InputError, "--rate-limit"),
        (("--rate-limit", "DescribeVpcTaskResult=fast"), InputError, "--rate-limit"),
        (("--task-latency", "soon"), InputError, "--task-latency"),
        (("--task-latency", "1,2,3"), InputError, "--task-latency"),
        (("--secret-id", "AKIDonly"), ConfigError, "--secret-id/--secret-key"),
        (("--faults", "apocalyptic"), ConfigError, "--faults"),
        (("--state", "/nonexistent/state.json"), ConfigError, "--state"),
        (("--port", "70000"), InputError, "--port"),
        (("--credential-lifetime", "0"), InputError, "--credential-lifetime"),
        (("--role-name", "a/b"), InputError, "--role-name"),
    ],
)
async def test_bad_options_are_named(argv: tuple[str, ...], error: type[Exception], option: str) -> None:
    """A bad option raises InputError or ConfigError whose field names the option."""
    with pytest.raises(error) as caught:
        await serve(_args(*argv))
    assert getattr(caught.value, "field", None) == option


def test_latency_forms() -> None:
    """--task-latency takes MEDIAN or MEDIAN,SPREAD; 0 means tasks end at once."""
    assert parse_latency("0") == (0.0, 0.0)
    assert parse_latency("2") == (2.0, 0.5)
    assert parse_latency("1.5,0.1") == (1.5, 0.1)


def test_role_options_reach_the_config() -> None:
    """--role-name and --credential-lifetime set the metadata service's role and the credentials' lifetime."""
    config = build_config(_args("--role-name", "releaser", "--credential-lifetime", "90"))
    assert (config.role_name, config.credential_lifetime) == ("releaser", 90.0)
    assert (build_config(_args()).role_name, build_config(_args()).credential_lifetime) == (
        "eni-async-role",
        7200.0,
    )
