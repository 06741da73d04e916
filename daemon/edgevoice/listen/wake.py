"""Wake-word detection with openWakeWord models, run by pyopen-wakeword's TFLite runtime.

:class:`WakeWordDetector` takes 16 kHz mono PCM16 frames of any length and returns
:class:`Detection` objects. Several wake words run at once on one shared feature extractor
(mel spectrogram + speech embedding, the costly part: ~0.06 s of CPU per second of audio
whatever the number of models); each wake word has its own threshold, trigger level and
refractory period.

Timing grid. Audio is cut into 80 ms chunks (1280 samples) counted from the start of the
stream (or from the last :meth:`WakeWordDetector.forget`). Each chunk yields one score per
model once the context is full. Score *k* (k = 0, 1, …) sees exactly the samples
``[1280·k, 1280·k + context_samples)`` and is computed when ``1280·k + warmup_samples``
samples have been fed. Because a score depends only on the samples it sees and on the grid,
a caller that skips audio (the VAD gate in :mod:`edgevoice.listen.gate`) gets bit-identical
scores as long as it restarts on a chunk boundary of the same grid with enough context.

Forgetting. The library's ``reset()`` refills 8 s of zeros and costs ~0.4 s of CPU on the
next chunk; it is never called here. :meth:`WakeWordDetector.forget` instead drops all
buffered audio and features in O(1): the next score needs ``warmup_samples`` (≈2.1 s) of new
audio, and nothing fed before the call can influence any later score. Call it when the
audio you feed next is not contiguous with what you fed before (e.g. after a conversation
turn during which the wake word was paused). Within a stream, repeated triggers on the same
utterance are suppressed by the per-word refractory period instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures

SAMPLE_RATE = 16000
#: Built-in openWakeWord models bundled with pyopen-wakeword, usable by name.
BUILTIN_MODELS: tuple[str, ...] = tuple(m.value for m in Model)
#: Feature chunk: the extractor advances 80 ms (one mel call, one embedding) per chunk.
CHUNK_SAMPLES = 1280
_CHUNK_BYTES = 2 * CHUNK_SAMPLES
#: Embedding features per window in a wake-word model's input (openWakeWord's constant).
_EMB_FEATURES = 96
# Derived from the library's constants (76 mels per embedding, 8 mels per chunk, 1760-sample
# mel windows) and checked against the real models by tests/unit/test_wake.py:
# a model reading W embeddings sees 12480 + 1280·(W−1) samples (1.98 s for W = 16) ...
_CONTEXT_BASE = 12480
# ... and its first score after a forget() needs 14080 + 1280·(W−1) samples (2.08 s).
_WARMUP_BASE = 14080
#: The newest sample a score sees lies this many samples before the end of the fed audio
#: (the extractor holds back a partial mel window and half an embedding step). Measured.
FEATURE_LAG_SAMPLES = 1600


def drop_buffered(features: OpenWakeWordFeatures, models: Iterable[OpenWakeWord]) -> None:
    """Make the library's streaming state forget all audio fed so far, in O(1): the library's
    own ``reset()`` instead refills 8 s of zeros (~0.4 s of CPU on the next chunk). Afterwards
    the next score needs a full warm-up of new audio."""
    # The library reads only the newest `new_*` entries of its ring buffers, so zeroing the
    # counters discards the old content without touching the arrays.
    features.new_audio_samples = 0
    features.new_mels = 0
    for model in models:
        model.new_embeddings = 0


class WakeModelError(ValueError):
    """A wake-word model cannot be used; the message names the model and the reason."""


#: TFLite's error reporter: ``(user_data, format, va_list)``; the va_list is only passed on.
_Reporter = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)


def _is_tflite_model(lib: ctypes.CDLL, path: Path) -> bool:
    """Whether ``path`` holds a valid TFLite flatbuffer. TFLite verifies the file and returns
    NULL instead of crashing later; its own reporter would print the reason to stderr, so a
    quiet one is passed where the library has the entry point (the caller says it in one
    line)."""
    name = str(path.resolve()).encode("utf-8")
    create = getattr(lib, "TfLiteModelCreateFromFileWithErrorReporter", None)
    if create is None:
        handle = lib.TfLiteModelCreateFromFile(name)
    else:
        create.argtypes = [ctypes.c_char_p, _Reporter, ctypes.c_void_p]
        create.restype = ctypes.c_void_p
        quiet = _Reporter(lambda _user, _fmt, _args: None)
        # The model keeps the reporter: `quiet` stays referenced until it is deleted below.
        handle = create(name, quiet, None)
    if not handle:
        return False
    lib.TfLiteModelDelete(handle)
    return True


@dataclass(frozen=True, slots=True)
class WakeWordSpec:
    """One wake word to listen for.

    model: a built-in name (see :data:`BUILTIN_MODELS`) or a path to an openWakeWord
        ``.tflite`` wake-word model.
    threshold: a score ≥ threshold counts as "above" (scores are probabilities, 0…1).
    trigger_level: consecutive above-threshold scores (80 ms apart) needed to fire; 1 fires on
        the first. Higher values trade latency (80 ms each) for fewer false accepts.
    refractory_s: after firing, this word cannot fire again until the stream has advanced
        this many seconds (the word stays in the model's 2 s window and would re-fire).
    name: the name reported in detections; defaults to the built-in name or the file stem.
    """

    model: str | Path
    threshold: float = 0.5
    trigger_level: int = 1
    refractory_s: float = 2.0
    name: str | None = None

    def display_name(self) -> str:
        if self.name:
            return self.name
        return str(self.model) if str(self.model) in BUILTIN_MODELS else Path(self.model).stem


@dataclass(frozen=True, slots=True)
class Detection:
    """A wake word fired.

    name: the wake word (:meth:`WakeWordSpec.display_name`).
    score: the score that completed the trigger (≥ the word's threshold).
    t_audio: stream time at the end of the audio chunk whose processing produced the score,
        i.e. the earliest stream time at which the detection could be known. Stream time is
        the ``t`` the caller passed with each frame (time of the frame's first sample) plus
        the offset of the sample inside the frame.
    t_end_estimate: stream time of the newest sample the score saw (``t_audio`` minus the
        extractor lag); the wake word ended at or before this time.
    """

    name: str
    score: float
    t_audio: float
    t_end_estimate: float


class _Word:
    """Per-model state: the interpreter, the trigger run and the refractory deadline."""

    __slots__ = ("spec", "name", "model", "run", "quiet_until")

    def __init__(self, spec: WakeWordSpec, model: OpenWakeWord) -> None:
        self.spec = spec
        self.name = spec.display_name()
        self.model = model
        self.run = 0
        self.quiet_until = float("-inf")


class WakeWordDetector:
    """Runs several openWakeWord models on one 16 kHz mono PCM16 stream.

    Guarantees: scores depend only on the audio fed since the last :meth:`forget` (or
    construction) and its position on the 80 ms grid; frame sizes do not matter (a 20 ms
    frame and four of them in one call give the same scores). No method performs I/O or
    blocks; construction loads the models (≈ 20 ms) and raises :class:`WakeModelError`
    naming the model if one is unknown, missing or not a valid wake-word model.
    Not thread-safe: one owner feeds it.
    """

    def __init__(
        self,
        wake_words: Sequence[WakeWordSpec | str],
        *,
        on_score: Callable[[str, float, float], None] | None = None,
    ) -> None:
        """wake_words: specs, or plain model names/paths with default settings. At least one;
            reported names must be distinct.
        on_score: called as ``on_score(name, score, t_audio)`` for every score computed (one
            per word per 80 ms chunk), for telemetry and tests; must not raise."""
        specs = [w if isinstance(w, WakeWordSpec) else WakeWordSpec(model=w) for w in wake_words]
        if not specs:
            raise WakeModelError("no wake word configured: give at least one model")
        names = [s.display_name() for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise WakeModelError(f"wake word names must be distinct, repeated: {dupes}")
        for spec in specs:
            if not 0.0 < spec.threshold <= 1.0:
                raise WakeModelError(
                    f"wake word {spec.display_name()!r}: threshold must be in (0, 1], "
                    f"got {spec.threshold}"
                )
            if spec.trigger_level < 1:
                raise WakeModelError(
                    f"wake word {spec.display_name()!r}: trigger_level must be >= 1, "
                    f"got {spec.trigger_level}"
                )
            if spec.refractory_s < 0:
                raise WakeModelError(
                    f"wake word {spec.display_name()!r}: refractory_s must be >= 0, "
                    f"got {spec.refractory_s}"
                )
        self._features = OpenWakeWordFeatures.from_builtin()
        self._words: list[_Word] = []
        try:
            for spec in specs:
                self._words.append(_Word(spec, self._load(spec)))
        except BaseException:
            self.close()
            raise
        windows = max(w.model.input_windows for w in self._words)
        self.context_samples = _CONTEXT_BASE + CHUNK_SAMPLES * (windows - 1)
        self.warmup_samples = _WARMUP_BASE + CHUNK_SAMPLES * (windows - 1)
        self._on_score = on_score
        self._pending = bytearray()
        #: Latest score of each wake word (by name), updated on every computed score;
        #: for logging and tests. Empty until the first score after construction.
        self.last_scores: dict[str, float] = {}
        # Skip the library's 8 s zero autofill (0.4 s of CPU) at start-up too.
        self.forget()

    def _load(self, spec: WakeWordSpec) -> OpenWakeWord:
        name = spec.display_name()
        model = str(spec.model)
        if model in BUILTIN_MODELS:
            return OpenWakeWord.from_builtin(Model(model))
        path = Path(model)
        if path.suffix != ".tflite" and not path.exists():
            raise WakeModelError(
                f"wake word {name!r}: unknown model {model!r}; built-in models are "
                f"{', '.join(BUILTIN_MODELS)}, or give the path of a .tflite file"
            )
        if not path.is_file():
            raise WakeModelError(f"wake word {name!r}: model file not found: {path}")
        # The library does not check the model it loads: a corrupt file segfaults inside
        # TFLite. Checked first, so that it is an error naming the file instead.
        lib = self._features.lib
        if not _is_tflite_model(lib, path):
            raise WakeModelError(f"wake word {name!r}: {path} is not a valid TFLite model")
        try:
            loaded = OpenWakeWord.from_model(
                path, libtensorflowlite_c_path=self._features.libtensorflowlite_c_path
            )
        except (RuntimeError, OSError) as exc:
            raise WakeModelError(f"wake word {name!r}: cannot load {path}: {exc}") from exc
        dims = [
            lib.TfLiteTensorDim(loaded.input_tensor, i)
            for i in range(lib.TfLiteTensorNumDims(loaded.input_tensor))
        ]
        if len(dims) != 3 or dims[2] != _EMB_FEATURES or dims[1] < 1:
            loaded.close()
            raise WakeModelError(
                f"wake word {name!r}: {path} is not an openWakeWord wake-word model "
                f"(input shape {dims}, expected [1, windows, {_EMB_FEATURES}])"
            )
        return loaded

    @property
    def names(self) -> list[str]:
        """Names of the wake words, in configuration order."""
        return [w.name for w in self._words]

    @property
    def chunk_samples(self) -> int:
        """Samples per feature chunk (the 80 ms grid)."""
        return CHUNK_SAMPLES

    def process(self, frame: bytes, t: float) -> list[Detection]:
        """Feed PCM16 mono 16 kHz audio whose first sample is at stream time ``t`` (seconds).

        Returns the detections completed by this audio, oldest first (usually none). Any
        length is accepted; a partial 80 ms chunk is kept for the next call.
        """
        if len(frame) % 2:
            raise ValueError(f"PCM16 frame has an odd number of bytes ({len(frame)})")
        detections: list[Detection] = []
        pos = 0
        size = len(frame)
        while pos < size:
            if not self._pending and size - pos >= _CHUNK_BYTES:
                # Whole chunk straight from the caller's buffer: no copy into _pending.
                chunk = frame[pos : pos + _CHUNK_BYTES]
                pos += _CHUNK_BYTES
            else:
                take = min(_CHUNK_BYTES - len(self._pending), size - pos)
                self._pending += frame[pos : pos + take]
                pos += take
                if len(self._pending) < _CHUNK_BYTES:
                    break
                chunk = bytes(self._pending)
                self._pending.clear()
            self._run_chunk(chunk, t + pos / (2 * SAMPLE_RATE), detections)
        return detections

    def _run_chunk(self, chunk: bytes, t_end: float, out: list[Detection]) -> None:
        for embedding in self._features.process_streaming(chunk):
            for word in self._words:
                for score in word.model.process_streaming(embedding):
                    self.last_scores[word.name] = score
                    if self._on_score is not None:
                        self._on_score(word.name, score, t_end)
                    spec = word.spec
                    if t_end < word.quiet_until:
                        word.run = 0
                        continue
                    word.run = word.run + 1 if score >= spec.threshold else 0
                    if word.run >= spec.trigger_level:
                        word.run = 0
                        word.quiet_until = t_end + spec.refractory_s
                        out.append(
                            Detection(
                                name=word.name,
                                score=score,
                                t_audio=t_end,
                                t_end_estimate=t_end - FEATURE_LAG_SAMPLES / SAMPLE_RATE,
                            )
                        )

    def forget(self) -> None:
        """Drop buffered audio, features and trigger runs in O(1) (no zero refill).

        After this call no audio fed earlier influences any score, and the next score comes
        after :attr:`warmup_samples` of new audio, on a fresh 80 ms grid that starts with the
        next sample fed. Refractory deadlines are kept (they are stream times).
        """
        self._pending.clear()
        drop_buffered(self._features, [word.model for word in self._words])
        for word in self._words:
            word.run = 0

    def close(self) -> None:
        """Release the TFLite interpreters. The detector cannot be used afterwards."""
        for word in getattr(self, "_words", []):
            word.model.close()
        features = getattr(self, "_features", None)
        if features is not None:
            features.close()

    def __enter__(self) -> WakeWordDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
