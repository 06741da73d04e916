"""The engines against the libraries as they ship, on the whole wake corpus: openWakeWord through
the XNNPACK delegate against pyopen-wakeword's own streaming on TFLite's reference kernels, and
the microWakeWord engine against pymicro-wakeword's own streaming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures
from pymicro_wakeword import Model as MicroModelName
from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures

from bench.wake import CORPUS_MODELS, Corpus, drop_buffered, load_corpus, specs
from edgevoice.listen.wake import CHUNK_SAMPLES, MICRO, OPENWAKEWORD, WakeWordDetector

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wake"
RATE = 16000
THRESHOLD = 0.5
#: Largest score difference the delegate may make (float rounding of a different summation
#: order; measured about 2e-5 on x86-64).
FLOAT_NOISE = 1e-3


#: EDGEVOICE_WAKE_CLIPS=N runs the first N clips only: openWakeWord through XNNPACK costs
#: about 4 s of CPU per second of audio under an emulator (qemu-user), 1000 times native.
CLIPS = int(os.environ.get("EDGEVOICE_WAKE_CLIPS", "0"))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    full = load_corpus(FIXTURES)
    if not CLIPS:
        return full
    clips = full.clips[:CLIPS]
    return Corpus(full.pcm[: 2 * clips[-1].end], clips)


def _library_scores(pcm: bytes, models: tuple[str, ...]) -> dict[str, list[float]]:
    """pyopen-wakeword as it ships, fed 80 ms chunks from a fresh start."""
    features = OpenWakeWordFeatures.from_builtin()
    words = [OpenWakeWord.from_builtin(Model(m)) for m in models]
    drop_buffered(features, words)
    out: dict[str, list[float]] = {m: [] for m in models}
    try:
        for i in range(0, len(pcm), 2 * CHUNK_SAMPLES):
            for emb in features.process_streaming(pcm[i : i + 2 * CHUNK_SAMPLES]):
                for name, word in zip(models, words, strict=True):
                    out[name] += word.process_streaming(emb)
    finally:
        for word in words:
            word.close()
        features.close()
    return out


def _engine_scores(pcm: bytes, engine: str, models: tuple[str, ...], frame: int = 320,
                   threads: int = 1) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {m: [] for m in models}
    with WakeWordDetector(specs(engine, models),
                          on_score=lambda n, s, t: out[n].append((t, s)),
                          threads=threads) as detector:
        for i in range(0, len(pcm), 2 * frame):
            detector.process(pcm[i : i + 2 * frame], i / (2 * RATE))
    return out


def _above_by_clip(corpus: Corpus, times: list[float], scores: list[float], lag: int,
                   cutoff: float, strict: bool) -> dict[str, bool]:
    """For each clip: whether any score of the word on it is above the cutoff."""
    out = {c.file: False for c in corpus.clips}
    for t, s in zip(times, scores, strict=True):
        pos = round(t * RATE) - lag
        for c in corpus.clips:
            if c.start <= pos < c.end:
                out[c.file] |= s > cutoff if strict else s >= cutoff
    return out


def test_xnnpack_scores_are_the_shipped_scores_within_float_noise(corpus: Corpus) -> None:
    models = CORPUS_MODELS[OPENWAKEWORD]
    reference = _library_scores(corpus.pcm, models)
    fast = _engine_scores(corpus.pcm, OPENWAKEWORD, models)
    largest = 0.0
    for name in models:
        ref = np.array(reference[name])
        times = [t for t, _ in fast[name]]
        got = np.array([s for _, s in fast[name]])
        assert len(got) == len(ref) > 0
        diff = float(np.max(np.abs(got - ref)))
        largest = max(largest, diff)
        # No score crosses the threshold one way and not the other ...
        assert np.array_equal(got >= THRESHOLD, ref >= THRESHOLD), name
        # ... so every clip's decision (detected, not detected, near miss) is the same.
        assert (_above_by_clip(corpus, times, list(got), 1600, THRESHOLD, False)
                == _above_by_clip(corpus, times, list(ref), 1600, THRESHOLD, False))
    print(f"largest |XNNPACK - reference| score difference on the corpus: {largest:.2e}")
    assert 0.0 < largest < FLOAT_NOISE


def test_two_threads_give_the_same_decisions(corpus: Corpus) -> None:
    """wake.threads = 2, on the first wake clip only: on a loaded machine XNNPACK's thread
    pool makes every inference wait for its workers (5 s of audio took 20 s here, at a load
    of 6 on 2 cores), which is why 1 is the default."""
    models = ("hey_jarvis", "alexa")
    pcm = corpus.pcm[: 2 * corpus.clips[0].end]
    one = _engine_scores(pcm, OPENWAKEWORD, models)
    two = _engine_scores(pcm, OPENWAKEWORD, models, threads=2)
    for name in models:
        a = np.array([s for _, s in one[name]])
        b = np.array([s for _, s in two[name]])
        assert np.max(np.abs(a - b)) < FLOAT_NOISE
        assert np.array_equal(a >= THRESHOLD, b >= THRESHOLD)


def test_micro_engine_scores_are_pymicro_wakewords(corpus: Corpus) -> None:
    """Same frontend, same quantisation, same interpreter kernels: the same probabilities
    (the means may differ in the last bit: an exact sum here, a Fraction mean there)."""
    for name in CORPUS_MODELS[MICRO]:
        features = MicroWakeWordFeatures()
        model = MicroWakeWord.from_builtin(MicroModelName(name))
        means = []
        try:
            for i in range(0, len(corpus.pcm), 640):
                for feature in features.process_streaming(corpus.pcm[i : i + 640]):
                    means.append(model.process_streaming_prob(feature))
        finally:
            model.close()
        # pymicro-wakeword answers every feature step: 0.0 until it has a full stride and a
        # full window; only each stride's last step carries a new mean.
        stride = model.stride
        window = model.sliding_window_size
        ref = np.array([m for k, m in enumerate(means) if k % stride == stride - 1][window - 1:])
        ours = np.array([s for _, s in _engine_scores(corpus.pcm, MICRO, (name,))[name]])
        assert len(ours) == len(ref) > 0
        assert np.max(np.abs(ours - ref)) < 1e-12, name
