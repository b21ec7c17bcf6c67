"""Serving in production (issue #7): proxy headers, concurrency and body limits, default
response headers, --env-file and JSON logs, each with uvicorn's flag where uvicorn has one."""

import asyncio
import json
import re
import socket
import time

import httpx
import pytest
from websockets.asyncio.client import connect

from harness import IS_UVICORN, RawConnection, raw_request, run_until_exit

PROXIED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def scope_of(server, headers=None) -> dict:
    response = httpx.get(server.url + "/scope", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()["scope"]


def seen_paths(server) -> list[str]:
    return httpx.get(server.url + "/seen").json()


# --- proxy headers ---------------------------------------------------------------------------


def test_proxy_headers_from_a_trusted_peer_set_client_and_scheme(server_factory):
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "127.0.0.1")
    scope = scope_of(server, PROXIED)
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"


def test_trust_comes_from_localhost_by_default(server_factory):
    server = server_factory("pyapp.conformance:app", env={"FORWARDED_ALLOW_IPS": None})
    scope = scope_of(server, {"X-Forwarded-For": "203.0.113.7:4711", "X-Forwarded-Proto": "https"})
    assert scope["client"] == ["203.0.113.7", 4711]
    assert scope["scheme"] == "https"


def test_proxy_headers_from_an_untrusted_peer_are_ignored(server_factory):
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "10.0.0.1")
    scope = scope_of(server, PROXIED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["client"][1] != 0
    assert scope["scheme"] == "http"


def test_forwarded_allow_ips_is_read_from_the_environment(server_factory):
    server = server_factory("pyapp.conformance:app", env={"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert scope_of(server, PROXIED)["scheme"] == "http"


def test_no_proxy_headers_ignores_them_even_from_trusted_peers(server_factory):
    server = server_factory("pyapp.conformance:app", "--no-proxy-headers", "--forwarded-allow-ips", "*")
    scope = scope_of(server, PROXIED)
    assert scope["client"][0] == "127.0.0.1"
    assert scope["scheme"] == "http"


def test_client_is_the_rightmost_address_that_is_not_a_trusted_proxy(server_factory):
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "127.0.0.1, 10.0.0.0/8")
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"}
    assert scope_of(server, chain)["client"] == ["203.0.113.7", 0]
    # With `*` every hop is trusted, so the left-most is the client.
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "*")
    assert scope_of(server, chain)["client"] == ["198.51.100.1", 0]


def test_the_access_log_shows_the_client_a_trusted_proxy_forwards(server_factory):
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "127.0.0.1")
    httpx.get(server.url + "/ok?via=proxy", headers=PROXIED)
    line = server.wait_for_log(re.compile(r'(\S+) (?:- )?"GET /ok\?via=proxy HTTP/1\.1" 200'))
    assert line is not None, server.logs()
    assert line.group(1) == "203.0.113.7:0"


def test_the_access_log_shows_the_peer_when_the_proxy_is_not_trusted(server_factory):
    server = server_factory("pyapp.conformance:app", "--forwarded-allow-ips", "10.0.0.1")
    httpx.get(server.url + "/ok?via=untrusted", headers=PROXIED)
    line = server.wait_for_log(re.compile(r'(\S+) (?:- )?"GET /ok\?via=untrusted HTTP/1\.1" 200'))
    assert line is not None, server.logs()
    assert re.fullmatch(r"127\.0\.0\.1:\d+", line.group(1)), line.group(0)
    assert "203.0.113.7" not in server.logs()


@pytest.mark.rust_only  # uvicorn reads only X-Forwarded-*
def test_rfc7239_forwarded_header_is_understood(server_factory):
    server = server_factory("pyapp.conformance:app")
    scope = scope_of(server, {"Forwarded": 'for="[2001:db8::7]:4711";proto=https;by=10.0.0.1'})
    assert scope["client"] == ["2001:db8::7", 4711]
    assert scope["scheme"] == "https"


def test_forwarded_proto_makes_websocket_scheme_wss(server_factory):
    server = server_factory("pyapp.ws_apps:app")

    async def main():
        async with connect(f"ws://127.0.0.1:{server.port}/scope", additional_headers=PROXIED, open_timeout=10) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))["scope"]

    scope = asyncio.run(main())
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["203.0.113.7", 0]


# --- concurrency limit -----------------------------------------------------------------------


def test_requests_past_the_concurrency_limit_get_503_without_reaching_the_app(server_factory):
    # One request in flight is the limit. uvicorn also counts open connections, the refused
    # one's included, so it needs a limit one higher to admit the first request.
    limit = "2" if IS_UVICORN else "1"
    server = server_factory("pyapp.conformance:app", "--limit-concurrency", limit)
    with RawConnection(server.port) as streaming:
        streaming.send(b"GET /stream-wait?key=limit HTTP/1.1\r\nHost: x\r\n\r\n")
        assert streaming.read_head().status == 200  # in flight: its body is still coming
        refused = httpx.get(server.url + "/ok?refused=1")
        assert refused.status_code == 503
        assert refused.text == "Service Unavailable"
    # The client went away: its slot is free again.
    deadline = time.monotonic() + 10
    while (status := httpx.get(server.url + "/ok").status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200
    assert not any("refused" in path for path in seen_paths(server))
    assert server.wait_for_log("Exceeded concurrency limit", timeout=5), server.logs()


# --- request body limit ----------------------------------------------------------------------


@pytest.mark.rust_only  # uvicorn has no request body limit
def test_a_declared_body_over_the_limit_gets_413_before_the_app(server_factory):
    server = server_factory("pyapp.conformance:app", "--limit-request-body", "100")
    response = httpx.post(server.url + "/echo?big=1", content=b"x" * 101)
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert httpx.post(server.url + "/echo", content=b"x" * 100).content == b"x" * 100
    assert not any("big" in path for path in seen_paths(server))


@pytest.mark.rust_only
def test_an_oversized_body_announced_with_expect_100_continue_is_never_sent_for(server_factory):
    server = server_factory("pyapp.conformance:app", "--limit-request-body", "100")
    response = raw_request(
        server.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
    )
    assert response.status == 413


@pytest.mark.rust_only
def test_a_chunked_body_over_the_limit_gets_413(server_factory):
    server = server_factory("pyapp.conformance:app", "--limit-request-body", "100")
    chunks = b"".join(b"40\r\n" + b"y" * 64 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    response = raw_request(
        server.port,
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert response.status == 413
    assert response.body == b"Payload Too Large"
    within = b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n"
    response = raw_request(
        server.port,
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + within,
    )
    assert response.status == 200
    assert json.loads(response.body)["length"] == 64


# --- keep-alive ------------------------------------------------------------------------------


def seconds_until_closed(conn: RawConnection) -> float:
    started = time.monotonic()
    assert conn.read_to_eof() == b""
    return time.monotonic() - started


def test_an_idle_keep_alive_connection_is_closed_after_timeout_keep_alive(server_factory):
    server = server_factory("pyapp.conformance:app", "--timeout-keep-alive", "1")
    with RawConnection(server.port) as conn:
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"ok"
        # A request within the timeout keeps the connection, and starts the wait anew.
        time.sleep(0.6)
        conn.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.read_response().body == b"ok"
        assert 0.8 < seconds_until_closed(conn) < 2.0


def test_a_request_slower_than_timeout_keep_alive_is_answered(server_factory):
    server = server_factory(
        "pyapp.lifespan_apps:app", "--timeout-keep-alive", "1", env={"LIFESPAN_STARTUP_DELAY": "0"}
    )
    with RawConnection(server.port) as conn:
        conn.send(b"GET /sleep?s=2.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        response = conn.read_response()
        assert (response.status, response.body) == (200, b"slept 2.5")
        assert 0.8 < seconds_until_closed(conn) < 2.0


@pytest.mark.rust_only  # uvicorn speaks no HTTP/2
def test_an_idle_h2c_connection_gets_goaway_after_timeout_keep_alive(server_factory):
    import h2.config
    import h2.connection
    import h2.events
    from hyperframe.frame import Frame, GoAwayFrame, PingFrame

    server = server_factory("pyapp.conformance:app", "--timeout-keep-alive", "1")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    request = [(":method", "GET"), (":path", "/ok"), (":scheme", "http"), (":authority", "localhost")]
    client.send_headers(1, request, end_stream=True)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(client.data_to_send())
        answered = False
        while not answered and (data := sock.recv(65536)):
            answered = any(isinstance(event, h2.events.StreamEnded) for event in client.receive_data(data))
            sock.sendall(client.data_to_send())
        assert answered
        # What follows is read as raw frames: h2's client state machine refuses the PING
        # that hyper sends after its GOAWAY, and waits for the answer before it closes.
        started, frames, buffer = time.monotonic(), [], b""
        while data := sock.recv(65536):
            buffer += data
            while len(buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
                if len(buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(buffer[9 : 9 + length]))
                buffer = buffer[9 + length :]
                frames.append(frame)
                if isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                    sock.sendall(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
        idle = time.monotonic() - started
    assert any(isinstance(frame, GoAwayFrame) for frame in frames), frames
    assert 0.8 < idle < 2.0


# --- default response headers ----------------------------------------------------------------


def test_server_and_date_headers_are_sent_by_default(server_factory):
    server = server_factory("pyapp.conformance:app")
    headers = httpx.get(server.url + "/ok").headers
    assert headers["server"] == ("uvicorn" if IS_UVICORN else "rust-asgi-server")
    assert headers["date"].endswith(" GMT")


APP_DATE = "Thu, 01 Jan 2015 00:00:00 GMT"  # what pyapp/conformance.py's /dated sends


def test_no_date_header_removes_it_but_keeps_the_apps_own(server_factory):
    server = server_factory("pyapp.conformance:app", "--no-date-header")
    assert "date" not in httpx.get(server.url + "/ok").headers
    assert httpx.get(server.url + "/dated").headers.get_list("date") == [APP_DATE]


@pytest.mark.rust_only  # uvicorn sends its date next to the app's own
def test_the_apps_own_date_header_replaces_the_servers(server_factory):
    server = server_factory("pyapp.conformance:app")
    assert httpx.get(server.url + "/dated").headers.get_list("date") == [APP_DATE]


@pytest.mark.rust_only  # uvicorn speaks no HTTP/2
def test_date_header_flags_apply_to_h2c_too(server_factory):
    for args, date in [((), True), (("--no-date-header",), False)]:
        server = server_factory("pyapp.conformance:app", *args)
        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            response = client.get(server.url + "/ok")
            assert response.http_version == "HTTP/2"
            assert ("date" in response.headers) == date
            assert client.get(server.url + "/dated").headers.get_list("date") == [APP_DATE]


def test_no_server_header_removes_it(server_factory):
    server = server_factory("pyapp.conformance:app", "--no-server-header")
    assert "server" not in httpx.get(server.url + "/ok").headers


def test_header_flags_add_default_headers_and_may_replace_the_server_header(server_factory):
    server = server_factory(
        "pyapp.conformance:app", "--header", "X-Frame-Options:DENY", "--header", "server:edge"
    )
    response = httpx.get(server.url + "/ok")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers.get_list("server") == ["edge"]


@pytest.mark.rust_only  # uvicorn sends its default next to the app's own
def test_the_apps_own_header_wins_over_a_default(server_factory):
    server = server_factory("pyapp.conformance:app", "--header", "content-type:text/x-default")
    response = httpx.post(server.url + "/echo", content=b"{}", headers={"content-type": "application/json"})
    assert response.headers.get_list("content-type") == ["application/json"]
    assert httpx.get(server.url + "/missing").headers.get_list("content-type") == ["text/plain; charset=utf-8"]


@pytest.mark.rust_only
def test_refusals_carry_the_default_headers(server_factory):
    server = server_factory("pyapp.conformance:app", "--limit-request-body", "1", "--header", "x-edge:1")
    response = httpx.post(server.url + "/echo", content=b"too long")
    assert response.status_code == 413
    assert response.headers["x-edge"] == "1"
    assert response.headers["server"] == "rust-asgi-server"


# --- environment and logs --------------------------------------------------------------------


@pytest.mark.rust_only  # uvicorn needs python-dotenv for --env-file
def test_env_file_reaches_the_app_without_overriding_the_environment(server_factory, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# settings\nFROM_ENV_FILE=\"hello world\"\nexport QUOTED='a b'\nALREADY_SET=file\n")
    server = server_factory(
        "pyapp.conformance:app", "--env-file", str(env_file), env={"ALREADY_SET": "from shell"}
    )

    def env(name):
        return httpx.get(server.url + "/env", params={"name": name}).json()["value"]

    assert env("FROM_ENV_FILE") == "hello world"
    assert env("QUOTED") == "a b"
    assert env("ALREADY_SET") == "from shell"


@pytest.mark.rust_only
def test_a_missing_env_file_stops_the_server_with_a_usage_error(tmp_path):
    result = run_until_exit("pyapp.conformance:app", "--env-file", str(tmp_path / "missing.env"))
    assert result.returncode == 2
    assert "missing.env" in result.stderr


@pytest.mark.rust_only  # --log-format is ours
def test_json_logs_are_one_object_per_line(server_factory):
    server = server_factory("pyapp.conformance:app", "--log-format", "json")
    assert httpx.get(server.url + "/ok").status_code == 200
    assert server.wait_for_log('"GET /ok HTTP/1.1\\" 200', timeout=5), server.logs()
    lines = [line for line in server.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all({"timestamp", "level", "message"} <= set(record) for record in records), records
    assert any(record["message"].startswith("listening on http://") for record in records)
    assert any("GET /ok" in record["message"] and record["level"] == "INFO" for record in records)
