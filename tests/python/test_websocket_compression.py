"""Websocket compression (permessage-deflate, RFC 7692), black-box: what is agreed with a
real client, what it saves on the wire (bytes counted by a relay between the client and the
server), and what it must never cost (a small compressed message that inflates past
``--ws-max-size``).

The Autobahn cases 12.x/13.x are in test_autobahn.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
STEP_TIMEOUT = 30


@pytest.fixture(scope="module")
def deflate_server():
    from harness import start_server

    server = start_server("pyapp.ws_apps:app", "--ws-max-size", str(4 * MIB))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_server():
    from harness import start_server

    server = start_server("pyapp.ws_apps:app", "--ws-per-message-deflate", "false")
    yield server
    server.stop()


class Relay:
    """A TCP relay in front of a server that counts the bytes going each way."""

    def __init__(self, port: int):
        self.port = port
        self.to_server = 0
        self.to_client = 0

    async def __aenter__(self) -> "Relay":
        self.listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url_port = self.listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.listener.close()

    async def _relay(self, client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pump(reader, writer, count):
            try:
                while data := await reader.read(65536):
                    count(len(data))
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, self._count_to_server),
            pump(server_reader, client_writer, self._count_to_client),
        )

    def _count_to_server(self, n: int) -> None:
        self.to_server += n

    def _count_to_client(self, n: int) -> None:
        self.to_client += n


def compressible_mebibyte() -> str:
    """1 MiB of JSON records, as an app would send: repetitive, not trivially so."""
    records = [{"id": i, "name": f"user-{i}", "active": i % 3 == 0, "score": i * 7 % 1000} for i in range(20_000)]
    return json.dumps(records)[:MIB]


async def echo_through_relay(server, payload: str, **client_options) -> tuple[Relay, str | None]:
    async with Relay(server.port) as relay:
        async with connect(f"ws://127.0.0.1:{relay.url_port}/echo", max_size=None, **client_options) as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
            await ws.send(payload)
            assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) == payload
    return relay, agreed


def test_the_websockets_client_negotiates_compression_by_default(deflate_server):
    async def main():
        async with connect(f"ws://127.0.0.1:{deflate_server.port}/echo") as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert agreed.startswith("permessage-deflate"), agreed
            for message in ["hello", "", "", "hello again", b"\x00\x01", b""]:
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) == message

    asyncio.run(main())


@pytest.mark.parametrize("deflate", [True, False], ids=["deflate", "no-deflate"])
def test_a_compressible_mebibyte_on_the_wire(deflate_server, plain_server, deflate):
    payload = compressible_mebibyte()
    server = deflate_server if deflate else plain_server
    relay, agreed = asyncio.run(echo_through_relay(server, payload))
    print(f"1 MiB JSON, deflate={deflate}: {relay.to_server} B to the server, {relay.to_client} B back")
    if deflate:
        assert agreed and agreed.startswith("permessage-deflate")
        # The handshake is a few hundred bytes; the message itself shrinks ~10x or more.
        assert relay.to_server < MIB // 5
        assert relay.to_client < MIB // 5
    else:
        assert agreed is None
        assert relay.to_server > MIB
        assert relay.to_client > MIB


def test_the_parameters_a_client_asks_for_are_agreed(deflate_server):
    offer = ClientPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=11,
    )

    async def main():
        async with connect(
            f"ws://127.0.0.1:{deflate_server.port}/echo", compression=None, extensions=[offer]
        ) as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            for parameter in [
                "server_no_context_takeover",
                "client_no_context_takeover",
                "server_max_window_bits=10",
                "client_max_window_bits=11",
            ]:
                assert parameter in agreed, agreed
            # Without context takeover every message is compressed on its own: several in
            # a row must all arrive intact.
            for i in range(5):
                message = f"message {i} " * 200
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) == message

    asyncio.run(main())


def test_a_compressed_message_that_inflates_past_the_limit_is_close_1009(deflate_server):
    """A decompression bomb: 64 MiB of zeros are ~64 KB compressed; the server stops
    inflating at --ws-max-size (4 MiB here) and closes with 1009."""

    async def main():
        async with connect(f"ws://127.0.0.1:{deflate_server.port}/echo", max_size=None) as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
            await ws.send(b"\x00" * (64 * MIB))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            assert closed.value.rcvd is not None, "no close frame from the server"
            assert closed.value.rcvd.code == 1009
        async with connect(f"ws://127.0.0.1:{deflate_server.port}/echo") as ws:
            await ws.send("still serving")
            assert await asyncio.wait_for(ws.recv(), STEP_TIMEOUT) == "still serving"

    asyncio.run(main())
