"""GPIO buttons and switches through gpiozero (``Button``: pin, pull-up, bounce time).

gpiozero calls ``when_pressed`` / ``when_released`` on its own thread; :class:`GpioTrigger`
stamps the time there and hands the change to the loop (``call_soon_threadsafe``): the
handler always runs on the loop, in the order the edges came. A switch reports its position
at start too (a closed mute switch mutes at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gpiozero import Button

log = logging.getLogger("edgevoice.triggers")


class GpioTrigger:
    """``on_change(pressed, t)`` on the loop for each edge of the button on ``pin``.
    ``pin_factory`` None: gpiozero's default (the board's pins). Raises what gpiozero raises
    when the pin cannot be had (the caller logs it and goes on without this trigger)."""

    def __init__(self, pin: int | str, *, pull_up: bool, bounce_ms: int,
                 on_change: Callable[[bool, float], None], clock: Callable[[], float],
                 pin_factory: Any = None, label: str = "") -> None:
        self.pin = pin
        self.label = label or f"GPIO {pin}"
        self.on_change = on_change
        self.clock = clock
        self._loop = asyncio.get_running_loop()
        self.button = Button(pin, pull_up=pull_up,
                             bounce_time=bounce_ms / 1000 if bounce_ms else None,
                             pin_factory=pin_factory)
        self.button.when_pressed = lambda: self._edge(True)
        self.button.when_released = lambda: self._edge(False)

    @property
    def pressed(self) -> bool:
        return bool(self.button.is_pressed)

    def _edge(self, pressed: bool) -> None:  # gpiozero's thread
        t = self.clock()
        try:
            self._loop.call_soon_threadsafe(self._deliver, pressed, t)
        except RuntimeError:  # the loop is closed: the daemon is gone
            pass

    def _deliver(self, pressed: bool, t: float) -> None:
        try:
            self.on_change(pressed, t)
        except Exception:
            log.exception("button %s: handler failed", self.label)

    def close(self) -> None:
        self.button.when_pressed = None
        self.button.when_released = None
        self.button.close()

    def status(self) -> dict[str, Any]:
        return {"pin": str(self.pin), "state": "ok", "pressed": self.pressed}
