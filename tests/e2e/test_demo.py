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

# The demo's recording plays into the daemon in real time (about 35 s).
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
    res = subprocess.run(
        [sys.executable, "-m", "edgevoice", "demo", "--json", "--output",
         str(tmp_path / "reply.wav")],
        capture_output=True, text=True, timeout=150, cwd=tmp_path,
        env={**os.environ, "EDGEVOICE_CONFIG": str(config)})
    assert res.returncode == 0, res.stdout + res.stderr
    names = [json.loads(line)["event"] for line in res.stdout.splitlines()]
    assert TelemetryName.TOOL_CALL in names  # the model did ask for set_light
    assert not runs.exists(), runs.read_text()  # neither the tool nor a ducking hook ran
