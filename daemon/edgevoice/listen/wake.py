"""Wake-word detection: the wake words of both engines behind one detector.

:class:`WakeWordDetector` takes 16 kHz mono PCM16 frames of any length and returns
:class:`Detection` objects. Each wake word runs on its engine (see
:mod:`edgevoice.listen.engine` for the interface):

* ``openwakeword`` (the default) — :mod:`edgevoice.listen.oww`: openWakeWord models through
  the TFLite XNNPACK delegate; one shared feature extractor (≈ 0.016 s of CPU per second of
  audio whatever the number of models, on a 2020s x86 core); scores see exactly the last
  1.98 s, so the VAD gate's results are bit-identical to ungated ones;
* ``micro`` — :mod:`edgevoice.listen.micro`: microWakeWord models (≈ 0.0025 s per second for
  two), with a shorter context (1.5 s) whose state fades rather than ends.

The detector's grid, context and warm-up are those the gate needs to feed every engine
exactly: the grid is a multiple of every engine's, the context and warm-up the longest.

Forgetting. :meth:`WakeWordDetector.forget` drops all buffered audio and state (O(1) for
openWakeWord, a fresh interpreter for microWakeWord); nothing fed before the call can
influence any later score. Call it when the audio you feed next is not contiguous with what
you fed before (e.g. after a conversation turn during which the wake word was paused).
Within a stream, repeated triggers on the same utterance are suppressed by the per-word
refractory period instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType

from edgevoice.listen.engine import (
    ENGINES,
    MICRO,
    OPENWAKEWORD,
    SAMPLE_RATE,
    Detection,
    ScoreHook,
    WakeEngine,
    WakeModelError,
    WakeWordSpec,
    check_settings,
)
from edgevoice.listen.micro import BUILTIN_MODELS as MICRO_BUILTIN_MODELS
from edgevoice.listen.micro import MicroModel, MicroWakeWordEngine
from edgevoice.listen.micro import check_model as check_micro_model
from edgevoice.listen.oww import (
    BUILTIN_MODELS,
    CHUNK_SAMPLES,
    FEATURE_LAG_SAMPLES,
    OpenWakeWordEngine,
    model_path,
)
from edgevoice.listen.oww import check_model as check_oww_model

__all__ = [
    "BUILTIN_MODELS",
    "CHUNK_SAMPLES",
    "ENGINES",
    "FEATURE_LAG_SAMPLES",
    "MICRO",
    "MICRO_BUILTIN_MODELS",
    "OPENWAKEWORD",
    "SAMPLE_RATE",
    "Detection",
    "WakeModelError",
    "WakeWordDetector",
    "WakeWordSpec",
    "check_spec",
]


def _specs(wake_words: Sequence[WakeWordSpec | str]) -> list[WakeWordSpec]:
    specs = [w if isinstance(w, WakeWordSpec) else WakeWordSpec(model=w) for w in wake_words]
    if not specs:
        raise WakeModelError("no wake word configured: give at least one model")
    names = [s.display_name() for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise WakeModelError(f"wake word names must be distinct, repeated: {dupes}")
    for spec in specs:
        check_settings(spec)
    return specs


def check_spec(spec: WakeWordSpec) -> None:
    """Everything the detector would check of one wake word — its settings, its files, its
    JSON, that its model loads and has the engine's shapes — without building an engine (no
    delegate, no feature extractor). Raises :class:`WakeModelError` naming the word and the
    file or key at fault."""
    check_settings(spec)
    if spec.engine == MICRO:
        check_micro_model(spec)
    else:
        check_oww_model(spec)


class WakeWordDetector:
    """Several wake words, on one or both engines, on one 16 kHz mono PCM16 stream.

    Guarantees: scores depend only on the audio fed since the last :meth:`forget` (or
    construction) and its position on the :attr:`chunk_samples` grid; frame sizes do not
    matter (a 20 ms frame and four of them in one call give the same scores). No method
    performs I/O or blocks; construction loads the models (≈ 20 ms) and raises
    :class:`WakeModelError` naming the model if one is unknown, missing or not a valid model
    of its engine. Not thread-safe: one owner feeds it.
    """

    def __init__(
        self,
        wake_words: Sequence[WakeWordSpec | str],
        *,
        threads: int = 1,
        xnnpack: bool = True,
        on_score: ScoreHook | None = None,
    ) -> None:
        """wake_words: specs, or plain openWakeWord model names/paths with default settings.
            At least one; reported names must be distinct.
        threads: threads per TFLite interpreter (1: every inference on the caller's thread).
        xnnpack: run openWakeWord through the XNNPACK delegate (False: TFLite's reference
            kernels, about five times the CPU; for comparisons).
        on_score: called as ``on_score(name, score, t_audio)`` for every score computed, for
            telemetry and tests; must not raise."""
        if threads < 1:
            raise WakeModelError(f"wake threads must be >= 1, got {threads}")
        specs = _specs(wake_words)
        oww = [s for s in specs if s.engine == OPENWAKEWORD]
        micro = [s for s in specs if s.engine == MICRO]
        # Every file of every engine is checked before any interpreter is made, so that a
        # bad model is one error and nothing else (no delegate, no TFLite log line).
        for spec in oww:
            model_path(spec)
        for spec in micro:
            MicroModel(spec)
        self.engines: list[WakeEngine] = []
        try:
            if oww:
                self.engines.append(OpenWakeWordEngine(oww, xnnpack=xnnpack, threads=threads,
                                                       on_score=on_score))
            if micro:
                self.engines.append(MicroWakeWordEngine(micro, threads=threads,
                                                        on_score=on_score))
        except BaseException:
            self.close()
            raise
        self._order = [s.display_name() for s in specs]
        self.chunk_samples = math.lcm(*(e.chunk_samples for e in self.engines))
        self.context_samples = max(e.context_samples for e in self.engines)
        self.warmup_samples = max(e.warmup_samples for e in self.engines)
        self._single = self.engines[0] if len(self.engines) == 1 else None

    @property
    def names(self) -> list[str]:
        """Names of the wake words, in configuration order."""
        return list(self._order)

    @property
    def last_scores(self) -> dict[str, float]:
        """Latest score of each wake word (by name); for logging and tests."""
        if self._single is not None:
            return self._single.last_scores
        merged: dict[str, float] = {}
        for engine in self.engines:
            merged.update(engine.last_scores)
        return merged

    def process(self, frame: bytes, t: float) -> list[Detection]:
        """Feed PCM16 mono 16 kHz audio whose first sample is at stream time ``t`` (seconds).

        Returns the detections completed by this audio, oldest first (usually none). Any
        length is accepted; a partial step is kept for the next call.
        """
        if self._single is not None:
            return self._single.process(frame, t)
        found: list[Detection] = []
        for engine in self.engines:
            found += engine.process(frame, t)
        if len(found) > 1:
            found.sort(key=lambda d: d.t_audio)
        return found

    def forget(self) -> None:
        """Drop buffered audio, features, model state and trigger runs.

        After this call no audio fed earlier influences any score, and each engine's grid
        restarts with the next sample fed. Refractory deadlines are kept (stream times).
        """
        for engine in self.engines:
            engine.forget()

    def close(self) -> None:
        """Release the interpreters (and delegates). The detector cannot be used afterwards."""
        for engine in getattr(self, "engines", []):
            engine.close()

    def __enter__(self) -> WakeWordDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
