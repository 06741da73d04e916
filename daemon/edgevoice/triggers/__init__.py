"""Triggers besides the wake word: push-to-talk and mute buttons, switches and keys.

:class:`Triggers` builds one :class:`~edgevoice.triggers.gpio.GpioTrigger` or
:class:`~edgevoice.triggers.keys.KeyTrigger` per ``[[triggers]]`` entry and reports, on the
event loop, ``on_talk(pressed, t, label)`` for push-to-talk and ``on_mute(muted, t, label)``
for mute (``muted`` None: a press toggles; True/False: a switch's position).

Guarantees: a trigger that cannot be set up (a pin gpiozero refuses) is logged with its
key and left out — the others and the daemon go on; an input device that is missing is
waited for (see :mod:`edgevoice.triggers.keys`); :meth:`Triggers.aclose` releases every
pin and device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from edgevoice.config.hands import TriggerConfig
from edgevoice.triggers.gpio import GpioTrigger
from edgevoice.triggers.keys import KeyTrigger, find_device

log = logging.getLogger("edgevoice.triggers")

TalkHandler = Callable[[bool, float, str], None]
MuteHandler = Callable[["bool | None", float, str], None]


def trigger_notes(triggers: Sequence[TriggerConfig]) -> list[str]:
    """What ``check-config`` says about the triggers beyond the file itself: input devices
    missing now (not an error: the daemon waits for them). One line each, naming the key."""
    notes = []
    for i, t in enumerate(triggers):
        if t.source == "input" and t.device is not None:
            try:
                path = find_device(t.device)
            except LookupError as exc:
                notes.append(f"triggers[{i}].device: {exc} now (edgevoice run waits for it)")
                continue
            if not os.access(path, os.R_OK):
                notes.append(f"triggers[{i}].device: {path} is not readable by this user "
                             f"(the service user needs group input)")
    return notes


class Triggers:
    """The configured triggers, started on the running loop. See the module docstring."""

    def __init__(self, configs: Sequence[TriggerConfig], *, on_talk: TalkHandler,
                 on_mute: MuteHandler, clock: Callable[[], float],
                 backoff: Sequence[float] = (0.5, 1.0, 2.0, 5.0),
                 pin_factory: Any = None) -> None:
        self.configs = list(configs)
        self.on_talk = on_talk
        self.on_mute = on_mute
        self.clock = clock
        self.backoff = backoff
        self.pin_factory = pin_factory
        self.gpio: list[tuple[TriggerConfig, str, GpioTrigger]] = []
        self.keys: list[tuple[TriggerConfig, str, KeyTrigger]] = []
        self.failed: dict[str, str] = {}  # label → why it could not be set up

    def start(self) -> None:
        """Set up every trigger (on the loop). Switches report their position now."""
        for i, cfg in enumerate(self.configs):
            label = cfg.label(i)
            handler = self._handler(cfg, label)
            try:
                if cfg.source == "gpio":
                    assert cfg.pin is not None
                    trig = GpioTrigger(cfg.pin, pull_up=cfg.pull_up, bounce_ms=cfg.bounce_ms,
                                       on_change=handler, clock=self.clock,
                                       pin_factory=self.pin_factory, label=label)
                    self.gpio.append((cfg, label, trig))
                    if cfg.switch:
                        handler(trig.pressed, self.clock())
                else:
                    assert cfg.device is not None
                    key = KeyTrigger(cfg.device, cfg.key, on_key=handler,
                                     backoff=self.backoff, clock=self.clock, label=label)
                    key.start()
                    self.keys.append((cfg, label, key))
            except Exception as exc:  # gpiozero's errors have no common base
                self.failed[label] = f"{type(exc).__name__}: {exc}"
                log.error("triggers[%d] (%s): cannot be set up: %s", i, label,
                          self.failed[label])

    def _handler(self, cfg: TriggerConfig, label: str) -> Callable[[bool, float], None]:
        if cfg.action == "talk":
            return lambda pressed, t: self.on_talk(pressed, t, label)
        if cfg.switch:
            return lambda closed, t: self.on_mute(closed, t, label)
        return lambda pressed, t: self.on_mute(None, t, label) if pressed else None

    async def aclose(self) -> None:
        for _, _, trig in self.gpio:
            try:
                trig.close()
            except Exception:
                log.exception("closing button %s failed", trig.label)
        for _, _, key in self.keys:
            await key.aclose()
        self.gpio.clear()
        self.keys.clear()

    def status(self) -> list[dict[str, Any]]:
        """One entry per trigger for the status snapshot."""
        out: list[dict[str, Any]] = []
        for cfg, label, trig in self.gpio:
            out.append({"name": label, "source": "gpio", "action": cfg.action,
                        **trig.status()})
        for cfg, label, key in self.keys:
            out.append({"name": label, "source": "input", "action": cfg.action,
                        **key.status()})
        for label, why in self.failed.items():
            out.append({"name": label, "state": "failed", "reason": why})
        return out
