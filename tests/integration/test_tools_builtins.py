"""Built-in tools: get_time, stop_conversation (the daemon's hook) and set_volume with the real
amixer — on a real ALSA mixer control without a sound card (the ALSA ``pulse`` ctl plugin on
a private PulseAudio server), and failing on a card that is not there."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgevoice.tools import ToolBox, ToolSpec
from support import wait_for

pytestmark = pytest.mark.timeout(30)


def builtin(kind: str, name: str | None = None, **fields: Any) -> ToolSpec:
    return ToolSpec.model_validate({"name": name or kind, "builtin": kind, **fields})


async def test_get_time_is_local_iso_time() -> None:
    box = ToolBox([builtin("get_time")])
    before = dt.datetime.now().astimezone().replace(microsecond=0)
    output = json.loads(await box.call("c1", "get_time", ""))
    after = dt.datetime.now().astimezone()
    when = dt.datetime.fromisoformat(output["time"])
    assert output["ok"] is True and when.utcoffset() == before.utcoffset()
    assert before <= when <= after
    assert output["weekday"] == when.strftime("%A")


async def test_stop_conversation_calls_the_daemons_hook_once() -> None:
    stopped: list[str] = []
    box = ToolBox([builtin("stop_conversation")], stop_conversation=lambda: stopped.append("x"))
    assert json.loads(await box.call("c1", "stop_conversation", "{}")) == {"ok": True}
    await box.call("c1", "stop_conversation", "{}")
    assert stopped == ["x"]

    async def async_hook() -> None:
        await asyncio.sleep(0)
        stopped.append("async")

    box = ToolBox([builtin("stop_conversation", "bye")], stop_conversation=async_hook)
    assert json.loads(await box.call("c2", "bye", "{}")) == {"ok": True}
    assert stopped == ["x", "async"]

    box = ToolBox([builtin("stop_conversation")])  # the daemon gave no hook
    assert json.loads(await box.call("c3", "stop_conversation", "{}")) == {
        "ok": False, "error": "stop_conversation is not available on this device"}


async def test_set_volume_fails_clearly_without_the_card() -> None:
    if shutil.which("amixer") is None:
        pytest.fail("amixer is not installed: run scripts/setup (Debian package alsa-utils)")
    box = ToolBox([builtin("set_volume", mixer={"device": "hw:9", "control": "Master"})])
    output = json.loads(await box.call("c1", "set_volume", '{"percent": 40}'))
    assert output["ok"] is False
    assert output["error"].startswith("amixer -D hw:9 'Master': ")
    assert "Mixer attach hw:9 error" in output["error"]  # amixer's own reason


async def test_set_volume_validates_its_argument() -> None:
    box = ToolBox([builtin("set_volume")])
    cases = [('{"percent": 101}', "percent: 101 is greater than the maximum of 100"),
             ('{"percent": -1}', "percent: -1 is less than the minimum of 0"),
             ('{"percent": "50"}', "percent: '50' is not of type 'integer'"),
             ('{}', "'percent' is a required property")]
    for i, (arguments, error) in enumerate(cases):
        output = json.loads(await box.call(f"c{i}", "set_volume", arguments))
        assert output == {"ok": False, "error": f"invalid arguments: {error}",
                          "field": "percent"}


class PulseServer:
    """A private PulseAudio server with a null sink (no sound card needed)."""

    def __init__(self) -> None:
        # Not tmp_path: a unix socket path must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="ev-tools-pulse-"))
        runtime = self.root / "run"
        runtime.mkdir(mode=0o700)
        config = self.root / "server.pa"
        config.write_text(
            "load-module module-null-sink sink_name=toolstest\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={runtime}/native\n")
        self.server = f"unix:{runtime}/native"
        self.env = {"HOME": str(self.root), "XDG_RUNTIME_DIR": str(runtime),
                    "PULSE_RUNTIME_PATH": str(runtime), "PULSE_SERVER": self.server}
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--system=false",
             "--use-pid-file=no", "-F", str(config)],
            env={"PATH": "/usr/bin:/bin", **self.env}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log)
        log.close()
        wait_for(lambda: self.amixer("sget", "Master").returncode == 0, timeout=10,
                 what="the PulseAudio server's mixer")

    def amixer(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.proc.poll() is None, (self.root / "server.log").read_text()
        return subprocess.run(["amixer", "-D", "pulse", *args], capture_output=True, text=True,
                              timeout=5, env={"PATH": "/usr/bin:/bin", **self.env})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pulse_mixer(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    for tool in ("pulseaudio", "amixer"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it, except next to "
                        f"PipeWire's pulse server)")
    server = PulseServer()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)  # amixer, run by the ToolBox, finds this server
    yield server
    server.stop()


async def test_set_volume_sets_a_real_mixer_control(pulse_mixer: PulseServer) -> None:
    box = ToolBox([builtin("set_volume", mixer={"device": "pulse", "control": "Master"})])
    assert json.loads(await box.call("c1", "set_volume", '{"percent": 40}')) == {
        "ok": True, "volume_percent": 40}
    assert "[40%]" in pulse_mixer.amixer("sget", "Master").stdout
    assert json.loads(await box.call("c2", "set_volume", '{"percent": 0}')) == {
        "ok": True, "volume_percent": 0}
    assert "[0%]" in pulse_mixer.amixer("sget", "Master").stdout
    bad = ToolBox([builtin("set_volume", mixer={"device": "pulse", "control": "Nope"})])
    output = json.loads(await bad.call("c3", "set_volume", '{"percent": 10}'))
    assert output["ok"] is False and output["error"].startswith("amixer -D pulse 'Nope': ")
