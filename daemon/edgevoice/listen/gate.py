"""VAD gate in front of the wake-word detector: the models run only around speech.

The wake-word engines cost the same CPU whatever the audio is (openWakeWord's features most:
~0.016 s per second of audio with XNNPACK). The gate runs webrtcvad (~0.2 ms per second, on
pre-emphasised audio so road rumble is not taken for speech) on every frame and feeds the
detector only from ``pre_roll`` before a speech onset until ``hangover`` after the last
voiced frame. Recent audio waits in a ring buffer, so the audio before the onset (the start
of the wake word and the model's context) is replayed to the detector when speech starts.

Exactness. Segments fed to the detector start on the detector's grid (80 ms for openWakeWord,
30 ms for microWakeWord, their common multiple for both) counted from the stream start, and a
segment that would overlap audio already fed just continues it. With the default pre-roll (the
detector's context: 1.98 s for the bundled openWakeWord models, 1.5 s for microWakeWord) and
hangover (its warm-up), every score whose window contains a voiced VAD frame is computed. For
openWakeWord, whose scores see a finite window, they are computed bit-identically to an
ungated detector and the gated scores are a subset of the ungated ones. microWakeWord's state
fades rather than ends (see :mod:`edgevoice.listen.micro`): its gated scores differ slightly
from ungated ones, its decisions on the corpus do not (tests/unit/test_wake.py). Decisions
can differ only when a word fires on audio more than a context away from any voiced frame
(noise the VAD calls silence) — then the gate suppresses it, which is the point. No sample is
ever processed twice, so the gated cost is at most the ungated cost plus the VAD.
"""

from __future__ import annotations

from edgevoice.listen.vad import SAMPLE_RATE, AudioChunk, SpeechDetector, _Onset, _Ring
from edgevoice.listen.wake import Detection, WakeWordDetector


class WakeGate:
    """Feeds a :class:`WakeWordDetector` only around speech; frames in, detections out.

    Stream positions are counted in samples from construction or :meth:`forget`; ``t`` is
    only carried through to the detections. No I/O, no threads; one owner.
    """

    def __init__(
        self,
        detector: WakeWordDetector,
        *,
        enabled: bool = True,
        aggressiveness: int = 3,
        vad_frame_ms: int = 20,
        preemphasis: float | None = 0.97,
        pre_roll_s: float | None = None,
        hangover_s: float | None = None,
        onset_min_voiced_ms: int = 20,
        onset_window_ms: int = 200,
    ) -> None:
        """detector: the wake-word detector to feed (owned by the caller).
        enabled: False feeds every frame to the detector (no VAD at all).
        aggressiveness, vad_frame_ms, preemphasis: the VAD, see
            :class:`edgevoice.listen.vad.SpeechDetector`.
        pre_roll_s: audio replayed to the detector from before the first voiced frame of an
            onset. Default (None): the detector's context (1.98 s for openWakeWord), which
            makes gated scores identical to ungated ones; shorter saves CPU but may cut the
            start of a word. Never less than 1.5 s or the context, whichever is shorter.
        hangover_s: how long the detector keeps running after the end of the last voiced
            frame. Default (None): the detector's warm-up (2.08 s for openWakeWord), so every
            score that sees the end of speech is computed.
        onset_min_voiced_ms, onset_window_ms: the gate opens when this much voiced audio falls
            within the window (default: one 20 ms VAD frame — a missed onset would be a
            missed wake word, a false one only costs CPU)."""
        self.detector = detector
        self.enabled = enabled
        chunk = detector.chunk_samples
        pre_roll = (
            detector.context_samples if pre_roll_s is None else round(pre_roll_s * SAMPLE_RATE)
        )
        if pre_roll < min(round(1.5 * SAMPLE_RATE), detector.context_samples):
            raise ValueError(f"wake gate pre_roll_s must be >= 1.5 s (or the detector's "
                             f"context), got {pre_roll_s}")
        hangover = (
            detector.warmup_samples if hangover_s is None else round(hangover_s * SAMPLE_RATE)
        )
        if hangover < 0:
            raise ValueError(f"wake gate hangover_s must be >= 0, got {hangover_s}")
        self.pre_roll_samples = pre_roll
        self.hangover_samples = hangover
        self._vad = SpeechDetector(
            aggressiveness=aggressiveness, frame_ms=vad_frame_ms, preemphasis=preemphasis
        )
        fs = self._vad.frame_samples
        self._onset = _Onset.from_ms(onset_min_voiced_ms, onset_window_ms, fs)
        # Enough to replay the pre-roll before the oldest voiced frame of an onset window, plus
        # up to one chunk of grid alignment.
        self._ring = _Ring(pre_roll + self._onset.window_frames * fs + chunk)
        self.samples_in = 0
        self.samples_fed = 0
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._vad.reset()
        self._onset.clear()
        self._ring.clear()
        self._pos = 0  # stream samples received
        self._fed_end = 0  # stream position up to which the detector has been fed
        self._fed_any = False
        self._open = False
        self._close_at = 0  # with the gate open: stream position at which it closes

    @property
    def is_open(self) -> bool:
        """True while the detector is being fed (always, when the gate is disabled)."""
        return self._open or not self.enabled

    @property
    def duty_cycle(self) -> float:
        """Fraction of the audio received so far that reached the detector."""
        return self.samples_fed / self.samples_in if self.samples_in else 0.0

    def forget(self) -> None:
        """The next frame is not contiguous with the previous one (e.g. the wake word was paused
        during a turn): start a new stream and make the detector forget (O(1))."""
        self._reset_stream()
        self.detector.forget()

    def process(self, frame: bytes, t: float) -> list[Detection]:
        """Feed one frame (stream time ``t`` of its first sample); returns the detections that
        the audio fed to the detector because of this frame produced, oldest first."""
        n = len(frame) // 2
        self.samples_in += n
        if not self.enabled:
            self.samples_fed += n
            return self.detector.process(frame, t)
        start = self._pos
        self._pos += n
        current = AudioChunk(frame, t)
        self._ring.push(start, current)
        fs = self._vad.frame_samples
        onset_at: int | None = None
        decisions = self._vad.process(frame)
        # VAD frame indices count from the detector's reset, as do stream positions.
        first_index = self._vad.frames_done - len(decisions)
        for index, voiced in enumerate(decisions, first_index):
            first = self._onset.update(index, voiced)
            if self._open or onset_at is not None:
                if voiced:
                    self._close_at = (index + 1) * fs + self.hangover_samples
            elif first is not None:
                onset_at = first
                self._close_at = (index + 1) * fs + self.hangover_samples
        detections: list[Detection] = []
        if onset_at is not None:
            self._open = True
            chunk = self.detector.chunk_samples
            begin = max(0, onset_at * fs - self.pre_roll_samples) // chunk * chunk
            if self._fed_any and begin <= self._fed_end:
                begin = self._fed_end  # still contiguous: carry on as if never closed
            else:
                self.detector.forget()
            for piece in self._ring.since(begin):
                detections += self._feed(piece)
        elif self._open:
            detections += self._feed(current)
        if self._open and self._pos >= self._close_at:
            self._open = False
        return detections

    def _feed(self, piece: AudioChunk) -> list[Detection]:
        # Pieces always run up to the newest frame, so the detector is then fed up to _pos.
        self.samples_fed += len(piece.pcm) // 2
        self._fed_any = True
        self._fed_end = self._pos
        return self.detector.process(piece.pcm, piece.t)
