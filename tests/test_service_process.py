"""``eni-async serve`` as a real process: its ready line, its refusals, SIGTERM, SIGKILL and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eni_async.cli import main
from eni_async.journal import SqliteJournal
from eni_async.outcomes import check_against_truth
from eni_async.service.command import load_tokens
from eni_async.service.registry import Registry
from eni_async.settings import Settings, load_settings
from eni_async.simulator import Simulator, load_fault_profile
from tests.servehelpers import AUTH, TOKEN, read, serve_process, simulated


async def tasks_by_eni(http: aiohttp.ClientSession, sim_endpoint: str) -> Counter[str]:
    async with http.get(f"{sim_endpoint}/_sim/state") as resp:
        state = await resp.json()
    return Counter(t["eni_id"] for t in state["tasks"])


async def wait_unready(http: aiohttp.ClientSession, endpoint: str) -> None:
    """Until ``/readyz`` answers 503: the process heard its SIGTERM (bounded)."""
    for _ in range(500):
        async with http.get(f"{endpoint}/readyz") as resp:
            if resp.status == 503:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("serve never stopped being ready")


@contextlib.asynccontextmanager
async def finishing(sim: Simulator) -> AsyncIterator[None]:
    """For the block, the simulator's held tasks end every few milliseconds (a fast-forward of latencies)."""

    async def finisher() -> None:
        while True:
            sim.finish_tasks()
            await asyncio.sleep(0.01)

    running = asyncio.create_task(finisher())
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def wait_all(http: aiohttp.ClientSession, endpoint: str, ids: list[str]) -> list[dict[str, Any]]:
    """Every release, once finished."""

    async def one(rid: str) -> dict[str, Any]:
        while True:
            async with http.get(f"{endpoint}/v1/releases/{rid}?wait=30", headers=AUTH) as resp:
                assert resp.status == 200
                release: dict[str, Any] = await resp.json()
            if release["status"] in ("succeeded", "failed"):
                return release

    return list(await asyncio.gather(*(one(rid) for rid in ids)))


async def test_sigterm_answers_503_keeps_unfinished_and_a_restart_finishes_them(tmp_path: Path) -> None:
    """SIGTERM: 503 with Retry-After, exit 0 within the grace; a restart finishes every release, one task per ENI.

    The simulator holds every task RUNNING until the first process exited, so its grace ends with all ten in
    flight; they end once the restart polls them."""
    async with simulated(
        tmp_path, grace=0.5, enis=10, ips_per_eni=2, seed=4, task_latency=(0.0, 0.0)
    ) as served:
        served.sim.hold_tasks()
        journal, log = tmp_path / "service.db", tmp_path / "serve.log"
        state = served.sim.ground_truth()
        bodies = [
            {"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]} for e in state["enis"]
        ]
        async with aiohttp.ClientSession() as http:
            async with serve_process(served, journal, log) as (proc, endpoint):
                async with http.post(
                    f"{endpoint}/v1/releases", json={"releases": bodies}, headers=AUTH
                ) as resp:
                    assert resp.status == 202
                    ids = [r["id"] for r in (await resp.json())["releases"]]
                for _ in range(500):
                    if len(await tasks_by_eni(http, served.endpoint)) == 10:
                        break
                    await asyncio.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
                await wait_unready(http, endpoint)
                async with http.post(f"{endpoint}/v1/releases", json=bodies[0], headers=AUTH) as resp:
                    assert resp.status == 503
                    assert int(resp.headers["Retry-After"]) > 0
                async with http.get(f"{endpoint}/readyz") as resp:
                    assert resp.status == 503
                assert await asyncio.wait_for(proc.wait(), 6) == 0
            assert "Traceback" not in read(log)
            assert served.sim.stats()["tasks"]["RUNNING"] == 10, "the grace ended with every task in flight"
            async with serve_process(served, journal, log) as (proc, endpoint), finishing(served.sim):
                finals = await wait_all(http, endpoint, ids)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert [f["status"] for f in finals] == ["succeeded"] * 10
            logged = read(log)
            assert served.sim.credentials.secret_key not in logged
            assert TOKEN not in logged
            assert set((await tasks_by_eni(http, served.endpoint)).values()) == {
                1
            }  # polled, never resubmitted


async def test_a_second_sigterm_ends_the_grace_at_once(tmp_path: Path) -> None:
    """A second SIGTERM stops waiting for work in flight: exit 0 long before the 30 s grace, work kept."""
    async with simulated(
        tmp_path, grace=30.0, enis=3, ips_per_eni=1, seed=4, task_latency=(30.0, 0.0)
    ) as served:
        journal, log = tmp_path / "service.db", tmp_path / "serve.log"
        eni = served.sim.ground_truth()["enis"][0]
        body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
        async with aiohttp.ClientSession() as http, serve_process(served, journal, log) as (proc, endpoint):
            async with http.post(f"{endpoint}/v1/releases", json=body, headers=AUTH) as resp:
                rid = (await resp.json())["id"]
            for _ in range(500):
                if await tasks_by_eni(http, served.endpoint):
                    break
                await asyncio.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            await wait_unready(http, endpoint)
            await asyncio.sleep(0.05)
            assert proc.returncode is None  # still in its grace period
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 8) == 0
        async with SqliteJournal(journal) as jr:
            release = await Registry(jr, now=lambda: 0.0).get(rid)
            assert release is not None
            assert release.status == "running"  # unfinished, kept for the next start
            assert await jr.item(release.item_key) is not None


@pytest.mark.parametrize("faults", ["none", "flaky"])
async def test_sigkill_with_200_in_flight_then_restart_agrees_with_the_simulator(
    tmp_path: Path, faults: str
) -> None:
    """SIGKILL with 200 releases in flight; after a restart every release's final state matches /_sim/state.

    The simulator holds every task RUNNING, so with 150 ENIs at once the kill lands with at most 150 of 200
    submitted and none ended; the restart polls those (still held) and submits the rest, and the held tasks
    end every few milliseconds until every release is final, as their fates say (some fail under flaky)."""
    # The faults' waits shortened (a withheld answer is dropped after 0.2 s, not 5 s): the same faults, faster.
    profile = dataclasses.replace(load_fault_profile(faults), withhold_seconds=0.2, latency_seconds=0.1)
    async with simulated(
        tmp_path, grace=1.0, enis=200, ips_per_eni=1, seed=11, task_latency=(1.0, 0.5), faults=profile
    ) as served:
        served.sim.hold_tasks()
        journal, log = tmp_path / "service.db", tmp_path / "serve.log"
        enis = served.sim.ground_truth()["enis"]
        served.env["ENI_ASYNC_CONCURRENCY"] = "150"
        async with aiohttp.ClientSession() as http:
            async with serve_process(served, journal, log) as (proc, endpoint):

                async def submit(eni: dict[str, Any]) -> str:
                    body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
                    async with http.post(f"{endpoint}/v1/releases", json=body, headers=AUTH) as resp:
                        assert resp.status == 202
                        rid: str = (await resp.json())["id"]
                        return rid

                ids = list(await asyncio.gather(*(submit(e) for e in enis)))
                for _ in range(500):
                    if sum((await tasks_by_eni(http, served.endpoint)).values()) >= 60:
                        break
                    await asyncio.sleep(0.01)
                proc.kill()
                await proc.wait()
            submitted_before = sum((await tasks_by_eni(http, served.endpoint)).values())
            assert 0 < submitted_before < 200  # killed mid-way: some submitted, some not
            assert served.sim.stats()["tasks"]["RUNNING"] == submitted_before, "none ended before the kill"
            async with serve_process(served, journal, log) as (proc, endpoint), finishing(served.sim):
                finals = await wait_all(http, endpoint, ids)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            async with http.get(f"{served.endpoint}/_sim/state") as resp:
                state = await resp.json()
        present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in state["enis"]}
        problems = [p for f in finals for p in check_against_truth(f, present)]
        assert problems == []
        assert sorted(f["eni_id"] for f in finals) == sorted(e["eni_id"] for e in enis)
        if faults == "none":  # nothing went wrong but the kill: everything released, no task twice
            assert Counter(f["status"] for f in finals) == {"succeeded": 200}
            assert all(not e["secondary_ips"] for e in state["enis"])
            assert set(Counter(t["eni_id"] for t in state["tasks"]).values()) == {1}
        else:  # faults make some fail, each honestly: what is said released is gone, the rest is there
            assert Counter(f["status"] for f in finals)["succeeded"] > 150


# -- refusals before anything starts ---------------------------------------------------------------------


def test_refuses_a_public_address_without_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve --host 0.0.0.0 without callers' tokens exits 2 with a one-line error, creating no journal."""
    monkeypatch.delenv("ENI_ASYNC_SERVICE_TOKENS", raising=False)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDexample")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "example-key")
    code = main(["serve", "--host", "0.0.0.0", "--port", "0", "--journal", str(tmp_path / "j.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--host" in err
    assert "tokens" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "j.db").exists()


def test_a_journal_in_use_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve on a journal another process holds exits 2 with one line naming the journal."""
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDexample")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "example-key")
    holder = SqliteJournal(tmp_path / "j.db")
    try:
        code = main(["serve", "--port", "0", "--journal", str(tmp_path / "j.db")])
    finally:
        asyncio.run(holder.close())
    assert code == 2
    err = capsys.readouterr().err
    assert "--journal" in err
    assert "in use" in err
    assert len(err.strip().splitlines()) == 1


def test_the_tokens_variable_is_not_an_unknown_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENI_ASYNC_SERVICE_TOKENS is read by serve, not refused as an unknown ENI_ASYNC_* setting."""
    monkeypatch.setenv("ENI_ASYNC_SERVICE_TOKENS", TOKEN)
    assert load_settings(environ={"ENI_ASYNC_SERVICE_TOKENS": TOKEN}) == Settings()


def test_tokens_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    """Tokens are read from service_tokens_file (comments skipped) and ENI_ASYNC_SERVICE_TOKENS."""
    path = tmp_path / "tokens"
    path.write_text("# callers\nfile-token-0123456789\n\n")
    path.chmod(0o600)
    settings = Settings(service_tokens_file=str(path))
    env = {"ENI_ASYNC_SERVICE_TOKENS": "env-token-0123456789a, env-token-0123456789b"}
    assert load_tokens(settings, env) == [
        "file-token-0123456789",
        "env-token-0123456789a",
        "env-token-0123456789b",
    ]


def test_a_short_token_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token under 16 characters is a one-line configuration error that never shows the token."""
    monkeypatch.setenv("ENI_ASYNC_SERVICE_TOKENS", "shortsecret")
    code = main(["serve", "--port", "0", "--journal", str(tmp_path / "j.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "ENI_ASYNC_SERVICE_TOKENS entry 1" in err
    assert "shortsecret" not in err


def test_unreadable_tokens_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tokens file that cannot be read exits 2 naming the setting."""
    config = tmp_path / "c.toml"
    config.write_text(f'service_tokens_file = "{tmp_path / "missing"}"\n')
    code = main(["serve", "--config", str(config), "--port", "0", "--journal", str(tmp_path / "j.db")])
    assert code == 2
    assert "service_tokens_file" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--port", "70000"], ["--metrics-port", "-1"]])
def test_bad_ports_are_refused(tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Ports out of range exit 2 naming the option."""
    code = main(["serve", "--journal", str(tmp_path / "j.db"), *args])
    assert code == 2
    assert args[0] in capsys.readouterr().err


def test_the_token_option_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """Tokens cannot be given on the command line (they would show in ps)."""
    assert main(["serve", "--journal", "j.db", "--token", "x" * 20]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err
