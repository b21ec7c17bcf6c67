"""Helpers of the black-box test suite of rust-asgi-server.

The tests start the real server binary as a subprocess, talk HTTP to it on 127.0.0.1 and
read what it logs on stderr. Nothing here imports the server: it is tested only from the
outside, the way a user runs it.

Environment:
- ``RUST_ASGI_SERVER_PROFILE``: the cargo profile whose binary and examples are tested
  (default ``release``; scripts/test.sh builds and tests ``ci``, release without LTO).
- ``RUST_ASGI_SERVER_BIN``: the binary to test (default ``target/PROFILE/rust-asgi-server``).
- ``RUST_ASGI_SERVER_CMD``: the server command, split like a shell would, when it is not
  that binary: the wheel's ``/path/to/venv/bin/rust-asgi-server`` or
  ``/path/to/venv/bin/python -m rust_asgi_server`` (scripts/test.sh, wheel stage). Every
  test that starts a server through this module then tests that command.
- ``SERVER_UNDER_TEST=uvicorn``: run the same tests against uvicorn instead, to check the
  test apps and the assertions themselves. Our CLI is translated to uvicorn's; tests of
  things only our server does (marked ``rust_only``) are skipped in that mode only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_UNDER_TEST = os.environ.get("SERVER_UNDER_TEST", "rust").strip().lower() or "rust"
# The cargo profile whose binaries are tested: `release` by default, `ci` from scripts/test.sh.
CARGO_PROFILE = os.environ.get("RUST_ASGI_SERVER_PROFILE", "release")
TARGET_DIR = REPO_ROOT / "target" / CARGO_PROFILE
SERVER_BIN = Path(os.environ.get("RUST_ASGI_SERVER_BIN", TARGET_DIR / "rust-asgi-server"))
IS_UVICORN = SERVER_UNDER_TEST == "uvicorn"
# Where our server runs its sockets (--runtime-mode, read by the binary from this variable):
# scripts/test.sh runs the suite once per mode.
RUNTIME_MODE = os.environ.get("RUST_ASGI_SERVER_RUNTIME_MODE", "split")
SINGLE_THREAD = RUNTIME_MODE == "single"
# The command that starts a server; the one place the suite takes it from.
SERVER_CMD = shlex.split(os.environ.get("RUST_ASGI_SERVER_CMD", "")) or [str(SERVER_BIN)]
IS_WHEEL = "RUST_ASGI_SERVER_CMD" in os.environ

READY_TIMEOUT = 30.0
LISTENING_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
# One access-log line: `"GET /path HTTP/1.1" 200` (both servers write this part alike).
ACCESS_LINE_RE = re.compile(r'"[A-Z]+ \S+ HTTP/1\.[01]" \d{3}')

if SERVER_UNDER_TEST not in ("rust", "uvicorn"):
    raise RuntimeError(f"SERVER_UNDER_TEST must be 'rust' or 'uvicorn', not {SERVER_UNDER_TEST!r}")


# ---------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------


class ServerStartError(Exception):
    pass


class _StreamDrain:
    """Reads a pipe to the end in a thread, keeping every line so tests can look at it."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for raw in iter(self._pipe.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for(self, pattern: re.Pattern, timeout: float, alive=None):
        """The first match of ``pattern`` in the text so far, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = pattern.search("".join(self._lines))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    return None
                if alive is not None and not alive():
                    # the process is gone; give the reader a moment to see the end of the pipe
                    self._cond.wait(min(remaining, 0.2))
                    if self.closed or not alive():
                        match = pattern.search("".join(self._lines))
                        return match
                self._cond.wait(min(remaining, 0.1))

    def join(self, timeout=5):
        self._thread.join(timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    # Tests must not depend on a VIRTUAL_ENV that happened to be set in the shell.
    env.pop("VIRTUAL_ENV", None)
    if sys.prefix != sys.base_prefix:
        # starlette/fastapi are installed in the test venv: let the embedded interpreter see them.
        env["VIRTUAL_ENV"] = sys.prefix
    if IS_UVICORN:
        env["PYTHONUNBUFFERED"] = "1"
    if extra:
        for key, value in extra.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
    return env


def translate_to_uvicorn(args: list[str]) -> tuple[list[str], int | None]:
    """Our CLI → ``python -m uvicorn``. Returns the command and the port it will listen on."""
    cmd = [sys.executable, "-m", "uvicorn"]
    port = None
    rest = list(args)
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--app":
            cmd.append(rest[i + 1])
            i += 2
            continue
        if arg == "--bind":
            host, _, port_text = rest[i + 1].rpartition(":")
            port = int(port_text) or free_port()
            cmd += ["--host", host, "--port", str(port)]
            i += 2
            continue
        if arg == "--port":
            port = int(rest[i + 1]) or free_port()
            cmd += ["--port", str(port)]
            i += 2
            continue
        cmd.append(arg)
        i += 1
    return cmd, port


def build_command(app: str, args: list[str]) -> tuple[list[str], int | None]:
    full = ["--app", app]
    if "--bind" not in args and "--port" not in args:
        full += ["--bind", "127.0.0.1:0"]
    full += list(args)
    if IS_UVICORN:
        return translate_to_uvicorn(full)
    if not Path(SERVER_CMD[0]).exists():
        raise ServerStartError(
            f"server command not found: {SERVER_CMD[0]} (build it with `cargo build --release`, "
            "or set RUST_ASGI_SERVER_PROFILE, RUST_ASGI_SERVER_BIN or RUST_ASGI_SERVER_CMD)"
        )
    return [*SERVER_CMD, *full], None


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    command: list[str]
    log: _StreamDrain
    stdout: _StreamDrain | None
    port: int = 0
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        """Everything the server wrote on stderr so far."""
        return self.log.text()

    def stdout_text(self) -> str:
        return self.stdout.text() if self.stdout is not None else ""

    def wait_for_log(self, pattern, timeout: float = 5.0):
        if isinstance(pattern, str):
            pattern = re.compile(re.escape(pattern))
        return self.log.wait_for(pattern, timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status_kb(self, key: str) -> int:
        """A ``/proc/PID/status`` memory figure (VmRSS, VmHWM) of the server, in KiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def rss_kb(self) -> int:
        return self.status_kb("VmRSS")

    def hwm_kb(self) -> int:
        return self.status_kb("VmHWM")

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> int:
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.join()
        if self.stdout is not None:
            self.stdout.join()
        return self.proc.returncode


def start_server(
    app: str,
    *args: str,
    env: dict | None = None,
    cwd: Path | str = REPO_ROOT,
    ready_timeout: float = READY_TIMEOUT,
) -> ServerProcess:
    """Start a server for ``app`` on a free port and wait until it serves."""
    command, uvicorn_port = build_command(app, list(args))
    if IS_UVICORN:
        # uvicorn logs access lines on stdout: read both as one stream.
        proc = subprocess.Popen(
            command, cwd=cwd, env=server_env(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        server = ServerProcess(proc, command, _StreamDrain(proc.stdout), None)
    else:
        proc = subprocess.Popen(
            command, cwd=cwd, env=server_env(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
    try:
        if IS_UVICORN:
            server.port = _wait_port_open(server, uvicorn_port, ready_timeout)
        else:
            match = server.log.wait_for(LISTENING_RE, ready_timeout, alive=server.alive)
            if match is None:
                state = "exited with code %s" % proc.poll() if not server.alive() else "timed out"
                raise ServerStartError(
                    f"server did not log 'listening on http://127.0.0.1:PORT' ({state}).\n"
                    f"command: {command}\n--- stderr ---\n{server.logs()}"
                )
            server.port = int(match.group(1))
    except BaseException:
        server.stop()
        raise
    return server


def _wait_port_open(server: ServerProcess, port: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            server.log.join()
            raise ServerStartError(
                f"uvicorn exited with code {server.proc.returncode}\n{server.logs()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return port
        except OSError:
            time.sleep(0.05)
    raise ServerStartError(f"uvicorn did not open port {port} in {timeout}s\n{server.logs()}")


@dataclass
class ExitResult:
    returncode: int | None
    stderr: str
    stdout: str
    timed_out: bool
    elapsed: float


def run_until_exit(app: str, *args: str, env=None, cwd=REPO_ROOT, timeout: float = 20.0) -> ExitResult:
    """Run a server that is expected to stop on its own (e.g. the app cannot be imported)."""
    command, _ = build_command(app, list(args))
    proc = subprocess.Popen(
        command, cwd=cwd, env=server_env(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    timed_out = False
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    return ExitResult(
        proc.returncode,
        err.decode("utf-8", "replace"),
        out.decode("utf-8", "replace"),
        timed_out,
        time.monotonic() - started,
    )


# ---------------------------------------------------------------------------------------
# Raw HTTP/1.1 over a socket, for what httpx hides (exact bytes, pipelining, 100-continue)
# ---------------------------------------------------------------------------------------


class IncompleteResponse(Exception):
    pass


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    chunked: bool = False

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]


class RawConnection:
    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rfile = self.sock.makefile("rb")

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _readline(self) -> bytes:
        line = self.rfile.readline(1 << 20)
        if not line.endswith(b"\n"):
            raise IncompleteResponse(f"connection ended inside a line: {line!r}")
        return line

    def read_head(self) -> RawResponse:
        status_line = self._readline()
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise IncompleteResponse(f"bad status line {status_line!r}")
        headers = []
        while True:
            line = self._readline()
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return RawResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers)

    def read_response(self, head_request: bool = False) -> RawResponse:
        """One complete final response (interim 1xx responses are returned as they come)."""
        response = self.read_head()
        if head_request or response.status < 200 or response.status in (204, 304):
            return response
        te = (response.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            response.chunked = True
            body = bytearray()
            while True:
                size_line = self._readline()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    break
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise IncompleteResponse("connection ended inside a chunk")
                body += chunk
                if self._readline() not in (b"\r\n", b"\n"):
                    raise IncompleteResponse("chunk not followed by CRLF")
            while True:
                line = self._readline()
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                response.trailers.append((name.strip().lower(), value.strip()))
            response.body = bytes(body)
        elif response.header("content-length") is not None:
            length = int(response.header("content-length"))
            response.body = self.rfile.read(length)
            if len(response.body) != length:
                raise IncompleteResponse(f"expected {length} body bytes, got {len(response.body)}")
        else:
            response.body = self.rfile.read()
        return response

    def read_to_eof(self) -> bytes:
        try:
            return self.rfile.read()
        except ConnectionResetError:
            return b""

    def close(self):
        try:
            self.rfile.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_request(port: int, data: bytes, head_request: bool = False, timeout: float = 10.0) -> RawResponse:
    with RawConnection(port, timeout) as conn:
        conn.send(data)
        return conn.read_response(head_request=head_request)


def strip_access_lines(text: str) -> str:
    """The log without access-log lines (whose request paths could match anything)."""
    return "".join(line for line in text.splitlines(True) if not ACCESS_LINE_RE.search(line))


# ---------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------


def make_certificate(directory: Path, kind: str = "rsa") -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{kind}.crt"
    key_path = directory / f"{kind}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
