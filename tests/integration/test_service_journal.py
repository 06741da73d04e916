"""Logging to the journal for real: the test binds journald's socket and reads the records.

libsystemd sends each record as one datagram to /run/systemd/journal/socket. Where a real
journald owns that socket the tests that need it are skipped; they never touch it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevoice.secrets import Secret, protect
from edgevoice.service.logs import journal_stream_is_stderr, setup_logging

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
KEY = "sk-journal-" + uuid.uuid4().hex


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: ``KEY=value\\n``, or ``KEY\\n<le64 length><value>\\n``."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", datagram, nl + 1)
            start = nl + 1 + 8
            value = datagram[start:start + size]
            i = start + size + 1
        fields[key.decode()] = value.decode("utf-8", "replace")
    return fields


class FakeJournal:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw: list[bytes] = []

    def records(self) -> list[dict[str, str]]:
        """Every record received so far. libsystemd sends a record within the logging call
        (and a child has sent all of its records once it exited): they are all queued on the
        socket already, so nothing is waited for."""
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.raw.append(self.sock.recv(1 << 20))
        return [parse_native(d) for d in self.raw]


@pytest.fixture
def fake_journal() -> Iterator[FakeJournal]:
    """Bind /run/systemd/journal/socket for the test (skipped when journald owns it)."""
    directory = JOURNAL_SOCKET.parent
    created = [p for p in (directory.parent, directory) if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"cannot create {directory}: {exc.strerror}")
    lock = (Path(tempfile.gettempdir()) / "edgevoice-journal-tests.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one test run at a time on this machine
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if JOURNAL_SOCKET.exists() or JOURNAL_SOCKET.is_symlink():
            if not stat.S_ISSOCK(JOURNAL_SOCKET.lstat().st_mode):
                pytest.skip(f"{JOURNAL_SOCKET} exists and is not a socket")
            try:
                sock.connect(str(JOURNAL_SOCKET))
                pytest.skip("a real journald listens on the journal socket")
            except ConnectionRefusedError:
                JOURNAL_SOCKET.unlink()  # stale, from an interrupted run
            sock.close()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(JOURNAL_SOCKET))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield FakeJournal(sock)
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(JOURNAL_SOCKET.lstat().st_mode):
                JOURNAL_SOCKET.unlink()
        lock.close()
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Give the test the root logger and restore it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for h in handlers:
        if getattr(h, "_edgevoice", False):
            root.removeHandler(h)
    try:
        yield
    finally:
        for h in list(root.handlers):
            if getattr(h, "_edgevoice", False):
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)


def ours(records: list[dict[str, str]], marker: str) -> list[dict[str, str]]:
    return [r for r in records if marker in r.get("MESSAGE", "")]


@pytest.mark.needs_root  # binds journald's socket under /run
def test_records_carry_message_priority_identifier_and_our_fields(
        fake_journal: FakeJournal, root_logging: None) -> None:
    setup_logging("debug", journal=True)
    log = logging.getLogger("edgevoice.test")
    marker = uuid.uuid4().hex
    log.info("turn done %s", marker, extra={"state": "idle", "turn": 3, "tool": "set_light",
                                           "latency_ms": 412.5, "bargein": False,
                                           "wake-word": "hey_jarvis", "tools": ["a", "b"],
                                           "conn": object()})
    log.warning("second %s", marker)
    log.debug("third %s", marker)

    first, second, third = ours(fake_journal.records(), marker)
    assert first["MESSAGE"] == f"turn done {marker}"
    assert first["PRIORITY"] == "6" and second["PRIORITY"] == "4" and third["PRIORITY"] == "7"
    assert first["SYSLOG_IDENTIFIER"] == "edgevoice"
    assert first["LOGGER"] == "edgevoice.test"
    assert first["CODE_FUNC"] == "test_records_carry_message_priority_identifier_and_our_fields"
    assert first["CODE_FILE"] == __file__ and int(first["CODE_LINE"]) > 0
    assert first["EDGEVOICE_STATE"] == "idle"
    assert first["EDGEVOICE_TURN"] == "3"
    assert first["EDGEVOICE_TOOL"] == "set_light"
    assert first["EDGEVOICE_LATENCY_MS"] == "412.5"
    assert first["EDGEVOICE_BARGEIN"] == "false"
    assert first["EDGEVOICE_WAKE_WORD"] == "hey_jarvis"
    assert first["EDGEVOICE_TOOLS"] == "a,b"
    assert "EDGEVOICE_CONN" not in first  # not a plain value: left out
    for record in (first, second, third):
        assert all(k.replace("_", "").isalnum() and k.isupper() for k in record), record
        assert "msg" not in record and "args" not in record and "exc_info" not in record
    assert not any(k.startswith("EDGEVOICE_") for k in second)


@pytest.mark.needs_root  # binds journald's socket under /run
def test_no_secret_reaches_the_journal(fake_journal: FakeJournal, root_logging: None) -> None:
    setup_logging("debug", journal=True)
    protect(Secret(KEY))
    log = logging.getLogger("edgevoice.test")
    marker = uuid.uuid4().hex
    log.info("key is %s %s", KEY, marker)
    log.info(f"inline {KEY} {marker}")
    log.info("extra %s", marker, extra={"token": KEY, "items": ["x", KEY], "secret": Secret(KEY)})
    try:
        raise ValueError(f"server refused key {KEY}")
    except ValueError:
        log.exception("failed %s", marker)
    log.warning("arg object %s %s", {"api-key": KEY}, marker)

    records = ours(fake_journal.records(), marker)
    assert len(records) == 5
    for datagram in fake_journal.raw:
        assert KEY.encode() not in datagram
    assert records[0]["MESSAGE"] == f"key is *** {marker}"
    assert records[2]["EDGEVOICE_TOKEN"] == "***" and records[2]["EDGEVOICE_ITEMS"] == "x,***"
    assert records[2]["EDGEVOICE_SECRET"] == "***"
    assert "ValueError: server refused key ***" in records[3]["EXCEPTION_TEXT"]
    assert records[3]["PRIORITY"] == "3"


@pytest.mark.needs_root  # binds journald's socket under /run
def test_auto_mode_follows_journal_stream(fake_journal: FakeJournal, tmp_path: Path) -> None:
    """A daemon whose stderr is the stream systemd named in $JOURNAL_STREAM logs to the
    journal; the same environment with stderr elsewhere logs to stderr."""
    marker = uuid.uuid4().hex
    code = ("import logging, sys\n"
            "from edgevoice.service.logs import setup_logging\n"
            "setup_logging('info')\n"
            f"logging.getLogger('edgevoice.x').info('hello {marker}', extra={{'turn': 7}})\n")
    err = tmp_path / "stderr.txt"
    with err.open("wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", code], stderr=f, env=env, check=True, timeout=60)
    (record,) = ours(fake_journal.records(), marker)
    assert record["EDGEVOICE_TURN"] == "7" and record["SYSLOG_IDENTIFIER"] == "edgevoice"
    assert err.read_text() == ""

    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True, timeout=60)
    assert f"INFO edgevoice.x: hello {marker} turn=7" in other.stderr
    assert ours(fake_journal.records(), marker) == [record]


def test_journal_stream_must_name_stderr(tmp_path: Path) -> None:
    f = (tmp_path / "x").open("w")
    st = os.fstat(f.fileno())
    assert journal_stream_is_stderr({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f)
    assert not journal_stream_is_stderr({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f)
    assert not journal_stream_is_stderr({"JOURNAL_STREAM": "garbage"}, f)
    assert not journal_stream_is_stderr({}, f)
    f.close()


@pytest.mark.needs_root  # binds journald's socket under /run
def test_tool_calls_reach_the_journal_with_arguments_and_confirmation(
        fake_journal: FakeJournal, root_logging: None) -> None:
    import asyncio
    import json

    from edgevoice.tools import ToolBox, ToolSpec
    from edgevoice.tools.confirm import Answer

    setup_logging("info", journal=True)
    marker = uuid.uuid4().hex
    spec = ToolSpec.model_validate({
        "name": f"unlock_{marker}", "confirm": True,
        "parameters": {"type": "object", "properties": {"door": {
            "type": "string", "pattern": "^[a-z\\n ]+$", "maxLength": 40}},
            "required": ["door"]},
        "command": {"argv": ["/bin/true", "{door}"]}})
    now = [100.0]
    asked: list[str] = []

    async def ask(call_id: str, prompt: str, window_s: float) -> Answer:
        asked.append(prompt)
        return Answer("no" if len(asked) % 2 else "yes", now[0])

    box = ToolBox([spec], clock=lambda: now[0], ask=ask)
    arguments = json.dumps({"door": "front\nforged line"})
    out = asyncio.run(box.call("c1", spec.name, arguments))
    records = [r for r in fake_journal.records() if r.get("EDGEVOICE_TOOL") == spec.name]
    # A newline in an argv value is refused before the user is even asked.
    assert [r["EDGEVOICE_OUTCOME"] for r in records] == ["invalid"], out
    assert asked == []
    assert "\n" not in records[0]["MESSAGE"] and "forged line" in records[0]["MESSAGE"]
    clean = json.dumps({"door": "front"})

    async def again() -> str:
        assert json.loads(await box.call("c3", spec.name, clean))["ok"] is False  # "no"
        return await box.call("c4", spec.name, clean, source="offline")  # "yes"

    assert json.loads(asyncio.run(again()))["ok"] is True
    records = [r for r in fake_journal.records() if r.get("EDGEVOICE_TOOL") == spec.name]
    declined, done = records[-2:]
    assert declined["EDGEVOICE_OUTCOME"] == "declined"
    # Who asked: the model, or a command understood on the device.
    assert (declined["EDGEVOICE_SOURCE"], done["EDGEVOICE_SOURCE"]) == ("model", "offline")
    assert "(offline)" in done["MESSAGE"]
    assert declined["EDGEVOICE_CONFIRMATION"] == "no"
    assert done["EDGEVOICE_ARGUMENTS"] == '{"door":"front"}'
    assert done["EDGEVOICE_OUTCOME"] == "ok" and int(done["EDGEVOICE_DURATION_MS"]) >= 0
    assert done["EDGEVOICE_CONFIRMED_BY"] == "user"
    assert done["EDGEVOICE_CONFIRMATION"] == "yes"
    assert done["EDGEVOICE_CONFIRMED_AT"][:2] == "20"  # an ISO 8601 date and time
    for r in records:
        assert "\n" not in r["MESSAGE"] and "\n" not in r.get("EDGEVOICE_ARGUMENTS", "")
