#!/usr/bin/env python3
"""Memory soak: does the server's RSS stay flat under steady load?

Starts one server (ours by default) on an app of bench/run.py, drives it with wrk at 50
connections for 10 minutes in back-to-back segments, and samples VmRSS (summed over the
process tree) after each segment. The first segments are warm-up (allocator pools, Python's
caches, connection buffers fill); the verdict compares every later sample with the first
one after warm-up: flat means within ±5 %. Any wrk error fails the soak.

    python3 bench/soak.py                       # ours, starlette, 10 min
    python3 bench/soak.py --server uvicorn --app raw-echo --minutes 2

Pinned like bench/run.py (server CPU 0, wrk CPU 1); uses bench/.venv and the release binary
bench/run.py builds. The report is printed and written to bench/results/DATE-soak-APP-SERVER.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: servers, apps, venv, pinning, wrk)

FLAT_TOLERANCE = 0.05


def verdict(samples: list[int], warmup: int) -> tuple[bool, float]:
    """Whether every sample after warm-up is within the tolerance of the first one, and the
    largest relative drift seen."""
    measured = samples[warmup:]
    if len(measured) < 2:
        return False, 0.0
    base = measured[0]
    drift = max(abs(sample - base) / base for sample in measured)
    return drift <= FLAT_TOLERANCE, drift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=bench.ASGI_SERVERS, default="ours")
    parser.add_argument("--app", choices=[app.key for app in bench.APPS if not app.rust_route],
                        default="starlette")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--segment", type=float, default=30.0, help="seconds of load between RSS samples")
    parser.add_argument("--warmup-segments", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    app = next(app for app in bench.APPS if app.key == args.app)
    segments = max(int(args.minutes * 60 / args.segment), args.warmup_segments + 2)

    bench.build(args)
    bench.setup_venv(args)
    wrk = bench.ensure_tool("wrk", "wrk")
    server_pin, wrk_pin, pin_note = bench.pinning()
    started = dt.datetime.now()
    samples: list[int] = []
    rates: list[float] = []
    errors: dict[str, int] = {}
    segment_errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        bench.snapshot_binaries(Path(tmp))
        script = Path(tmp) / "bench.lua"
        script.write_text(bench.WRK_LUA)
        server = bench.ServerProcess(args.server, app, 1, server_pin, Path(tmp))
        server.start()
        try:
            problem = server.wait_ready() or bench.check_response(app, server.port)
            if problem:
                bench.die(f"soak: {args.server} did not start: {problem}\n{server.log_tail()}")
            for segment in range(segments):
                load = bench.run_wrk(wrk, wrk_pin, script, app, server.port, args.concurrency, args.segment)
                for kind, count in load.errors.items():
                    errors[kind] = errors.get(kind, 0) + count
                segment_errors.append(", ".join(f"{count} {kind}" for kind, count in load.errors.items()) or "0")
                samples.append(bench.tree_status_kib(server.proc.pid, "VmRSS"))
                rates.append(load.rps)
                bench.log(f"soak: segment {segment + 1}/{segments}: {bench.fmt_rps(load.rps)} req/s, "
                          f"RSS {bench.fmt_mib(samples[-1])}")
                if server.proc.poll() is not None:
                    errors["server died"] = 1
                    break
        finally:
            server.stop()

    flat, drift = verdict(samples, args.warmup_segments)
    ok = flat and not errors
    mach = bench.machine()
    lines = [
        f"# Memory soak {started:%Y-%m-%d %H:%M}: {bench.SERVER_LABELS[args.server]}, {app.title}",
        "",
        f"- Command: `{shlex.join(['python3', 'bench/soak.py'] + sys.argv[1:])}`",
        f"- Machine: {mach['nproc']} CPUs, {mach['cpu']}, {mach['memory']} RAM, Linux {mach['kernel']}; "
        f"{pin_note}; commit {mach['commit']}",
        f"- Load: `wrk -t1 -c{args.concurrency}` in {len(samples)} segments of {args.segment:g} s; VmRSS "
        f"(process tree) after each. The first {args.warmup_segments} are warm-up; flat means every later "
        f"sample within ±{FLAT_TOLERANCE:.0%} of the first one after warm-up.",
        f"- Result: **{'flat' if ok else 'NOT flat' if not flat else 'FAILED'}**, largest drift "
        f"{drift:+.1%}" + (f"; errors: {errors}" if errors else ""),
        "",
        "| segment | ends at | req/s | RSS | errors |",
        "|--:|--:|--:|--:|---|",
    ]
    for index, (rate, sample, segment_error) in enumerate(zip(rates, samples, segment_errors)):
        marker = " (warm-up)" if index < args.warmup_segments else ""
        lines.append(f"| {index + 1}{marker} | {(index + 1) * args.segment / 60:.1f} min | "
                     f"{bench.fmt_rps(rate)} | {bench.fmt_mib(sample)} | {segment_error} |")
    out = args.output or bench.RESULTS / f"{started:%Y-%m-%d}-soak-{app.key}-{args.server}.md"
    bench.write_report("\n".join(lines), out, "soak")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
