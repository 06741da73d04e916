"""Built-in tools: get_time, stop_conversation (the daemon's hook) and set_volume with the real
amixer — on a real ALSA mixer control without a sound card (the ALSA ``pulse`` ctl plugin on
a private PulseAudio server), and failing on a card that is not there."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
from typing import Any

import pytest

from edgevoice.tools import ToolBox, ToolSpec
from support import PulseServer, need_tool

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
    assert output["clock"] == when.strftime("%H:%M")  # what an offline answer says


async def test_stop_conversation_calls_the_daemons_hook_once() -> None:
    stopped: list[str] = []
    box = ToolBox([builtin("stop_conversation")], stop_conversation=lambda: stopped.append("x"))
    assert json.loads(await box.call("c1", "stop_conversation", "{}")) == {"ok": True}
    await box.call("c1", "stop_conversation", "{}")
    assert stopped == ["x"]

    async def async_hook() -> None:
        await asyncio.sleep(0)  # a hook that really suspends: the box must await it
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


_PULSE_KEYS = ("HOME", "XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH", "PULSE_SERVER")


def amixer(pulse: PulseServer, *args: str) -> subprocess.CompletedProcess[str]:
    """amixer on the ALSA ``pulse`` ctl plugin, talking to the private server."""
    return subprocess.run(["amixer", "-D", "pulse", *args], capture_output=True, text=True,
                          timeout=5, env=pulse.env)


@pytest.fixture
def pulse_mixer(pulse: PulseServer, monkeypatch: pytest.MonkeyPatch) -> PulseServer:
    need_tool("amixer", "apt-get install alsa-utils (or run scripts/setup)")
    for key in _PULSE_KEYS:
        monkeypatch.setenv(key, pulse.env[key])  # amixer, run by the ToolBox, finds this server
    return pulse


async def test_set_volume_sets_a_real_mixer_control(pulse_mixer: PulseServer) -> None:
    box = ToolBox([builtin("set_volume", mixer={"device": "pulse", "control": "Master"})])
    assert json.loads(await box.call("c1", "set_volume", '{"percent": 40}')) == {
        "ok": True, "volume_percent": 40}
    assert "[40%]" in amixer(pulse_mixer, "sget", "Master").stdout
    assert json.loads(await box.call("c2", "set_volume", '{"percent": 0}')) == {
        "ok": True, "volume_percent": 0}
    assert "[0%]" in amixer(pulse_mixer, "sget", "Master").stdout
    bad = ToolBox([builtin("set_volume", mixer={"device": "pulse", "control": "Nope"})])
    output = json.loads(await bad.call("c3", "set_volume", '{"percent": 10}'))
    assert output["ok"] is False and output["error"].startswith("amixer -D pulse 'Nope': ")
