"""``rust-asgi-server --help`` reads like uvicorn's: uvicorn's flag names, every flag described,
and the default of each flag that has one."""

import re
import subprocess

import pytest

from harness import SERVER_CMD

pytestmark = pytest.mark.rust_only

UVICORN_FLAGS = [
    "--host", "--port", "--uds", "--fd", "--workers", "--reload", "--root-path", "--proxy-headers",
    "--forwarded-allow-ips", "--timeout-keep-alive", "--limit-concurrency", "--limit-max-requests",
    "--backlog", "--ssl-keyfile", "--ssl-certfile", "--ssl-keyfile-password", "--ssl-ca-certs",
    "--header", "--server-header", "--no-server-header", "--date-header", "--no-date-header",
    "--env-file", "--lifespan", "--log-level", "--access-log", "--no-access-log",
    "--timeout-graceful-shutdown",
]

# Flags taking a value that have a default, which the help must state.
DEFAULTED = [
    "--host", "--port", "--workers", "--backlog", "--root-path", "--forwarded-allow-ips",
    "--timeout-keep-alive", "--timeout-graceful-shutdown", "--limit-concurrency",
    "--limit-max-requests", "--lifespan", "--log-level", "--http", "--ws-max-size", "--ws-per-message-deflate", "--loop",
    "--workers-max-rss", "--workers-lifetime", "--metrics-bind", "--timeout-worker-startup", "--runtime-mode",
]

# On/off pairs: the help of the one that is on by default says so.
DEFAULT_ON = ["--access-log", "--server-header", "--date-header", "--proxy-headers"]

FLAG_LINE = re.compile(r"^\s+(?:-\w, )?(--[\w-]+)")
# A value of a flag listed under "Possible values:" without saying what it does.
BARE_VALUE = re.compile(r"^\s+- [\w.-]+$", re.MULTILINE)


@pytest.fixture(scope="module")
def help_text() -> str:
    result = subprocess.run([*SERVER_CMD, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def flags(help_text) -> dict[str, str]:
    """Each long flag of ``--help``, with the text that describes it."""
    options = help_text.split("\nOptions:\n", 1)[1]
    described: dict[str, list[str]] = {}
    current = None
    for line in options.splitlines():
        match = FLAG_LINE.match(line)
        if match:
            current = described.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line.strip())
    return {flag: " ".join(text).strip() for flag, text in described.items()}


def test_every_flag_and_listed_value_has_a_description(flags, help_text):
    assert len(flags) > 40
    undescribed = [flag for flag, text in flags.items() if not text]
    assert not undescribed
    assert not BARE_VALUE.findall(help_text)


def test_uvicorns_flags_are_all_there(flags):
    missing = [flag for flag in UVICORN_FLAGS if flag not in flags]
    assert not missing


def test_defaults_are_stated(flags):
    unstated = [flag for flag in DEFAULTED if "default" not in flags[flag]]
    assert not unstated
    assert flags["--timeout-keep-alive"].endswith("[default: 5]")
    for flag in DEFAULT_ON:
        assert "(the default)" in flags[flag], flag
        assert "default" not in flags[flag.replace("--", "--no-", 1)], flag
