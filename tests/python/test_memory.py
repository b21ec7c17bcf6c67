"""Large bodies stream with backpressure: the server's memory stays flat.

Each test starts a fresh server, warms it up, takes its RSS as the baseline, then watches the
peak RSS (VmHWM after resetting it, and VmRSS sampled every 10 ms) while a big body flows.
"""

import threading
import time

import httpx

MB = 1024 * 1024
ALLOWED_GROWTH_MB = 30


class PeakRss:
    """Samples the server's VmRSS in a thread; ``peak_kb`` also includes VmHWM when resettable."""

    def __init__(self, server):
        self.server = server
        self.sampled_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.sampled_max = max(self.sampled_max, self.server.rss_kb())
            except (OSError, KeyError):
                return
            self._stop.wait(0.01)

    def __enter__(self):
        self.hwm_reset = self.server.reset_peak_rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = self.sampled_max
        if self.hwm_reset:
            self.peak_kb = max(self.peak_kb, self.server.hwm_kb())


def baseline_rss_kb(server) -> int:
    time.sleep(0.3)
    return server.rss_kb()


def test_50mb_upload_does_not_grow_server_memory(server_factory):
    server = server_factory("pyapp.conformance:app")
    total = 50 * MB
    piece = b"u" * (256 * 1024)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):  # warm up allocator, buffers and the app
            assert client.post("/count", content=b"w" * MB).json()["length"] == MB
        baseline = baseline_rss_kb(server)

        def body():
            for _ in range(total // len(piece)):
                yield piece

        with PeakRss(server) as peak:
            response = client.post("/count", content=body())
    assert response.json()["length"] == total
    growth_mb = (peak.peak_kb - baseline) / 1024
    assert growth_mb < ALLOWED_GROWTH_MB, f"server RSS grew by {growth_mb:.1f} MB during a 50 MB upload"


def test_100mb_download_read_slowly_does_not_grow_server_memory(server_factory):
    server = server_factory("pyapp.conformance:app")
    total = 100 * MB
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for _ in range(3):
            assert len(client.get(f"/download?size={MB}").content) == MB
        baseline = baseline_rss_kb(server)
        received = 0
        with PeakRss(server) as peak:
            with client.stream("GET", f"/download?size={total}&chunk=65536") as response:
                for chunk in response.iter_raw(chunk_size=MB):
                    received += len(chunk)
                    time.sleep(0.03)  # a slow reader: ~3 s for the whole body
    assert received == total
    growth_mb = (peak.peak_kb - baseline) / 1024
    assert growth_mb < ALLOWED_GROWTH_MB, (
        f"server RSS grew by {growth_mb:.1f} MB while a slow client read 100 MB (response buffered?)"
    )
