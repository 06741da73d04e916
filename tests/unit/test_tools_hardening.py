"""Arguments that cannot escape, checked by check-config: free strings in argv, topics and
payloads, defaults, extra properties, MQTT passwords and TLS files, string payloads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgevoice.config import ConfigError, parse_config
from edgevoice.tools.arguments import ArgumentError, parse_arguments

FREE = 'parameters = { type = "object", properties = { name = { type = "string" } }, required = ["name"] }\n'


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "edgevoice.toml")
    return info.value.errors


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[[tools]]\nname = "sort_notes"\n' + FREE +
         'command = { argv = ["/usr/bin/sort", "{name}"] }\n',
         "edgevoice.toml: tools[0]: tool sort_notes: parameter name (in argv) is a free string: "
         "give it an enum or a pattern"),
        ('[[tools]]\nname = "pub"\n' + FREE + 'mqtt = { topic = "home/{name}" }\n',
         "edgevoice.toml: tools[0]: tool pub: parameter name (in topic) is a free string"),
        ('[[tools]]\nname = "pub"\n' + FREE + 'mqtt = { topic = "t", payload = { n = "{name}" } }\n',
         "edgevoice.toml: tools[0]: tool pub: parameter name (in payload) is a free string"),
        ('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { name = { type = '
         '"string", pattern = "[a-z]+" } }, required = ["name"] }\n'
         'command = { argv = ["/bin/cat", "{name}"] }\n',
         "edgevoice.toml: tools[0]: tool n: parameter name (in argv): pattern '[a-z]+' must be "
         "anchored"),
        ('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { name = { type = '
         '"array" } }, required = ["name"] }\ncommand = { argv = ["/bin/cat", "{name}"] }\n',
         "edgevoice.toml: tools[0]: tool n: parameter name (in argv) must have a type of string, "
         "integer, number or boolean"),
        ('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { name = {} }, '
         'required = ["name"] }\ncommand = { argv = ["/bin/cat", "{name}"] }\n',
         "edgevoice.toml: tools[0]: tool n: parameter name (in argv) must have a type"),
        ('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { level = { type = '
         '"integer", maximum = 3, default = 7 } } }\ncommand = { argv = ["/bin/x", "{level}"] }\n',
         "edgevoice.toml: tools[0]: tool n: parameter level: the default 7 is not valid: 7 is "
         "greater than the maximum of 3"),
        ('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { level = { type = '
         '"integer" } } }\nallow_dash = ["lvl"]\nbuiltin = "get_time"\n',
         "edgevoice.toml: tools[0]"),
        ('[[tools]]\nname = "pub"\nmqtt = { host = "broker.example.com", topic = "t", '
         'password_file = "/etc/edgevoice/mqtt-password" }\n',
         "edgevoice.toml: tools[0].mqtt: password_file with tls = false to broker.example.com: "
         "the password would cross the network in clear text"),
        ('[[tools]]\nname = "pub"\nmqtt = { topic = "t", ca_file = "/etc/ca.pem" }\n',
         "edgevoice.toml: tools[0].mqtt: ca_file, cert_file and key_file need tls = true"),
        ('[[tools]]\nname = "pub"\nmqtt = { topic = "t", tls = true, key_file = "/k.pem" }\n',
         "edgevoice.toml: tools[0].mqtt: key_file needs cert_file"),
        ('[[tools]]\nname = "pub"\nparameters = { type = "object", properties = { s = { type = '
         '"string", enum = ["a"] } }, required = ["s"] }\n'
         'mqtt = { topic = "t", payload = \'{{"state": "{s}"}}\' }\n',
         "edgevoice.toml: tools[0].mqtt: payload '{{\"state\": \"{s}\"}}': a string payload is "
         "sent as it is"),
        ('[[tools]]\nname = "n"\ncommand = { argv = ["/bin/x"], run_as = "user" }\n'
         '[service]\ntool_runner_socket = ""\n',
         'edgevoice.toml: (top level): run_as = "user" (tool n) needs service.tool_runner_socket'),
    ],
)
def test_check_config_refuses_arguments_that_could_escape(toml: str, expected: str) -> None:
    errors = errors_of(toml)
    assert any(e.startswith(expected) for e in errors), errors


def test_the_sort_example_of_the_issue_is_exit_2_naming_tool_and_parameter(
        tmp_path: Path) -> None:
    path = tmp_path / "edgevoice.toml"
    path.write_text('[[tools]]\nname = "sort_notes"\n' + FREE +
                    'command = { argv = ["/usr/bin/sort", "{name}"] }\n')
    res = subprocess.run([sys.executable, "-m", "edgevoice", "check-config", "--config",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "sort_notes" in res.stderr and \
        "parameter name" in res.stderr


def test_a_group_readable_password_file_is_refused_like_the_api_key_file(
        tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("pw\n")
    os.chmod(secret, 0o640)
    errors = errors_of(f'[[tools]]\nname = "pub"\nmqtt = {{ topic = "t", password_file = '
                       f'"{secret}" }}\n')
    assert errors == [f"edgevoice.toml: tools[0].mqtt: password_file: {secret} is accessible "
                      f"by group or others (mode 0640); run: chmod 600 {secret}"]
    os.chmod(secret, 0o600)
    parse_config(f'[[tools]]\nname = "pub"\nmqtt = {{ topic = "t", password_file = '
                 f'"{secret}" }}\n', "edgevoice.toml")


def test_tightened_schemas_reach_the_model() -> None:
    cfg = parse_config('[[tools]]\nname = "n"\nparameters = { type = "object", properties = { '
                       'name = { type = "string", pattern = "^[a-z]+$" } }, required = ["name"] }\n'
                       'command = { argv = ["/bin/cat", "{name}"] }\n', "x.toml")
    params = cfg.request_session().wire()["tools"][0]["parameters"]
    assert params["additionalProperties"] is False
    assert params["properties"]["name"]["maxLength"] == 128
    opened = parse_config('[[tools]]\nname = "n"\nparameters = { type = "object", properties = '
                          '{}, additionalProperties = true }\n'
                          'command = { argv = ["/bin/true"] }\n', "x.toml")
    assert opened.tools[0].parameters["additionalProperties"] is True


@pytest.mark.parametrize("text", ["NaN", '{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}',
                                  '{"x": 1e999}', '{"x": ' + "1" * 5000 + "}",
                                  "[" * 100000 + "]" * 100000, '{"x": 1'])
def test_only_strict_finite_json_is_read(text: str) -> None:
    with pytest.raises(ArgumentError):
        parse_arguments(text)


def test_ordinary_json_is_read() -> None:
    assert parse_arguments(' {"x": 1.5, "y": [true, null, "a"]} ') == \
        {"x": 1.5, "y": [True, None, "a"]}
    assert parse_arguments("") == {}
