"""Subprocesses with deadlines: the simulator (``eni-async simulate``) and measured children.

Every child is started in its own session and waited for with ``os.wait4``, which returns the resource
usage of that one child (CPU seconds, peak RSS) without mixing in other children the way
``RUSAGE_CHILDREN`` would. Every wait has a deadline; a child past it is killed and ``BenchError`` raised.
The simulator is a context manager that always terminates its process, on error and on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
ENI_ASYNC = [sys.executable, "-m", "eni_async"]  # the ``eni-async`` entry point of this interpreter


class BenchError(RuntimeError):
    """A benchmark could not run to the end (a child failed, hung or answered nonsense)."""


@dataclass(frozen=True)
class Usage:
    """What one finished child cost, from ``wait4``."""

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_mib: float
    rss_samples: tuple[tuple[float, float], ...] = ()  # (seconds since start, RSS MiB), when sampled
    parent_rss_mib: float | None = None  # ours when the child was forked: a floor under its ru_maxrss

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _usage(status: int, started: float, ru: resource.struct_rusage) -> Usage:
    # ru_maxrss is in KiB on Linux.
    return Usage(
        returncode=os.waitstatus_to_exitcode(status),
        wall_s=time.monotonic() - started,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        maxrss_mib=ru.ru_maxrss / 1024,
    )


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_measured(proc: subprocess.Popen[Any], started: float, timeout: float) -> Usage:
    """Wait for ``proc`` at most ``timeout`` seconds and return its own resource usage."""
    deadline = started + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
            return _usage(status, started, ru)
        if time.monotonic() > deadline:
            _kill(proc)
            os.wait4(proc.pid, 0)
            proc.returncode = -9
            command = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            raise BenchError(f"{' '.join(map(str, command))[:200]} still running after {timeout:.0f}s")
        time.sleep(0.02)


def run_measured(
    argv: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
    stderr: IO[Any] | int | None = None,
    rss_every: float | None = None,
) -> Usage:
    """Run ``argv`` to the end (killed after ``timeout``) and return what it cost.

    With ``rss_every``, the child's RSS is also read from ``/proc`` (Linux) every so many seconds, to show
    *when* memory grows; the peak itself always comes from ``wait4``.
    """
    parent_rss = _rss_mib("self")
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv), cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
    )
    samples: list[tuple[float, float]] = []
    sampler = None
    if rss_every is not None:
        sampler = threading.Thread(
            target=_sample_rss, args=(proc.pid, started, rss_every, samples), daemon=True
        )
        sampler.start()
    try:
        usage = wait_measured(proc, started, timeout)
    except BaseException:
        _kill(proc)
        raise
    if sampler is not None:
        sampler.join(timeout=5)
    return dataclasses.replace(usage, rss_samples=tuple(samples), parent_rss_mib=parent_rss)


def _rss_mib(pid: str) -> float | None:
    """VmRSS of ``/proc/<pid>`` in MiB (None when not on Linux or the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sample_rss(pid: int, started: float, every: float, into: list[tuple[float, float]]) -> None:
    while (rss := _rss_mib(str(pid))) is not None:  # None: gone, or a zombie (exited, not yet reaped)
        into.append((round(time.monotonic() - started, 2), rss))
        time.sleep(every)


@dataclass
class Simulator:
    """A running ``eni-async simulate``: where it listens, the key pair it accepts, and (once stopped)
    what it cost."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    region: str
    secret_id: str
    secret_key: str
    usage: Usage | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as the official SDK's ``HttpProfile.endpoint`` wants it."""
        return self.endpoint.removeprefix("http://")

    def env(self) -> dict[str, str]:
        """The environment for a client of this simulator: its credentials, no proxy."""
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(TENCENTCLOUD_SECRET_ID=self.secret_id, TENCENTCLOUD_SECRET_KEY=self.secret_key)
        env.pop("ENI_ASYNC_CONFIG", None)
        return env

    def get(self, path: str, timeout: float = 120.0) -> Any:
        """GET a ``/_sim/`` document (ground truth, outside the API: no auth, no limits)."""
        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=timeout) as answer:
            return json.load(answer)

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_sim/stats"))

    def state(self) -> dict[str, Any]:
        return dict(self.get("/_sim/state"))


def simulate_argv(
    *,
    enis: int,
    ips_per_eni: int = 1,
    latency: str,
    limits: dict[str, int],
    seed: int = 7,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``eni-async simulate`` command line for one benchmark world on 127.0.0.1, any free port
    (``extra``: more options, e.g. ``--jitter``)."""
    argv = [*ENI_ASYNC, "simulate", "--host", "127.0.0.1", "--port", "0", "--seed", str(seed)]
    argv += ["--enis", str(enis), "--ips-per-eni", str(ips_per_eni), "--task-latency", latency, *extra]
    for action, limit in limits.items():
        argv += ["--rate-limit", f"{action}={limit}"]
    return argv


@contextlib.contextmanager
def simulator(argv: Sequence[str], *, log: Path, ready_timeout: float = 120.0) -> Iterator[Simulator]:
    """Start the simulator, wait for its ready line, and always stop it (SIGTERM, then SIGKILL)."""
    started = time.monotonic()
    with log.open("ab") as err:
        proc = subprocess.Popen(
            list(argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, start_new_session=True
        )
    sim: Simulator | None = None
    try:
        assert proc.stdout is not None
        line = _read_line(proc.stdout, ready_timeout)
        if not line:
            raise BenchError(f"simulator exited without a ready line (status {proc.poll()}); see {log}")
        ready = json.loads(line)
        sim = Simulator(proc, ready["endpoint"], ready["region"], ready["secret_id"], ready["secret_key"])
        yield sim
    finally:
        usage = stop(proc, started)
        if sim is not None:
            sim.usage = usage


def stop(proc: subprocess.Popen[Any], started: float, grace: float = 10.0) -> Usage | None:
    """Ask ``proc`` to stop (SIGTERM), kill it after ``grace`` seconds; its usage if we reaped it."""
    if proc.returncode is not None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return wait_measured(proc, started, time.monotonic() - started + grace)
    except BenchError:
        return None
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise BenchError(f"simulator not ready after {timeout:.0f}s")
    return stream.readline()
