"""The ASGI TLS extension (issue #15): ``scope["extensions"]["tls"]`` on HTTPS requests,
with the client's certificate chain when it sent one, and no ``tls`` key over plain HTTP.

App: ``pyapp/operations.py``; ``/tls`` answers the scope's extension as JSON.
"""

import datetime
import ipaddress
import json
import re
import ssl
import subprocess

import httpx
import pytest

from harness import READY_TIMEOUT, REPO_ROOT, SERVER_CMD, ServerProcess, _StreamDrain, server_env

pytestmark = pytest.mark.rust_only

APP = "pyapp.operations:app"
READY = re.compile(r"listening on https://127\.0\.0\.1:(\d+)")


def pem_files(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by
    the CA; returns the paths (ca, server cert, server key, client cert, client key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def certificate(subject, key, issuer, issuer_key, *extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem, cert, key):
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(name("test CA"), ca_key, name("test CA"), ca_key,
                     (x509.BasicConstraints(ca=True, path_length=None), True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        name("localhost"), server_key, ca.subject, ca_key,
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = certificate(
        name("client one"), client_key, ca.subject, ca_key,
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
    )
    ca_path, _ = write("ca", ca, ca_key)
    return (ca_path, *write("server", server, server_key), *write("client", client, client_key))


@pytest.fixture
def https_server(tmp_path):
    """The app over HTTPS asking for a client certificate (optional), and the PEM files."""
    ca, cert, key, client_cert, client_key = pem_files(tmp_path)
    command = [
        *SERVER_CMD, APP, "--bind", "127.0.0.1:0", "--ssl-certfile", str(cert), "--ssl-keyfile",
        str(key), "--ssl-ca-certs", str(ca), "--ssl-cert-reqs", "1",
    ]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=server_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = ServerProcess(proc, command, _StreamDrain(proc.stderr), _StreamDrain(proc.stdout))
    try:
        match = server.log.wait_for(READY, READY_TIMEOUT, alive=server.alive)
        assert match, server.logs()
        yield f"https://127.0.0.1:{match.group(1)}", ca, cert, client_cert, client_key
    finally:
        server.stop(timeout=10)


def der(pem_text: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_text)


@pytest.mark.parametrize("http2", [False, True])
def test_https_requests_carry_the_tls_extension_with_the_client_chain(https_server, http2):
    url, ca, cert, client_cert, client_key = https_server
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client_cert), str(client_key))
    with httpx.Client(verify=context, http2=http2, timeout=10) as client:
        response = client.get(url + "/tls")
        assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        tls = response.json()
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0
    leaf, *intermediates = [der(pem) for pem in tls["client_cert_chain"]]
    assert leaf == der(client_cert.read_text())
    # OpenSSL sends the CA too when it can build the chain to it.
    assert intermediates in ([], [der(ca.read_text())])
    assert der(tls["server_cert"]) == der(cert.read_text())
    assert tls["client_cert_error"] is None
    assert "client_cert_name" in tls


def test_without_a_client_certificate_the_chain_is_empty(https_server):
    url, ca, *_ = https_server
    tls = httpx.get(url + "/tls", verify=ssl.create_default_context(cafile=str(ca)), timeout=10).json()
    assert tls["client_cert_chain"] == []
    assert tls["tls_version"] == 0x0304  # both ends speak TLS 1.3


def test_a_websocket_over_tls_carries_the_extension_too(https_server):
    from websockets.sync.client import connect

    url, ca, cert, client_cert, client_key = https_server
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client_cert), str(client_key))
    with connect(url.replace("https", "wss") + "/tls", ssl=context, open_timeout=10) as websocket:
        tls = json.loads(websocket.recv(timeout=10))
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert der(tls["client_cert_chain"][0]) == der(client_cert.read_text())


def test_plain_http_has_no_tls_extension(server_factory):
    server = server_factory(APP)
    assert httpx.get(server.url + "/tls", timeout=5).json() is None
    from websockets.sync.client import connect

    with connect(server.url.replace("http", "ws") + "/tls", open_timeout=10) as websocket:
        assert json.loads(websocket.recv(timeout=10)) is None
