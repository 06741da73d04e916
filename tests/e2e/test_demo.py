"""`edgevoice demo` end to end: a real process running the whole daemon on the bundled virtual
sound card, the in-process simulator, the recording played in real time, a real reply WAV.
The whole timeline of the bundled demo is checked where the demo runs from the installed
wheel (``tests/integration/test_packaging.py``); here, what a config must not change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevoice.audio.convert import read_wav
from edgevoice.conversation.telemetry import TelemetryName
from support import stop_process

# The demo's recording plays into the daemon in real time.
pytestmark = [pytest.mark.realtime, pytest.mark.slow]


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
    # A script whose first answer calls set_light: the demo is stopped once its output went
    # back (the rest of the recording would add nothing but half a minute).
    script = tmp_path / "script.toml"
    script.write_text('[[turn]]\nuser = "turn on the light"\n'
                      'calls = [{ name = "set_light", arguments = {} }]\n'
                      'after_tools = "I cannot."\n')
    demo = subprocess.Popen(
        [sys.executable, "-m", "edgevoice", "demo", "--json", "--script", str(script),
         "--output", str(tmp_path / "reply.wav")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "EDGEVOICE_CONFIG": str(config)})
    names: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            names.append(json.loads(line)["event"])
            if names[-1] == TelemetryName.ASSISTANT_SAID and TelemetryName.TOOL_CALL in names:
                break  # the reply after the tool's output: the call is over
    finally:
        stop_process(demo)
    # The model did ask for set_light, and spoke on after its output ("unknown tool").
    assert TelemetryName.TOOL_CALL in names and names[-1] == TelemetryName.ASSISTANT_SAID, names
    assert not runs.exists(), runs.read_text()  # neither the tool nor a ducking hook ran


def test_offline_demo_understands_runs_and_answers_on_the_device(tmp_path: Path) -> None:
    """``demo --offline``: no service answers (connections are refused); the wake word, the
    command recognised on the device, the demo tool run with its arguments, the answer said
    on the device (heard in the reply WAV), and exit 0. No follow-up window: the demo ends
    with the answer."""
    config = tmp_path / "edgevoice.toml"
    config.write_text("[conversation]\nfollow_up_s = 0\n")
    reply = tmp_path / "reply.wav"
    done = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--offline", "--json", "--config",
         str(config), "--output", str(reply)],
        capture_output=True, text=True, cwd=tmp_path, timeout=90)
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, (done.stdout, done.stderr)
    events = [e["event"] for e in entries]

    def first(name: str) -> dict:
        return next(e for e in entries if e["event"] == name)

    order = [TelemetryName.WAKE, TelemetryName.OFFLINE, TelemetryName.OFFLINE_COMMAND,
             TelemetryName.TOOL_CALL, TelemetryName.LOCAL_REPLY, TelemetryName.IDLE]
    assert [events.index(n) for n in order] == sorted(events.index(n) for n in order), events
    assert first(TelemetryName.OFFLINE)["why"] == "the service is unreachable"
    command = first(TelemetryName.OFFLINE_COMMAND)
    assert command["tool"] == "set_light"
    assert json.loads(command["arguments"]) == {"room": "kitchen", "state": "on"}
    call = first(TelemetryName.TOOL_CALL)
    assert call["source"] == "offline" and json.loads(call["arguments"]) == \
        {"room": "kitchen", "state": "on"}
    said = first(TelemetryName.LOCAL_REPLY)
    assert said["text"] == "Offline. The kitchen light is on."
    assert TelemetryName.SESSION_READY not in events  # the service was never reached
    # The answer was heard: about a second and a half of speech after the local reply.
    pcm, rate = read_wav(reply)
    samples = np.abs(np.frombuffer(pcm, "<i2").astype(np.float32))
    # The WAV starts with the speaker, after the daemon was built (the first entries).
    start = max(0, int((said["t_ms"] - first("listening")["t_ms"]) / 1000 * rate) - rate)
    level = samples[start:start + 4 * rate]
    assert (level > 1000).sum() > rate // 2, "the local answer was not played"
