"""Fixtures shared by the tests: a fast poll configuration, credentials, a served simulator, a Redis server,
a PostgreSQL server (one per session, a database per test) and a journal URL of either kind."""

from __future__ import annotations

import concurrent.futures
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.pgserver import PostgresServer, started

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
assert "initial = 0.01\nmaximum = 0.05" in FAST_TOML
DOC_SECRET_ID, DOC_SECRET_KEY = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3gnPhESA", "Gu5t9xGARNpq86cd98joQYCN3Cozk1qA"


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens, for the session: bound by a socket that never listens, so a
    connection is refused at once and no other server (of any worker) can take the port meanwhile."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port: int = holder.getsockname()[1]
        yield port


# Role-credential sources the credential chain reaches when nothing static is found.
ROLE_ENV = (
    "TKE_REGION",
    "TKE_PROVIDER_ID",
    "TKE_WEB_IDENTITY_TOKEN_FILE",
    "TKE_ROLE_ARN",
    "TENCENTCLOUD_ROLE_ARN",
    "TENCENTCLOUD_ROLE_SESSION_NAME",
    "TCCLI_PROFILE",
)


@pytest.fixture(scope="session")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of every test's home folder, for the session."""
    return tmp_path_factory.mktemp("homes")


@pytest.fixture(autouse=True)
def no_role_credentials(monkeypatch: pytest.MonkeyPatch, homes: Path, closed_port: int) -> None:
    """Every test: no TKE or role variables, the metadata service and STS on a closed local port, and an empty
    home (a developer's own ~/.tencentcloud or ~/.tccli profile, and its region, never reach a test).

    The homes are made by ``tempfile.mkdtemp`` in one folder: ``tmp_path_factory.mktemp`` lists the whole
    base folder to number each new one, which over a worker's thousand tests costs a second of CPU."""
    monkeypatch.setenv("HOME", tempfile.mkdtemp(prefix="home", dir=homes))
    monkeypatch.delenv("TCCLI_PROFILE", raising=False)
    for name in ROLE_ENV:
        monkeypatch.delenv(name, raising=False)
    closed = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("ENI_ASYNC_METADATA_ENDPOINT", closed)
    monkeypatch.setenv("ENI_ASYNC_STS_ENDPOINT", closed)


@pytest.fixture
def fast_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A settings file with fast polls, named by ``ENI_ASYNC_CONFIG``."""
    config = tmp_path / "fast.toml"
    config.write_text(FAST_TOML)
    monkeypatch.setenv("ENI_ASYNC_CONFIG", str(config))
    return config


# Scripted exchanges answer only what a test scripted: the rest is refused at once and retried; waits of a
# millisecond keep those retries (three rounds of eight describes, say) from costing real time.
SCRIPTED_TOML = FAST_TOML.replace("initial = 0.01\nmaximum = 0.05", "initial = 0.001\nmaximum = 0.001")


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch, fast_config: Path) -> None:
    """The documentation's example key pair in the environment, fast polls, task-only confirmation (the
    scripted exchanges these tests replay answer task queries, not descriptions) and millisecond retries."""
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", DOC_SECRET_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", DOC_SECRET_KEY)
    fast_config.write_text('confirm = "task"\n' + SCRIPTED_TOML)


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


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1 (no disk, no config file) that a test may stop and start again.

    Installed by ``.ci/run`` and the README's test command when missing (Debian's ``redis-server``).
    """

    def __init__(self, workdir: Path, *, password: str = "", tls: bool = False) -> None:
        self.workdir = workdir
        self.password = password
        self.tls = tls
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ca_file = workdir / "redis-ca.pem"
        if tls:  # a certificate for 127.0.0.1 from a throwaway CA
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1")
            ca.cert_pem.write_to_path(str(self.ca_file))
            cert.private_key_pem.write_to_path(str(workdir / "redis-key.pem"))
            cert.cert_chain_pems[0].write_to_path(str(workdir / "redis-cert.pem"))

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _options(self) -> list[str]:
        options = ["--requirepass", self.password] if self.password else []
        if self.tls:
            options += [
                "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
                "--tls-cert-file", str(self.workdir / "redis-cert.pem"),
                "--tls-key-file", str(self.workdir / "redis-key.pem"),
                "--tls-ca-cert-file", str(self.ca_file),
            ]  # fmt: skip
        return options

    def start(self) -> None:
        """Start the server on the same port as before and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install -y redis-server (see the README)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning", *self._options()],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    if self.tls:  # listening is enough: the handshake is the test's business
                        return
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: as abrupt as a lost machine) and wait for it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty ``redis-server`` on a free port of 127.0.0.1, killed after the test."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The session's PostgreSQL server, started in a thread as soon as the collection shows a test that needs it
# (initdb and the start take seconds, mostly waiting: other tests run meanwhile), stopped at the session's end.
_postgres: concurrent.futures.Future[PostgresServer] | None = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (started early, or on first use), stopped at the end."""
    global _postgres
    if _postgres is None:
        _postgres = concurrent.futures.Future()
        _postgres.set_result(started())
    server = _postgres.result()
    try:
        yield server
    finally:
        server.stop()


def _start_postgres_early(items: list[pytest.Item]) -> None:
    global _postgres
    if _postgres is None and any("postgres_server" in getattr(i, "fixturenames", ()) for i in items):
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postgres")
        _postgres = pool.submit(started)
        pool.shutdown(wait=False)


def pytest_sessionfinish() -> None:
    """A server started early for tests this process did not run in the end is stopped too (once started)."""
    if _postgres is not None and _postgres.exception() is None:
        _postgres.result().stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of an empty journal on the session's PostgreSQL server (its tables truncated)."""
    return postgres_server.reset()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The URL of a new database holding nothing, not even a journal's tables."""
    return postgres_server.database()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A journal of each kind: an SQLite file, then an empty PostgreSQL database (the contract's two sides)."""
    if request.param == "sqlite":
        return str(tmp_path / "j.journal")
    url: str = request.getfixturevalue("postgres_url")
    return url


def _started() -> float:
    """When this process started, on ``time.monotonic``'s clock (Linux: from /proc; elsewhere: now)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        booted = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic()
    return time.monotonic() - (booted - ticks / os.sysconf("SC_CLK_TCK"))


_STARTED = _started()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The suite's time, from the interpreter's start (``.ci/run`` shows it; the bar is 60 s on 2 cores), and
    the CPU it took (user+sys of this process, its workers and every process they started and waited for)."""
    if hasattr(config, "workerinput"):
        return
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    terminalreporter.write_line(f"suite: {time.monotonic() - _STARTED:.0f} s wall, {cpu:.0f} s CPU")


# Modules whose tests run for seconds (real processes, servers, rate windows), longest first: they start
# first, so no worker is left with one of them at the end while the others idle (pytest-xdist deals the
# tests out in collection order and idle workers steal from the tail of a busy one's share).
LONG_FIRST = (
    "test_service_contract.py",
    "test_replicas_drill.py",
    "test_service_process.py",
    "test_interrupt_cli.py",
    "test_replicas.py",
    "test_journal_cli.py",
    "test_shared_quota_client.py",
    "test_shared_quota.py",
    "test_cli_quiet.py",
    "test_journal_resume.py",
    "test_service_hostile.py",
    "test_service_command.py",
    "test_service_outage.py",
    "test_drill.py",
    "test_credentials_refresh.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests of ``LONG_FIRST`` first, in its order; every other test after them, in collection order.
    A PostgreSQL server starts now if a test needs one."""
    rank = {name: n for n, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))
    if not config.option.collectonly:
        _start_postgres_early(items)
