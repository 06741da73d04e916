"""The config of the ways in and out besides the microphone and the speaker: push-to-talk and
mute triggers (GPIO buttons and switches, Linux input keys), and state feedback (hook
commands and lights).

Checked here (with the rest of the file): the shape of each entry, key names that evdev
knows, pins used twice (by two triggers, a trigger and a light, or a trigger or light and a
tool), and hook programs that exist and are executable. Not an error here: an input device
that is missing now (a USB remote may be plugged in later; the daemon waits for it), see
:func:`edgevoice.triggers.trigger_notes`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgevoice.config.tools import ToolSpec, gpio_pin_key
from edgevoice.util import DEFAULT_PATH
from edgevoice.wire.session import Strict

#: The feedback states, most pressing first where they overlap (see ``feedback_state``).
FEEDBACK_STATES = ("idle", "listening", "thinking", "speaking", "muted", "offline", "error")
FeedbackState = Literal["idle", "listening", "thinking", "speaking", "muted", "offline", "error"]


def known_key(name: str) -> bool | None:
    """True when evdev knows the key name (``KEY_VOICECOMMAND``, ``BTN_0``…); None when
    evdev is not installed (not on Linux): the name cannot be checked here."""
    try:
        from evdev import ecodes
    except ImportError:
        return None
    code = ecodes.ecodes.get(name)
    return code is not None and name.startswith(("KEY_", "BTN_"))


def _pin_field(value: int | str | None) -> int | str | None:
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, int) and value < 0 \
            or isinstance(value, str) and not value.strip():
        raise ValueError(f"must be a pin number or a gpiozero pin name, got {value!r}")
    return value


class TriggerConfig(Strict):
    """One button, switch or key. ``source = "gpio"``: a gpiozero ``Button`` on ``pin``;
    ``source = "input"``: a key of a Linux input device (``device``: its name as the kernel
    gives it, or a ``/dev/input/...`` path). ``action = "talk"``: push-to-talk;
    ``action = "mute"``: a press toggles the privacy mute, or, with ``switch = true`` (GPIO),
    the switch's position is the mute (closed = muted)."""

    name: str | None = Field(default=None, min_length=1)
    source: Literal["gpio", "input"]
    action: Literal["talk", "mute"] = "talk"
    pin: int | str | None = None
    pull_up: bool = True
    bounce_ms: Annotated[int, Field(ge=0, le=1000)] = 20
    switch: bool = False
    device: str | None = Field(default=None, min_length=1)
    key: str = "KEY_VOICECOMMAND"

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: int | str | None) -> int | str | None:
        return _pin_field(value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if known_key(value) is False:
            raise ValueError(f"unknown key {value!r}: use an evdev key name such as "
                             f"KEY_VOICECOMMAND, KEY_MUTE or BTN_0")
        return value

    @model_validator(mode="after")
    def _shape(self) -> TriggerConfig:
        if self.source == "gpio":
            if self.pin is None:
                raise ValueError('source = "gpio" needs a pin')
            if self.device is not None:
                raise ValueError('device is for source = "input"')
        else:
            if self.device is None:
                raise ValueError('source = "input" needs a device (a name or a '
                                 '/dev/input path)')
            if self.pin is not None:
                raise ValueError('pin is for source = "gpio"')
            if self.switch:
                raise ValueError('switch = true is for source = "gpio"')
        if self.switch and self.action != "mute":
            raise ValueError('switch = true is for action = "mute"')
        return self

    def label(self, index: int) -> str:
        """How logs and the status name it."""
        if self.name:
            return self.name
        where = f"GPIO {self.pin}" if self.source == "gpio" else f"{self.device} {self.key}"
        return f"{self.action} {where}".replace("talk", "push-to-talk")


class PushToTalkConfig(Strict):
    """``mode = "press"``: a press starts a turn as the wake word does (the server's turn
    detection ends it); ``"hold"``: audio streams while the button is held and the turn is
    committed when it is released (with ``session.turn_detection.type = "none"`` only the
    release ends it; a server turn detection may also end it at a long pause).
    ``end_follow_up``: a press in the follow-up window ends the conversation (else it
    starts a new turn). ``preroll_ms``: audio from before the press that is sent too
    (people start speaking as they press)."""

    mode: Literal["press", "hold"] = "press"
    end_follow_up: bool = True
    preroll_ms: Annotated[int, Field(ge=0, le=1000)] = 300


def program_problem(program: str) -> str | None:
    """Why ``program`` (a hook's argv[0]) cannot run: missing, not a file, not executable;
    None when it can. A bare name is looked up in the PATH hooks run with."""
    if "/" not in program:
        return None if shutil.which(program, path=DEFAULT_PATH) else \
            f"program {program!r} not found in {DEFAULT_PATH}"
    path = Path(program)
    if not path.is_absolute():
        return f"program must be an absolute path or a bare name, got {program!r}"
    if not path.is_file():
        return f"no such program: {program}"
    if not os.access(path, os.X_OK):
        return f"{program} is not executable"
    return None


Hook = Annotated[list[str], Field(min_length=1)]

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
COLOR_NAMES = {"off": "#000000", "white": "#ffffff", "red": "#ff0000", "green": "#00ff00",
               "blue": "#0000ff", "yellow": "#ffff00", "cyan": "#00ffff",
               "magenta": "#ff00ff", "orange": "#ff8000", "purple": "#8000ff"}


class LightState(Strict):
    """How the light shows one state: a colour (a name or ``#rrggbb``; a plain LED uses its
    brightness) and a pattern."""

    color: str = "white"
    pattern: Literal["off", "solid", "blink", "pulse"] = "solid"
    period_s: Annotated[float, Field(gt=0, le=10)] = 1.0

    @field_validator("color")
    @classmethod
    def _color(cls, value: str) -> str:
        if value.lower() not in COLOR_NAMES and not _COLOR.match(value):
            raise ValueError(f"must be #rrggbb or one of {', '.join(COLOR_NAMES)}, "
                             f"got {value!r}")
        return value

    def rgb(self) -> tuple[float, float, float]:
        text = COLOR_NAMES.get(self.color.lower(), self.color)
        return tuple(int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _default_looks() -> dict[str, LightState]:
    return {
        "idle": LightState(pattern="off"),
        "listening": LightState(color="blue"),
        "thinking": LightState(color="cyan", pattern="pulse"),
        "speaking": LightState(color="green"),
        "muted": LightState(color="red"),
        "offline": LightState(color="orange", pattern="blink", period_s=2.0),
        "error": LightState(color="red", pattern="blink", period_s=0.5),
    }


class LightConfig(Strict):
    """A light through gpiozero: ``pin`` for one LED, or ``pins = [red, green, blue]`` for an
    RGB LED. ``states``: how each state looks (the defaults fill in the rest)."""

    pin: int | str | None = None
    pins: list[int | str] | None = Field(default=None, min_length=3, max_length=3)
    active_high: bool = True
    states: dict[FeedbackState, LightState] = Field(default_factory=dict)

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: int | str | None) -> int | str | None:
        return _pin_field(value)

    @field_validator("pins")
    @classmethod
    def _pins(cls, value: list[int | str] | None) -> list[int | str] | None:
        for p in value or []:
            _pin_field(p)
        return value

    @model_validator(mode="after")
    def _one(self) -> LightConfig:
        if (self.pin is None) == (self.pins is None):
            raise ValueError("set pin (an LED) or pins = [red, green, blue] (an RGB LED)")
        return self

    def look(self, state: str) -> LightState:
        return self.states.get(state) or _default_looks()[state]  # type: ignore[index]

    def all_pins(self) -> list[int | str]:
        return [self.pin] if self.pin is not None else list(self.pins or [])


class FeedbackConfig(Strict):
    """State feedback. ``on_<state>``: a command (argv, no shell) run when the daemon enters
    that state, with at most ``hook_timeout_s`` and only the variables ``hook_env`` (and
    PATH) in its environment. ``light``: an LED or RGB LED."""

    on_idle: Hook | None = None
    on_listening: Hook | None = None
    on_thinking: Hook | None = None
    on_speaking: Hook | None = None
    on_muted: Hook | None = None
    on_offline: Hook | None = None
    on_error: Hook | None = None
    hook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    hook_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list)
    light: LightConfig | None = None

    @field_validator("on_idle", "on_listening", "on_thinking", "on_speaking", "on_muted",
                     "on_offline", "on_error")
    @classmethod
    def _program(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            problem = program_problem(value[0])
            if problem:
                raise ValueError(problem)
        return value

    def hooks(self) -> dict[str, list[str]]:
        """state → argv, for the states that have a hook."""
        return {s: list(h) for s in FEEDBACK_STATES
                if (h := getattr(self, f"on_{s}")) is not None}


def check_pins(triggers: Sequence[TriggerConfig], light: LightConfig | None,
               tools: Sequence[ToolSpec]) -> list[str]:
    """Pins used twice between triggers, the light and the GPIO tools: one line each, naming
    the keys."""
    used: dict[str, str] = {}
    problems: list[str] = []

    def take(pin: int | str, owner: str) -> None:
        key = gpio_pin_key(pin)
        if key in used:
            problems.append(f"{owner}: pin {pin} is already used by {used[key]}")
        else:
            used[key] = owner

    for t in tools:
        if t.gpio is not None:
            used.setdefault(gpio_pin_key(t.gpio.pin), f"tool {t.name}")
    for i, trig in enumerate(triggers):
        if trig.pin is not None:
            take(trig.pin, f"triggers[{i}].pin")
    if light is not None:
        for j, p in enumerate(light.all_pins()):
            take(p, "feedback.light.pin" if light.pin is not None
                 else f"feedback.light.pins[{j}]")
    return problems
