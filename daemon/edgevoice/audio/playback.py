"""Reply playback: wire audio → device-rate PCM in a jitter buffer → PyAudio callback.

The loop side (:meth:`Playback.feed`) decodes Voice Live output formats (pcm16 at 24/16/8 kHz,
G.711 μ-law/A-law), resamples each reply item with its own streaming soxr resampler to the
device rate, duplicates to the device's channel count and appends the bytes to the jitter
buffer. The PortAudio callback takes one period from the buffer under a lock (a few small
slices; nothing big is allocated), counts per item how many frames it handed to the device,
and fills any shortfall with silence.

Guarantees:

* :meth:`Playback.stop` empties the buffer under the callback's lock, so the callback's next
  call — at most one device period later on a device that paces itself — emits silence.
  Audio the device had already accepted (its output latency, ``stats.output_latency_ms``)
  still plays; the measured time from ``stop()`` to that next callback is
  ``stats.last_stop_ms`` (the tests measure it, see the report in the test module).
* ``played_frames(item)`` counts only frames the callback handed to PortAudio; after
  ``stop()`` returns it no longer changes for items fed before, so it is what a barge-in
  reports as the played length.
* The buffer holds at most ``max_buffer_ms``; audio beyond it is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyaudio

from edgevoice.audio.convert import Resampler, decode, level_dbfs, wire_rate
from edgevoice.audio.devices import (
    DeviceInfo,
    DeviceState,
    OpenedStream,
    SupervisedStream,
    keep_callback_thread_state,
    period_frames,
)

FirstAudioHook = Callable[[str, float], None]

_MAX_TRACKED_ITEMS = 64  # per-item counters kept for barge-in reports
_MAX_REFERENCE = 256  # echo-guard reference periods (~5 s at 20 ms)


@dataclass(frozen=True)
class PlaybackStats:
    """A snapshot for status output and latency figures."""

    state: str
    device: str | None
    device_rate: int | None
    device_channels: int | None
    queued_ms: float
    underruns: int
    device_underflows: int
    dropped_ms: float
    last_stop_ms: float | None
    max_stop_ms: float | None
    output_latency_ms: float | None
    reopens: int
    last_error: str | None


class Playback(SupervisedStream):
    """An output stream fed by a flushable jitter buffer.

    Call everything on the event loop. Playback of newly fed audio starts once
    ``prebuffer_ms`` is queued, the item is :meth:`finish`-ed, or ``prebuffer_ms`` has passed
    since the first byte — whichever is first. An item that runs dry before it is finished
    (the network fell behind) waits for ``rebuffer_ms`` the same way before it resumes, so a
    late stream costs one gap rather than one per packet; the first audio still plays at once
    when ``prebuffer_ms`` is 0. ``underruns`` counts callbacks that found the buffer empty
    while an item was still open (fed, not finished); ``device_underflows`` counts
    PortAudio's own flags.

    ``rate``/``channels`` force the device format; by default 24 kHz mono (the Voice Live
    default, no resampling) is tried, then 48 kHz, 44.1 kHz, 16 kHz and the native rate.
    While the device is missing, fed audio is dropped (counted in ``dropped_ms``) rather
    than played late; a device that fails mid-reply loses what was queued.
    """

    kind = "output"

    def __init__(
        self,
        *,
        device: str | None = "default",
        rate: int | None = None,
        channels: int | None = None,
        period_ms: int = 20,
        prebuffer_ms: int = 60,
        rebuffer_ms: int = 100,
        max_buffer_ms: int = 120_000,
        backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0),
        stall_timeout: float = 2.0,
        on_first_audio: FirstAudioHook | None = None,
        role: str = "speaker",
        logger: logging.Logger | None = None,
        on_state: Callable[[DeviceState, str], None] | None = None,
    ) -> None:
        super().__init__(device=device, role=role, backoff=backoff, stall_timeout=stall_timeout,
                         logger=logger, on_state=on_state)
        self.preferred_rate = rate
        self.preferred_channels = channels
        self.period_ms = period_ms
        self.prebuffer_ms = prebuffer_ms
        self.rebuffer_ms = rebuffer_ms
        self._rebuffering = False  # an item ran dry: wait for rebuffer_ms before resuming
        self.max_buffer_ms = max_buffer_ms
        self.on_first_audio = on_first_audio
        self.device_rate = 0
        self.device_channels = 0
        self._frame_bytes = 2
        self.dropped_ms = 0.0
        self.first_audio_at: dict[str, float] = {}
        # (time it becomes audible, level dBFS) of each period with reply audio, for the echo
        # guard; bounded, the oldest entries fall off if nobody takes them.
        self._reference: deque[tuple[float, float]] = deque(maxlen=_MAX_REFERENCE)
        self.stop_latencies: list[float] = []
        # Shared with the callback thread; guarded by _lock.
        self._lock = threading.Lock()
        self._segments: deque[tuple[str, bytes]] = deque()
        self._head_offset = 0
        self._queued = 0  # bytes
        self._armed = False  # prebuffer satisfied: the callback may take audio
        self._open_item: str | None = None  # last fed item, until finish()
        self._played: OrderedDict[str, int] = OrderedDict()  # frames handed per item
        self._stop_at: float | None = None
        self._paused = False
        self._silence = b""
        self._generation_cb = -1
        self.underruns = 0
        self.device_underflows = 0
        # Loop-only state.
        self._resamplers: dict[str, tuple[str, Resampler]] = {}
        self._arm_timer: asyncio.TimerHandle | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    # -- loop API --

    def feed(self, item_id: str, data: bytes, fmt: str) -> None:
        """Queue wire audio of ``fmt`` (a Voice Live output format) for ``item_id``.
        Raises ValueError for an unknown format. Never blocks."""
        in_rate = wire_rate(fmt)
        pcm = decode(data, fmt)
        if self.state is not DeviceState.OK or self.device_rate == 0:
            self.dropped_ms += len(pcm) / 2 * 1000.0 / in_rate
            return
        entry = self._resamplers.get(item_id)
        if entry is None or entry[0] != fmt:
            entry = (fmt, Resampler(in_rate, self.device_rate))
            self._resamplers[item_id] = entry
        self._enqueue(item_id, entry[1].process(pcm), open_item=True)

    def finish(self, item_id: str) -> None:
        """The item is complete: flush its resampler tail and let it play out without
        waiting for the prebuffer. Unknown items are ignored."""
        entry = self._resamplers.pop(item_id, None)
        tail = entry[1].flush() if entry is not None else b""
        with self._lock:
            if self._open_item == item_id:
                self._open_item = None
        self._rebuffering = False
        self._enqueue(item_id, tail, open_item=False)
        self._arm()

    def stop(self) -> int:
        """Drop everything queued; the callback emits silence from its next call on (see the
        module docstring for the bound). Returns the number of frames dropped. Idempotent."""
        return self._flush(user_stop=True)

    def _flush(self, user_stop: bool) -> int:
        """Empty the buffer and the per-item state; return the frames dropped. Only a
        ``user_stop`` is timed (``stop_latencies``); a flush because the device was lost
        clears any pending measurement instead, so it never counts as a stop latency."""
        with self._lock:
            dropped = self._queued // self._frame_bytes if self._frame_bytes else 0
            self._segments.clear()
            self._head_offset = 0
            self._queued = 0
            self._armed = False
            self._open_item = None
            if not user_stop:
                self._stop_at = None
            elif not self._paused:  # a pause already silenced it: that was the stop
                self._stop_at = time.monotonic()
            self._paused = False
        self._resamplers.clear()
        self._rebuffering = False
        self._cancel_arm_timer()
        self._drained.set()
        return dropped

    def pause(self) -> None:
        """Silence the speaker from the next callback on but keep what is queued (a possible
        barge-in that is not confirmed yet); :meth:`resume` plays on from the same sample,
        :meth:`stop` drops it. ``played_frames`` does not change while paused. Idempotent."""
        with self._lock:
            if not self._paused:
                self._paused = True
                self._stop_at = time.monotonic()

    def resume(self) -> None:
        """Undo :meth:`pause`. Idempotent."""
        with self._lock:
            self._paused = False
            self._stop_at = None

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def played_frames(self, item_id: str) -> int:
        """Device frames of ``item_id`` handed to the device so far (0 if unknown)."""
        with self._lock:
            return self._played.get(item_id, 0)

    def played_ms(self, item_id: str) -> float:
        """Milliseconds of ``item_id`` handed to the device so far."""
        if not self.device_rate:
            return 0.0
        return self.played_frames(item_id) * 1000.0 / self.device_rate

    def take_reference(self) -> list[tuple[float, float]]:
        """The ``(t, level_dbfs)`` of periods handed to the device since the last call: ``t``
        is when the period reaches the DAC (``time.monotonic()`` plus PortAudio's reported
        output delay). At most the last few seconds are kept."""
        if not self._reference:  # nothing played since (a deque's length needs no lock)
            return []
        with self._lock:
            out = list(self._reference)
            self._reference.clear()
        return out

    @property
    def drained(self) -> bool:
        """True when nothing is queued (everything fed has been handed to the device)."""
        with self._lock:
            return self._queued == 0

    async def wait_drained(self) -> None:
        """Return once everything fed so far has been handed to the device (immediately if
        nothing is queued). Call :meth:`finish` first, or an open item's last few
        milliseconds stay in its resampler. Cancel-safe."""
        while True:
            self._drained.clear()
            if self.drained:
                self._drained.set()
                return
            await self._drained.wait()

    @property
    def stats(self) -> PlaybackStats:
        opened = self.opened
        latency = None
        if opened is not None:
            try:
                latency = opened.stream.get_output_latency() * 1000.0
            except OSError:
                latency = None
        rate = self.device_rate or 1
        return PlaybackStats(
            state=self.state.value,
            device=opened.device.name if opened else None,
            device_rate=self.device_rate or None,
            device_channels=self.device_channels or None,
            queued_ms=self._queued / self._frame_bytes * 1000.0 / rate,
            underruns=self.underruns,
            device_underflows=self.device_underflows,
            dropped_ms=self.dropped_ms,
            last_stop_ms=self.stop_latencies[-1] * 1000 if self.stop_latencies else None,
            max_stop_ms=max(self.stop_latencies) * 1000 if self.stop_latencies else None,
            output_latency_ms=latency,
            reopens=self.reopen_count,
            last_error=self.last_error,
        )

    # -- loop internals --

    def _enqueue(self, item_id: str, pcm: bytes, open_item: bool) -> None:
        if self.device_channels > 1 and pcm:
            mono = np.frombuffer(pcm, dtype="<i2")
            pcm = np.repeat(mono, self.device_channels).tobytes()
        max_bytes = self.max_buffer_ms * self.device_rate // 1000 * self._frame_bytes
        with self._lock:
            if pcm:
                room = max(0, max_bytes - self._queued)
                if len(pcm) > room:
                    lost = (len(pcm) - room) // self._frame_bytes
                    self.dropped_ms += lost * 1000.0 / self.device_rate
                    pcm = pcm[: room - room % self._frame_bytes]
            if pcm:
                self._segments.append((item_id, pcm))
                self._queued += len(pcm)
                self._played.setdefault(item_id, 0)
                while len(self._played) > _MAX_TRACKED_ITEMS:
                    self._played.popitem(last=False)
            if open_item:
                self._open_item = item_id
            queued, armed = self._queued, self._armed
        if queued:
            self._drained.clear()
        if not armed and queued:
            wait_ms = self.rebuffer_ms if self._rebuffering else self.prebuffer_ms
            prebuffer = wait_ms * self.device_rate // 1000 * self._frame_bytes
            if queued >= prebuffer:
                self._arm()
            elif self._arm_timer is None and self._loop is not None:
                self._arm_timer = self._loop.call_later(wait_ms / 1000, self._arm)

    def _arm(self) -> None:
        self._cancel_arm_timer()
        with self._lock:
            self._armed = self._queued > 0

    def _cancel_arm_timer(self) -> None:
        if self._arm_timer is not None:
            self._arm_timer.cancel()
            self._arm_timer = None

    def _start_rebuffering(self) -> None:
        self._rebuffering = True

    def _notify_drained(self) -> None:
        if self.drained:
            self._drained.set()

    def _notify_first_audio(self, item_id: str, t: float) -> None:
        self.first_audio_at[item_id] = t
        while len(self.first_audio_at) > _MAX_TRACKED_ITEMS:
            del self.first_audio_at[next(iter(self.first_audio_at))]
        if self.on_first_audio is not None:
            try:
                self.on_first_audio(item_id, t)
            except Exception:
                self.log.exception("%s: on_first_audio hook failed", self.role)

    # -- worker thread: open --

    def _open_stream(
        self, pa: pyaudio.PyAudio, device: DeviceInfo, generation: int
    ) -> tuple[pyaudio.Stream, int, int]:
        wanted = [(self.preferred_rate or 24000, self.preferred_channels or 1)]
        stereo = min(2, max(1, device.max_output_channels))
        for rate in (24000, 48000, 44100, 16000, device.default_rate):
            wanted += [(rate, 1), (rate, stereo)]
        stream, rate, channels = self._open_first(
            pa, device, wanted, buffer_ms=self.period_ms,
            callback=self._make_callback(generation), purpose="playback",
        )
        # Set before start: the callback reads these. Safe: no callback of this stream
        # exists yet and the previous stream is closed.
        with self._lock:
            self._silence = bytes(period_frames(rate, self.period_ms) * 2 * channels)
            self._generation_cb = generation
        return stream, rate, channels

    def _on_opened(self, opened: OpenedStream) -> None:
        with self._lock:
            self.device_rate = opened.rate
            self.device_channels = opened.channels
            self._frame_bytes = 2 * opened.channels
        self._resamplers.clear()

    def _on_lost(self, reason: str) -> None:
        dropped = self._flush(user_stop=False)
        self.dropped_ms += dropped * 1000.0 / (self.device_rate or 1)

    # -- callback thread --

    def _make_callback(
        self, generation: int
    ) -> Callable[[bytes | None, int, dict[str, float], int], tuple[bytes, int]]:
        loop = self._loop
        assert loop is not None

        def callback(
            in_data: bytes | None, frame_count: int, time_info: dict[str, float], status: int
        ) -> tuple[bytes, int]:
            keep_callback_thread_state()
            now = time.monotonic()
            self._last_callback = now
            first: list[str] = []
            underrun = False
            with self._lock:
                fb = self._frame_bytes
                need = frame_count * fb
                silence = self._silence if len(self._silence) == need else bytes(need)
                if generation != self._generation_cb:
                    return silence, pyaudio.paComplete
                if status & pyaudio.paOutputUnderflow:
                    self.device_underflows += 1
                if self._stop_at is not None:
                    self.stop_latencies.append(now - self._stop_at)
                    self._stop_at = None
                if self._paused or not self._armed or not self._segments:
                    return silence, pyaudio.paContinue
                parts: list[bytes] = []
                got = 0
                while got < need and self._segments:
                    item_id, seg = self._segments[0]
                    start = self._head_offset
                    take = min(need - got, len(seg) - start)
                    parts.append(seg[start : start + take])
                    got += take
                    played = self._played.get(item_id)
                    if played == 0:
                        first.append(item_id)
                    self._played[item_id] = (played or 0) + take // fb
                    if start + take == len(seg):
                        self._segments.popleft()
                        self._head_offset = 0
                    else:
                        self._head_offset = start + take
                self._queued -= got
                empty = self._queued == 0
                if got < need:
                    parts.append(silence[: need - got])
                if empty:
                    # Ran dry: re-buffer before playing again. Mid-item that is an audible
                    # gap whatever arrives next, so it counts as one underrun.
                    self._armed = False
                    if self._open_item is not None:
                        self.underruns += 1
                        underrun = True
            audio = b"".join(parts)
            if got:
                # The RMS of one period is a few µs of numpy; the echo guard needs it.
                level = level_dbfs(audio[:got])
                ahead = time_info.get("output_buffer_dac_time", 0.0) - time_info.get(
                    "current_time", 0.0)
                with self._lock:
                    self._reference.append((now + (ahead if 0.0 < ahead < 1.0 else 0.0),
                                            level))
            try:
                for item_id in first:
                    loop.call_soon_threadsafe(self._notify_first_audio, item_id, now)
                if empty:
                    loop.call_soon_threadsafe(self._notify_drained)
                if underrun:
                    loop.call_soon_threadsafe(self._start_rebuffering)
            except RuntimeError:  # loop closed
                return silence, pyaudio.paAbort
            return audio, pyaudio.paContinue

        return callback
