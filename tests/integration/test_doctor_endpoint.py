"""The doctor's endpoint steps before Voice Live: a name that does not resolve, and a TLS
server whose certificate the system does not trust (a real TLS listener on 127.0.0.1 with a
self-signed certificate): each is its own failure with its own fix, and the steps after it
are not tried."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from edgevoice.config import parse_config
from edgevoice.service.doctor import Options, check_endpoint

pytestmark = pytest.mark.timeout(60)


def cfg(endpoint: str):
    return parse_config(f'[voicelive]\nendpoint = "{endpoint}"\n', "test.toml")


async def test_a_name_that_does_not_resolve() -> None:
    check = await check_endpoint(cfg("wss://voicelive.invalid"), Options(timeout_s=5))
    assert check.status == "fail" and check.detail.startswith("cannot resolve voicelive.invalid")
    assert "DNS" in check.fix


async def test_an_untrusted_certificate_fails_at_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handshakes = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        check = await check_endpoint(cfg(f"wss://127.0.0.1:{port}"), Options(timeout_s=5))
    finally:
        server.close()
        await server.wait_closed()
    assert check.status == "fail", check
    assert check.detail.startswith(f"TLS to 127.0.0.1:{port} failed:")
    assert "CERTIFICATE_VERIFY_FAILED" in check.detail and "CA certificates" in check.fix
    assert check.data["addresses"] == ["127.0.0.1"] and handshakes == 0
