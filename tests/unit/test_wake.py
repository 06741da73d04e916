"""Wake word on the espeak-ng corpus (tests/fixtures/wake, made by scripts/make-fixtures), with
the real models of both engines, gate on and off; the engines' timing grids; model errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.wake import BASE_VOICES, CORPUS_MODELS, Clip, Corpus, load_corpus, specs
from edgevoice.audio.convert import read_wav
from edgevoice.listen import WakeGate, WakeModelError, WakeWordDetector, WakeWordSpec
from edgevoice.listen.micro import MODELS_DIR as MICRO_MODELS_DIR
from edgevoice.listen.oww import MODELS_DIR as OWW_MODELS_DIR
from edgevoice.listen.wake import (
    BUILTIN_MODELS,
    CHUNK_SAMPLES,
    FEATURE_LAG_SAMPLES,
    MICRO,
    MICRO_BUILTIN_MODELS,
    OPENWAKEWORD,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wake"
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


def run_corpus(corpus: Corpus, engine: str, gated: bool) -> CorpusRun:
    models = CORPUS_MODELS[engine]
    scores: list[tuple[int, str, float]] = []

    def on_score(name: str, score: float, t_audio: float) -> None:
        scores.append((round(t_audio * RATE), name, score))

    with WakeWordDetector(specs(engine, models), on_score=on_score) as detector:
        lag = detector.engines[0].lag_samples
        gate = WakeGate(detector, enabled=gated)
        decisions: dict[str, list[str]] = {c.file: [] for c in corpus.clips}
        pcm = corpus.pcm
        for i in range(0, len(pcm), 2 * FRAME):
            for d in gate.process(pcm[i : i + 2 * FRAME], i / (2 * RATE)):
                clip = _clip_at(corpus.clips, d.t_end_estimate * RATE)
                assert clip is not None, d
                decisions[clip.file].append(d.name)
        max_scores = {c.file: dict.fromkeys(models, 0.0) for c in corpus.clips}
        for end, name, score in scores:
            clip = _clip_at(corpus.clips, end - lag)
            if clip is not None:
                max_scores[clip.file][name] = max(max_scores[clip.file][name], score)
        return CorpusRun(decisions, max_scores, scores, gate.duty_cycle)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_corpus(FIXTURES)


@pytest.fixture(scope="module")
def oww_off(corpus: Corpus) -> CorpusRun:
    return run_corpus(corpus, OPENWAKEWORD, gated=False)


@pytest.fixture(scope="module")
def oww_on(corpus: Corpus) -> CorpusRun:
    return run_corpus(corpus, OPENWAKEWORD, gated=True)


@pytest.fixture(scope="module")
def micro_off(corpus: Corpus) -> CorpusRun:
    return run_corpus(corpus, MICRO, gated=False)


@pytest.fixture(scope="module")
def micro_on(corpus: Corpus) -> CorpusRun:
    return run_corpus(corpus, MICRO, gated=True)


def _wake(corpus: Corpus, engine: str) -> list[Clip]:
    return [c for c in corpus.clips if c.label == "wake" and c.model in CORPUS_MODELS[engine]]


def test_openwakeword_fires_hey_jarvis_and_hey_rhasspy_in_every_base_voice(
    corpus: Corpus, oww_on: CorpusRun
) -> None:
    """The voices the corpus began with: each of these two words fires exactly once, alone."""
    clips = [c for c in _wake(corpus, OPENWAKEWORD)
             if c.voice in BASE_VOICES and c.model in ("hey_jarvis", "hey_rhasspy")]
    assert len(clips) == 8
    for c in clips:
        assert oww_on.decisions[c.file] == [c.model], (c.file, oww_on.max_scores[c.file])


# Floors of the detection figures the README reports (measured on x86-64: openWakeWord 29 of
# its 52 wake clips, microWakeWord 32 of its 48), a little below them for other platforms'
# float rounding; a change to either engine that loses wake words fails here. Wake clips that
# fire another word: openWakeWord's hey_rhasspy fires on one hey mycroft clip.
@pytest.mark.parametrize(("engine", "floor", "cross"), [(OPENWAKEWORD, 27, 1), (MICRO, 30, 0)])
def test_detections_on_the_corpus(
    corpus: Corpus, engine: str, floor: int, cross: int, request: pytest.FixtureRequest
) -> None:
    run: CorpusRun = request.getfixturevalue("oww_on" if engine == OPENWAKEWORD else "micro_on")
    wake = _wake(corpus, engine)
    detected = [c for c in wake if c.model in run.decisions[c.file]]
    assert len(detected) >= floor, sorted(c.file for c in wake if c not in detected)
    others = {c.file: run.decisions[c.file] for c in wake
              if set(run.decisions[c.file]) - {c.model}}
    assert len(others) <= cross, others


@pytest.mark.parametrize("engine", [OPENWAKEWORD, MICRO])
def test_everyday_sentences_do_not_wake(
    corpus: Corpus, engine: str, request: pytest.FixtureRequest
) -> None:
    run: CorpusRun = request.getfixturevalue("oww_on" if engine == OPENWAKEWORD else "micro_on")
    negative = [c for c in corpus.clips if c.label == "negative"]
    assert len(negative) >= 20
    fired = {c.file: run.decisions[c.file] for c in negative if run.decisions[c.file]}
    assert not fired


def test_openwakeword_gate_on_and_off_give_the_same_scores(
    oww_on: CorpusRun, oww_off: CorpusRun
) -> None:
    assert oww_on.decisions == oww_off.decisions
    # Stronger: every score the gated run computed is bit-identical to the ungated one.
    ungated = {(pos, name): s for pos, name, s in oww_off.scores}
    assert len(ungated) == len(oww_off.scores)
    assert oww_on.scores
    for pos, name, s in oww_on.scores:
        assert ungated[(pos, name)] == s, (pos, name)
    # The gate did skip audio: the corpus has silences longer than pre-roll + hangover.
    assert oww_on.duty_cycle < 1.0 and len(oww_on.scores) < len(oww_off.scores)


def test_micro_gate_on_and_off_give_the_same_decisions(
    corpus: Corpus, micro_on: CorpusRun, micro_off: CorpusRun
) -> None:
    """microWakeWord's state fades instead of ending, so a 1 s pre-roll does not give
    bit-identical scores; it gives the same decisions and nearly the same best scores."""
    assert micro_on.decisions == micro_off.decisions
    for c in corpus.clips:
        for name, best in micro_off.max_scores[c.file].items():
            assert micro_on.max_scores[c.file][name] == pytest.approx(best, abs=0.05), c.file
    assert micro_on.duty_cycle < 1.0 and len(micro_on.scores) < len(micro_off.scores)


def test_near_misses_are_recorded(
    corpus: Corpus, oww_on: CorpusRun, oww_off: CorpusRun, micro_on: CorpusRun,
    micro_off: CorpusRun, record_property
) -> None:
    """Near misses ("hey travis" may fire openWakeWord's hey_jarvis): whatever they do is
    recorded (junit property and stdout, see -rP), not asserted, except that gating does not
    change it."""
    near = [c for c in corpus.clips if c.label == "nearmiss"]
    assert near
    for engine, on, off in (("oww", oww_on, oww_off), ("micro", micro_on, micro_off)):
        for c in near:
            best = max(on.max_scores[c.file].items(), key=lambda kv: kv[1])
            outcome = {"fired": on.decisions[c.file], "best": (best[0], round(best[1], 3))}
            record_property(f"near_miss:{engine}:{c.file}", outcome)
            print(f"near miss, {engine}, {c.file}: {outcome}")
            assert on.decisions[c.file] == off.decisions[c.file]


def test_gate_keeps_the_detector_idle_on_silence() -> None:
    rng = np.random.default_rng(3)
    floor = np.round(rng.standard_normal(5 * RATE) * 10).astype("<i2").tobytes()  # -70 dBFS
    for words in (["hey_jarvis"], [WakeWordSpec("hey_jarvis", engine=MICRO)]):
        with WakeWordDetector(words) as detector:
            gate = WakeGate(detector)
            for i in range(0, len(floor), 2 * FRAME):
                assert gate.process(floor[i : i + 2 * FRAME], i / (2 * RATE)) == []
            assert gate.samples_fed == 0 and not gate.is_open
            assert detector.last_scores == {}


def test_the_gate_takes_each_engines_context() -> None:
    with WakeWordDetector([WakeWordSpec("okay_nabu", engine=MICRO)]) as micro, \
            WakeWordDetector(["hey_jarvis"]) as oww, \
            WakeWordDetector(["hey_jarvis", WakeWordSpec("okay_nabu", engine=MICRO)]) as both:
        assert WakeGate(oww).pre_roll_samples == oww.context_samples == 31680
        assert WakeGate(micro).pre_roll_samples == micro.context_samples == 24000
        assert micro.chunk_samples == 480 and oww.chunk_samples == CHUNK_SAMPLES
        assert both.chunk_samples == 3840 and both.context_samples == 31680
        assert WakeGate(both).pre_roll_samples == 31680


# --- the openWakeWord engine's timing grid, which the gate's exactness relies on --------------


def _noise(seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(int(seconds * RATE)) * 1000).astype("<i2")


def _scores(detector: WakeWordDetector, pcm: bytes, frame: int, name: str = "hey_jarvis"
            ) -> list[tuple[int, float]]:
    """(samples fed, score) for every score of ``name``, feeding ``frame`` samples at a time."""
    detector.forget()
    out: list[tuple[int, float]] = []
    for i in range(0, len(pcm), 2 * frame):
        detector.last_scores.clear()
        detector.process(pcm[i : i + 2 * frame], 0.0)
        if name in detector.last_scores:
            out.append((min(len(pcm), i + 2 * frame) // 2, detector.last_scores[name]))
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


@pytest.mark.parametrize("engine", [OPENWAKEWORD, MICRO])
def test_forget_discards_everything_fed_before(engine: str) -> None:
    first, second = _noise(3.0, seed=1).tobytes(), _noise(3.0, seed=2).tobytes()
    with WakeWordDetector([WakeWordSpec("hey_jarvis", engine=engine)]) as detector:
        fresh = _scores(detector, second, FRAME)
        assert fresh
        detector.forget()
        for i in range(0, len(first), 2 * FRAME):
            detector.process(first[i : i + 2 * FRAME], 0.0)
        assert _scores(detector, second, FRAME) == fresh  # _scores calls forget() first


def test_micro_scores_every_30_ms_whatever_the_frame_size() -> None:
    pcm = _noise(1.5).tobytes()
    runs = []
    for frame in (160, FRAME, 480, 1000):
        scores: list[tuple[int, float]] = []
        with WakeWordDetector([WakeWordSpec("hey_jarvis", engine=MICRO)],
                              on_score=lambda _n, s, t, out=scores: out.append(
                                  (round(t * RATE), s))) as detector:
            for i in range(0, len(pcm), 2 * frame):
                detector.process(pcm[i : i + 2 * frame], i / (2 * RATE))
        runs.append(scores)
    # Features from 480 samples on, one per 160; a probability every 3 features; the first
    # score when the sliding window (5) is full; each at the end of the step that made it.
    first = 480 + 160 * 2 + 480 * 4
    assert [p for p, _ in runs[0]] == list(range(first, len(pcm) // 2 + 1, 480))
    assert all(run == runs[0] for run in runs[1:])


def test_micro_context_covers_what_changes_a_score() -> None:
    """What CONTEXT_SAMPLES rests on: a wake word one context after speech scores as it does
    after silence, up to 0.002; after 3 s of white noise at -12 dBFS, up to 0.05 (the
    frontend's noise estimate fades slowly), with the same decision. With half a context the
    noise does change the decision (so this test can tell)."""
    loud = _noise(3.0, seed=5) * 8
    speech = np.frombuffer(read_wav(FIXTURES / "sentence_04.wav")[0], dtype="<i2")[: 3 * RATE]
    clip = np.frombuffer(read_wav(FIXTURES / "alexa_en-us.wav")[0], dtype="<i2")
    with WakeWordDetector([WakeWordSpec("alexa", engine=MICRO)]) as detector:
        def best(history: np.ndarray, gap: int) -> float:
            pcm = np.concatenate([history, np.zeros(gap, dtype="<i2"), clip,
                                  np.zeros(RATE, dtype="<i2")]).tobytes()
            after = len(history) + gap
            return max(s for p, s in _scores(detector, pcm, 160, name="alexa") if p > after)

        context = detector.context_samples
        quiet = best(np.zeros(3 * RATE, dtype="<i2"), context)
        assert quiet > 0.99
        assert abs(best(speech, context) - quiet) < 0.002
        assert abs(best(loud, context) - quiet) < 0.05
        assert best(loud, context // 3) < 0.9  # alexa's cutoff


# --- thresholds, trigger level, refractory ---------------------------------------------------


def _clip_stream(name: str, lead_s: float = 2.0) -> bytes:
    pcm, rate = read_wav(FIXTURES / name)
    assert rate == RATE
    return bytes(int(lead_s * RATE) * 2) + pcm + bytes(3 * RATE * 2)


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


def test_micro_cutoff_and_sliding_window_come_from_the_json_unless_set() -> None:
    pcm = _clip_stream("alexa_en-us.wav")
    meta = json.loads((MICRO_MODELS_DIR / "alexa.json").read_text())["micro"]
    scores: list[float] = []
    with WakeWordDetector([WakeWordSpec("alexa", engine=MICRO)],
                          on_score=lambda _n, s, _t: scores.append(s)) as detector:
        found = []
        for i in range(0, len(pcm), 2 * FRAME):
            found += detector.process(pcm[i : i + 2 * FRAME], i / (2 * RATE))
    assert [d.name for d in found] == ["alexa"] and found[0].score > meta["probability_cutoff"]
    assert found[0].t_end_estimate == found[0].t_audio  # no feature lag
    # The first score above the JSON's cutoff is the one that fired.
    assert found[0].score == next(s for s in scores if s > meta["probability_cutoff"])
    # A cutoff of 1 never fires; a window of 1 fires no later than the JSON's window of 5.
    never = _detections([WakeWordSpec("alexa", engine=MICRO, threshold=1.0)], pcm)
    assert never == []
    # A mean of 5 above the cutoff has a member above it, no later.
    quick = _detections([WakeWordSpec("alexa", engine=MICRO, sliding_window=1)], pcm)
    assert quick and quick[0].t_audio - 10.0 <= found[0].t_audio


def test_both_engines_in_one_detector_report_in_stream_order() -> None:
    pcm = _clip_stream("alexa_en-us.wav") + _clip_stream("jarvis_en-us.wav")
    found = _detections([WakeWordSpec("hey_jarvis"), WakeWordSpec("alexa", engine=MICRO)], pcm)
    assert [d.name for d in found] == ["alexa", "hey_jarvis"]
    assert found[0].t_audio < found[1].t_audio


def test_several_models_each_report_their_own_name() -> None:
    pcm = _clip_stream("jarvis_en-us.wav") + _clip_stream("rhasspy_en-us_f3.wav")
    found = _detections(["hey_rhasspy", WakeWordSpec("hey_jarvis", name="jarvis")], pcm)
    assert [d.name for d in found] == ["jarvis", "hey_rhasspy"]


def test_custom_tflite_model_by_path(tmp_path: Path) -> None:
    custom = tmp_path / "my_word.tflite"
    shutil.copy(OWW_MODELS_DIR / "hey_jarvis.tflite", custom)
    found = _detections([str(custom)], _clip_stream("jarvis_en-us.wav"))
    assert [d.name for d in found] == ["my_word"]


def _custom_micro(tmp_path: Path, name: str = "my_alexa", **changes: object) -> Path:
    """A custom microWakeWord model: the bundled alexa's files under new names, with
    ``changes`` applied to its JSON (None removes a key; "micro.x" reaches into "micro")."""
    config = json.loads((MICRO_MODELS_DIR / "alexa.json").read_text())
    shutil.copy(MICRO_MODELS_DIR / "alexa.tflite", tmp_path / f"{name}.tflite")
    config["model"] = f"{name}.tflite"
    for key, value in changes.items():
        table, _, leaf = key.rpartition(".")
        target = config[table] if table else config
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def test_custom_micro_model_by_json(tmp_path: Path) -> None:
    spec = WakeWordSpec(str(_custom_micro(tmp_path)), engine=MICRO)
    found = _detections([spec], _clip_stream("alexa_en-us.wav"))
    assert [d.name for d in found] == ["my_alexa"]


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_name_is_named() -> None:
    with pytest.raises(WakeModelError, match="'hey_jarvs'.*built-in models are") as err:
        WakeWordDetector(["hey_jarvis", "hey_jarvs"])
    for name in BUILTIN_MODELS:
        assert name in str(err.value)
    with pytest.raises(WakeModelError, match="'hey_rhasspy'.*unknown microWakeWord") as err:
        WakeWordDetector([WakeWordSpec("hey_rhasspy", engine=MICRO)])
    for name in MICRO_BUILTIN_MODELS:
        assert name in str(err.value)


def test_unknown_engine_is_named() -> None:
    with pytest.raises(WakeModelError, match="'hey_jarvis': unknown engine 'pico'"):
        WakeWordDetector([WakeWordSpec("hey_jarvis", engine="pico")])


def test_missing_tflite_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    with pytest.raises(WakeModelError, match="'nope'.*not found.*nope.tflite"):
        WakeWordDetector([str(missing)])


@pytest.mark.parametrize("content", ["random", "truncated", "empty"])
def test_corrupt_tflite_is_an_error_not_a_crash(tmp_path: Path, content: str) -> None:
    real = (OWW_MODELS_DIR / "hey_jarvis.tflite").read_bytes()
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
    mel = OWW_MODELS_DIR / "melspectrogram.tflite"
    with pytest.raises(WakeModelError, match="not an openWakeWord wake-word model"):
        WakeWordDetector([str(mel)])
    # A microWakeWord model is not an openWakeWord one either, and the other way round.
    with pytest.raises(WakeModelError, match="not an openWakeWord wake-word model"):
        WakeWordDetector([str(MICRO_MODELS_DIR / "alexa.tflite")])


def test_micro_json_naming_a_missing_file(tmp_path: Path) -> None:
    path = _custom_micro(tmp_path, model="gone.tflite")
    with pytest.raises(WakeModelError) as err:
        WakeWordDetector([WakeWordSpec(str(path), engine=MICRO)])
    assert str(err.value) == (f"wake word 'my_alexa': {path} names {tmp_path / 'gone.tflite'}, "
                              f"which does not exist")


def test_micro_json_without_its_cutoff(tmp_path: Path) -> None:
    path = _custom_micro(tmp_path, **{"micro.probability_cutoff": None})
    with pytest.raises(WakeModelError) as err:
        WakeWordDetector([WakeWordSpec(str(path), engine=MICRO)])
    assert str(err.value) == (f"wake word 'my_alexa': {path}: micro.probability_cutoff is "
                              f"missing (or set threshold for this wake word)")
    # A threshold set for the word stands in for it.
    with WakeWordDetector([WakeWordSpec(str(path), engine=MICRO, threshold=0.9)]) as detector:
        assert detector.names == ["my_alexa"]


def test_micro_json_whose_tflite_is_not_tflite(tmp_path: Path) -> None:
    path = _custom_micro(tmp_path)
    (tmp_path / "my_alexa.tflite").write_bytes(b"TFL3 not a flatbuffer" + bytes(64))
    with pytest.raises(WakeModelError, match=r"'my_alexa'.*my_alexa\.tflite is not a valid "
                                             r"TFLite model"):
        WakeWordDetector([WakeWordSpec(str(path), engine=MICRO)])


@pytest.mark.parametrize("content", ["{not json", "[]", '{"model": "x.tflite"}'])
def test_micro_json_that_is_not_a_micro_model(tmp_path: Path, content: str) -> None:
    path = tmp_path / "odd.json"
    path.write_text(content)
    with pytest.raises(WakeModelError, match=f"'odd': {path}"):
        WakeWordDetector([WakeWordSpec(str(path), engine=MICRO)])


def test_micro_engine_wants_the_json_not_the_tflite() -> None:
    with pytest.raises(WakeModelError, match="give the path of a model's .json"):
        WakeWordDetector([WakeWordSpec(str(MICRO_MODELS_DIR / "alexa.tflite"), engine=MICRO)])


def test_openwakeword_model_given_to_the_micro_engine(tmp_path: Path) -> None:
    path = _custom_micro(tmp_path)
    shutil.copy(OWW_MODELS_DIR / "alexa.tflite", tmp_path / "my_alexa.tflite")
    with pytest.raises(WakeModelError, match="not a microWakeWord streaming model"):
        WakeWordDetector([WakeWordSpec(str(path), engine=MICRO)])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WakeWordSpec("hey_jarvis", threshold=0.0), "threshold"),
        (WakeWordSpec("hey_jarvis", trigger_level=0), "trigger_level"),
        (WakeWordSpec("hey_jarvis", refractory_s=-1), "refractory_s"),
        (WakeWordSpec("hey_jarvis", sliding_window=3), "sliding_window is a setting of the "
                                                       "'micro' engine only"),
        (WakeWordSpec("hey_jarvis", engine=MICRO, sliding_window=0), "sliding_window"),
    ],
)
def test_bad_settings_are_named(spec: WakeWordSpec, message: str) -> None:
    with pytest.raises(WakeModelError, match=f"'hey_jarvis'.*{message}"):
        WakeWordDetector([spec])


def test_close_frees_everything_and_is_idempotent() -> None:
    detector = WakeWordDetector(["hey_jarvis", WakeWordSpec("alexa", engine=MICRO)])
    detector.close()
    detector.close()
    for engine in detector.engines:
        interpreters = [getattr(engine, "_mel", None), getattr(engine, "_emb", None),
                        *getattr(engine, "_models", []),
                        *(w.interpreter for w in getattr(engine, "_words", []))]
        for it in filter(None, interpreters):
            assert it._interpreter is None and it._delegate is None and it._model is None
