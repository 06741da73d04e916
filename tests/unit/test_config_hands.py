"""The [push_to_talk], [[triggers]] and [feedback] config: each bad entry is one clear line
of `edgevoice check-config` naming its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgevoice.cli import main
from edgevoice.config import ConfigError, parse_config


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "edgevoice.toml"
    path.write_text(text)
    code = main(["check-config", "--config", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.toml")
    return info.value.errors


def test_a_full_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ('[push_to_talk]\nmode = "hold"\nend_follow_up = false\n'
            '[[triggers]]\nsource = "gpio"\npin = 17\nbounce_ms = 30\n'
            '[[triggers]]\nsource = "gpio"\npin = 27\naction = "mute"\nswitch = true\n'
            f'[[triggers]]\nsource = "input"\ndevice = "{tmp_path}"\nkey = "KEY_MUTE"\n'
            'action = "mute"\n'
            '[feedback]\non_listening = ["true"]\non_error = ["/bin/echo", "error"]\n'
            '[feedback.light]\npins = [5, 6, 13]\n'
            '[feedback.light.states.thinking]\ncolor = "#ff8800"\npattern = "pulse"\n')
    code, out = check(tmp_path, text, capsys)
    assert code == 0, out
    assert "valid, 3 trigger(s)" in out
    cfg = parse_config(text, "x")
    assert cfg.push_to_talk.mode == "hold" and cfg.feedback.hooks()["error"][0] == "/bin/echo"
    assert cfg.feedback.light is not None
    assert cfg.feedback.light.look("thinking").rgb() == (1.0, 0x88 / 255, 0.0)
    assert cfg.feedback.light.look("listening").color == "blue"  # a default


def test_a_pin_used_twice_names_both_keys() -> None:
    text = ('[[tools]]\nname = "fan"\ngpio = { pin = "GPIO17", do = "on" }\n'
            '[[triggers]]\nsource = "gpio"\npin = 17\n'
            '[[triggers]]\nsource = "gpio"\npin = "BCM22"\naction = "mute"\n'
            '[feedback.light]\npin = 22\n')
    [line] = errors(text)
    assert "triggers[0].pin: pin 17 is already used by tool fan" in line
    assert "feedback.light.pin: pin 22 is already used by triggers[1].pin" in line


def test_an_unknown_key_name() -> None:
    [line] = errors('[[triggers]]\nsource = "input"\ndevice = "Wheel"\nkey = "KEY_VOICECMD"\n')
    assert line.startswith("x.toml: triggers[0].key: unknown key 'KEY_VOICECMD'")


def test_a_hook_program_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o644)
    lines = errors(f'[feedback]\non_listening = ["{script}"]\non_idle = ["no-such-prog-x"]\n'
                   'on_speaking = ["relative/prog"]\n')
    assert f"x.toml: feedback.on_listening: {script} is not executable" in lines
    assert any(line.startswith("x.toml: feedback.on_idle: program 'no-such-prog-x' not found")
               for line in lines)
    assert any("feedback.on_speaking: program must be an absolute path" in line for line in lines)


def test_shapes_of_triggers_and_lights() -> None:
    lines = errors('[[triggers]]\nsource = "gpio"\n'
                   '[[triggers]]\nsource = "input"\n'
                   '[[triggers]]\nsource = "gpio"\npin = 4\nswitch = true\n'
                   '[feedback.light]\npin = 9\n'
                   '[feedback.light.states.listening]\ncolor = "mauve"\n')
    text = "\n".join(lines)
    assert 'triggers[0]: source = "gpio" needs a pin' in text
    assert 'triggers[1]: source = "input" needs a device' in text
    assert 'triggers[2]: switch = true is for action = "mute"' in text
    [both] = errors('[feedback.light]\npin = 9\npins = [1, 2, 3]\n')
    assert "feedback.light: set pin (an LED) or pins = [red, green, blue]" in both
    assert "feedback.light.states.listening.color: must be #rrggbb" in text
    assert errors('[push_to_talk]\nmode = "tap"\n')[0].startswith(
        "x.toml: push_to_talk.mode: must be one of")


def test_a_missing_input_device_is_a_warning_not_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = check(tmp_path, '[[triggers]]\nsource = "input"\ndevice = "Steering Wheel"\n'
                      f'[[triggers]]\nsource = "input"\ndevice = "{tmp_path}/event9"\n',
                      capsys)
    assert code == 0, out
    assert ("warning: triggers[0].device: no input device named 'Steering Wheel' now "
            "(edgevoice run waits for it)") in out
    assert f"warning: triggers[1].device: no such input device {tmp_path}/event9 now" in out
