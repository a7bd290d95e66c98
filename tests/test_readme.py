"""The README's code runs: each Python block as a complete program and each shell block, against the simulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eni_async.cli import main
from eni_async.simulator import Simulator, SimulatorConfig, running

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# A block whose first line is this continues the program of the block before it.
FRAGMENT = "# continues the program above"

# The README's programs and commands name ENIs of a default ``eni-async simulate`` world: these options are
# the command's defaults, tasks ending at once (the only difference).
DEFAULT_WORLD = {"enis": 10, "ips_per_eni": 3, "seed": 0, "task_latency": (0.0, 0.0)}


def blocks(language: str) -> list[str]:
    """The README's fenced blocks of ``language``, in order, fragments joined to the block they continue."""
    found: list[str] = []
    for code in re.findall(rf"^```{language}\n(.*?)^```$", README, flags=re.MULTILINE | re.DOTALL):
        if code.startswith(FRAGMENT) and found:
            found[-1] += "\n" + code
        else:
            found.append(code)
    return found


def ci_commands() -> list[str]:
    """The lines ``.ci/run`` runs."""
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
async def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Simulator, dict[str, set[str]]]]:
    """A default ``eni-async simulate`` world (the README's ENIs), and an environment pointing the README's
    code at it."""
    sim = Simulator(SimulatorConfig(**DEFAULT_WORLD))  # type: ignore[arg-type]
    async with running(sim, host="127.0.0.1", port=0) as server:
        for name in [n for n in os.environ if n.startswith("ENI_ASYNC_") or n.startswith("TENCENTCLOUD_")]:
            monkeypatch.delenv(name)
        monkeypatch.delenv("TCCLI_PROFILE", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", sim.credentials.secret_id)
        monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", sim.credentials.secret_key)
        # Only the endpoint, the region and faster polls differ from a run against Tencent.
        monkeypatch.setenv("ENI_ASYNC_ENDPOINT", server.endpoint)
        monkeypatch.setenv("ENI_ASYNC_REGION", sim.region)
        for key, value in (("FIRST", "0.01"), ("INITIAL", "0.01"), ("MAXIMUM", "0.05")):
            monkeypatch.setenv(f"ENI_ASYNC_POLL_{key}", value)
        monkeypatch.chdir(tmp_path)
        yield sim, _secondary_ips(sim)


def _secondary_ips(sim: Simulator) -> dict[str, set[str]]:
    return {e["eni_id"]: set(e["secondary_ips"]) for e in sim.ground_truth()["enis"]}


def shell_block(prefix: str) -> str:
    """The one shell block whose command starts with ``prefix``."""
    (found,) = [b.strip() for b in blocks("sh") if b.strip().startswith(prefix)]
    return found


def output_sample() -> dict[str, Any]:
    """The README's sample of one batch output line."""
    (found,) = [b for b in blocks("json") if '"eni_id"' in b and '"status"' in b]
    sample: dict[str, Any] = json.loads(found)
    return sample


# Shell blocks run here rather than by .ci/run (each has its test below).
RUN_HERE = ("eni-async batch ", "eni-async simulate ", "eni-async serve ", "api() { curl ")


def test_every_shell_block_is_run() -> None:
    """Each shell block is run: every line of it by ``.ci/run``, or its command by a test of this module."""
    commands = ci_commands()
    assert blocks("python"), "the README has programs"
    for block in blocks("sh"):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if all(line in commands for line in lines):
            continue
        assert lines[0].startswith(RUN_HERE), f"nothing runs this README block: {block!r}"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
async def test_python_block_runs_as_a_complete_program(
    index: int, world: tuple[Simulator, dict[str, set[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each Python block runs as a file on its own; one that names IPs releases exactly those from its ENIs."""
    sim, before = world
    code = blocks("python")[index]
    program = compile(code, f"README.md python block {index + 1}", "exec")
    await asyncio.to_thread(exec, program, {"__name__": "__main__"})
    printed = capsys.readouterr().out
    after = _secondary_ips(sim)
    named = {ip for ip in re.findall(r'"(\d+\.\d+\.\d+\.\d+)"', code)}
    released = {ip for eni, ips in before.items() for ip in ips - after[eni]}
    assert released == named, "a program releases exactly the IPs it names"
    assert all(ip in printed for ip in named)


def test_install_and_test_commands_are_run_by_ci_verbatim() -> None:
    """The quick start's and the test section's commands are lines of ``.ci/run``, in separate virtualenvs."""
    install = shell_block("python3 -m venv .venv-demo")
    tests = next(b for b in blocks("sh") if ".venv/bin/pytest" in b)
    commands = ci_commands()
    assert install in commands
    assert all(line.strip() in commands for line in tests.splitlines() if line.strip())
    assert ".venv-demo/" in install
    assert ".venv/" not in install
    assert ".venv/" in tests
    assert ".venv-demo" not in tests
    assert "pip install -q ." in install, "installs from the clone, not from an index"


async def test_batch_command_runs_and_prints_the_documented_fields(
    world: tuple[Simulator, dict[str, set[str]]], tmp_path: Path
) -> None:
    """The batch section's command, run as written, releases every listed IP; its lines have the sample's keys."""
    sim, _ = world
    argv = shlex.split(shell_block("eni-async batch "))
    assert argv[0] == "eni-async"
    rows = [
        f"{e['vpc_id']},{e['eni_id']},{ip}" for e in sim.ground_truth()["enis"] for ip in e["secondary_ips"]
    ]
    (tmp_path / argv[2]).write_text("vpc_id,eni_id,ip\n" + "\n".join(rows) + "\n", encoding="utf-8")
    assert await asyncio.to_thread(main, argv[1:]) == 0
    results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in results} == {"succeeded"}
    assert all(not ips for ips in _secondary_ips(sim).values())
    sample = output_sample()
    optional = {"line", "unknown", "decisions"}  # present when they apply; the README names each
    assert all(set(sample) <= set(r) <= set(sample) | optional for r in results)
    assert all(f"`{key}`" in README for key in optional)


def test_simulator_command_serves_and_prints_its_ready_line() -> None:
    """The simulator section's command starts, prints its JSON ready line and stops on SIGINT (on a free port)."""
    argv = shlex.split(shell_block("eni-async simulate "))
    assert argv[:2] == ["eni-async", "simulate"]
    # The documented port may be taken on a shared machine: the same command on a free one.
    argv = [*argv[1 : argv.index("--port")], "--port", "0", *argv[argv.index("--port") + 2 :]]
    with subprocess.Popen(
        [sys.executable, "-m", "eni_async", *argv], stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as proc:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert set(ready) == {"endpoint", "region", "secret_id", "secret_key"}
    assert ready["endpoint"].startswith("http://127.0.0.1:")


async def test_serve_command_serves_and_stops_on_sigterm(
    world: tuple[Simulator, dict[str, set[str]]], tmp_path: Path
) -> None:
    """The service section's command prints its one JSON line and exits 0 on SIGTERM (on a free port)."""
    argv = shlex.split(shell_block("eni-async serve "))
    assert argv[:2] == ["eni-async", "serve"]
    argv = [*argv[1 : argv.index("--port")], "--port", "0", *argv[argv.index("--port") + 2 :]]
    env = {**os.environ, "ENI_ASYNC_SERVICE_TOKENS": "a-caller-token-of-16-or-more"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eni_async", *argv, stdout=subprocess.PIPE, cwd=tmp_path, env=env
    )
    assert proc.stdout is not None
    ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert list(ready) == ["endpoint"]
    assert ready["endpoint"].startswith("http://127.0.0.1:")


async def test_curl_walk_through_runs_against_a_serve_process(
    world: tuple[Simulator, dict[str, set[str]]], tmp_path: Path
) -> None:
    """The API's curl block, run by bash against ``eni-async serve``, releases the IPs it names and prints them."""
    sim, before = world
    token = "a-caller-token-of-16-or-more"
    env = {**os.environ, "ENI_ASYNC_SERVICE_TOKENS": token}
    serve = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "eni_async", "serve", "--journal", "releases.db", "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert serve.stdout is not None
        endpoint = json.loads(await asyncio.wait_for(serve.stdout.readline(), 30))["endpoint"]
        assert endpoint.startswith("http://127.0.0.1:")
        walk = await asyncio.create_subprocess_exec(
            *["bash", "-euo", "pipefail", "-c", shell_block("api() { curl ")],
            stdout=subprocess.PIPE,
            cwd=tmp_path,
            env={**env, "ENDPOINT": endpoint, "TOKEN": token},
        )
        out, _ = await asyncio.wait_for(walk.communicate(), 90)
        assert walk.returncode == 0, out
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 30) == 0
    lines = out.decode().splitlines()
    posted, batch, waited, failed, by_eni, cancel, health, ready = (json.loads(line) for line in lines[:8])
    assert posted["status"] in {"pending", "running"}
    assert [r["eni_id"] for r in batch["releases"]] == ["eni-5j2tazo3"]
    assert waited["id"] == posted["id"], "the repeated key answered the same release"
    assert waited["status"] == "succeeded"
    assert waited["released"] == ["10.0.0.3", "10.0.0.4"]
    assert failed["releases"] == []
    assert [r["id"] for r in by_eni["releases"]] == [posted["id"]]
    assert cancel["error"]["code"] == "AlreadyFinished", "a succeeded release is not cancelled"
    assert health == {"status": "ok"}
    assert ready["status"] == "ready"
    assert all(line.startswith("eni_async_service_releases{") for line in lines[8:])
    assert any(line.startswith('eni_async_service_releases{status="succeeded"}') for line in lines[8:])
    gone = before["eni-l06yqdpv"] - _secondary_ips(sim)["eni-l06yqdpv"]
    assert set(waited["released"]) == gone, "the simulator agrees on what was released"


def test_wheel_carries_the_documented_settings_file() -> None:
    """The wheel maps ``config/`` into the package, where ``eni-async config --defaults`` reads it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"] == {
        "config": "eni_async/config"
    }
    assert (ROOT / "config" / "eni-async.toml").is_file()
    assert {p.name for p in (ROOT / "config" / "faults").glob("*.toml")} == {
        "none.toml",
        "flaky.toml",
        "hostile.toml",
    }


# Built from pieces, so that this file does not match itself.
OUTSIDE = re.compile("decisions" + r"\.md|vpc-api" + r"\.md|\.\./" + "shared")
ISSUE = re.compile(r"\bissues? " + r"#?\d+", re.IGNORECASE)


def test_the_repository_cites_no_file_outside_itself() -> None:
    """No file points at documents outside the repository (docs/protocol.md holds them), and no code names an issue."""
    files = [ROOT / "README.md", ROOT / ".ci" / "run"]
    for folder in ("eni_async", "tests", "examples", "bench", "config", "docs"):
        files += [
            p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".toml") and p.is_file()
        ]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not OUTSIDE.search(text), f"{path.relative_to(ROOT)} cites a file outside the repository"
        if path.suffix == ".py":
            assert not ISSUE.search(text), f"{path.relative_to(ROOT)} names an issue number"


def test_the_readmes_ids_are_those_of_a_default_simulate_world() -> None:
    """Every ENI the README names is in the world ``eni-async simulate`` builds with its defaults, with its IPs."""
    from eni_async.simulator.command import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    world = Simulator(build_config(parser.parse_args([]))).ground_truth()["enis"]
    ips = {e["eni_id"]: set(e["secondary_ips"]) for e in world}
    named = re.findall(r'"(eni-[0-9a-z]{8})", \["([^]]*)"\]', README)
    assert named, "the README's programs name ENIs with their IPs"
    for eni, listed in named:
        assert set(re.findall(r"\d+\.\d+\.\d+\.\d+", listed)) <= ips[eni], eni
    assert "--port 8080" not in README, "examples pick free ports"
