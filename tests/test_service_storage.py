"""The service survives storage faults: a full journal disk, a journal deleted or replaced under it.

Two emulations of a full disk, each stated where it is used, both working as root and non-root alike
without mounting anything: in process, SQLite's ``PRAGMA max_page_count`` on the service's own connection
(any write that needs a new page fails with ``SQLITE_FULL``, as on a full disk); in a ``serve`` subprocess,
a file-size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored, as Python does anyway) that no journal file
may grow past, set and lifted from outside with ``prlimit``: every write that needs the journal or its WAL to
grow fails, as on a full disk, and lifting it is space coming back.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eni_async.cli import main
from eni_async.journal import SqliteJournal
from eni_async.journal.sqlite import SqliteConnector
from eni_async.outcomes import check_against_truth
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig
from tests import test_service
from tests.pgserver import PostgresServer
from tests.servehelpers import AUTH as PROCESS_AUTH
from tests.servehelpers import Served, read, serve_process, simulated
from tests.test_replicas import bodies, replicas, until
from tests.test_service import AUTH, Service, service_on


def connector(svc: Service) -> SqliteConnector:
    found = svc.engine.journal.connector  # type: ignore[attr-defined]
    assert isinstance(found, SqliteConnector)
    return found


def fill_disk(svc: Service) -> None:
    """Emulates a full disk: no new page for the service's journal (``PRAGMA max_page_count``)."""
    db = connector(svc)._db
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(svc: Service) -> None:
    connector(svc)._db.execute("PRAGMA max_page_count = 1073741823")


def truth(sim: Simulator) -> dict[str, set[str]]:
    return {e["eni_id"]: set(e["secondary_ips"]) for e in sim.ground_truth()["enis"]}


def remove(folder: Path, pattern: str) -> None:
    for file in folder.glob(pattern):
        file.unlink()


def rescue_file(folder: Path) -> Path:
    (found,) = folder.glob("j.db.rescued-*")
    return found


async def post(svc: Service, body: object) -> tuple[int, Any]:
    resp = await svc.http.post("/v1/releases", json=body, headers=AUTH)
    return resp.status, await resp.json()


async def get(svc: Service, path: str) -> tuple[int, Any]:
    resp = await svc.http.get(path, headers=AUTH)
    return resp.status, await resp.json()


async def test_a_full_disk_refuses_writes_with_a_reason_reads_go_on_and_it_resumes_by_itself(
    tmp_path: Path,
) -> None:
    """With the journal's disk full, POST answers 503 JournalUnavailable saying the disk is full and
    creates nothing, while reads and health answer; once there is room, POST answers 202 again without a
    restart, and every release accepted before finishes in agreement with the simulator."""
    sim = Simulator(SimulatorConfig(enis=120, ips_per_eni=2, seed=5, task_latency=(0.2, 0.0)))
    async with service_on(sim, tmp_path / "j.db") as svc:
        status, data = await post(svc, {"releases": [svc.body(i) for i in range(20)]})
        assert status == 202
        accepted = [r["id"] for r in data["releases"]]
        fill_disk(svc)
        refused = None
        for index in range(20, 120):  # until a release needs a new page
            status, answer = await post(svc, svc.body(index))
            if status != 202:
                refused = (status, answer, index)
                break
        assert refused is not None, "the full disk refused a write"
        status, answer, index = refused
        assert status == 503
        assert answer["error"]["code"] == "JournalUnavailable"
        assert "the disk is full" in answer["error"]["message"]
        before = sim.ground_truth()["enis"][index]["eni_id"]
        status, listed = await get(svc, "/v1/releases?limit=100")
        assert status == 200
        assert before not in {r["eni_id"] for r in listed["releases"]}, "nothing was created"
        assert (await get(svc, f"/v1/releases/{accepted[0]}"))[0] == 200
        assert (await svc.http.get("/healthz")).status == 200
        free_disk(svc)
        status, again = await post(svc, svc.body(index))
        assert status == 202, again
        finals = [(await get(svc, f"/v1/releases/{rid}?wait=20"))[1] for rid in [*accepted, again["id"]]]
        assert (await svc.http.get("/readyz")).status == 200
        present = truth(sim)
    assert {f["status"] for f in finals} == {"succeeded"}
    assert [p for f in finals for p in check_against_truth(f, present)] == []


async def test_a_deleted_journal_is_found_within_seconds_and_refuses_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal deleted under the running service is found without any request (at a lease renewal):
    /readyz answers 503 saying so, POST 503 creates nothing (not even in a fresh file at the journal's
    path), reads go on, and what the service knew is in a rescue file beside it, which a new journal at the
    path warns of."""
    # Leases of 0.5 s: the renewal, and with it the check of the journal file, every 0.17 s.
    monkeypatch.setattr(test_service, "Settings", functools.partial(Settings, lease_s=0.5))
    sim = Simulator(SimulatorConfig(enis=60, ips_per_eni=2, seed=6, task_latency=(30.0, 0.0)))
    path = tmp_path / "j.db"
    async with service_on(sim, path) as svc:
        status, data = await post(svc, {"releases": [svc.body(i) for i in range(50)]})
        assert status == 202
        accepted = [r["id"] for r in data["releases"]]
        remove(tmp_path, "j.db*")
        for _ in range(500):  # bounded: the check runs every 0.17 s here
            if connector(svc).lost is not None:
                break
            await asyncio.sleep(0.01)
        assert connector(svc).lost is not None, "the deletion was found without a request"
        ready = await svc.http.get("/readyz")
        assert ready.status == 503
        assert "deleted" in (await ready.json())["reason"]
        async with SqliteJournal(path) as fresh:  # something else starts a new journal at the same path
            status, answer = await post(svc, svc.body(55))
            assert status == 503
            assert "deleted" in answer["error"]["message"]
            assert not any((await fresh.releases.counts()).values()), "nothing written to the new file"
        assert (await get(svc, f"/v1/releases/{accepted[0]}"))[0] == 200
    rescued = rescue_file(tmp_path)
    async with SqliteJournal(rescued, read_only=True) as saved:
        counts = await saved.releases.counts()
    assert sum(counts.values()) == 50, "every release accepted before the deletion is in the rescue file"
    told = [
        r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "is new, but" in r.getMessage()
    ]
    assert told, "the fresh journal at the path said that a rescue file is beside it"
    assert str(rescued) in told[0]


async def test_a_journal_restored_from_its_rescue_file_answers_for_every_release(tmp_path: Path) -> None:
    """Restored from the rescue file, a restarted service answers every release accepted before the
    journal was deleted (never 404) and finishes them in agreement with the simulator."""
    sim = Simulator(SimulatorConfig(enis=20, ips_per_eni=2, seed=7, task_latency=(0.2, 0.0)))
    path = tmp_path / "j.db"
    async with service_on(sim, path) as svc:
        _, data = await post(svc, {"releases": [svc.body(i) for i in range(20)]})
        accepted = [r["id"] for r in data["releases"]]
        path.unlink()
        assert (await svc.http.get("/readyz")).status == 503  # its write found the deletion
    remove(tmp_path, "j.db-*")
    rescue_file(tmp_path).rename(path)
    async with service_on(sim, path) as svc:
        finals = [(await get(svc, f"/v1/releases/{rid}?wait=20")) for rid in accepted]
        present = truth(sim)
    assert {status for status, _ in finals} == {200}
    assert {f["status"] for _, f in finals} == {"succeeded"}
    assert [p for _, f in finals for p in check_against_truth(f, present)] == []


async def test_a_journal_replaced_under_the_service_refuses_writes(tmp_path: Path) -> None:
    """Another file moved over the journal's path is found at the next write: 503 saying it was replaced,
    and the other file is left as it was."""
    sim = Simulator(SimulatorConfig(enis=10, ips_per_eni=2, seed=8, task_latency=(0.0, 0.0)))
    path = tmp_path / "j.db"
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE unrelated (x)").connection.commit()
    async with service_on(sim, path) as svc:
        assert (await post(svc, svc.body(0)))[0] == 202
        os.replace(other, path)
        status, answer = await post(svc, svc.body(1))
        ready = await svc.http.get("/readyz")
        assert status == 503
        assert "replaced" in answer["error"]["message"]
        assert ready.status == 503
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert tables == {"unrelated"}


# -- in a serve process: the disk fills and empties under it, and a start on a full disk -----------------


def largest(journal: Path) -> int:
    return max(f.stat().st_size for f in journal.parent.glob(journal.name + "*") if f.is_file())


def limit_files(pid: int, size: int | None) -> None:
    """Emulates a full disk (``size``: no journal file grows past it) or free space again (``None``)."""
    soft = resource.RLIM_INFINITY if size is None else size
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


async def test_serve_on_a_disk_that_fills_and_empties_goes_on_by_itself(tmp_path: Path) -> None:
    """Under ``serve``, a full disk (no journal file may grow) makes POST and /readyz answer 503 with the
    reason while reads answer; freed space brings both back without a restart, and every release accepted
    before ends as the simulator says."""
    async with simulated(tmp_path, grace=1.0, enis=50, ips_per_eni=2, task_latency=(0.1, 0.0)) as served:
        journal, log = tmp_path / "j.db", tmp_path / "serve.log"
        enis = served.sim.ground_truth()["enis"]

        def body(i: int) -> dict[str, Any]:
            return {"vpc_id": enis[i]["vpc_id"], "eni_id": enis[i]["eni_id"], "ips": enis[i]["secondary_ips"]}

        async with (
            serve_process(served, journal, log) as (proc, endpoint),
            aiohttp.ClientSession(headers=PROCESS_AUTH) as http,
        ):
            async with http.post(
                f"{endpoint}/v1/releases", json={"releases": [body(i) for i in range(10)]}
            ) as r:
                assert r.status == 202
                accepted = [x["id"] for x in (await r.json())["releases"]]
            limit_files(proc.pid, largest(journal))
            async with http.post(f"{endpoint}/v1/releases", json=body(40)) as r:
                refused = r.status, await r.json()
            async with http.get(f"{endpoint}/readyz") as r:
                ready = r.status, await r.json()
            async with http.get(f"{endpoint}/v1/releases?limit=100") as r:
                listed = r.status, await r.json()
            async with http.get(f"{endpoint}/v1/releases/{accepted[0]}") as r:
                one = r.status
            limit_files(proc.pid, None)
            for _ in range(100):  # bounded: the service tries its writes again by itself
                async with http.get(f"{endpoint}/readyz") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            async with http.post(f"{endpoint}/v1/releases", json=body(40)) as r:
                again = r.status
                accepted.append((await r.json())["id"])
            finals = []
            for rid in accepted:
                async with http.get(f"{endpoint}/v1/releases/{rid}?wait=20") as r:
                    finals.append(await r.json())
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        present = truth(served.sim)
    assert refused[0] == 503, refused
    assert refused[1]["error"]["code"] == "JournalUnavailable"
    assert "cannot take writes now:" in refused[1]["error"]["message"]
    assert ready[0] == 503
    assert ready[1]["reason"].startswith(("journal not writable: ", "journal unreachable: ")), ready
    assert listed[0] == 200
    assert enis[40]["eni_id"] not in {r["eni_id"] for r in listed[1]["releases"]}
    assert one == 200
    assert again == 202
    assert {f["status"] for f in finals} == {"succeeded"}
    assert [p for f in finals for p in check_against_truth(f, present)] == []
    assert "Traceback" not in read(log)


async def start_on_full_disk(served: Served, journal: Path, size: int) -> tuple[int, str]:
    """``serve`` started with no journal file allowed past ``size`` bytes: its exit code and stderr."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eni_async", *served.args(journal), env=served.env, preexec_fn=limit,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, err.decode()


async def test_serve_started_on_a_full_disk_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """``serve`` restarted on a full disk (its journal left with unfinished releases by a SIGKILL) exits 2
    with the one ``--journal`` line (a warning may come before it), whether opening the journal or its first writes fail; never
    "unexpected error"."""
    async with simulated(tmp_path, grace=1.0, enis=20, ips_per_eni=2, task_latency=(30.0, 0.0)) as served:
        journal, log = tmp_path / "j.db", tmp_path / "serve.log"
        enis = served.sim.ground_truth()["enis"]
        bodies = [{"vpc_id": e["vpc_id"], "eni_id": e["eni_id"], "ips": e["secondary_ips"]} for e in enis]
        async with (
            serve_process(served, journal, log) as (proc, endpoint),
            aiohttp.ClientSession(headers=PROCESS_AUTH) as http,
        ):
            async with http.post(f"{endpoint}/v1/releases", json={"releases": bodies[:20]}) as r:
                assert r.status == 202
            proc.kill()
            await proc.wait()
        results = [await start_on_full_disk(served, journal, size) for size in (0, largest(journal))]
    for code, err in results:
        errors = [line for line in err.strip().splitlines() if "WARNING" not in line]
        assert code == 2, err
        assert len(errors) == 1, err
        assert errors[0].startswith("eni-async: error: --journal: "), err
        assert "unexpected" not in err
        assert "Traceback" not in err


@pytest.mark.parametrize("fault", ["garbage", "other_schema", "directory", "no_directory", "locked"])
def test_every_journal_failure_at_start_is_one_line_and_exit_2(
    tmp_path: Path, fault: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` on a journal it cannot use (not a database, another schema, a directory, a directory that
    does not exist, locked by another process) exits 2 with one line naming ``--journal``."""
    monkeypatch.setenv("TENCENTCLOUD_SECRET_ID", "AKIDtest")
    monkeypatch.setenv("TENCENTCLOUD_SECRET_KEY", "secret")
    path = tmp_path / "j.db"
    holder = None
    if fault == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    elif fault == "other_schema":
        sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.commit()
    elif fault == "directory":
        path.mkdir()
    elif fault == "no_directory":
        path = tmp_path / "gone" / "j.db"
    else:
        holder = SqliteConnector(path)
    try:
        code = main(["serve", "--port", "0", "--endpoint", "http://127.0.0.1:9", "--journal", str(path)])
    finally:
        if holder is not None:
            asyncio.run(holder.close())
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("eni-async: error: --journal: "), err


# -- the same fault on a PostgreSQL journal ---------------------------------------------------------------

TABLES = ("meta", "items", "tasks", "leases", "service_releases", "service_meta", "service_idempotency")
FULL = (
    "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$"
)


async def test_a_full_postgresql_disk_is_told_truthfully_and_survived(
    postgres_database: str, postgres_server: PostgresServer
) -> None:
    """Emulates a full disk on a PostgreSQL journal: a trigger on every journal table fails each write
    with SQLSTATE 53100 (disk_full), as PostgreSQL does when it cannot extend a file. POST and /readyz
    answer 503 saying the database's disk is full and nothing is created; once the triggers are dropped
    the replica goes on by itself and the release it had in flight ends as the simulator says, its task
    observed and never resubmitted. The simulator holds that task RUNNING until the replica is ready again
    (in flight throughout, no latency slept through); a 1.5 s lease checks the journal every 0.5 s."""
    sim = Simulator(SimulatorConfig(enis=3, ips_per_eni=2, seed=16, task_latency=(0.0, 0.0)))
    sim.hold_tasks()
    database = postgres_database.rsplit("/", 1)[1]
    async with replicas(sim, postgres_database, 1.5) as (served, clients), aiohttp.ClientSession() as http:
        first, second, _ = bodies(sim, 3)
        release = await clients[0].submit(*first)
        await until(lambda: len(sim.ground_truth()["tasks"]) == 1)
        await postgres_server.asql(FULL, database)
        for table in TABLES:
            await postgres_server.asql(
                f"CREATE TRIGGER full_{table} BEFORE INSERT OR UPDATE OR DELETE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION disk_full()",
                database,
            )
        try:
            refused = await http.post(
                f"{served[0].endpoint}/v1/releases",
                json={"vpc_id": second[0], "eni_id": second[1], "ips": second[2]},
            )
            answer = await refused.json()
            ready = await http.get(f"{served[0].endpoint}/readyz")
            reason = (await ready.json())["reason"]
        finally:
            for table in TABLES:
                await postgres_server.asql(f"DROP TRIGGER full_{table} ON {table}", database)

        async def back() -> bool:
            return (await http.get(f"{served[0].endpoint}/readyz")).status == 200

        await until(back, seconds=20)
        assert sim.stats()["tasks"]["RUNNING"] == 1, "the task was in flight throughout"
        sim.finish_tasks()
        done = await clients[0].wait(release["id"], 30)
        listed = await http.get(f"{served[0].endpoint}/v1/releases?limit=10")
        present = truth(sim)
    assert refused.status == 503
    assert answer["error"]["code"] == "JournalUnavailable"
    assert "disk is full" in answer["error"]["message"]
    assert ready.status == 503
    assert "disk is full" in reason
    assert done["status"] == "succeeded"
    assert check_against_truth(done, present) == []
    assert len(sim.ground_truth()["tasks"]) == 1, "observed, never resubmitted"
    assert [r["eni_id"] for r in (await listed.json())["releases"]] == [first[1]], "nothing else was created"
