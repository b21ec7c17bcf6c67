#!/usr/bin/env python3
"""Paired A/B runs: two builds or two settings of our server measured at the same moment.

bench/run.py runs servers one after the other, so the machine's drift (this kind of shared VM
moves ±20 % within minutes) lands between them; for an effect of a few percent that drift is
larger than the effect. Here both servers run at once, pinned to the same CPU, each loaded by
its own `wrk` on the other CPU, and their ports are swapped every run. Each run prints B ÷ A
in requests per second and in server CPU time per request; the medians are the figure.

    python3 bench/paired.py --metrics                     # metrics off (A) vs on (B), raw hello c50
    python3 bench/paired.py --b-bin /tmp/old-build --app fastapi --connections 256
    python3 bench/paired.py --a-args "--runtime-mode split --loop uvloop" --b-args "--runtime-mode single"

Both servers get `--no-access-log --log-level warning` and their own `--app`; A and B share
the machine, so each gets about half of the CPU: compare the ratios, not the req/s with
bench/run.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from run import APPS, OURS_BIN, ROOT, SERVER_CPU, WRK_CPU, free_port, server_env, tree_cpu_ticks

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start(binary: Path, app_target: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = ["taskset", "-c", SERVER_CPU, str(binary), "--app", app_target, "--bind", f"127.0.0.1:{port}",
               "--no-access-log", "--log-level", "warning", *extra]
    return subprocess.Popen(command, cwd=ROOT, env=server_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_listening(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"paired: a server exited with {server.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"paired: nothing listens on {port} after 30 s")


def wrk(url: str, connections: int, seconds: float, method: str, body: bytes | None, out: dict) -> None:
    command = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    if method != "GET":
        # A JSON string of ASCII text is a Lua string too.
        script = f"wrk.method = {json.dumps(method)}\nwrk.body = {json.dumps((body or b'').decode())}\n"
        path = Path(f"/tmp/paired-{os.getpid()}-{threading.get_ident()}.lua")
        path.write_text(script)
        command += ["-s", str(path)]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = next(line for line in text.splitlines() if "requests in" in line)
    out["requests"] = int(requests.split()[0])
    out["errors"] = "Non-2xx" in text or "Socket errors" in text


def one_run(args, app, swap: bool) -> tuple[float, float, float, float]:
    ports = [free_port(), free_port()]
    if swap:
        ports.reverse()
    servers = [start(args.a_bin, app.target, ports[0], shlex.split(args.a_args)),
               start(args.b_bin, app.target, ports[1], shlex.split(args.b_args))]
    try:
        for port, server in zip(ports, servers):
            wait_listening(port, server)
        urls = [f"http://127.0.0.1:{port}{app.path}" for port in ports]

        def load(seconds: float) -> list[dict]:
            results = [{}, {}]
            threads = [threading.Thread(target=wrk, args=(url, args.connections, seconds, app.method, app.body, out))
                       for url, out in zip(urls, results)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results

        load(args.warmup)
        before = [tree_cpu_ticks(server.pid) for server in servers]
        results = load(args.duration)
        after = [tree_cpu_ticks(server.pid) for server in servers]
        if any(result["errors"] for result in results):
            sys.exit("paired: wrk saw errors or non-2xx answers")
        rps = [result["requests"] / args.duration for result in results]
        cpu_us = [(end - start) * 1e6 / CLOCK_TICKS / result["requests"]
                  for start, end, result in zip(before, after, results)]
        return rps[0], rps[1], cpu_us[0], cpu_us[1]
    finally:
        for server in servers:
            server.send_signal(2)
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a-bin", type=Path, default=OURS_BIN, help="server A (default: target/release)")
    parser.add_argument("--b-bin", type=Path, default=OURS_BIN, help="server B (default: target/release)")
    parser.add_argument("--a-args", default="", help="more arguments for A")
    parser.add_argument("--b-args", default="", help="more arguments for B")
    parser.add_argument("--metrics", action="store_true", help="B gets --metrics-bind 127.0.0.1:0 (the #15 figure)")
    parser.add_argument("--app", default="raw-hello", choices=[app.key for app in APPS if not app.rust_route])
    parser.add_argument("--connections", type=int, default=50, help="per server (default 50)")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    if args.metrics:
        args.b_args = f"{args.b_args} --metrics-bind 127.0.0.1:0".strip()
    app = next(app for app in APPS if app.key == args.app)
    print(f"A: {args.a_bin} {args.a_args}\nB: {args.b_bin} {args.b_args}\n"
          f"{app.key}, {args.connections} connections each, {args.runs} × {args.duration:g} s\n")
    print("| run | A req/s | B req/s | B ÷ A req/s | A CPU/req | B CPU/req | B ÷ A CPU/req |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    rps_ratios, cpu_ratios = [], []
    for run in range(args.runs):
        a_rps, b_rps, a_cpu, b_cpu = one_run(args, app, swap=run % 2 == 1)
        rps_ratios.append(b_rps / a_rps)
        cpu_ratios.append(b_cpu / a_cpu)
        print(f"| {run + 1} | {a_rps:,.0f} | {b_rps:,.0f} | {rps_ratios[-1]:.3f} | {a_cpu:.1f} µs | "
              f"{b_cpu:.1f} µs | {cpu_ratios[-1]:.3f} |", flush=True)
    print(f"\nmedian B ÷ A: req/s {statistics.median(rps_ratios):.3f} "
          f"({min(rps_ratios):.3f}–{max(rps_ratios):.3f}), "
          f"CPU/request {statistics.median(cpu_ratios):.3f} ({min(cpu_ratios):.3f}–{max(cpu_ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
