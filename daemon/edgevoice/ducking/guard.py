"""Never leave audio ducked: :func:`ducking_guard`.

What is guaranteed, and how:

1. **Normal end, exception, task cancellation** — the guarded block's exit awaits
   ``ducker.close()`` (bounded); a second cancellation during that restore falls back to the
   blocking ``restore_sync()``. A daemon that turns SIGTERM into cancelling its main task
   (``loop.add_signal_handler``) is covered by this path.
2. **SIGTERM / SIGHUP nobody handles** — if, when the first guard is entered on the main
   thread, a signal still has its default disposition (which would kill the process with no
   cleanup at all), the guard installs a handler that runs ``restore_sync()`` for every
   guarded ducker and then re-delivers the signal with the default disposition, so the
   process still dies of it (the exit status stays "killed by SIGTERM"). A handler set
   later (e.g. ``loop.add_signal_handler``) replaces this one; the handler is removed again
   when the last guard exits.
3. **Interpreter exit** (``sys.exit``, an unhandled exception, ``atexit``) — an ``atexit``
   hook runs ``restore_sync()`` for every ducker still guarded.

Each ``restore_sync()`` is bounded by the ducker's timeout and never raises. Not covered:
SIGKILL, a crash of the interpreter itself, or power loss — nothing in-process can run
then; a PulseAudio stream's volume dies with the stream, an ALSA mixer keeps it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from types import FrameType

from edgevoice.ducking.base import Ducker

log = logging.getLogger("edgevoice.ducking")

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_guarded: list[Ducker] = []  # a list, not a set: the same ducker may be guarded twice
_installed: set[signal.Signals] = set()  # signals whose default disposition we replaced
_atexit_registered = False


@contextlib.asynccontextmanager
async def ducking_guard(ducker: Ducker) -> AsyncIterator[Ducker]:
    """Guard ``ducker`` for the duration of the block: whatever ends the block or the
    process (see module docs), the ducker is restored. Yields ``ducker``."""
    _enter(ducker)
    try:
        yield ducker
    finally:
        try:
            await ducker.close()
        finally:
            _leave(ducker)


def restore_all() -> None:
    """Blocking restore of every guarded ducker (each bounded, never raises)."""
    for ducker in list(_guarded):
        try:
            ducker.restore_sync()
        except Exception:  # restore_sync must not raise; be sure anyway
            log.exception("ducking (%s): restore at exit failed", ducker.backend)


def _enter(ducker: Ducker) -> None:
    global _atexit_registered
    _guarded.append(ducker)
    if not _atexit_registered:
        atexit.register(restore_all)
        _atexit_registered = True
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for sig in _SIGNALS:
        if sig not in _installed and signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _on_signal)
            _installed.add(sig)


def _leave(ducker: Ducker) -> None:
    with contextlib.suppress(ValueError):
        _guarded.remove(ducker)
    if _guarded or threading.current_thread() is not threading.main_thread():
        return
    for sig in _installed:
        if signal.getsignal(sig) is _on_signal:  # leave a handler someone set later alone
            signal.signal(sig, signal.SIG_DFL)
    _installed.clear()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    log.info("ducking: %s received, restoring audio before exit",
             signal.Signals(signum).name)
    restore_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
