"""The OpenAPI document as a test: a property-based contract fuzzer (schemathesis) drives a real ``serve``.

Every check schemathesis has, every phase (coverage, fuzzing, and stateful runs that follow the document's
links and the ones it infers), against ``eni-async serve`` on 127.0.0.1 with the simulator behind it. The
run is bounded and reproducible: deterministic generation, a few examples per operation, one worker, and a
timeout. If the fuzzer and the document disagree, one of them is wrong; the failure shows the fuzzer's
report, with a curl line for each case.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.servehelpers import TOKEN, read, serve_process, simulated

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = 5
RUN_TIMEOUT_S = 120


# The phases run as two tests, so that pytest-xdist spreads them over its workers (the coverage phase is
# half the time). The stateful phase runs after the fuzzing phase in one run: the links it infers from the
# Location headers that fuzzing's created releases answer (two more than the document's) are still followed.
PHASES = ("examples,coverage", "fuzzing,stateful")

# hypothesis caches the characters a codec can encode (utf-8: 1.1 s of CPU to compute, read in milliseconds)
# in its storage folder. The fuzzer runs in the test's own folder, so it would compute them on every run: it
# is given the suite's folder instead (the default, ./.hypothesis, unless HYPOTHESIS_STORAGE_DIRECTORY names
# one; made absolute, as the fuzzer runs elsewhere). Generation is deterministic, which uses no example
# database: only caches are shared.
STORAGE = str(Path(os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or ".hypothesis").resolve())


@pytest.mark.parametrize("phases", PHASES)
async def test_the_contract_fuzzer_finds_nothing_against_a_real_serve(tmp_path: Path, phases: str) -> None:
    """schemathesis with all checks and stateful links, driven by the served document, finds no failure."""
    async with simulated(
        tmp_path, grace=0.5, enis=4, ips_per_eni=2, seed=1, task_latency=(0.2, 0.0)
    ) as served:
        log = tmp_path / "serve.log"
        async with serve_process(served, tmp_path / "j.db", log) as (proc, endpoint):
            fuzzer = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
                "run", f"{endpoint}/v1/openapi.json",
                "--header", f"Authorization: Bearer {TOKEN}",
                "--checks", "all", "--max-examples", str(EXAMPLES), "--generation-deterministic",
                "--workers", "1", "--request-timeout", "10", "--phases", phases,
                cwd=tmp_path, env={**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": STORAGE},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            report, _ = await asyncio.wait_for(fuzzer.communicate(), RUN_TIMEOUT_S)
            text = report.decode(errors="replace")
            assert fuzzer.returncode == 0, text[-20_000:]
            assert "No issues found" in text, text[-20_000:]
            if "stateful" in phases:
                assert "Stateful" in text
            proc.terminate()
            assert await proc.wait() == 0
        assert "Traceback" not in read(log)
