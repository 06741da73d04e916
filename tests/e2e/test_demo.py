"""`edgevoice demo` end to end: a real process, the in-process simulator, a real reply WAV."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path


def test_demo_prints_the_timeline_and_writes_the_reply(tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    res = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--json", "--output", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    entries = [json.loads(line) for line in res.stdout.splitlines()]
    names = [e["event"] for e in entries]
    for expected in ("connected", "session ready", "speech started", "speech stopped",
                     "first reply audio", "reply done", "wrote"):
        assert expected in names, names
    order = [names.index(n) for n in ("connected", "session ready", "speech started",
                                      "speech stopped", "first reply audio", "reply done")]
    assert order == sorted(order)
    times = [e["t_ms"] for e in entries]
    assert times == sorted(times)
    started = entries[names.index("speech started")]
    assert 0 <= started["audio_start_ms"] <= 600  # the question starts 0.3 s into the clip
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1
        assert w.getnframes() > 24000  # more than a second of spoken reply


def test_demo_text_timeline(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--output", str(tmp_path / "r.wav")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert " ms  first reply audio" in res.stdout and " ms  reply done" in res.stdout
