"""Microphone capture: PyAudio callback thread → bounded hand-off → fixed 16 kHz mono frames.

The PortAudio callback only appends the buffer PortAudio gave it (already a fresh ``bytes``)
and its arrival time to a bounded deque and, if no wake-up is pending, schedules one drain on
the loop with ``call_soon_threadsafe``. It never blocks and never converts. The loop drains the
deque, downmixes and resamples (streaming soxr) when the device is not 16 kHz mono, cuts
fixed-size frames and calls ``on_frame(frame, t)`` for each, in order. A 16 kHz mono buffer
of one frame is passed on as it came (no copy).

Wake-ups. By default the loop is woken for every device buffer. :meth:`Capture.wake_after`
lets a caller that needs no frame for a while (the daemon while idle) be woken only once
enough audio for the frames it waits for has come: frames are then delivered a little later,
a few at a time, never lost or reordered.

Bounds: the hand-off deque holds at most ``max_pending_ms`` of device audio; when the loop falls
behind further, the oldest buffers are dropped and counted (``stats.dropped_buffers``) — memory
stays bounded and, once the loop catches up, the freshest audio flows (the stale audio is what
is lost). Device failures are handled by :class:`~edgevoice.audio.devices.SupervisedStream`;
when a stream fails, the whole frames it had already handed over are still delivered (before
``on_state`` reports ``missing``); only a partial frame (< ``frame_ms``) is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyaudio

from edgevoice.audio.convert import Resampler, downmix
from edgevoice.audio.devices import (
    DeviceInfo,
    DeviceState,
    OpenedStream,
    SupervisedStream,
    keep_callback_thread_state,
)

#: Internal capture format: PCM16 little-endian mono at this rate.
SAMPLE_RATE = 16000

FrameCallback = Callable[[bytes, float], None]


@dataclass(frozen=True)
class CaptureStats:
    """A snapshot for status output. ``frames`` counts delivered internal frames;
    ``overflows`` counts PortAudio input-overflow flags (audio lost in the driver);
    ``dropped_buffers`` counts device buffers dropped because the loop fell behind."""

    state: str
    device: str | None
    device_rate: int | None
    device_channels: int | None
    frames: int
    overflows: int
    dropped_buffers: int
    reopens: int
    last_error: str | None


def _candidates(
    device: DeviceInfo, rate: int | None, channels: int | None
) -> list[tuple[int, int]]:
    """Formats to try, best first: the preference, 16 kHz mono (no conversion), then the
    device's native rate mono/stereo, then common hardware rates. Repeats and formats with
    more channels than the device has are left in: :meth:`SupervisedStream._open_first`
    skips them."""
    native = device.default_rate or 48000
    max_ch = max(1, device.max_input_channels)
    return [
        (rate or SAMPLE_RATE, channels or 1),
        (SAMPLE_RATE, 1),
        (native, 1),
        (native, min(2, max_ch)),
        (48000, 1),
        (48000, min(2, max_ch)),
        (44100, min(2, max_ch)),
    ]


class Capture(SupervisedStream):
    """Capture from one input device as fixed frames of 16 kHz mono PCM16.

    ``on_frame(frame, t)`` runs on the event loop, in order, with ``len(frame) ==
    frame_bytes``; ``t`` is the ``time.monotonic()`` at which the frame's first sample was
    captured, derived from the arrival time of the device buffer (accurate to about one device
    buffer plus the resampler delay, a few ms). An exception in ``on_frame`` is logged and the
    frame is lost; capture continues.

    ``rate``/``channels`` force a device format (e.g. 48000/2); by default 16 kHz mono is
    tried first and the device's native format is the fallback (then converted). ``buffer_ms``
    is the device period. The stream is reopened with ``backoff`` when it fails or stalls for
    ``stall_timeout`` s; ``state`` is ``ok``/``missing``/``starting``/``stopped``.
    """

    kind = "input"

    def __init__(
        self,
        *,
        on_frame: FrameCallback,
        device: str | None = "default",
        frame_ms: int = 20,
        rate: int | None = None,
        channels: int | None = None,
        buffer_ms: int = 20,
        backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0),
        stall_timeout: float = 2.0,
        max_pending_ms: int = 2000,
        role: str = "microphone",
        logger: logging.Logger | None = None,
        on_state: Callable[[DeviceState, str], None] | None = None,
    ) -> None:
        super().__init__(device=device, role=role, backoff=backoff, stall_timeout=stall_timeout,
                         logger=logger, on_state=on_state)
        if frame_ms <= 0 or (SAMPLE_RATE * frame_ms) % 1000:
            raise ValueError(f"frame_ms must give a whole number of samples, got {frame_ms}")
        self.on_frame = on_frame
        self.frame_ms = frame_ms
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self.frame_bytes = 2 * self.frame_samples
        self.preferred_rate = rate
        self.preferred_channels = channels
        self.buffer_ms = buffer_ms
        self.max_pending_ms = max_pending_ms
        self.frames = 0
        self.overflows = 0
        self.dropped_buffers = 0
        # callback-thread → loop hand-off (guarded by _lock)
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, bytes, float, int]] = deque(maxlen=2)
        self._drain_scheduled = False
        self._waiting = 0  # device frames handed over since the last drain
        self._wake_after = 0  # ... needed before a drain is scheduled (see wake_after)
        # loop-side conversion state (reset on every open)
        self._resampler: Resampler | None = None
        self._channels = 1
        self._acc = bytearray()
        self._active_generation = -1

    async def stop(self) -> None:
        """Close the device and stop delivering frames; idempotent (same as ``aclose``)."""
        await self.aclose()

    @property
    def stats(self) -> CaptureStats:
        opened = self.opened
        return CaptureStats(
            state=self.state.value,
            device=opened.device.name if opened else None,
            device_rate=opened.rate if opened else None,
            device_channels=opened.channels if opened else None,
            frames=self.frames,
            overflows=self.overflows,
            dropped_buffers=self.dropped_buffers,
            reopens=self.reopen_count,
            last_error=self.last_error,
        )

    # -- worker thread: open --

    def _open_stream(
        self, pa: pyaudio.PyAudio, device: DeviceInfo, generation: int
    ) -> tuple[pyaudio.Stream, int, int]:
        # A fresh hand-off per stream: nothing a previous stream left behind is carried over.
        # Its bound depends only on buffer_ms, not on the format that opens.
        with self._lock:
            self._pending = deque(maxlen=max(2, self.max_pending_ms // self.buffer_ms))
            self._waiting = 0
        return self._open_first(
            pa, device, _candidates(device, self.preferred_rate, self.preferred_channels),
            buffer_ms=self.buffer_ms, callback=self._make_callback(generation),
            purpose="capture",
        )

    # -- callback thread --

    def _make_callback(
        self, generation: int
    ) -> Callable[[bytes | None, int, dict[str, float], int], tuple[None, int]]:
        lock, loop = self._lock, self._loop
        assert loop is not None

        def callback(
            in_data: bytes | None, frame_count: int, time_info: dict[str, float], status: int
        ) -> tuple[None, int]:
            keep_callback_thread_state()
            now = time.monotonic()
            self._last_callback = now
            if in_data is None:
                return None, pyaudio.paContinue
            with lock:
                pending = self._pending
                if len(pending) == pending.maxlen:
                    self.dropped_buffers += 1  # deque(maxlen) drops the oldest on append
                pending.append((generation, in_data, now, status))
                self._waiting += frame_count
                schedule = not self._drain_scheduled and self._waiting >= self._wake_after
                if schedule:
                    self._drain_scheduled = True
            if schedule:
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: end this stream
                    return None, pyaudio.paAbort
            return None, pyaudio.paContinue

        return callback

    # -- loop side --

    def wake_after(self, samples: int) -> None:
        """Deliver the next frames only once ``samples`` more 16 kHz samples can be cut
        (counting what is already converted and not yet delivered), instead of after every
        device buffer: ``samples`` 0 (the default) goes back to every buffer at once,
        delivering what waits now. Frames are delayed by at most about ``samples``, never lost
        or reordered; device failures and stalls are seen as before."""
        need = samples - len(self._acc) // 2
        opened = self.opened
        rate = opened.rate if opened is not None else SAMPLE_RATE
        self._wake_after = max(0, -(-need * rate // SAMPLE_RATE))  # in device frames
        if samples == 0 and self._loop is not None:
            with self._lock:
                schedule = bool(self._pending) and not self._drain_scheduled
                self._drain_scheduled = self._drain_scheduled or schedule
            if schedule:
                self._loop.call_soon(self._drain)

    def _on_opened(self, opened: OpenedStream) -> None:
        self._channels = opened.channels
        self._resampler = Resampler(opened.rate, SAMPLE_RATE) if opened.rate != SAMPLE_RATE \
            else None
        self._acc = bytearray()
        self._active_generation = self._generation
        self._drain()

    def _drain(self) -> None:
        generation = self._active_generation
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            # Buffers of a stream whose _on_opened has not run yet stay queued: that hook
            # sets up the conversion and drains them.
            early = [item for item in items if item[0] > generation]
            self._pending.extend(early)
            self._drain_scheduled = False
            self._waiting = 0
        for gen, data, t_end, status in items:
            if gen != generation:
                continue  # from a closed stream, or too early (kept above)
            if status & pyaudio.paInputOverflow:
                self.overflows += 1
            self._process(data, t_end)

    def _process(self, data: bytes, t_end: float) -> None:
        if self._channels > 1:
            data = downmix(data, self._channels)
        if self._resampler is not None:
            data = self._resampler.process(data)
        acc = self._acc
        fb = self.frame_bytes
        if not acc and len(data) == fb and type(data) is bytes:
            # The usual case (a 16 kHz mono device, one frame per buffer): the buffer is
            # already an immutable frame of its own.
            self._deliver(data, t_end - self.frame_samples / SAMPLE_RATE)
            return
        acc += data
        # The last sample in acc arrived at t_end: date frames backwards from there, so
        # timestamps do not drift however the device buffers relate to frames.
        t = t_end - (len(acc) // 2) / SAMPLE_RATE
        step = self.frame_samples / SAMPLE_RATE
        while len(acc) >= fb:
            with memoryview(acc) as view:
                frame = bytes(view[:fb])  # one copy, not two (a slice of a bytearray is one)
            del acc[:fb]
            self._deliver(frame, t)
            t += step

    def _deliver(self, frame: bytes, t: float) -> None:
        self.frames += 1
        try:
            self.on_frame(frame, t)
        except Exception:
            self.log.exception("%s: on_frame failed; frame dropped", self.role)

    def _on_lost(self, reason: str) -> None:
        # On a failure, deliver what the dead stream had already handed over (it may be the
        # end of the user's request); at a stop, nobody wants frames any more.
        if not self._stopping.is_set():
            self._drain()
        self._active_generation = -1
        # Drop what the dead stream left half-converted: the next stream starts clean.
        self._acc = bytearray()
        self._resampler = None
