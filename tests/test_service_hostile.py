"""``eni-async serve`` under hostile clients: idle sockets, slow headers and bodies, oversized lines, floods.

The first two tests reproduce two defects found by an adversary against a real ``serve`` process (they
lived in the process: its descriptor limit and its stderr); the rest drive the listener of
``running_service`` in this process, each with real sockets on 127.0.0.1 and timeouts of a fraction of a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from eni_async import Settings
from eni_async.service.listener import REFUSALS_AT_ONCE, RESERVED_DESCRIPTORS
from eni_async.service.server import RunningService, running_service
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.servehelpers import AUTH, TOKEN, read, serve_process, simulated

DESCRIPTORS = 1024
IDLE = 1100


def _raw(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read one whole answer (or until the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
                head, _, body = got.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    return got


def _answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (a non-blocking read sees the end of the stream)."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_idle_sockets_beyond_the_descriptor_limit_do_not_take_serve_down(tmp_path: Path) -> None:
    """1,100 idle sockets under a 1,024-descriptor limit: /healthz and POST still answer at once, the longest
    idle sockets are closed to make room, and the log has no traceback and a few lines, not one per socket.
    The release's task ends at once, so the SIGTERM at the end has nothing in flight to wait 0.5 s for."""
    async with simulated(
        tmp_path, grace=0.5, enis=1, ips_per_eni=1, seed=1, task_latency=(0.0, 0.0)
    ) as served:
        log = tmp_path / "serve.log"
        async with serve_process(served, tmp_path / "j.db", log, descriptors=DESCRIPTORS) as (proc, endpoint):
            port = int(endpoint.rsplit(":", 1)[1])
            idle = []
            try:
                for _ in range(IDLE):
                    idle.append(socket.create_connection(("127.0.0.1", port)))
                cap = DESCRIPTORS - RESERVED_DESCRIPTORS - REFUSALS_AT_ONCE
                for _ in range(200):  # until the evictions are done (at most 10 s)
                    if sum(map(_closed, idle)) >= IDLE - cap:
                        break
                    await asyncio.sleep(0.05)
                assert sum(map(_closed, idle)) >= IDLE - cap
                started = time.monotonic()
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                    async with http.get(f"{endpoint}/healthz") as resp:
                        assert resp.status == 200
                    eni = served.sim.ground_truth()["enis"][0]
                    body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
                    async with http.post(f"{endpoint}/v1/releases", json=body, headers=AUTH) as resp:
                        assert resp.status == 202
                assert time.monotonic() - started < 5
            finally:
                for sock in idle:
                    sock.close()
            proc.terminate()
            assert await proc.wait() == 0
        logged = read(log)
        assert "Traceback" not in logged
        assert "out of system resource" not in logged
        cap_lines = [line for line in logged.splitlines() if "cap of" in line]
        assert 1 <= len(cap_lines) <= 3, cap_lines


async def test_a_token_in_an_oversized_header_is_never_logged_nor_echoed(tmp_path: Path) -> None:
    """'Authorization: Bearer <token>' plus 9,000 spaces answers 400 in the JSON error shape without the
    token; 300 such requests leave no traceback and no token on stderr, and a bounded number of lines."""
    async with simulated(tmp_path, grace=0.5, enis=1, ips_per_eni=1, seed=1) as served:
        log = tmp_path / "serve.log"
        async with serve_process(served, tmp_path / "j.db", log) as (proc, endpoint):
            port = int(endpoint.rsplit(":", 1)[1])
            request = (
                f"GET /v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}{' ' * 9000}\r\n\r\n"
            )
            raw = await asyncio.to_thread(_raw, port, request.encode())
            assert TOKEN.encode() not in raw
            status, headers, body = _answer(raw)
            assert status == 400
            assert headers["Content-Type"] == "application/json"
            assert body["error"]["code"] == "BadRequest"
            assert "8190 bytes" in body["error"]["message"]
            for _ in range(300):
                assert TOKEN.encode() not in await asyncio.to_thread(_raw, port, request.encode())
            async with aiohttp.ClientSession() as http, http.get(f"{endpoint}/healthz") as resp:
                assert resp.status == 200
            proc.terminate()
            assert await proc.wait() == 0
        logged = read(log)
        assert TOKEN not in logged
        assert "Traceback" not in logged
        malformed = [line for line in logged.splitlines() if "malformed HTTP request" in line]
        assert 1 <= len(malformed) <= 2, malformed


@asynccontextmanager
async def hostile_service(tmp_path: Path, **service: Any) -> AsyncIterator[tuple[RunningService, Simulator]]:
    """``running_service`` on 127.0.0.1 with ``service_*`` settings, for a simulator whose tasks take 30 s."""
    sim = Simulator(SimulatorConfig(enis=4, ips_per_eni=1, seed=1, task_latency=(30.0, 0.0)))
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, **service)
        async with running_service(sim.credentials, settings, tmp_path / "j.db", tokens=[TOKEN]) as svc:
            yield svc, sim


def _port(svc: RunningService) -> int:
    return int(svc.endpoint.rsplit(":", 1)[1])


async def test_a_connection_that_sends_no_whole_request_is_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    """A silent connection and one trickling its headers a byte at a time are both closed once
    service_header_timeout passes, while the trickle goes on."""
    async with hostile_service(tmp_path, service_header_timeout=0.3) as (svc, _):
        silent = socket.create_connection(("127.0.0.1", _port(svc)))
        slow = socket.create_connection(("127.0.0.1", _port(svc)))
        try:
            started = time.monotonic()
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            for byte in head:
                if _closed(silent) and _closed(slow):
                    break
                with contextlib.suppress(OSError):
                    slow.send(bytes([byte]))
                await asyncio.sleep(0.02)
            assert _closed(silent)
            assert _closed(slow)
            assert time.monotonic() - started < 3
        finally:
            silent.close()
            slow.close()


async def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path: Path) -> None:
    """A POST whose body stops short answers 408 in the JSON error shape after service_body_timeout."""
    async with hostile_service(tmp_path, service_body_timeout=0.3) as (svc, _):
        request = (
            f"POST /v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"vpc_id": '
        )
        raw = await asyncio.to_thread(_raw, _port(svc), request.encode())
        status, _, body = _answer(raw)
        assert status == 408
        assert body["error"]["code"] == "RequestTimeout"
        assert sum((await svc.engine.registry.counts()).values()) == 0


async def test_at_the_cap_idle_connections_make_room_and_busy_ones_make_a_503(tmp_path: Path) -> None:
    """At service_max_connections, a newcomer closes the longest idle connection; when every connection
    holds a request, the newcomer gets one 503 TooManyConnections with Retry-After, and is closed."""
    async with hostile_service(tmp_path, service_max_connections=3) as (svc, sim):
        port = _port(svc)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            await asyncio.sleep(0.1)
            status, _, _ = _answer(
                await asyncio.to_thread(
                    _raw, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
            )
            assert status == 200
            assert _closed(idle[0])
            assert not _closed(idle[2])
        finally:
            for sock in idle:
                sock.close()
        eni = sim.ground_truth()["enis"][0]
        body = {"vpc_id": eni["vpc_id"], "eni_id": eni["eni_id"], "ips": eni["secondary_ips"]}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            async with http.post(f"{svc.endpoint}/v1/releases", json=body, headers=AUTH) as resp:
                rid = (await resp.json())["id"]
            polls = [
                asyncio.ensure_future(http.get(f"{svc.endpoint}/v1/releases/{rid}?wait=30", headers=AUTH))
                for _ in range(3)
            ]
            for _ in range(100):
                if len(svc.listener.connections) == 3 and all(c.in_request for c in svc.listener.connections):
                    break
                await asyncio.sleep(0.02)
            raw = await asyncio.to_thread(_raw, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, error = _answer(raw)
            assert status == 503
            assert headers["Retry-After"] == "1"
            assert error["error"]["code"] == "TooManyConnections"
            assert svc.listener.refused == 1
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)


async def test_at_the_cap_connections_trickling_their_headers_make_room_too(tmp_path: Path) -> None:
    """Connections that keep sending a header a byte at a time cannot lock a caller out: at the cap, the one
    waiting longest for a whole request is closed and the caller is answered."""
    async with hostile_service(tmp_path, service_max_connections=3) as (svc, _):
        port = _port(svc)
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            for sock in slow:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            for _ in range(3):
                for sock in slow:
                    sock.sendall(b"a")
                await asyncio.sleep(0.02)
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            status, _, body = _answer(await asyncio.to_thread(_raw, port, request))
            assert (status, body) == (200, {"status": "ok"})
            assert _closed(slow[0])
            assert svc.listener.refused == 0
        finally:
            for sock in slow:
                sock.close()


async def test_at_the_cap_stalled_tls_handshakes_make_room_too(tmp_path: Path) -> None:
    """Over TLS, sockets that never start their handshake cannot lock a caller out: at the cap, the oldest is
    closed and the caller's HTTPS request is answered."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    sim = Simulator(SimulatorConfig(enis=1, ips_per_eni=1, seed=1))
    async with running(sim, host="127.0.0.1", port=0) as server:
        settings = Settings(endpoint=server.endpoint, region=sim.region, service_max_connections=3)
        async with running_service(
            sim.credentials, settings, tmp_path / "j.db", tokens=[TOKEN], tls=server_context
        ) as svc:
            stalled = [socket.create_connection(("127.0.0.1", _port(svc))) for _ in range(3)]
            try:
                for _ in range(100):
                    if svc.listener.open == 3:
                        break
                    await asyncio.sleep(0.01)
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{svc.endpoint}/healthz", ssl=client_context) as resp,
                ):
                    assert resp.status == 200
                assert _closed(stalled[0])
                assert svc.listener.refused == 0
            finally:
                for sock in stalled:
                    sock.close()


MALFORMED_HTTP = [
    ("not HTTP", b"HELLO THERE\r\n\r\n"),
    ("request line over 8 KiB", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    (
        "too many headers",
        b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    ),
    ("bad header name", b"GET /healthz HTTP/1.1\r\nBad Header: 1\r\n\r\n"),
    (
        "length and chunked",
        b"POST /v1/releases HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    ),
    (
        "bad chunk",
        f"POST /v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n".encode(),
    ),
]


@pytest.mark.parametrize(("case", "raw"), MALFORMED_HTTP, ids=[c[0] for c in MALFORMED_HTTP])
async def test_requests_the_framework_refuses_answer_in_the_json_error_shape(
    tmp_path: Path, case: str, raw: bytes
) -> None:
    """Every request aiohttp cannot parse answers 400 as JSON, in the service's error shape, with no token."""
    async with hostile_service(tmp_path) as (svc, _):
        answer = await asyncio.to_thread(_raw, _port(svc), raw)
        status, headers, body = _answer(answer)
        assert status == 400
        assert headers["Content-Type"] == "application/json"
        assert set(body["error"]) <= {"code", "message", "field"}
        assert TOKEN.encode() not in answer
