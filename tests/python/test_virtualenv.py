"""An active virtualenv (VIRTUAL_ENV) decides where the embedded interpreter imports from.

A fresh venv gets its own starlette from PyPI; the server, started with VIRTUAL_ENV pointing
at it, must import that copy (not the test suite's own) and report the venv as sys.prefix.
"""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness import start_server

pytestmark = pytest.mark.rust_only  # uvicorn uses the interpreter that runs it, not VIRTUAL_ENV


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", "starlette"],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, f"pip install starlette failed:\n{pip.stdout}\n{pip.stderr}"
    return venv.resolve()


@pytest.fixture(scope="module")
def probe(fresh_venv) -> dict:
    server = start_server("pyapp.venv_probe:app", env={"VIRTUAL_ENV": str(fresh_venv)})
    try:
        return httpx.get(server.url + "/").json()
    finally:
        server.stop()


def test_starlette_is_imported_from_the_virtualenv(fresh_venv, probe):
    assert probe["import_error"] is None, probe
    starlette_file = Path(probe["starlette_file"]).resolve()
    assert fresh_venv in starlette_file.parents, (
        f"starlette came from {starlette_file}, not from the venv {fresh_venv}"
    )


def test_sys_prefix_is_the_virtualenv(fresh_venv, probe):
    assert Path(probe["sys_prefix"]).resolve() == fresh_venv


def test_virtual_env_variable_reaches_the_app(fresh_venv, probe):
    assert probe["virtual_env"] == str(fresh_venv)
