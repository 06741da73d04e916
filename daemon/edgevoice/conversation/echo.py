"""Echo guard: is the microphone hearing the user, or the assistant's own voice?

The speaker's output comes back into the microphone attenuated by the room (the *coupling*,
in dB) and delayed (the acoustic plus device path). The guard keeps the level of what was
handed to the speaker over the last seconds and predicts the echo level at the microphone:
``max(reference level in [t - delay - spread, t - delay + spread]) + coupling``. Speech counts
as the user's only when the microphone is at least ``margin_db`` above that prediction.

The coupling is learned: while the assistant plays and the microphone is not clearly above
the current estimate, the estimate follows the upper envelope of ``mic - reference`` (fast up,
slower down), so a loud speaker next to the microphone raises the bar by itself and a quiet
room lowers it within about a second of playback. It starts from ``coupling_db`` and
never drops below ``min_coupling_db``. Pure: no I/O, time is an argument; memory is bounded by
``history_s``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

SILENCE_DB = -100.0
LEARN_MIN_REF_DB = -50.0  # quieter playback says too little about the room to learn from


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dBFS (-100 for digital silence)."""
    if len(pcm) < 2:
        return SILENCE_DB
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else SILENCE_DB


class EchoGuard:
    def __init__(
        self,
        *,
        delay_s: float = 0.05,
        spread_s: float = 0.15,
        coupling_db: float = -6.0,
        min_coupling_db: float = -30.0,
        margin_db: float = 10.0,
        history_s: float = 3.0,
    ) -> None:
        self.delay_s = delay_s
        self.spread_s = spread_s
        self.coupling_db = coupling_db
        self.min_coupling_db = min_coupling_db
        self.margin_db = margin_db
        self.history_s = history_s
        self._ref: deque[tuple[float, float]] = deque()  # (t, level dB) handed to the speaker

    def reference(self, level_db: float, t: float) -> None:
        """Record that audio of ``level_db`` reached the speaker at time ``t``."""
        self._ref.append((t, level_db))
        while self._ref and self._ref[0][0] < t - self.history_s:
            self._ref.popleft()

    def expected_echo_db(self, t: float) -> float:
        """Predicted echo level at the microphone at time ``t`` (SILENCE_DB when none)."""
        lo, hi = t - self.delay_s - self.spread_s, t - self.delay_s + self.spread_s
        levels = [lv for (tr, lv) in self._ref if lo <= tr <= hi]
        if not levels:
            return SILENCE_DB
        return max(levels) + self.coupling_db

    def played_within(self, lo: float, hi: float) -> bool:
        """True when audio above silence reached the speaker between ``lo`` and ``hi``."""
        return any(lo <= tr <= hi and lv > SILENCE_DB + 1 for (tr, lv) in self._ref)

    def is_user(self, mic_db: float, t: float) -> bool:
        """True when the microphone level cannot be the assistant's echo. Call it for every
        microphone frame while the assistant may be heard (voiced or not): frames that are
        not the user teach the guard the room's coupling."""
        expected = self.expected_echo_db(t)
        if expected <= SILENCE_DB + 1:
            return True
        user = mic_db >= expected + self.margin_db
        ref = expected - self.coupling_db
        if not user and ref > LEARN_MIN_REF_DB:
            observed = max(self.min_coupling_db, mic_db - ref)
            # Track the upper envelope of mic − reference: fast up (a louder path is
            # dangerous), slower down (a quiet room lowers the bar within about a second).
            rate = 0.3 if observed > self.coupling_db else 0.05
            self.coupling_db = max(self.min_coupling_db,
                                   self.coupling_db + rate * (observed - self.coupling_db))
        return user
