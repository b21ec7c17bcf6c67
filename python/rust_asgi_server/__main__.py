"""`rust-asgi-server` and `python -m rust_asgi_server`: the binary's command line."""

import signal
import sys

from rust_asgi_server import _engine


def main() -> None:
    # The server drains on SIGINT as the binary does; Python's own handler would raise
    # KeyboardInterrupt once the drain is over, where the binary exits 0.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_engine.main(["rust-asgi-server", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
