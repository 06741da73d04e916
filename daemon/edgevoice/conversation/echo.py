"""Echo guard: is the microphone hearing the user, or the assistant's own voice?

The speaker's output comes back into the microphone attenuated by the room (the *coupling*,
in dB) and delayed (the acoustic plus device path). The guard keeps the level of what was
handed to the speaker over the last seconds and predicts the echo level at the microphone:
``max(reference level in [t - delay - spread, t - delay + spread]) + coupling``. Speech counts
as the user's only when the microphone is at least ``margin_db`` above that prediction.

The coupling is learned: while the assistant plays, every microphone frame that is not clearly
the user is an observation of ``mic - reference``, and the coupling is the largest of them over
the last ``memory_s`` seconds of playback. A loud speaker next to the microphone raises the bar
at once; a quiet room lowers it after ``memory_s`` of playback; pauses between words cannot
lower it. It starts from ``coupling_db`` and never drops below ``min_coupling_db``. Pure: no
I/O, time is an argument; memory is bounded by ``history_s`` and ``memory_s``.
"""

from __future__ import annotations

from collections import deque

from edgevoice.audio.convert import SILENCE_DB

WARMUP_FRAMES = 50  # observations (about 1 s of playback) before the prior stops being a floor
LEARN_MIN_REF_DB = -50.0  # quieter playback says too little about the room to learn from
USER_HOLD_S = 0.5  # no learning this long after a frame that was the user
MAX_RISE_DB = 1.0  # the most the coupling may rise per observed frame


class EchoGuard:
    def __init__(
        self,
        *,
        delay_s: float = 0.1,
        spread_s: float = 0.15,
        coupling_db: float = -6.0,
        min_coupling_db: float = -30.0,
        margin_db: float = 10.0,
        history_s: float = 3.0,
        memory_s: float = 5.0,
    ) -> None:
        self.delay_s = delay_s
        self.spread_s = spread_s
        self.coupling_db = coupling_db
        self.min_coupling_db = min_coupling_db
        self.margin_db = margin_db
        self.history_s = history_s
        self.memory_s = memory_s
        self._ref: deque[tuple[float, float]] = deque()  # (t, level dB) handed to the speaker
        # (t, mic − reference) of recent frames that were not the user, kept decreasing in
        # the value so the front is the window's maximum (a monotonic queue: O(1) per frame).
        self._observed: deque[tuple[float, float]] = deque()
        self._prior = coupling_db
        self._observations = 0
        self._user_at = float("-inf")

    def reference(self, level_db: float, t: float) -> None:
        """Record that audio of ``level_db`` reached the speaker at time ``t``."""
        self._ref.append((t, level_db))
        while self._ref and self._ref[0][0] < t - self.history_s:
            self._ref.popleft()

    def _reference_at(self, t: float) -> float:
        lo, hi = t - self.delay_s - self.spread_s, t - self.delay_s + self.spread_s
        return max((lv for (tr, lv) in self._ref if lo <= tr <= hi), default=SILENCE_DB)

    def played_within(self, lo: float, hi: float) -> bool:
        """True when audio above silence reached the speaker between ``lo`` and ``hi``."""
        return any(lo <= tr <= hi and lv > SILENCE_DB + 1 for (tr, lv) in self._ref)

    def is_user(self, mic_db: float, t: float) -> bool:
        """True when the microphone level cannot be the assistant's echo. Call it for every
        microphone frame while the assistant may be heard (voiced or not): frames that are
        not the user teach the guard the room's coupling."""
        ref = self._reference_at(t)
        if ref <= SILENCE_DB + 1:
            return True
        user = mic_db >= ref + self.coupling_db + self.margin_db
        if user:
            self._user_at = t
        elif ref > LEARN_MIN_REF_DB and t - self._user_at > USER_HOLD_S:
            # Not right after the user's voice: the quiet ends of their words are not echo.
            # A rise is slew-limited: the onset of the user's voice (quiet first frames not
            # yet clearly above the bar) must not lift the bar out of the user's reach.
            observed = min(mic_db - ref, self.coupling_db + MAX_RISE_DB)
            self._learn(max(self.min_coupling_db, observed), t)
        return user

    def _learn(self, observed: float, t: float) -> None:
        # The coupling is the loudest echo seen over the last memory_s of playback: a pause
        # between words (quiet microphone, loud reference window) cannot pull it down, a
        # quiet room lowers it once the louder observations age out. Without new playback
        # the last estimate stays (the room does not change between replies).
        q = self._observed
        while q and q[-1][1] <= observed:
            q.pop()
        q.append((t, observed))
        while q[0][0] < t - self.memory_s:
            q.popleft()
        self._observations += 1
        # Until a second of playback was observed the prior is a floor: an estimate that fell
        # too low early would call the echo "user" and never see it to learn from.
        warm = self._observations >= WARMUP_FRAMES
        self.coupling_db = q[0][1] if warm else max(self._prior, q[0][1])
