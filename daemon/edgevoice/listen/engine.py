"""What every wake-word engine shares: the spec of a wake word, detections, the firing rule
(threshold, trigger level, refractory period) and the small interface the gate relies on.

An engine takes 16 kHz mono PCM16 frames of any length and returns :class:`Detection`
objects. It cuts the audio into fixed steps counted from its start (or its last
:meth:`WakeEngine.forget`); scores fall on a grid of :attr:`WakeEngine.chunk_samples`. What
the VAD gate needs to know of an engine is in four figures:

* ``chunk_samples`` — the grid: a gate that restarts an engine on a multiple of it, counted
  from the stream start, puts every later score at the same stream position as without the
  restart;
* ``context_samples`` — how much audio before a score can change it: replaying that much
  before speech (the gate's pre-roll) is enough;
* ``warmup_samples`` — after a restart, the audio needed before a score sees its whole
  context; the gate keeps feeding this long after speech, so that every score that sees
  speech is computed;
* ``lag_samples`` — the newest sample a score sees lies this far before the end of the audio
  fed when it is computed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SAMPLE_RATE = 16000

#: The engines, by the name used in ``[[wake.models]] engine = …``.
OPENWAKEWORD = "openwakeword"
MICRO = "micro"
ENGINES: tuple[str, ...] = (OPENWAKEWORD, MICRO)

#: ``on_score(name, score, t_audio)``: every score computed, for telemetry and tests.
ScoreHook = Callable[[str, float, float], None]


class WakeModelError(ValueError):
    """A wake-word model cannot be used; the message names the model and the reason."""


@dataclass(frozen=True, slots=True)
class WakeWordSpec:
    """One wake word to listen for.

    model: a built-in name of the engine, or a path: an openWakeWord ``.tflite`` wake-word
        model, or a microWakeWord model's ``.json`` (which names its ``.tflite``).
    engine: ``"openwakeword"`` (default) or ``"micro"`` (microWakeWord).
    threshold: a score at or above it (openWakeWord), above it (microWakeWord, as its
        ``probability_cutoff``) counts as "above". None: 0.5 for openWakeWord, the model's
        ``probability_cutoff`` for microWakeWord.
    trigger_level: consecutive above-threshold scores needed to fire; 1 fires on the first.
    refractory_s: after firing, this word cannot fire again until the stream has advanced
        this many seconds (the word stays in the model's window and would re-fire).
    sliding_window: microWakeWord only: a score is the mean of this many consecutive model
        probabilities (30 ms apart). None: the model's ``sliding_window_size``.
    name: the name reported in detections; defaults to the built-in name or the file stem.
    """

    model: str | Path
    threshold: float | None = None
    trigger_level: int = 1
    refractory_s: float = 2.0
    name: str | None = None
    engine: str = OPENWAKEWORD
    sliding_window: int | None = None

    def display_name(self) -> str:
        # A built-in name has no suffix, so its "stem" is the name itself.
        return self.name or Path(str(self.model)).stem


@dataclass(frozen=True, slots=True)
class Detection:
    """A wake word fired.

    name: the wake word (:meth:`WakeWordSpec.display_name`).
    score: the score that completed the trigger (above the word's threshold).
    t_audio: stream time at the end of the audio step whose processing produced the score,
        i.e. the earliest stream time at which the detection could be known. Stream time is
        the ``t`` the caller passed with each frame (time of the frame's first sample) plus
        the offset of the sample inside the frame.
    t_end_estimate: stream time of the newest sample the score saw (``t_audio`` minus the
        engine's lag); the wake word ended at or before this time.
    """

    name: str
    score: float
    t_audio: float
    t_end_estimate: float


def check_settings(spec: WakeWordSpec) -> None:
    """Raise :class:`WakeModelError` naming the word for a setting out of range."""
    name = spec.display_name()
    if spec.engine not in ENGINES:
        raise WakeModelError(f"wake word {name!r}: unknown engine {spec.engine!r}; engines "
                             f"are {', '.join(ENGINES)}")
    if spec.threshold is not None and not 0.0 < spec.threshold <= 1.0:
        raise WakeModelError(f"wake word {name!r}: threshold must be in (0, 1], "
                             f"got {spec.threshold}")
    if spec.trigger_level < 1:
        raise WakeModelError(f"wake word {name!r}: trigger_level must be >= 1, "
                             f"got {spec.trigger_level}")
    if spec.refractory_s < 0:
        raise WakeModelError(f"wake word {name!r}: refractory_s must be >= 0, "
                             f"got {spec.refractory_s}")
    if spec.sliding_window is not None:
        if spec.engine != MICRO:
            raise WakeModelError(f"wake word {name!r}: sliding_window is a setting of the "
                                 f"{MICRO!r} engine only")
        if spec.sliding_window < 1:
            raise WakeModelError(f"wake word {name!r}: sliding_window must be >= 1, "
                                 f"got {spec.sliding_window}")


class Word:
    """The firing rule of one wake word: a run of above-threshold scores of ``trigger_level``
    fires, then the word is quiet for ``refractory_s`` of stream time."""

    __slots__ = ("name", "threshold", "strict", "trigger_level", "refractory_s", "run",
                 "quiet_until")

    def __init__(self, spec: WakeWordSpec, threshold: float, *, strict: bool) -> None:
        """strict: a score must exceed the threshold (microWakeWord's rule) rather than
        reach it (openWakeWord's)."""
        self.name = spec.display_name()
        self.threshold = threshold
        self.strict = strict
        self.trigger_level = spec.trigger_level
        self.refractory_s = spec.refractory_s
        self.run = 0
        self.quiet_until = float("-inf")

    def decide(self, score: float, t_end: float, lag_s: float, out: list[Detection]) -> None:
        """Take one score computed at stream time ``t_end``; append a detection if it fires."""
        if t_end < self.quiet_until:
            self.run = 0
            return
        above = score > self.threshold if self.strict else score >= self.threshold
        self.run = self.run + 1 if above else 0
        if self.run >= self.trigger_level:
            self.run = 0
            self.quiet_until = t_end + self.refractory_s
            out.append(Detection(self.name, score, t_end, t_end - lag_s))


class WakeEngine(ABC):
    """One engine running one or more wake words on one stream. Subclasses process fixed steps
    of :attr:`step_samples`; this class cuts frames of any length into them.

    Guarantees: scores depend only on the audio fed since the last :meth:`forget` (or
    construction) and on its position on the step grid; frame sizes do not matter. No method
    performs I/O or blocks. Not thread-safe: one owner feeds it.
    """

    #: Engine name (:data:`ENGINES`).
    kind: str
    step_samples: int
    chunk_samples: int
    context_samples: int
    warmup_samples: int
    lag_samples: int

    def __init__(self, words: list[Word], on_score: ScoreHook | None) -> None:
        self.words = words
        self._on_score = on_score
        self._pending = bytearray()
        self._step_bytes = 2 * self.step_samples
        #: Latest score of each wake word (by name); empty until the first score.
        self.last_scores: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        """Names of the wake words, in configuration order."""
        return [w.name for w in self.words]

    def process(self, frame: bytes, t: float) -> list[Detection]:
        """Feed PCM16 mono 16 kHz audio whose first sample is at stream time ``t`` (seconds).

        Returns the detections completed by this audio, oldest first (usually none). Any
        length is accepted; a partial step is kept for the next call.
        """
        if len(frame) % 2:
            raise ValueError(f"PCM16 frame has an odd number of bytes ({len(frame)})")
        detections: list[Detection] = []
        step = self._step_bytes
        pending = self._pending
        pos = 0
        size = len(frame)
        while pos < size:
            if not pending and size - pos >= step:
                # A whole step straight from the caller's buffer: no copy into _pending.
                chunk = frame[pos : pos + step]
                pos += step
            else:
                take = min(step - len(pending), size - pos)
                pending += frame[pos : pos + take]
                pos += take
                if len(pending) < step:
                    break
                chunk = bytes(pending)
                pending.clear()
            self._run_step(chunk, t + pos / (2 * SAMPLE_RATE), detections)
        return detections

    def _score(self, word: Word, score: float, t_end: float, out: list[Detection]) -> None:
        self.last_scores[word.name] = score
        if self._on_score is not None:
            self._on_score(word.name, score, t_end)
        word.decide(score, t_end, self.lag_samples / SAMPLE_RATE, out)

    @abstractmethod
    def _run_step(self, chunk: bytes, t_end: float, out: list[Detection]) -> None:
        """Process one step of audio ending at stream time ``t_end``."""

    def forget(self) -> None:
        """Drop buffered audio, features, model state and trigger runs: nothing fed before
        influences any later score; the grid restarts with the next sample. Refractory
        deadlines are kept (they are stream times)."""
        self._pending.clear()
        for word in self.words:
            word.run = 0
        self._forget_state()

    @abstractmethod
    def _forget_state(self) -> None:
        """Reset the engine's own streaming state."""

    @abstractmethod
    def close(self) -> None:
        """Release the interpreters; the engine cannot be used afterwards. Idempotent."""

    def __enter__(self) -> WakeEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
