"""[[tools]] in the config: every mistake named by key, what goes on the wire, the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevoice.config import ConfigError, load_config, parse_config
from edgevoice.config.tools import placeholders, render, whole_placeholder
from edgevoice.tools import ToolSpec, declared

ROOT = Path(__file__).resolve().parents[2]

ROOM = ('parameters = { type = "object", properties = { room = { type = "string", '
        'enum = ["hall", "kitchen"] } }, required = ["room"] }\n')


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "edgevoice.toml")
    return info.value.errors


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # the issue's own example
        ('[[tools]]\nname = "a"\nparameters = { type = "object", properties = {} }\n'
         'command = { argv = ["/usr/bin/light", "{room}"] }\n',
         "edgevoice.toml: tools[0].command: placeholder {room} is not a declared parameter"),
        ('[[tools]]\nname = "a"\nparameters = { type = "objekt" }\nbuiltin = "get_time"\n',
         "edgevoice.toml: tools[0].parameters: not a valid JSON Schema: type: 'objekt' is not "
         "valid under any of the given schemas"),
        ('[[tools]]\nname = "a"\nparameters = { type = "object", properties = { n = { type = '
         '"integer", minimum = "zero" } } }\nbuiltin = "get_time"\n',
         "edgevoice.toml: tools[0].parameters: not a valid JSON Schema: properties.n.minimum: "
         "'zero' is not of type 'number'"),
        ('[[tools]]\nname = "a"\nparameters = { type = "array" }\n'
         'command = { argv = ["/bin/true"] }\n',
         "edgevoice.toml: tools[0].parameters: must be an object schema (type = \"object\"), "
         "got type 'array'"),
        ('[[tools]]\nname = "a"\n',
         "edgevoice.toml: tools[0]: set exactly one action (command, gpio, mqtt, builtin), "
         "got none"),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\ncommand = { argv = ["/bin/date"] }\n',
         "edgevoice.toml: tools[0]: set exactly one action (command, gpio, mqtt, builtin), "
         "got command, builtin"),
        ('[[tools]]\nname = "a"\ncommand = { argv = [] }\n',
         "edgevoice.toml: tools[0].command.argv: must not be empty"),
        ('[[tools]]\nname = "a"\ncommand = "/bin/date"\n',
         "edgevoice.toml: tools[0].command: must be a table, got '/bin/date'"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'command = { argv = ["{room}"] }\n',
         "edgevoice.toml: tools[0].command.argv: the program (argv[0]) must not contain a "
         "placeholder"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'command = { argv = ["/bin/echo", "{room"] }\n',
         "edgevoice.toml: tools[0].command.argv: bad placeholder in '{room'"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'command = { argv = ["/bin/echo", "{room!r}"] }\n',
         "edgevoice.toml: tools[0].command.argv: placeholder in '{room!r}' must be a plain"),
        ('[[tools]]\nname = "a"\nparameters = { type = "object", properties = { room = { type '
         '= "string" } } }\ncommand = { argv = ["/bin/echo", "{room}"] }\n',
         "edgevoice.toml: tools[0].command: placeholder {room} names an optional parameter "
         "without a default"),
        ('[[tools]]\nname = "a"\ncommand = { argv = ["/bin/date"], cwd = "tmp" }\n',
         "edgevoice.toml: tools[0].command.cwd: must be an absolute path, got 'tmp'"),
        ('[[tools]]\nname = "a"\ncommand = { argv = ["/bin/date"], env = ["A B"] }\n',
         "edgevoice.toml: tools[0].command.env[0]: must match"),
        ('[[tools]]\nname = "a"\ncommand = { argv = ["/bin/date"], shell = true }\n',
         "edgevoice.toml: tools[0].command.shell: unknown key"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'gpio = { pin = 17, do = "{room}" }\n',
         "edgevoice.toml: tools[0].gpio: placeholder {room} in do must be a boolean or an enum "
         "of on, off, toggle, pulse"),
        ('[[tools]]\nname = "a"\ngpio = { pin = 17, do = "blink" }\n',
         "edgevoice.toml: tools[0].gpio: do must be one of on, off, toggle, pulse, pwm, read"),
        ('[[tools]]\nname = "a"\ngpio = { pin = 17, do = "pwm" }\n',
         'edgevoice.toml: tools[0].gpio: do = "pwm" needs a value'),
        ('[[tools]]\nname = "a"\ngpio = { pin = 17, do = "pwm", value = 2 }\n',
         "edgevoice.toml: tools[0].gpio: value must be between 0 and value_max (1), got 2"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'gpio = { pin = 18, do = "pwm", value = "{room}" }\n',
         "edgevoice.toml: tools[0].gpio: placeholder {room} in value must be a number parameter"),
        ('[[tools]]\nname = "a"\ngpio = { pin = 17, do = "read" }\n'
         '[[tools]]\nname = "b"\ngpio = { pin = "GPIO17", do = "on" }\n',
         "edgevoice.toml: (top level): GPIO17 is used as an input by tool a and as an output "
         "by tool b"),
        ('[[tools]]\nname = "a"\ngpio = { pin = 17, do = "on" }\n'
         '[[tools]]\nname = "b"\ngpio = { pin = 17, do = "off", active_high = false }\n',
         "edgevoice.toml: (top level): GPIO17: tools a and b disagree on active_high"),
        ('[[tools]]\nname = "a"\nmqtt = { topic = "home/#" }\n',
         "edgevoice.toml: tools[0].mqtt: topic must not contain MQTT wildcards (+, #)"),
        ('[[tools]]\nname = "a"\n' + ROOM + 'mqtt = { topic = "home/{place}/set" }\n',
         "edgevoice.toml: tools[0].mqtt: placeholder {place} is not a declared parameter"),
        ('[[tools]]\nname = "a"\n' + ROOM +
         'mqtt = { topic = "t", payload = { state = { where = "{place}" } } }\n',
         "edgevoice.toml: tools[0].mqtt: placeholder {place} is not a declared parameter"),
        ('[[tools]]\nname = "a"\ntimeout_s = 2\nmqtt = { topic = "t", reply_topic = "r" }\n',
         "edgevoice.toml: tools[0]: mqtt.reply_timeout_s (5) must not exceed timeout_s (2)"),
        ('[[tools]]\nname = "a"\nbuiltin = "reboot"\n',
         "edgevoice.toml: tools[0].builtin: must be one of"),
        ('[[tools]]\nname = "a"\nbuiltin = "set_volume"\n' + ROOM,
         "edgevoice.toml: tools[0]: builtin set_volume has fixed parameters: leave parameters "
         "out"),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\nmixer = { control = "PCM" }\n',
         'edgevoice.toml: tools[0]: mixer is only for builtin = "set_volume"'),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\nrate_limit = { max_calls = 0, '
         'per_s = 60 }\n',
         "edgevoice.toml: tools[0].rate_limit.max_calls: must be >= 1, got 0"),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\ntimeout_s = 0\n',
         "edgevoice.toml: tools[0].timeout_s: must be > 0"),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\nconfirm = "yes"\n',
         "edgevoice.toml: tools[0].confirm: must be true or false, got 'yes'"),
        ('[session.input_transcription]\nenabled = false\n[[tools]]\nname = "a"\n'
         'builtin = "get_time"\nconfirm = true\n',
         "edgevoice.toml: (top level): confirm = true (tool a) needs "
         "session.input_transcription.enabled"),
        ('[[tools]]\nname = "a"\nbuiltin = "get_time"\n[[tools]]\nname = "a"\n'
         'builtin = "get_time"\n',
         "edgevoice.toml: (top level): tool names must be unique, repeated: a"),
    ],
)
def test_tool_mistakes_name_the_key_and_the_reason(toml: str, expected: str) -> None:
    errors = errors_of(toml)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_tool_is_reported_at_once() -> None:
    errors = errors_of('[[tools]]\nname = "a"\n[[tools]]\nname = "b"\nbuiltin = "get_time"\n'
                       '[[tools]]\nname = "c"\ncommand = { argv = ["/bin/x", "{y}"] }\n')
    assert [e.split(":")[1].strip() for e in errors] == ["tools[0]", "tools[2].command"]


def test_a_full_tool_is_accepted_and_only_the_function_reaches_the_wire() -> None:
    cfg = parse_config("""
        [session]
        tool_choice = "auto"
        [[tools]]
        name = "set_light"
        description = "Switch a room's light"
        parameters = { type = "object", properties = { room = { type = "string", enum = ["hall", "kitchen"] }, level = { type = "integer", minimum = 0, maximum = 100, default = 100 } }, required = ["room"] }
        timeout_s = 3
        confirm = true
        rate_limit = { max_calls = 5, per_s = 60 }
        command = { argv = ["/usr/local/bin/light", "--room={room}", "{level}"], env = ["LANG"], cwd = "/", max_output_bytes = 512 }
        [[tools]]
        name = "volume"
        builtin = "set_volume"
        mixer = { device = "hw:0", control = "PCM" }
        [[tools]]
        name = "lamp"
        parameters = { type = "object", properties = { on = { type = "boolean" } }, required = ["on"] }
        gpio = { pin = 17, do = "{on}" }
        [[tools]]
        name = "heat"
        parameters = { type = "object", properties = { level = { type = "integer", minimum = 0, maximum = 3 } }, required = ["level"] }
        mqtt = { host = "broker.local", topic = "car/seat/set", payload = { level = "{level}" }, reply_topic = "car/seat/state", reply_timeout_s = 2 }
        """, "full.toml")
    light, volume, lamp, heat = cfg.tools
    assert light.action == "command" and light.command is not None
    assert light.command.argv[1] == "--room={room}" and light.rate_limit is not None
    assert volume.action == "builtin" and volume.mixer is not None
    assert volume.mixer.control == "PCM" and volume.parameters["required"] == ["percent"]
    assert volume.description  # the built-in's own description when none is given
    assert lamp.action == "gpio" and heat.action == "mqtt"
    wire = cfg.request_session().wire()
    assert wire["tool_choice"] == "auto"
    assert [t["name"] for t in wire["tools"]] == ["set_light", "volume", "lamp", "heat"]
    for tool in wire["tools"]:
        assert set(tool) == {"type", "name", "description", "parameters"}
    assert wire["tools"][0]["parameters"]["properties"]["level"]["maximum"] == 100
    assert declared(cfg.tools) == cfg.request_session().tools


def test_defaults_have_no_tools() -> None:
    cfg = load_config(ROOT / "config" / "edgevoice.toml")
    assert cfg.tools == [] and cfg.request_session().wire()["tools"] == []


def test_templates() -> None:
    assert placeholders("--room={room}:{level}") == ["room", "level"]
    assert placeholders("{{literal}} braces") == []
    assert whole_placeholder("{level}") == "level"
    assert whole_placeholder("x{level}") is None and whole_placeholder("{") is None
    args = {"room": "a b; c", "level": 5, "on": True, "f": 0.5, "list": [1, "x"]}
    assert render("--room={room}", args) == "--room=a b; c"
    assert render("{level}/{on}/{f}/{list}", args) == '5/true/0.5/[1,"x"]'
    assert render("{{x}}", args) == "{x}"
    with pytest.raises(ValueError, match="bad placeholder"):
        placeholders("{")
    with pytest.raises(ValueError, match="empty placeholder"):
        placeholders("{}")


def test_tool_spec_is_usable_without_a_config_file() -> None:
    spec = ToolSpec.model_validate({"name": "t", "builtin": "get_time"})
    # Extra properties are refused unless a tool allows them, and the model is told so.
    closed = {"type": "object", "properties": {}, "additionalProperties": False}
    assert spec.parameters == closed
    assert declared([spec])[0].wire() == {
        "type": "function", "name": "t", "description": spec.description,
        "parameters": closed}
