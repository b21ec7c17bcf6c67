#!/usr/bin/env python3
"""Websocket round trips: an echo app (pyapp/ws_apps.py `echo`) behind ours, uvicorn and
granian, compression off and on, in the same run.

    python3 bench/websocket.py [--quick] [--baseline BIN] [--connections N ...] [--filter SUBSTR]

Each run starts a fresh server pinned to CPU 0 (as bench/run.py does); the client, pinned to
CPU 1, is this script in `--client` mode: N websockets client connections (the `websockets`
library), each sending a 100-byte text message and awaiting its echo, over and over, for the
run's duration. Reported per server and cell: round trips per second, and the server's CPU
time per round trip (utime + stime of its process tree), which does not depend on how fast
the Python client is. `--baseline BIN` adds "ours-baseline": the same flags with another
build of the binary (an earlier commit's), to compare a change with what it replaces.
Compression off: the client offers no extension. On: it offers permessage-deflate (the
`websockets` default) and each message is a compressible 1 KiB JSON text.
The report is printed and written to bench/results/YYYY-MM-DD-websocket[-quick].md. Uses
bench/.venv and the release binary as bench/run.py sets them up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: servers, pinning, CPU meters)

SERVERS = ["ours", "ours-baseline", "uvicorn", "granian"]
APP = bench.App("ws-echo", "", "pyapp.ws_apps:echo", "GET", "/", None)
SMALL_TEXT = "x" * 100
COMPRESSIBLE_TEXT = json.dumps([{"id": i, "name": f"user-{i}", "active": i % 2 == 0} for i in range(24)])[:1024]


@dataclass(frozen=True)
class Cell:
    connections: int
    compression: bool

    @property
    def key(self) -> str:
        return f"c{self.connections}-{'deflate' if self.compression else 'plain'}"


@dataclass
class Sample:
    round_trips: int
    seconds: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.server_cpu_s / self.round_trips * 1e6


@dataclass
class Results:
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)


async def client(port: int, connections: int, compression: bool, seconds: float) -> None:
    """The client mode: prints the number of round trips completed in `seconds`."""
    from websockets.asyncio.client import connect

    message = COMPRESSIBLE_TEXT if compression else SMALL_TEXT
    deadline = time.monotonic() + seconds
    counts = [0] * connections

    async def one(index: int) -> None:
        async with connect(f"ws://127.0.0.1:{port}/", compression="deflate" if compression else None,
                           max_size=None) as ws:
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions")
            if compression and not agreed:
                raise SystemExit("compression was not agreed")
            while time.monotonic() < deadline:
                await ws.send(message)
                if await ws.recv() != message:
                    raise SystemExit("wrong echo")
                counts[index] += 1

    await asyncio.gather(*(one(i) for i in range(connections)))
    print(sum(counts))


def server_process(server: str, baseline: Path | None, pin: list[str], logdir: Path) -> bench.ServerProcess:
    if server != "ours-baseline":
        return bench.ServerProcess(server, APP, 1, pin, logdir)

    def command(port: int) -> list[str]:
        ours = bench.server_command("ours", APP, port)
        return pin + [str(baseline), *ours[1:]]

    return bench.ServerProcess.with_command(server, APP.key, logdir, command)


def measure(server: str, cell: Cell, seconds: float, baseline: Path | None, pins, logdir: Path) -> Sample:
    server_pin, client_pin, _ = pins
    process = server_process(server, baseline, server_pin, logdir)
    process.start()
    try:
        problem = process.wait_ready()
        if problem:
            raise RuntimeError(f"{server} {problem}\n{process.log_tail()}")
        command = [*client_pin, str(bench.VENV / "bin" / "python"), __file__, "--client", str(process.port),
                   str(cell.connections), "1" if cell.compression else "0", str(seconds)]
        cpu_before = bench.tree_cpu_ticks(process.proc.pid)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
        elapsed = time.monotonic() - started
        cpu_after = bench.tree_cpu_ticks(process.proc.pid)
        if "compression was not agreed" in done.stderr:
            raise RuntimeError(f"{server} does not agree to permessage-deflate")
        if done.returncode != 0:
            raise RuntimeError(f"{server}: client exited {done.returncode}: {done.stderr.strip()[-300:]}"
                               f"\n{process.log_tail()}")
        return Sample(int(done.stdout.split()[-1]), elapsed, (cpu_after - cpu_before) / bench.CpuMeter.TICK)
    finally:
        process.stop()


def render(cells: list[Cell], servers: list[str], results: Results, seconds: float, reps: int, pins,
           started: dt.datetime) -> str:
    machine = bench.machine()
    lines = [f"# Websocket round trips, {started:%Y-%m-%d %H:%M} UTC", "",
             f"{seconds:.0f} s per run, {reps} run(s) per server and cell, medians; {pins[2]}; client: "
             f"`websockets` (Python), 100 B text (plain) or 1 KiB JSON text (deflate). "
             f"Commit {machine['commit']}, CPU {machine['cpu']}.", "",
             "| cell | server | round trips/s | server CPU µs/round trip | runs (rt/s) |", "|---|---|--:|--:|---|"]
    for cell in cells:
        for server in servers:
            samples = results.samples.get((cell.key, server), [])
            if not samples:
                lines.append(f"| {cell.key} | {server} | — | — | {results.errors.get((cell.key, server), 'not run')} |")
                continue
            rate = statistics.median(s.rate for s in samples)
            cpu = statistics.median(s.cpu_us for s in samples)
            runs = ", ".join(f"{s.rate:.0f}" for s in samples)
            lines.append(f"| {cell.key} | {server} | {rate:.0f} | {cpu:.1f} | {runs} |")
    lines += ["", "Ratios (ours ÷ other: round trips/s; other's CPU per round trip ÷ ours, > 1 is better for ours):", ""]
    for cell in cells:
        ours = results.samples.get((cell.key, "ours"))
        for other in servers[1:]:
            theirs = results.samples.get((cell.key, other))
            if not ours or not theirs:
                continue
            speed = statistics.median(s.rate for s in ours) / statistics.median(s.rate for s in theirs)
            cpu = statistics.median(s.cpu_us for s in theirs) / statistics.median(s.cpu_us for s in ours)
            lines.append(f"- {cell.key}: {speed:.2f}× {other}'s round trips/s, CPU per round trip {cpu:.2f}×")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, connections, compression, seconds = sys.argv[2:6]
        asyncio.run(client(int(port), int(connections), compression == "1", float(seconds)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s runs, 1 run per server and cell")
    parser.add_argument("--seconds", type=float, help="duration of a run (default 10, quick 5)")
    parser.add_argument("--reps", type=int, help="runs per server and cell (default 3, quick 1)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--baseline", type=Path, help="another build of our binary, run as ours-baseline")
    parser.add_argument("--ours", type=Path, help="our binary (default target/release/rust-asgi-server)")
    parser.add_argument("--filter", action="append", default=[], metavar="SUBSTR",
                        help="keep cells or servers whose name contains it (c1, plain, deflate, ours, …)")
    parser.add_argument("--output", type=Path, help="report path")
    args = parser.parse_args()
    seconds = args.seconds or (5 if args.quick else 10)
    reps = args.reps or (1 if args.quick else 3)
    if args.ours:
        bench.OURS_BIN = args.ours.resolve()
    if not bench.OURS_BIN.exists() or not (bench.VENV / "bin" / "uvicorn").exists():
        bench.die("needs our binary and bench/.venv: run bench/run.py once, or pass --ours")
    keep = lambda name: not args.filter or any(f in name for f in args.filter)  # noqa: E731
    cells = [Cell(c, z) for z in (False, True) for c in args.connections]
    cells = [c for c in cells if keep(c.key)] or cells
    servers = [s for s in SERVERS if (s != "ours-baseline" or args.baseline) and keep(s)]
    servers = servers or [s for s in SERVERS if s != "ours-baseline" or args.baseline]
    pins = bench.pinning()
    started = dt.datetime.now(dt.timezone.utc)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="websocket-") as logdir:
        for cell in cells:
            for rep in range(reps):
                # Servers take turns within a repetition, so drift hits them alike.
                for server in servers:
                    if (cell.key, server) in results.errors:
                        continue
                    bench.log(f"{cell.key} {server} run {rep + 1}/{reps}")
                    try:
                        sample = measure(server, cell, seconds, args.baseline, pins, Path(logdir))
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        results.errors[(cell.key, server)] = str(err).splitlines()[0]
                        bench.log(f"  failed: {err}")
                        continue
                    results.samples.setdefault((cell.key, server), []).append(sample)
                    bench.log(f"  {sample.rate:.0f} round trips/s, server CPU {sample.cpu_us:.1f} µs/round trip")
                    time.sleep(0.5)
    report = render(cells, servers, results, seconds, reps, pins, started)
    out = args.output or bench.RESULTS / f"{started:%Y-%m-%d}-websocket{'-quick' if args.quick else ''}.md"
    bench.write_report(report, out, "bench/websocket.py")


if __name__ == "__main__":
    main()
