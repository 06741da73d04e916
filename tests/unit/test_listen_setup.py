"""The listening parts are built from the config, and the wake word works through them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.config import parse_config
from edgevoice.listen import setup
from edgevoice.listen.micro import MODELS_DIR as MICRO_MODELS_DIR
from edgevoice.listen.wake import WakeModelError
from support import MANAGER_VARS

WAKE = Path(__file__).resolve().parents[1] / "fixtures" / "wake"


def test_default_config_detects_hey_jarvis_through_the_gate() -> None:
    cfg = parse_config("", "defaults")
    gate = setup.wake_gate(cfg)
    clip = WAKE / "jarvis_en-us.wav"
    pcm, rate = read_wav(clip)
    assert rate == 16000
    pcm = bytes(2 * rate) + pcm + bytes(2 * rate)  # the clips hold the speech only
    detections = []
    for i in range(0, len(pcm) - 640 + 1, 640):
        detections += gate.process(pcm[i : i + 640], i / 2 / rate)
    assert [d.name for d in detections] == ["hey_jarvis"]


def test_tail_never_shorter_than_server_silence() -> None:
    cfg = parse_config("[vad]\ntail_ms = 100\n[session.turn_detection]\nsilence_duration_ms = 900\n", "x")
    assert setup.upstream_tail_ms(cfg) == 1100
    local = parse_config("[vad]\ntail_ms = 100\n[session.turn_detection]\ntype = \"none\"\n", "x")
    assert setup.upstream_tail_ms(local) == 100
    assert setup.upstream_gate(cfg).tail_samples == 1100 * 16
    assert (setup.endpointer(local).silence_samples
            == local.vad.local_end_of_utterance_ms * 16)


def test_unknown_model_in_config_is_named() -> None:
    cfg = parse_config("[[wake.models]]\nname = \"hey_computer\"\n", "x")
    with pytest.raises(WakeModelError, match="hey_computer"):
        setup.wake_gate(cfg)


# --- bad wake-word input: one line each, naming the file or key --------------------------------


def bad_wake_input(kind: str, tmp: Path) -> tuple[str, str]:
    """A config (TOML) with one bad wake-word input of ``kind``, and the text its one error
    line must hold besides the key path."""
    alexa = MICRO_MODELS_DIR / "alexa.json"
    if kind == "not-tflite":
        model = tmp / "hey_kitchen.tflite"
        model.write_bytes(b"TFL3 this is not a flatbuffer" + bytes(64))
        return f'[[wake.models]]\nname = "{model}"\n', f"{model} is not a valid TFLite model"
    if kind in ("json-missing-file", "json-no-cutoff"):
        config = json.loads(alexa.read_text())
        shutil.copy(alexa.with_suffix(".tflite"), tmp / "kitchen.tflite")
        config["model"] = "kitchen.tflite"
        if kind == "json-missing-file":
            config["model"] = "gone.tflite"
            expected = f"{tmp / 'kitchen.json'} names {tmp / 'gone.tflite'}, which does not exist"
        else:
            del config["micro"]["probability_cutoff"]
            expected = f"{tmp / 'kitchen.json'}: micro.probability_cutoff is missing"
        (tmp / "kitchen.json").write_text(json.dumps(config))
        return (f'[[wake.models]]\nname = "{tmp / "kitchen.json"}"\nengine = "micro"\n',
                expected)
    assert kind == "engine"
    return ('[[wake.models]]\nname = "hey_jarvis"\nengine = "porcupine"\n',
            "wake.models[0].engine: must be one of 'openwakeword' or 'micro', got 'porcupine'")


BAD_INPUTS = ["not-tflite", "json-missing-file", "json-no-cutoff", "engine"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_check_config_names_a_bad_wake_model_in_one_line(tmp_path: Path, kind: str) -> None:
    toml, expected = bad_wake_input(kind, tmp_path)
    config = tmp_path / "edgevoice.toml"
    config.write_text(toml)
    res = subprocess.run([sys.executable, "-m", "edgevoice", "check-config", "--config",
                          str(config)], capture_output=True, text=True, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"{config}: wake.models[0]"), lines
    assert expected in lines[0], lines


def test_wake_problems_list_every_bad_model_with_its_key(tmp_path: Path) -> None:
    good = parse_config('[[wake.models]]\nname = "alexa"\nengine = "micro"\n', "x")
    assert setup.wake_problems(good) == []
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"")
    cfg = parse_config(f'[[wake.models]]\nname = "hey_jarvis"\n[[wake.models]]\nname = "{bad}"\n'
                       '[bargein]\nstop_words = [{ name = "stopp" }]\n', "x")
    problems = setup.wake_problems(cfg)
    assert len(problems) == 2
    assert problems[0] == f"wake.models[1]: wake word 'bad': {bad} is not a valid TFLite model"
    assert problems[1].startswith("bargein.stop_words[0]: wake word 'stopp': unknown model")


def test_micro_model_from_config_detects_through_the_gate() -> None:
    cfg = parse_config('[[wake.models]]\nname = "alexa"\nengine = "micro"\n'
                       '[[wake.models]]\nname = "hey_jarvis"\n[wake]\nthreads = 1\n', "x")
    gate = setup.wake_gate(cfg)
    assert gate.detector.names == ["alexa", "hey_jarvis"]
    assert gate.pre_roll_samples == gate.detector.context_samples == 31680
    pcm, rate = read_wav(WAKE / "alexa_en-us.wav")
    pcm = bytes(2 * rate) + pcm + bytes(3 * 2 * rate)
    detections = []
    for i in range(0, len(pcm) - 640 + 1, 640):
        detections += gate.process(pcm[i : i + 640], i / 2 / rate)
    assert [d.name for d in detections] == ["alexa"]
    gate.detector.close()


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_run_stops_at_a_bad_wake_model_with_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    toml, expected = bad_wake_input(kind, tmp_path)
    config = tmp_path / "edgevoice.toml"
    config.write_text('[voicelive]\nendpoint = "ws://127.0.0.1:9"\n'
                      '[service]\nlog_target = "stderr"\nstatus_socket = ""\n' + toml)
    env = {k: v for k, v in os.environ.items() if k not in MANAGER_VARS}
    env.update({"VOICELIVE_API_KEY": "test-key", "PYTHONPATH": os.pathsep.join(sys.path)})
    res = subprocess.run([sys.executable, "-m", "edgevoice", "run", "--config", str(config)],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1, res.stderr
    # The key path is the config's (check-config's) way; the daemon's line names the word.
    assert expected.removeprefix("wake.models[0].") in lines[0], lines
    assert "Traceback" not in res.stderr
