"""``edgevoice doctor`` on offline commands: the recogniser really built from the config's
sentences, and espeak-ng (the device's own voice) looked for on PATH."""

from __future__ import annotations

import pytest

from edgevoice.config import parse_config
from edgevoice.service.doctor import Options, check_tools

LIGHT = """
[conversation]
offline_after_s = 3.0

[[tools]]
name = "hall_light"
parameters = { type = "object", properties = { state = { type = "string", enum = ["on", "off"] } }, required = ["state"] }
command = { argv = ["/bin/true", "{state}"] }
sentences = ["turn [the] hall light {state}"]
slots = { state = ["on", "off"] }
"""


async def test_the_recogniser_is_built_and_said_ready() -> None:
    check = await check_tools(parse_config(LIGHT, "edgevoice.toml"), Options())
    assert check.status == "ok", check
    assert "offline (auto): sentences of 1 tool(s) understood on the device" in check.detail


async def test_offline_off_is_not_checked_and_a_missing_voice_fails(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    off = parse_config(LIGHT.replace("offline_after_s = 3.0", 'offline = "off"'),
                       "edgevoice.toml")
    assert "offline" not in (await check_tools(off, Options())).detail
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng (and nothing else) on PATH
    check = await check_tools(parse_config(LIGHT, "edgevoice.toml"), Options())
    assert check.status == "fail" and "espeak-ng" in check.detail
    assert "apt-get install espeak-ng" in check.fix
