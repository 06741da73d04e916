"""sd_notify for real: a datagram socket bound by the test stands in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgevoice.service.notify import Notifier
from support import until


class NotifySocket:
    """What systemd would read from $NOTIFY_SOCKET: one message per datagram."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def messages(self) -> list[str]:
        """Every datagram received so far. The Notifier sends within the call: once the call
        returned its datagram is queued on this socket, so nothing is waited for."""
        out: list[str] = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield NotifySocket(sock)
    finally:
        sock.close()


def test_ready_status_reloading_stopping_reach_the_socket(notify_socket: NotifySocket) -> None:
    n = Notifier()
    assert n.enabled
    assert n.ready("listening for 'hey jarvis'")
    assert n.status("in conversation")
    assert not n.status("in conversation")  # unchanged: not sent again
    assert n.status("reconnecting in 5 s")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.ready("listening for 'hey jarvis'")
    assert n.stopping()

    ready, conv, reconnect, reloading, ready2, stopping = notify_socket.messages()
    assert ready == "READY=1\nSTATUS=listening for 'hey jarvis'"
    assert conv == "STATUS=in conversation"
    assert reconnect == "STATUS=reconnecting in 5 s"
    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1" and lines[2] == "STATUS=reloading the configuration"
    key, _, usec = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert ready2 == "READY=1\nSTATUS=listening for 'hey jarvis'"
    assert stopping == "STOPPING=1\nSTATUS=stopping"


def test_status_dedup_follows_what_was_sent(notify_socket: NotifySocket) -> None:
    n = Notifier()
    n.status("listening for 'hey jarvis'")
    n.ready("listening for 'hey jarvis'")  # READY carries the same text: no STATUS repeat
    n.status("listening for 'hey jarvis'")
    n.status("multi\nline  text")  # newlines would start bogus assignments
    n.status("multi line text")
    assert notify_socket.messages() == [
        "STATUS=listening for 'hey jarvis'",
        "READY=1\nSTATUS=listening for 'hey jarvis'",
        "STATUS=multi line text",
    ]


def test_abstract_socket_and_extend_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"edgevoice-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().extend_timeout(42.5)
        sock.settimeout(2)
        assert sock.recv(1024) == b"EXTEND_TIMEOUT_USEC=42500000"
    finally:
        sock.close()


def test_without_systemd_everything_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = Notifier()
    assert not n.enabled
    assert not n.ready("x") and not n.status("y") and not n.reloading() and not n.stopping()
    assert not n.watchdog()
    assert n.watchdog_interval() is None


def test_a_failing_socket_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    n = Notifier()
    assert n.ready() is False
    assert n.status("x") is False
    assert n.status("x") is False  # not marked as sent: tried again


def test_watchdog_interval_from_the_environment(notify_socket: NotifySocket,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    n = Notifier()
    assert n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert n.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert n.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # inherited by a child
    assert n.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "abc", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert n.watchdog_interval() is None


@pytest.mark.realtime  # ping times in wall-clock windows
async def test_watchdog_pings_at_half_the_interval_only_while_healthy(
        notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    loop = asyncio.get_running_loop()
    sock = notify_socket.sock
    sock.setblocking(False)
    pings: list[float] = []

    async def receive() -> None:
        while True:
            data = await loop.sock_recv(sock, 1024)
            assert data == b"WATCHDOG=1"
            pings.append(time.monotonic())

    healthy = True
    n = Notifier()
    receiver = asyncio.create_task(receive())
    t0 = time.monotonic()
    dog = asyncio.create_task(n.run_watchdog(lambda: healthy))
    try:
        # The stimulus: 0.55 s healthy, 0.4 s not, 0.35 s healthy again; what is asserted is
        # when the pings came in each of these wall-clock windows.
        await asyncio.sleep(0.55)
        healthy = False
        t_sick = time.monotonic()
        await asyncio.sleep(0.4)
        healthy = True
        t_well = time.monotonic()
        await asyncio.sleep(0.35)
        dog.cancel()
        await asyncio.gather(dog, return_exceptions=True)
        # Every ping sent is queued on the socket: let the receiver take the last ones.
        await until(lambda: len(pings) == n.watchdog_pings, 2, "the receiver to catch up")
    finally:
        dog.cancel()
        receiver.cancel()
        await asyncio.gather(dog, receiver, return_exceptions=True)

    first = [t - t0 for t in pings if t < t_sick]
    sick = [t for t in pings if t_sick + 0.01 < t < t_well]
    again = [t - t_well for t in pings if t >= t_well]
    assert 4 <= len(first) <= 7, first  # at 0, 0.1, … 0.5 s
    assert first[0] < 0.05
    gaps = [b - a for a, b in zip(first, first[1:], strict=False)]
    assert all(0.07 < g < 0.2 for g in gaps), gaps
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.1, abs=0.02)
    assert sick == []  # an unhealthy daemon is left to the watchdog
    assert again and again[0] < 0.2 and 2 <= len(again) <= 5, again
    assert n.watchdog_pings == len(pings)


async def test_watchdog_returns_at_once_without_a_watchdog(notify_socket: NotifySocket) -> None:
    await asyncio.wait_for(Notifier().run_watchdog(lambda: True), 1)
    assert notify_socket.messages() == []


async def test_a_raising_health_check_counts_as_unhealthy(
        notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    checks = 0

    def check() -> bool:
        nonlocal checks
        checks += 1
        raise RuntimeError("capture thread gone")

    n = Notifier()
    dog = asyncio.create_task(n.run_watchdog(check))
    try:
        # Each round that would ping asks the check first: four rounds, four refusals.
        await until(lambda: checks >= 4, 5, "four rounds of the watchdog")
    finally:
        dog.cancel()
        await asyncio.gather(dog, return_exceptions=True)
    assert notify_socket.messages() == []
    assert n.watchdog_pings == 0

