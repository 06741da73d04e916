"""Voice activity detection for the audio sent upstream, as frames-in, decisions-out objects.

* :class:`SpeechDetector` — webrtcvad on frames of any length, with an optional
  pre-emphasis filter in front of it (see below). Also used by the wake-word gate.
* :class:`UpstreamGate` — while LISTENING, decides which audio is sent to the service:
  speech, a prefix padding replayed from a small buffer when speech starts, and a trailing
  tail of silence long enough for the server's turn detection to close the turn. Longer
  silences are not streamed.
* :class:`LocalEndpointer` — when turn detection is off in the session, decides the end of an
  utterance locally (the caller then sends ``input_audio_buffer.commit`` + ``response.create``).

All of them are pure: no I/O, no threads, no clock. Time is the ``t`` passed with each frame
(stream time of the frame's first sample, in seconds); every duration is counted in samples of
the stream, so decisions are exact and reproducible. Audio is 16 kHz mono PCM16 ``bytes``.

Why pre-emphasis: webrtcvad labels low-frequency rumble (brown noise, i.e. road noise in a
car) as speech in every mode — 100 % of frames at −20 dBFS. A first-order pre-emphasis
``y[n] = x[n] − 0.97·x[n−1]`` before the VAD removes the rumble (0 % of frames, still 0 % at
−10 dBFS) while speech keeps 60–98 % voiced frames. Only the VAD sees the filtered signal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

SAMPLE_RATE = 16000


def _ms_to_samples(ms: float) -> int:
    return int(round(ms * SAMPLE_RATE / 1000))


class SpeechDetector:
    """webrtcvad over a stream of PCM16 frames of any length.

    Input is re-cut into VAD frames of ``frame_ms``; :meth:`process` returns one decision per
    VAD frame completed by the input (oldest first) and keeps the remainder for the next call.
    VAD frame *i* covers stream samples ``[i·frame_samples, (i+1)·frame_samples)`` counted
    from construction or :meth:`reset`. Cost: ~0.1–0.3 ms of CPU per second of audio.
    """

    def __init__(
        self,
        *,
        aggressiveness: int = 3,
        frame_ms: int = 20,
        preemphasis: float | None = 0.97,
    ) -> None:
        """aggressiveness: webrtcvad mode 0 (least) … 3 (most eager to call audio non-speech).
        frame_ms: VAD frame length, 10, 20 or 30 ms (webrtcvad's only sizes).
        preemphasis: coefficient of the pre-emphasis filter in front of the VAD (0.97), or
            None to feed the VAD the raw audio."""
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"VAD frame length must be 10, 20 or 30 ms, got {frame_ms}")
        if preemphasis is not None and not 0.0 < preemphasis < 1.0:
            raise ValueError(f"pre-emphasis must be in (0, 1) or None, got {preemphasis}")
        self._mode = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_samples = SAMPLE_RATE * frame_ms // 1000
        self._frame_bytes = 2 * self.frame_samples
        self._preemphasis = preemphasis
        self._pending = bytearray()
        self._last = 0.0
        #: Number of VAD frames classified since construction or :meth:`reset`; the gates
        #: derive VAD frame indices from it.
        self.frames_done = 0

    def reset(self) -> None:
        """Start a new stream: drop the partial frame, the filter state and webrtcvad's own
        adaptive state (a new instance: its noise estimates would carry over otherwise)."""
        self._vad = webrtcvad.Vad(self._mode)
        self._pending.clear()
        self._last = 0.0
        self.frames_done = 0

    def process(self, pcm: bytes) -> list[bool]:
        """Classify the VAD frames completed by ``pcm``: True = speech."""
        self._pending += pcm
        n = len(self._pending) // self._frame_bytes
        if n == 0:
            return []
        block = bytes(self._pending[: n * self._frame_bytes])
        del self._pending[: n * self._frame_bytes]
        if self._preemphasis is not None:
            x = np.frombuffer(block, dtype="<i2").astype(np.float32)
            y = np.empty_like(x)
            y[0] = x[0] - self._preemphasis * self._last
            y[1:] = x[1:] - self._preemphasis * x[:-1]
            self._last = float(x[-1])
            block = np.clip(y, -32768, 32767).astype("<i2").tobytes()
        fb = self._frame_bytes
        out = [self._vad.is_speech(block[i * fb : (i + 1) * fb], SAMPLE_RATE) for i in range(n)]
        self.frames_done += n
        return out


class _Onset:
    """Speech-onset rule shared by the gates: speech starts when at least ``min_frames``
    voiced VAD frames fall within the last ``window_frames`` VAD frames. The start of the
    earliest of those voiced frames is the speech start (the anchor for padding/pre-roll)."""

    def __init__(self, min_frames: int, window_frames: int) -> None:
        if min_frames < 1 or window_frames < min_frames:
            raise ValueError(
                f"speech onset needs 1 <= min frames ({min_frames}) <= window ({window_frames})"
            )
        self.min_frames = min_frames
        self.window_frames = window_frames
        self._voiced: deque[int] = deque()  # indices of recent voiced VAD frames

    @classmethod
    def from_ms(cls, min_ms: float, window_ms: float, frame_samples: int) -> _Onset:
        """The rule for ``min_ms`` of voiced audio within ``window_ms``, both rounded up to
        whole VAD frames of ``frame_samples`` (at least one frame each)."""
        return cls(
            max(1, -(-_ms_to_samples(min_ms) // frame_samples)),
            max(1, -(-_ms_to_samples(window_ms) // frame_samples)),
        )

    def update(self, index: int, voiced: bool) -> int | None:
        """Record VAD frame ``index``; return the index of the first voiced frame of the
        onset when the rule is met, else None."""
        if voiced:
            self._voiced.append(index)
        while self._voiced and self._voiced[0] <= index - self.window_frames:
            self._voiced.popleft()
        if len(self._voiced) >= self.min_frames:
            return self._voiced[0]
        return None

    def count(self) -> int:
        """Voiced frames currently within the window."""
        return len(self._voiced)

    def clear(self) -> None:
        self._voiced.clear()


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """PCM16 mono audio and the stream time of its first sample."""

    pcm: bytes
    t: float

    @property
    def duration(self) -> float:
        return len(self.pcm) / (2 * SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class UpstreamDecision:
    """What to do with the audio after one input frame.

    send: audio to send upstream now, in stream order (at speech start: the prefix padding
        replayed from the buffer, then the current frame). Empty while paused.
    speech_started: speech began; ``send`` starts with the prefix padding.
    speech_stopped: the trailing silence tail ended with this frame; streaming is paused
        until the next speech onset.
    streaming: audio is being sent (in speech or in its tail) after this frame.
    voiced: a VAD frame completed by this input frame was voiced (lets a caller reuse this
        gate's VAD, e.g. for barge-in, instead of running a second one on the same audio).
    """

    send: tuple[AudioChunk, ...]
    speech_started: bool
    speech_stopped: bool
    streaming: bool
    voiced: bool = False


class _Ring:
    """Recent input frames with their stream sample positions. After each push it holds at
    least ``horizon`` samples before the start of the newest frame (whole frames are kept),
    whatever the frame sizes."""

    def __init__(self, horizon_samples: int) -> None:
        self.horizon = horizon_samples
        self._frames: deque[tuple[int, AudioChunk]] = deque()

    def push(self, start: int, chunk: AudioChunk) -> None:
        self._frames.append((start, chunk))
        cutoff = start - self.horizon
        while self._frames:
            s, c = self._frames[0]
            if s + len(c.pcm) // 2 > cutoff:
                break
            self._frames.popleft()

    def since(self, position: int) -> list[AudioChunk]:
        """The buffered audio from stream sample ``position`` on (clamped to what is held),
        slicing the first frame so the result starts exactly at ``position``."""
        out: list[AudioChunk] = []
        for s, c in self._frames:
            n = len(c.pcm) // 2
            if s + n <= position:
                continue
            if s < position:
                cut = position - s
                out.append(AudioChunk(c.pcm[2 * cut :], c.t + cut / SAMPLE_RATE))
            else:
                out.append(c)
        return out

    def clear(self) -> None:
        self._frames.clear()


class UpstreamGate:
    """Decides, frame by frame, which audio to stream to the service while LISTENING.

    Guarantees (positions in stream samples, exact):

    * Nothing is sent before the first speech onset.
    * At an onset, the audio from ``prefix_padding_ms`` before the first voiced VAD frame of the
      onset up to the current frame is sent at once (clamped to the stream start and to the
      end of what was already sent: speech again shortly after a tail has a shorter padding),
      then every frame while speech lasts.
    * After the last voiced VAD frame, frames keep being sent until ``tail_ms`` of audio past
      the end of that VAD frame has been sent; the frame that reaches it is the last one
      (``speech_stopped``). A voiced VAD frame during the tail extends it.
    * Audio is never sent twice and never reordered (:meth:`open` excepted, see there).
    * While :attr:`held` (push-to-talk held), an open stream never stops; the tail is counted
      from the frame where ``held`` went false.
    """

    def __init__(
        self,
        *,
        aggressiveness: int = 3,
        vad_frame_ms: int = 20,
        preemphasis: float | None = 0.97,
        prefix_padding_ms: int = 300,
        tail_ms: int = 700,
        onset_min_voiced_ms: int = 40,
        onset_window_ms: int = 200,
        lookback_ms: int = 0,
    ) -> None:
        """aggressiveness, vad_frame_ms, preemphasis: see :class:`SpeechDetector`.
        prefix_padding_ms: audio sent from before the speech start (Voice Live's own
            ``prefix_padding_ms`` default is 300 ms).
        tail_ms: silence sent after speech so the server's turn detection can close the turn;
            make it the session's ``silence_duration_ms`` + ~200 ms (default 500 + 200).
        onset_min_voiced_ms, onset_window_ms: speech starts when this much voiced audio falls
            within the window (two 20 ms VAD frames in 200 ms by default: one click does not
            open the stream).
        lookback_ms: how far before the newest frame :meth:`open` can still start (at least
            the padding and the onset window): a wake word detected that late is streamed
            from its end all the same."""
        self._vad = SpeechDetector(
            aggressiveness=aggressiveness, frame_ms=vad_frame_ms, preemphasis=preemphasis
        )
        fs = self._vad.frame_samples
        self._onset = _Onset.from_ms(onset_min_voiced_ms, onset_window_ms, fs)
        if prefix_padding_ms < 0 or tail_ms < 0 or lookback_ms < 0:
            raise ValueError("prefix_padding_ms, tail_ms and lookback_ms must be >= 0")
        self.prefix_padding_samples = _ms_to_samples(prefix_padding_ms)
        self.tail_samples = _ms_to_samples(tail_ms)
        self._ring = _Ring(max(self.prefix_padding_samples + self._onset.window_frames * fs,
                               _ms_to_samples(lookback_ms)))
        self._pos = 0  # stream samples received
        self._streaming = False
        self._speech_end = 0  # end of the last voiced VAD frame while streaming
        self._sent_end = 0  # stream position up to which audio was returned to send
        # Push-to-talk held: once open, every frame is sent whatever the VAD says (the user
        # says when the turn ends); the tail starts at the release.
        self.held = False

    @property
    def streaming(self) -> bool:
        """True while audio is being sent (speech or its tail)."""
        return self._streaming

    def reset(self) -> None:
        """Start a new stream (e.g. a new LISTENING period): paused, buffer empty."""
        self._vad.reset()
        self._onset.clear()
        self._ring.clear()
        self._pos = 0
        self._streaming = False
        self._speech_end = 0
        self._sent_end = 0
        self.held = False

    def open(self, since_t: float) -> UpstreamDecision:
        """Start streaming now, from stream time ``since_t`` on (the end of the wake word):
        the buffered audio from there is sent at once (clamped to what the buffer holds:
        ``prefix_padding_ms`` + the onset window, or ``lookback_ms``), then every frame until
        ``tail_ms`` passes without speech — the user usually speaks right after the wake word,
        so nothing waits for the VAD. Works in any state; audio before ``since_t`` is never
        returned. Audio from ``since_t`` on is returned even if an earlier decision returned
        it: the caller opens the gate when it did not send (while idle, the wake word was
        speech too)."""
        position = self._pos
        for s, c in self._ring._frames:
            end = s + len(c.pcm) // 2
            if c.t + c.duration > since_t:
                position = max(s, min(end, s + round((since_t - c.t) * SAMPLE_RATE)))
                break
        self._streaming = True
        self._onset.clear()
        self._speech_end = self._pos
        self._sent_end = self._pos
        return UpstreamDecision(tuple(self._ring.since(position)), False, False, True, False)

    def process(self, frame: bytes, t: float) -> UpstreamDecision:
        """Feed one frame (stream time ``t`` of its first sample); get what to send now."""
        start = self._pos
        chunk = AudioChunk(frame, t)
        self._pos += len(frame) // 2
        self._ring.push(start, chunk)
        fs = self._vad.frame_samples
        onset_at: int | None = None
        any_voiced = False
        decisions = self._vad.process(frame)
        # VAD frame indices count from the detector's reset, as do stream positions.
        first_index = self._vad.frames_done - len(decisions)
        for index, voiced in enumerate(decisions, first_index):
            any_voiced = any_voiced or voiced
            if self._streaming or onset_at is not None:
                if voiced:
                    self._speech_end = (index + 1) * fs
                continue
            first = self._onset.update(index, voiced)
            if first is not None:
                onset_at = first
                self._speech_end = (index + 1) * fs
        if not self._streaming:
            if onset_at is None:
                return UpstreamDecision((), False, False, False, any_voiced)
            self._streaming = True
            self._onset.clear()
            send = self._send_since(onset_at * fs - self.prefix_padding_samples)
            return UpstreamDecision(send, True, False, True, any_voiced)
        self._sent_end = self._pos
        if self.held:
            self._speech_end = self._pos  # the tail counts from the release
        elif self._pos >= self._speech_end + self.tail_samples:
            self._streaming = False
            return UpstreamDecision((chunk,), False, True, False, any_voiced)
        return UpstreamDecision((chunk,), False, False, True, any_voiced)

    def _send_since(self, position: int) -> tuple[AudioChunk, ...]:
        """The buffered audio from ``position`` on, but never again what was already
        returned: a prefix padding reaching back into the previous segment's tail (speech
        again shortly after the tail ended) starts where that segment stopped."""
        send = tuple(self._ring.since(max(0, position, self._sent_end)))
        self._sent_end = self._pos
        return send


@dataclass(frozen=True, slots=True)
class EndpointDecision:
    """Result of one frame for :class:`LocalEndpointer`.

    speech_started: an utterance began (its first voiced VAD frame starts at ``t_speech``).
    end_of_utterance: the utterance ended: commit the input buffer and ask for a response.
    speaking: an utterance is in progress after this frame.
    t_speech_end: with ``end_of_utterance``, stream time of the end of the last voiced audio.
    """

    speech_started: bool = False
    end_of_utterance: bool = False
    speaking: bool = False
    t_speech: float | None = None
    t_speech_end: float | None = None


class LocalEndpointer:
    """Local end-of-utterance detection for sessions with turn detection off.

    Fires ``end_of_utterance`` exactly once per utterance, on the first frame whose end is at
    least ``silence_ms`` past the end of the last voiced VAD frame, provided the utterance had
    at least ``min_speech_ms`` of voiced audio (shorter blips are dropped silently). It then
    waits for the next onset; :meth:`reset` starts over for a new turn.
    """

    def __init__(
        self,
        *,
        aggressiveness: int = 3,
        vad_frame_ms: int = 20,
        preemphasis: float | None = 0.97,
        silence_ms: int = 800,
        min_speech_ms: int = 200,
        onset_min_voiced_ms: int = 40,
        onset_window_ms: int = 200,
    ) -> None:
        """aggressiveness, vad_frame_ms, preemphasis: see :class:`SpeechDetector`.
        silence_ms: silence after speech that ends the utterance.
        min_speech_ms: voiced audio an utterance needs before its end counts (filters coughs
            and clicks).
        onset_min_voiced_ms, onset_window_ms: the onset rule of :class:`UpstreamGate`."""
        self._vad = SpeechDetector(
            aggressiveness=aggressiveness, frame_ms=vad_frame_ms, preemphasis=preemphasis
        )
        fs = self._vad.frame_samples
        self._onset = _Onset.from_ms(onset_min_voiced_ms, onset_window_ms, fs)
        if silence_ms <= 0 or min_speech_ms < 0:
            raise ValueError("silence_ms must be > 0 and min_speech_ms >= 0")
        self.silence_samples = _ms_to_samples(silence_ms)
        self.min_speech_samples = _ms_to_samples(min_speech_ms)
        self.reset()

    def reset(self) -> None:
        """Start a new turn: no utterance in progress."""
        self._vad.reset()
        self._onset.clear()
        self._pos = 0
        self._t_origin = 0.0  # stream time of sample 0, learnt from the first frame
        self._speaking = False
        self._voiced_samples = 0
        self._speech_end = 0

    def _time(self, position: int) -> float:
        return self._t_origin + position / SAMPLE_RATE

    def process(self, frame: bytes, t: float) -> EndpointDecision:
        """Feed one frame (stream time ``t`` of its first sample)."""
        if self._pos == 0:
            self._t_origin = t
        self._pos += len(frame) // 2
        fs = self._vad.frame_samples
        started: int | None = None
        decisions = self._vad.process(frame)
        first_index = self._vad.frames_done - len(decisions)
        for index, voiced in enumerate(decisions, first_index):
            first = self._onset.update(index, voiced)
            if self._speaking:
                if voiced:
                    self._voiced_samples += fs
                    self._speech_end = (index + 1) * fs
            elif first is not None:
                # Count the onset's voiced frames; the onset ends at this frame.
                self._speaking = True
                started = first
                self._voiced_samples = self._onset.count() * fs
                self._speech_end = (index + 1) * fs
                self._onset.clear()
        if started is not None:
            return EndpointDecision(
                speech_started=True, speaking=True, t_speech=self._time(started * fs)
            )
        if self._speaking and self._pos >= self._speech_end + self.silence_samples:
            self._speaking = False
            if self._voiced_samples >= self.min_speech_samples:
                return EndpointDecision(
                    end_of_utterance=True, t_speech_end=self._time(self._speech_end)
                )
        return EndpointDecision(speaking=self._speaking)
