#!/usr/bin/env python3
"""Micro-benchmark of the ASGI bridge alone, without sockets.

    python3 bench/micro.py [--quick] [--loop asyncio|uvloop|auto]

Two ways of running the same raw ASGI apps (pyapp/bench_raw.py) N times, both pinned to
CPU 0 and both with at most K requests in flight:

- python: the app called directly on an asyncio loop by a minimal Python driver that builds a
  scope dict, answers `receive` with the request body and collects what `send` gets. This is
  the floor: the app's own cost plus the least any Python server must do.
- bridge: examples/bench_bridge.rs builds each `http::Request` in memory and sends it to
  `AsgiService` (Tokio side -> job queue -> loop thread -> scope, receive/send -> response
  back to Tokio), collecting the response body. No sockets, no HTTP parsing.

The difference per request is what the bridge costs on top of the app. The report is printed
and written to bench/results/YYYY-MM-DD-micro[-quick].md. Uses bench/.venv as bench/run.py
sets it up. Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: venv set-up, pinning, machine description)

BRIDGE_BIN = bench.RELEASE / "examples" / "bench_bridge"
RUN_TIMEOUT = 60


@dataclass(frozen=True)
class Case:
    name: str
    target: str
    method: str
    body: str | None
    concurrency: int
    requests: int  # full run; --quick uses a fifth
    expect_bytes: int  # response bytes per request


CASES = [
    Case("hello c=1", "pyapp.bench_raw:hello", "GET", None, 1, 100_000, 13),
    Case("hello c=64", "pyapp.bench_raw:hello", "GET", None, 64, 100_000, 13),
    Case("echo c=1", "pyapp.bench_raw:echo", "POST", "hello", 1, 100_000, 5),
    Case("echo c=64", "pyapp.bench_raw:echo", "POST", "hello", 64, 100_000, 5),
    Case("stream 1 MiB c=1", "pyapp.bench_raw:stream", "GET", None, 1, 5_000, bench.ONE_MIB),
    Case("stream 1 MiB c=16", "pyapp.bench_raw:stream", "GET", None, 16, 5_000, bench.ONE_MIB),
]

# Runs inside the bench venv's python: argv = target method body concurrency requests warmup loop.
PYTHON_DRIVER = r"""
import asyncio, importlib, json, os, sys, time

sys.path.insert(0, os.getcwd())  # like a server's --app-dir .

target, method, body, concurrency, requests, warmup, loop_kind = sys.argv[1:8]
body = body.encode() if body != "-" else b""
concurrency, requests, warmup = int(concurrency), int(requests), int(warmup)
module, _, attr = target.partition(":")
app = importlib.import_module(module)
for part in attr.split("."):
    app = getattr(app, part)

headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench_bridge")]
if body:
    headers += [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]


async def one():
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"",
        "root_path": "", "headers": list(headers), "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
    }
    received = False
    chunks = []

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a disconnect that never comes

    async def send(message):
        if message["type"] == "http.response.start":
            assert 200 <= message["status"] < 300, message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return sum(len(chunk) for chunk in chunks)


async def worker(count):
    total = 0
    for _ in range(count):
        total += await one()
    return total


async def run(total):
    per, extra = divmod(total, concurrency)
    results = await asyncio.gather(*(worker(per + (i < extra)) for i in range(concurrency)))
    return sum(results)


async def main():
    await run(warmup)
    started = time.perf_counter()
    received = await run(requests)
    seconds = time.perf_counter() - started
    print("BRIDGE_JSON " + json.dumps({"requests": requests, "seconds": seconds, "bytes": received}))


if loop_kind in ("uvloop", "auto"):
    try:
        import uvloop
    except ImportError:
        if loop_kind == "uvloop":
            raise
        uvloop = None
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
asyncio.run(main())
"""


def parse(out: subprocess.CompletedProcess) -> dict:
    for line in out.stdout.splitlines():
        if line.startswith("BRIDGE_JSON "):
            return json.loads(line[len("BRIDGE_JSON "):])
    detail = " / ".join((out.stderr.strip() or out.stdout.strip()).splitlines()[-2:])[-500:]
    raise RuntimeError(f"no result (exit {out.returncode}): {detail}")


def run_case(kind: str, case: Case, requests: int, warmup: int, loop: str, pin: list[str],
             driver: Path) -> dict:
    if kind == "python":
        cmd = [str(bench.VENV / "bin" / "python"), str(driver), case.target, case.method, case.body or "-",
               str(case.concurrency), str(requests), str(warmup), loop]
    else:
        cmd = [str(BRIDGE_BIN), "--app", case.target, "--method", case.method, "--requests", str(requests),
               "--concurrency", str(case.concurrency), "--warmup", str(warmup), "--loop", loop]
        if case.body is not None:
            cmd += ["--body", case.body]
    try:
        out = subprocess.run(pin + cmd, cwd=bench.ROOT, env=bench.server_env(), capture_output=True, text=True,
                             timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no result after {RUN_TIMEOUT} s (hung?)") from None
    result = parse(out)
    if result["bytes"] != requests * case.expect_bytes:
        raise RuntimeError(f"got {result['bytes']} response bytes, expected {requests * case.expect_bytes}")
    return result


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition of a fifth of the requests")
    parser.add_argument("--loop", choices=["uvloop", "asyncio", "auto"], default="uvloop",
                        help="asyncio loop for both sides (default uvloop)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    cases = [case for case in CASES if args.filter in case.name]
    if not cases:
        bench.die(f"--filter {args.filter!r} selects nothing")

    if not args.no_build:
        cmd = ["cargo", "build", "--release", "--example", "bench_bridge"]
        if bench.run_cmd(cmd, cwd=bench.ROOT).returncode != 0:
            bench.die("cargo build failed")
    bench.setup_venv(args)
    server_pin, _, pin_note = bench.pinning()
    pin_note = pin_note.split(",")[0].replace("server", "both sides") if server_pin else pin_note

    started = dt.datetime.now()
    load_before = bench.loadavg()
    t0 = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="micro-") as tmp:
        driver = Path(tmp) / "driver.py"
        driver.write_text(PYTHON_DRIVER)
        for case in cases:
            requests = case.requests // 5 if args.quick else case.requests
            warmup = max(requests // 20, 10)
            times: dict[str, list[float]] = {"python": [], "bridge": []}
            failures: dict[str, str] = {}
            for rep in range(reps):
                for kind in ("python", "bridge"):  # interleaved, like bench/run.py
                    if kind in failures:
                        continue
                    bench.wait_for_idle([int(bench.SERVER_CPU)] if server_pin else None, 30.0)
                    try:
                        result = run_case(kind, case, requests, warmup, args.loop, server_pin, driver)
                    except RuntimeError as err:
                        failures[kind] = str(err)
                        bench.log(f"{case.name} {kind} rep {rep + 1}: FAILED: {err}")
                        continue
                    per_request = result["seconds"] / result["requests"]
                    times[kind].append(per_request)
                    bench.log(f"{case.name} {kind} rep {rep + 1}: {fmt_us(per_request)}/request")
            rows.append((case, requests, times, failures))
    elapsed = time.monotonic() - t0
    mach, vers = bench.machine(), bench.versions(bench.shutil.which("wrk") or "wrk")

    lines = [
        f"# Bridge micro-benchmark {started:%Y-%m-%d %H:%M}{' (quick)' if args.quick else ''}",
        "",
        f"- Command: `{shlex.join(['python3', 'bench/micro.py'] + sys.argv[1:])}` ({elapsed:.0f} s)",
        f"- Machine: {mach['nproc']} CPUs, {mach['cpu']}, Linux {mach['kernel']}; {pin_note}; "
        f"load average before {load_before}, after {bench.loadavg()}",
        f"- Commit: {mach['commit']}; rustc {vers.get('rustc', '?')}; Python {vers.get('python', '?')}, "
        f"uvloop {vers.get('uvloop', '?')}; loop: {args.loop}",
        f"- {reps} repetition(s), medians shown. *python*: the app awaited directly by a minimal Python "
        "driver (the floor). *bridge*: in-memory `http::Request`s sent to `AsgiService` "
        "(examples/bench_bridge.rs), body collected; no sockets. *overhead*: bridge − python, per request.",
        "",
        "| case | requests | python µs/req | bridge µs/req | overhead µs/req | bridge req/s | bridge/python time |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for case, requests, times, failures in rows:
        cells = []
        for kind in ("python", "bridge"):
            cells.append("FAILED" if kind in failures or not times[kind] else
                         f"{statistics.median(times[kind]) * 1e6:.1f}")
        if failures or not times["python"] or not times["bridge"]:
            cells += ["n/a", "n/a", "n/a"]
        else:
            python, bridge = statistics.median(times["python"]), statistics.median(times["bridge"])
            cells += [f"{(bridge - python) * 1e6:+.1f}", f"{1 / bridge:,.0f}", f"{bridge / python:.2f}×"]
        lines.append("| " + " | ".join([case.name, f"{requests:,}"] + cells) + " |")
    notes = [f"- {case.name} {kind}: {bench.escape(reason)}" for case, _, _, failures in rows
             for kind, reason in failures.items()]
    if notes:
        lines += ["", "Failures:", ""] + notes
    out = args.output or bench.RESULTS / f"{started:%Y-%m-%d}-micro{'-quick' if args.quick else ''}.md"
    bench.write_report("\n".join(lines), out, "micro")
    return 0


if __name__ == "__main__":
    sys.exit(main())
