"""Triggers and feedback parts on their own, all real but the pins.

Input keys: there is no /dev/uinput (nor /dev/input) on the test machine, so the tests take
the reader's FIFO path: real kernel ``struct input_event`` records (timeval, type, code,
value) written into a FIFO that :class:`KeyTrigger` opens and reads exactly as it reads an
evdev character device (``open_device`` takes either; the same ``add_reader`` loop parses
both). Unplugging is the FIFO's writer going away (end of stream, as ``ENODEV`` ends a
device) and the FIFO vanishing until it is made again.

GPIO: gpiozero's MockFactory (the one mock the project allows: there are no pins here).
Hooks: real child processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edgevoice.config.hands import LightConfig
from edgevoice.feedback.hooks import Hooks
from edgevoice.feedback.lights import Light
from edgevoice.triggers.gpio import GpioTrigger
from edgevoice.triggers.keys import EV_KEY, KeyTrigger, input_event, key_code
from support import until

pytestmark = pytest.mark.timeout(30)

EV_SYN = 0


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


class Fifo:
    """A FIFO of input_event records; the writer end is what a device's kernel side is."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def plug(self) -> None:
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)

    def unplug(self) -> None:
        os.unlink(self.path)
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None

    def key(self, code: int, value: int) -> None:
        assert self.fd is not None
        # As a keyboard sends it: the key record, then a SYN_REPORT.
        os.write(self.fd, input_event(code, value, time.time())
                 + input_event(0, 0, time.time(), etype=EV_SYN))


async def test_key_presses_are_read_from_input_event_records(tmp_path: Path) -> None:
    fifo = Fifo(tmp_path / "event7")
    fifo.plug()
    got: list[bool] = []
    key = KeyTrigger(str(fifo.path), "KEY_VOICECOMMAND", on_key=lambda p, t: got.append(p),
                     clock=time.monotonic)
    key.start()
    try:
        await until(lambda: key.state == "ok", what="the device opened")
        code = key_code("KEY_VOICECOMMAND")
        assert code == 582
        fifo.key(key_code("KEY_A"), 1)  # another key: ignored
        fifo.key(code, 1)
        fifo.key(code, 2)  # autorepeat: ignored
        fifo.key(code, 2)
        # A record split across two writes is put together.
        record = input_event(code, 0, time.time())
        assert fifo.fd is not None
        os.write(fifo.fd, record[:10])
        await asyncio.sleep(0.05)
        os.write(fifo.fd, record[10:])
        await until(lambda: got == [True, False], what="press and release")
        await asyncio.sleep(0.1)
        assert got == [True, False]
    finally:
        await key.aclose()
        fifo.unplug()


async def test_a_vanished_device_is_reported_once_and_reopened(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgevoice.triggers")
    fifo = Fifo(tmp_path / "remote")
    got: list[bool] = []
    states: list[bool] = []
    # Missing at start: not fatal, retried.
    key = KeyTrigger(str(fifo.path), "KEY_MUTE", on_key=lambda p, t: got.append(p),
                     on_state=lambda ok, why: states.append(ok), backoff=[0.05],
                     clock=time.monotonic, label="remote")
    key.start()
    try:
        await until(lambda: key.state == "missing", what="reported missing")
        await asyncio.sleep(0.4)  # several retries
        fifo.plug()
        await until(lambda: key.state == "ok", what="opened once it exists")
        code = key_code("KEY_MUTE")
        fifo.key(code, 1)
        await until(lambda: got == [True])
        fifo.unplug()  # unplugged while the key is down
        await until(lambda: key.state == "missing", what="the unplug noticed")
        assert got == [True, False]  # the held key is released
        await asyncio.sleep(0.4)
        fifo.plug()
        await until(lambda: key.state == "ok", what="back after the replug")
        fifo.key(code, 1)
        await until(lambda: got == [True, False, True])
    finally:
        await key.aclose()
    assert states == [False, True, False, True]
    missing = [r for r in caplog.records if "missing" in r.getMessage()]
    back = [r for r in caplog.records if "back" in r.getMessage()]
    assert len(missing) == 2 and len(back) == 2, [r.getMessage() for r in caplog.records]


async def test_a_gpio_button_reports_edges_on_the_loop(pins: MockFactory) -> None:
    got: list[tuple[bool, str]] = []
    import threading

    def seen(pressed: bool, t: float) -> None:
        got.append((pressed, threading.current_thread().name))

    trig = GpioTrigger(17, pull_up=True, bounce_ms=0, on_change=seen, clock=time.monotonic,
                       pin_factory=pins)
    try:
        pin = pins.pin(17)
        pin.drive_low()  # pull-up: pressed pulls the pin low
        await until(lambda: len(got) == 1)
        pin.drive_high()
        await until(lambda: len(got) == 2)
        assert [p for p, _ in got] == [True, False]
        assert {name for _, name in got} == {threading.current_thread().name}  # the loop's
    finally:
        trig.close()


async def test_hooks_run_without_a_shell_in_a_limited_environment(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="edgevoice.feedback")
    monkeypatch.setenv("VOICELIVE_API_KEY", "not-for-hooks")
    monkeypatch.setenv("ROOM", "hall")
    out = tmp_path / "env.txt"
    record = [sys.executable, "-c",
              "import os,sys; open(sys.argv[1],'a').write(repr(sorted(os.environ.items()))+'\\n')",
              str(out)]
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    fail = [sys.executable, "-c", "import sys; sys.stderr.write('no light'); sys.exit(3)"]
    hooks = Hooks({"listening": record, "thinking": slow, "error": fail}, timeout_s=0.5,
                  env=["ROOM"])
    hooks.start()
    try:
        t0 = time.monotonic()
        hooks.show("listening", "idle")
        assert time.monotonic() - t0 < 0.01  # nothing waits
        await hooks.idle()
        env = dict(eval(out.read_text()))
        assert env["EDGEVOICE_STATE"] == "listening" and env["EDGEVOICE_PREVIOUS_STATE"] == "idle"
        assert env["ROOM"] == "hall" and "VOICELIVE_API_KEY" not in env
        env.pop("LC_CTYPE", None)  # Python's own locale coercion in the child, not ours
        assert set(env) == {"EDGEVOICE_STATE", "EDGEVOICE_PREVIOUS_STATE", "ROOM", "PATH"}
        # A hook that hangs is killed after its timeout.
        t0 = time.monotonic()
        hooks.show("thinking", "listening")
        await hooks.idle()
        assert time.monotonic() - t0 < 3
        # The same failure three times is logged once.
        for _ in range(3):
            hooks.show("error", "thinking")
            await hooks.idle()
        hooks.show("idle", "error")  # no hook for idle: nothing runs
        await hooks.idle()
    finally:
        await hooks.aclose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "on_error" in w]) == 1, warnings
    assert "exit status 3: no light" in next(w for w in warnings if "on_error" in w)
    assert any("on_thinking" in w and "killed" in w for w in warnings)
    assert hooks.runs == 5 and hooks.failures == 4


async def test_the_newest_state_wins_when_hooks_lag(tmp_path: Path) -> None:
    out = tmp_path / "states.txt"
    record = [sys.executable, "-c",
              "import os,time; time.sleep(0.3); open(os.environ['OUT'],'a')"
              ".write(os.environ['EDGEVOICE_STATE']+'\\n')"]
    os.environ["OUT"] = str(out)
    try:
        hooks = Hooks({s: record for s in ("listening", "thinking", "speaking", "idle")},
                      env=["OUT"])
        hooks.start()
        for s in ("listening", "thinking", "speaking", "idle"):
            hooks.show(s, None)
            await asyncio.sleep(0.02)
        await hooks.idle()
        await hooks.aclose()
    finally:
        del os.environ["OUT"]
    assert out.read_text().split() == ["listening", "idle"]


async def test_an_rgb_light_shows_each_state_without_blocking(pins: MockFactory) -> None:
    light = Light(LightConfig.model_validate({"pins": [5, 6, 13]}), pin_factory=pins)
    light.start()
    try:
        light.show("listening")
        await until(lambda: light.shown == "listening")
        assert [pins.pin(p).state for p in (5, 6, 13)] == [0, 0, 1]  # blue
        t0 = time.monotonic()
        light.show("error")  # a red blink, in the background
        assert time.monotonic() - t0 < 0.01
        await until(lambda: light.shown == "error")
        seen = set()
        for _ in range(40):
            seen.add(pins.pin(5).state)
            await asyncio.sleep(0.025)
        assert seen == {0, 1}  # it blinks
        light.show("idle")
        await until(lambda: light.shown == "idle")
        await asyncio.sleep(0.05)
        assert [pins.pin(p).state for p in (5, 6, 13)] == [0, 0, 0]
    finally:
        await light.aclose()


async def test_a_single_led_pulses_for_thinking(pins: MockFactory) -> None:
    light = Light(LightConfig.model_validate({"pin": 18}), pin_factory=pins)
    light.start()
    try:
        light.show("thinking")
        await until(lambda: light.shown == "thinking")
        levels = set()
        for _ in range(30):
            levels.add(round(pins.pin(18).state, 2))
            await asyncio.sleep(0.03)
        assert len(levels) > 3  # fading, not just on and off
    finally:
        await light.aclose()


def test_input_event_record_layout() -> None:
    rec = input_event(582, 1, 12.5)
    assert len(rec) == 24  # 64-bit struct input_event
    from edgevoice.triggers.keys import parse_events

    buf = bytearray(rec + rec[:5])
    assert parse_events(buf) == [(12.5, EV_KEY, 582, 1)] and len(buf) == 5
