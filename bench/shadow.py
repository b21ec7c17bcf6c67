#!/usr/bin/env python3
"""What shadow comparison costs the client: a Rust route's latency with `ShadowLayer` sending
every request (share 1.0) also to the Python app, against the same server with share 0.

    python3 bench/shadow.py [--quick] [--reps N] [--concurrency 1,10,50] [--pace-ms MS] [--max-loop-busy F] [--pin | --no-pin]

The server is examples/shadow_compare (release build) serving `GET /health` from Rust,
shadowed against pyapp/service.py's `/health`; wrk (`-t1`) drives it with N connections.
Share 0 and share 1 take turns within a concurrency. With `--pace-ms MS` (default 2) each
connection waits MS ms between requests (wrk's `delay()`), a steady load below capacity at
which latency is what a client sees; `--pace-ms 0` sends back to back, which measures
capacity (every CPU cycle a comparison takes is then a cycle the route does not get). Reported per concurrency: req/s, p50,
p99 (wrk's), and the shadow counters after the run (compared, busy-skipped). By default the
server runs on both CPUs (as it would in production: the Python side of a comparison runs on
the loop thread beside the Tokio workers) and wrk shares them; `--pin` puts the server on
CPU 0 and wrk on CPU 1 as bench/run.py does. The report is printed and written to
bench/results/YYYY-MM-DD-shadow-{paced,capacity}[-quick].md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: servers, pinning, wrk)

EXAMPLE = bench.ROOT / "target" / "release" / "examples" / "shadow_compare"
ROUTE = bench.App("shadow-health", "GET /health (Rust, shadowed)", "pyapp.service:app", "GET", "/health", None)
SHARES = [0.0, 1.0]


@dataclass
class Sample:
    rps: float
    p50_us: float
    p99_us: float
    counts: dict


def shadow_server(share: float, pin: list[str], logdir: Path, args) -> bench.ServerProcess:
    """examples/shadow_compare with a given share, run as bench/run.py runs a server."""
    def command(port: int) -> list[str]:
        cmd = pin + [str(EXAMPLE), "--bind", f"127.0.0.1:{port}", "--app", ROUTE.target, "--share", str(share)]
        if args.max_loop_busy is not None:
            cmd += ["--max-loop-busy", str(args.max_loop_busy)]
        if args.min_idle_cpu is not None:
            cmd += ["--min-idle-cpu", str(args.min_idle_cpu)]
        if args.max_per_second is not None:
            cmd += ["--max-per-second", str(args.max_per_second)]
        return cmd
    return bench.ServerProcess.with_command(f"share-{share:g}", "shadow", logdir, command)


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/shadow/stats", timeout=10) as response:
        return json.load(response)


def measure(share: float, concurrency: int, args, pins, script: Path, logdir: Path) -> Sample:
    server_pin, wrk_pin = pins
    server = shadow_server(share, server_pin, logdir, args)
    server.start()
    try:
        problem = server.wait_ready()
        if problem:
            raise RuntimeError(f"shadow_compare {problem}:\n{server.log_tail()}")
        bench.run_wrk(args.wrk, wrk_pin, script, ROUTE, server.port, concurrency, args.warmup)
        load = bench.run_wrk(args.wrk, wrk_pin, script, ROUTE, server.port, concurrency, args.seconds)
        if load.errors:
            raise RuntimeError(f"wrk errors: {load.errors}")
        return Sample(load.rps, load.p50_us, load.p99_us, stats(server.port))
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 1 s warm-up + 3 s")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--pace-ms", type=float, default=2.0)
    parser.add_argument("--max-loop-busy", type=float, default=None,
                        help="ShadowLayer::max_loop_busy (default: the example's, 0.5)")
    parser.add_argument("--min-idle-cpu", type=float, default=None,
                        help="ShadowLayer::min_idle_cpu (default: the example's, 0.1)")
    parser.add_argument("--max-per-second", type=float, default=None,
                        help="ShadowLayer::max_per_second (default: the example's, 100; inf lifts it)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args()
    args.reps, args.warmup, args.seconds = (1, 1.0, 3.0) if args.quick else (args.reps, 2.0, 10.0)
    if not EXAMPLE.exists():
        bench.die(f"{EXAMPLE} not found: cargo build --release --example shadow_compare")
    args.wrk = bench.ensure_tool("wrk", "wrk")
    server_pin, wrk_pin, pin_note = bench.pinning() if args.pin else ([], [], "not pinned: server and wrk share the CPUs")
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    results: dict[tuple[int, float], list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as tmp:
        script = Path(tmp) / "bench.lua"
        pace = f"\nfunction delay() return {args.pace_ms:g} end\n" if args.pace_ms > 0 else ""
        script.write_text(bench.WRK_LUA + pace)
        for concurrency in concurrencies:
            for rep in range(args.reps):
                for share in SHARES:
                    sample = measure(share, concurrency, args, (server_pin, wrk_pin), script, Path(tmp))
                    results.setdefault((concurrency, share), []).append(sample)
                    bench.log(f"c{concurrency} share {share:g} rep {rep + 1}: {bench.fmt_rps(sample.rps)} req/s, "
                              f"p50 {bench.fmt_us(sample.p50_us)}, p99 {bench.fmt_us(sample.p99_us)}, "
                              f"counts {sample.counts}")
    lines = [
        f"# Shadow comparison cost — {dt.date.today().isoformat()}",
        "",
        f"`GET /health` of examples/shadow_compare, share 0 vs 1.0; {args.reps} × {args.seconds:g} s per cell; "
        f"{pin_note}; " + (f"each connection paced at one request per {args.pace_ms:g} ms; " if args.pace_ms > 0
                           else "requests back to back (capacity); ")
        + f"load average at the end {bench.loadavg()}.",
        "",
        "| connections | share | req/s | p50 | p99 | p50 ÷ share 0 | compared | skipped (busy) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for concurrency in concurrencies:
        base = statistics.median(sample.p50_us for sample in results[(concurrency, 0.0)])
        for share in SHARES:
            samples = results[(concurrency, share)]
            p50 = statistics.median(sample.p50_us for sample in samples)
            counts = samples[-1].counts
            lines.append(
                f"| {concurrency} | {share:g} | {bench.fmt_rps(statistics.median(s.rps for s in samples))} | "
                f"{bench.fmt_us(p50)} | {bench.fmt_us(statistics.median(s.p99_us for s in samples))} | "
                f"{p50 / base:.2f} | {counts.get('compared', '—')} | {counts.get('skipped_busy', '—')} |")
    report = "\n".join(lines)
    out = bench.ROOT / "bench" / "results" / f"{dt.date.today().isoformat()}-shadow-{'paced' if args.pace_ms > 0 else 'capacity'}{'-quick' if args.quick else ''}.md"
    bench.write_report(report, out, "shadow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
