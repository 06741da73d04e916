"""The ``[[tools]]`` schema: what a declared tool is, checked when the config is loaded.

A tool is a name, a description, a JSON Schema of its parameters and exactly one action
(``command``, ``gpio``, ``mqtt`` or ``builtin``), plus ``timeout_s``, an optional
``rate_limit`` and ``confirm``. Everything that can be checked without running anything is
checked here, so that ``edgevoice check-config`` catches it:

- ``parameters`` is a well-formed JSON Schema (``check_schema`` of its draft) of an object;
- every ``{placeholder}`` of an action names a declared parameter that is required or has a
  default (so a placeholder always has a value), and the program (``argv[0]``) is never one;
- placeholders fit where they stand: a GPIO ``do`` placeholder is a boolean or an enum of
  ``on``/``off``/``toggle``/``pulse``, a PWM ``value`` placeholder is a number;
- exactly one action is set, and only the settings of that action;
- arguments cannot escape into what reaches a program or a broker:
  ``additionalProperties`` is false unless the tool says otherwise, every ``default`` is
  valid under its own schema, and a placeholder parameter used in ``argv``, an MQTT topic or
  a payload is a string, integer, number or boolean, a string one with an ``enum`` or an
  anchored ``pattern`` (``^…$``) and a ``maxLength`` (128 unless given). What is checked at
  call time (a leading ``-``, ``/`` and ``..``, NUL and control characters) is in
  :mod:`edgevoice.tools.arguments`; ``allow_dash`` and ``allow_slash`` name the parameters
  that may start with ``-`` or hold ``/``;
- MQTT: a password only over TLS unless the broker is on this machine; the password and key
  files are refused when group- or world-accessible.

Templates use Python's format syntax without conversions or format specs: ``{name}`` is a
placeholder, ``{{`` and ``}}`` are literal braces, any other brace is an error.

Part of the config schema (:mod:`edgevoice.config` imports it); the tools package runs what it
describes.
"""

from __future__ import annotations

import json
import os
import re
import stat
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from edgevoice.config.sentences import Sentences, SlotSpec, check_sentences
from edgevoice.util import is_loopback_host
from edgevoice.wire.session import FunctionTool, Strict

# --------------------------------------------------------------------------- templates

_FORMATTER = string.Formatter()


def placeholders(template: str) -> list[str]:
    """The placeholder names of ``template`` in order. ValueError for a malformed template
    (a lone brace, ``{}``, or a conversion/format spec such as ``{x!r}`` or ``{x:>4}``)."""
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"bad placeholder in {template!r}: {exc} (write {{{{ and }}}} for "
                         f"literal braces)") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field:
            raise ValueError(f"empty placeholder {{}} in {template!r} (use {{{{ for a brace)")
        if spec or conversion:
            raise ValueError(f"placeholder in {template!r} must be a plain {{name}}")
        names.append(field)
    return names


def whole_placeholder(template: str) -> str | None:
    """The parameter name if ``template`` is exactly one placeholder (``"{level}"``)."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError:
        return None
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1]:
        return parts[0][1]
    return None


def as_text(value: Any) -> str:
    """How an argument value reads inside a template: strings as they are, everything else
    as compact JSON (``true``, ``3``, ``0.5``, ``["a","b"]``)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


#: ``offline_reply`` placeholders with this prefix name a field of the tool's output.
OUTPUT_PREFIX = "output."


def render(template: str, args: Mapping[str, Any]) -> str:
    """``template`` with each placeholder replaced by its argument's text (one string out,
    whatever the value holds: nothing is split, globbed or interpreted)."""
    out: list[str] = []
    for literal, field, _spec, _conversion in _FORMATTER.parse(template):
        out.append(literal)
        if field is not None:
            out.append(as_text(args[field]))
    return "".join(out)


def _walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_strings(v)


# --------------------------------------------------------------------------- built-ins

Builtin = Literal["set_volume", "stop_conversation", "get_time"]

_EMPTY: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

BUILTIN_PARAMETERS: dict[str, dict[str, Any]] = {
    "get_time": _EMPTY,
    "stop_conversation": _EMPTY,
    "set_volume": {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "minimum": 0, "maximum": 100,
                        "description": "Speaker volume in percent, 0 is silent"},
        },
        "required": ["percent"],
        "additionalProperties": False,
    },
}

BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "get_time": "The current local date and time.",
    "stop_conversation": "End the conversation when the user is done or says goodbye.",
    "set_volume": "Set the speaker volume in percent.",
}

GPIO_OUTPUT_OPS = ("on", "off", "toggle", "pulse")
GPIO_OPS = (*GPIO_OUTPUT_OPS, "pwm", "read")


def gpio_pin_key(pin: int | str) -> str:
    """One spelling per pin for conflict checks: ``17``, ``"17"``, ``"BCM17"`` and
    ``"GPIO17"`` are all ``GPIO17``; other specs (``"BOARD11"``, ``"J8:11"``) stay as they are
    (gpiozero itself refuses two devices on one pin, whatever the spelling)."""
    text = str(pin).strip().upper()
    m = re.fullmatch(r"(?:GPIO|BCM)?(\d+)", text)
    return f"GPIO{int(m[1])}" if m else text


# --------------------------------------------------------------------------- actions


class RateLimit(Strict):
    """At most ``max_calls`` runs in any ``per_s`` seconds (sliding window)."""

    max_calls: Annotated[int, Field(ge=1, le=100000)]
    per_s: Annotated[float, Field(gt=0, le=86400)]


class CommandAction(Strict):
    """Run a program: ``argv`` is a list, each element one argument; placeholders fill in
    whole arguments. No shell is ever involved."""

    argv: list[str] = Field(min_length=1)
    run_as: Literal["daemon", "user"] = "daemon"
    env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list)
    cwd: str | None = None
    max_output_bytes: Annotated[int, Field(ge=1, le=1048576)] = 4096

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("the program (argv[0]) must not be empty")
        for arg in value:
            placeholders(arg)  # raises for a malformed template
        if placeholders(value[0]):
            raise ValueError("the program (argv[0]) must not contain a placeholder")
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"must be an absolute path, got {value!r}")
        return value

    def templates(self) -> list[str]:
        return list(self.argv[1:])


class GpioAction(Strict):
    """Drive or read one GPIO pin through gpiozero.

    ``do``: ``on``, ``off``, ``toggle``, ``pulse`` (on for ``pulse_s``, then off), ``pwm``
    (set the duty cycle to ``value`` / ``value_max``) or ``read``; or a placeholder whose
    parameter chooses between on/off/toggle/pulse (an enum) or on/off (a boolean)."""

    pin: int | str
    do: str
    value: float | str | None = None
    value_max: Annotated[float, Field(gt=0)] = 1.0
    pulse_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    active_high: bool = True
    pull_up: bool = False
    frequency_hz: Annotated[int, Field(ge=1, le=100000)] = 100

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0 or isinstance(value, str) and not value.strip():
            raise ValueError(f"must be a pin number or a gpiozero pin name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> GpioAction:
        if whole_placeholder(self.do) is None and self.do not in GPIO_OPS:
            raise ValueError(f"do must be one of {', '.join(GPIO_OPS)} or a {{placeholder}}, "
                             f"got {self.do!r}")
        placeholders(self.do)
        if self.do == "pwm":
            if self.value is None:
                raise ValueError('do = "pwm" needs a value (a number or a {placeholder})')
            if isinstance(self.value, str):
                if whole_placeholder(self.value) is None:
                    raise ValueError(f"value must be a number or one {{placeholder}}, "
                                     f"got {self.value!r}")
            elif not 0 <= self.value / self.value_max <= 1:
                raise ValueError(f"value must be between 0 and value_max ({self.value_max:g}), "
                                 f"got {self.value:g}")
        elif self.value is not None:
            raise ValueError('value is only for do = "pwm"')
        return self

    def templates(self) -> list[str]:
        return [t for t in (self.do, self.value) if isinstance(t, str) and placeholders(t)]

    @property
    def kind(self) -> Literal["input", "pwm", "output"]:
        """The gpiozero device this pin needs."""
        return "input" if self.do == "read" else "pwm" if self.do == "pwm" else "output"


class MqttBroker(Strict):
    """How to reach an MQTT broker: address, TLS and credentials. Shared by MQTT tools and
    ``[homeassistant]`` (:mod:`edgevoice.mqtt` turns it into a connection).

    The password is read from ``password_file`` at each connection (refused when group- or
    world-accessible, like ``api_key_file``); it is never in the config file and never
    logged, and it is only sent over TLS unless the broker is on this machine."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    tls: bool = False
    ca_file: str | None = Field(default=None, min_length=1)
    cert_file: str | None = Field(default=None, min_length=1)
    key_file: str | None = Field(default=None, min_length=1)
    username: str | None = Field(default=None, min_length=1)
    password_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _broker(self) -> MqttBroker:
        for name in ("ca_file", "cert_file", "key_file", "password_file"):
            path = getattr(self, name)
            if path is not None and not PurePosixPath(path).is_absolute():
                raise ValueError(f"{name} must be an absolute path, got {path!r}")
        if (self.ca_file or self.cert_file or self.key_file) and not self.tls:
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate)")
        if self.password_file and not self.tls and not is_loopback_host(self.host):
            raise ValueError(f"password_file with tls = false to {self.host}: the password "
                             f"would cross the network in clear text; set tls = true (a "
                             f"broker on this machine, 127.0.0.1 or ::1, may go without)")
        for name in ("password_file", "key_file"):
            path = getattr(self, name)
            problem = secret_file_mode_problem(path) if path else None
            if problem:
                raise ValueError(f"{name}: {problem}")
        return self


class MqttAction(MqttBroker):
    """Publish to an MQTT broker (aiomqtt), optionally waiting for one reply message. The
    broker's settings and their checks are :class:`MqttBroker`'s.

    ``payload`` is a table/list sent as JSON, where a string leaf that is exactly one
    placeholder takes the argument's own JSON type (``"{level}"`` → ``80``) and other leaves
    are JSON strings, so arguments can never break the JSON apart; or a string sent as it is,
    either fixed or exactly one placeholder (never text glued around an argument)."""

    topic: str = Field(min_length=1)
    payload: str | dict[str, Any] | list[Any] = ""
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    reply_topic: str | None = Field(default=None, min_length=1)
    reply_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    max_reply_bytes: Annotated[int, Field(ge=1, le=1048576)] = 4096

    @model_validator(mode="after")
    def _templates(self) -> MqttAction:
        for template in self.templates():
            placeholders(template)
        for name, topic in (("topic", self.topic), ("reply_topic", self.reply_topic)):
            if topic is not None and any(c in topic for c in "+#\0"):
                raise ValueError(f"{name} must not contain MQTT wildcards (+, #), got {topic!r}")
        if isinstance(self.payload, str) and placeholders(self.payload) and \
                whole_placeholder(self.payload) is None:
            raise ValueError(f"payload {self.payload!r}: a string payload is sent as it is, so "
                             f"it is either fixed text or exactly one {{placeholder}}; for "
                             f"structure use a table (sent as JSON, arguments as JSON values)")
        return self

    def templates(self) -> list[str]:
        return [self.topic, *([self.reply_topic] if self.reply_topic else []),
                *_walk_strings(self.payload)]

    def sites(self) -> Iterator[tuple[str, str]]:
        """(where, template) of every template: ``topic``, ``reply_topic``, ``payload``."""
        yield "topic", self.topic
        if self.reply_topic:
            yield "reply_topic", self.reply_topic
        for t in _walk_strings(self.payload):
            yield "payload", t


def secret_file_mode_problem(path: str) -> str | None:
    """Why an existing secret file is not safe (group or others may access it); None when it
    is fine or does not exist (yet: a missing file is reported when it is used)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{path} is accessible by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    return None


class MixerSettings(Strict):
    """The ALSA mixer control of the ``set_volume`` built-in (as ``amixer -D DEVICE``)."""

    device: str = Field(default="default", min_length=1)
    control: str = Field(default="Master", min_length=1)


# --------------------------------------------------------------------------- the tool

ACTIONS = ("command", "gpio", "mqtt", "builtin")


def _check_schema(schema: dict[str, Any]) -> None:
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a valid JSON Schema: {where + ': ' if where else ''}"
                         f"{exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError(f'must be an object schema (type = "object"), '
                         f"got type {schema.get('type')!r}")


def _param_schema(parameters: Mapping[str, Any], name: str) -> dict[str, Any]:
    props = parameters.get("properties") or {}
    if name not in props:
        raise ValueError(f"placeholder {{{name}}} is not a declared parameter")
    required = parameters.get("required") or []
    schema = props[name] if isinstance(props[name], dict) else {}
    if name not in required and "default" not in schema:
        raise ValueError(f"placeholder {{{name}}} names an optional parameter without a "
                         f"default: list it in required or give it a default")
    return schema


def _types(schema: Mapping[str, Any]) -> set[str]:
    t = schema.get("type")
    return {t} if isinstance(t, str) else set(t) if isinstance(t, list) else set()


#: Answers that confirm a ``confirm = true`` tool, whole (several may follow each other:
#: "yes, go ahead"); see :mod:`edgevoice.tools.confirm`.
DEFAULT_YES: tuple[str, ...] = (
    "yes", "yeah", "yep", "yup", "sure", "ok", "okay", "confirm", "confirmed", "do it",
    "go ahead", "please do", "affirmative", "correct", "that's right", "yes please",
)


class ConfirmationConfig(Strict):
    """``[confirmation]``: which spoken answers confirm a ``confirm = true`` tool."""

    yes: list[Annotated[str, Field(min_length=1, max_length=40, pattern=r"[A-Za-z0-9]")]] = \
        Field(default_factory=lambda: list(DEFAULT_YES), min_length=1, max_length=64)
    # Longer answers never confirm ("okay, and what's the weather?").
    max_words: Annotated[int, Field(ge=1, le=8)] = 4
    # How long the answer's transcript may take after its speech began.
    answer_wait_s: Annotated[float, Field(gt=0, le=30)] = 8.0


class ToolSpec(FunctionTool):
    """One ``[[tools]]`` entry (see the module docs). Only ``name``, ``description`` and
    ``parameters`` go on the wire (:func:`declared`); the rest stays on the device."""

    _grammar_words: int = PrivateAttr(default=0)
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    rate_limit: RateLimit | None = None
    confirm: bool = False
    # The question the daemon speaks (``{parameter}`` fields); None: built from the name.
    confirm_prompt: str | None = Field(default=None, min_length=1, max_length=300)
    # How long after the prompt played the user's answer may start.
    confirm_window_s: Annotated[float, Field(gt=0, le=60)] = 8.0
    command: CommandAction | None = None
    gpio: GpioAction | None = None
    mqtt: MqttAction | None = None
    builtin: Builtin | None = None
    mixer: MixerSettings | None = None
    allow_dash: list[str] = Field(default_factory=list)
    allow_slash: list[str] = Field(default_factory=list)
    # Offline (see edgevoice.config.sentences): what the device understands on its own.
    sentences: Sentences = Field(default_factory=list)
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    offline_reply: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_schema(value)
        return value

    @field_validator("command", "gpio", "mqtt")
    @classmethod
    def _placeholders_declared(
        cls, value: CommandAction | GpioAction | MqttAction | None, info: ValidationInfo
    ) -> CommandAction | GpioAction | MqttAction | None:
        parameters = info.data.get("parameters")
        if value is None or parameters is None:
            return value  # no action here, or the schema itself is already reported
        for template in value.templates():
            for name in placeholders(template):
                _param_schema(parameters, name)
        if isinstance(value, GpioAction):
            _check_gpio_params(value, parameters)
        return value

    @model_validator(mode="after")
    def _one_action(self) -> ToolSpec:
        chosen = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(chosen) != 1:
            got = ", ".join(chosen) if chosen else "none"
            raise ValueError(f"set exactly one action ({', '.join(ACTIONS)}), got {got}")
        if self.mixer is not None and self.builtin != "set_volume":
            raise ValueError('mixer is only for builtin = "set_volume"')
        if self.builtin is not None:
            fixed = BUILTIN_PARAMETERS[self.builtin]
            given = {k: v for k, v in self.parameters.items() if k != "additionalProperties"}
            if "parameters" in self.model_fields_set and \
                    given != {k: v for k, v in fixed.items() if k != "additionalProperties"}:
                raise ValueError(f"builtin {self.builtin} has fixed parameters: "
                                 f"leave parameters out")
            self.parameters = fixed
            self.description = self.description or BUILTIN_DESCRIPTIONS[self.builtin]
            if self.builtin == "set_volume" and self.mixer is None:
                self.mixer = MixerSettings()
        if self.mqtt is not None and self.mqtt.reply_topic and \
                self.mqtt.reply_timeout_s > self.timeout_s:
            raise ValueError(f"mqtt.reply_timeout_s ({self.mqtt.reply_timeout_s:g}) must not "
                             f"exceed timeout_s ({self.timeout_s:g})")
        if self.confirm_prompt is not None:
            if not self.confirm:
                raise ValueError("confirm_prompt is only for confirm = true")
            try:
                for name in placeholders(self.confirm_prompt):
                    _param_schema(self.parameters, name)
            except ValueError as exc:
                raise ValueError(f"confirm_prompt: {exc}") from None
        self.parameters = _harden(self)
        if self.offline_reply is not None:
            for name in placeholders(self.offline_reply):
                if name.startswith(OUTPUT_PREFIX):
                    if not re.fullmatch(r"[A-Za-z0-9_]+", name[len(OUTPUT_PREFIX):]):
                        raise ValueError(f"offline_reply: placeholder {{{name}}}: write "
                                         f"{{output.FIELD}}, a top-level field of the "
                                         f"tool's output")
                    continue
                try:
                    _param_schema(self.parameters, name)
                except ValueError as exc:
                    raise ValueError(f"offline_reply: {exc}") from None
        problems, self._grammar_words = check_sentences(self.name, self.parameters,
                                                        self.sentences, self.slots)
        if problems:
            raise ValueError("\n".join(problems))  # one line each (see config._format_error)
        return self

    @property
    def grammar_words(self) -> int:
        """Word positions this tool's sentences add to the offline grammar."""
        return self._grammar_words

    def sites(self) -> list[tuple[str, str]]:
        """(where, template) of every template that reaches a program or a broker:
        ``argv`` (command) and ``topic``/``reply_topic``/``payload`` (mqtt)."""
        if self.command is not None:
            return [("argv", t) for t in self.command.templates()]
        if self.mqtt is not None:
            return list(self.mqtt.sites())
        return []

    @property
    def action(self) -> str:
        """The name of the action: command, gpio, mqtt or builtin."""
        return next(a for a in ACTIONS if getattr(self, a) is not None)


SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})
DEFAULT_MAX_LENGTH = 128


def _harden(tool: ToolSpec) -> dict[str, Any]:
    """The tool's parameters, checked and tightened (see the module docs): extra properties
    refused unless the tool allows them, defaults valid, every string that reaches argv, an
    MQTT topic or a payload bounded by an anchored ``pattern`` or an ``enum`` and a
    ``maxLength``. Raises ValueError naming the tool and the parameter."""
    params = json.loads(json.dumps(tool.parameters))  # a copy: never change the caller's
    params.setdefault("additionalProperties", False)
    props = params.get("properties") or {}
    cls = validator_for(params)
    for name, sub in props.items():
        if isinstance(sub, dict) and "default" in sub:
            errors = list(cls(sub).iter_errors(sub["default"]))
            if errors:
                raise ValueError(f"tool {tool.name}: parameter {name}: the default "
                                 f"{sub['default']!r} is not valid: {errors[0].message}")
    for option in ("allow_dash", "allow_slash"):
        for name in getattr(tool, option):
            if name not in props:
                raise ValueError(f"tool {tool.name}: {option} names {name!r}, which is not a "
                                 f"declared parameter")
    for where, template in tool.sites():
        for name in placeholders(template):
            sub = props.get(name)
            if not isinstance(sub, dict):
                continue  # reported by the placeholder check already
            types = _types(sub)
            if not types or not types <= SCALAR_TYPES:
                raise ValueError(f"tool {tool.name}: parameter {name} (in {where}) must have a "
                                 f"type of string, integer, number or boolean")
            if "string" not in types:
                continue
            if "enum" not in sub and "pattern" not in sub:
                raise ValueError(f"tool {tool.name}: parameter {name} (in {where}) is a free "
                                 f"string: give it an enum or a pattern (anchored, ^…$) and a "
                                 f"maxLength")
            pattern = sub.get("pattern")
            if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
                raise ValueError(f"tool {tool.name}: parameter {name} (in {where}): pattern "
                                 f"{pattern!r} must be anchored (start with ^, end with $), or "
                                 f"it matches any text that merely contains it")
            if "enum" not in sub:
                sub.setdefault("maxLength", DEFAULT_MAX_LENGTH)
    return params


def _check_gpio_params(action: GpioAction, parameters: Mapping[str, Any]) -> None:
    do = whole_placeholder(action.do)
    if do is not None:
        schema = _param_schema(parameters, do)
        enum = schema.get("enum")
        if _types(schema) == {"boolean"}:
            pass  # true: on, false: off
        elif not isinstance(enum, list) or not enum or \
                not set(map(str, enum)) <= set(GPIO_OUTPUT_OPS):
            raise ValueError(f"placeholder {{{do}}} in do must be a boolean or an enum of "
                             f"{', '.join(GPIO_OUTPUT_OPS)}")
    if isinstance(action.value, str):
        name = whole_placeholder(action.value)
        assert name is not None  # checked by GpioAction
        schema = _param_schema(parameters, name)
        if not _types(schema) or not _types(schema) <= {"number", "integer"}:
            raise ValueError(f"placeholder {{{name}}} in value must be a number parameter")


def check_tool_set(tools: Sequence[ToolSpec]) -> list[str]:
    """Problems between tools (not within one): repeated names, one GPIO pin used both as
    an input and as an output. Empty when the set is fine."""
    problems: list[str] = []
    names = [t.name for t in tools]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"tool names must be unique, repeated: {', '.join(duplicated)}")
    first: dict[tuple[str, str], ToolSpec] = {}  # (pin, "input"/"output") -> its first tool
    for t in tools:
        if t.gpio is None:
            continue
        pin = gpio_pin_key(t.gpio.pin)
        role = "input" if t.gpio.kind == "input" else "output"
        other = first.setdefault((pin, role), t)
        assert other.gpio is not None
        # One pin is one device: its tools must agree on what "on" means and on the pull.
        setting = "pull_up" if role == "input" else "active_high"
        if getattr(other.gpio, setting) != getattr(t.gpio, setting):
            problems.append(f"{pin}: tools {other.name} and {t.name} disagree on {setting}")
    for (pin, role), t in first.items():
        if role == "input" and (pin, "output") in first:
            problems.append(f"{pin} is used as an input by tool {t.name} and as an output by "
                            f"tool {first[(pin, 'output')].name}")
    return problems


def declared(tools: Iterable[ToolSpec]) -> list[FunctionTool]:
    """The ``tools`` of ``session.update``: name, description and parameters only (no
    command, pin, broker or other device detail reaches the service)."""
    return [FunctionTool(name=t.name, description=t.description, parameters=t.parameters)
            for t in tools]
