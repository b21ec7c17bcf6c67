#!/usr/bin/env python3
"""Large bodies: a 1 GiB streamed download and a 1 GiB chunked upload, ours against uvicorn
and granian, in the same run.

    python3 bench/large_bodies.py [--quick] [--size-mib N] [--reps N] [--filter SUBSTR]

Each run starts a fresh server pinned to CPU 0 (as bench/run.py does) with a raw ASGI app
(pyapp/bench_raw.py): `large_download` streams the body in 64 KiB `more_body` chunks,
`large_upload` reads the body as it arrives and answers its length. curl, pinned to CPU 1,
is the client: it downloads to /dev/null, or uploads from a pipe (`curl -T -`, so the body
is chunked). Reported per server and cell: throughput (body bytes / curl's total time), the
server's CPU time per GiB (utime + stime of its process tree), and its peak RSS, so a server
that buffers the body shows it. Servers take turns within a cell. The report is printed and
written to bench/results/YYYY-MM-DD-large-bodies[-quick].md. Uses bench/.venv and the
release binary as bench/run.py sets them up (run that once first, or pass --build).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: servers, pinning, CPU and memory meters)

GIB = 1024**3
# "single": ours with --runtime-mode single (bench/run.py's server of that name); "ours" is
# the split mode, as bench/run.py runs it.
SERVERS = ["ours", "single", "uvicorn", "granian"]
CLIENT_TIMEOUT = 300


@dataclass(frozen=True)
class Direction:
    key: str
    title: str
    app: bench.App


DIRECTIONS = [
    Direction("download", "streamed download (64 KiB chunks, content-length)",
              bench.App("large-download", "", "pyapp.bench_raw:large_download", "GET", "/", None)),
    Direction("upload", "chunked upload, read as it arrives",
              bench.App("large-upload", "", "pyapp.bench_raw:large_upload", "POST", "/", None)),
]


@dataclass
class Sample:
    seconds: float
    server_cpu_s: float
    peak_rss_kib: int


@dataclass
class Cell:
    direction: Direction
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def client_command(direction: Direction, port: int, size: int, pin: list[str]) -> list[str]:
    url = f"http://127.0.0.1:{port}/?size={size}"
    write_out = ["-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    if direction.key == "download":
        curl = ["curl", "-s", "-o", "/dev/null", *write_out, url]
        return pin + curl
    # The body (the count the app read) comes first on stdout, then the -w line.
    write_out = ["-w", "\\n%{http_code} %{size_download} %{size_upload} %{time_total}"]
    curl = ["curl", "-s", "-X", "POST", "-T", "-", *write_out, url]
    feed = f"head -c {size} /dev/zero | {shlex.join(curl)}"
    return pin + ["sh", "-c", feed]


def measure(direction: Direction, server: str, size: int, pins, logdir: Path) -> Sample:
    server_pin, client_pin, _ = pins
    process = bench.ServerProcess(server, direction.app, 1, server_pin, logdir)
    process.start()
    try:
        problem = process.wait_ready()
        if problem:
            raise RuntimeError(f"{server} {problem}\n{process.log_tail()}")
        cpu_before = bench.tree_cpu_ticks(process.proc.pid)
        done = subprocess.run(client_command(direction, process.port, size, client_pin),
                              capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        cpu_after = bench.tree_cpu_ticks(process.proc.pid)
        *body, stats = done.stdout.splitlines() or [""]
        fields = stats.split()
        if done.returncode != 0 or len(fields) != 4 or fields[0] != "200":
            raise RuntimeError(f"{server}: curl exited {done.returncode}: {done.stdout} {done.stderr}"
                               f"\n{process.log_tail()}")
        # Downloads: what curl received; uploads: what the app says it read (curl's own
        # count includes the chunked framing).
        moved = int(fields[1]) if direction.key == "download" else int("".join(body) or -1)
        expected = size - size % (64 * 1024) if direction.key == "download" else size
        if moved != expected:
            raise RuntimeError(f"{server}: moved {moved} bytes, expected {expected}")
        return Sample(float(fields[3]), (cpu_after - cpu_before) / bench.CpuMeter.TICK,
                      bench.peak_rss_kib(process.proc.pid))
    finally:
        process.stop()


def gbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e9:.2f}"


def render(cells: list[Cell], size: int, reps: int, pins, started: dt.datetime) -> str:
    lines = [f"# Large bodies, {started:%Y-%m-%d %H:%M} UTC", "",
             f"{size // (1024 * 1024)} MiB per run, {reps} run(s) per server and cell, medians; "
             f"{pins[2].replace('wrk', 'curl')}. Commit {bench.machine()['commit']}, CPU {bench.machine()['cpu']}.", "",
             "| cell | server | GB/s | server CPU s/GiB | peak RSS | runs |", "|---|---|--:|--:|--:|---|"]
    for cell in cells:
        for server in SERVERS:
            samples = cell.samples.get(server, [])
            if not samples:
                lines.append(f"| {cell.direction.key} | {server} | — | — | — | "
                             f"{cell.errors.get(server, 'not run')} |")
                continue
            seconds = statistics.median(s.seconds for s in samples)
            cpu = statistics.median(s.server_cpu_s for s in samples) * GIB / size
            rss = max(s.peak_rss_kib for s in samples)
            runs = ", ".join(f"{gbps(size, s.seconds)}" for s in samples)
            lines.append(f"| {cell.direction.key} | {server} | {gbps(size, seconds)} | {cpu:.2f} | "
                         f"{bench.fmt_mib(rss)} | {runs} |")
    lines += ["", "Ratios (server ÷ peer; throughput, and peer CPU ÷ server's so that > 1 is better for the "
              "first; `single` is ours with --runtime-mode single, `ours` the split mode):", ""]
    pairs = [("ours", "uvicorn"), ("ours", "granian"), ("single", "uvicorn"), ("single", "granian"),
             ("single", "ours")]
    for cell in cells:
        for server, peer in pairs:
            mine, theirs = cell.samples.get(server), cell.samples.get(peer)
            if not mine or not theirs:
                continue
            speed = statistics.median(s.seconds for s in theirs) / statistics.median(s.seconds for s in mine)
            cpu = statistics.median(s.server_cpu_s for s in theirs) / statistics.median(
                s.server_cpu_s for s in mine)
            lines.append(f"- {cell.direction.key}, {server}: {speed:.2f}× {peer}'s throughput, "
                         f"{cpu:.2f}× less CPU")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 1 run per server and cell")
    parser.add_argument("--size-mib", type=int, help="body size (default 1024, quick 256)")
    parser.add_argument("--reps", type=int, help="runs per server and cell (default 3, quick 1)")
    parser.add_argument("--filter", action="append", default=[], metavar="SUBSTR",
                        help="keep cells or servers whose name contains it (download, upload, ours, …)")
    parser.add_argument("--build", action="store_true", help="build the release binary first")
    parser.add_argument("--output", type=Path, help="report path")
    args = parser.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * 1024 * 1024
    reps = args.reps or (1 if args.quick else 3)
    if args.build:
        bench.run_cmd(["cargo", "build", "--release", "--bin", "rust-asgi-server"], cwd=bench.ROOT)
    if not bench.OURS_BIN.exists() or not (bench.VENV / "bin" / "uvicorn").exists():
        bench.die("needs target/release/rust-asgi-server and bench/.venv: run bench/run.py once, or --build")
    keep = lambda name: not args.filter or any(f in name for f in args.filter)  # noqa: E731
    pins = bench.pinning()
    started = dt.datetime.now(dt.timezone.utc)
    cells = [Cell(d) for d in DIRECTIONS if keep(d.key) or all(not keep(d.key) and keep(s) for s in SERVERS)]
    servers = [s for s in SERVERS if keep(s) or not any(keep(s2) for s2 in SERVERS)]
    with tempfile.TemporaryDirectory(prefix="large-bodies-") as logdir:
        for cell in cells:
            for rep in range(reps):
                for server in servers:
                    if server in cell.errors:
                        continue
                    bench.log(f"{cell.direction.key} {server} run {rep + 1}/{reps}")
                    try:
                        sample = measure(cell.direction, server, size, pins, Path(logdir))
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        cell.errors[server] = str(err).splitlines()[0]
                        bench.log(f"  failed: {err}")
                        continue
                    cell.samples.setdefault(server, []).append(sample)
                    bench.log(f"  {gbps(size, sample.seconds)} GB/s, server CPU {sample.server_cpu_s:.2f} s, "
                              f"peak RSS {bench.fmt_mib(sample.peak_rss_kib)}")
                    time.sleep(0.5)
    report = render(cells, size, reps, pins, started)
    out = args.output or bench.RESULTS / f"{started:%Y-%m-%d}-large-bodies{'-quick' if args.quick else ''}.md"
    bench.write_report(report, out, "bench/large_bodies.py")


if __name__ == "__main__":
    main()
