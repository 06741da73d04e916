"""GPIO tools through gpiozero with its own mock pin factory (the one mock allowed: there are
no pins here). The real gpiozero device classes run; only the pins are simulated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edgevoice.tools import ToolBox, ToolSpec
from support import until

pytestmark = pytest.mark.timeout(30)

STATE = {"type": "object", "properties": {"state": {"type": "string",
                                                    "enum": ["on", "off", "toggle"]}},
         "required": ["state"]}
PERCENT = {"type": "object", "properties": {"percent": {"type": "integer", "minimum": 0,
                                                        "maximum": 100}},
           "required": ["percent"]}


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


def spec(name: str, parameters: dict[str, Any] | None = None, **gpio: Any) -> ToolSpec:
    fields: dict[str, Any] = {"name": name, "gpio": gpio}
    if parameters is not None:
        fields["parameters"] = parameters
    return ToolSpec.model_validate(fields)


async def call(box: ToolBox, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    call.n += 1  # type: ignore[attr-defined]
    return json.loads(await box.call(f"c{call.n}", name, json.dumps(args or {})))  # type: ignore[attr-defined]


call.n = 0  # type: ignore[attr-defined]


async def test_a_relay_switches_on_off_and_toggles(pins: MockFactory) -> None:
    box = ToolBox([spec("fan", STATE, pin=17, do="{state}"),
                   spec("fan_on", pin="GPIO17", do="on")], pin_factory=pins)
    pin = pins.pin(17)
    assert await call(box, "fan", {"state": "on"}) == {"ok": True, "pin": "GPIO17", "value": 1}
    assert pin.state == 1
    assert await call(box, "fan", {"state": "toggle"}) == {"ok": True, "pin": "GPIO17",
                                                            "value": 0}
    assert pin.state == 0
    # Another tool on the same pin (spelled differently) drives the same device.
    assert (await call(box, "fan_on"))["value"] == 1 and pin.state == 1
    assert (await call(box, "fan", {"state": "off"}))["value"] == 0 and pin.state == 0
    bad = await call(box, "fan", {"state": "explode"})
    assert bad["ok"] is False and bad["field"] == "state" and pin.state == 0
    await box.aclose()


async def test_boolean_placeholder_and_active_low(pins: MockFactory) -> None:
    onoff = {"type": "object", "properties": {"on": {"type": "boolean"}}, "required": ["on"]}
    box = ToolBox([spec("lamp", onoff, pin=5, do="{on}", active_high=False)],
                  pin_factory=pins)
    assert await call(box, "lamp", {"on": True}) == {"ok": True, "pin": "GPIO5", "value": 1}
    assert pins.pin(5).state == 0  # active low: "on" drives the pin low
    await call(box, "lamp", {"on": False})
    assert pins.pin(5).state == 1
    await box.aclose()


async def test_a_pulse_turns_the_pin_on_then_off(pins: MockFactory) -> None:
    box = ToolBox([spec("garage", pin=22, do="pulse", pulse_s=0.2)], pin_factory=pins)
    pin = pins.pin(22)
    assert await call(box, "garage") == {"ok": True, "pin": "GPIO22", "pulsed_s": 0.2}
    await until(lambda: pin.state == 0 and len(pin.states) >= 3, timeout=5,
                what="the pulse to end")
    # MockPin records every change with its time: low (init), high, low after ~0.2 s.
    assert [s.state for s in pin.states] == [0, 1, 0]
    assert 0.15 <= pin.states[2].timestamp - pin.states[1].timestamp < 1.0
    await box.aclose()


async def test_pwm_sets_the_duty_cycle_from_a_percent(pins: MockFactory) -> None:
    box = ToolBox([spec("led", PERCENT, pin=18, do="pwm", value="{percent}", value_max=100),
                   spec("led_off", pin=18, do="off"),
                   spec("led_half", pin=18, do="pwm", value=0.5)], pin_factory=pins)
    pin = pins.pin(18)
    assert await call(box, "led", {"percent": 40}) == {"ok": True, "pin": "GPIO18",
                                                       "value": 0.4}
    assert pin.state == pytest.approx(0.4) and pin.frequency == 100
    assert (await call(box, "led_half"))["value"] == 0.5 and pin.state == pytest.approx(0.5)
    assert (await call(box, "led_off"))["value"] == 0 and pin.state == 0  # same PWM device
    refused = await call(box, "led", {"percent": 140})
    assert refused["ok"] is False and refused["field"] == "percent"
    await box.aclose()


async def test_an_input_is_read(pins: MockFactory) -> None:
    box = ToolBox([spec("door", pin=27, do="read"),
                   spec("button", pin=4, do="read", pull_up=True)], pin_factory=pins)
    # The first call sets the pin up as an input (pulled down: reads 0).
    assert await call(box, "door") == {"ok": True, "pin": "GPIO27", "value": 0}
    pins.pin(27).drive_high()
    assert (await call(box, "door"))["value"] == 1
    pins.pin(27).drive_low()
    assert (await call(box, "door"))["value"] == 0
    # With the pull-up, an unpressed button reads high: inactive, 0; pressed pulls it low.
    assert (await call(box, "button"))["value"] == 0
    pins.pin(4).drive_low()
    assert (await call(box, "button"))["value"] == 1
    await box.aclose()


async def test_closing_releases_the_pins(pins: MockFactory) -> None:
    box = ToolBox([spec("fan", pin=17, do="on")], pin_factory=pins)
    await call(box, "fan")
    await box.aclose()
    # Released: another device may take the pin now.
    again = ToolBox([spec("fan", pin=17, do="off")], pin_factory=pins)
    assert (await call(again, "fan"))["ok"] is True
    await again.aclose()


async def test_a_pin_in_use_elsewhere_is_an_error_output(pins: MockFactory) -> None:
    from gpiozero import LED

    led = LED(17, pin_factory=pins)
    box = ToolBox([spec("fan", pin=17, do="on")], pin_factory=pins)
    output = await call(box, "fan")
    assert output["ok"] is False and output["error"].startswith("GPIO 17: GPIOPinInUse")
    led.close()
    await box.aclose()


def test_input_and_output_on_one_pin_is_refused() -> None:
    with pytest.raises(ValueError, match="GPIO17 is used as an input by tool a and as an "
                                         "output by tool b"):
        ToolBox([spec("a", pin=17, do="read"), spec("b", pin="BCM17", do="on")])


@pytest.mark.skipif(Path("/proc/device-tree/model").exists(),
                    reason="real GPIO hardware here: this test would touch a real pin")
async def test_without_gpio_hardware_the_call_fails_with_a_clear_message() -> None:
    box = ToolBox([spec("door", pin=27, do="read")])  # gpiozero's default factory
    with pytest.warns(Warning):  # gpiozero warns about each factory it falls back from
        output = await call(box, "door")
    assert output == {"ok": False, "error": "GPIO 27: BadPinFactory: Unable to load any "
                                            "default pin factory!"}
    await box.aclose()
