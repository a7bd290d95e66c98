"""The one aiohttp adapter's errors: each says what failed once, and never repeats aiohttp's noise."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from eni_async.errors import ConnectError
from eni_async.transport import AiohttpTransport, json_request


async def test_a_refused_connection_names_the_address_once_and_why() -> None:
    """aiohttp says "Cannot connect to host H:P ssl:default [Connect call failed ('H', P)]": the error and
    every log line and release built from it say ``cannot connect to H:P (Connection refused)``."""
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        async with aiohttp.ClientSession() as session:
            transport = AiohttpTransport(session)
            request = json_request("DescribeNetworkInterfaces", f"http://127.0.0.1:{port}/", b"{}")
            with pytest.raises(ConnectError) as caught:
                await transport.send(request)
    message = str(caught.value)
    assert message == f"DescribeNetworkInterfaces: cannot connect to 127.0.0.1:{port} (Connection refused)"
    assert message.count(str(port)) == 1
