"""Autobahn TestSuite cases 1–13 against the echo app, driven by ``kosoku``.

``kosoku`` (PyPI) is Autobahn's fuzzing client re-implemented in Rust; it imports
Autobahn's own Python case files (shipped inside the wheel, lightly auto-translated to
Python 3) and judges the server exactly as Autobahn's ``fuzzingclient`` does, with the same
verdicts. It needs no Docker and no Python 2; it is in tests/requirements.txt, so CI always
runs these cases.

Categories: 1 framing, 2 pings/pongs, 3 reserved bits, 4 opcodes, 5 fragmentation,
6 UTF-8 handling, 7 close handling, 9 limits/performance, 10 misc (Autobahn has no 8).
12/13 (permessage-deflate) are run on the cases of each group with the smaller messages
(x.y.1–x.y.6: 16 B to 4 KiB); the whole of them (up to 1000 × 128 KiB each) takes longer than
CI may, and is run, with timings, by ``tests/autobahn/run.py``.

Every case must be OK, except the ones listed in ``ACCEPTABLE`` below, where Autobahn's
case file itself lists the other verdict as an acceptable outcome (``NON-STRICT`` is
Autobahn's "acceptable, diverges from a SHOULD"; ``INFORMATIONAL`` is "behaviour the spec
leaves open"). A verdict not listed there fails the test, so a regression elsewhere shows.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from harness import start_server

import kosoku

CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
CATEGORIES = {"1", "2", "3", "4", "5", "6", "7", "9", "10"}
# 12.1–12.5: compressed messages of each size and compression settings; 13.1–13.7: the
# negotiation parameters (window bits, no context takeover).
DEFLATE_CASES = [f"12.{group}.{case}" for group in range(1, 6) for case in range(1, 7)] + [
    f"13.{group}.{case}" for group in range(1, 8) for case in range(1, 7)
]
PARALLELISM = min(8, os.cpu_count() or 1)

# case id (or prefix ending in '.') -> (verdicts allowed besides OK/OK, why Autobahn allows it)
ACCEPTABLE: dict[str, tuple[set[tuple[str, str]], str]] = {
    # 3.2–3.4, 4.1.3–4.1.5, 4.2.3–4.2.5, 5.15: a valid text message, then an invalid frame
    # (reserved bits / reserved opcode / continuation without a start). Autobahn: OK if
    # the echo of the valid message arrives before the server fails the connection,
    # NON-STRICT if the connection is failed (1002) first. Here the reader task fails the
    # connection as soon as yawc reports the bad frame, while the app's echo of
    # the message before it is still on its way through the Python loop thread — so
    # which verdict a run gets is timing-dependent.
    **{
        case: ({("NON-STRICT", "OK")}, "connection failed before the preceding echo (Autobahn: NON-STRICT)")
        for case in ("3.2", "3.3", "3.4", "4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5", "5.15")
    },
    # 6.4.1–6.4.4: invalid UTF-8 in the middle of a text message. OK = the connection is
    # failed right at the bad byte ("fail fast"); NON-STRICT = failed only once the
    # message (or frame) is complete. The bridge validates UTF-8 per complete message.
    "6.4.": ({("NON-STRICT", "OK")}, "invalid UTF-8 detected at message end, not fail-fast (Autobahn: NON-STRICT)"),
    # 7.1.6: a 256K message then a close, back to back. Autobahn always reports this case
    # INFORMATIONAL (whether the message is echoed before the close is implementation
    # defined); it records which happened.
    "7.1.6": ({("INFORMATIONAL", "INFORMATIONAL")}, "implementation-defined ordering (always INFORMATIONAL)"),
    # 7.13.1/7.13.2: close codes 5000 and 65535. "Actual events are undefined by the
    # spec": Autobahn always reports INFORMATIONAL.
    "7.13.": ({("INFORMATIONAL", "INFORMATIONAL")}, "close code outside the spec (always INFORMATIONAL)"),
}


def allowed(case_id: str) -> set[tuple[str, str]]:
    verdicts = {("OK", "OK")}
    for key, (extra, _why) in ACCEPTABLE.items():
        if case_id == key or (key.endswith(".") and case_id.startswith(key)):
            verdicts |= extra
    return verdicts


def describe(result) -> str:
    return (
        f"{result.case_id}: behavior={result.behavior.value} close={result.behavior_close.value} "
        f"remote_close={result.remote_close_code} — {result.result} / {result.result_close}"
    )


# rust_only: the allowed verdicts above are this server's; uvicorn 0.54 itself fails 7.1.5
# ("fragment, close, fragment": it answers the fragment after the close with 1002 instead
# of a clean 1000 close), so the validation mode would only report uvicorn's bug.
def run_cases(cases: list[str]) -> dict:
    """Runs the Autobahn cases matching `cases` against the echo app; their results by id."""
    server = start_server("pyapp.ws_apps:echo", "--no-access-log")
    try:
        try:
            results = asyncio.run(
                kosoku.run_fuzzingclient(
                    f"ws://127.0.0.1:{server.port}", cases, None, concurrency=PARALLELISM
                )
            )
        except kosoku.FailureError as failure:
            # kosoku raises when a case is not "passed" (OK, NON-STRICT or INFORMATIONAL);
            # judge its results the same way as a clean run's.
            results = failure.results
            assert results, f"kosoku failed without results: {failure}"
        assert server.alive(), "the server died during the Autobahn run"
    finally:
        server.stop()

    unacceptable = [
        describe(result)
        for result in results
        if (result.behavior.value, result.behavior_close.value) not in allowed(result.case_id)
    ]
    assert not unacceptable, "Autobahn cases with an unacceptable verdict:\n" + "\n".join(unacceptable)
    return {result.case_id: result for result in results}


@pytest.mark.rust_only
@pytest.mark.timeout(600)
def test_autobahn_cases_1_to_10_against_the_echo_app():
    by_id = run_cases(CASES)
    assert {case_id.split(".")[0] for case_id in by_id} == CATEGORIES, sorted(by_id)
    # kosoku 0.1.0 ships 301 cases in these categories; a much smaller count means the
    # run was cut short.
    assert len(by_id) >= 290, f"only {len(by_id)} cases ran"


# rust_only: uvicorn's websockets negotiates these too; the allowed verdicts are this server's.
@pytest.mark.rust_only
@pytest.mark.timeout(600)
def test_autobahn_permessage_deflate_cases_12_and_13_are_compressed_both_ways():
    by_id = run_cases(DEFLATE_CASES)
    assert sorted(by_id) == sorted(DEFLATE_CASES)
