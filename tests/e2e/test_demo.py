"""`edgevoice demo` end to end: a real process running the whole daemon on the bundled virtual
sound card, the in-process simulator, the recording played in real time, a real reply WAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from edgevoice.conversation.telemetry import TelemetryName

# The demo's recording plays into the daemon in real time (about 35 s).
pytestmark = [pytest.mark.realtime, pytest.mark.slow]


def test_demo_runs_the_daemon_through_every_kind_of_turn(tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    res = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--json", "--output", str(out)],
        capture_output=True, text=True, timeout=150, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    entries = [json.loads(line) for line in res.stdout.splitlines()]
    names = [e["event"] for e in entries]
    times = [e["t_ms"] for e in entries]
    assert times == sorted(times)

    # The wake word; the first turn answered, then idle, then the second conversation,
    # started by the demo's virtual push-to-talk button.
    assert names.count(TelemetryName.WAKE) == 1, names
    first_idle = names.index(TelemetryName.IDLE)
    assert names.index(TelemetryName.WAKE) < names.index(TelemetryName.FIRST_REPLY_AUDIO) < first_idle
    assert names.count(TelemetryName.PUSH_TO_TALK) == 1, names
    press = entries[names.index(TelemetryName.PUSH_TO_TALK)]
    assert press["source"] == "demo button" and first_idle < names.index(TelemetryName.PUSH_TO_TALK)
    # The feedback states, in order: each conversation listens, thinks, speaks, and the
    # second one (after the press) is the one that calls the tool.
    states = [e["state"] for e in entries if e["event"] == TelemetryName.STATE]
    assert states[:5] == ["listening", "thinking", "speaking", "listening", "idle"], states
    assert states[5:8] == ["listening", "thinking", "speaking"], states
    assert states[-1] == "idle"
    second = [e["state"] for e in entries[names.index(TelemetryName.PUSH_TO_TALK):]
              if e["event"] == TelemetryName.STATE]
    assert second[0] == "listening" and "speaking" in second
    # The request calls the tool; without a declared tool the model gets an error output and
    # speaks on (the reply after the tool output is what the user interrupts).
    call = entries[names.index(TelemetryName.TOOL_CALL)]
    assert call["name"] == "set_light"
    barge = entries[names.index(TelemetryName.BARGE_IN)]
    assert barge["by"] == "local speech" and barge["t_ms"] > call["t_ms"]
    truncate = entries[names.index(TelemetryName.TRUNCATE)]
    assert truncate["audio_end_ms"] > 500
    assert TelemetryName.SERVICE_ERROR not in names, [e for e in entries if e["event"] == TelemetryName.SERVICE_ERROR]
    # The interruption is the user's next turn, answered; the demo ends idle.
    said = [e["text"] for e in entries if e["event"] == TelemetryName.USER_SAID]
    assert len(said) == 3 and "Stop" in said[-1]
    assert names[-1] == "wrote" and names[-2] == "usage" and TelemetryName.IDLE in names[-4:]

    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    voiced_s = np.count_nonzero(np.abs(audio) > 300) / 24000
    assert voiced_s > 5.0  # three spoken replies (one cut short) and two chimes (wake, button)


def test_the_installed_configs_tools_and_ducking_never_run_in_the_demo(tmp_path: Path) -> None:
    """Without --config the demo declares no tools and no ducking, even when a config with
    both is found ($EDGEVOICE_CONFIG here, /etc/edgevoice on a device): the demo's model
    calls set_light, and that must not switch a real light (or, with --endpoint, let a real
    model reach real tools)."""
    record = Path(__file__).resolve().parents[1] / "fixtures" / "tools" / "record.py"
    runs = tmp_path / "runs.jsonl"
    hook = json.dumps([sys.executable, str(record), str(runs)])
    config = tmp_path / "installed.toml"
    config.write_text(
        f'[ducking]\nbackend = "command"\n[ducking.command]\nduck = {hook}\nunduck = {hook}\n'
        '[[tools]]\nname = "set_light"\ndescription = "Switch a light"\n'
        'parameters = { type = "object", properties = {}, additionalProperties = true }\n'
        f'command = {{ argv = {hook} }}\n')
    res = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--json", "--output",
         str(tmp_path / "reply.wav")],
        capture_output=True, text=True, timeout=150, cwd=tmp_path,
        env={**os.environ, "EDGEVOICE_CONFIG": str(config)})
    assert res.returncode == 0, res.stdout + res.stderr
    names = [json.loads(line)["event"] for line in res.stdout.splitlines()]
    assert TelemetryName.TOOL_CALL in names  # the model did ask for set_light
    assert not runs.exists(), runs.read_text()  # neither the tool nor a ducking hook ran
