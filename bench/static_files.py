#!/usr/bin/env python3
"""Static files: one 50 KB file served by ours (`--static-path-route/--static-path-mount`,
tower-http's ServeDir in Rust), granian (its own `--static-path-*`) and uvicorn with
Starlette's `StaticFiles` (pyapp/bench_static.py).

    python3 bench/static_files.py [--quick] [--seconds S] [--connections N ...] [--bin PATH]

Each server is started fresh per cell, pinned to CPU 0, with wrk on CPU 1 (bench/run.py's
pinning and wrk script); a check request must return the file before the load. Prints req/s,
p50/p99 and the ratios ours ÷ peer per connection count, and writes the report to
bench/results/YYYY-MM-DD-static-files[-quick].md. Uses bench/.venv and the release binary as
bench/run.py sets them up (or --bin for another build).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: servers, pinning, wrk)

SERVERS = ["ours", "granian", "uvicorn"]
FILE_SIZE = 50 * 1000
ROUTE = "/static"
FILE_NAME = "page.js"
# For the Python servers: the Starlette app; ours and granian serve the directory themselves
# and get the hello app for everything else.
STARLETTE = bench.App("static-50kb", "50 KB static file", "pyapp.bench_static:app", "GET",
                      f"{ROUTE}/{FILE_NAME}", None, expect_len=FILE_SIZE)
HELLO = bench.App("static-50kb", "50 KB static file", "pyapp.bench_raw:hello", "GET",
                  f"{ROUTE}/{FILE_NAME}", None, expect_len=FILE_SIZE)


def command(server: str, port: int, directory: Path, ours_bin: Path) -> list[str]:
    static = ["--static-path-route", ROUTE, "--static-path-mount", str(directory)]
    if server == "ours":
        cmd = bench.server_command("ours", HELLO, port)
        return [str(ours_bin), *cmd[1:], *static]
    if server == "granian":
        cmd = bench.server_command("granian", HELLO, port)
        return [*cmd[:-1], *static, cmd[-1]]  # the app target stays last
    return bench.server_command("uvicorn", STARLETTE, port)


def measure(server: str, connections: int, seconds: float, directory: Path, ours_bin: Path,
            ctx, logdir: Path) -> bench.LoadResult:
    app = HELLO if server != "uvicorn" else STARLETTE
    process = bench.ServerProcess(server, app, 1, ctx.server_pin, logdir)
    process.cmd = ctx.server_pin + command(server, process.port, directory, ours_bin)
    os.environ["BENCH_STATIC_DIR"] = str(directory)  # read by the Starlette app
    process.start()
    try:
        problem = process.wait_ready() or bench.check_response(app, process.port)
        if problem:
            raise RuntimeError(f"{server}: {problem}\n{process.log_tail()}")
        bench.run_wrk(ctx.wrk, ctx.wrk_pin, ctx.script, app, process.port, connections, 1)  # warm-up
        return bench.run_wrk(ctx.wrk, ctx.wrk_pin, ctx.script, app, process.port, connections, seconds)
    finally:
        process.stop()


def render(results: dict, connections: list[int], seconds: float, pin_note: str,
           started: dt.datetime) -> str:
    machine = bench.machine()
    lines = [f"# Static files, {started:%Y-%m-%d %H:%M} UTC", "",
             f"One {FILE_SIZE // 1000} KB file, GET over HTTP/1.1 keep-alive, {seconds:g} s per run; "
             f"{pin_note}. Commit {machine['commit']}, CPU {machine['cpu']}.", "",
             "| connections | server | req/s | p50 | p99 | errors |", "|--:|---|--:|--:|--:|---|"]
    for conns in connections:
        for server in SERVERS:
            result = results.get((server, conns))
            if isinstance(result, str) or result is None:
                lines.append(f"| {conns} | {server} | — | — | — | {result or 'not run'} |")
                continue
            errors = ", ".join(f"{k} {v}" for k, v in result.errors.items()) or "0"
            lines.append(f"| {conns} | {server} | {bench.fmt_rps(result.rps)} | {bench.fmt_us(result.p50_us)} | "
                         f"{bench.fmt_us(result.p99_us)} | {errors} |")
    lines += ["", "Ratios (ours ÷ peer, req/s):", ""]
    for conns in connections:
        ours = results.get(("ours", conns))
        for peer in SERVERS[1:]:
            theirs = results.get((peer, conns))
            if isinstance(ours, bench.LoadResult) and isinstance(theirs, bench.LoadResult) and theirs.rps:
                lines.append(f"- {conns} connections: {ours.rps / theirs.rps:.2f}× {peer}")
    return "\n".join(lines) + "\n"


class Context:
    """What bench.run_wrk needs: the tool, its script and the pinning."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per run, 50 connections only")
    parser.add_argument("--seconds", type=float, help="seconds per measured run (default 10, quick 3)")
    parser.add_argument("--connections", type=int, nargs="+", help="default 1 50 256 (quick: 50)")
    parser.add_argument("--bin", type=Path, default=bench.OURS_BIN, help="our binary (default: release)")
    parser.add_argument("--output", type=Path, help="report path")
    args = parser.parse_args()
    seconds = args.seconds or (3 if args.quick else 10)
    connections = args.connections or ([50] if args.quick else [1, 50, 256])
    if not args.bin.exists() or not (bench.VENV / "bin" / "granian").exists():
        bench.die(f"needs {args.bin} and bench/.venv: run bench/run.py once, or pass --bin")
    ctx = Context()
    ctx.wrk = bench.ensure_tool("wrk", "wrk")
    ctx.server_pin, ctx.wrk_pin, pin_note = bench.pinning()
    started = dt.datetime.now(dt.timezone.utc)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="static-files-") as tmp:
        tmp = Path(tmp)
        directory = tmp / "public"
        directory.mkdir()
        (directory / FILE_NAME).write_bytes(os.urandom(FILE_SIZE // 2).hex().encode())
        ctx.script = tmp / "bench.lua"
        ctx.script.write_text(bench.WRK_LUA)
        for conns in connections:
            for server in SERVERS:
                bench.log(f"{server}, {conns} connections")
                try:
                    result = measure(server, conns, seconds, directory, args.bin, ctx, tmp)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    results[(server, conns)] = str(err).splitlines()[0]
                    bench.log(f"  failed: {err}")
                    continue
                results[(server, conns)] = result
                bench.log(f"  {bench.fmt_rps(result.rps)} req/s")
                time.sleep(0.5)
    report = render(results, connections, seconds, pin_note, started)
    out = args.output or bench.RESULTS / f"{started:%Y-%m-%d}-static-files{'-quick' if args.quick else ''}.md"
    bench.write_report(report, out, "bench/static_files.py")


if __name__ == "__main__":
    main()
