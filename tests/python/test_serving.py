"""Serving in production, part two (issue #7): worker processes under a supervisor, Unix
sockets and inherited sockets, TLS, HTTP/2, request-count recycling and --reload.

These rely on our log lines (readiness of Unix and TLS listeners, supervisor messages) and on
HTTP/2, which uvicorn does not speak, so they run against rust-asgi-server only.
"""

import concurrent.futures
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from harness import (
    READY_TIMEOUT,
    REPO_ROOT,
    SERVER_CMD,
    ServerProcess,
    ServerStartError,
    _StreamDrain,
    make_certificate,
    run_until_exit,
    server_env,
)

pytestmark = pytest.mark.rust_only

APP = "pyapp.conformance:app"


@pytest.fixture
def start():
    """Start the server with exactly ``args`` (no ``--bind`` added) and wait for ``ready``,
    a regular expression of the log; returns the server and the match."""
    started: list[ServerProcess] = []

    def start(*args: str, ready: str, cwd=REPO_ROOT, pass_fds=()) -> tuple[ServerProcess, re.Match]:
        command = [*SERVER_CMD, *args]
        proc = subprocess.Popen(
            command, cwd=cwd, env=server_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
        )
        server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
        started.append(server)
        match = server.log.wait_for(re.compile(ready), READY_TIMEOUT, alive=server.alive)
        if match is None:
            raise ServerStartError(f"no {ready!r} in the log of {command}:\n{server.logs()}")
        return server, match

    yield start
    for server in started:
        server.stop(timeout=10)


def pid_of(url: str, **client_options) -> int:
    response = httpx.get(url + "/pid", **client_options)
    assert response.status_code == 200, response.text
    return response.json()["pid"]


def pids_seen(url: str, requests: int = 64) -> set[int]:
    """The worker pids that answered ``requests`` concurrent requests, each on its own
    connection so the kernel hands them to whichever worker accepts first."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return set(pool.map(lambda _: pid_of(url), range(requests)))


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def wait_until(condition, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    # ProcessLookupError: the process was reaped between the open and the read.
    except (FileNotFoundError, ProcessLookupError):
        return True


# --- worker processes --------------------------------------------------------------------


def test_workers_serve_concurrently_and_a_killed_worker_is_replaced(server_factory):
    server = server_factory(APP, "--workers", "4", "--no-access-log")
    workers: set[int] = set()
    deadline = time.monotonic() + 20
    while len(workers) < 4 and time.monotonic() < deadline:
        workers |= pids_seen(server.url)
    assert len(workers) == 4, workers
    assert all(parent_of(pid) == server.pid for pid in workers)
    assert server.pid not in workers

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    # The others keep serving while the supervisor replaces it.
    answered = pids_seen(server.url, 32)
    assert victim not in answered
    assert server.wait_for_log(f"worker process {victim} died", timeout=10), server.logs()
    replacement = wait_until(
        lambda: (pids_seen(server.url) - workers) or None, 20, "no replacement worker answered"
    )
    assert all(parent_of(pid) == server.pid for pid in replacement)

    assert server.stop(timeout=15) == 0
    assert "all workers have exited" in server.logs()
    assert all(gone(pid) for pid in (workers - {victim}) | replacement)


def test_sigterm_is_forwarded_and_workers_drain_before_the_supervisor_exits(server_factory):
    server = server_factory(APP, "--workers", "2", "--timeout-graceful-shutdown", "2")
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", server.url + "/stream-wait?key=drain") as response:
            stream = response.iter_bytes()
            assert next(stream).startswith(b"first")
            started = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert server.wait_for_log("received SIGTERM: stopping the workers", timeout=5)
            # One worker waits for the open response until the graceful timeout.
            time.sleep(0.5)
            assert server.alive()
            with pytest.raises(httpx.HTTPError):
                b"".join(stream)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started >= 1.5
    assert "all workers have exited" in server.logs()


def test_workers_that_cannot_start_stop_the_supervisor(tmp_path):
    result = run_until_exit("pyapp.no_such_module:app", "--workers", "2", timeout=30)
    assert not result.timed_out, result.stderr
    assert result.returncode != 0
    assert "failed to start" in result.stderr
    assert 'Cannot import module "pyapp.no_such_module"' in result.stderr


# --- Unix domain sockets and inherited sockets ----------------------------------------------


def test_unix_socket_scope_has_the_path_as_server_and_no_client(start, tmp_path):
    path = tmp_path / "app.sock"
    # A socket file left by a server that died is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    server, _ = start("--app", APP, "--uds", str(path), ready=f"listening on unix:{re.escape(str(path))}")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        scope = client.get("http://localhost/scope").json()["scope"]
    assert scope["server"] == [str(path), None]
    assert scope["client"] is None
    assert scope["scheme"] == "http"
    assert "listening on http://" not in server.logs()  # --uds alone: no TCP listener
    assert server.stop() == 0
    assert not path.exists()


def test_unix_socket_with_workers(start, tmp_path):
    path = tmp_path / "workers.sock"
    server, _ = start(
        "--app", APP, "--uds", str(path), "--workers", "2", "--no-access-log",
        ready=f"listening on unix:{re.escape(str(path))}",
    )
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        pid = client.get("http://localhost/pid").json()["pid"]
    assert parent_of(pid) == server.pid
    assert server.stop(timeout=15) == 0
    assert not path.exists()


def test_an_inherited_listening_socket_is_served_with_fd(start):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    fd = listening.fileno()
    server, _ = start("--app", APP, "--fd", str(fd), ready=f"listening on http://127.0.0.1:{port}", pass_fds=(fd,))
    listening.close()  # the server has its own copy now
    scope = httpx.get(f"http://127.0.0.1:{port}/scope").json()["scope"]
    assert scope["server"] == ["127.0.0.1", port]


# --- HTTP/2 and TLS ----------------------------------------------------------------------------


def upload(size: int, chunk: int = 65536):
    sent = 0
    while sent < size:
        part = min(chunk, size - sent)
        sent += part
        yield b"u" * part


def check_streams_both_ways(client: httpx.Client, url: str, http_version: str):
    scope = client.get(url + "/scope").json()["scope"]
    assert scope["http_version"] == http_version
    size = 3 * 1024 * 1024 + 17
    response = client.post(url + "/count", content=upload(size))
    assert response.http_version == f"HTTP/{'2' if http_version == '2' else '1.1'}"
    assert response.json()["length"] == size
    assert response.json()["messages"] > 1
    received = 0
    with client.stream("GET", url + f"/download?size={size}&chunk=65536") as response:
        for part in response.iter_bytes():
            received += len(part)
    assert received == size
    echoed = client.post(url + "/echo", content=b"ping" * 1000)
    assert echoed.content == b"ping" * 1000
    return scope


def test_h2c_with_prior_knowledge_streams_both_ways(server_factory):
    server = server_factory(APP)
    with httpx.Client(http1=False, http2=True, timeout=20) as client:
        scope = check_streams_both_ways(client, server.url, "2")
    assert scope["scheme"] == "http"


def test_http_1_refuses_h2c_and_http_2_refuses_http_1(server_factory):
    server = server_factory(APP, "--http", "1")
    assert httpx.get(server.url + "/ok").text == "ok"
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        with pytest.raises(httpx.HTTPError):
            client.get(server.url + "/ok")

    server = server_factory(APP, "--http", "2")
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        assert client.get(server.url + "/ok").text == "ok"
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/ok", timeout=5)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_tls_serves_http2_by_alpn_and_http1_with_https_scheme(start, tmp_path, kind):
    cert, key = make_certificate(tmp_path, kind)
    server, match = start(
        "--app", APP, "--bind", "127.0.0.1:0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
        ready=r"listening on https://127\.0\.0\.1:(\d+)",
    )
    url = f"https://localhost:{match.group(1)}"
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(http2=True, verify=trust, timeout=20) as client:
        scope = check_streams_both_ways(client, url, "2")
    assert scope["scheme"] == "https"
    with httpx.Client(verify=trust, timeout=20) as client:
        assert check_streams_both_ways(client, url, "1.1")["scheme"] == "https"
    # Plain HTTP on the TLS port is refused, not served.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{match.group(1)}/ok", timeout=5)


def test_tls_with_workers(start, tmp_path):
    cert, key = make_certificate(tmp_path, "ecdsa")
    server, match = start(
        "--app", APP, "--bind", "127.0.0.1:0", "--workers", "2",
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
        ready=r"listening on https://127\.0\.0\.1:(\d+)",
    )
    trust = ssl.create_default_context(cafile=str(cert))
    pid = pid_of(f"https://localhost:{match.group(1)}", verify=trust)
    assert parent_of(pid) == server.pid


def test_unusable_certificates_stop_the_server_with_a_clear_message(tmp_path):
    cert, key = make_certificate(tmp_path, "rsa")
    _, other_key = make_certificate(tmp_path, "ecdsa")
    cases = [
        ([str(tmp_path / "missing.crt"), str(key)], "cannot read --ssl-certfile"),
        ([str(cert), str(other_key)], "is not the key of the certificate"),
        ([str(key), str(key)], "no certificate in --ssl-certfile"),
    ]
    for (certfile, keyfile), message in cases:
        for workers in ("1", "2"):
            result = run_until_exit(
                APP, "--ssl-certfile", certfile, "--ssl-keyfile", keyfile, "--workers", workers, timeout=20
            )
            assert result.returncode == 3, result.stderr
            assert message in result.stderr
            assert "panicked" not in result.stderr


def encrypt_key(key_path: Path, password: bytes) -> Path:
    """``key_path``'s key as encrypted PKCS#8 PEM (``ENCRYPTED PRIVATE KEY``), in a new file."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    encrypted = key_path.with_suffix(".encrypted.key")
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    )
    return encrypted


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_tls_with_an_encrypted_key_and_its_password(start, tmp_path, kind):
    cert, key = make_certificate(tmp_path, kind)
    encrypted = encrypt_key(key, b"correct horse")
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in encrypted.read_bytes()
    server, match = start(
        "--app", APP, "--bind", "127.0.0.1:0", "--ssl-certfile", str(cert),
        "--ssl-keyfile", str(encrypted), "--ssl-keyfile-password", "correct horse",
        ready=r"listening on https://127\.0\.0\.1:(\d+)",
    )
    trust = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(f"https://localhost:{match.group(1)}/ok", verify=trust, timeout=20).text == "ok"


def test_an_encrypted_key_without_its_password_stops_the_server_with_a_clear_message(tmp_path):
    cert, key = make_certificate(tmp_path, "ecdsa")
    encrypted = encrypt_key(key, b"correct horse")
    cases = [
        (["--ssl-keyfile-password", "battery staple"], "cannot decrypt --ssl-keyfile"),
        ([], "is encrypted: give its password with --ssl-keyfile-password"),
    ]
    for password, message in cases:
        result = run_until_exit(
            APP, "--ssl-certfile", str(cert), "--ssl-keyfile", str(encrypted), *password, timeout=20
        )
        assert result.returncode == 3, result.stderr
        assert message in result.stderr
        assert str(encrypted) in result.stderr
        assert "panicked" not in result.stderr


# --- recycling and reloading -----------------------------------------------------------------


def test_limit_max_requests_exits_a_single_process_gracefully(server_factory):
    server = server_factory(APP, "--limit-max-requests", "3")
    for _ in range(3):
        assert httpx.get(server.url + "/ok").status_code == 200
    server.proc.wait(10)
    assert server.proc.returncode == 0
    assert "served 3 requests (--limit-max-requests)" in server.logs()


def test_limit_max_requests_recycles_workers(server_factory):
    server = server_factory(APP, "--workers", "2", "--limit-max-requests", "4", "--no-access-log")
    answered = []
    for _ in range(30):
        response = httpx.get(server.url + "/pid", timeout=10)
        assert response.status_code == 200
        answered.append(response.json()["pid"])
    assert len(set(answered)) >= 30 // 4
    assert all(answered.count(pid) <= 4 for pid in set(answered))
    assert "exited; starting a new one" in server.logs()
    assert server.alive()


RELOAD_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{version}"}})
'''


def test_reload_picks_up_an_edited_file(start, tmp_path):
    module = tmp_path / "reloadable.py"
    module.write_text(RELOAD_APP.format(version="one"))
    server, match = start(
        "--app", "reloadable:app", "--app-dir", str(tmp_path), "--bind", "127.0.0.1:0",
        "--reload", "--reload-dir", str(tmp_path),
        ready=r"listening on http://127\.0\.0\.1:(\d+)",
    )
    url = f"http://127.0.0.1:{match.group(1)}/"
    assert httpx.get(url).text == "one"
    (tmp_path / "notes.txt").write_text("not a Python file")
    module.write_text(RELOAD_APP.format(version="two"))

    def reloaded():
        try:
            return httpx.get(url, timeout=2).text == "two"
        except httpx.HTTPError:
            return False

    wait_until(reloaded, 20, f"the edit was not picked up:\n{server.logs()}")
    assert "reloadable.py changed: restarting" in server.logs()
    assert "notes.txt" not in server.logs()
