"""Fixtures shared by the CLI-level tests: a fast poll configuration, credentials, a served simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eni_async.simulator import Simulator, SimulatorConfig, running

# Polls and retries measured in hundredths of a second, for tests that run the CLI in real time.
FAST_TOML = """
[poll]
first = 0.02
initial = 0.02
maximum = 0.2
timeout = 30.0
[retry]
initial = 0.01
maximum = 0.05
"""
DOC_SECRET_ID, DOC_SECRET_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"


@pytest.fixture
def fast_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A settings file with fast polls, named by ``ENI_ASYNC_CONFIG``."""
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    monkeypatch.setenv("ENI_ASYNC_CONFIG", str(config))
    return config


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch, fast_config: Path) -> None:
    """The documentation's example key pair in the environment, fast polls, and task-only confirmation
    (the scripted exchanges these tests replay answer task queries, not descriptions)."""
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", DOC_SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", DOC_SECRET_KEY)
    fast_config.write_text('confirm = "task"\n' + FAST_TOML)


@pytest.fixture
async def served(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, fast_config: Path
) -> AsyncIterator[tuple[Simulator, str]]:
    """A real-time simulator on 127.0.0.1 whose tasks end at once, its credentials in the environment.

    A test module may set ``SERVED = {...}`` to change the ``SimulatorConfig`` (ENIs, IPs, seed).
    """
    config = {"enis": 8, "ips_per_eni": 3, "seed": 5, "task_latency": (0.0, 0.0)}
    config |= getattr(request.module, "SERVED", {})
    sim = Simulator(SimulatorConfig(**config))  # type: ignore[arg-type]
    async with running(sim, host="127.0.0.1", port=0) as server:
        monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", sim.credentials.secret_id)
        monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", sim.credentials.secret_key)
        yield sim, server.endpoint
