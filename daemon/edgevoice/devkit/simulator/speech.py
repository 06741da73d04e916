"""The simulator's audio: the reply voice (espeak-ng speech, or a tone) and the energy VAD
that finds the user's speech in the appended audio."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass

import numpy as np

from edgevoice.audio.convert import resample
from edgevoice.offline.speech import SpeechError, espeak

log = logging.getLogger(__name__)

#: VAD analysis frame.
FRAME_MS = 10
#: Silence between the words of a reply spoken word by word (word timestamps).
WORD_GAP_MS = 60
#: Below this a sample counts as silence when a word's clip is trimmed.
SILENCE_LEVEL = 200


class Tts:
    """espeak-ng speech (or a 440 Hz tone) as PCM16 mono, cached per (text, rate)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("espeak-ng") is not None
        self._cache: dict[tuple[str, int], bytes] = {}

    async def pcm(self, text: str, rate: int) -> bytes:
        key = (text, rate)
        if key not in self._cache:
            native = await self._synthesize(text)
            if native is None:
                self._cache[key] = tone(text, rate)
            else:
                data, native_rate = native
                self._cache[key] = resample(data, native_rate, rate)
        return self._cache[key]

    async def words_pcm(self, words: list[str], rate: int,
                        gap_ms: int = WORD_GAP_MS) -> tuple[bytes, list[tuple[int, int]]]:
        """The words spoken one by one (each trimmed of its silence, ``gap_ms`` of silence
        after each), and each word's (offset ms, duration ms) in that audio: word
        timestamps that are exact by construction."""
        slots = asyncio.Semaphore(4)  # a few espeak-ng processes at a time
        clips = await asyncio.gather(*(self._word_clip(w, rate, slots) for w in words))
        gap = bytes(2 * (rate * gap_ms // 1000))
        spans: list[tuple[int, int]] = []
        out = bytearray()
        for clip in clips:
            start = len(out) // 2 * 1000 // rate
            out += clip
            end = -(-len(out) // 2 * 1000 // rate)  # up: the word has finished by then
            spans.append((start, end - start))
            out += gap
        return bytes(out), spans

    async def _word_clip(self, word: str, rate: int, slots: asyncio.Semaphore) -> bytes:
        async with slots:
            pcm = await self.pcm(word, rate)
        x = np.abs(np.frombuffer(pcm, "<i2"))
        loud = np.flatnonzero(x > SILENCE_LEVEL)
        if len(loud) == 0:
            return pcm
        return pcm[2 * int(loud[0]):2 * (int(loud[-1]) + 1)]

    async def _synthesize(self, text: str) -> tuple[bytes, int] | None:
        if not self.enabled:
            return None
        try:
            return await espeak(text, timeout_s=10.0)
        except SpeechError as exc:
            log.warning("espeak-ng failed (%s); using a tone", exc)
            return None


def tone(text: str, rate: int) -> bytes:
    """440 Hz at -10 dBFS, ~65 ms per character (0.3–20 s), 10 ms fades against clicks."""
    seconds = min(max(len(text) * 0.065, 0.3), 20.0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    wave = 0.316 * np.sin(2 * np.pi * 440.0 * t)
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


@dataclass
class Vad:
    """Frame-level state of the energy VAD; times are ms on the input timeline."""

    speaking: bool = False
    run_start: float | None = None
    run_ms: float = 0.0
    gap_ms: float = 0.0
    last_speech_end: float = 0.0
    onset: float = 0.0
    item_id: str | None = None

    def reset(self) -> None:
        self.speaking = False
        self._end_run()
        self.item_id = None

    def _end_run(self) -> None:
        """Forget the current run of voiced frames: the next onset is confirmed afresh."""
        self.run_start, self.run_ms, self.gap_ms = None, 0.0, 0.0

    def step(self, speech: bool, t: float, min_speech_ms: float, silence_ms: float) -> str | None:
        """Feed one frame starting at ``t``; returns "start", "stop" or None."""
        end = t + FRAME_MS
        if not self.speaking:
            if speech:
                if self.run_start is None:
                    self.run_start = t
                self.run_ms += FRAME_MS
                self.gap_ms = 0.0
                if self.run_ms >= min_speech_ms:
                    self.speaking = True
                    self.onset = self.run_start
                    self.last_speech_end = end
                    return "start"
            elif self.run_start is not None:
                # Tolerate short dips (stop consonants) while confirming an onset.
                self.gap_ms += FRAME_MS
                if self.gap_ms > 40:
                    self._end_run()
            return None
        if speech:
            self.last_speech_end = end
        elif end - self.last_speech_end >= silence_ms:
            self.speaking = False
            self._end_run()
            return "stop"
        return None
