"""Loading the app: import errors, interface detection, --factory, dotted names, environment."""

import textwrap

import httpx
import pytest

from harness import free_port, run_until_exit


# import errors -----------------------------------------------------------------------------


def assert_failed_start(result, *names):
    assert not result.timed_out, f"the server kept running instead of exiting:\n{result.stderr}"
    assert result.returncode != 0, f"exit code 0 on a failed start:\n{result.stderr}"
    assert result.elapsed < 10, f"took {result.elapsed:.1f}s to give up"
    assert "panicked" not in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, f"{name!r} not named on stderr:\n{result.stderr}"


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "broken_syntax.py").write_text(
        textwrap.dedent(
            """\
            async def app(scope, receive, send):
                return (
            """
        )
    )
    (tmp_path / "not_callable.py").write_text('app = {"this": "is not an ASGI app"}\n')
    (tmp_path / "raises_on_import.py").write_text('raise ValueError("configuration missing: DATABASE_URL")\n')
    return tmp_path


def test_missing_module_exits_nonzero_naming_it():
    result = run_until_exit("no_such_module_xyz:app")
    assert_failed_start(result, "no_such_module_xyz")


def test_missing_attribute_exits_nonzero_naming_it():
    result = run_until_exit("pyapp.demo:no_such_attribute")
    assert_failed_start(result, "no_such_attribute")


def test_syntax_error_exits_nonzero_with_python_traceback(app_dir):
    result = run_until_exit("broken_syntax:app", "--app-dir", str(app_dir))
    assert_failed_start(result, "SyntaxError", "broken_syntax.py", "Traceback (most recent call last)")


def test_exception_at_import_exits_nonzero_with_its_message(app_dir):
    result = run_until_exit("raises_on_import:app", "--app-dir", str(app_dir))
    assert_failed_start(result, "ValueError", "configuration missing: DATABASE_URL")


@pytest.mark.rust_only  # uvicorn only fails when the first request calls it
def test_non_callable_attribute_exits_nonzero_naming_it(app_dir):
    result = run_until_exit("not_callable:app", "--app-dir", str(app_dir))
    assert_failed_start(result, "not_callable:app", "callable")


@pytest.mark.rust_only  # uvicorn words it differently
def test_import_string_without_colon_exits_nonzero_explaining_the_form():
    result = run_until_exit("pyapp.demo")
    assert_failed_start(result, "module:attribute")


# interface detection ------------------------------------------------------------------------


def interface_of(server) -> dict:
    response = httpx.get(server.url + "/probe")
    assert response.status_code == 200, response.text
    return response.json()


def test_asgi3_coroutine_function_is_served(server_factory):
    server = server_factory("pyapp.interfaces:asgi3_function")
    assert interface_of(server)["interface"] == "asgi3-function"


def test_asgi3_callable_instance_is_served(server_factory):
    server = server_factory("pyapp.interfaces:asgi3_instance")
    assert interface_of(server)["interface"] == "asgi3-instance"


def test_asgi2_double_callable_class_is_detected(server_factory):
    server = server_factory("pyapp.interfaces:Asgi2App")
    assert interface_of(server)["interface"] == "asgi2-class"


def test_asgi2_class_with_explicit_interface_flag(server_factory):
    server = server_factory("pyapp.interfaces:Asgi2App", "--interface", "asgi2")
    assert interface_of(server)["interface"] == "asgi2-class"


@pytest.mark.rust_only  # uvicorn's auto mode takes a plain (non-async) function for ASGI 2
def test_plain_function_returning_coroutine_is_detected_as_asgi3(server_factory):
    server = server_factory("pyapp.interfaces:plain_function")
    assert interface_of(server)["interface"] == "plain-function"


def test_plain_function_returning_coroutine_with_asgi3_flag(server_factory):
    server = server_factory("pyapp.interfaces:plain_function", "--interface", "asgi3")
    assert interface_of(server)["interface"] == "plain-function"


def test_factory_flag_calls_the_factory_once(server_factory):
    server = server_factory("pyapp.interfaces:create_app", "--factory")
    first = interface_of(server)
    second = interface_of(server)
    assert first["interface"] == "factory"
    assert first["factory_calls"] == second["factory_calls"] == 1


def test_dotted_attribute_path_is_resolved(server_factory):
    server = server_factory("pyapp.interfaces:namespace.app")
    assert interface_of(server)["interface"] == "dotted-attribute"


def test_app_dir_makes_a_module_outside_cwd_importable(server_factory, tmp_path):
    (tmp_path / "outside_app.py").write_text(
        textwrap.dedent(
            """\
            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"from app-dir"})
            """
        )
    )
    server = server_factory("outside_app:app", "--app-dir", str(tmp_path), "--lifespan", "off")
    assert httpx.get(server.url + "/").text == "from app-dir"


# environment ------------------------------------------------------------------------------


def test_process_environment_reaches_the_app(server_factory):
    server = server_factory("pyapp.conformance:app", env={"RUST_ASGI_TEST_MARKER": "marker-4711"})
    data = httpx.get(server.url + "/env?name=RUST_ASGI_TEST_MARKER").json()
    assert data["value"] == "marker-4711"


def test_host_and_port_flags_work_like_uvicorn(server_factory):
    port = free_port()
    server = server_factory("pyapp.conformance:app", "--host", "127.0.0.1", "--port", str(port))
    assert server.port == port
    assert httpx.get(f"http://127.0.0.1:{port}/ok").text == "ok"
