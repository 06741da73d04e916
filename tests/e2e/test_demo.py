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

import pytest

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
