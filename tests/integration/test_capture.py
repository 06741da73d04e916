"""Capture on real PyAudio over ALSA ``file`` PCMs fed by paced FIFOs (no mocks)."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from edgevoice.audio import devices
from edgevoice.audio.capture import SAMPLE_RATE, Capture
from edgevoice.audio.devices import DeviceError, DeviceState
from edgevoice.devkit.virtual import FifoSink, FifoSource, VirtualAlsa
from support import until
from support import use_alsa as use


class Frames:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.times: list[float] = []

    def __call__(self, frame: bytes, t: float) -> None:
        self.frames.append(frame)
        self.times.append(t)

    def data(self) -> bytes:
        return b"".join(self.frames)


#: The tone is analysed from 0.2 s to 0.7 s after its onset (samples at 16 kHz).
WINDOW_END = 3200 + 8000


def noise(seconds: float, rate: int, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    mag = rng.integers(500, 20000, int(seconds * rate))
    sign = rng.choice([-1, 1], mag.size)
    return (mag * sign).astype("<i2").tobytes()


@pytest.mark.realtime  # a microphone FIFO paced in real time
async def test_capture_is_byte_exact_at_16k(tmp_path, monkeypatch):
    src = FifoSource(tmp_path / "mic.fifo", SAMPLE_RATE, 1, speed=4.0)
    try:
        use(VirtualAlsa(tmp_path).capture("testmic", src.path), monkeypatch)
        got = Frames()
        cap = Capture(device="testmic", on_frame=got)
        await cap.start(require_device=True)
        try:
            assert (cap.stats.device_rate, cap.stats.device_channels) == (16000, 1)
            audio = noise(1.0, SAMPLE_RATE)
            src.feed(audio)
            await until(lambda: got.data().find(audio[:64]) >= 0
                        and len(got.data()) >= got.data().find(audio[:64]) + len(audio),
                        what="the fed audio to come back")
        finally:
            await cap.stop()
        data = got.data()
        start = data.find(audio[:64])
        assert data[start : start + len(audio)] == audio
        assert set(data[:start]) <= {0}  # idle silence before it, nothing else
        assert all(len(f) == cap.frame_bytes == 640 for f in got.frames)
        assert cap.stats.dropped_buffers == 0
        # Timestamps are time.monotonic() of the frame's first sample: in the past, and
        # spanning about the fed duration (fed at 4x real time: ~0.25 s for 1 s of audio).
        assert max(got.times) <= time.monotonic()
        first = start // cap.frame_bytes
        span = got.times[first + 49] - got.times[first]
        assert 0.05 < span < 1.0, span
        assert cap.state is DeviceState.STOPPED
    finally:
        src.close()


@pytest.mark.realtime  # a microphone FIFO paced in real time
async def test_48k_stereo_device_is_resampled_and_downmixed(tmp_path, monkeypatch):
    rate = 48000
    src = FifoSource(tmp_path / "mic.fifo", rate, 2, speed=4.0)
    try:
        use(VirtualAlsa(tmp_path).capture("stereomic", src.path), monkeypatch)
        got = Frames()
        cap = Capture(device="stereomic", on_frame=got, rate=rate, channels=2)
        await cap.start(require_device=True)
        try:
            assert (cap.stats.device_rate, cap.stats.device_channels) == (48000, 2)
            t = np.arange(int(1.0 * rate)) / rate
            left = 20000 * np.sin(2 * np.pi * 1000 * t)
            stereo = np.stack([left, np.zeros_like(left)], axis=1)  # right channel silent
            src.feed(np.round(stereo).astype("<i2").tobytes())
            need = int(1.2 * SAMPLE_RATE) * 2
            await until(lambda: len(got.data()) >= need + 0, what="1.2 s of frames")
            await until(lambda: src.written >= stereo.size * 2, what="the tone written")

            def window_captured() -> bool:
                out = np.frombuffer(got.data(), dtype="<i2")
                loud = np.flatnonzero(np.abs(out) > 1000)
                return bool(loud.size) and out.size >= loud[0] + WINDOW_END

            await until(window_captured, what="the tone up to the end of the window analysed")
        finally:
            await cap.stop()
        out = np.frombuffer(got.data(), dtype="<i2").astype(np.float64)
        loud = np.flatnonzero(np.abs(out) > 1000)
        assert loud.size, "the tone never arrived"
        mid = out[loud[0] + 3200 : loud[0] + WINDOW_END]  # 0.5 s well inside the tone
        spectrum = np.abs(np.fft.rfft(mid * np.hanning(mid.size)))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / mid.size
        assert abs(peak_hz - 1000) <= 2
        # Downmix halves the level: amplitude 10000 → RMS 7071.
        assert abs(np.sqrt(np.mean(mid**2)) - 10000 / np.sqrt(2)) < 0.01 * 7071
        # Clean: fit the tone and check the residual is > 60 dB down.
        n = np.arange(mid.size)
        basis = np.stack([np.sin(2 * np.pi * 1000 * n / SAMPLE_RATE),
                          np.cos(2 * np.pi * 1000 * n / SAMPLE_RATE)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, mid, rcond=None)
        residual = mid - basis @ coef
        snr = 10 * np.log10(np.sum((basis @ coef) ** 2) / np.sum(residual**2))
        assert snr > 60, snr
    finally:
        src.close()


async def test_missing_device_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "in.raw").write_bytes(bytes(3200))
    use(VirtualAlsa(tmp_path).capture("testmic", tmp_path / "in.raw"), monkeypatch)
    cap = Capture(device="usb mic", on_frame=lambda f, t: None)
    with pytest.raises(DeviceError) as err:
        await cap.start(require_device=True)
    assert "'usb mic' not found" in str(err.value) and "'testmic'" in str(err.value)
    assert cap.state is DeviceState.STOPPED


@pytest.mark.realtime  # a microphone FIFO paced in real time
async def test_device_vanishes_and_comes_back(tmp_path, monkeypatch, caplog):
    """Unplug = the PCM leaves the ALSA config and the running stream gets an I/O error
    (the file plugin's output FIFO loses its reader: EPIPE, as a USB device gives ENODEV);
    replug = both restored. The stream must be reopened and each change logged once."""
    caplog.set_level(logging.DEBUG, logger="edgevoice.audio")
    src = FifoSource(tmp_path / "mic.fifo", SAMPLE_RATE, 1, speed=2.0)
    tap = FifoSink(tmp_path / "tap.fifo", speed=0)
    try:
        (tmp_path / "other.raw").write_bytes(bytes(640))
        va = VirtualAlsa(tmp_path).capture("othermic", tmp_path / "other.raw")
        va.duplex("testmic", src.path, tap.path)
        use(va, monkeypatch)
        got = Frames()
        states: list[DeviceState] = []
        cap = Capture(device="testmic", on_frame=got, backoff=(0.05, 0.1),
                      on_state=lambda s, r: states.append(s))
        await cap.start(require_device=True)
        try:
            await until(lambda: len(got.frames) >= 5, what="first frames")
            va.remove("testmic").write()
            tap.close(drain=0)
            await until(lambda: cap.state is DeviceState.MISSING, 5, "state missing")
            await until(lambda: sum("still missing" in r.getMessage()
                                    for r in caplog.records) >= 2, 5, "two failed reopens")
            assert "'testmic' not found" in (cap.last_error or "")
            assert "'othermic'" in (cap.last_error or "")
            tap = FifoSink(tmp_path / "tap.fifo", speed=0)  # reader first: ALSA opens it
            va.duplex("testmic", src.path, tap.path).write()
            await until(lambda: cap.state is DeviceState.OK, 5, "state ok again")
            before = len(got.frames)
            await until(lambda: len(got.frames) >= before + 5, 5, "frames after reopen")
        finally:
            await cap.stop()
        assert cap.stats.reopens == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert sum(m.startswith("microphone missing") for m in warnings) == 1, warnings
        assert sum(m.startswith("microphone back") for m in warnings) == 1, warnings
        assert states == [DeviceState.STARTING, DeviceState.OK, DeviceState.MISSING,
                          DeviceState.OK, DeviceState.STOPPED]
    finally:
        src.close()
        tap.close(drain=0)


@pytest.mark.realtime  # a microphone FIFO paced in real time
async def test_wake_after_delivers_the_same_frames_a_few_at_a_time(tmp_path, monkeypatch):
    src = FifoSource(tmp_path / "mic.fifo", SAMPLE_RATE, 1)
    try:
        use(VirtualAlsa(tmp_path).capture("testmic", src.path), monkeypatch)
        got = Frames()
        drains: list[int] = []  # frames delivered per wake-up of the loop
        cap = Capture(device="testmic", on_frame=got)
        drain = cap._drain

        def counted() -> None:
            before = len(got.frames)
            drain()
            if len(got.frames) > before:
                drains.append(len(got.frames) - before)

        cap._drain = counted  # type: ignore[method-assign]
        await cap.start(require_device=True)
        try:
            await until(lambda: len(got.frames) >= 10, what="first frames")
            assert max(drains[1:]) == 1  # by default each 20 ms buffer at once (the first
            # drain takes what the pipe held before the stream started)
            audio = noise(1.0, SAMPLE_RATE)
            src.feed(audio)
            cap.wake_after(4 * 320)  # four frames at a time
            mark = len(drains)
            await until(lambda: len(drains) >= mark + 15, what="15 wake-ups")
            held = drains[mark + 1 : mark + 15]  # the first may have been on its way
            assert held == [4] * len(held), held
            cap.wake_after(0)  # back to every buffer, starting with what waits now
            mark = len(drains)
            await until(lambda: len(drains) >= mark + 10, what="10 more wake-ups")
            assert drains[mark + 1 : mark + 10] == [1] * 9, drains[mark:]
            await until(lambda: got.data().find(audio[:64]) >= 0 and len(got.data())
                        >= got.data().find(audio[:64]) + len(audio), what="the audio back")
        finally:
            await cap.stop()
        data = got.data()  # nothing lost, nothing reordered
        start = data.find(audio[:64])
        assert data[start : start + len(audio)] == audio
        # Held frames keep the times their buffers arrived at (past the start-up backlog).
        steps = np.diff(got.times[10:])
        assert np.allclose(steps, 0.02, atol=0.015), steps
    finally:
        src.close()


@pytest.mark.realtime  # a microphone FIFO paced in real time
async def test_the_callback_thread_keeps_its_python_state_until_the_stream_closed(
        tmp_path, monkeypatch):
    # PyAudio's callback would otherwise build and tear down a thread state 50 times a
    # second; the kept one is deleted once PortAudio ended the thread.
    src = FifoSource(tmp_path / "mic.fifo", SAMPLE_RATE, 1)
    try:
        use(VirtualAlsa(tmp_path).capture("testmic", src.path), monkeypatch)
        got = Frames()
        cap = Capture(device="testmic", on_frame=got)
        await cap.start(require_device=True)
        try:
            await until(lambda: len(got.frames) >= 5, what="first frames")
            kept = dict(devices._kept_states)
            assert len(kept) == 1, kept  # the callback thread's, one for all its calls
            await until(lambda: len(got.frames) >= 25, what="more frames")
            assert devices._kept_states == kept
        finally:
            await cap.stop()
        assert devices._kept_states == {}
        assert not any(os.path.exists(f"/proc/self/task/{tid}") for tid in kept)
    finally:
        src.close()
