"""The ``pulse`` backend: lower every other playback stream on a PulseAudio server (or
PipeWire's pulse server) and restore exactly what was changed.

How it behaves:

- **Per stream, per channel, exact.** For each sink input it lowers, it remembers the
  original raw volume of every channel (``pa_volume_t``, an integer) and the raw volume it
  read back after lowering. Restoring writes the original integers back, so the stream ends
  bit-for-bit where it was.
- **The user wins.** On restore, a stream whose volume is no longer the one we set (the user
  or another program changed it while ducked) is left alone: their latest choice is kept.
- **New streams are ducked too.** While ducked a watcher thread subscribes to sink-input
  events; a stream that appears is lowered within milliseconds.
- **Vanished streams** are skipped on restore, also when the server restarted meanwhile
  and reused the index for another program's stream.
- **Our own streams are not touched:** those whose ``application.process.id`` is one of
  ``exclude_pids`` (default: this process) or whose ``application.name`` is in
  ``exclude_apps``.
- Streams whose volume cannot be set (e.g. passthrough) are skipped.

Volumes are in PulseAudio's cubic scale, where ``dB = 60 * log10(raw / PA_VOLUME_NORM)``, so
lowering by ``duck_db`` multiplies each channel's raw value by ``10 ** (-duck_db / 60)``.

pulsectl is blocking: every call runs on one :class:`~edgevoice.ducking.base.Worker` daemon
thread that owns the connection and is bounded by ``timeout``. A connection that died (the
server restarted) is re-made and the call retried once; the watcher reconnects by itself.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgevoice.ducking.base import DEFAULT_TIMEOUT, BaseDucker, Worker, describe

if TYPE_CHECKING:
    import pulsectl

log = logging.getLogger("edgevoice.ducking")

PA_VOLUME_NORM = 0x10000  # libpulse's 100 %, the unit of pulsectl's float volumes
_WATCH_POLL = 0.25  # how often the watcher checks whether it should stop, seconds
_WATCH_RETRY = 0.5  # pause before the watcher connects again after losing the server


#: A stream's (``application.process.id``, ``application.name``).
_Owner = tuple[str | None, str | None]


@dataclass(frozen=True)
class _Saved:
    original: tuple[int, ...]
    lowered: tuple[int, ...]
    owner: _Owner  # tells a reused index (server restart) apart


def _owner(stream: Any) -> _Owner:
    props = stream.proplist
    return props.get("application.process.id"), props.get("application.name")


def _raw(volume: Any) -> tuple[int, ...]:
    # pulsectl stores raw/PA_VOLUME_NORM as floats; that division is exact, so this is too.
    return tuple(int(round(v * PA_VOLUME_NORM)) for v in volume.values)


class PulseDucker(BaseDucker):
    """Duck other streams on a PulseAudio or PipeWire-pulse server (see module docs)."""

    backend = "pulse"

    def __init__(
        self,
        *,
        duck_db: float = 15.0,
        server: str | None = None,
        exclude_pids: Iterable[int] | None = None,
        exclude_apps: Iterable[str] = (),
        client_name: str = "edgevoice-ducking",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``server``: a PulseAudio server string (``unix:/path``, ``tcp:host``); None uses
        libpulse's own lookup (``$PULSE_SERVER``, client.conf, the user's runtime socket).
        ``exclude_pids`` defaults to this process."""
        super().__init__(timeout=timeout)
        if duck_db < 0:
            raise ValueError(f"ducking (pulse): duck_db must be >= 0, got {duck_db}")
        try:
            import pulsectl  # noqa: F401 - imported here so other backends need no libpulse
        except (ImportError, OSError) as exc:
            raise RuntimeError(f"ducking (pulse): pulsectl is not usable: {describe(exc)}") from exc
        self.duck_db = float(duck_db)
        self.server = server
        self.exclude_pids = frozenset(
            str(p) for p in ((os.getpid(),) if exclude_pids is None else exclude_pids))
        self.exclude_apps = frozenset(exclude_apps)
        self.client_name = client_name
        self._factor = 10.0 ** (-self.duck_db / 60.0)
        self._saved: dict[int, _Saved] = {}
        self._saved_lock = threading.Lock()  # the worker and restore_sync both touch _saved
        self._active = False  # while True, streams that appear get ducked
        self._worker = Worker("edgevoice-pulse-duck")
        self._pulse: pulsectl.Pulse | None = None  # used only on the worker thread
        self._watch_stop: threading.Event | None = None

    # -- async side (event loop) ---------------------------------------------------------

    async def _duck(self) -> None:
        self._active = True
        await self._worker.call(self._duck_all)
        self._start_watcher()

    async def _unduck(self) -> None:
        self._active = False
        self._stop_watcher()
        await self._worker.call(self._restore_on_worker)

    def _release(self) -> None:
        self._stop_watcher()
        if self._pulse is not None:
            self._worker.submit(self._disconnect)

    # -- worker thread -------------------------------------------------------------------

    def _conn(self) -> pulsectl.Pulse:
        if self._pulse is None or not self._pulse.connected:
            self._disconnect()
            self._pulse = self._connect(self.client_name)
        return self._pulse

    def _connect(self, name: str) -> pulsectl.Pulse:
        import pulsectl

        # No connect(timeout=...): pulsectl 24.12 then always waits the whole timeout. The
        # callers bound the wait instead (Worker call timeout, restore_sync's join, daemon
        # threads), and a missing socket fails at once anyway.
        pulse = pulsectl.Pulse(name, server=self.server, connect=False)
        try:
            pulse.connect(autospawn=False)  # never start a sound server of our own
        except BaseException:
            pulse.close()
            raise
        return pulse

    def _disconnect(self) -> None:
        if self._pulse is not None:
            pulse, self._pulse = self._pulse, None
            pulse.close()

    def _with_conn(self, step: Callable[[pulsectl.Pulse], None]) -> None:
        """Run ``step`` on the kept connection; if that connection turns out dead (the
        server restarted), run it once more on a fresh one."""
        import pulsectl

        reused = self._pulse is not None
        try:
            step(self._conn())
        except pulsectl.PulseError:
            self._disconnect()
            if not reused:
                raise
            step(self._conn())

    def _duck_all(self) -> None:
        """Lower every stream not lowered yet (also the watcher's re-scan)."""
        if self._active:  # a re-scan queued before unduck() must not duck after the restore
            self._with_conn(self._duck_streams)

    def _duck_streams(self, pulse: pulsectl.Pulse) -> None:
        for stream in pulse.sink_input_list():
            saved = self._saved.get(stream.index)
            owner = _owner(stream)
            if (saved is not None and saved.owner == owner) or self._excluded(owner):
                continue
            self._duck_one(pulse, stream, owner)

    def _duck_one(self, pulse: pulsectl.Pulse, stream: Any, owner: _Owner) -> None:
        import pulsectl

        original = _raw(stream.volume)
        target = [v * self._factor / PA_VOLUME_NORM for v in original]
        try:
            pulse.sink_input_volume_set(stream.index, pulsectl.PulseVolumeInfo(target))
            lowered = _raw(pulse.sink_input_info(stream.index).volume)
        except pulsectl.PulseIndexError:
            return  # it ended meanwhile
        except pulsectl.PulseOperationFailed as exc:
            log.debug("ducking (pulse): stream %d (%s) not ducked: %s", stream.index,
                      stream.proplist.get("application.name", "?"), describe(exc))
            return
        with self._saved_lock:
            self._saved[stream.index] = _Saved(original, lowered, owner)
        log.debug("ducking (pulse): stream %d (%s) %s -> %s", stream.index,
                  stream.proplist.get("application.name", "?"), original, lowered)

    def _excluded(self, owner: _Owner) -> bool:
        """Whether a stream of ``owner`` (see :func:`_owner`) must never be ducked."""
        pid, app = owner
        return pid in self.exclude_pids or app in self.exclude_apps

    def _restore_on_worker(self) -> None:
        if self._saved:
            self._with_conn(self._restore_with)

    def _restore_with(self, pulse: pulsectl.Pulse) -> None:
        """Put back every remembered stream; raise if any could not be (they stay
        remembered for a retry)."""
        import pulsectl

        with self._saved_lock:
            pending = dict(self._saved)
        for index, saved in pending.items():
            try:
                stream = pulse.sink_input_info(index)
                now = _raw(stream.volume)
                if _owner(stream) != saved.owner:
                    pass  # the index now belongs to another stream: ours is gone
                elif now == saved.lowered:
                    pulse.sink_input_volume_set(
                        index, pulsectl.PulseVolumeInfo(
                            [v / PA_VOLUME_NORM for v in saved.original]))
                else:
                    log.info("ducking (pulse): stream %d changed while ducked (%s, not our "
                             "%s); keeping the new volume", index, now, saved.lowered)
            except pulsectl.PulseIndexError:
                pass  # the stream ended while ducked
            with self._saved_lock:
                self._saved.pop(index, None)

    def _restore_blocking(self, timeout: float) -> None:
        # Its own connection: the worker's may be busy or stuck, and is not thread-safe.
        self._active = False
        self._stop_watcher()
        if not self._saved:
            return
        pulse = self._connect(f"{self.client_name}-restore")
        try:
            self._restore_with(pulse)
        finally:
            pulse.close()

    # -- watcher thread: duck streams that appear while ducked ---------------------------

    def _start_watcher(self) -> None:
        self._stop_watcher()
        stop = self._watch_stop = threading.Event()
        threading.Thread(target=self._watch, args=(stop,), name="edgevoice-pulse-watch",
                         daemon=True).start()

    def _stop_watcher(self) -> None:
        # Does not wait: the thread notices within _WATCH_POLL and ends by itself.
        if self._watch_stop is not None:
            self._watch_stop.set()
            self._watch_stop = None

    def _watch(self, stop: threading.Event) -> None:
        import pulsectl

        seen_new = False

        def on_event(event: Any) -> None:
            nonlocal seen_new
            if event.t == pulsectl.PulseEventTypeEnum.new:
                seen_new = True
                raise pulsectl.PulseLoopStop

        warned = False
        while not stop.is_set():
            try:
                with self._connect(f"{self.client_name}-watch") as pulse:
                    pulse.event_mask_set("sink_input")
                    pulse.event_callback_set(on_event)
                    warned = False
                    seen_new = True  # re-scan for streams that came before the subscription
                    while not stop.is_set():
                        if seen_new:
                            seen_new = False
                            self._worker.submit(self._duck_all).add_done_callback(_log_rescan)
                        pulse.event_listen(timeout=_WATCH_POLL)
            except Exception as exc:  # e.g. the server restarted: connect again
                if stop.is_set():
                    return
                if not warned:
                    log.warning("ducking (pulse): watching for new streams failed, retrying: "
                                "%s", describe(exc))
                    warned = True
                stop.wait(_WATCH_RETRY)


def _log_rescan(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("ducking (pulse): ducking a new stream failed: %s", describe(exc))
