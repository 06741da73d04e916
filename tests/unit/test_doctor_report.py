"""The doctor's levels and verdict: silence is -inf dBFS in text and null in JSON; a check
skipped on request passes, one skipped because the config failed does not; redaction."""

from __future__ import annotations

import json
import math

import numpy as np

from edgevoice.secrets import Secret, protect
from edgevoice.service.doctor import Check, _finite, _level, format_check, passed


def test_levels_of_silence_speech_and_a_clipped_square() -> None:
    assert _level(np.zeros(1600, "<i2")) == (-math.inf, -math.inf, 0.0)
    rms, peak, clipped = _level(np.full(1600, 3277, "<i2"))  # 0.1 of full scale
    assert round(rms) == -20 and round(peak) == -20 and clipped == 0.0
    square = np.tile(np.array([32767, -32768], "<i2"), 800)
    assert _level(square)[2] == 1.0
    assert json.dumps({"rms": _finite(-math.inf), "x": _finite(-20.04)},
                      allow_nan=False) == '{"rms": null, "x": -20.0}'


def test_the_verdict_and_the_lines() -> None:
    ok = Check("config", "ok", "valid")
    asked = Check("speaker", "skip", "skipped (--skip)")
    assert passed([ok, asked], frozenset({"speaker"}))
    assert not passed([ok, Check("speaker", "skip", "not checked: the config is not valid")])
    assert not passed([ok, Check("microphone", "warn", "silent", "unmute it")])
    line = format_check(Check("tools", "fail", "broker down", "start it"))
    assert line.splitlines() == ["fail  tools       broker down", " " * 18 + "fix: start it"]
    assert format_check(ok) == "ok    config      valid"


def test_a_registered_secret_never_reaches_a_line() -> None:
    key = "doctor-unit-secret-9f8e7d6c5b4a"
    protect(Secret(key))
    check = Check("endpoint", "fail", f"rejected {key}", f"replace {key}")
    assert key not in format_check(check) and key not in json.dumps(check.as_dict())
