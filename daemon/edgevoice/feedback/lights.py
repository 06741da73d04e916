"""A light for the daemon's state through gpiozero: one LED (its brightness) or an RGB LED
(its colour), with a pattern per state: off, solid, blink or pulse.

Guarantees: :meth:`Light.show` returns at once; every gpiozero call runs on one worker thread
of the light's own, in order, and patterns run in gpiozero's background threads, so neither a
pattern nor a slow pin ever blocks the event loop. A light that cannot be set up (a pin
gpiozero refuses) is logged once and stays dark; the daemon goes on.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gpiozero import PWMLED, RGBLED

from edgevoice.config.hands import LightConfig

log = logging.getLogger("edgevoice.feedback")


class Light:
    def __init__(self, cfg: LightConfig, *, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self.pin_factory = pin_factory
        self.device: Any = None
        self.shown: str | None = None  # the state last applied (on the worker thread)
        self.error: str | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgevoice-light")

    def start(self) -> None:
        self._executor.submit(self._open)

    def _open(self) -> None:
        try:
            if self.cfg.pins is not None:
                r, g, b = self.cfg.pins
                self.device = RGBLED(r, g, b, active_high=self.cfg.active_high,
                                     pin_factory=self.pin_factory)
            else:
                self.device = PWMLED(self.cfg.pin, active_high=self.cfg.active_high,
                                     pin_factory=self.pin_factory)
        except Exception as exc:  # gpiozero's errors have no common base
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("feedback.light: cannot be set up: %s", self.error)

    def show(self, state: str) -> None:
        self._executor.submit(self._apply, state)

    def _apply(self, state: str) -> None:
        dev = self.device
        if dev is None:
            return
        look = self.cfg.look(state)
        rgb = look.rgb()
        on: Any = rgb if isinstance(dev, RGBLED) else max(rgb)
        half = look.period_s / 2
        try:
            if look.pattern == "off" or max(rgb) == 0:
                dev.off()
            elif look.pattern == "solid":
                if isinstance(dev, RGBLED):
                    dev.color = on
                else:
                    dev.value = on
            elif look.pattern == "blink":
                if isinstance(dev, RGBLED):
                    dev.blink(on_time=half, off_time=half, on_color=on, background=True)
                else:
                    dev.blink(on_time=half, off_time=half, background=True)
            else:
                if isinstance(dev, RGBLED):
                    dev.pulse(fade_in_time=half, fade_out_time=half, on_color=on,
                              background=True)
                else:
                    dev.pulse(fade_in_time=half, fade_out_time=half, background=True)
            self.shown = state
        except Exception as exc:
            log.warning("feedback.light: cannot show %s: %s", state, exc)

    async def aclose(self) -> None:
        def close() -> None:
            if self.device is not None:
                try:
                    self.device.close()
                except Exception as exc:
                    log.debug("closing the light: %s", exc)
        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)

    def status(self) -> dict[str, Any]:
        kind = "rgb" if self.cfg.pins is not None else "led"
        return {"kind": kind, "state": self.shown, "error": self.error}
