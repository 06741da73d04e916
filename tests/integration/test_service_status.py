"""The status socket for real: a StatusServer on a unix socket, queried by the client and by
``edgevoice status`` in a subprocess."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgevoice import __version__
from edgevoice.service.status import (
    StatusError,
    StatusServer,
    StatusUnavailable,
    query_status,
    status_line,
)
from support import until


class LinkState(enum.Enum):
    READY = "ready"


def snapshot() -> dict[str, Any]:
    now = time.time()
    return {
        "state": "idle",
        "since": now - 5,
        "link": {"state": LinkState.READY, "retry_in": None,
                 "endpoint": "wss://res.services.ai.azure.com/?api-key=leak"},
        "devices": {"microphone": {"device": "default", "state": "ok"},
                    "speaker": {"device": "default", "state": "ok"}},
        "wake_words": ["hey_jarvis"],
        "turns": [{"turn": 1, "started": now - 3, "wake_word": "hey_jarvis",
                   "wake_to_send_ms": 11.0, "first_audio_ms": 640.0, "bargein": False,
                   "tools": ["get_time"]}],
        "tool_calls": [{"turn": 1, "name": "get_time", "call_id": "c1", "ok": True, "ms": 2.5,
                        "at": now - 2, "error": None}],
        "nan": float("nan"),
    }


def handling(server: StatusServer) -> int:
    """The connections the server has taken and is serving now. Private, but nothing public
    says it, and a connect() returns before the server has accepted the connection."""
    return len(server._handlers)


async def query(path: Path, timeout: float = 3.0) -> dict[str, Any]:
    return await asyncio.to_thread(query_status, path, timeout)


async def raw(path: Path, request: bytes, timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    writer.write_eof()
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return data


async def test_serves_the_snapshot_with_owner_and_group_only(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.sock"
    async with StatusServer(path, snapshot) as server:
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
        assert [p.name for p in path.parent.iterdir()] == ["status.sock"]  # no temp names left
        reply = await query(path)
        again = await query(path)
        assert server.requests == 2
    assert not path.exists()  # removed on close
    assert reply["version"] == __version__ and reply["pid"] == os.getpid()
    assert reply["state"] == "idle" and reply["link"]["state"] == "ready"
    assert reply["link"]["endpoint"] == "wss://res.services.ai.azure.com/"  # no query
    assert reply["turns"][0]["first_audio_ms"] == 640.0
    assert reply["tool_calls"][0]["name"] == "get_time"
    assert reply["nan"] is None
    assert status_line(reply) == "listening for 'hey jarvis'"
    assert again["turns"][0]["turn"] == reply["turns"][0]["turn"] == 1


@pytest.mark.realtime  # waits out a 0.3 s request timeout, bounded in wall-clock time
async def test_one_request_per_connection_and_bounded_requests(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    async with StatusServer(path, lambda: {"state": "idle"}, request_timeout=0.3) as server:
        assert json.loads(await raw(path, b"status\n"))["state"] == "idle"
        assert json.loads(await raw(path, b""))["state"] == "idle"  # EOF at once: a status too
        assert "unknown request" in json.loads(await raw(path, b"reboot\n"))["error"]
        assert json.loads(await raw(path, b"x" * 5000))["error"] == "request too long"
        # A client that says nothing is dropped after the request timeout; others are served.
        reader, writer = await asyncio.open_unix_connection(str(path))
        t0 = time.monotonic()
        assert (await query(path))["state"] == "idle"
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert 0.2 < time.monotonic() - t0 < 1.5
        writer.close()
        # More idle clients than allowed: the extra ones are closed at once.
        idle = [await asyncio.open_unix_connection(str(path)) for _ in range(8)]
        await until(lambda: handling(server) == 8, 5, "the server to take the idle clients")
        r, w = await asyncio.open_unix_connection(str(path))
        assert await asyncio.wait_for(r.read(), 1) == b""
        w.close()
        for _, w in idle:
            w.close()
        await until(lambda: handling(server) == 0, 5, "the server to let them go")
        assert (await query(path))["state"] == "idle"
        assert server.requests >= 6


async def test_provider_errors_are_answered_not_raised(tmp_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("state")

    path = tmp_path / "s.sock"
    async with StatusServer(path, broken):
        reply = await query(path)
    assert reply["error"] == "status provider failed: KeyError"
    assert reply["version"] == __version__


async def test_close_ends_open_connections(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    server = StatusServer(path, dict, request_timeout=30)
    await server.start()
    reader, writer = await asyncio.open_unix_connection(str(path))
    await until(lambda: handling(server) == 1, 5, "the server to take the connection")
    await asyncio.wait_for(server.close(), 2)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    await server.close()  # idempotent


async def test_stale_socket_is_replaced_live_one_and_other_files_are_not(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays: what a crashed daemon leaves
    async with StatusServer(path, lambda: {"state": "idle"}):
        assert (await query(path))["state"] == "idle"
        with pytest.raises(StatusError, match="another process is serving"):
            await StatusServer(path, dict).start()
        assert (await query(path))["state"] == "idle"  # the live one is untouched

    other = tmp_path / "file"
    other.write_text("keep me")
    with pytest.raises(StatusError, match="exists and is not a socket"):
        await StatusServer(other, dict).start()
    assert other.read_text() == "keep me"

    with pytest.raises(StatusError, match="longer than 107 bytes"):
        await StatusServer(tmp_path / ("x" * 120), dict).start()


@pytest.mark.realtime  # waits out a 0.3 s answer timeout, bounded in wall-clock time
def test_client_errors_say_the_daemon_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(StatusUnavailable, match="not running: no status socket at"):
        query_status(tmp_path / "missing.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    with pytest.raises(StatusUnavailable, match="refuses connections"):
        query_status(tmp_path / "stale.sock")
    (tmp_path / "silent.sock").unlink(missing_ok=True)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(StatusUnavailable, match="did not answer within 0.3 s"):
            query_status(tmp_path / "silent.sock", timeout=0.3)
        assert time.monotonic() - t0 < 1.5
    finally:
        silent.close()


# ----------------------------------------------------------------------------- the CLI


async def edgevoice(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgevoice", *args, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_edgevoice_status_text_and_json(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    async with StatusServer(path, snapshot):
        rc, out, err = await edgevoice("status", "--socket", str(path))
        assert (rc, err) == (0, "")
        assert out.startswith(f"edgevoice {__version__} (pid {os.getpid()}): idle for ")
        assert "status:      listening for 'hey jarvis'" in out
        assert "Voice Live:  ready  wss://res.services.ai.azure.com/" in out
        assert "microphone:  ok  (default)" in out
        assert "wake→send 11 ms  first audio 640 ms" in out and "tools: get_time" in out
        assert "get_time  ok  2 ms  (turn 1)" in out  # 2.5 ms: format() rounds half to even
        assert "leak" not in out

        rc, out, err = await edgevoice("status", "--json", "--socket", str(path))
        assert (rc, err) == (0, "")
        data = json.loads(out)
        assert data["state"] == "idle" and data["turns"][0]["wake_to_send_ms"] == 11.0

        # The socket path from the config file.
        config = tmp_path / "edgevoice.toml"
        config.write_text(f'[service]\nstatus_socket = "{path}"\n')
        rc, out, _ = await edgevoice("status", "--json", "--config", str(config))
        assert rc == 0 and json.loads(out)["pid"] == os.getpid()


async def test_edgevoice_status_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    rc, out, err = await edgevoice("status", "--socket", str(tmp_path / "none.sock"))
    assert rc == 1 and out == ""
    assert err == f"edgevoice: not running: no status socket at {tmp_path / 'none.sock'}\n"
    config = tmp_path / "edgevoice.toml"
    config.write_text('[service]\nstatus_socket = ""\n')
    rc, _, err = await edgevoice("status", "--config", str(config))
    assert rc == 1 and "status socket is turned off" in err
    config.write_text('[service]\nstatus_socket = "relative"\n')
    rc, _, err = await edgevoice("status", "--config", str(config))
    assert rc == 2 and "service.status_socket: must be an absolute path" in err


@pytest.mark.needs_root
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to query as another user")
async def test_other_users_are_refused(tmp_path: Path) -> None:
    """0660 and a 0750 directory: a user outside the owner and group cannot connect."""
    tmp_path.chmod(0o755)
    path = tmp_path / "run" / "status.sock"
    code = ("import sys\nfrom edgevoice.service.status import query_status, StatusUnavailable\n"
            "try:\n    query_status(sys.argv[1])\nexcept StatusUnavailable as e:\n"
            "    print(e)\n")
    async with StatusServer(path, dict):
        path.parent.chmod(0o755)  # even with a traversable directory the socket refuses
        proc = await asyncio.create_subprocess_exec(
            "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            sys.executable, "-c", code, str(path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    if b"Permission denied" in err and b"edgevoice" in err:
        pytest.skip("the test's Python is not readable by user nobody")
    assert proc.returncode == 0, err
    assert "permission denied; run as root or as a member of group edgevoice" in out.decode()
