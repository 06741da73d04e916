"""The openWakeWord engine: pyopen-wakeword's models, run through the XNNPACK delegate.

Several wake words share one feature extractor (mel spectrogram + speech embedding, the costly
part); each word's model reads the newest embeddings. The models and the TFLite library are
the ones pyopen-wakeword bundles (nothing is downloaded). The streaming is pyopen-wakeword's,
step for step, on small fixed buffers, so scores come at the same stream positions as from
pyopen-wakeword's own ``process_streaming`` (started without its 8 s zero fill) and differ
from them only by float rounding: tests/unit/test_wake.py bounds the difference on the corpus
(about 2e-5) and checks that every decision is the same. The delegate (the default) costs
about a fifth of the CPU of TFLite's reference kernels, which pyopen-wakeword uses.
(The reference kernels' rounding also changes with their thread count, so no setting here is
bit-identical to pyopen-wakeword's default of letting TFLite choose.)

Timing grid. Audio is cut into 80 ms chunks (1280 samples) counted from the start of the
stream (or from the last :meth:`~edgevoice.listen.engine.WakeEngine.forget`). Each chunk yields
one score per model once the context is full. Score *k* (k = 0, 1, …) sees exactly the samples
``[1280·k, 1280·k + context_samples)`` and is computed when ``1280·k + warmup_samples``
samples have been fed. Because a score depends only on the samples it sees and on the grid,
a caller that skips audio (the VAD gate in :mod:`edgevoice.listen.gate`) gets bit-identical
scores as long as it restarts on a chunk boundary of the same grid with enough context.

Forgetting is O(1) (counters reset, no zero refill): the next score needs ``warmup_samples``
(≈2.1 s) of new audio, and nothing fed before can influence any later score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyopen_wakeword

from edgevoice.listen.engine import (
    OPENWAKEWORD,
    Detection,
    ScoreHook,
    WakeEngine,
    WakeModelError,
    WakeWordSpec,
    Word,
)
from edgevoice.listen.tflite import FLOAT32, Interpreter, TfLiteError, is_tflite_model

MODELS_DIR = Path(pyopen_wakeword.__file__).parent / "models"
#: Built-in openWakeWord models bundled with pyopen-wakeword, usable by name.
BUILTIN_MODELS: tuple[str, ...] = tuple(m.value for m in pyopen_wakeword.Model)
#: Feature chunk: the extractor advances 80 ms (one mel call, one embedding) per chunk.
CHUNK_SAMPLES = 1280
#: Samples per mel spectrogram call (a chunk and the 30 ms of window overlap before it).
_MEL_SAMPLES = 1760
_NUM_MELS = 32
_MELS_PER_CHUNK = 8
#: Mel frames per embedding, and the frames between two embeddings.
_EMB_WINDOW = 76
_EMB_STEP = 8
#: pyopen-wakeword computes an embedding once 76 unread mel frames are buffered; they come 8
#: at a time, so at most 80 (the smallest multiple of 8 from 76 on) are ever unread.
_MEL_HOLD = -(-_EMB_WINDOW // _MELS_PER_CHUNK) * _MELS_PER_CHUNK
#: Embedding features per window in a wake-word model's input (openWakeWord's constant).
EMB_FEATURES = 96
# Derived from the constants above and checked against the real models by
# tests/unit/test_wake.py: a model reading W embeddings sees 12480 + 1280·(W−1) samples
# (1.98 s for W = 16) ...
_CONTEXT_BASE = 12480
# ... and its first score after a forget() needs 14080 + 1280·(W−1) samples (2.08 s).
_WARMUP_BASE = 14080
#: The newest sample a score sees lies this many samples before the end of the fed audio
#: (the extractor holds back a partial mel window and half an embedding step). Measured.
FEATURE_LAG_SAMPLES = 1600
DEFAULT_THRESHOLD = 0.5


def model_path(spec: WakeWordSpec) -> Path:
    """The ``.tflite`` file of an openWakeWord spec, checked to be a valid TFLite model;
    raises :class:`WakeModelError` naming the word and the file."""
    name = spec.display_name()
    model = str(spec.model)
    if model in BUILTIN_MODELS:
        return MODELS_DIR / f"{model}.tflite"
    path = Path(model)
    if path.suffix != ".tflite" and not path.exists():
        raise WakeModelError(
            f"wake word {name!r}: unknown model {model!r}; built-in models are "
            f"{', '.join(BUILTIN_MODELS)}, or give the path of a .tflite file"
        )
    if not path.is_file():
        raise WakeModelError(f"wake word {name!r}: model file not found: {path}")
    # TFLite verifies the flatbuffer; an unchecked corrupt file would crash it later.
    if not is_tflite_model(path):
        raise WakeModelError(f"wake word {name!r}: {path} is not a valid TFLite model")
    return path


def check_model(spec: WakeWordSpec) -> None:
    """Everything :class:`OpenWakeWordEngine` checks of one word, without building the
    feature extractor: the file and its input shape (a plain interpreter, no delegate)."""
    _load_word(spec, model_path(spec), xnnpack=False, threads=1).close()


def _load_word(spec: WakeWordSpec, path: Path, *, xnnpack: bool, threads: int) -> Interpreter:
    name = spec.display_name()
    try:
        model = Interpreter(path, xnnpack=xnnpack, threads=threads)
    except TfLiteError as exc:
        raise WakeModelError(f"wake word {name!r}: cannot load {path}: {exc}") from exc
    shape = model.input_shape
    if (len(shape) != 3 or shape[0] != 1 or shape[1] < 1 or shape[2] != EMB_FEATURES
            or model.input_type != FLOAT32 or model.output_type != FLOAT32
            or int(np.prod(model.output_shape)) != 1):
        model.close()
        raise WakeModelError(
            f"wake word {name!r}: {path} is not an openWakeWord wake-word model "
            f"(input shape {list(shape)}, expected [1, windows, {EMB_FEATURES}], float32)"
        )
    return model


class OpenWakeWordEngine(WakeEngine):
    """Several openWakeWord models on one stream, behind one feature extractor.

    Construction loads the models (≈ 20 ms) and raises :class:`WakeModelError` naming the
    model if one is unknown, missing or not a valid wake-word model. ``xnnpack``: run every
    interpreter through the XNNPACK delegate; ``threads``: threads per interpreter (1: all on
    the calling thread).
    """

    kind = OPENWAKEWORD
    step_samples = CHUNK_SAMPLES
    chunk_samples = CHUNK_SAMPLES
    lag_samples = FEATURE_LAG_SAMPLES

    def __init__(
        self,
        specs: list[WakeWordSpec],
        *,
        xnnpack: bool = True,
        threads: int = 1,
        on_score: ScoreHook | None = None,
    ) -> None:
        # Every file is checked before any interpreter exists.
        paths = [model_path(spec) for spec in specs]
        words = [
            Word(spec, DEFAULT_THRESHOLD if spec.threshold is None else spec.threshold,
                 strict=False)
            for spec in specs
        ]
        super().__init__(words, on_score)
        self.xnnpack = xnnpack
        self.threads = threads
        self._models: list[Interpreter] = []
        self._mel: Interpreter | None = None
        self._emb: Interpreter | None = None
        try:
            self._mel = Interpreter(MODELS_DIR / "melspectrogram.tflite", xnnpack=xnnpack,
                                    threads=threads, input_shape=(1, _MEL_SAMPLES))
            self._emb = Interpreter(MODELS_DIR / "embedding_model.tflite", xnnpack=xnnpack,
                                    threads=threads, input_shape=(1, _EMB_WINDOW, _NUM_MELS, 1))
            for spec, path in zip(specs, paths, strict=True):
                self._models.append(_load_word(spec, path, xnnpack=xnnpack, threads=threads))
        except TfLiteError as exc:
            self.close()
            raise WakeModelError(f"openWakeWord features: {exc}") from exc
        except BaseException:
            self.close()
            raise
        self._windows = [m.input_shape[1] for m in self._models]
        windows = max(self._windows)
        self.context_samples = _CONTEXT_BASE + CHUNK_SAMPLES * (windows - 1)
        self.warmup_samples = _WARMUP_BASE + CHUNK_SAMPLES * (windows - 1)
        # Fixed buffers: nothing is allocated per chunk but the interpreters' outputs' views.
        self._audio = np.zeros(2 * CHUNK_SAMPLES, dtype=np.float32)  # previous + this chunk
        self._mel_out = self._mel.output_buffer()
        self._mels = np.zeros((_MEL_HOLD, _NUM_MELS), dtype=np.float32)
        self._emb_out = self._emb.output_buffer()
        self._embs = np.zeros((windows, EMB_FEATURES), dtype=np.float32)
        self._outs = [m.output_buffer() for m in self._models]
        # The buffers never move: their addresses are taken once (ndarray.ctypes per call
        # costs about as much as a wake-word model's inference).
        self._audio_at = self._audio.ctypes.data
        self._mel_out_at = self._mel_out.ctypes.data
        self._mels_at = self._mels.ctypes.data
        self._emb_out_at = self._emb_out.ctypes.data
        row = EMB_FEATURES * self._embs.itemsize
        self._word_at = [
            (self._embs.ctypes.data + (windows - w) * row, out.ctypes.data)
            for w, out in zip(self._windows, self._outs, strict=True)
        ]
        self._forget_state()

    def _forget_state(self) -> None:
        self._chunks = 0  # chunks fed since the last forget (counted up to 2)
        self._new_mels = 0  # mel frames not yet consumed by an embedding
        self._n_embs = 0  # embeddings buffered (up to the longest window)

    def _run_step(self, chunk: bytes, t_end: float, out: list[Detection]) -> None:
        audio = self._audio
        audio[:CHUNK_SAMPLES] = audio[CHUNK_SAMPLES:]
        audio[CHUNK_SAMPLES:] = np.frombuffer(chunk, dtype="<i2")  # int16 → float32, exact
        if self._chunks < 2:
            self._chunks += 1
            if self._chunks < 2:  # 1760 samples needed, 1280 fed
                return
        assert self._mel is not None and self._emb is not None
        self._mel.run_at(self._audio_at, self._mel_out_at)  # the first 1760 samples
        mels = self._mels
        mels[:-_MELS_PER_CHUNK] = mels[_MELS_PER_CHUNK:]
        new = mels[-_MELS_PER_CHUNK:]
        # The same float32 operations as pyopen-wakeword: (mels / 10) + 2.
        np.divide(self._mel_out.reshape(_MELS_PER_CHUNK, _NUM_MELS), np.float32(10), out=new)
        new += np.float32(2)
        self._new_mels = min(_MEL_HOLD, self._new_mels + _MELS_PER_CHUNK)
        while self._new_mels >= _EMB_WINDOW:
            start = _MEL_HOLD - self._new_mels  # frames [start, start + 76) of the buffer
            self._emb.run_at(self._mels_at + start * _NUM_MELS * mels.itemsize,
                             self._emb_out_at)
            self._new_mels -= _EMB_STEP
            self._embedding(t_end, out)

    def _embedding(self, t_end: float, out: list[Detection]) -> None:
        embs = self._embs
        embs[:-1] = embs[1:]
        embs[-1] = self._emb_out.reshape(EMB_FEATURES)
        n = self._n_embs = min(len(embs), self._n_embs + 1)
        for word, model, window, result, at in zip(self.words, self._models, self._windows,
                                                   self._outs, self._word_at, strict=True):
            if n >= window:  # the newest `window` embeddings
                model.run_at(*at)
                self._score(word, float(result.flat[0]), t_end, out)

    def close(self) -> None:
        for model in getattr(self, "_models", []):
            model.close()
        for part in (getattr(self, "_mel", None), getattr(self, "_emb", None)):
            if part is not None:
                part.close()
