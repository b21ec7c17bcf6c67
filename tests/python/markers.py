"""Marker files written by the apps in ``pyapp/lifespan_apps.py`` (``LIFESPAN_MARKERS``),
and small helpers the lifespan and shutdown tests share."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from harness import IS_UVICORN, ServerProcess


class Markers:
    """The directory the apps write their markers to."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict:
        return {"LIFESPAN_MARKERS": str(self.dir)}

    def exists(self, name: str) -> bool:
        return (self.dir / name).exists()

    def read(self, name: str) -> dict:
        return json.loads((self.dir / name).read_text())

    def lines(self, name: str) -> list[str]:
        path = self.dir / name
        return path.read_text().split() if path.exists() else []

    def wait(self, name: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exists(name):
                return self.read(name)
            time.sleep(0.01)
        raise AssertionError(f"the app did not write marker {name!r} within {timeout}s; "
                             f"markers: {sorted(p.name for p in self.dir.iterdir())}")


def wait_exit(server: ServerProcess, timeout: float) -> float | None:
    """Seconds until the server process exits (from now), or None if it is still running."""
    started = time.monotonic()
    try:
        server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def connect_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


class InBackground:
    """Runs ``fn`` in a thread; ``result()`` re-raises what it raised."""

    def __init__(self, fn, *args):
        self._result = None
        self._error = None
        self.finished_at = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn, *args):
        try:
            self._result = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            self._error = err
        finally:
            self.finished_at = time.monotonic()

    def result(self, timeout: float = 30.0):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background call still running after {timeout}s")
        if self._error is not None:
            raise self._error
        return self._result


def assert_clean_exit(server: ServerProcess, sig: int = signal.SIGTERM):
    """Exit code 0 after a graceful stop (issue #4). uvicorn ≥ 0.29 re-raises the signal
    after its clean shutdown, so in validation mode death by that signal counts as clean."""
    allowed = {0, -sig} if IS_UVICORN else {0}
    assert server.proc.returncode in allowed, (
        f"exit code {server.proc.returncode} after a graceful stop:\n{server.logs()}"
    )
