"""Signals of a service: SIGTERM/SIGINT stop the daemon, SIGHUP reloads its configuration.

systemd sends SIGTERM on ``systemctl stop`` (then SIGKILL after ``TimeoutStopSec=``) and, through
the unit's ``ExecReload=``, SIGHUP on ``systemctl reload``. The handlers run on the event loop
(``loop.add_signal_handler``), so the callbacks may touch the daemon's state directly; they
must return quickly (schedule the real work as a task).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNALS = (signal.SIGHUP,)


def handle_signals(loop: asyncio.AbstractEventLoop, *, stop: Callable[[], None],
                   reload: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop()`` on SIGTERM/SIGINT and ``reload()`` on SIGHUP.
    Returns a function that removes the handlers again (the default actions come back)."""
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
        installed.append(sig)
    for sig in RELOAD_SIGNALS:
        loop.add_signal_handler(sig, reload)
        installed.append(sig)

    def remove() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        installed.clear()

    return remove
