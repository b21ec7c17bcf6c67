#!/usr/bin/env python3
"""HTTP/3: ours (`--http3`) against hypercorn (`--quic-bind`, aioquic), same app, same run.

    python bench/http3.py [--binary PATH] [--seconds S] [--reps N] [--cells c1x1,c4x25]

Debian's h2load has no QUIC, so the client is aioquic (tests/python/h3client.py): one process
pinned to CPU 1 opens C connections and keeps M requests in flight on each for S seconds
after a one-second warm-up, counting answers (each checked: status 200 and the body). The
server runs pinned to CPU 0 (bench/run.py's `pinning`), fresh for every run, with
`pyapp.bench_raw:hello`, uvloop and no access log; servers take turns within a cell. The
client is pure Python, so it may be the limit: its CPU share is reported with each cell,
and a ratio near 1 with the client at 100% says only that both servers outrun it.

Run it with a Python that has aioquic and hypercorn (the tests' .venv after
`pip install hypercorn`); the report is printed and written to
bench/results/YYYY-MM-DD-http3.md. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "python"))
import run as bench  # noqa: E402  (pinning, free ports, the server's CPU time)
from h3client import connect  # noqa: E402
from harness import make_certificate  # noqa: E402

APP = "pyapp.bench_raw:hello"
BODY = b"Hello, world!"
SERVERS = ["ours", "hypercorn"]
WARM_UP = 1.0


def server_command(server: str, binary: Path, port: int, cert: Path, key: Path) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if server == "ours":
        return [str(binary), "--app", APP, "--bind", bind, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                "--http3", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    return [sys.executable, "-m", "hypercorn", APP, "--bind", bind, "--quic-bind", bind, "--certfile", str(cert),
            "--keyfile", str(key), "--worker-class", "uvloop", "--log-level", "warning"]


# ------------------------------------------------------------------------------ client


async def load(port: int, cert: Path, connections: int, streams: int, seconds: float) -> dict:
    done = 0
    total = 0
    measuring = False
    stop = asyncio.Event()

    async def worker(client) -> None:
        nonlocal done, total
        while not stop.is_set():
            response = await client.request("GET", "/")
            if response.status != 200 or response.body != BODY:
                raise RuntimeError(f"bad answer: {response.status} {response.body[:60]!r}")
            total += 1
            if measuring:
                done += 1

    async def one_connection() -> None:
        async with connect(port, cert) as client:
            await asyncio.gather(*(worker(client) for _ in range(streams)))

    tasks = [asyncio.create_task(one_connection()) for _ in range(connections)]
    await asyncio.sleep(WARM_UP)
    measuring = True
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    await asyncio.gather(*tasks)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"rps": done / elapsed, "client_cpu": cpu / elapsed, "total": total}


def client_main(argv: list[str]) -> None:
    port, cert, connections, streams, seconds = argv
    result = asyncio.run(load(int(port), Path(cert), int(connections), int(streams), float(seconds)))
    print(json.dumps(result))


# ------------------------------------------------------------------------------ driver


def one_run(server: str, binary: Path, cert: Path, key: Path, cell: tuple[int, int], seconds: float,
            pins: tuple[list[str], list[str]]) -> dict:
    port = bench.free_port()
    server_pin, client_pin = pins
    command = server_pin + server_command(server, binary, port, cert, key)
    with tempfile.TemporaryFile() as log:
        # Ours embeds Python: the venv running this script (uvloop) is the one it must see.
        env = {**os.environ, "VIRTUAL_ENV": sys.prefix}
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            wait_until_answering(port, cert, proc, log)
            cpu_before = bench.tree_cpu_ticks(proc.pid)
            client = subprocess.run(
                client_pin + [sys.executable, __file__, "--client", str(port), str(cert), str(cell[0]), str(cell[1]),
                              str(seconds)],
                capture_output=True, text=True, timeout=seconds + 60,
            )
            server_cpu = (bench.tree_cpu_ticks(proc.pid) - cpu_before) / os.sysconf("SC_CLK_TCK")
            if client.returncode != 0:
                raise RuntimeError(f"{server}: client failed:\n{client.stderr[-2000:]}")
            result = json.loads(client.stdout)
            # Over every request of the client's run, warm-up included.
            result["server_cpu_us_per_req"] = server_cpu / result["total"] * 1e6
            return result
        finally:
            proc.terminate()
            proc.wait(20)


def wait_until_answering(port: int, cert: Path, proc: subprocess.Popen, log) -> None:
    async def answer() -> bool:
        async with connect(port, cert) as client:
            return (await client.request("GET", "/")).body == BODY

    async def probe() -> bool:
        # A handshake with no one listening yet is retried, not refused: bound the wait.
        try:
            return await asyncio.wait_for(answer(), 2)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        if asyncio.run(probe()):
            return
        time.sleep(0.2)
    raise RuntimeError("server did not answer over HTTP/3 within 30 s")


def report(results: dict, cells: list[tuple[int, int]], args, note: str, binary: Path) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    lines = [
        f"# HTTP/3, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"`GET /` → `Hello, world!` ({APP}); {args.seconds:g} s per run after {WARM_UP:g} s warm-up, "
        f"{args.reps} run(s) per server and cell, medians; {note}; client: aioquic "
        f"(tests/python/h3client.py), C connections × M requests in flight each. Ours: `{binary.relative_to(ROOT)}` "
        f"`--http3 --loop uvloop --no-access-log`; hypercorn: `--quic-bind --worker-class uvloop`. Commit {commit}.",
        "",
        "| cell | server | req/s | server CPU µs/req | client CPU | runs (req/s) |",
        "|---|---|--:|--:|--:|---|",
    ]
    ratios = []
    for cell in cells:
        name = f"c{cell[0]}x{cell[1]}"
        medians = {}
        for server in SERVERS:
            runs = results[(server, cell)]
            rps = statistics.median(run["rps"] for run in runs)
            medians[server] = rps
            cpu = statistics.median(run["server_cpu_us_per_req"] for run in runs)
            client = statistics.median(run["client_cpu"] for run in runs)
            each = ", ".join(f"{run['rps']:.0f}" for run in runs)
            lines.append(f"| {name} | {server} | {rps:.0f} | {cpu:.0f} | {client:.0%} | {each} |")
        ratios.append(f"- {name}: ours {medians['ours'] / medians['hypercorn']:.2f}× hypercorn's req/s")
    return "\n".join([*lines, "", "Ratios:", "", *ratios, ""])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        return client_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "rust-asgi-server")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cells", default="c1x1,c1x10,c4x25")
    args = parser.parse_args()
    cells = [tuple(int(n) for n in cell[1:].split("x")) for cell in args.cells.split(",")]
    server_pin, client_pin, note = bench.pinning()
    results: dict = {}
    with tempfile.TemporaryDirectory() as directory:
        cert, key = make_certificate(Path(directory), "ecdsa")
        for cell in cells:
            for rep in range(args.reps):
                for server in SERVERS:
                    run = one_run(server, args.binary, cert, key, cell, args.seconds, (server_pin, client_pin))
                    results.setdefault((server, cell), []).append(run)
                    print(f"c{cell[0]}x{cell[1]} {server} #{rep + 1}: {run['rps']:.0f} req/s "
                          f"(client CPU {run['client_cpu']:.0%})", file=sys.stderr)
    text = report(results, cells, args, note.replace("wrk", "the client"), args.binary.resolve())
    print(text)
    out = ROOT / "bench" / "results" / f"{dt.date.today():%Y-%m-%d}-http3.md"
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
