"""HTTP/3 (issue #16): ``--http3`` serves the same app over QUIC on the TCP port's number
(UDP), announced with ``Alt-Svc`` on HTTP/1.1 and HTTP/2 responses. Checked with aioquic's
client (``h3client.py``): scope, bodies streamed both ways, many streams on one connection,
a client that leaves, shutdown with streams open.

App: ``pyapp/conformance.py`` (its routes are listed at the top of that file).
"""

import asyncio
import hashlib
import json
import os
import re
import signal
import ssl
import subprocess

import httpx
import pytest

from h3client import StreamFailed, connect
from harness import (
    READY_TIMEOUT,
    REPO_ROOT,
    SERVER_CMD,
    ServerProcess,
    _StreamDrain,
    make_certificate,
    run_until_exit,
    server_env,
)

pytestmark = pytest.mark.rust_only

APP = "pyapp.conformance:app"
READY = re.compile(r"serving HTTP/3 on udp 127\.0\.0\.1:(\d+)")
MB10 = 10 * 1024 * 1024


class Http3Server:
    def __init__(self, server: ServerProcess, port: int, cert):
        self.server = server
        self.port = port
        self.cert = cert

    def connect(self):
        return connect(self.port, self.cert)

    def https(self, http2: bool = False) -> httpx.Client:
        trust = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=trust, http2=http2, timeout=20)


@pytest.fixture
def start_https(tmp_path):
    """Starts the app over HTTPS with ``args``; waits for the HTTP/3 line when ``http3``."""
    cert, key = make_certificate(tmp_path, "ecdsa")
    started: list[ServerProcess] = []

    def start(*args: str, http3: bool = True) -> Http3Server:
        command = [
            *SERVER_CMD, APP, "--bind", "127.0.0.1:0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
            *(["--http3"] if http3 else []), *args,
        ]
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
        started.append(server)
        ready = READY if http3 else re.compile(r"listening on https://127\.0\.0\.1:(\d+)")
        match = server.log.wait_for(ready, READY_TIMEOUT, alive=server.alive)
        assert match, server.logs()
        return Http3Server(server, int(match.group(1)), cert)

    yield start
    for server in started:
        server.stop(timeout=10)


@pytest.fixture
def h3(start_https) -> Http3Server:
    return start_https()


def test_get_and_post_reach_the_app_as_http_version_3_over_tls(h3):
    async def exchange():
        async with h3.connect() as client:
            scope = await client.request("GET", "/scope?x=1")
            echoed = await client.request("POST", "/echo", b"hello over quic",
                                          [(b"content-type", b"text/plain")])
            return scope, echoed

    scope, echoed = asyncio.run(exchange())
    assert scope.status == 200
    seen = json.loads(scope.body)["scope"]
    assert seen["http_version"] == "3"
    assert seen["scheme"] == "https"
    assert seen["method"] == "GET"
    assert seen["path"] == "/scope"
    assert seen["query_string"] == {"bytes": "x=1"}
    assert seen["server"] == ["127.0.0.1", h3.port]
    assert seen["client"][0] == "127.0.0.1"
    tls = seen["extensions"]["tls"]
    assert tls["tls_version"] == 0x0304
    assert echoed.status == 200
    assert echoed.body == b"hello over quic"


def test_response_trailers_reach_the_client(h3):
    async def exchange():
        async with h3.connect() as client:
            return await client.request("GET", "/trailers")

    response = asyncio.run(exchange())
    assert response.body == b"hello trailers"
    assert dict(response.trailers)[b"x-checksum"] == hashlib.sha256(b"hello trailers").hexdigest().encode()


def test_responses_carry_a_date_unless_the_app_set_one_or_it_is_turned_off(start_https):
    async def dates(server):
        async with server.connect() as client:
            return [(await client.request("GET", path)).header("date") for path in ("/ok", "/dated")]

    own, app_set = asyncio.run(dates(start_https()))
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", own)
    assert app_set == "Thu, 01 Jan 2015 00:00:00 GMT"
    assert asyncio.run(dates(start_https("--no-date-header"))) == [None, "Thu, 01 Jan 2015 00:00:00 GMT"]


def test_a_10_mb_upload_streams_to_the_app_in_pieces(h3):
    payload = os.urandom(MB10)

    async def upload():
        async with h3.connect() as client:
            stream = client.open("POST", "/wait-for-body", [(b"content-length", str(MB10).encode())])
            for start in range(0, MB10, 64 * 1024):
                stream.send(payload[start:start + 64 * 1024], end=False)
                await asyncio.sleep(0)
            stream.send(b"", end=True)
            return await stream.response()

    response = asyncio.run(upload())
    assert response.status == 200
    counted = json.loads(response.body)
    assert counted["length"] == MB10
    assert counted["sha256"] == hashlib.sha256(payload).hexdigest()
    # Streamed, not buffered whole before the app saw it.
    assert counted["messages"] > 10


def test_a_10_mb_download_streams_to_the_client(h3):
    async def download():
        async with h3.connect() as client:
            stream = client.open("GET", f"/download?size={MB10}&chunk=65536", end=True)
            status, headers = await stream.head()
            pieces = 0
            body = bytearray()
            while (piece := await stream.read()) is not None:
                pieces += 1
                body += piece
            return status, dict(headers), bytes(body), pieces

    status, headers, body, pieces = asyncio.run(download())
    assert status == 200
    assert headers[b"content-length"] == str(MB10).encode()
    assert len(body) == MB10
    assert body == b"x" * MB10
    assert pieces > 10


def test_fifty_requests_run_at_once_on_one_connection(h3):
    """Fifty responses are started and held open together, then all released: none waits
    for another to finish."""

    async def concurrent():
        async with h3.connect() as client:
            held = [client.open("GET", f"/stream-wait?key=many-{i}", end=True) for i in range(50)]
            firsts = [await stream.read() for stream in held]
            released = await asyncio.gather(
                *(client.request("GET", f"/release?key=many-{i}") for i in range(50))
            )
            rests = await asyncio.gather(*(stream.response() for stream in held))
            return firsts, released, rests

    firsts, released, rests = asyncio.run(concurrent())
    assert firsts == [b"first\n"] * 50
    assert [response.body for response in released] == [b"released"] * 50
    assert [response.body for response in rests] == [b"second\n"] * 50


def test_a_client_that_leaves_mid_upload_gives_the_app_http_disconnect(h3):
    async def leave():
        async with h3.connect() as client, h3.connect() as observer:
            stream = client.open("POST", "/first-message?key=h3-upload", [(b"content-length", b"100000")])
            stream.send(b"a" * 1000, end=False)
            # The app has the first piece before the client leaves.
            first = await observer.request("GET", "/report?key=h3-upload:first")
            client.close()
            return json.loads(first.body), json.loads((await observer.request("GET", "/report?key=h3-upload")).body)

    first, record = asyncio.run(leave())
    assert first == {"type": "http.request", "size": 1000, "more_body": True}
    assert record["types"][-1] == "http.disconnect"
    assert record["received"] == 1000


def test_a_client_that_leaves_mid_download_makes_the_apps_next_send_raise(h3):
    async def leave():
        async with h3.connect() as client, h3.connect() as observer:
            stream = client.open("GET", "/send-after-disconnect?key=h3-download", end=True)
            assert await stream.read() == b"first\n"
            client.close()
            return json.loads((await observer.request("GET", "/report?key=h3-download")).body)

    # The app waited for `http.disconnect`, then `send` raised ClientDisconnected (an OSError).
    assert asyncio.run(leave()) == {"raised": "ClientDisconnected", "oserror": True}


def test_sigterm_lets_open_streams_finish_then_the_server_exits_cleanly(h3):
    payload = os.urandom(1024 * 1024)

    async def drain():
        async with h3.connect() as client:
            download = client.open("GET", f"/download?size={MB10}&chunk=65536", end=True)
            upload = client.open("POST", "/wait-for-body", [(b"content-length", str(len(payload)).encode())])
            upload.send(payload[:1000], end=False)
            status, _ = await download.head()
            first = await download.read()
            h3.server.proc.send_signal(signal.SIGTERM)
            assert h3.server.wait_for_log("shutting down", timeout=10)
            await asyncio.sleep(0.3)
            # After the GOAWAY, the request already in flight still gets its body through.
            upload.send(payload[1000:], end=True)
            uploaded = await upload.response()
            rest = await download.response()
            return status, len(first) + len(rest.body), uploaded

    status, downloaded, uploaded = asyncio.run(drain())
    assert status == 200
    assert downloaded == MB10
    assert json.loads(uploaded.body)["sha256"] == hashlib.sha256(payload).hexdigest()
    assert h3.server.proc.wait(15) == 0
    assert "server stopped" in h3.server.logs()


def test_a_new_request_after_the_drain_began_is_refused_and_closing_ends_the_rest(start_https):
    """GOAWAY names the last request the server took: a later one is refused (safe for the
    client to retry elsewhere); one still open at the end of --timeout-graceful-shutdown is
    cut off, and the server still exits cleanly."""
    h3 = start_https("--timeout-graceful-shutdown", "1")

    async def late():
        async with h3.connect() as client:
            held = client.open("GET", "/stream-wait?key=late", end=True)
            assert await held.read() == b"first\n"
            h3.server.proc.send_signal(signal.SIGTERM)
            assert h3.server.wait_for_log("shutting down", timeout=10)
            await asyncio.sleep(0.3)
            with pytest.raises(StreamFailed):
                await client.request("GET", "/ok")
            with pytest.raises(StreamFailed):
                await held.response()

    asyncio.run(late())
    assert h3.server.proc.wait(15) == 0
    assert "graceful shutdown timed out" in h3.server.logs()


def test_alt_svc_announces_http3_on_tcp_responses_only_with_the_flag(start_https):
    with_h3 = start_https()
    for http2 in (False, True):
        with with_h3.https(http2) as client:
            response = client.get("/ok")
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert response.headers["alt-svc"] == f'h3=":{with_h3.port}"; ma=86400'
    without = start_https(http3=False)
    with without.https() as client:
        assert "alt-svc" not in client.get("/ok").headers


def test_rust_routes_and_the_health_path_answer_over_http3(start_https, tmp_path):
    static = tmp_path / "static"
    static.mkdir()
    (static / "hello.txt").write_text("served by Rust\n")
    h3 = start_https("--static-path-route", "/static", "--static-path-mount", str(static),
                     "--health-path", "/healthz")

    async def exchange():
        async with h3.connect() as client:
            return await client.request("GET", "/static/hello.txt"), await client.request("GET", "/healthz")

    static_file, health = asyncio.run(exchange())
    assert static_file.status == 200
    assert static_file.body == b"served by Rust\n"
    assert health.status == 200
    # Nothing of the two reached Python.
    with h3.https() as client:
        assert client.get("/seen").json() == ["/seen?"]


def test_every_worker_process_serves_http3_on_the_shared_port(start_https):
    """Each --workers process binds the UDP port itself (SO_REUSEPORT); the kernel spreads
    new connections over them by their addresses."""
    h3 = start_https("--workers", "2")
    both = re.compile(r"serving HTTP/3 on udp.*\n(?:.*\n)*.*serving HTTP/3 on udp")
    assert h3.server.log.wait_for(both, READY_TIMEOUT), h3.server.logs()

    async def pids():
        seen = set()
        for _ in range(40):
            async with h3.connect() as client:
                seen.add(json.loads((await client.request("GET", "/pid")).body)["pid"])
            if len(seen) == 2:
                break
        return seen

    assert len(asyncio.run(pids())) == 2


def test_http3_without_a_certificate_is_a_usage_error():
    result = run_until_exit(APP, "--http3")
    assert result.returncode == 2
    assert "--ssl-certfile" in result.stderr
