"""Worker recycling (issue #15): SIGHUP, ``--workers-lifetime`` and ``--workers-max-rss``
replace workers under a steady load without a single failed request.

The supervisor starts the replacement in the same slot and sends the old worker SIGTERM
only once the new one has reported ready; both accept on the shared listening sockets
meanwhile, so the kernel queues connections for whichever accepts first.

The load: client threads sending requests back to back for the whole recycle, half of
them on a new connection per request (is a connection ever refused or dropped while workers
come and go?), half on kept-alive connections (a draining worker must not close a
connection under a request the client is sending: it answers with ``connection: close``
and closes only a connection that has been idle a while). Every exception (refused, reset,
disconnected, timed out) and every non-200 answer is a failure.

App: ``pyapp/workers.py`` (``/pid``, ``/grow``; lifespan startup takes 0.5 s).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import httpx
import pytest

from harness import run_until_exit
from test_serving import gone, parent_of, wait_until

pytestmark = pytest.mark.rust_only

APP = "pyapp.workers:app"


class Load:
    """Client threads sending ``GET /pid`` back to back until the block ends, keeping the
    pid of every answer with the time its request was sent, and every failure.

    "Answers since" counts requests *sent* after a moment: an answer read after it may have
    been written by a worker that has since exited (still in the socket, or in a client
    thread that had not recorded it yet)."""

    def __init__(self, url: str, clients: int = 4):
        self.url = url + "/pid"
        self.pids: list[int] = []
        self._sent: list[float] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(index % 2 == 1,), daemon=True) for index in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _client(self, keep_alive: bool):
        pool = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(timeout=10, limits=pool) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.get(self.url)
                    outcome = int(response.text) if response.status_code == 200 else None
                    failure = None if outcome else f"{response.status_code} {response.text!r}"
                except httpx.HTTPError as err:
                    outcome, failure = None, f"{type(err).__name__}: {err}"
                with self._lock:
                    if failure:
                        self.failures.append(failure)
                    else:
                        self.pids.append(outcome)
                        self._sent.append(sent)

    def pids_sent_after(self, moment: float) -> list[int]:
        """The pids that answered requests sent after ``moment`` (a ``time.monotonic()``)."""
        with self._lock:
            return [pid for pid, sent in zip(self.pids, self._sent) if sent > moment]

    def wait_for_answers(self, count: int) -> set[int]:
        """Waits until ``count`` requests sent from now on have been answered; their pids."""
        moment = time.monotonic()
        wait_until(lambda: len(self.pids_sent_after(moment)) >= count, 20, "the load got no answers")
        return set(self.pids_sent_after(moment))


def workers_of(server) -> set[int]:
    """The live child processes of the supervisor."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if parent_of(int(entry)) == server.pid and not gone(int(entry)):
                children.add(int(entry))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return children


def wait_ready(server, workers: int):
    """Waits until ``workers`` workers have logged that they listen."""
    wait_until(lambda: server.logs().count("listening on") >= workers, 20, server.logs())


def handovers(server, cause: str) -> list[tuple[int, int]]:
    """(new, old) for each worker replaced for ``cause`` so far."""
    pattern = rf"worker process (\d+) is ready: stopping worker process (\d+) \({re.escape(cause)}\)"
    return [(int(new), int(old)) for new, old in re.findall(pattern, server.logs())]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


def sighup_under_load_leaves_the_old_workers_serving(server, broken_deploy):
    """Once both workers serve, breaks the deploy (creates the file ``broken_deploy``) and
    sends SIGHUP under load: no replacement takes over, no request fails, and only the old
    workers answer."""
    wait_ready(server, 2)
    old = workers_of(server)
    broken_deploy.touch()
    with Load(server.url) as load:
        os.kill(server.pid, signal.SIGHUP)
        assert server.wait_for_log("SIGHUP: the workers not replaced yet keep serving", timeout=30), server.logs()
        answered_after = load.wait_for_answers(50)
    assert load.failures == []
    assert handovers(server, "SIGHUP") == []
    assert workers_of(server) == old
    assert answered_after <= old


def test_sighup_replaces_every_worker_one_at_a_time_without_a_failed_request(server_factory):
    server = server_factory(APP, "--workers", "2", "--no-access-log")
    wait_ready(server, 2)
    old = workers_of(server)
    with Load(server.url) as load:
        load.wait_for_answers(50)
        os.kill(server.pid, signal.SIGHUP)
        assert server.wait_for_log("every worker has been replaced (SIGHUP)", timeout=30), server.logs()
        wait_until(lambda: all(gone(pid) for pid in old), 20, "the old workers did not stop")
        answered_after = load.wait_for_answers(50)
    assert load.failures == []
    replaced = handovers(server, "SIGHUP")
    assert {old_pid for _, old_pid in replaced} == old
    new = {new_pid for new_pid, _ in replaced}
    assert answered_after <= new
    assert new <= workers_of(server)
    # One slot at a time: the second replacement started once the first had taken over.
    steps = re.finditer(r"started worker process \d+ to replace|is ready: stopping", server.logs())
    assert [step.group(0).split()[0] for step in steps] == ["started", "is"] * 2
    assert server.stop(timeout=15) == 0
    assert all(gone(pid) for pid in old | new)


def test_a_replacement_that_cannot_start_leaves_the_old_workers_serving(server_factory, tmp_path):
    bad_deploy = tmp_path / "bad-deploy"
    server = server_factory(APP, "--workers", "2", "--no-access-log", env={"FAIL_STARTUP_IF": str(bad_deploy)})
    sighup_under_load_leaves_the_old_workers_serving(server, bad_deploy)
    assert "exited before it was ready" in server.logs()
    # Fixed: the next SIGHUP goes through.
    bad_deploy.unlink()
    os.kill(server.pid, signal.SIGHUP)
    assert server.wait_for_log("every worker has been replaced (SIGHUP)", timeout=30), server.logs()


def test_a_replacement_that_never_becomes_ready_is_killed_and_the_old_workers_keep_serving(
    server_factory, tmp_path
):
    hung_deploy = tmp_path / "hung-deploy"
    server = server_factory(
        APP, "--workers", "2", "--timeout-worker-startup", "2", "--no-access-log",
        env={"HANG_STARTUP_IF": str(hung_deploy)},
    )
    sighup_under_load_leaves_the_old_workers_serving(server, hung_deploy)
    assert re.search(r"worker process \d+ is not ready after --timeout-worker-startup \(2s\): killing it", server.logs())


def test_workers_that_never_become_ready_at_start_fail_the_server(tmp_path):
    hung_deploy = tmp_path / "hung-deploy"
    hung_deploy.touch()
    result = run_until_exit(
        APP, "--workers", "2", "--timeout-worker-startup", "1",
        env={"HANG_STARTUP_IF": str(hung_deploy)}, timeout=30,
    )
    assert not result.timed_out, result.stderr
    assert result.returncode != 0
    assert "is not ready after --timeout-worker-startup (1s): killing it" in result.stderr
    assert "failed to start" in result.stderr


def test_workers_lifetime_replaces_even_a_single_worker_without_a_failed_request(server_factory):
    server = server_factory(APP, "--workers-lifetime", "2", "--no-access-log")
    # One worker, yet under a supervisor: the replacement overlaps the old worker.
    assert "supervisor (pid" in server.logs()
    with Load(server.url) as load:
        wait_until(lambda: len(handovers(server, "--workers-lifetime")) >= 2, 30, server.logs())
        load.wait_for_answers(20)
    assert load.failures == []
    replaced = handovers(server, "--workers-lifetime")
    # Each replacement served once the one before it had gone.
    assert replaced[0][0] == replaced[1][1]
    assert len(set(load.pids)) >= 3
    assert len(workers_of(server)) == 1


def test_a_worker_over_workers_max_rss_is_replaced_and_the_others_are_not(server_factory):
    server = server_factory(APP, "--workers", "2", "--workers-max-rss", "150", "--no-access-log")
    wait_ready(server, 2)
    workers = workers_of(server)
    assert all(rss_mib(pid) < 150 for pid in workers), [rss_mib(pid) for pid in workers]
    with Load(server.url) as load:
        load.wait_for_answers(20)
        grown = int(httpx.get(server.url + "/grow?mib=200", timeout=10).text)
        wait_until(lambda: handovers(server, "--workers-max-rss"), 20, server.logs())
        wait_until(lambda: gone(grown), 20, f"worker process {grown} did not stop")
        answered_after = load.wait_for_answers(50)
    assert load.failures == []
    assert re.search(rf"worker process {grown} uses \d+ MiB, over --workers-max-rss 150: replacing it", server.logs())
    [(replacement, replaced)] = handovers(server, "--workers-max-rss")
    assert replaced == grown
    assert workers_of(server) == (workers - {grown}) | {replacement}
    assert answered_after <= workers_of(server)


def test_recycling_flags_are_refused_with_reload():
    result = run_until_exit(APP, "--reload", "--workers-lifetime", "60")
    assert result.returncode == 2
    assert "--workers-lifetime" in result.stderr
