"""Talking to systemd: readiness, status text, reload and stop notices, and the watchdog.

:class:`Notifier` wraps ``sd_notify`` (``systemd.daemon.notify`` from systemd-python; a few
lines of plain socket code where that module is missing). Guarantees:

- Every method is a no-op returning False when ``$NOTIFY_SOCKET`` is unset (not run by
  systemd), so the daemon calls them unconditionally.
- No method raises: a failing send is logged once at debug level and reported as False.
- :meth:`Notifier.status` sends only when the text changed since the last one sent.
- :meth:`Notifier.run_watchdog` pets the watchdog from the event loop itself, at half the
  interval systemd asked for, and only while ``healthy()`` says so; a stuck loop or an
  unhealthy daemon stops the pings and systemd restarts the service.

Lifecycle messages, in the order the daemon sends them::

    READY=1 + STATUS=…           once the devices are open and the wake word listens
    STATUS=…                     on every change of what the daemon is doing (deduplicated)
    RELOADING=1 + MONOTONIC_USEC on SIGHUP, then READY=1 when the new config is in effect
    STOPPING=1                   on SIGTERM/SIGINT, before closing things down
    WATCHDOG=1                   every WatchdogSec/2 while healthy
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("edgevoice.service")

try:  # systemd-python: a C binding to libsystemd's sd_notify
    from systemd.daemon import notify as _sd_notify
except ImportError:  # pragma: no cover - only where systemd-python is not installed
    _sd_notify = None


def _send_datagram(message: str) -> bool:
    """sd_notify in plain Python (used only without systemd-python)."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(message.encode("utf-8"), address)
    return True


def _default_send(message: str) -> bool:
    if _sd_notify is not None:
        return bool(_sd_notify(message))
    return _send_datagram(message)


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """STATUS= is one line: newlines would start new (bogus) assignments."""
    return " ".join(text.split())


class Notifier:
    """sd_notify messages for one daemon process.

    ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` are read from the process environment
    at each call, as libsystemd does.

    Use it from the event loop's thread: the STATUS deduplication is not locked.
    """

    def __init__(self) -> None:
        self._last_status: str | None = None
        self._warned = False
        self.watchdog_pings = 0  #: WATCHDOG=1 messages sent so far (for status and tests)

    # ------------------------------------------------------------------ plumbing

    @property
    def enabled(self) -> bool:
        """True when a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one message. Never raises; False when not sent."""
        if not self.enabled or not assignments:
            return False
        try:
            return _default_send("\n".join(assignments))
        except Exception as exc:  # the notify socket must never take the daemon down
            if not self._warned:
                self._warned = True
                log.debug("sd_notify failed: %s: %s", type(exc).__name__, exc)
            return False

    def _notify_with_status(self, status: str | None, *assignments: str) -> bool:
        """``assignments`` plus ``STATUS=status`` (one line) when given; a status that was
        sent becomes the last one, so :meth:`status` does not repeat it."""
        if status is not None:
            status = _one_line(status)
            assignments = (*assignments, f"STATUS={status}")
        sent = self.notify(*assignments)
        if sent and status is not None:
            self._last_status = status
        return sent

    # ------------------------------------------------------------------ lifecycle

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (with STATUS= when given): start-up or a reload is complete."""
        return self._notify_with_status(status, "READY=1")

    def status(self, text: str) -> bool:
        """STATUS=text, only when it differs from the last text sent. True when sent."""
        text = _one_line(text)
        if text == self._last_status:
            return False
        sent = self.notify(f"STATUS={text}")
        if sent:
            self._last_status = text
        return sent

    def reloading(self, status: str | None = "reloading the configuration") -> bool:
        """RELOADING=1 with MONOTONIC_USEC= (which Type=notify-reload requires; harmless for
        Type=notify). Send :meth:`ready` when the new configuration is in effect."""
        return self._notify_with_status(status, "RELOADING=1",
                                        f"MONOTONIC_USEC={_monotonic_usec()}")

    def stopping(self, status: str | None = "stopping") -> bool:
        """STOPPING=1: shutting down (systemd stops expecting watchdog pings)."""
        return self._notify_with_status(status, "STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: ask for more time to start, reload or stop (a slow start-up,
        e.g. loading models on a small board)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    # ------------------------------------------------------------------ watchdog

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds that systemd asked for (``$WATCHDOG_USEC``), or
        None when there is none, it is malformed, or ``$WATCHDOG_PID`` names another process
        (the variables were inherited by a child)."""
        if not self.enabled:
            return None
        raw = os.environ.get("WATCHDOG_USEC", "")
        try:
            usec = int(raw)
        except ValueError:
            return None
        if usec <= 0:
            return None
        pid = os.environ.get("WATCHDOG_PID", "")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 1_000_000

    def watchdog(self) -> bool:
        """One WATCHDOG=1 ping."""
        sent = self.notify("WATCHDOG=1")
        if sent:
            self.watchdog_pings += 1
        return sent

    async def run_watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog at half its interval while ``healthy()`` returns True.

        Returns at once when systemd set no watchdog; otherwise runs until cancelled. An
        unhealthy daemon (``healthy()`` False or raising) gets no pings: the change is logged
        once each way, and systemd restarts the service when the timeout runs out. Runs on
        the event loop on purpose: a blocked loop stops the pings too."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        period = interval / 2
        was_healthy = True
        while True:
            try:
                ok = bool(healthy())
            except Exception as exc:
                log.debug("watchdog health check raised %s: %s", type(exc).__name__, exc)
                ok = False
            if ok:
                self.watchdog()
                if not was_healthy:
                    log.warning("watchdog: healthy again, pinging systemd")
            elif was_healthy:
                log.warning("watchdog: daemon unhealthy, no longer pinging systemd "
                            "(it restarts the service after %g s)", interval)
            was_healthy = ok
            await asyncio.sleep(period)
