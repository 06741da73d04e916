"""Pin driver warnings: a PWM tool without a PWM-capable driver, any GPIO tool on a Pi 5
without lgpio; and check-config saying so while the config stays valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgevoice.config import load_config
from edgevoice.tools.pins import board_model, pin_factory, pin_warnings

ROOT = Path(__file__).resolve().parents[2]
PI_EXAMPLE = ROOT / "config" / "examples" / "raspberry-pi.toml"  # relay, pulse, PWM LED, input
TOOLS = load_config(PI_EXAMPLE).tools


def have(*modules: str):
    return lambda name: name in modules


def test_factory_order_and_override() -> None:
    assert pin_factory({}, have("lgpio", "RPi.GPIO")) == "lgpio"
    assert pin_factory({}, have("RPi.GPIO")) == "rpigpio"
    assert pin_factory({}, have()) == "native"
    assert pin_factory({"GPIOZERO_PIN_FACTORY": "Native"}, have("lgpio")) == "native"


def test_pwm_without_a_pwm_driver_is_named_with_its_fix() -> None:
    (line,) = pin_warnings(TOOLS, board="Raspberry Pi 4 Model B Rev 1.5", env={},
                           importable=have())
    assert line.startswith("tools[2] (set_desk_led): do = \"pwm\" on GPIO18")
    assert "native" in line and "pip install lgpio" in line
    for modules in (("lgpio",), ("RPi.GPIO",), ("pigpio",)):
        assert pin_warnings(TOOLS, board="Raspberry Pi 4", env={},
                            importable=have(*modules)) == []


def test_a_pi_5_needs_lgpio_for_every_gpio_tool() -> None:
    (line,) = pin_warnings(TOOLS, board="Raspberry Pi 5 Model B Rev 1.0", env={},
                           importable=have("RPi.GPIO"))
    assert "tools[0] (switch_fan)" in line and "tools[3] (is_front_door_closed)" in line
    assert "needs the lgpio pin driver" in line and "rpigpio" in line
    assert pin_warnings(TOOLS, board="Raspberry Pi 5 Model B", env={},
                        importable=have("lgpio")) == []


def test_no_gpio_tools_or_a_mock_factory_give_no_warning() -> None:
    no_gpio = [t for t in TOOLS if t.gpio is None]
    assert pin_warnings(no_gpio, board="Raspberry Pi 5", env={}, importable=have()) == []
    assert pin_warnings(TOOLS, board="Raspberry Pi 5", env={"GPIOZERO_PIN_FACTORY": "mock"},
                        importable=have()) == []


def test_board_model_reads_the_device_tree_format(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert board_model(model) == "Raspberry Pi 5 Model B Rev 1.0"
    assert board_model(tmp_path / "none") == ""


def test_check_config_warns_but_stays_valid() -> None:
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="native")
    res = subprocess.run([sys.executable, "-m", "edgevoice", "check-config", "--config",
                          str(PI_EXAMPLE)], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert "valid, 8 tool(s), 1 warning(s)" in res.stdout
    assert "warning: tools[2] (set_desk_led): do = \"pwm\"" in res.stderr
