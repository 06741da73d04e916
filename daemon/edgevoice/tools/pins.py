"""Which gpiozero pin driver the GPIO tools would get here, and what it cannot do.

gpiozero picks the first pin factory that loads, in the order ``lgpio``, ``rpigpio``
(RPi.GPIO), ``pigpio``, ``native`` — or only the one ``$GPIOZERO_PIN_FACTORY`` names. The
``native`` fallback ships with gpiozero and needs nothing, but has no PWM, and only
``lgpio`` drives the Raspberry Pi 5's GPIO (the RP1 chip). A service venv without lgpio
therefore falls back silently, and a PWM tool or any GPIO tool on a Pi 5 fails at its first
call. :func:`pin_warnings` says so before that, without touching a pin (it only looks for the
driver modules and reads the board's model from the device tree).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgevoice.config.tools import ToolSpec, gpio_pin_key

#: gpiozero's pin factories in the order it tries them, with the module each needs.
FACTORIES: tuple[tuple[str, str | None], ...] = (
    ("lgpio", "lgpio"), ("rpigpio", "RPi.GPIO"), ("pigpio", "pigpio"), ("native", None))
#: What each factory can do: PWM, the Pi 5.
PWM = frozenset({"lgpio", "rpigpio", "pigpio"})
PI5 = frozenset({"lgpio"})
MODEL_FILE = Path("/proc/device-tree/model")
FIX = ("pip install lgpio into edgevoice's venv (scripts/setup and scripts/install-service "
       "install it on 64-bit Raspberry Pi OS)")


def board_model(path: Path = MODEL_FILE) -> str:
    """The board's model from the device tree ("Raspberry Pi 5 Model B Rev 1.0"); "" when
    there is none (not an ARM board) or it cannot be read."""
    try:
        return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return ""


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pin_factory(env: Mapping[str, str] | None = None,
                importable: Callable[[str], bool] = _importable) -> str:
    """The factory gpiozero would use: the one ``$GPIOZERO_PIN_FACTORY`` names, else the
    first whose module is installed (``native`` needs none)."""
    env = os.environ if env is None else env
    chosen = env.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if chosen:
        return chosen
    for name, module in FACTORIES:
        if module is None or importable(module):
            return name
    return "native"


def pin_warnings(tools: Sequence[ToolSpec], *, board: str | None = None,
                 env: Mapping[str, str] | None = None,
                 importable: Callable[[str], bool] = _importable) -> list[str]:
    """One line per GPIO tool the pin driver here cannot serve, as ``tools[i] (name): what;
    fix``; empty when there is no GPIO tool, all are served, or the factory is a mock (tests).
    ``board``: the board's model (default: read from the device tree)."""
    gpio = [(i, t) for i, t in enumerate(tools) if t.gpio is not None]
    if not gpio:
        return []
    factory = pin_factory(env, importable)
    if factory == "mock":
        return []
    board = board_model() if board is None else board
    why = ("$GPIOZERO_PIN_FACTORY names it" if (env if env is not None else os.environ)
           .get("GPIOZERO_PIN_FACTORY") else "no lgpio, RPi.GPIO or pigpio is installed")
    problems = []
    if "Raspberry Pi 5" in board and factory not in PI5:
        names = ", ".join(f"tools[{i}] ({t.name})" for i, t in gpio)
        problems.append(f"{names}: this {board} needs the lgpio pin driver for its GPIO, but "
                        f"gpiozero would use {factory} ({why}): {FIX}")
    elif factory not in PWM:
        for i, t in gpio:
            assert t.gpio is not None
            if t.gpio.kind == "pwm":
                problems.append(
                    f"tools[{i}] ({t.name}): do = \"pwm\" on {gpio_pin_key(t.gpio.pin)} needs a "
                    f"pin driver with PWM, but gpiozero would use {factory}, which has none "
                    f"({why}): {FIX}")
    return problems
