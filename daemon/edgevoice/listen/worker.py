"""Wake-word inference off the event loop: one worker thread behind a bounded queue.

The event loop hands every microphone frame to :meth:`WakeWorker.put` (O(1), never blocks,
never runs a model); one thread feeds the frames to the :class:`~edgevoice.listen.gate.WakeGate`
and posts the detections back to the loop, where ``on_detections`` gets them with the stream
times the gate stamped on them. A speech onset's pre-roll replay (seconds of CPU on a small
board) thus delays only the detections, never the loop's own work: sending audio, feeding
the speaker, barge-in.

Batches. A score — so a detection — can only come when an 80 ms feature chunk completes, and
the gate counts chunks from the start of its stream. So the frames are handed over in batches
that end with the frame completing a chunk: the thread wakes once per chunk instead of once
per frame, at no cost in detection latency (but for a detection inside a replayed pre-roll,
which may come up to one chunk later). With :attr:`WakeWorker.relaxed` (the caller has
nothing else to do with the wake word's answer soon: the daemon while idle) and the gate
closed, a batch spans :data:`RELAXED_CHUNKS` chunks (320 ms): a speech onset then reaches the
gate up to that much later, which costs nothing either — the gate replays its pre-roll, and
a wake word is found no sooner than 0.7 s after its onset (0.74–1.1 s on the corpus) — and
once the gate is open, batches are one chunk again.

Bounds. At most ``max_backlog`` frames wait for the thread (or one batch, if it is longer).
A batch that does not fit is dropped whole and counted
(:attr:`WakeWorkerStats.frames_dropped`); the first drop of an episode logs one warning, its
end one line with the count. The batch after a drop starts a new stream (the gate forgets:
the lost audio cannot be replayed), as after a microphone gap.

Order. ``on_detections`` runs on the loop, in stream order, each time after :meth:`put` was
given the frame that completed the detection (never before): the caller's view of the stream
is ahead of the detection, by the backlog and the time the gate took. Detections of frames
handed over before :meth:`forget` are discarded (counted, logged).

Priority. The thread runs at the process's priority. A lower one would let the event loop
win a core it shares with a replay, but it would also starve the wake word whenever other
programs keep the device busy; the boards this runs on have four cores.

Lifecycle. :meth:`start` starts the thread; :meth:`aclose` discards the backlog, lets the
batch in progress finish, ends the thread and joins it, and closes the gate's detector after
its last frame — in the thread, or here if the thread never ran. Frames put after that are
ignored. The gate belongs to the thread while it runs: call nothing on it from elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edgevoice.listen.gate import WakeGate
from edgevoice.listen.wake import SAMPLE_RATE, Detection

log = logging.getLogger("edgevoice.listen")

#: How long :meth:`WakeWorker.aclose` waits for the batch in progress.
STOP_TIMEOUT_S = 10.0
#: Feature chunks per batch while :attr:`WakeWorker.relaxed` and the gate is closed.
RELAXED_CHUNKS = 4


@dataclass(frozen=True, slots=True)
class WakeWorkerStats:
    """Figures for the status output.

    frames: frames handed over. frames_dropped: frames dropped because the backlog was full
    (never processed); drop_episodes: runs of consecutive drops. backlog_max: the most frames
    that waited at once. detections: detections delivered; discarded: detections dropped
    because the stream was forgotten since. late_ms_max: how far the newest frame handed over
    was past a detection's stream time when it was delivered, at most. errors: frames whose
    processing raised (logged; the gate then starts afresh)."""

    frames: int
    frames_dropped: int
    drop_episodes: int
    backlog_max: int
    detections: int
    discarded: int
    late_ms_max: float
    errors: int


@dataclass(slots=True)
class _Batch:
    epoch: int
    fresh: bool  # not contiguous with the previous batch: the gate forgets first
    frames: list[tuple[bytes, float]]


class WakeWorker:
    """Runs a :class:`WakeGate` in one thread; see the module docstring.

    ``on_detections(detections)`` is called on the loop (the one running when :meth:`start`
    was called), oldest first; an exception from it is logged. ``max_backlog``: the frames
    that may wait for the thread (a batch is always taken when none waits). Call everything
    but the constructor on that loop.

    ``relaxed`` (set it any time): batches of :data:`RELAXED_CHUNKS` chunks while the gate is
    closed, see the module docstring."""

    def __init__(
        self,
        gate: WakeGate,
        *,
        on_detections: Callable[[list[Detection]], None],
        max_backlog: int,
        name: str = "wake-word",
    ) -> None:
        chunk = gate.detector.chunk_samples
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1 frame, got {max_backlog}")
        self.gate = gate
        self.on_detections = on_detections
        self.max_backlog = max_backlog
        self.name = name
        self.relaxed = False
        self._chunk = chunk
        # Whether the gate was open after the last batch: written by the thread, reset by the
        # loop at a gap (a race only makes a batch shorter); it only sizes the batches.
        self._gate_open = False
        self._queue: queue.SimpleQueue[_Batch | asyncio.Future[None] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False  # the thread skips what is left (read by the thread)
        self._closed = False
        # Loop side.
        self._epoch = 0
        self._fresh = False
        self._batch: list[tuple[bytes, float]] = []
        self._pos = 0  # samples since the gate's stream start, as the gate counts them
        self._boundary = chunk  # the end of the chunk in progress
        self._chunks = 0  # chunks completed in the batch in progress
        self._newest = 0.0  # stream time of the end of the newest frame handed over
        self._handed = 0  # frames queued; only the loop writes it
        self._taken = 0  # frames the thread took off the queue; only the thread writes it
        self._dropping = 0  # frames dropped in the current episode
        self._frames = 0
        self._dropped = 0
        self._episodes = 0
        self._backlog_max = 0
        self._detections = 0
        self._discarded = 0
        self._late_max = 0.0
        self._errors = 0

    @property
    def stats(self) -> WakeWorkerStats:
        return WakeWorkerStats(self._frames, self._dropped, self._episodes, self._backlog_max,
                               self._detections, self._discarded,
                               round(self._late_max * 1000, 1), self._errors)

    @property
    def samples_to_batch_end(self) -> int:
        """16 kHz samples still to be put before the batch in progress is handed over (at the
        end of one of the gate's feature chunks)."""
        more = max(0, self._batch_chunks() - self._chunks - 1)
        return self._boundary - self._pos + more * self._chunk

    def _batch_chunks(self) -> int:
        return RELAXED_CHUNKS if self.relaxed and not self._gate_open else 1

    @property
    def newest(self) -> float:
        """Stream time of the end of the newest frame handed over."""
        return self._newest

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once); frames put before are processed then."""
        if self._thread is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ loop side

    def put(self, frame: bytes, t: float) -> None:
        """Hand one frame over (stream time ``t`` of its first sample). O(1), never blocks;
        counts it as dropped when the backlog is full."""
        if self._closed:
            return
        self._frames += 1
        self._batch.append((frame, t))
        n = len(frame) // 2
        self._newest = t + n / SAMPLE_RATE
        self._pos += n
        if self._pos >= self._boundary:
            self._boundary = (self._pos // self._chunk + 1) * self._chunk
            self._chunks += 1
            if self._chunks >= self._batch_chunks():
                self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        self._chunks = 0
        if not batch:
            return
        waiting = self._handed - self._taken
        if waiting and waiting + len(batch) > self.max_backlog:
            if not self._dropping:
                self._episodes += 1
                log.warning("wake word: the worker is %d frames behind; dropping frames "
                            "until it catches up", waiting)
            self._dropping += len(batch)
            self._dropped += len(batch)
            # The gate cannot bridge the gap: the next batch starts its stream (and grid).
            self._fresh = True
            self._pos = 0
            self._boundary = self._chunk
            self._gate_open = False
            return
        if self._dropping:
            log.info("wake word: the worker caught up after dropping %d frames (%.2f s of "
                     "audio)", self._dropping, self._dropping * len(batch[0][0]) / 2
                     / SAMPLE_RATE)
            self._dropping = 0
        self._handed += len(batch)
        self._backlog_max = max(self._backlog_max, waiting + len(batch))
        self._queue.put(_Batch(self._epoch, self._fresh, batch))
        self._fresh = False

    def forget(self) -> None:
        """The next frame is not contiguous with the last one (the microphone was lost): the
        gate starts a new stream, and detections of earlier frames not yet delivered are
        discarded."""
        self._epoch += 1
        self._batch = []
        self._chunks = 0
        self._fresh = True
        self._pos = 0
        self._boundary = self._chunk
        self._gate_open = False

    async def drain(self) -> None:
        """Hand over the frames of the batch in progress and wait until the thread processed
        everything handed over so far and its detections were delivered. For tests and the
        benchmark; returns at once when the thread does not run."""
        self._hand_over()
        if not self.running or self._loop is None:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(done)
        await done

    def _deliver(self, epoch: int, detections: list[Detection]) -> None:
        if self._closed:
            return
        if epoch != self._epoch:
            self._discarded += len(detections)
            log.info("wake word: %s discarded: the microphone was lost since",
                     ", ".join(d.name for d in detections))
            return
        self._detections += len(detections)
        self._late_max = max(self._late_max, self._newest - detections[0].t_audio)
        try:
            self.on_detections(detections)
        except Exception:
            log.exception("wake word: handling a detection failed")

    async def aclose(self) -> None:
        """Stop: frames put from now on are ignored, the backlog is discarded, the batch in
        progress finishes (bounded by :data:`STOP_TIMEOUT_S`, then the thread is given up
        with an error logged), the thread is joined and the detector closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._batch = []
        thread, stopped = self._thread, self._stopped
        if thread is None or stopped is None:
            self.gate.detector.close()
            return
        self._queue.put(None)
        try:
            await asyncio.wait_for(asyncio.shield(stopped), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("wake word: the worker did not stop within %.0f s; left behind",
                      STOP_TIMEOUT_S)
            return
        thread.join()

    # ------------------------------------------------------------------ the thread

    def _post(self, callback: Callable[..., None], *args: object) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        gate = self.gate
        get = self._queue.get
        try:
            while (item := get()) is not None:
                if isinstance(item, asyncio.Future):
                    self._post(_settle, item)
                    continue
                self._taken += len(item.frames)
                if self._closing:
                    continue
                if item.fresh:
                    gate.forget()
                found: list[Detection] = []
                for frame, t in item.frames:
                    try:
                        found += gate.process(frame, t)
                    except Exception:
                        self._errors += 1
                        log.exception("wake word: processing the frame at %.3f failed", t)
                        gate.forget()
                self._gate_open = gate.is_open
                if found:
                    self._post(self._deliver, item.epoch, found)
        finally:
            # After the last frame, in this thread: the detector is never used after this.
            try:
                gate.detector.close()
            finally:
                assert self._stopped is not None
                self._post(_settle, self._stopped)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def frames_for(seconds: float, frame_ms: int) -> int:
    """Frames of ``frame_ms`` in ``seconds`` (at least one)."""
    return max(1, round(seconds * 1000 / frame_ms))

