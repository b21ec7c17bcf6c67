#!/usr/bin/env python3
"""The whole Autobahn TestSuite (cases 1–13, incl. 12/13 permessage-deflate and the large
messages of 9.x) against the echo app, driven by ``kosoku``; prints a summary with timings.

    .venv/bin/python -m pip install -r tests/requirements.txt
    cargo build --release
    .venv/bin/python tests/autobahn/run.py                     # our release binary
    .venv/bin/python tests/autobahn/run.py --server uvicorn    # the same run against uvicorn
    .venv/bin/python tests/autobahn/run.py -i '9.*' -p 1       # one category, sequentially
    .venv/bin/python tests/autobahn/run.py --reports reports/autobahn   # + Autobahn's HTML/JSON

The pytest suite (tests/python/test_autobahn.py) checks cases 1–10 and the smaller messages
of 12/13 on every run; this script is for the full run whose results and timings go into the
notes. Exit status: 0 when every
case passed by Autobahn's own rule (OK, NON-STRICT or INFORMATIONAL); 1 otherwise. 12.x/13.x
are UNIMPLEMENTED (a failure) when permessage-deflate is not negotiated: leave them out
(``-x '12.*' -x '13.*'``) for a run with ``-- --ws-per-message-deflate false``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["rust", "uvicorn"], default="rust")
    parser.add_argument("--bin", help="server binary (default target/release/rust-asgi-server)")
    parser.add_argument("--app", default="pyapp.ws_apps:echo")
    parser.add_argument("-i", "--include", action="append", help="case id or glob (repeatable); default all")
    parser.add_argument("-x", "--exclude", action="append", help="case id or glob to leave out (repeatable)")
    parser.add_argument("-p", "--parallelism", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--reports", help="also write Autobahn's HTML/JSON reports into this directory")
    parser.add_argument("server_args", nargs="*", help="extra server arguments, after --")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    os.environ["SERVER_UNDER_TEST"] = args.server
    if args.bin:
        os.environ["RUST_ASGI_SERVER_BIN"] = args.bin
    sys.path.insert(0, str(REPO_ROOT / "tests" / "python"))
    import kosoku  # noqa: E402
    from harness import start_server  # noqa: E402  (reads SERVER_UNDER_TEST on import)

    server = start_server(args.app, "--no-access-log", *args.server_args)
    print(f"server: {' '.join(server.command)}", flush=True)
    started = time.monotonic()
    failed_run = False
    try:
        try:
            results = asyncio.run(
                kosoku.run_fuzzingclient(
                    f"ws://127.0.0.1:{server.port}", args.include, args.exclude, concurrency=args.parallelism
                )
            )
        except kosoku.FailureError as failure:
            results = failure.results
            failed_run = True
        wall = time.monotonic() - started
        alive = server.alive()
    finally:
        server.stop()

    if args.reports:
        try:
            from kosoku._report import write_reports  # what the kosoku CLI uses
        except ImportError as exc:  # a private module: may move in later kosoku versions
            print(f"cannot write reports: {exc}", file=sys.stderr)
        else:
            write_reports(results, args.reports)
            print(f"reports: {args.reports}/index.html")

    print_summary(results, wall, args.parallelism, alive)
    bad = [r for r in results if not acceptable(r)]
    if failed_run and not results:
        print("kosoku failed without results", file=sys.stderr)
        return 1
    return 1 if bad or not alive else 0


def acceptable(result) -> bool:
    return result.behavior.value in PASSING and result.behavior_close.value in PASSING


def category(case_id: str) -> int:
    return int(case_id.split(".")[0])


def print_summary(results, wall: float, parallelism: int, alive: bool) -> None:
    groups = collections.defaultdict(list)
    for result in results:
        groups[category(result.case_id)].append(result)
    print()
    print(f"{'cat':>3} {'cases':>5}  {'verdicts (behavior/close: count)':<58} {'Σ case ms':>9}  slowest")
    for cat in sorted(groups):
        cases = groups[cat]
        verdicts = collections.Counter(f"{r.behavior.value}/{r.behavior_close.value}" for r in cases)
        slowest = max(cases, key=lambda r: r.duration)
        text = ", ".join(f"{verdict}: {count}" for verdict, count in sorted(verdicts.items()))
        total_ms = sum(r.duration for r in cases)
        print(f"{cat:>3} {len(cases):>5}  {text:<58} {total_ms:>9}  {slowest.case_id} {slowest.duration} ms")
    totals = collections.Counter(r.behavior.value for r in results)
    print()
    print(
        f"{len(results)} cases in {wall:.1f} s wall (parallelism {parallelism}); "
        + ", ".join(f"{verdict}: {count}" for verdict, count in sorted(totals.items()))
    )
    print(f"server alive at the end: {alive}")
    timed = [r for r in results if r.report_time]
    if timed:
        print("\ntimed cases (Autobahn reports their duration), slowest first:")
        for r in sorted(timed, key=lambda r: -r.duration)[:12]:
            print(f"  {r.case_id:<8} {r.duration:>6} ms  {r.behavior.value:<13} {r.description[:70]}")
    not_ok = [r for r in results if (r.behavior.value, r.behavior_close.value) != ("OK", "OK")]
    unimplemented = [r for r in not_ok if r.behavior.value == "UNIMPLEMENTED"]
    others = [r for r in not_ok if r.behavior.value != "UNIMPLEMENTED"]
    if unimplemented:
        cats = sorted({category(r.case_id) for r in unimplemented})
        print(f"\nUNIMPLEMENTED: {len(unimplemented)} cases in categories {cats} (permessage-deflate not negotiated)")
    if others:
        print("\nnot OK/OK:")
        for r in others:
            mark = "  " if acceptable(r) else "!!"
            print(
                f"{mark} {r.case_id:<8} {r.behavior.value}/{r.behavior_close.value} "
                f"close={r.remote_close_code} {r.result[:60]} | {r.result_close[:60]}"
            )


if __name__ == "__main__":
    sys.exit(main())
