#!/usr/bin/env python3
"""Load benchmark: rust-asgi-server against uvicorn and granian, same machine, same run.

    python3 bench/run.py [--quick] [--filter SUBSTR] ...

Builds the release binary and the bench examples, prepares a virtualenv with the peers
(bench/.venv), then for every cell (app x concurrency) starts each server in turn, warms it
up, drives it with wrk (h2load for the HTTP/2 cells), and records req/s, latency, server CPU
time per request, peak RSS, errors, and how busy anything else kept the CPUs. Servers
are interleaved (A B C A B C ...) inside each cell so drift hits all of them alike. The
server is pinned to CPU 0 and the load generator to CPU 1, except in the 2-worker cells,
where both share CPUs 0 and 1. The report is printed and written to
bench/results/YYYY-MM-DD[-quick].md (plus the raw numbers as .json). See bench/README.md.

Standard library only; it drives cargo, pip, wrk, h2load and taskset.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
RELEASE = ROOT / "target" / "release"
OURS_BIN = RELEASE / "rust-asgi-server"
AXUM_BIN = RELEASE / "examples" / "bench_axum"
MIXED_BIN = RELEASE / "examples" / "bench_mixed"

PEER_PACKAGES = ["uvicorn[standard]", "granian", "starlette", "fastapi"]
CONCURRENCIES = [1, 50, 256]
WRK_TIMEOUT = "4s"  # also h2load's -N (connection inactivity timeout)
H2_CHECK_REQUESTS = 10
SERVER_CPU = "0"
WRK_CPU = "1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

HELLO = b"Hello, world!"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
ONE_MIB = 1024 * 1024

# wrk script: method and body come from the script arguments (after `--`); done() prints
# one machine-readable line with the numbers the report needs (latencies in microseconds).
WRK_LUA = r"""
local method, body = "GET", nil

function init(args)
  if args[1] then method = args[1] end
  if args[2] then body = args[2] end
  wrk.method = method
  if body then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/octet-stream"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"lat_mean_us": %.1f, "lat_max_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


# --------------------------------------------------------------------------- apps & servers


@dataclass(frozen=True)
class App:
    key: str  # used in --filter and file names
    title: str
    target: str  # MOD:ATTR for the Python servers (and --app of bench_mixed)
    method: str
    path: str
    body: bytes | None
    expect_body: bytes | None = None  # exact body, or
    expect_len: int | None = None  # just its length
    rust_route: bool = False  # served by bench_axum / bench_mixed instead of the ASGI servers


APPS = [
    App("raw-echo", 'raw ASGI echo (POST, body "hello")', "pyapp.bench_raw:echo", "POST", "/", b"hello",
        expect_body=b"hello"),
    App("raw-hello", "raw ASGI hello (GET)", "pyapp.bench_raw:hello", "GET", "/", None, expect_body=HELLO),
    App("starlette", "Starlette hello (GET /)", "pyapp.bench_starlette:app", "GET", "/", None,
        expect_body=HELLO),
    App("fastapi", "FastAPI GET /items/{id}", "pyapp.bench_fastapi:app", "GET", "/items/42", None,
        expect_body=b'{"item_id":42,"name":"widget"}'),
    App("app-io", "raw ASGI, 10 socket round trips per request (a database driver's pattern)",
        "pyapp.bench_io:app", "GET", "/", None, expect_body=b"10"),
    App("stream-1mib", "raw ASGI 1 MiB streamed download (16 x 64 KiB)", "pyapp.bench_raw:stream", "GET",
        "/", None, expect_len=ONE_MIB),
    App("rust-route", "Rust route GET /rust (mixed server vs bare axum)", "pyapp.bench_raw:hello", "GET",
        "/rust", None, expect_body=HELLO, rust_route=True),
]

ASGI_SERVERS = ["ours", "uvicorn", "granian"]
RUST_SERVERS = ["mixed", "axum"]
SERVER_LABELS = {
    "ours": "rust-asgi-server",
    "uvicorn": "uvicorn",
    "granian": "granian",
    "mixed": "bench_mixed (ours)",
    "wheel": "rust-asgi-server (wheel)",
    "metrics": "rust-asgi-server --metrics-bind",
    "single": "rust-asgi-server --runtime-mode single",
    "axum": "bare axum",
}
# Ratios printed per cell: (numerator, denominator).
RATIOS = [("ours", "uvicorn"), ("ours", "granian"), ("mixed", "axum")]


@dataclass(frozen=True)
class Family:
    """Cells that share how the servers run and what drives them."""

    key: str  # prefix of the run names ("" for the main cells), used in --filter
    apps: tuple[str, ...]  # App keys
    loads: tuple[tuple[int, int], ...]  # (connections, HTTP/2 streams per connection; 0 = HTTP/1.1)
    servers: tuple[str, ...] | None = None  # None: the ASGI servers, or mixed/axum for the Rust route
    workers: int = 1  # worker processes per server
    pinned: bool = True  # server on SERVER_CPU, load generator on WRK_CPU; else both share the two CPUs
    tool: str = "wrk"  # "wrk" (HTTP/1.1) or "h2load" (cleartext HTTP/2 with prior knowledge)
    title: str = ""  # added to the cell headings
    note: str = ""  # said in the report's header and in each of its cell sections

    def servers_for(self, app: App) -> list[str]:
        if self.servers is not None:
            return list(self.servers)
        if app.rust_route:
            return RUST_SERVERS
        # --metrics-bind serves one process's metrics: not with --workers.
        return [s for s in ASGI_SERVERS if not (s == "metrics" and self.workers > 1)]


FAMILIES = [
    Family("", tuple(app.key for app in APPS), tuple((c, 0) for c in CONCURRENCIES)),
    Family("workers2", ("raw-hello",), ((50, 0), (256, 0)), workers=2, pinned=False, title="2 workers",
           note="2 worker processes per server (`--workers 2`), not pinned apart: the server and wrk "
                f"share CPUs {SERVER_CPU} and {WRK_CPU} (`taskset -c {SERVER_CPU},{WRK_CPU}`)."),
    Family("h2", ("raw-hello",), ((1, 1), (50, 10)), servers=("ours", "granian"), tool="h2load",
           title="HTTP/2 (h2c)",
           note="cleartext HTTP/2 with prior knowledge, both servers with their default `--http auto`, "
                f"driven by `h2load -t1 -cN -mM -N {WRK_TIMEOUT}` (N connections × M concurrent streams each) "
                f"pinned to CPU {WRK_CPU}; uvicorn has no HTTP/2 (—). h2load reports no percentiles, so p50/p99 "
                "are — and mean is its mean request time."),
]


# The asyncio loop our server and bench_mixed run the app on;
# the peers are told --loop uvloop. --ours-loop changes it for diagnosis.
OURS_LOOP = ["uvloop"]


def server_command(server: str, app: App, port: int, workers: int = 1) -> list[str]:
    bind = f"127.0.0.1:{port}"
    venv_bin = VENV / "bin"
    more_workers = ["--workers", str(workers)] if workers != 1 else []
    if server == "ours":
        return [str(OURS_BIN), "--app", app.target, "--bind", bind, "--loop", OURS_LOOP[0],
                "--no-access-log", "--log-level", "warning", *more_workers]
    if server == "metrics":
        # --metrics: ours with metrics on (the recorder and the request layer), scraped never;
        # with --single, the single-thread server with metrics on.
        base = server_command("single" if "single" in ASGI_SERVERS else "ours", app, port, workers)
        return base + ["--metrics-bind", "127.0.0.1:0"]
    if server == "single":
        # --single: ours with the sockets on the loop thread, which then runs asyncio's own loop.
        return [str(OURS_BIN), "--app", app.target, "--bind", bind, "--runtime-mode", "single",
                "--loop", "asyncio", "--no-access-log", "--log-level", "warning", *more_workers]
    if server == "wheel":
        # The wheel's console script (--wheel), same flags: the same engine from pip.
        return [str(venv_bin / "rust-asgi-server"), "--app", app.target, "--bind", bind, "--loop",
                OURS_LOOP[0], "--no-access-log", "--log-level", "warning", *more_workers]
    if server == "uvicorn":
        return [str(venv_bin / "uvicorn"), app.target, "--host", "127.0.0.1", "--port", str(port),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                *more_workers]
    if server == "granian":
        return [str(venv_bin / "granian"), "--interface", "asgi", "--loop", "uvloop", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "warning",
                app.target]
    if server == "axum":
        return [str(AXUM_BIN), "--bind", bind]
    if server == "mixed":
        return [str(MIXED_BIN), "--bind", bind, "--app", app.target, "--loop", OURS_LOOP[0]]
    raise ValueError(server)


def server_binary(server: str) -> Path:
    return Path(server_command(server, APPS[0], 1)[0])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Our server (and bench_mixed) import starlette/fastapi from the bench venv through
    # VIRTUAL_ENV; the peers run from the venv's own scripts, so it is harmless for them.
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    env.pop("WEB_CONCURRENCY", None)  # ours and uvicorn take their default --workers from it
    return env


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    server: str
    rep: int
    ok: bool = False
    reason: str = ""
    rps: float = 0.0
    requests: int = 0  # completed in the measured run
    p50_us: float | None = 0.0  # None: the load generator gives no percentiles (h2load)
    p99_us: float | None = 0.0
    mean_us: float = 0.0
    rss_kib: int = 0
    server_cpu_s: float = 0.0  # CPU time (user + system) the server's process tree used in the measured run
    other_load: float = 0.0  # share of the benchmark CPUs busy with anything but the server and load generator
    errors: dict = field(default_factory=dict)
    load: dict = field(default_factory=dict)  # the load generator's own numbers (wrk or h2load)


@dataclass
class Cell:
    family: Family
    app: str
    concurrency: int  # connections
    streams: int  # HTTP/2 streams per connection; 0 for HTTP/1.1
    servers: list[str]
    runs: list[Run] = field(default_factory=list)

    @property
    def key(self) -> str:
        prefix = f"{self.family.key}/" if self.family.key else ""
        return f"{prefix}{self.app}/c{self.concurrency}" + (f"x{self.streams}" if self.streams else "")

    @property
    def label(self) -> str:
        """The cell's row in the summary, e.g. `h2 raw-hello c=50×10`."""
        prefix = f"{self.family.key} " if self.family.key else ""
        return f"{prefix}{self.app} c={self.concurrency}" + (f"×{self.streams}" if self.streams else "")

    def runs_of(self, server: str) -> list[Run]:
        return [run for run in self.runs if run.server == server]

    def failed(self, server: str) -> bool:
        runs = self.runs_of(server)
        return not runs or any(not run.ok for run in runs)

    def median_rps(self, server: str) -> float | None:
        runs = self.runs_of(server)
        if not runs or self.failed(server):
            return None
        return statistics.median(run.rps for run in runs)


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def die(message: str) -> None:
    log(f"bench: error: {message}")
    sys.exit(2)


def run_cmd(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    log(f"$ {shlex.join(cmd)}")
    return subprocess.run(cmd, **kwargs)


def capture(cmd: list[str], cwd: Path = ROOT) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip() if out.returncode == 0 else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def fmt_us(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} µs"
    if value < 100_000:
        return f"{value / 1000:.2f} ms"
    return f"{value / 1000:.0f} ms"


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB" if kib else "?"


# --------------------------------------------------------------------------- setup


def build(args) -> None:
    if args.no_build:
        return
    cmd = ["cargo", "build", "--release", "--bin", "rust-asgi-server", "--example", "bench_axum",
           "--example", "bench_mixed"]
    if run_cmd(cmd, cwd=ROOT).returncode != 0:
        die("cargo build failed (use --no-build to benchmark the binaries already in target/release)")


def snapshot_binaries(into: Path) -> None:
    """Copies the three binaries aside so that a `cargo build` running beside the benchmark
    cannot swap them mid-run: every run of one report uses the same build. (They find
    libpython through an absolute rpath, so the copies run anywhere.)"""
    global OURS_BIN, AXUM_BIN, MIXED_BIN
    copies = []
    for binary in (OURS_BIN, AXUM_BIN, MIXED_BIN):
        if binary.exists():
            copy = into / binary.name
            shutil.copy2(binary, copy)
            copies.append(copy)
        else:
            copies.append(binary)  # stays missing; measure() reports it
    OURS_BIN, AXUM_BIN, MIXED_BIN = copies


def embedded_python() -> str:
    """The interpreter whose libpython the binary embeds: PYO3_PYTHON if set, else ours."""
    return os.environ.get("PYO3_PYTHON") or sys.executable


def venv_python_version() -> str | None:
    cfg = VENV / "pyvenv.cfg"
    if not cfg.exists() or not (VENV / "bin" / "python").exists():
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return ".".join(value.strip().split(".")[:2])
    return None


def setup_venv(args) -> None:
    python = embedded_python()
    wanted = capture([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    have = venv_python_version()
    if have is None or (wanted and have != wanted):
        if have is not None:
            log(f"bench: {VENV} is Python {have}, the server embeds {wanted}: recreating it")
            shutil.rmtree(VENV)
        if run_cmd([python, "-m", "venv", str(VENV)]).returncode != 0:
            die(f"could not create the virtualenv {VENV}")
    if args.no_install:
        return
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if args.upgrade:
        pip.append("--upgrade")
    if run_cmd(pip + PEER_PACKAGES).returncode != 0:
        die("pip install of the peers failed")
    if args.wheel and run_cmd(pip + ["--force-reinstall", "--no-deps", str(args.wheel)]).returncode != 0:
        die(f"pip install of {args.wheel} failed")


def ensure_tool(name: str, package: str) -> str:
    """The path of a load generator, installing its Debian package when missing (as root)."""
    path = shutil.which(name)
    if path:
        return path
    if os.geteuid() != 0:
        die(f"{name} is not installed; install the Debian package: sudo apt-get install -y {package}")
    log(f"bench: {name} not found, installing the Debian package {package}")
    run_cmd(["apt-get", "update"], stdout=subprocess.DEVNULL)
    if run_cmd(["apt-get", "install", "-y", package], stdout=subprocess.DEVNULL).returncode != 0:
        die(f"apt-get install -y {package} failed")
    path = shutil.which(name)
    if not path:
        die(f"{name} still not on PATH after apt-get install")
    return path


def pinning() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and for wrk, and a note for the report."""
    taskset = shutil.which("taskset")
    ncpu = len(os.sched_getaffinity(0))
    if not taskset or ncpu < 2:
        return [], [], "not pinned (needs taskset and at least 2 CPUs)"
    return ([taskset, "-c", SERVER_CPU], [taskset, "-c", WRK_CPU],
            f"server on CPU {SERVER_CPU}, wrk on CPU {WRK_CPU} (taskset)")


# --------------------------------------------------------------------------- processes


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of the server process and its descendants, in clock ticks."""
    total = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def busy_ticks(cpus: list[int] | None) -> int:
    """Non-idle clock ticks of the given CPUs (all when None), steal time included."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if (cpus is None and name == "cpu") or (cpus is not None and name in {f"cpu{c}" for c in cpus}):
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
            total += user + nice + system + irq + softirq + steal
    return total


class CpuMeter:
    """Server CPU time and the load of everything else on the benchmark CPUs over one wrk run."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int, cpus: list[int] | None):
        self.pid, self.cpus = pid, cpus
        self.ncpu = len(cpus) if cpus is not None else (os.cpu_count() or 1)

    def __enter__(self):
        self.t0 = time.monotonic()
        self.busy0, self.server0 = busy_ticks(self.cpus), tree_cpu_ticks(self.pid)
        self.children0 = children_cpu_seconds()
        return self

    def __exit__(self, *exc):
        elapsed = time.monotonic() - self.t0
        busy = (busy_ticks(self.cpus) - self.busy0) / self.TICK
        self.server_s = (tree_cpu_ticks(self.pid) - self.server0) / self.TICK
        wrk_s = children_cpu_seconds() - self.children0  # wrk has been waited for by now
        self.other = max(0.0, busy - self.server_s - wrk_s) / (elapsed * self.ncpu) if elapsed else 0.0


def wait_for_idle(cpus: list[int] | None, limit: float) -> float:
    """Waits (at most `limit` seconds) until the benchmark CPUs are less than 10% busy over half
    a second; returns the busy share last seen."""
    ncpu = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    deadline = time.monotonic() + limit
    while True:
        before = busy_ticks(cpus)
        time.sleep(0.5)
        share = (busy_ticks(cpus) - before) / CpuMeter.TICK / (0.5 * ncpu)
        if share < 0.10 or time.monotonic() >= deadline:
            return share
        time.sleep(1.0)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_status_kib(pid: int, key: str) -> int:
    """Sum of a /proc status memory figure (VmHWM, VmRSS) over a process and its descendants
    (workers of a forking server)."""
    total = 0
    for proc in descendants(pid):
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def peak_rss_kib(pid: int) -> int:
    return tree_status_kib(pid, "VmHWM")


def write_report(report: str, out: Path, tool: str) -> None:
    """Prints the report and writes it to `out`."""
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    log(f"{tool}: report written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


class ServerProcess:
    def __init__(self, server: str, app: App, workers: int, pin: list[str], logdir: Path):
        self._prepare(server, app.key, logdir, lambda port: pin + server_command(server, app, port, workers))

    @classmethod
    def with_command(cls, server: str, key: str, logdir: Path,
                     command: Callable[[int], list[str]]) -> ServerProcess:
        """A server that `command(port)` starts (an example binary, say), run like the others."""
        process = cls.__new__(cls)
        process._prepare(server, key, logdir, command)
        return process

    def _prepare(self, server: str, key: str, logdir: Path, command: Callable[[int], list[str]]) -> None:
        self.server = server
        self.port = free_port()
        self.cmd = command(self.port)
        self.log_path = logdir / f"{key}-{server}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_file = open(self.log_path, "wb")
        self.log_file.write(f"$ {shlex.join(self.cmd)}\n".encode())
        self.log_file.flush()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=server_env(), stdin=subprocess.DEVNULL,
                                     stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> str | None:
        """None when the port accepts connections, else why not."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return f"exited with code {code} before listening"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return None
            time.sleep(0.05)
        return f"not listening after {READY_TIMEOUT:.0f} s"

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = ANSI_ESCAPE.sub("", self.log_path.read_text(errors="replace"))
            # The first line is the command we wrote ourselves.
            return "\n".join(text.splitlines()[1:][-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Leftover workers of a forking server that ignored its parent's exit.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log_file.close()


def check_response(app: App, port: int) -> str | None:
    """One request before the load: the server must answer 200 with the expected body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/octet-stream"} if app.body is not None else {}
        conn.request(app.method, app.path, body=app.body, headers=headers)
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as err:
        return f"check request failed: {err!r}"
    finally:
        conn.close()
    if response.status != 200:
        return f"check request got status {response.status}: {body[:200]!r}"
    if app.expect_body is not None and body.replace(b" ", b"") != app.expect_body.replace(b" ", b""):
        return f"check request got body {body[:200]!r}, expected {app.expect_body!r}"
    if app.expect_len is not None and len(body) != app.expect_len:
        return f"check request got {len(body)} bytes, expected {app.expect_len}"
    return None


@dataclass
class LoadResult:
    """One load generator run, in the terms of the report."""

    requests: int  # completed
    rps: float
    p50_us: float | None  # None when the tool gives no percentiles
    p99_us: float | None
    mean_us: float
    errors: dict[str, int]  # kind -> count, only the non-zero ones
    raw: dict  # the tool's own numbers, kept in the .json


def run_wrk(wrk: str, pin: list[str], script: Path, app: App, port: int, concurrency: int,
            seconds: float) -> LoadResult:
    cmd = pin + [wrk, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", f"--timeout={WRK_TIMEOUT}",
                 "-s", str(script), f"http://127.0.0.1:{port}{app.path}", "--", app.method]
    if app.body is not None:
        cmd.append(app.body.decode())
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw = json.loads(line[len("BENCH_JSON "):])
            break
    else:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")
    return LoadResult(
        requests=raw["requests"],
        rps=raw["requests"] / (raw["duration_us"] / 1e6) if raw["duration_us"] else 0.0,
        p50_us=raw["p50_us"], p99_us=raw["p99_us"], mean_us=raw["lat_mean_us"],
        errors={kind: raw[kind] for kind in ("status", "connect", "read", "write", "timeout") if raw[kind]},
        raw=raw)


H2LOAD_LINES = {
    # name: (pattern, field names); every one must be in h2load's output
    "finished": (r"finished in \S+, ([\d.]+) req/s", ["rps"]),
    "requests": (r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                 r"(\d+) errored, (\d+) timeout", ["total", "started", "done", "succeeded", "failed", "errored",
                                                   "timeout"]),
    "status": (r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", ["2xx", "3xx", "4xx", "5xx"]),
    "traffic": (r"traffic: .*\((\d+)\) data", ["data_bytes"]),
    "time": (r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", ["min_us", "max_us", "mean_us", "sd_us"]),
}


def h2load_us(text: str) -> float:
    """h2load's durations (`320us`, `4.56ms`, `1.20s`) in microseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def run_h2load(h2load: str, pin: list[str], app: App, port: int, *options: str, timeout: float) -> dict:
    """Runs h2load over h2c (prior knowledge: an http:// URL) and returns its summary as numbers."""
    if app.method != "GET" or app.body is not None:
        raise ValueError(f"the h2 cells drive GET requests only, not {app.method} ({app.key})")
    cmd = pin + [h2load, *options, f"http://127.0.0.1:{port}{app.path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    stats = {}
    for name, (pattern, names) in H2LOAD_LINES.items():
        match = re.search(pattern, out.stdout)
        if not match:
            detail = out.stderr.strip() or out.stdout[-500:]
            raise RuntimeError(f"h2load printed no {name} line (exit {out.returncode}): {detail}")
        for key, value in zip(names, match.groups()):
            stats[key] = h2load_us(value) if key.endswith("_us") else float(value) if key == "rps" else int(value)
    return stats


def run_h2load_load(h2load: str, pin: list[str], app: App, port: int, connections: int, streams: int,
                    seconds: float) -> LoadResult:
    raw = run_h2load(h2load, pin, app, port, "-t1", f"-c{connections}", f"-m{streams}",
                     "-D", f"{max(1, round(seconds * 1000))}ms", "-N", WRK_TIMEOUT, timeout=seconds + 60)
    errors = {kind: raw[kind] for kind in ("failed", "errored", "timeout")}
    errors["non2xx"] = raw["3xx"] + raw["4xx"] + raw["5xx"]
    return LoadResult(requests=raw["done"], rps=raw["rps"], p50_us=None, p99_us=None, mean_us=raw["mean_us"],
                      errors={kind: count for kind, count in errors.items() if count}, raw=raw)


def check_h2(h2load: str, pin: list[str], app: App, port: int) -> str | None:
    """Before an h2 run, after the HTTP/1.1 check request: a few requests over one h2c connection
    must all succeed with 2xx and carry the expected body length."""
    n = H2_CHECK_REQUESTS
    stats = run_h2load(h2load, pin, app, port, "-n", str(n), "-c", "1", "-m", "1", timeout=30)
    if stats["succeeded"] != n or stats["2xx"] != n:
        return (f"h2c check: of {n} requests {stats['succeeded']} succeeded, {stats['errored']} errored; "
                f"{stats['2xx']} 2xx, {stats['3xx'] + stats['4xx'] + stats['5xx']} other statuses")
    expected = len(app.expect_body) if app.expect_body is not None else app.expect_len
    if expected is not None and stats["data_bytes"] != n * expected:
        return f"h2c check: {stats['data_bytes']} body bytes in {n} responses, expected {n} x {expected}"
    return None


def run_load(ctx, cell: Cell, app: App, pin: list[str], port: int, seconds: float) -> LoadResult:
    """One warm-up or measured run of the cell's load generator."""
    if cell.family.tool == "h2load":
        return run_h2load_load(ctx.h2load, pin, app, port, cell.concurrency, cell.streams, seconds)
    return run_wrk(ctx.wrk, pin, ctx.script, app, port, cell.concurrency, seconds)


def family_pins(ctx, family: Family) -> tuple[list[str], list[str]]:
    """taskset prefixes for the server and the load generator in this family's cells."""
    if family.pinned:
        return ctx.server_pin, ctx.wrk_pin
    return ctx.shared_pin, ctx.shared_pin


def measure(cell: Cell, server: str, app: App, rep: int, ctx) -> Run:
    run = Run(server, rep, reason="interrupted")
    server_pin, load_pin = family_pins(ctx, cell.family)
    proc = ServerProcess(server, app, cell.family.workers, server_pin, ctx.logdir)
    if not server_binary(server).exists():
        run.reason = f"{server_binary(server).relative_to(ROOT)} missing"
        return run
    if ctx.idle_wait > 0:
        waited = time.monotonic()
        share = wait_for_idle(ctx.cpus, ctx.idle_wait)
        if time.monotonic() - waited > 2:
            log(f"  waited {time.monotonic() - waited:.0f} s for the CPUs to calm down (now {share:.0%} busy)")
    try:
        proc.start()
        problem = proc.wait_ready() or check_response(app, proc.port)
        if not problem and cell.family.tool == "h2load":
            problem = check_h2(ctx.h2load, load_pin, app, proc.port)
        if problem:
            run.reason = problem
            return run
        if ctx.warmup > 0:
            run_load(ctx, cell, app, load_pin, proc.port, ctx.warmup)
        with CpuMeter(proc.proc.pid, ctx.cpus) as meter:
            result = run_load(ctx, cell, app, load_pin, proc.port, ctx.duration)
        run.server_cpu_s, run.other_load = meter.server_s, meter.other
        run.rss_kib = peak_rss_kib(proc.proc.pid)
        run.load = result.raw
        run.requests, run.rps, run.errors = result.requests, result.rps, result.errors
        run.p50_us, run.p99_us, run.mean_us = result.p50_us, result.p99_us, result.mean_us
        if proc.proc.poll() is not None:
            run.reason = f"server exited with code {proc.proc.returncode} during the run"
        elif run.errors:
            run.reason = ", ".join(f"{count} {kind_label(kind)}" for kind, count in run.errors.items())
        elif result.requests == 0:
            run.reason = "no request completed"
        else:
            run.ok = True
        return run
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as err:
        run.reason = str(err)
        return run
    finally:
        proc.stop()
        if not run.ok:
            tail = proc.log_tail()
            last = [line.strip() for line in tail.splitlines() if line.strip()]
            if last and run.reason != "interrupted":
                run.reason += f" (server log: {last[-1][:200]})"
            log(f"  FAILED {server}: {run.reason}" + (f"\n  server log ({proc.log_path}):\n{tail}" if tail else ""))


def kind_label(kind: str) -> str:
    return {"status": "HTTP status >= 400", "connect": "connect errors", "read": "read errors",
            "write": "write errors", "timeout": f"timeouts (> {WRK_TIMEOUT})",
            # h2load (its `failed` includes the errored and timed-out requests)
            "failed": "failed requests", "errored": "errored requests", "non2xx": "non-2xx responses"}[kind]


# --------------------------------------------------------------------------- selection


def build_cells(filters: list[str]) -> list[Cell]:
    """Every cell of every family with the servers that pass every --filter.

    A run is named [FAMILY/]APP/cN[xM]/SERVER (e.g. raw-echo/c50/granian, workers2/raw-hello/c50/ours,
    h2/raw-hello/c50x10/granian); each --filter is a comma separated list of substrings of which one
    must occur in that name, and every --filter given must match (so
    `--filter raw-echo,raw-hello --filter ours,uvicorn`)."""
    apps = {app.key: app for app in APPS}
    cells = []
    for family in FAMILIES:
        for app_key in family.apps:
            for connections, streams in family.loads:
                cell = Cell(family, app_key, connections, streams, [])
                cell.servers = [s for s in family.servers_for(apps[app_key])
                                if all(any(term in f"{cell.key}/{s}" for term in f.split(",") if term)
                                       for f in filters)]
                if cell.servers:
                    cells.append(cell)
    return cells


# --------------------------------------------------------------------------- report


def versions(wrk: str) -> dict[str, str]:
    venv_python = str(VENV / "bin" / "python")
    meta = capture([venv_python, "-c",
                    "import importlib.metadata as m, sys\n"
                    "for p in ('uvicorn','granian','uvloop','httptools','starlette','fastapi','pydantic'):\n"
                    "    try: print(p, m.version(p))\n"
                    "    except Exception: print(p, '?')\n"
                    "print('python', sys.version.split()[0])"])
    found = dict(line.split(" ", 1) for line in meta.splitlines() if " " in line)
    wrk_version = ""
    with contextlib.suppress(OSError):
        wrk_out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        wrk_version = (wrk_out.stdout + wrk_out.stderr).splitlines()[0].split(" [")[0]
    found["wrk"] = wrk_version.removeprefix("wrk ").strip() or "?"
    found["rustc"] = capture(["rustc", "--version"]).removeprefix("rustc ") or "?"
    return found


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    commit = capture(["git", "rev-parse", "--short", "HEAD"]) or "no commit yet"
    if capture(["git", "status", "--porcelain", "--untracked-files=no"]) or commit == "no commit yet":
        commit += " (with uncommitted changes)" if commit != "no commit yet" else " (working tree)"
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem, "kernel": platform.release(),
            "commit": commit}


def render(cells: list[Cell], ctx, started: dt.datetime, elapsed: float) -> str:
    lines = header_lines(cells, ctx, started, elapsed) + ["## Summary (median req/s)", ""]
    lines += summary_lines(cells)
    lines += ["## Cells", ""]
    for cell in cells:
        lines += cell_lines(cell)
    return "\n".join(lines)


def present_families(cells: list[Cell]) -> list[Family]:
    return [family for family in FAMILIES if any(cell.family is family for cell in cells)]


def header_lines(cells: list[Cell], ctx, started: dt.datetime, elapsed: float) -> list[str]:
    mach, vers = machine(), versions(ctx.wrk)
    families = present_families(cells)
    h2load = any(family.tool == "h2load" for family in families)
    unpinned = [family.key for family in families if not family.pinned]
    shared = f"; {', '.join(unpinned)} cells: server and wrk share CPUs {SERVER_CPU} and {WRK_CPU}" \
        if unpinned and ctx.shared_pin else ""
    h2load_version = f"; h2load {tool_version([ctx.h2load, '--version'], 'h2load nghttp2/')}" if h2load else ""
    lines = [
        f"# Benchmark {started:%Y-%m-%d %H:%M}{' (quick)' if ctx.quick else ''}",
        "",
        f"- Command: `{ctx.command}` ({elapsed / 60:.1f} min)",
        f"- Machine: {mach['nproc']} CPUs, {mach['cpu']}, {mach['memory']} RAM, Linux {mach['kernel']}",
        f"- Pinning: {ctx.pin_note}{shared}; load average (1/5/15 min) before {ctx.load_before}, "
        f"after {ctx.load_after} (anything else busy on the machine skews the numbers)",
        f"- Commit: {mach['commit']}; rustc {vers.get('rustc', '?')}",
        f"- Python {vers.get('python', '?')}; uvicorn {vers.get('uvicorn', '?')} (uvloop {vers.get('uvloop', '?')}, "
        f"httptools {vers.get('httptools', '?')}); granian {vers.get('granian', '?')}; "
        f"starlette {vers.get('starlette', '?')}; fastapi {vers.get('fastapi', '?')} "
        f"(pydantic {vers.get('pydantic', '?')}); wrk {vers.get('wrk', '?')}{h2load_version}",
        f"- Each run: fresh server process, {ctx.warmup:g} s warm-up, {ctx.duration:g} s measured with "
        f"`wrk -t1 -cN --timeout {WRK_TIMEOUT}`{' (h2load in the `h2` cells)' if h2load else ''}; "
        f"{ctx.reps} repetition(s), servers interleaved within a cell. "
        f"One worker process per server unless a cell says otherwise; rust-asgi-server and bench_mixed run "
        f"with `--loop {ctx.ours_loop}`, uvicorn and granian with `--loop uvloop` (uvicorn also `--http httptools`).",
    ]
    lines += [f"- `{family.key}` cells: {family.note}" for family in families if family.note]
    lines += [
        "- req/s: median over repetitions (min–max); p50/p99: medians of each run's wrk latency percentiles; "
        + ("mean (h2 cells): median of h2load's mean request time; " if h2load else "") +
        "CPU/req: the server's CPU time (user + system, whole process tree) per request, median; "
        "peak RSS: the largest VmHWM (summed over the server's process tree) seen in any repetition; "
        "other load: the largest share of the two benchmark CPUs that anything but the server and the load "
        "generator used during a measured run (should be ~0%; more means the numbers are disturbed). "
        "A cell is FAILED when any run had a socket error, a timeout, an HTTP status >= 400 (h2load: any "
        "failed, errored or timed-out request, or any status but 2xx), a wrong answer to the check request, "
        "or the server died.",
        "",
    ]
    return lines


def tool_version(cmd: list[str], prefix: str) -> str:
    out = capture(cmd)
    return out.splitlines()[0].removeprefix(prefix) if out else "?"


def summary_lines(cells: list[Cell]) -> list[str]:
    apps = {app.key: app for app in APPS}
    asgi_cells = [cell for cell in cells if not apps[cell.app].rust_route]
    rust_cells = [cell for cell in cells if apps[cell.app].rust_route]
    lines = []
    if asgi_cells:
        ratios = [("ours", "uvicorn"), ("ours", "granian")]
        if "wheel" in ASGI_SERVERS:
            ratios.append(("wheel", "ours"))
        if "metrics" in ASGI_SERVERS:
            ratios.append(("metrics", "single" if "single" in ASGI_SERVERS else "ours"))
        if "single" in ASGI_SERVERS:
            ratios += [("single", "uvicorn"), ("single", "granian"), ("single", "ours")]
        lines += ["| cell | " + " | ".join(ASGI_SERVERS) + " | "
                  + " | ".join(f"{num}/{den}" for num, den in ratios) + " |",
                  "|---|" + "--:|" * (len(ASGI_SERVERS) + len(ratios))]
        for cell in asgi_cells:
            lines.append("| " + " | ".join(
                [cell.label]
                + [summary_value(cell, server) for server in ASGI_SERVERS]
                + [ratio(cell, num, den) for num, den in ratios]) + " |")
        lines.append("")
    if rust_cells:
        lines += ["| cell | mixed (ours) | bare axum | mixed/axum |", "|---|--:|--:|--:|"]
        for cell in rust_cells:
            lines.append("| " + " | ".join(
                [cell.label]
                + [summary_value(cell, server) for server in RUST_SERVERS]
                + [ratio(cell, "mixed", "axum")]) + " |")
        lines.append("")
    lines += axum_share_lines(asgi_cells, rust_cells)
    return lines


def axum_share_lines(asgi_cells: list[Cell], rust_cells: list[Cell]) -> list[str]:
    """Raw hello served through Python ÷ the same answer from bare axum, at the same concurrency:
    how much of a Rust server's speed the bridge keeps (issue #17)."""
    axum = {cell.concurrency: cell.median_rps("axum") for cell in rust_cells
            if not cell.family.key and "axum" in cell.servers}
    servers = [server for server in ("ours", "single") if server in ASGI_SERVERS]
    rows = []
    for cell in asgi_cells:
        bare = axum.get(cell.concurrency)
        if cell.app != "raw-hello" or cell.family.key or not bare:
            continue
        shares = []
        for server in servers:
            rps = cell.median_rps(server) if server in cell.servers else None
            shares.append(f"{rps / bare:.2f}×" if rps else "")
        rows.append(f"| {cell.label} | {fmt_rps(bare)} | " + " | ".join(shares) + " |")
    if not rows:
        return []
    return (["| cell | bare axum (rust-route) | " + " | ".join(f"{server}/axum" for server in servers) + " |",
             "|---|--:|" + "--:|" * len(servers)] + rows + [""])


def cell_lines(cell: Cell) -> list[str]:
    app = next(app for app in APPS if app.key == cell.app)
    family = cell.family
    title = f"{app.title}, {family.title}" if family.title else app.title
    load = f"c={cell.concurrency}"
    if cell.streams:
        load += f" × {cell.streams} stream{'s' if cell.streams != 1 else ''} per connection"
    latency = ["p50", "p99"] + (["mean"] if family.tool == "h2load" else [])
    columns = ["server", "req/s median", "min–max", *latency, "CPU/req", "peak RSS", "other load", "errors"]
    lines = [f"### {title} — {load}", "",
             f"`{app.method} {app.path}`" + (f" on `{app.target}`" if not app.rust_route else
                                             f" (bench_mixed falls back to `{app.target}`)")
             + (f"; {family.note}" if family.note else ""), "",
             "| " + " | ".join(columns) + " |",
             "|---|" + "--:|" * (len(columns) - 2) + "---|"]
    for server in cell.servers:
        runs = cell.runs_of(server)
        label = SERVER_LABELS[server]
        good = [run for run in runs if run.load]
        if not good:
            reason = runs[0].reason if runs else "not run"
            lines.append("| " + " | ".join([label, "FAILED"] + [""] * (len(columns) - 3) + [escape(reason)]) + " |")
            continue
        rps = [run.rps for run in good]
        median = fmt_rps(statistics.median(rps))
        if cell.failed(server):
            median = f"FAILED ({median})"
        errors = "; ".join(f"rep {run.rep + 1}: {escape(run.reason)}" for run in runs if not run.ok) or "0"
        latencies = [median_us([run.p50_us for run in good]), median_us([run.p99_us for run in good])]
        if family.tool == "h2load":
            latencies.append(median_us([run.mean_us for run in good]))
        lines.append("| " + " | ".join([
            label, median, f"{fmt_rps(min(rps))}–{fmt_rps(max(rps))}", *latencies,
            fmt_us(statistics.median(run.server_cpu_s / max(run.requests, 1) * 1e6 for run in good)),
            fmt_mib(max(run.rss_kib for run in good)),
            f"{max(run.other_load for run in good):.0%}", errors]) + " |")
    ratios = [f"{num}/{den} = {ratio(cell, num, den)}" for num, den in RATIOS
              if num in cell.servers and den in cell.servers]
    if ratios:
        lines += ["", "Ratio of median req/s: " + ", ".join(ratios)]
    lines.append("")
    return lines


def median_us(values: list[float | None]) -> str:
    """The median as a duration, or — when the load generator did not measure it."""
    return "—" if any(value is None for value in values) else fmt_us(statistics.median(values))


def not_served(cell: Cell, server: str) -> bool:
    """The server is not part of this cell's family at all (uvicorn in the h2 cells), as opposed to
    left out by --filter."""
    app = next(app for app in APPS if app.key == cell.app)
    return server not in cell.family.servers_for(app)


def summary_value(cell: Cell, server: str) -> str:
    if server not in cell.servers:
        return "—" if not_served(cell, server) else ""
    value = cell.median_rps(server)
    return "FAILED" if value is None else fmt_rps(value)


def ratio(cell: Cell, num: str, den: str) -> str:
    if num not in cell.servers or den not in cell.servers:
        return "—" if not_served(cell, num) or not_served(cell, den) else ""
    a, b = cell.median_rps(num), cell.median_rps(den)
    if a is None or b is None or not b:
        return "n/a"
    return f"{a / b:.2f}×"


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- main


class Context:
    pass


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition, 3 s runs, 1 s warm-up")
    parser.add_argument("--filter", action="append", default=[], metavar="SUBSTR",
                        help="run only APP/cN/SERVER names containing SUBSTR (comma = or; repeat = and), "
                             "e.g. raw-echo, c256, granian, fastapi/c50/ours")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10, quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run (default 2, quick 1)")
    parser.add_argument("--reps", type=int, help="repetitions per cell (default 3, quick 1)")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    parser.add_argument("--no-install", action="store_true", help="do not pip install into bench/.venv")
    parser.add_argument("--upgrade", action="store_true", help="pip install --upgrade the peers")
    parser.add_argument("--ours-loop", choices=["uvloop", "asyncio", "auto"], default="uvloop",
                        help="--loop for rust-asgi-server (default uvloop, like the peers)")
    parser.add_argument("--idle-wait", type=float, default=30.0, metavar="SECONDS",
                        help="before each run, wait up to this long for the benchmark CPUs to be idle "
                             "(default 30; 0 disables)")
    parser.add_argument("--metrics", action="store_true",
                        help="also measure ours with --metrics-bind (server `metrics`; with --single, the single-thread server), for the cost of metrics")
    parser.add_argument("--single", action="store_true",
                        help="also measure ours with --runtime-mode single (server `single`), beside the split default")
    parser.add_argument("--list", action="store_true", help="print the selected runs and exit")
    parser.add_argument("--wheel", type=Path, metavar="WHEEL",
                        help="also measure this wheel's rust-asgi-server command (installed into "
                             "bench/.venv) as server `wheel`, beside the binary")
    parser.add_argument("--output", type=Path, help="report path (default bench/results/DATE[-quick].md)")
    args = parser.parse_args()

    OURS_LOOP[0] = args.ours_loop
    ctx = Context()
    ctx.ours_loop = args.ours_loop
    ctx.idle_wait = args.idle_wait
    ctx.quick = args.quick
    ctx.duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    ctx.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    ctx.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    ctx.command = shlex.join(["python3", "bench/run.py"] + sys.argv[1:])

    if args.wheel:
        ASGI_SERVERS.append("wheel")
        RATIOS.insert(0, ("wheel", "ours"))
    if args.metrics:
        ASGI_SERVERS.append("metrics")
        RATIOS.insert(0, ("metrics", "ours"))
    if args.single:
        ASGI_SERVERS.append("single")
        if args.metrics:
            RATIOS.insert(0, ("metrics", "single"))
        RATIOS[0:0] = [("single", "uvicorn"), ("single", "granian"), ("single", "ours")]
        FAMILIES[2] = dataclasses.replace(FAMILIES[2], servers=("ours", "single", "granian"))
    cells = build_cells(args.filter)
    if not cells:
        die(f"--filter {args.filter} selects nothing; names look like raw-echo/c50/granian")
    total_runs = sum(len(cell.servers) for cell in cells) * ctx.reps
    if args.list:
        for cell in cells:
            print(cell.key, " ".join(cell.servers))
        print(f"{total_runs} runs")
        return 0

    build(args)
    setup_venv(args)
    ctx.wrk = ensure_tool("wrk", "wrk")
    ctx.h2load = ensure_tool("h2load", "nghttp2-client") if any(c.family.tool == "h2load" for c in cells) else None
    ctx.server_pin, ctx.wrk_pin, ctx.pin_note = pinning()
    # The cells of an unpinned family (several workers) put the server and wrk on both benchmark CPUs.
    ctx.shared_pin = ctx.server_pin[:-1] + [f"{SERVER_CPU},{WRK_CPU}"] if ctx.server_pin else []
    ctx.cpus = [int(SERVER_CPU), int(WRK_CPU)] if ctx.server_pin else None

    estimate = total_runs * (ctx.duration + ctx.warmup + 1.5)
    log(f"bench: {len(cells)} cells, {total_runs} runs, about {estimate / 60:.0f} min")
    started = dt.datetime.now()
    ctx.load_before = loadavg()
    with contextlib.suppress(ValueError):
        if float(ctx.load_before.split()[0]) > 0.5:
            log(f"bench: warning: load average {ctx.load_before}: something else is using the CPUs, "
                "the numbers will be noisy")
    # A SIGTERM (e.g. from a CI timeout) unwinds like Ctrl-C, so the running server is stopped.
    signal.signal(signal.SIGTERM, interrupted)
    t0 = time.monotonic()
    apps = {app.key: app for app in APPS}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx.logdir = Path(tmp)
        snapshot_binaries(Path(tmp))
        ctx.script = Path(tmp) / "bench.lua"
        ctx.script.write_text(WRK_LUA)
        done = 0
        for cell in cells:
            app = apps[cell.app]
            for rep in range(ctx.reps):
                for server in cell.servers:
                    done += 1
                    run = measure(cell, server, app, rep, ctx)
                    cell.runs.append(run)
                    status = (f"{fmt_rps(run.rps)} req/s, p50 {fmt_us(run.p50_us)}, p99 {fmt_us(run.p99_us)}, "
                              f"mean {fmt_us(run.mean_us)}, RSS {fmt_mib(run.rss_kib)}") if run.ok \
                        else f"FAILED: {run.reason}"
                    log(f"[{done}/{total_runs}] {cell.key} {server} rep {rep + 1}: {status}")
    elapsed = time.monotonic() - t0
    ctx.load_after = loadavg()

    report = render(cells, ctx, started, elapsed)
    print(report)
    if args.output:
        out = args.output
    else:
        suffix = ("-quick" if ctx.quick else "") + ("-filtered" if args.filter else "")
        out = RESULTS / f"{started:%Y-%m-%d}{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    raw = {"started": started.isoformat(timespec="seconds"), "command": ctx.command,
           "duration": ctx.duration, "warmup": ctx.warmup, "reps": ctx.reps,
           "cells": [{"family": c.family.key, "app": c.app, "concurrency": c.concurrency, "streams": c.streams,
                      "workers": c.family.workers, "tool": c.family.tool, "runs": [asdict(r) for r in c.runs]}
                     for c in cells]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    log(f"bench: report written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("bench: interrupted; no report written")
        sys.exit(130)
