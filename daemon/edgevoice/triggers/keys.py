"""Linux input keys (python-evdev): a steering-wheel voice button, a USB or Bluetooth remote.

:class:`KeyTrigger` opens an input device — by its name as the kernel gives it (the first
device of that name) or by path — and reports the configured key going down and up. The
device's file is read on the event loop without blocking (``loop.add_reader``) as a stream
of kernel ``struct input_event`` records (:func:`parse_events`); the same reader takes such
records from a FIFO, which is how the tests feed it where ``/dev/uinput`` is missing.

Guarantees:
- Nothing here blocks the loop: opening is a quick ``open``/``ioctl`` (and, for a name, a
  scan of ``/dev/input``); reading happens only when the file is readable.
- A device that is missing at start or vanishes (a remote unplugged: ``ENODEV``, or the end
  of the stream) is reopened after ``backoff[i]`` seconds (the last value repeating) until
  :meth:`KeyTrigger.aclose`; each change (missing, back) is logged once and reported to
  ``on_state``. A key held when the device vanished is reported released.
- Key repeats (value 2) are ignored; a press is reported once, its release once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import struct
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("edgevoice.triggers")

#: ``struct input_event`` on 64-bit Linux: struct timeval (two longs), type, code, value.
EVENT = struct.Struct("@llHHi")
EV_KEY = 1


def key_code(name: str) -> int:
    """The numeric code of an evdev key name; raises LookupError for an unknown one."""
    from evdev import ecodes

    code = ecodes.ecodes.get(name)
    if not isinstance(code, int) or not name.startswith(("KEY_", "BTN_")):
        raise LookupError(f"unknown key {name!r}")
    return code


def parse_events(buffer: bytearray) -> list[tuple[float, int, int, int]]:
    """Take the whole records from the front of ``buffer`` (a partial one stays):
    ``(time, type, code, value)`` each."""
    n = len(buffer) // EVENT.size
    out = []
    for i in range(n):
        sec, usec, etype, code, value = EVENT.unpack_from(buffer, i * EVENT.size)
        out.append((sec + usec / 1e6, etype, code, value))
    del buffer[:n * EVENT.size]
    return out


def find_device(spec: str) -> str:
    """The path of the input device ``spec``: a path as it is (it must exist), else the first
    device whose name is ``spec``. Raises LookupError naming what was looked for."""
    if spec.startswith("/"):
        if not os.path.exists(spec):
            raise LookupError(f"no such input device {spec}")
        return spec
    try:
        from evdev import InputDevice, list_devices
    except ImportError as exc:  # not on Linux
        raise LookupError(f"cannot look up input device {spec!r}: {exc}") from None
    for path in list_devices():
        with contextlib.suppress(OSError):
            dev = InputDevice(path)
            name = dev.name
            dev.close()
            if name == spec:
                return str(path)
    raise LookupError(f"no input device named {spec!r}")


def open_device(path: str) -> int:
    """A non-blocking read descriptor on ``path``: an evdev character device, or a FIFO of
    ``input_event`` records (tests, bridges)."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise OSError(errno.EINVAL, f"{path} is not an input device")
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


class KeyTrigger:
    """Reports ``on_key(pressed, t)`` for one key of one input device, on the loop (``t``:
    ``clock()`` when the record was read). ``on_state(ok, reason)`` on each change of the
    device's presence. See the module docstring."""

    def __init__(self, device: str, key: str, *, on_key: Callable[[bool, float], None],
                 on_state: Callable[[bool, str], None] | None = None,
                 backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0),
                 clock: Callable[[], float] | None = None, label: str = "") -> None:
        self.device = device
        self.code = key_code(key)
        self.key = key
        self.label = label or f"{device} {key}"
        self.on_key = on_key
        self.on_state = on_state
        self.backoff = tuple(backoff) or (1.0,)
        self.state = "starting"  # starting | ok | missing | stopped
        self.reason = ""
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._buffer = bytearray()
        self._lost: asyncio.Future[str] | None = None
        self._down = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(),
                                                            name=f"input {self.label}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_fd()
        self.state = "stopped"

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _set(self, state: str, reason: str) -> None:
        if state == self.state:
            return
        was = self.state
        self.state, self.reason = state, reason
        if state == "missing":
            log.warning("input device %s missing (%s): %s; retrying", self.label,
                        self.device, reason)
        elif state == "ok" and was == "missing":
            log.info("input device %s back", self.label)
        if self.on_state is not None:
            self.on_state(state == "ok", reason)

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            try:
                path = find_device(self.device)
                fd = open_device(path)
            except (OSError, LookupError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self._set("missing", reason)
                await asyncio.sleep(self.backoff[min(attempt, len(self.backoff) - 1)])
                attempt += 1
                continue
            attempt = 0
            loop = asyncio.get_running_loop()
            self._fd = fd
            self._buffer.clear()
            self._lost = loop.create_future()
            loop.add_reader(fd, self._readable)
            self._set("ok", "")
            try:
                reason = await self._lost
            finally:
                self._close_fd()
            if self._down:  # the key cannot come up any more: say it did
                self._down = False
                self.on_key(False, self._now())
            self._set("missing", reason)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, EVENT.size * 64)
        except BlockingIOError:
            return
        except OSError as exc:  # ENODEV: unplugged
            self._lose(exc.strerror or str(exc))
            return
        if not data:
            self._lose("the device closed")
            return
        self._buffer += data
        for _, etype, code, value in parse_events(self._buffer):
            if etype != EV_KEY or code != self.code or value == 2:
                continue
            pressed = value == 1
            if pressed == self._down:
                continue
            self._down = pressed
            try:
                self.on_key(pressed, self._now())
            except Exception:
                log.exception("input device %s: key handler failed", self.label)

    def _lose(self, reason: str) -> None:
        lost = self._lost
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
        if lost is not None and not lost.done():
            lost.set_result(reason)

    def status(self) -> dict[str, Any]:
        return {"device": self.device, "key": self.key, "state": self.state,
                "reason": self.reason or None}


def input_event(code: int, value: int, t: float = 0.0, etype: int = EV_KEY) -> bytes:
    """One kernel ``input_event`` record (what a device sends; tests and bridges write these)."""
    return EVENT.pack(int(t), int((t % 1) * 1e6), etype, code, value)
