"""Proxies: ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from the environment are honoured, and the ``proxy``
setting overrides them; a forward proxy on 127.0.0.1 counts what passes through it to the simulator."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from eni_async.client import EniClient
from eni_async.clock import FakeClock
from eni_async.dialects import UNASSIGN
from eni_async.policy import PollPolicy, RetryPolicy
from eni_async.settings import Settings
from eni_async.simulator import Simulator, SimulatorConfig, running
from tests.batchhelpers import world

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
)
# Headers that belong to one hop (RFC 9110 §7.6.1), plus those aiohttp recomputes for the next hop.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length", "host"}  # fmt: skip


class ForwardProxy:
    """A tiny HTTP forward proxy: takes absolute-URI requests, sends them on, and counts them by target."""

    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        target = str(request.url)  # the absolute URI of the request line
        self.forwarded.append(target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, target, headers=headers, data=await request.read()) as answer,
        ):
            body = await answer.read()
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=body, headers=passed)


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    """A forward proxy listening on 127.0.0.1."""
    forward = ForwardProxy()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        forward.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        yield forward
    finally:
        await runner.cleanup()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine running the tests leaks in."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def release_everything(settings: Settings) -> tuple[list[str], str]:
    """Run a batch over every seeded IP; return the outcome statuses and the simulator's endpoint."""
    async with world(settings=settings, enis=3) as w:
        statuses = [o.status async for o in w.client.unassign_many(w.items())]
        assert all(not e["secondary_ips"] for e in w.sim.ground_truth()["enis"])
        return statuses, w.endpoint


BASE = Settings(poll=PollPolicy(timeout=300.0))


async def test_the_proxy_setting_sends_calls_through_the_proxy(clean_env: None, proxy: ForwardProxy) -> None:
    """With ``proxy`` set, every call reaches the simulator through the proxy and the IPs are released."""
    statuses, endpoint = await release_everything(Settings(proxy=proxy.url, poll=BASE.poll))
    assert statuses == ["succeeded"] * 3
    assert len(proxy.forwarded) >= 3 * 2  # a submit and at least one query per ENI
    assert {url.removesuffix("/v2/index.php") for url in proxy.forwarded} == {endpoint}


async def test_http_proxy_from_the_environment_is_honoured(
    clean_env: pytest.MonkeyPatch, proxy: ForwardProxy
) -> None:
    """With ``HTTP_PROXY`` set and no ``proxy`` setting, calls to an http:// endpoint go through the proxy."""
    clean_env.setenv("HTTP_PROXY", proxy.url)
    statuses, _ = await release_everything(BASE)
    assert statuses == ["succeeded"] * 3
    assert len(proxy.forwarded) >= 3 * 2


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "*"])
async def test_no_proxy_bypasses_the_environment_proxy(
    clean_env: pytest.MonkeyPatch, proxy: ForwardProxy, no_proxy: str
) -> None:
    """A ``NO_PROXY`` that covers the endpoint's host sends calls straight to it, past ``HTTP_PROXY``."""
    clean_env.setenv("HTTP_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", no_proxy)
    statuses, _ = await release_everything(BASE)
    assert statuses == ["succeeded"] * 3
    assert proxy.forwarded == []


async def test_the_proxy_setting_overrides_the_environment(
    clean_env: pytest.MonkeyPatch, proxy: ForwardProxy
) -> None:
    """The ``proxy`` setting wins over ``HTTP_PROXY`` (here a dead one) and over ``NO_PROXY``."""
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on the discard port
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    fail_fast = RetryPolicy(attempts=2, initial=0.01, maximum=0.01)
    statuses, _ = await release_everything(Settings(proxy=proxy.url, poll=BASE.poll, retry=fail_fast))
    assert statuses == ["succeeded"] * 3
    assert len(proxy.forwarded) >= 3 * 2


# -- HTTPS through a CONNECT tunnel (the production case: the API endpoints are https://) ----------------


class TunnelProxy:
    """A tiny CONNECT proxy: opens a TCP tunnel to the named host and port, and counts the tunnels."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            self.tunnels.append(target)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()


def self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 signed by a throwaway CA, and the CA's certificate file to trust."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


async def test_https_proxy_from_the_environment_tunnels_tls(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With ``HTTPS_PROXY`` set, calls to an https:// endpoint go through a CONNECT tunnel and still verify
    the server's certificate."""
    server_context, ca_file = self_signed(tmp_path)
    tunnel = TunnelProxy()
    proxy_server = await asyncio.start_server(tunnel.handle, "127.0.0.1", 0)
    clean_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}")
    clock = FakeClock()
    sim = Simulator(SimulatorConfig(enis=2, ips_per_eni=2, seed=3, task_latency=(1.0, 0.0)), clock=clock)
    try:
        async with running(sim, host="127.0.0.1", port=0, ssl_context=server_context) as server:
            assert server.endpoint.startswith("https://")
            settings = Settings(
                endpoint=server.endpoint, region=sim.region, ca_file=str(ca_file), poll=BASE.poll
            )
            async with EniClient(sim.credentials, settings, clock=clock) as client:
                truth = sim.ground_truth()["enis"]
                for eni in truth:
                    await client.unassign(eni["vpc_id"], eni["eni_id"], eni["secondary_ips"])
            assert all(not e["secondary_ips"] for e in sim.ground_truth()["enis"])
            assert sim.stats()["requests"][UNASSIGN] == 2
    finally:
        proxy_server.close()
        await proxy_server.wait_closed()
    assert tunnel.tunnels
    assert set(tunnel.tunnels) == {f"127.0.0.1:{server.port}"}
