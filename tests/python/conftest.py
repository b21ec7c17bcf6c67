"""pytest wiring for the black-box suite: markers and the server fixtures (see harness.py)."""

import pytest

from harness import IS_UVICORN, IS_WHEEL, SERVER_CMD, ServerProcess, start_server

# test_wheel.py compares the installed wheel with the binary: it belongs to the wheel stage of
# scripts/test.sh (RUST_ASGI_SERVER_CMD set, pytest run from the wheel's virtualenv), which
# runs it explicitly; without a wheel there is nothing for it to test.
collect_ignore = [] if IS_WHEEL else ["test_wheel.py"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "rust_only: checks something only rust-asgi-server does (skipped with SERVER_UNDER_TEST=uvicorn)",
    )


def pytest_collection_modifyitems(config, items):
    if not IS_UVICORN:
        return
    skip = pytest.mark.skip(reason="rust-asgi-server specific; not checked against uvicorn")
    for item in items:
        if "rust_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    target = "uvicorn (validation mode)" if IS_UVICORN else " ".join(SERVER_CMD)
    return f"server under test: {target}"


@pytest.fixture
def server_factory():
    """Start fresh servers inside one test; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def factory(app: str, *args: str, **kwargs) -> ServerProcess:
        server = start_server(app, *args, **kwargs)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def conformance_server():
    """One shared server for the raw ASGI conformance app (tests use distinct keys)."""
    server = start_server("pyapp.conformance:app")
    yield server
    server.stop()


