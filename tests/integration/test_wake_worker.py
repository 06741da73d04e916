"""The wake word's worker thread (:class:`~edgevoice.listen.worker.WakeWorker`) with the real
models on the espeak-ng wake corpus: detections identical to the gate run in place, in
stream order and never before their frame; a bounded backlog whose drops are counted; a
forgotten stream's detections discarded; a clean stop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.wake import load_corpus
from edgevoice.listen import Detection, WakeGate, WakeWordDetector
from edgevoice.listen.worker import RELAXED_CHUNKS, WakeWorker

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wake"
MODELS = ["hey_jarvis", "hey_rhasspy"]
FRAME_BYTES = 640  # 20 ms at 16 kHz, the capture default
RATE = 16000


def corpus_pcm(seconds: float) -> bytes:
    """2 s of silence, then the corpus's wake clips of :data:`MODELS` in its order (the first
    is "hey jarvis"), cut to ``seconds``. Each clip keeps its place on the 80 ms grid."""
    corpus = load_corpus(FIXTURES)
    parts = [corpus.pcm[: 2 * 2 * RATE]]
    parts += [corpus.pcm[2 * c.start : 2 * c.end] for c in corpus.clips
              if c.label == "wake" and c.model in MODELS]
    return b"".join(parts)[: int(seconds * RATE) * 2]


def frames(pcm: bytes, t0: float = 0.0) -> Iterator[tuple[bytes, float]]:
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        yield pcm[i : i + FRAME_BYTES], t0 + i / (2 * RATE)


def gate() -> WakeGate:
    return WakeGate(WakeWordDetector(MODELS))


def in_place(pcm: bytes, t0: float = 0.0) -> list[Detection]:
    """The detections of a gate run in place, frame by frame (the reference)."""
    g = gate()
    try:
        return [d for frame, t in frames(pcm, t0) for d in g.process(frame, t)]
    finally:
        g.detector.close()


class Receiver:
    """``on_detections`` of a worker: records each detection with the end of the newest frame
    handed over when it arrived, the thread it arrived on, and whether put() was running."""

    def __init__(self) -> None:
        self.got: list[tuple[Detection, float, str, bool]] = []
        self.newest = 0.0
        self.in_put = False

    def __call__(self, detections: list[Detection]) -> None:
        for d in detections:
            self.got.append((d, self.newest, threading.current_thread().name, self.in_put))

    def put(self, worker: WakeWorker, frame: bytes, t: float) -> None:
        self.in_put = True
        worker.put(frame, t)
        self.in_put = False
        self.newest = t + len(frame) / (2 * RATE)

    @property
    def detections(self) -> list[Detection]:
        return [d for d, *_ in self.got]


@pytest.mark.parametrize("relaxed", [False, True])
async def test_detections_are_the_in_place_ones_in_stream_order_after_their_frames(
    relaxed: bool,
) -> None:
    pcm = corpus_pcm(26.0)  # the eight wake clips
    reference = in_place(pcm)
    assert len(reference) >= 6, reference
    receiver = Receiver()
    worker = WakeWorker(gate(), on_detections=receiver, max_backlog=10_000)
    worker.relaxed = relaxed
    worker.start()
    try:
        for i, (frame, t) in enumerate(frames(pcm)):
            receiver.put(worker, frame, t)
            if i % 5 == 0:
                await asyncio.sleep(0)  # let deliveries in now and then, as the loop does
        await worker.drain()
    finally:
        await worker.aclose()
    # Bit-identical (same gate, same frames), in order, each once.
    assert receiver.detections == reference
    for d, newest, thread, in_put in receiver.got:
        assert d.t_audio <= newest + 1e-9, "delivered before its frame was handed over"
        assert thread == threading.main_thread().name and not in_put
    stats = worker.stats
    assert stats.detections == len(reference) and stats.frames_dropped == 0
    assert stats.frames == len(pcm) // FRAME_BYTES


async def test_relaxed_batches_span_four_chunks_in_silence_and_one_once_speech_began() -> None:
    chunk = 1280  # samples
    word = corpus_pcm(6.0)  # 2 s of silence, then "hey jarvis"
    receiver = Receiver()
    worker = WakeWorker(gate(), on_detections=receiver, max_backlog=10_000)
    worker.relaxed = True
    worker.start()
    try:
        assert worker.samples_to_batch_end == RELAXED_CHUNKS * chunk
        steps = []
        for frame, t in list(frames(word))[:100]:  # the silence: the gate stays closed
            receiver.put(worker, frame, t)
            steps.append(worker.samples_to_batch_end)
        assert steps[:16] == [RELAXED_CHUNKS * chunk - 320 * (i + 1) for i in range(15)] + [
            RELAXED_CHUNKS * chunk]
        # A batch handed over every 16 frames (320 ms), nothing in between.
        assert [i for i, v in enumerate(steps) if v == RELAXED_CHUNKS * chunk] == [
            15, 31, 47, 63, 79, 95]
        for frame, t in list(frames(word))[100:]:  # speech: the gate opens
            receiver.put(worker, frame, t)
        await worker.drain()
        assert worker.samples_to_batch_end == chunk  # one chunk at a time now
        assert [d.name for d in receiver.detections] == ["hey_jarvis"]
        worker.relaxed = False
        assert worker.samples_to_batch_end == chunk
    finally:
        await worker.aclose()


async def test_a_full_backlog_drops_whole_batches_counts_them_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgevoice.listen")
    silence = bytes(4 * RATE)  # 2 s
    receiver = Receiver()
    worker = WakeWorker(gate(), on_detections=receiver, max_backlog=8)
    try:
        # The thread does not run yet: the first 8 frames (two 80 ms batches) wait, the
        # other 92 are dropped, counted, and said once.
        for frame, t in frames(silence):
            receiver.put(worker, frame, t)
        stats = worker.stats
        assert (stats.frames, stats.frames_dropped, stats.drop_episodes) == (100, 92, 1)
        assert stats.backlog_max == 8
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "dropping frames" in warnings[0].getMessage()
        worker.start()
        await worker.drain()
        # After the gap the gate starts a new stream: a wake word right after it is found
        # exactly as by a gate that heard only the audio after the gap.
        # Handed over in real time's stead: each batch once the one before was processed.
        word = corpus_pcm(6.0)[2 * 2 * RATE :]  # the first clip, "hey jarvis"
        for i, (frame, t) in enumerate(frames(word, 2.0)):
            receiver.put(worker, frame, t)
            if i % 4 == 3:
                await worker.drain()
        await worker.drain()
    finally:
        await worker.aclose()
    assert receiver.detections == in_place(word, 2.0)
    assert [d.name for d in receiver.detections] == ["hey_jarvis"]
    assert any("caught up after dropping 92 frames" in r.getMessage() for r in caplog.records)
    assert worker.stats.drop_episodes == 1


async def test_detections_of_a_forgotten_stream_are_discarded() -> None:
    word = corpus_pcm(6.0)
    receiver = Receiver()
    worker = WakeWorker(gate(), on_detections=receiver, max_backlog=10_000)
    try:
        for frame, t in frames(word):
            receiver.put(worker, frame, t)
        worker.forget()  # the microphone was lost before the thread got to the word
        worker.start()
        await worker.drain()
        assert receiver.got == [] and worker.stats.discarded == 1
        for frame, t in frames(word, 10.0):  # the next stream is heard
            receiver.put(worker, frame, t)
        await worker.drain()
    finally:
        await worker.aclose()
    assert [d.name for d in receiver.detections] == ["hey_jarvis"]


async def test_handing_over_never_runs_the_models() -> None:
    # The frame whose speech onset makes the gate replay its pre-roll through the models:
    # run in place it takes the replay's time; handed over, the loop goes on at once.
    pcm = corpus_pcm(6.0)
    reference = gate()
    worst_in_place = 0.0
    for frame, t in frames(pcm):
        started = time.perf_counter()
        reference.process(frame, t)
        worst_in_place = max(worst_in_place, time.perf_counter() - started)
    reference.detector.close()
    receiver = Receiver()
    worker = WakeWorker(gate(), on_detections=receiver, max_backlog=10_000)
    worker.start()
    worst_put = 0.0
    try:
        for frame, t in frames(pcm):
            started = time.perf_counter()
            receiver.put(worker, frame, t)
            worst_put = max(worst_put, time.perf_counter() - started)
        await worker.drain()
    finally:
        await worker.aclose()
    assert receiver.detections, "the word was not found"
    assert worst_put < worst_in_place / 5, (worst_put, worst_in_place)


async def test_aclose_stops_the_thread_discards_the_backlog_and_closes_after_the_last_frame(
) -> None:
    pcm = corpus_pcm(26.0)
    g = gate()
    closed_on: list[str] = []
    close = g.detector.close

    def spy_close() -> None:  # the real close, and the thread it ran on
        closed_on.append(threading.current_thread().name)
        close()

    g.detector.close = spy_close  # type: ignore[method-assign]
    receiver = Receiver()
    worker = WakeWorker(g, on_detections=receiver, max_backlog=10_000, name="wake-test")
    for frame, t in frames(pcm):
        receiver.put(worker, frame, t)
    worker.start()
    await worker.aclose()
    assert not worker.running
    assert "wake-test" not in [t.name for t in threading.enumerate()]
    assert closed_on == ["wake-test"]  # in the thread, after its last frame
    assert g.samples_in < len(pcm) // 2 // 2, "the backlog was processed, not discarded"
    worker.put(pcm[:FRAME_BYTES], 99.0)
    await worker.aclose()  # idempotent
    assert worker.stats.frames == len(pcm) // FRAME_BYTES and closed_on == ["wake-test"]


async def test_aclose_of_a_worker_that_never_ran_closes_the_models_here() -> None:
    g = gate()
    closed_on: list[str] = []
    close = g.detector.close

    def spy_close() -> None:
        closed_on.append(threading.current_thread().name)
        close()

    g.detector.close = spy_close  # type: ignore[method-assign]
    worker = WakeWorker(g, on_detections=lambda d: None, max_backlog=4)
    await worker.aclose()
    assert closed_on == [threading.main_thread().name]
