"""Benchmark of push-to-talk: the ``ptt`` section of ``scripts/bench``.

The real :class:`~edgevoice.daemon.Daemon` on the demo's virtual sound card against the
loopback simulator, with a push-to-talk GPIO button on gpiozero's mock pins (the trigger's
own path: the edge is stamped on gpiozero's thread and handed to the loop). Each trial
presses the button while the daemon is idle, plays a question into the microphone and waits
for the reply and the end of the conversation.

* ``ptt.press_to_send_ms_p50`` / ``_p95`` — the press (the time the trigger stamped) → the
  first audio of the turn written to the WebSocket (the link's ``on_audio_written``: what
  ``wake_to_send_ms`` measures for the wake word), over ``presses`` trials; the connection
  is kept open between conversations (``idle_disconnect_s``), as it is in use.
* ``ptt.press_to_send_ms_cold`` — the first trial, with no connection open yet (the
  connection and ``session.update`` are made after the press; the audio waits for them).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from bench.conversation import _clip, _percentile, _Session, _silence, _with_daemon
from edgevoice.conversation.telemetry import TelemetryName

PIN = 17


async def _presses(presses: int) -> dict[str, Any]:
    question = _clip("question.wav")

    async def body(s: _Session) -> dict[str, Any]:
        pin = Device.pin_factory.pin(PIN)  # type: ignore[union-attr]
        figures: list[float] = []
        for i in range(presses):
            await s.idle()
            before = len(s.daemon.turns)
            pin.drive_low()
            await s.wait(TelemetryName.PUSH_TO_TALK, i + 1)
            pin.drive_high()
            s.rig.mic.feed(_silence(0.2) + question + _silence(1.0))
            while (len(s.daemon.turns) <= before
                   or s.daemon.turns[-1].wake_to_send_ms is None):
                await asyncio.sleep(0.005)
            figures.append(s.daemon.turns[-1].wake_to_send_ms or float("nan"))
            await s.wait(TelemetryName.REPLY_DONE, i + 1)
        warm = figures[1:] or figures
        return {"ptt.presses": len(figures),
                "ptt.press_to_send_ms_cold": round(figures[0], 1),
                "ptt.press_to_send_ms_p50": _percentile(warm, 50),
                "ptt.press_to_send_ms_p95": _percentile(warm, 95)}

    return await _with_daemon(
        {"default_say": "Okay."}, body, conversation={"follow_up_s": 0.5},
        triggers=[{"source": "gpio", "pin": PIN, "name": "bench button", "bounce_ms": 0}])


def run_ptt(presses: int = 10) -> dict[str, Any]:
    """Run the trials (about 5 s of real-time audio each) and return the figures."""
    before = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        return asyncio.run(_presses(presses))
    finally:
        Device.pin_factory.reset()  # type: ignore[union-attr]
        Device.pin_factory = before


TARGETS: list[tuple[str, str, float]] = [
    ("ptt.press_to_send_ms_p50", "<=", 30.0),
]
