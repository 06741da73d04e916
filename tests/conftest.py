"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import DBusDaemon, PulseServer, espeak, need_tool, stop_process

UNIT = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in tests/unit is ``fast`` (scripts/test --fast); other files opt in."""
    for item in items:
        if item.path.is_relative_to(UNIT):
            item.add_marker(pytest.mark.fast)


@pytest.fixture
def speech() -> Callable[..., bytes]:
    """``speech(text, rate=16000, voice="en-us")``: real espeak-ng speech as PCM16 mono."""
    return espeak


@pytest.fixture
def pulse() -> Iterator[PulseServer]:
    need_tool("pulseaudio", "apt-get install pulseaudio (or run scripts/setup)")
    need_tool("pactl", "apt-get install pulseaudio-utils (or run scripts/setup)")
    server = PulseServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def dbus() -> Iterator[DBusDaemon]:
    """A private D-Bus bus; start MPRIS players on it with ``dbus.player(name, status)``."""
    need_tool("dbus-daemon", "apt-get install dbus-daemon (or run scripts/setup)")
    need_tool("dbus-send", "apt-get install dbus-bin (or run scripts/setup)")
    bus = DBusDaemon()
    try:
        bus.start()
        yield bus
    finally:
        bus.stop()


@pytest.fixture
def players() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        stop_process(proc)
