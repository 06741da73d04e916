"""`edgevoice doctor` as a new user runs it: a real process against the demo's virtual sound
card (paced FIFOs), the loopback simulator with an API key, a real mosquitto, a status socket
served by the daemon's own StatusServer and a staged unit directory. Every check passes on a
working set-up; on a broken one each failing part is named with its fix, and the API key is
never printed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevoice.audio.convert import read_wav, resample
from edgevoice.devkit.demo import Rig
from edgevoice.devkit.simulator import Simulator
from edgevoice.service.status import StatusServer
from edgevoice.util import data_path
from support import Broker, free_port

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
KEY = "doctor-test-key-0123456789abcdef"


def clip(name: str) -> bytes:
    pcm, rate = read_wav(data_path(name))
    return resample(pcm, rate, 16000)


def config(tmp: Path, *, endpoint: str, broker_port: int, program: str) -> Path:
    path = tmp / "edgevoice.toml"
    path.write_text(f"""
[audio]
input_device = "edgevoice_mic"
output_device = "edgevoice_speaker"

[voicelive]
endpoint = "{endpoint}"

[service]
status_socket = "{tmp / 'run' / 'status.sock'}"

[[tools]]
name = "all_off"
description = "Switch everything off."
command = {{ argv = ["{program}"] }}

[[tools]]
name = "hall_light"
description = "Switch the hall light on."
mqtt = {{ host = "127.0.0.1", port = {broker_port}, topic = "hall/set", payload = "ON" }}
""")
    return path


def units(tmp: Path) -> Path:
    """A unit directory as install-service and `systemctl enable` leave it."""
    unit_dir = tmp / "units"
    (unit_dir / "multi-user.target.wants").mkdir(parents=True)
    shutil.copy(ROOT / "systemd" / "edgevoice.service", unit_dir / "edgevoice.service")
    (unit_dir / "multi-user.target.wants" / "edgevoice.service").symlink_to(
        unit_dir / "edgevoice.service")
    return unit_dir


async def doctor(tmp: Path, cfg: Path, unit_dir: Path, key: str | None,
                 *args: str) -> tuple[int, str]:
    """Runs the doctor; ``key`` in $VOICELIVE_API_KEY, else none in the environment."""
    env = dict(os.environ)  # the rig's ALSA config is in os.environ
    env.pop("VOICELIVE_API_KEY", None)
    if key is not None:
        env["VOICELIVE_API_KEY"] = key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgevoice", "doctor", "--config", str(cfg), "--unit-dir",
        str(unit_dir), *args, cwd=tmp, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, out.decode()


async def test_every_check_passes_on_a_working_device(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    sim = Simulator(api_key=KEY, tts=False)
    await sim.start()
    try:
        cfg = config(tmp_path, endpoint=sim.url, broker_port=broker.port, program="/bin/true")
        snapshot = {"state": "idle", "wake_words": ["hey_jarvis"]}
        with Rig(tmp_path / "rig") as rig:
            # Speech for the level, then the wake word past the detector's warm-up.
            rig.mic.feed(clip("question.wav") + bytes(3 * 32000) + clip("demo/wake.wav")
                         + bytes(32000) + clip("demo/wake.wav"))
            async with StatusServer(tmp_path / "run" / "status.sock", lambda: snapshot):
                # The key where install-service keeps it, as a user runs the doctor.
                installed = tmp_path / "api-key"
                installed.write_text(KEY + "\n")
                installed.chmod(0o600)
                code, out = await doctor(tmp_path, cfg, units(tmp_path), None, "--json",
                                         "--listen", "2", "--wake", "20",
                                         "--installed-key", str(installed))
            speaker = np.frombuffer(rig.speaker_pcm(), "<i2")
    finally:
        await sim.close()
        broker.stop()
    report = json.loads(out[out.index("{"):])  # after TFLite's own line on stderr
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0 and report["ok"], out
    assert [c["status"] for c in report["checks"]] == ["ok"] * 8, out
    mic = checks["microphone"]["data"]
    assert mic["device"] == "edgevoice_mic" and -45 < mic["rms_dbfs"] < -6, mic
    assert len(mic["levels"]) >= 3 and mic["clipped_share"] == 0
    assert checks["wake word"]["data"]["detected"] == "hey_jarvis"
    assert np.abs(speaker.astype(np.int32)).max() > 1000  # the earcon reached the speaker
    assert "session.updated" in checks["endpoint"]["detail"]
    assert checks["tools"]["detail"].startswith("2 tool(s): all_off: /bin/true, hall_light: "
                                                f"broker 127.0.0.1:{broker.port}")
    assert checks["service"]["data"]["status"] == "listening for 'hey jarvis'"
    assert KEY not in out


async def test_a_broken_device_gets_a_line_and_a_fix_per_problem(tmp_path: Path) -> None:
    sim = Simulator(api_key=KEY, tts=False)
    await sim.start()
    wrong = "wrong-key-fedcba9876543210"
    try:
        cfg = config(tmp_path, endpoint=sim.url, broker_port=free_port(),
                     program="/nonexistent/lights-off")
        with Rig(tmp_path / "rig"):  # a microphone that only hears silence
            code, out = await doctor(tmp_path, cfg, tmp_path / "no-units", wrong,
                                     "--listen", "1", "--timeout", "3",
                                     "--installed-key", str(tmp_path / "none"),
                                     "--skip", "speaker", "--skip", "wake")
    finally:
        await sim.close()
    assert code == 1, out
    lines = out.splitlines()

    def line(status: str, name: str) -> str:
        found = [i for i, text in enumerate(lines) if text.startswith(f"{status:<5} {name} ")]
        assert found, (status, name, out)
        return lines[found[0]] + "\n" + lines[found[0] + 1]

    assert "silent" in line("warn", "microphone") and "fix: unmute" in line("warn", "microphone")
    assert any(text.strip().startswith("microphone  -inf dBFS |") for text in lines), out
    assert "skipped (--skip)" in line("skip", "speaker")
    endpoint = line("fail", "endpoint")
    assert "authentication failed (HTTP 401)" in endpoint and "fix: check the API key" in endpoint
    tools = line("fail", "tools")
    assert "tools[0] (all_off): program /nonexistent/lights-off not found" in tools
    assert "tools[1] (hall_light): MQTT broker 127.0.0.1:" in tools
    assert "fix: install the program" in tools and "start the broker" in tools
    assert "not installed" in line("fail", "service")
    assert line("ok", "config") and line("ok", "ducking")
    assert lines[-1] == "to fix: microphone, endpoint, tools, service"
    assert wrong not in out and KEY not in out


async def test_a_clipped_microphone_is_a_warning(tmp_path: Path) -> None:
    cfg = config(tmp_path, endpoint="ws://127.0.0.1:9", broker_port=1, program="/bin/true")
    square = np.tile(np.array([32767] * 8 + [-32768] * 8, "<i2"), 16000 * 4 // 16)
    with Rig(tmp_path / "rig") as rig:
        rig.mic.feed(square.tobytes())
        code, out = await doctor(tmp_path, cfg, tmp_path, None, "--json", "--listen", "1.5",
                                 *[a for c in ("speaker", "wake word", "endpoint", "tools",
                                               "service") for a in ("--skip", c)])
    report = json.loads(out[out.index("{"):])
    mic = report["checks"][1]
    assert code == 1 and not report["ok"]
    assert mic["status"] == "warn" and "clipped" in mic["detail"], mic
    assert mic["data"]["clipped_share"] > 0.5 and "lower the capture gain" in mic["fix"]
    assert [c["status"] for c in report["checks"]] == ["ok", "warn", "skip", "skip", "skip", "ok",
                                                        "skip", "skip"]
