"""The listening parts are built from the config, and the wake word works through them."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.config import parse_config
from edgevoice.listen import setup
from edgevoice.listen.wake import WakeModelError

WAKE = Path(__file__).resolve().parents[1] / "fixtures" / "wake"


def test_default_config_detects_hey_jarvis_through_the_gate() -> None:
    cfg = parse_config("", "defaults")
    gate = setup.wake_gate(cfg)
    clip = next(WAKE.glob("*jarvis*.wav"))
    pcm, rate = read_wav(clip)
    assert rate == 16000
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
