"""Wake word on the espeak-ng corpus (tests/fixtures/wake, made by scripts/make-fixtures), with
the real openWakeWord models, gate on and off; the detector's timing grid; model errors."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.wake import Clip, Corpus, load_corpus
from edgevoice.audio.convert import read_wav
from edgevoice.listen import WakeGate, WakeModelError, WakeWordDetector, WakeWordSpec
from edgevoice.listen.wake import BUILTIN_MODELS, CHUNK_SAMPLES, FEATURE_LAG_SAMPLES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wake"
MODELS = ["hey_jarvis", "hey_rhasspy"]
FRAME = 320  # 20 ms, the capture default
RATE = 16000


@dataclass
class CorpusRun:
    decisions: dict[str, list[str]]  # clip file -> names of the wake words that fired
    max_scores: dict[str, dict[str, float]]  # clip file -> model -> highest score
    scores: list[tuple[int, str, float]]  # (stream position, model, score) of every score
    duty_cycle: float


def _clip_at(clips: list[Clip], position: float) -> Clip | None:
    for c in clips:
        if c.start <= position < c.end:
            return c
    return None


def _run_corpus(corpus: Corpus, gated: bool) -> CorpusRun:
    scores: list[tuple[int, str, float]] = []

    def on_score(name: str, score: float, t_audio: float) -> None:
        scores.append((round(t_audio * RATE), name, score))

    with WakeWordDetector(MODELS, on_score=on_score) as detector:
        gate = WakeGate(detector, enabled=gated)
        decisions: dict[str, list[str]] = {c.file: [] for c in corpus.clips}
        pcm = corpus.pcm
        for i in range(0, len(pcm), 2 * FRAME):
            for d in gate.process(pcm[i : i + 2 * FRAME], i / (2 * RATE)):
                clip = _clip_at(corpus.clips, d.t_end_estimate * RATE)
                assert clip is not None, d
                decisions[clip.file].append(d.name)
        max_scores = {c.file: dict.fromkeys(MODELS, 0.0) for c in corpus.clips}
        for end, name, score in scores:
            clip = _clip_at(corpus.clips, end - FEATURE_LAG_SAMPLES)
            if clip is not None:
                max_scores[clip.file][name] = max(max_scores[clip.file][name], score)
        return CorpusRun(decisions, max_scores, scores, gate.duty_cycle)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus(FIXTURES)


@pytest.fixture(scope="module")
def gate_off(corpus: Corpus) -> CorpusRun:
    return _run_corpus(corpus, gated=False)


@pytest.fixture(scope="module")
def gate_on(corpus: Corpus) -> CorpusRun:
    return _run_corpus(corpus, gated=True)


def test_wake_phrases_detected_in_three_voices_or_more(corpus: Corpus, gate_on: CorpusRun) -> None:
    wake = [c for c in corpus.clips if c.label == "wake"]
    voices: dict[str, set[str]] = {}
    for c in wake:
        assert gate_on.decisions[c.file] == [c.model], (c.file, gate_on.max_scores[c.file])
        voices.setdefault(c.model, set()).add(c.file)
    assert set(voices) == {"hey_jarvis", "hey_rhasspy"}
    assert all(len(v) >= 3 for v in voices.values()), voices


def test_everyday_sentences_do_not_wake(corpus: Corpus, gate_on: CorpusRun) -> None:
    negative = [c for c in corpus.clips if c.label == "negative"]
    assert len(negative) >= 10
    fired = {c.file: gate_on.decisions[c.file] for c in negative if gate_on.decisions[c.file]}
    assert not fired


def test_gate_on_and_off_give_the_same_decisions(gate_on: CorpusRun, gate_off: CorpusRun) -> None:
    assert gate_on.decisions == gate_off.decisions
    # Stronger: every score the gated run computed is bit-identical to the ungated one.
    ungated = {(pos, name): s for pos, name, s in gate_off.scores}
    assert len(ungated) == len(gate_off.scores)
    assert gate_on.scores
    for pos, name, s in gate_on.scores:
        assert ungated[(pos, name)] == s, (pos, name)
    # The gate did skip audio: the corpus has silences longer than pre-roll + hangover.
    assert gate_on.duty_cycle < 1.0 and len(gate_on.scores) < len(gate_off.scores)


def test_hey_travis_near_miss_is_recorded(
    corpus: Corpus, gate_on: CorpusRun, gate_off: CorpusRun, record_property
) -> None:
    """Known near-miss: "hey travis" may fire hey_jarvis. Whatever it does is recorded (junit
    property and stdout, see -rP), not asserted, except that gating does not change it."""
    near = [c for c in corpus.clips if c.label == "nearmiss"]
    assert near
    for c in near:
        outcome = {
            "fired": gate_on.decisions[c.file],
            "max_hey_jarvis": round(gate_on.max_scores[c.file]["hey_jarvis"], 3),
        }
        record_property(f"near_miss:{c.file}", outcome)
        print(f"known near-miss {c.file}: {outcome}")
        assert gate_on.decisions[c.file] == gate_off.decisions[c.file]


def test_gate_keeps_the_detector_idle_on_silence() -> None:
    rng = np.random.default_rng(3)
    floor = np.round(rng.standard_normal(5 * RATE) * 10).astype("<i2").tobytes()  # -70 dBFS
    with WakeWordDetector(["hey_jarvis"]) as detector:
        gate = WakeGate(detector)
        for i in range(0, len(floor), 2 * FRAME):
            assert gate.process(floor[i : i + 2 * FRAME], i / (2 * RATE)) == []
        assert gate.samples_fed == 0 and not gate.is_open
        assert detector.last_scores == {}


# --- the detector's timing grid, which the gate's exactness relies on ---------------------


def _noise(seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(int(seconds * RATE)) * 1000).astype("<i2")


def _scores(detector: WakeWordDetector, pcm: bytes, frame: int) -> list[tuple[int, float]]:
    """(samples fed, score) for every hey_jarvis score, feeding ``frame`` samples at a time."""
    detector.forget()
    out: list[tuple[int, float]] = []
    for i in range(0, len(pcm), 2 * frame):
        detector.last_scores.clear()
        detector.process(pcm[i : i + 2 * frame], 0.0)
        if "hey_jarvis" in detector.last_scores:
            out.append((min(len(pcm), i + 2 * frame) // 2, detector.last_scores["hey_jarvis"]))
    return out


@pytest.fixture(scope="module")
def jarvis() -> WakeWordDetector:
    with WakeWordDetector(["hey_jarvis"]) as detector:
        yield detector


def test_first_score_after_warmup_and_frame_size_does_not_matter(
    jarvis: WakeWordDetector,
) -> None:
    assert jarvis.context_samples == 31680 and jarvis.warmup_samples == 33280
    pcm = _noise(2.5).tobytes()
    by_chunk = _scores(jarvis, pcm, CHUNK_SAMPLES)
    assert by_chunk[0][0] == jarvis.warmup_samples
    assert [p for p, _ in by_chunk] == list(range(jarvis.warmup_samples, len(pcm) // 2 + 1, 1280))
    values = [s for _, s in by_chunk]
    for frame in (FRAME, 480, 1000):  # 20 ms, 30 ms, and a size that straddles chunks
        assert [s for _, s in _scores(jarvis, pcm, frame)] == values


def test_score_sees_exactly_its_context_window(jarvis: WakeWordDetector) -> None:
    """Score k depends on samples [1280k, 1280k + context) only."""
    x = _noise(2.5)
    ref = dict(_scores(jarvis, x.tobytes(), CHUNK_SAMPLES))
    k = 1
    emitted = CHUNK_SAMPLES * k + jarvis.warmup_samples
    before, after = x.copy(), x.copy()
    before[: CHUNK_SAMPLES * k] = 0
    after[CHUNK_SAMPLES * k + jarvis.context_samples :] = 0
    assert dict(_scores(jarvis, before.tobytes(), CHUNK_SAMPLES))[emitted] == ref[emitted]
    assert dict(_scores(jarvis, after.tobytes(), CHUNK_SAMPLES))[emitted] == ref[emitted]
    inside = x.copy()
    inside[CHUNK_SAMPLES * k + jarvis.context_samples - 400 :] = 0
    assert dict(_scores(jarvis, inside.tobytes(), CHUNK_SAMPLES))[emitted] != ref[emitted]


def test_forget_discards_everything_fed_before(jarvis: WakeWordDetector) -> None:
    first, second = _noise(3.0, seed=1).tobytes(), _noise(3.0, seed=2).tobytes()
    fresh = _scores(jarvis, second, FRAME)
    jarvis.forget()
    for i in range(0, len(first), 2 * FRAME):
        jarvis.process(first[i : i + 2 * FRAME], 0.0)
    assert _scores(jarvis, second, FRAME) == fresh  # _scores calls forget() first


# --- thresholds, trigger level, refractory ---------------------------------------------------


def _clip_stream(name: str, lead_s: float = 1.0) -> bytes:
    pcm, rate = read_wav(FIXTURES / name)
    assert rate == RATE
    return bytes(int(lead_s * RATE) * 2) + pcm + bytes(2 * RATE * 2)


def _detections(specs: list[WakeWordSpec | str], pcm: bytes) -> list:
    with WakeWordDetector(specs) as detector:
        found = []
        for i in range(0, len(pcm), 2 * FRAME):
            found += detector.process(pcm[i : i + 2 * FRAME], 10.0 + i / (2 * RATE))
        return found


def test_trigger_level_and_refractory() -> None:
    pcm = _clip_stream("jarvis_en-us.wav")
    once = _detections([WakeWordSpec("hey_jarvis")], pcm)
    assert len(once) == 1 and once[0].name == "hey_jarvis" and once[0].score >= 0.5
    d = once[0]
    assert d.t_end_estimate == pytest.approx(d.t_audio - FEATURE_LAG_SAMPLES / RATE)
    # No refractory: the word stays in the window and fires again on the next chunks.
    repeated = _detections([WakeWordSpec("hey_jarvis", refractory_s=0.0)], pcm)
    assert len(repeated) > 1 and repeated[0] == d
    # Trigger level 3 fires on the third consecutive score >= threshold.
    scores: list[tuple[float, float]] = []
    with WakeWordDetector(
        [WakeWordSpec("hey_jarvis", trigger_level=3)],
        on_score=lambda _name, score, t: scores.append((t, score)),
    ) as detector:
        late = []
        for i in range(0, len(pcm), 2 * FRAME):
            late += detector.process(pcm[i : i + 2 * FRAME], 10.0 + i / (2 * RATE))
    above = [score >= 0.5 for _, score in scores]
    third = next(i for i in range(2, len(above)) if all(above[i - 2 : i + 1]))
    assert len(late) == 1 and late[0].t_audio == scores[third][0] > d.t_audio
    # A threshold above every score never fires.
    assert _detections([WakeWordSpec("hey_jarvis", threshold=0.9999)], pcm) == []


def test_several_models_each_report_their_own_name() -> None:
    pcm = _clip_stream("jarvis_en-us.wav") + _clip_stream("rhasspy_en-us_f3.wav")
    found = _detections(["hey_rhasspy", WakeWordSpec("hey_jarvis", name="jarvis")], pcm)
    assert [d.name for d in found] == ["jarvis", "hey_rhasspy"]


def test_custom_tflite_model_by_path(tmp_path: Path) -> None:
    import pyopen_wakeword

    builtin = Path(pyopen_wakeword.__file__).parent / "models" / "hey_jarvis.tflite"
    custom = tmp_path / "my_word.tflite"
    shutil.copy(builtin, custom)
    found = _detections([str(custom)], _clip_stream("jarvis_en-us.wav"))
    assert [d.name for d in found] == ["my_word"]


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_name_is_named() -> None:
    with pytest.raises(WakeModelError, match="'hey_jarvs'.*built-in models are") as err:
        WakeWordDetector(["hey_jarvis", "hey_jarvs"])
    for name in BUILTIN_MODELS:
        assert name in str(err.value)


def test_missing_tflite_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(WakeModelError, match="'nope'.*not found.*nope.tflite"):
        WakeWordDetector([str(missing)])


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_corrupt_tflite_is_an_error_not_a_crash(tmp_path: Path, content: str) -> None:
    import pyopen_wakeword

    real = (Path(pyopen_wakeword.__file__).parent / "models" / "hey_jarvis.tflite").read_bytes()
    data = {
        "random": np.random.default_rng(0).bytes(5000),
        "truncated": real[: len(real) // 2],
        "empty": b"",
    }[content]
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(data)
    with pytest.raises(WakeModelError, match="'broken'.*not a valid TFLite model"):
        WakeWordDetector([WakeWordSpec(bad)])


def test_tflite_that_is_not_a_wake_word_model(tmp_path: Path) -> None:
    import pyopen_wakeword

    mel = Path(pyopen_wakeword.__file__).parent / "models" / "melspectrogram.tflite"
    with pytest.raises(WakeModelError, match="not an openWakeWord wake-word model"):
        WakeWordDetector([str(mel)])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WakeWordSpec("hey_jarvis", threshold=0.0), "threshold"),
        (WakeWordSpec("hey_jarvis", trigger_level=0), "trigger_level"),
        (WakeWordSpec("hey_jarvis", refractory_s=-1), "refractory_s"),
    ],
)
def test_bad_settings_are_named(spec: WakeWordSpec, message: str) -> None:
    with pytest.raises(WakeModelError, match=f"'hey_jarvis'.*{message}"):
        WakeWordDetector([spec])
