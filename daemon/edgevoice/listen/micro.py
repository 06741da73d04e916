"""The microWakeWord engine: pymicro-wakeword's models and feature frontend.

microWakeWord models are small quantised streaming convolution networks (what ESPHome voice
satellites and linux-voice-assistant run): the TFLite Micro audio frontend turns each 10 ms of
audio into 40 features, and every third feature step (30 ms) the model takes the three new
steps and updates its own internal state. A score is the mean of the last
``sliding_window`` model probabilities; a word fires when it exceeds ``probability_cutoff``.
Both come from the model's JSON unless the spec overrides them. The whole engine costs about
a sixth of openWakeWord's through XNNPACK (≈ 0.0025 s of CPU per second of audio for two models
on a 2020s x86 core), a twentieth of pyopen-wakeword's as it ships.

Models: the built-in ``okay_nabu``, ``hey_jarvis``, ``alexa``, ``hey_mycroft`` (bundled by
pymicro-wakeword), or a custom model given as its ``.json`` (which names its ``.tflite``,
relative to the JSON's folder). The interpreters run on the TFLite library pyopen-wakeword
bundles (the same build pymicro-wakeword bundles), with TFLite's own kernels, so every score is
pymicro-wakeword's (tests/integration/test_wake_engines.py). Not through XNNPACK: it halves the
model's time (21 → 11 µs an inference here) but its int8 kernels round differently, and in a
streaming model the difference accumulates: scores moved by up to 0.07 on the corpus and
detections changed.

Unlike openWakeWord, state is not a finite window: the frontend's noise estimate and the
model's internal buffers carry the past forward, fading. :data:`CONTEXT_SAMPLES` is the audio
after which the past no longer changes a decision: measured with a wake word after 1.5 s of
silence, its best score moves by less than 0.002 whatever speech came before, and by 0.04 after
3 s of white noise at −12 dBFS (tests/unit/test_wake.py). It is what the gate replays before
speech. Scores after a restart are therefore close to, not bit-identical with, the scores of
an engine that heard everything.
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pymicro_wakeword
from pymicro_features import MicroFrontend

from edgevoice.listen.engine import (
    MICRO,
    Detection,
    ScoreHook,
    WakeEngine,
    WakeModelError,
    WakeWordSpec,
    Word,
)
from edgevoice.listen.tflite import INT8, UINT8, Interpreter, TfLiteError, is_tflite_model

MODELS_DIR = Path(pymicro_wakeword.__file__).parent / "models"
#: Built-in microWakeWord models bundled with pymicro-wakeword, usable by name.
BUILTIN_MODELS: tuple[str, ...] = tuple(m.value for m in pymicro_wakeword.Model)
#: The frontend's step: one feature vector per 10 ms.
STEP_SAMPLES = 160
FEATURES = 40
#: Audio a decision depends on, as far as measured (see the module's docstring): the model's
#: receptive field, the sliding window and the frontend's settling (1 s was not enough).
CONTEXT_SAMPLES = 24000


class MicroModel:
    """A microWakeWord model's files and settings, read from its JSON."""

    def __init__(self, spec: WakeWordSpec) -> None:
        """Raises :class:`WakeModelError` naming the word and the file or key at fault."""
        name = spec.display_name()
        model = str(spec.model)
        if model in BUILTIN_MODELS:
            json_path = MODELS_DIR / f"{model}.json"
        else:
            json_path = Path(model)
            if json_path.suffix != ".json":
                raise WakeModelError(
                    f"wake word {name!r}: unknown microWakeWord model {model!r}; built-in "
                    f"models are {', '.join(BUILTIN_MODELS)}, or give the path of a model's "
                    f".json (which names its .tflite)"
                )
            if not json_path.is_file():
                raise WakeModelError(f"wake word {name!r}: model file not found: {json_path}")
        try:
            config = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WakeModelError(
                f"wake word {name!r}: {json_path} is not a readable microWakeWord JSON: {exc}"
            ) from None
        micro = config.get("micro") if isinstance(config, dict) else None
        if not isinstance(micro, dict):
            raise WakeModelError(f"wake word {name!r}: {json_path}: no \"micro\" table: not a "
                                 f"microWakeWord model's JSON")
        tflite = config.get("model")
        if not isinstance(tflite, str) or not tflite:
            raise WakeModelError(f"wake word {name!r}: {json_path}: \"model\" (the .tflite "
                                 f"file) is missing")
        self.tflite = json_path.parent / tflite
        if not self.tflite.is_file():
            raise WakeModelError(f"wake word {name!r}: {json_path} names {self.tflite}, "
                                 f"which does not exist")
        if not is_tflite_model(self.tflite):
            raise WakeModelError(f"wake word {name!r}: {self.tflite} is not a valid TFLite "
                                 f"model")
        self.cutoff = spec.threshold
        if self.cutoff is None:
            self.cutoff = _number(micro, "probability_cutoff", json_path, name)
            if not 0.0 < self.cutoff <= 1.0:
                raise WakeModelError(f"wake word {name!r}: {json_path}: "
                                     f"micro.probability_cutoff must be in (0, 1], got "
                                     f"{self.cutoff}")
        self.window = spec.sliding_window
        if self.window is None:
            window = _number(micro, "sliding_window_size", json_path, name)
            if window != int(window) or window < 1:
                raise WakeModelError(f"wake word {name!r}: {json_path}: "
                                     f"micro.sliding_window_size must be a whole number >= 1, "
                                     f"got {window}")
            self.window = int(window)
        step = micro.get("feature_step_size", 10)
        if step != 10:
            raise WakeModelError(f"wake word {name!r}: {json_path}: micro.feature_step_size "
                                 f"is {step}; the frontend steps 10 ms")
        self.json_path = json_path
        self.name = name


def _number(table: dict[str, Any], key: str, path: Path, name: str) -> float:
    value = table.get(key)
    if value is None:
        setting = {"probability_cutoff": "threshold", "sliding_window_size": "sliding_window"}
        raise WakeModelError(f"wake word {name!r}: {path}: micro.{key} is missing (or set "
                             f"{setting[key]} for this wake word)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WakeModelError(f"wake word {name!r}: {path}: micro.{key} must be a number, "
                             f"got {value!r}")
    return float(value)


def check_model(spec: WakeWordSpec) -> None:
    """Everything :class:`MicroWakeWordEngine` checks of one word (its JSON, its files, the
    model's shapes) without building an engine."""
    _MicroWord(MicroModel(spec), threads=1).interpreter.close()


class _MicroWord:
    """One model's streaming state: the quantised features of the current stride, the recent
    probabilities, the interpreter with its internal state."""

    __slots__ = ("model", "interpreter", "stride", "quantized", "in_scale", "in_zero",
                 "out_scale", "out_zero", "out", "probs", "addresses", "scratch")

    def __init__(self, model: MicroModel, threads: int) -> None:
        try:
            self.interpreter = Interpreter(model.tflite, xnnpack=False, threads=threads)
        except TfLiteError as exc:
            raise WakeModelError(f"wake word {model.name!r}: cannot load {model.tflite}: "
                                 f"{exc}") from exc
        it = self.interpreter
        shape = it.input_shape
        if (len(shape) != 3 or shape[0] != 1 or shape[1] < 1 or shape[2] != FEATURES
                or it.input_type not in (INT8, UINT8) or it.output_type not in (INT8, UINT8)
                or int(np.prod(it.output_shape)) != 1):
            it.close()
            raise WakeModelError(
                f"wake word {model.name!r}: {model.tflite} is not a microWakeWord streaming "
                f"model (input {list(shape)}, expected [1, stride, {FEATURES}], int8 or uint8)"
            )
        self.model = model
        self.stride = shape[1]
        self.quantized = np.zeros(shape, dtype=np.int8 if it.input_type == INT8 else np.uint8)
        self.scratch = np.zeros((self.stride, FEATURES), dtype=np.float64)
        q_in, q_out = it.input_quantization(), it.output_quantization()
        self.in_scale, self.in_zero = q_in.scale, q_in.zero_point
        self.out_scale, self.out_zero = np.float32(q_out.scale), np.float32(q_out.zero_point)
        self.out = it.output_buffer()
        # Fixed buffers: their addresses are taken once.
        self.addresses = (self.quantized.ctypes.data, self.out.ctypes.data)
        assert model.window is not None
        self.probs: deque[float] = deque(maxlen=model.window)


class MicroWakeWordEngine(WakeEngine):
    """Several microWakeWord models on one stream, behind one frontend.

    Construction reads each model's JSON, checks its files and loads it (a few ms); it raises
    :class:`WakeModelError` naming the word and the file or key at fault.
    """

    kind = MICRO
    step_samples = STEP_SAMPLES
    lag_samples = 0  # a feature step ends with the newest sample fed

    def __init__(
        self,
        specs: list[WakeWordSpec],
        *,
        threads: int = 1,
        on_score: ScoreHook | None = None,
    ) -> None:
        models = [MicroModel(spec) for spec in specs]  # every file checked first
        words = []
        for spec, model in zip(specs, models, strict=True):
            assert model.cutoff is not None
            words.append(Word(spec, model.cutoff, strict=True))
        super().__init__(words, on_score)
        self.threads = threads
        self._words: list[_MicroWord] = []
        try:
            for model in models:
                self._words.append(_MicroWord(model, threads))
        except BaseException:
            self.close()
            raise
        # A score comes every `stride` steps; the grid is what all the models share.
        self.chunk_samples = STEP_SAMPLES * math.lcm(*(w.stride for w in self._words))
        longest = max(w.stride * STEP_SAMPLES * (w.probs.maxlen or 1) for w in self._words)
        self.context_samples = max(CONTEXT_SAMPLES, longest)
        self.warmup_samples = self.context_samples
        self._frontend = MicroFrontend()
        self._pcm = bytearray()  # audio the frontend has not taken yet
        # The newest feature steps, as many as a whole number of every model's stride: a
        # model's input is always a contiguous slice ending at the newest step.
        self._block = np.zeros((math.lcm(*(w.stride for w in self._words)), FEATURES),
                               dtype=np.float64)
        self._steps = 0

    def _forget_state(self) -> None:
        self._frontend.reset()
        self._pcm.clear()
        self._steps = 0
        for w in self._words:
            w.probs.clear()
            # The model's streaming buffers live in the interpreter: a fresh one.
            w.interpreter.reload(self.threads)

    def _run_step(self, chunk: bytes, t_end: float, out: list[Detection]) -> None:
        pcm = self._pcm
        if pcm:  # the frontend left samples last time (it never does in practice)
            pcm += chunk
            chunk = bytes(pcm)
            pcm.clear()
        while len(chunk) >= 2 * STEP_SAMPLES:
            result = self._frontend.process_samples(chunk[: 2 * STEP_SAMPLES])
            chunk = chunk[2 * result.samples_read :]
            if result.features:
                self._feature(result.features, t_end, out)
            if result.samples_read == 0:
                break
        pcm += chunk

    def _feature(self, features: list[float], t_end: float, out: list[Detection]) -> None:
        block = self._block
        row = self._steps % len(block)
        block[row] = features
        self._steps += 1
        done: _MicroWord | None = None  # a model whose input this step is already quantised
        for w, word in zip(self._words, self.words, strict=True):
            if self._steps % w.stride:
                continue
            if (done is not None and done.stride == w.stride and done.in_scale == w.in_scale
                    and done.in_zero == w.in_zero):
                np.copyto(w.quantized, done.quantized)
            else:
                # Quantised as pymicro-wakeword does: round(x / scale + zero_point).
                x = w.scratch
                np.divide(block[row + 1 - w.stride : row + 1], w.in_scale, out=x)
                np.add(x, w.in_zero, out=x)
                np.rint(x, out=x)
                np.copyto(w.quantized[0], x, casting="unsafe")
                done = w
            w.interpreter.run_at(*w.addresses)
            w.probs.append(float((np.float32(w.out.flat[0]) - w.out_zero) * w.out_scale))
            if len(w.probs) == w.probs.maxlen:
                self._score(word, math.fsum(w.probs) / len(w.probs), t_end, out)

    def close(self) -> None:
        for w in getattr(self, "_words", []):
            w.interpreter.close()
