"""The replicas drill: several ``eni-async serve`` on one PostgreSQL journal, killed at random.

Three ``serve`` processes share one PostgreSQL journal and one Redis quota (``--shared-quota``), against a
flaky simulator (``eni-async simulate --faults flaky``, limits raised so that the drill ends in minutes).
Thousands of releases (some ENIs split into two releases, so that one ENI's work is accepted by two
replicas) are posted across the replicas as a load balancer would (round robin; a refused or broken
connection goes to the next replica with the same ``Idempotency-Key``), while replicas are SIGKILLed and
restarted at random points and the database is restarted once (``pg_ctl -m immediate``, as after a crash).
Every release is awaited with ``?wait=`` on a replica picked at random, which need not be the one that runs it.

Verdict: every release ends; every outcome agrees with ``/_sim/state`` (released IPs gone, IPs not released
still there, a succeeded release's IPs all gone); one release per key and no other; no IP in two accepted
tasks unless the earlier one FAILED (the simulator's task log); no IP left ``unknown``. Reported: the
adoption time after each kill (from the SIGKILL until every ENI with unfinished releases that the dead
replica held has a new owner, read from the journal's ``leases``) and, on the same world without faults of
processes, the makespan of three replicas against one (target: within 1.1 x).

    python -m bench.replicas_drill                    # full size: 3,000 releases (a few minutes)
    python -m bench.replicas_drill --releases 300 --kills 2

Only 127.0.0.1: the simulator, ``redis-server`` and PostgreSQL (Debian's packages) on free ports, all
stopped at the end; every wait has a deadline. ``tests/test_replicas_drill.py`` runs ``drill`` in small.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

SERVE = [sys.executable, "-m", "eni_async", "serve"]
LIMITS = {"UnassignPrivateIpAddresses": 400, "DescribeVpcTaskResult": 100, "DescribeNetworkInterfaces": 400}
CONFIG = """
lease_s = {lease_s}
grace = 1.0
service_max_unfinished = 1000000
[rate_limits]
unassign = {unassign}
task_query = {task_query}
describe = {describe}
[timeouts]
read = 5.0
[poll]
"""
FINAL = ("succeeded", "failed")


@dataclass
class World:
    """Where the drill runs: the simulator, the journal, the Redis quota, and how to restart the database."""

    sim_endpoint: str
    region: str
    secret_id: str
    secret_key: str
    journal: str
    redis: str
    workdir: Path
    restart_db: Callable[[], Awaitable[None]] | None = None


@dataclass
class Plan:
    """What to do: how many replicas, the releases (bodies), how many kills, with which lease."""

    replicas: int
    releases: list[dict[str, Any]]
    kills: int = 0
    restart_db: bool = False
    lease_s: float = 10.0
    seed: int = 1
    timeout_s: float = 600.0
    kill_gap_s: tuple[float, float] = (2.0, 6.0)  # between a restart and the next kill
    down_s: tuple[float, float] = (0.5, 3.0)  # a killed replica stays down this long
    poll: dict[str, float] = field(default_factory=lambda: {"timeout": 600.0})  # the replicas' [poll]


@dataclass
class Replica:
    """One ``serve`` process in a slot; restarted in the same slot after a kill."""

    slot: int
    log: Path
    proc: asyncio.subprocess.Process | None = None
    endpoint: str | None = None


@dataclass
class Row:
    """What one run found."""

    run: str
    replicas: int
    releases: int
    makespan_s: float = 0.0
    kills: int = 0
    db_restarts: int = 0
    adoption_s: list[float] = field(default_factory=list)
    unfinished: int = 0
    extra_releases: int = 0
    mismatches: int = 0
    double_tasks: int = 0
    unknown_ips: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    post_retries: int = 0

    def table(self) -> dict[str, Any]:
        adoption = sorted(self.adoption_s)
        return {
            "run": self.run,
            "replicas": self.replicas,
            "releases": self.releases,
            "makespan_s": round(self.makespan_s, 1),
            "kills": self.kills,
            "db_restarts": self.db_restarts,
            "adoption_s_max": round(adoption[-1], 2) if adoption else None,
            "adoption_s_median": round(statistics.median(adoption), 2) if adoption else None,
            "unfinished": self.unfinished,
            "extra_releases": self.extra_releases,
            "mismatches": self.mismatches,
            "ips_in_two_accepted_tasks": self.double_tasks,
            "unknown_ips": self.unknown_ips,
            "statuses": self.statuses,
            "throttled_answers": self.throttled,
            "post_retries": self.post_retries,
        }

    @property
    def clean(self) -> bool:
        return not (
            self.unfinished or self.extra_releases or self.mismatches or self.double_tasks or self.unknown_ips
        )


def releases_of(truth: dict[str, Any], *, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` release bodies from the world's ENIs: one per ENI, and the rest as second halves of ENIs
    split in two (so that one ENI's IPs arrive as two releases, likely at two replicas)."""
    rng = random.Random(seed)
    enis = [e for e in truth["enis"] if e["secondary_ips"]]
    splittable = [e for e in enis if len(e["secondary_ips"]) >= 2]
    split = {e["eni_id"] for e in rng.sample(splittable, min(len(splittable), max(0, count - len(enis))))}
    bodies: list[dict[str, Any]] = []
    for eni in enis:
        ips = eni["secondary_ips"]
        if eni["eni_id"] in split:
            half = len(ips) // 2
            bodies.append({"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": ips[:half]})
            bodies.append({"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": ips[half:]})
        else:
            bodies.append({"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": ips})
    rng.shuffle(bodies)
    return bodies[:count]


class Cluster:
    """The replicas and a round-robin balancer over those that are up."""

    def __init__(self, world: World, plan: Plan) -> None:
        self.world = world
        self.plan = plan
        self.config = world.workdir / "replica.toml"
        self.config.write_text(
            CONFIG.format(
                lease_s=plan.lease_s,
                unassign=LIMITS["UnassignPrivateIpAddresses"],
                task_query=LIMITS["DescribeVpcTaskResult"],
                describe=LIMITS["DescribeNetworkInterfaces"],
            )
            + "".join(f"{key} = {value}\n" for key, value in plan.poll.items())
        )
        self.replicas = [Replica(i, world.workdir / f"replica-{i}.log") for i in range(plan.replicas)]
        self._turn = 0

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENI_ASYNC_")}
        env.update(
            TENCENTCLOUD_SECRET_ID=self.world.secret_id,
            TENCENTCLOUD_SECRET_KEY=self.world.secret_key,
            ENI_ASYNC_CONFIG=str(self.config),
            ENI_ASYNC_STS_ENDPOINT=self.world.sim_endpoint,  # the shared quota asks STS who the keys are
        )
        return env

    async def start(self, replica: Replica) -> None:
        """Start ``serve`` in the replica's slot and read its endpoint line (30 s at most)."""
        world = self.world
        with replica.log.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *SERVE, "--journal", world.journal, "--port", "0", "--endpoint", world.sim_endpoint,
                "--region", world.region, "--shared-quota", world.redis,
                stdout=asyncio.subprocess.PIPE, stderr=log, env=self._env(), start_new_session=True,
            )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"replica {replica.slot} did not start: {replica.log.read_text()[-2000:]}")
        replica.proc, replica.endpoint = proc, json.loads(line)["endpoint"]

    def kill(self, replica: Replica) -> int:
        """SIGKILL the replica; its pid."""
        assert replica.proc is not None
        pid = replica.proc.pid
        replica.endpoint = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return pid

    async def reap(self, replica: Replica) -> None:
        if replica.proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replica.proc.wait(), 10)

    async def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(replica.proc.pid, signal.SIGTERM)
        for replica in self.replicas:
            if replica.proc is not None:
                try:
                    await asyncio.wait_for(replica.proc.wait(), 15)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(replica.proc.pid, signal.SIGKILL)
                    await replica.proc.wait()

    def up(self) -> list[Replica]:
        return [r for r in self.replicas if r.endpoint is not None]

    def pick(self) -> str | None:
        """The next replica's endpoint, round robin (``None``: all are down right now)."""
        live = self.up()
        if not live:
            return None
        self._turn += 1
        endpoint = live[self._turn % len(live)].endpoint
        return endpoint


async def _call(
    http: aiohttp.ClientSession, cluster: Cluster, method: str, path: str, deadline: float, **kwargs: Any
) -> tuple[dict[str, Any], int]:
    """One request through the balancer: a broken connection or a 5xx/429 goes to the next replica (after
    a short pause), until ``deadline``. The answer and how many tries failed first."""
    failures = 0
    while True:
        endpoint = cluster.pick()
        if endpoint is not None:
            try:
                async with http.request(method, endpoint + path, **kwargs) as answer:
                    if answer.status < 429 or answer.status == 404:
                        return await answer.json(), failures
            except (aiohttp.ClientError, TimeoutError):
                pass
        failures += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {path}: no replica answered in time")
        await asyncio.sleep(min(1.0, 0.05 * failures))


async def _post(
    http: aiohttp.ClientSession, cluster: Cluster, key: str, body: dict[str, Any], deadline: float
) -> tuple[str, int]:
    data, failures = await _call(
        http, cluster, "POST", "/v1/releases", deadline, json=body, headers={"Idempotency-Key": key}
    )
    if "id" not in data:
        raise RuntimeError(f"POST {key} answered {data}")
    return str(data["id"]), failures


async def _await_release(
    http: aiohttp.ClientSession, cluster: Cluster, rid: str, deadline: float
) -> dict[str, Any]:
    while True:
        data, _ = await _call(http, cluster, "GET", f"/v1/releases/{rid}?wait=10", deadline)
        if data.get("status") in FINAL:
            return data
        if time.monotonic() > deadline:
            return data


@contextlib.asynccontextmanager
async def _database(
    url: str,
) -> AsyncIterator[Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]]]:
    """A query function on the journal's database that rides out its restart."""
    import psycopg

    conn: psycopg.AsyncConnection[Any] | None = None

    async def query(sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        nonlocal conn
        for _ in range(200):
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
                cursor = await conn.execute(sql.encode(), args)
                return await cursor.fetchall() if cursor.description else []
            except psycopg.Error:
                conn = None
                await asyncio.sleep(0.1)
        raise RuntimeError("the journal's database did not answer the drill")

    try:
        yield query
    finally:
        if conn is not None:
            await conn.close()


async def _adoption(
    query: Callable[[str, tuple[Any, ...]], Awaitable[list[tuple[Any, ...]]]],
    pid: int,
    killed_at: float,
    deadline: float,
) -> float | None:
    """Seconds from the kill until every ENI with unfinished releases that replica ``pid`` held has a new
    owner (``None``: it held none)."""
    owners = [
        row[0]
        for row in await query("SELECT DISTINCT owner FROM leases WHERE owner LIKE %s", (f"%/{pid}/%",))
    ]
    if not owners:
        return None
    unfinished = (
        "SELECT l.eni_id FROM leases l WHERE l.owner = %s AND EXISTS (SELECT 1 FROM service_releases r "
        "WHERE r.eni_id = l.eni_id AND r.status IN ('pending', 'running'))"
    )
    if not await query(unfinished, (owners[0],)):
        return None
    while time.monotonic() < deadline:
        if not await query(unfinished, (owners[0],)):
            return time.monotonic() - killed_at
        await asyncio.sleep(0.05)
    return None


async def _chaos(
    cluster: Cluster, plan: Plan, world: World, row: Row, query: Any, deadline: float, done: asyncio.Event
) -> None:
    rng = random.Random(plan.seed)
    restart_after = rng.randrange(plan.kills) if plan.restart_db and plan.kills else -1
    watchers: list[asyncio.Task[float | None]] = []
    for kill in range(plan.kills):
        await asyncio.sleep(rng.uniform(*plan.kill_gap_s))
        if done.is_set():
            break
        victim = rng.choice(cluster.up())
        pid = cluster.kill(victim)
        killed_at = time.monotonic()
        row.kills += 1
        watchers.append(asyncio.create_task(_adoption(query, pid, killed_at, deadline)))
        await cluster.reap(victim)
        await asyncio.sleep(rng.uniform(*plan.down_s))
        await cluster.start(victim)
        if kill == restart_after and world.restart_db is not None:
            await world.restart_db()
            row.db_restarts += 1
    if plan.restart_db and not row.db_restarts and world.restart_db is not None:
        await world.restart_db()
        row.db_restarts += 1
    for found in await asyncio.gather(*watchers):
        if found is not None:
            row.adoption_s.append(found)


def judge(
    row: Row,
    keys: dict[str, set[str]],
    finals: dict[str, dict[str, Any]],
    listed: list[dict[str, Any]],
    truth: dict[str, Any],
) -> None:
    """Outcomes against the ground truth and the simulator's task log (see the module docstring)."""
    present = {e["eni_id"]: {*e["secondary_ips"], e["primary_ip"]} for e in truth["enis"]}
    row.extra_releases = sum(len(ids) - 1 for ids in keys.values()) + max(0, len(listed) - len(keys))
    for release in finals.values():
        status = release.get("status")
        row.statuses[str(status)] = row.statuses.get(str(status), 0) + 1
        if status not in FINAL:
            row.unfinished += 1
            continue
        on_eni = present.get(release["eni_id"], set())
        row.mismatches += sum(ip in on_eni for ip in release["released"])
        row.mismatches += sum(ip not in on_eni for ip in release["not_released"])
        if status == "succeeded":
            row.mismatches += sum(ip in on_eni for ip in release["ips"])
        row.unknown_ips += len(release["unknown"])
    row.unfinished += len(keys) - len(finals)
    tasks: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for task in truth["tasks"]:
        for ip in task["ips"]:
            tasks.setdefault((task["eni_id"], ip), []).append(task)
    for found in tasks.values():
        found.sort(key=lambda t: t["started_s"])
        row.double_tasks += sum(t["status"] != "FAILED" for t in found[:-1])


async def drill(name: str, world: World, plan: Plan) -> Row:
    """One run: start the replicas, post and await every release (with chaos as planned), judge."""
    row = Row(name, plan.replicas, len(plan.releases))
    cluster = Cluster(world, plan)
    deadline = time.monotonic() + plan.timeout_s
    done = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=256)
    try:
        await asyncio.gather(*(cluster.start(r) for r in cluster.replicas))
        async with (
            _database(world.journal) as query,
            aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
        ):
            chaos = asyncio.create_task(_chaos(cluster, plan, world, row, query, deadline, done))
            gate = asyncio.Semaphore(64)
            keys: dict[str, set[str]] = {}
            finals: dict[str, dict[str, Any]] = {}
            started = time.monotonic()

            async def one(index: int, body: dict[str, Any]) -> None:
                key = f"drill-{plan.seed}-{index}"
                async with gate:
                    rid, failures = await _post(http, cluster, key, body, deadline)
                    row.post_retries += failures
                    keys.setdefault(key, set()).add(rid)
                    if failures:  # the key again: it must name the same release
                        again, _ = await _post(http, cluster, key, body, deadline)
                        keys[key].add(again)
                finals[rid] = await _await_release(http, cluster, rid, deadline)

            await asyncio.gather(*(one(i, body) for i, body in enumerate(plan.releases)))
            row.makespan_s = time.monotonic() - started
            done.set()
            await chaos
            listed: list[dict[str, Any]] = []
            cursor = ""
            while True:
                page, _ = await _call(http, cluster, "GET", f"/v1/releases?limit=500{cursor}", deadline)
                listed += page["releases"]
                if not page["next_cursor"]:
                    break
                cursor = f"&cursor={page['next_cursor']}"
            async with http.get(f"{world.sim_endpoint}/_sim/state") as answer:
                truth = await answer.json()
            async with http.get(f"{world.sim_endpoint}/_sim/stats") as answer:
                row.throttled = sum((await answer.json())["throttled"].values())
        judge(row, keys, {r["id"]: r for r in listed} | finals, listed, truth)
    finally:
        await cluster.stop_all()
    return row


# -- the full-size run --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _services(workdir: Path) -> Iterator[tuple[Any, str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.replicas import redis_server
    from tests.pgserver import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        with redis_server(workdir) as redis:
            yield server, redis
    finally:
        server.stop()


async def _run(
    name: str,
    args: argparse.Namespace,
    workdir: Path,
    pg: Any,
    redis: str,
    *,
    replicas: int,
    kills: int,
    restart: bool,
) -> Row:
    from eni_async.testing import drill_state, simulator_process

    state = workdir / "world.json"
    if not state.exists():
        state.write_text(json.dumps(drill_state(args.enis, seed=args.seed, min_ips=1, max_ips=6)))
    faults = "flaky" if kills or restart else args.makespan_faults
    sim_args = ["--state", str(state), "--faults", faults, "--seed", str(args.seed)]
    for action, limit in LIMITS.items():
        sim_args += ["--rate-limit", f"{action}={limit}"]
    run_dir = workdir / name
    run_dir.mkdir()
    with simulator_process(*sim_args) as ready:
        async with aiohttp.ClientSession() as http, http.get(f"{ready['endpoint']}/_sim/state") as answer:
            truth = await answer.json()

        async def restart_db() -> None:
            await asyncio.to_thread(pg.restart)

        world = World(
            ready["endpoint"], ready["region"], ready["secret_id"], ready["secret_key"],
            pg.database(), redis, run_dir, restart_db,
        )  # fmt: skip
        plan = Plan(
            replicas, releases_of(truth, count=args.releases, seed=args.seed), kills=kills,
            restart_db=restart, lease_s=args.lease_s, seed=args.seed, timeout_s=args.timeout,
        )  # fmt: skip
        return await drill(name, world, plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--releases", type=int, default=3000)
    parser.add_argument("--enis", type=int, default=2500)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--lease-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each run, seconds")
    parser.add_argument(
        "--runs", nargs="+", default=["one", "three", "chaos"], choices=["one", "three", "chaos"]
    )
    parser.add_argument(
        "--makespan-faults",
        default="none",
        help="fault profile of the one and three runs (default none: task_slow tails would decide the "
        "makespan, not the replicas); the chaos run is always flaky",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the rows here")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="eni-replicas-drill-") as tmp,
        _services(Path(tmp)) as (pg, redis),
    ):
        for name in args.runs:
            replicas = 1 if name == "one" else args.replicas
            chaos = name == "chaos"
            row = asyncio.run(
                _run(
                    name,
                    args,
                    Path(tmp),
                    pg,
                    redis,
                    replicas=replicas,
                    kills=args.kills if chaos else 0,
                    restart=chaos,
                )
            )
            rows.append(row)
            print(json.dumps(row.table()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([r.table() for r in rows], indent=2))
    by_name = {r.run: r for r in rows}
    ok = all(r.clean for r in rows)
    if "one" in by_name and "three" in by_name:
        ratio = by_name["three"].makespan_s / by_name["one"].makespan_s
        print(f"makespan, three replicas / one: {ratio:.2f} (target <= 1.1)")
        ok = ok and ratio <= 1.1
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
