"""A small HTTP/3 client for the tests, on aioquic (the QUIC and HTTP/3 stack hypercorn uses).

One ``H3Client`` is one QUIC connection; each request is a ``Stream`` whose body can be sent
in pieces and whose response can be read in pieces, so tests can stream, stall, open many
requests at once, or leave in the middle.

    async with connect(port, cafile) as client:
        response = await client.request("GET", "/ok")
        stream = client.open("POST", "/echo")
        stream.send(b"part", end=False)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

# Each test's wait for an answer; longer means the server is stuck.
TIMEOUT = 30.0


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]]

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        return next((value.decode() for key, value in self.headers if key == wanted), None)


class StreamFailed(Exception):
    """The server reset the stream, or the connection ended before the response did."""


class Stream:
    """One request: its body goes out with ``send``, its response comes in as events."""

    def __init__(self, client: H3Client, stream_id: int):
        self._client = client
        self.stream_id = stream_id
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._chunks: asyncio.Queue[bytes | None | Exception] = asyncio.Queue()
        self._trailers: list[tuple[bytes, bytes]] = []

    def send(self, data: bytes, end: bool) -> None:
        self._client._http.send_data(self.stream_id, data, end_stream=end)
        self._client._protocol.transmit()

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        return await asyncio.wait_for(self._head, TIMEOUT)

    async def read(self) -> bytes | None:
        """The next piece of the body, or ``None`` at its end."""
        item = await asyncio.wait_for(self._chunks.get(), TIMEOUT)
        if isinstance(item, Exception):
            raise item
        return item

    async def response(self) -> Response:
        status, headers = await self.head()
        body = bytearray()
        while (piece := await self.read()) is not None:
            body += piece
        return Response(status, headers, bytes(body), self._trailers)

    def _headers(self, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        if self._head.done():
            self._trailers = headers
        else:
            status = int(dict(headers)[b":status"])
            self._head.set_result((status, [(k, v) for k, v in headers if not k.startswith(b":")]))
        if ended:
            self._chunks.put_nowait(None)

    def _data(self, data: bytes, ended: bool) -> None:
        if data:
            self._chunks.put_nowait(data)
        if ended:
            self._chunks.put_nowait(None)

    def _failed(self, error: Exception) -> None:
        if not self._head.done():
            self._head.set_exception(error)
            # A stream whose head nobody awaits any more (its test moved on) must not print
            # "exception was never retrieved" at exit.
            self._head.exception()
        self._chunks.put_nowait(error)


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # From the start: the server's control and QPACK streams may arrive with the
        # handshake, and a response cannot be decoded without them.
        self.http = H3Connection(self._quic)
        self.client: H3Client | None = None

    def quic_event_received(self, event) -> None:
        if self.client is not None:
            self.client._event(event)
        else:
            self.http.handle_event(event)


class H3Client:
    def __init__(self, protocol: _Protocol, authority: str):
        self._protocol = protocol
        self._http = protocol.http
        self._authority = authority
        self._streams: dict[int, Stream] = {}
        protocol.client = self

    def open(self, method: str, path: str, headers: list[tuple[bytes, bytes]] = (), end: bool = False) -> Stream:
        """Sends a request head; the body follows with ``Stream.send`` unless ``end``."""
        stream_id = self._protocol._quic.get_next_available_stream_id()
        stream = Stream(self, stream_id)
        self._streams[stream_id] = stream
        self._http.send_headers(
            stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", self._authority.encode()),
                (b":path", path.encode()),
                *headers,
            ],
            end_stream=end,
        )
        self._protocol.transmit()
        return stream

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: list[tuple[bytes, bytes]] = ()) -> Response:
        stream = self.open(method, path, headers, end=body is None)
        if body is not None:
            stream.send(body, end=True)
        return await stream.response()

    def close(self) -> None:
        """Leaves at once: CONNECTION_CLOSE, no GOAWAY, requests unfinished."""
        self._protocol.close()

    def _event(self, event) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self._streams:
            self._streams[event.stream_id]._failed(StreamFailed(f"reset with code {event.error_code}"))
        if isinstance(event, ConnectionTerminated):
            for stream in self._streams.values():
                stream._failed(StreamFailed(f"connection ended: {event.reason_phrase!r}"))
        for h3_event in self._http.handle_event(event):
            stream = self._streams.get(getattr(h3_event, "stream_id", None))
            if stream is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                stream._headers(h3_event.headers, h3_event.stream_ended)
            elif isinstance(h3_event, DataReceived):
                stream._data(h3_event.data, h3_event.stream_ended)


@contextlib.asynccontextmanager
async def connect(port: int, cafile: Path, host: str = "127.0.0.1"):
    """An HTTP/3 connection to ``host:port`` that trusts the certificate in ``cafile``."""
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.verify_mode = ssl.CERT_REQUIRED
    configuration.load_verify_locations(cafile=str(cafile))
    async with quic_connect(host, port, configuration=configuration, create_protocol=_Protocol,
                            wait_connected=True) as protocol:
        yield H3Client(protocol, f"{host}:{port}")
