"""Device listing and selection on real PortAudio over virtual ALSA PCMs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice.audio.devices import (
    DeviceError,
    NoAudioDevices,
    devices_command,
    enumerate_devices,
    select_device,
)
from edgevoice.devkit.virtual import VirtualAlsa
from support import use_alsa as use


@pytest.fixture
def virtual(tmp_path, monkeypatch):
    (tmp_path / "mic.raw").write_bytes(bytes(3200))
    va = VirtualAlsa(tmp_path).capture("testmic", tmp_path / "mic.raw")
    va.playback("testspeaker", tmp_path / "out.raw").default("testmic", "testspeaker")
    use(va, monkeypatch)
    return va


def test_lists_virtual_devices_and_marks_selection(virtual):
    names = [d.name for d in enumerate_devices()]
    assert {"testmic", "testspeaker", "default"} <= set(names)
    out = io.StringIO()
    assert devices_command("testmic", "SPEAKER", out) == 0
    rows = {line.split()[1]: line for line in out.getvalue().splitlines()[1:]}
    assert rows["testmic"].endswith("<- input")
    assert rows["testspeaker"].endswith("<- output")
    assert "<-" not in rows["default"]


def test_selection_rules(virtual):
    devices = enumerate_devices()
    assert select_device("default", "input", devices).name == "default"
    assert select_device("TESTMIC", "input", devices).name == "testmic"
    assert select_device("speak", "output", devices).name == "testspeaker"
    with pytest.raises(DeviceError, match="ambiguous.*'testmic'.*'testspeaker'"):
        select_device("test", "output", devices)


def test_not_found_lists_devices(virtual):
    with pytest.raises(DeviceError) as err:
        select_device("USB Audio", "input")
    msg = str(err.value)
    assert "'USB Audio' not found" in msg and "'testmic'" in msg and "'default'" in msg
    out = io.StringIO()
    assert devices_command("USB Audio", "default", out) == 1
    assert "error: input device 'USB Audio' not found" in out.getvalue()


def _has_sound_card() -> bool:
    cards = Path("/proc/asound/cards")
    return cards.exists() and "no soundcards" not in cards.read_text()


@pytest.mark.skipif(_has_sound_card(), reason="a real sound card is present")
def test_no_devices_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch):
    env = use(VirtualAlsa(tmp_path), monkeypatch)  # an ALSA config with no PCM at all
    assert enumerate_devices() == []
    with pytest.raises(NoAudioDevices, match="no audio devices found"):
        select_device("default", "input")
    # As the CLI runs it: exit code 1, one clear line, no traceback, no ALSA noise.
    code = ("import sys; from edgevoice.audio.devices import devices_command; "
            "sys.exit(devices_command('default', 'default', sys.stdout))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=30)
    assert proc.returncode == 1
    assert proc.stdout.startswith("error: no audio devices found")
    assert proc.stderr == ""
