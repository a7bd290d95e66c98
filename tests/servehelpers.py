"""Test helpers for ``eni-async serve`` as a real process: a simulator on 127.0.0.1 and a serve process on it.

``simulated`` serves an in-process simulator and builds the environment a ``serve`` process needs (its
credentials, a fast settings file, the callers' token); ``serve_process`` starts ``python -m eni_async -v
serve`` with stderr in a log file and yields the process and the endpoint from its one stdout line.
``descriptors`` caps the child's open files (``RLIMIT_NOFILE``), for the tests of hostile clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eni_async.simulator import Simulator, SimulatorConfig, running

TOKEN = "process-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = {
    "UnassignPrivateIpAddresses": 1000,
    "DescribeVpcTaskResult": 400,
    "DescribeNetworkInterfaces": 1000,
    "AssignPrivateIpAddresses": 1000,
}
CONFIG = """
grace = {grace}
service_outage_wait = 0.05
[poll]
first = 0.2
initial = 0.1
maximum = 0.3
timeout = 60.0
[retry]
initial = 0.01
maximum = 0.05
[rate_limits]
unassign = 1000
task_query = 400
describe = 1000
"""


@dataclass
class Served:
    """A simulator on 127.0.0.1 and the environment a ``serve`` process needs to use it."""

    sim: Simulator
    endpoint: str
    env: dict[str, str]

    def args(self, journal: Path) -> list[str]:
        return [
            "serve",
            "--journal",
            str(journal),
            "--port",
            "0",
            "--endpoint",
            self.endpoint,
            "--region",
            self.sim.region,
        ]


@asynccontextmanager
async def simulated(tmp_path: Path, *, grace: float, **config: Any) -> AsyncIterator[Served]:
    """A simulator (``SimulatorConfig(**config)``) served on 127.0.0.1 for the block."""
    sim = Simulator(SimulatorConfig(rate_limits=LIMITS, **config))
    (tmp_path / "fast.toml").write_text(CONFIG.format(grace=grace))
    env = {
        **os.environ,
        "TENCENTCLOUD_SECRET_ID": sim.credentials.secret_id,
        "TENCENTCLOUD_SECRET_KEY": sim.credentials.secret_key,
        "ENI_ASYNC_CONFIG": str(tmp_path / "fast.toml"),
        "ENI_ASYNC_SERVICE_TOKENS": TOKEN,
    }
    async with running(sim, host="127.0.0.1", port=0) as server:
        yield Served(sim, server.endpoint, env)


def _limit_descriptors(count: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return limit


@asynccontextmanager
async def serve_process(
    served: Served,
    journal: Path,
    log: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    descriptors: int | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start ``eni-async serve`` (with ``args`` and ``env`` added); yield the process and the endpoint from
    its one stdout line; kill it at the end if it still runs."""
    with log.open("ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eni_async", "-v", *served.args(journal), *args,
            stdout=asyncio.subprocess.PIPE, stderr=stderr, env={**served.env, **(env or {})},
            preexec_fn=_limit_descriptors(descriptors) if descriptors else None,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, read(log)
        ready = json.loads(line)
        assert list(ready) == ["endpoint"]
        assert ready["endpoint"].split("://")[1].startswith("127.0.0.1:")
        yield proc, ready["endpoint"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def read(path: Path) -> str:
    """A small log file's text."""
    return path.read_text()
