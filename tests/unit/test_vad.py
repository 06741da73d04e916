"""Upstream VAD decisions on real espeak-ng clips with exact frame timings: prefix padding
replayed, trailing tail sent, long silences not streamed, local end of utterance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.listen.vad import AudioChunk, LocalEndpointer, SpeechDetector, UpstreamGate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wake"
RATE = 16000
FRAME = 320  # 20 ms input frames
T0 = 100.0  # stream time of the first sample: decisions must carry it through


def _clip(name: str) -> bytes:
    pcm, rate = read_wav(FIXTURES / name)
    assert rate == RATE
    second = bytes(2 * RATE)  # the clips hold the speech only: 1 s of silence each side
    return second + pcm + second


def _voiced(pcm: bytes, frame_ms: int = 20) -> list[bool]:
    """Reference VAD decisions (same detector settings as the gates' defaults)."""
    return SpeechDetector(aggressiveness=3, frame_ms=frame_ms).process(pcm)


def _onsets(voiced: list[bool], min_frames: int = 2, window: int = 10) -> list[int]:
    """VAD frame index of the first voiced frame of each onset (>= min_frames voiced within
    `window` frames), for a stream whose speech bursts are far apart."""
    onsets, recent, in_speech, last = [], [], False, -(10**9)
    for i, v in enumerate(voiced):
        if v:
            recent.append(i)
            last = i
        recent = [j for j in recent if j > i - window]
        if in_speech:
            if i - last > 100:  # 2 s without voice: the burst is over
                in_speech, recent = False, []
        elif len(recent) >= min_frames:
            onsets.append(recent[0])
            in_speech = True
    return onsets


@pytest.fixture(scope="module")
def two_utterances() -> bytes:
    """Sentence, 3 s of extra silence (5 s with the clips' padding), sentence."""
    return _clip("sentence_04.wav") + bytes(3 * RATE * 2) + _clip("sentence_00.wav")


def _feed(gate: UpstreamGate, pcm: bytes, frame: int = FRAME) -> list:
    out = []
    for i in range(0, len(pcm), 2 * frame):
        out.append((i // 2, gate.process(pcm[i : i + 2 * frame], T0 + i / (2 * RATE))))
    return out


def _segments(decisions: list) -> list[list[AudioChunk]]:
    segments: list[list[AudioChunk]] = []
    for _, d in decisions:
        if d.speech_started:
            segments.append([])
        if d.send:
            assert segments, "audio sent before any speech onset"
            segments[-1].extend(d.send)
    return segments


def _pos(t: float) -> int:
    return round((t - T0) * RATE)


def test_padding_replayed_tail_sent_long_silence_not_streamed(two_utterances: bytes) -> None:
    gate = UpstreamGate(prefix_padding_ms=300, tail_ms=700)
    decisions = _feed(gate, two_utterances)
    voiced = _voiced(two_utterances)
    onsets = _onsets(voiced)
    assert len(onsets) == 2
    segments = _segments(decisions)
    assert len(segments) == 2
    stops = [pos for pos, d in decisions if d.speech_stopped]
    assert len(stops) == 2

    for n, segment in enumerate(segments):
        # Contiguous: no gap, no overlap, nothing sent twice.
        for a, b in zip(segment, segment[1:], strict=False):
            assert _pos(b.t) == _pos(a.t) + len(a.pcm) // 2
        start = _pos(segment[0].t)
        end = _pos(segment[-1].t) + len(segment[-1].pcm) // 2
        # Prefix padding: exactly 300 ms before the first voiced VAD frame of the onset.
        assert start == onsets[n] * FRAME - 300 * RATE // 1000
        # The bytes sent are the stream's own bytes.
        assert b"".join(c.pcm for c in segment) == two_utterances[2 * start : 2 * end]
        # Tail: the last frame sent is the first one ending >= 700 ms after the last voiced
        # VAD frame of the burst.
        last_voiced = max(i for i, v in enumerate(voiced) if v and i * FRAME < end)
        tail_end = (last_voiced + 1) * FRAME + 700 * RATE // 1000
        assert end - FRAME < tail_end <= end
        assert stops[n] + FRAME == end

    # The silence between the bursts (beyond the tail and before the padding) is not sent.
    gap_start = _pos(segments[0][-1].t) + FRAME
    gap_end = _pos(segments[1][0].t)
    assert gap_end - gap_start > 3 * RATE
    sent = sum(len(c.pcm) // 2 for s in segments for c in s)
    assert sent < len(two_utterances) // 2 - (gap_end - gap_start) + 1


def test_nothing_sent_on_silence() -> None:
    gate = UpstreamGate()
    silence = bytes(2 * 2 * RATE)
    assert all(not d.send and not d.streaming for _, d in _feed(gate, silence))


def test_vad_frame_length_differs_from_capture_frame(two_utterances: bytes) -> None:
    """30 ms VAD frames under 20 ms capture frames: padding is still exact (sliced frames)."""
    gate = UpstreamGate(vad_frame_ms=30, prefix_padding_ms=300)
    segments = _segments(_feed(gate, two_utterances))
    onsets = _onsets(_voiced(two_utterances, frame_ms=30), min_frames=2, window=7)
    assert [_pos(s[0].t) for s in segments] == [i * 480 - 4800 for i in onsets]


def test_padding_clamped_at_stream_start_and_reset() -> None:
    speech = _clip("sentence_01.wav")[2 * RATE :]  # drop the 1 s lead-in: speech at once
    gate = UpstreamGate(prefix_padding_ms=300)
    segments = _segments(_feed(gate, speech))
    assert _pos(segments[0][0].t) == 0
    gate.reset()
    assert not gate.streaming
    assert _segments(_feed(gate, speech)) == segments


def test_speech_detector_independent_of_input_sizes(two_utterances: bytes) -> None:
    reference = _voiced(two_utterances)
    detector = SpeechDetector()
    pieces: list[bool] = []
    for i in range(0, len(two_utterances), 2 * 77):  # 77 samples: never a VAD frame boundary
        pieces += detector.process(two_utterances[i : i + 2 * 77])
    assert pieces == reference[: len(pieces)] and len(reference) - len(pieces) <= 1


def test_preemphasis_keeps_road_rumble_out() -> None:
    """Brown noise at -20 dBFS is "speech" to webrtcvad in every mode; not after pre-emphasis."""
    rng = np.random.default_rng(5)
    n = 3 * RATE
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)
    x = np.fft.irfft(spectrum, n)
    rumble = np.round(x / np.sqrt(np.mean(x**2)) * 3277).astype("<i2").tobytes()
    assert np.mean(SpeechDetector(preemphasis=None).process(rumble)) > 0.9
    assert np.mean(SpeechDetector().process(rumble)) < 0.05


def _endpoints(ep: LocalEndpointer, pcm: bytes) -> list:
    return [
        (i // 2, ep.process(pcm[i : i + 2 * FRAME], T0 + i / (2 * RATE)))
        for i in range(0, len(pcm), 2 * FRAME)
    ]


def test_local_endpointer_fires_once_after_configured_silence() -> None:
    pcm = _clip("sentence_02.wav") + bytes(2 * RATE * 2)
    voiced = _voiced(pcm)
    onset = _onsets(voiced)[0]
    last_voiced = max(i for i, v in enumerate(voiced) if v)
    speech_end = (last_voiced + 1) * FRAME
    for silence_ms in (500, 800):
        out = _endpoints(LocalEndpointer(silence_ms=silence_ms), pcm)
        starts = [d for _, d in out if d.speech_started]
        ends = [(pos, d) for pos, d in out if d.end_of_utterance]
        assert len(starts) == 1 and starts[0].t_speech == pytest.approx(T0 + onset * FRAME / RATE)
        assert len(ends) == 1
        pos, d = ends[0]
        # Fired on the first frame whose end is >= silence_ms past the end of speech.
        assert pos < speech_end + silence_ms * RATE // 1000 <= pos + FRAME
        assert d.t_speech_end == pytest.approx(T0 + speech_end / RATE)


def test_local_endpointer_ignores_blips_and_rearms() -> None:
    speech = _clip("sentence_02.wav")
    voiced = _voiced(speech)
    first = voiced.index(True)
    blip = speech[2 * first * FRAME : 2 * (first + 5) * FRAME]  # 100 ms of real speech
    silence = bytes(RATE * 2)
    ep = LocalEndpointer(min_speech_ms=200)
    out = _endpoints(ep, silence + blip + silence)
    assert not any(d.end_of_utterance for _, d in out)
    # The next real utterance ends normally, and so does the one after it.
    ends = [d for _, d in _endpoints(ep, speech + silence + speech + silence) if d.end_of_utterance]
    assert len(ends) == 2


def test_open_streams_from_the_given_time_at_once_then_until_the_tail() -> None:
    gate = UpstreamGate(prefix_padding_ms=300, tail_ms=200)
    rng = np.random.default_rng(3)
    frames = [(rng.integers(-20, 20, 320).astype("<i2").tobytes(), i * 0.02) for i in range(20)]
    for pcm, t in frames:
        assert not gate.process(pcm, t).send  # quiet: nothing streams by itself
    # The wake word ended 110 ms before the newest frame ended: exactly that audio, at once.
    opened = gate.open(frames[-1][1] + 0.02 - 0.11)
    sent = b"".join(c.pcm for c in opened.send)
    assert sent == b"".join(p for p, _ in frames)[-110 * 32:]
    assert opened.streaming and opened.send[0].t == pytest.approx(0.4 - 0.11)
    # Then every frame until tail_ms of silence has passed, then nothing.
    out = [gate.process(p, 0.4 + i * 0.02) for i, (p, _) in enumerate(frames)]
    assert [bool(d.send) for d in out[:10]] == [True] * 10 and not out[10].send


def test_padding_never_sends_the_previous_tail_again() -> None:
    """Speech again shortly after a tail ended: its prefix padding would reach back into what
    the tail sent, so it starts where the tail stopped — nothing twice, nothing skipped."""
    first = _clip("sentence_04.wav")[: -2 * RATE]  # without the clips' 1 s of padding
    second = _clip("sentence_00.wav")[2 * RATE :]
    pcm = first + bytes(int(0.85 * RATE) * 2) + second
    segments = _segments(_feed(UpstreamGate(prefix_padding_ms=300, tail_ms=700), pcm))
    assert len(segments) == 2
    chunks = [c for s in segments for c in s]
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert _pos(b.t) == _pos(a.t) + len(a.pcm) // 2
    start, end = _pos(chunks[0].t), _pos(chunks[-1].t) + len(chunks[-1].pcm) // 2
    assert b"".join(c.pcm for c in chunks) == pcm[2 * start : 2 * end]
