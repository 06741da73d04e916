"""Built-in tools: ``get_time``, ``set_volume`` and ``stop_conversation``.

``set_volume`` drives one ALSA simple mixer control with ``amixer`` (as the ``alsa`` ducking
backend does, and for the same reason: a hung driver can be killed). Its subprocess runs in
its own process group, which is killed when the call is cancelled, and sees only the
daemon's audio and locale variables (:data:`edgevoice.util.AUDIO_ENV`), never a credential.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import re
import subprocess
from collections.abc import Callable
from typing import Any

from edgevoice.config.tools import MixerSettings
from edgevoice.ducking.alsa import amixer_failure
from edgevoice.tools.actions import ToolFailure, kill_group
from edgevoice.util import child_environ

_PERCENT = re.compile(r"\[(\d+)%\]")


def get_time(now: dt.datetime | None = None) -> dict[str, Any]:
    """Local time as ISO 8601 with its UTC offset, the weekday, and ``clock``: the hours
    and minutes as said (``14:05``; an offline answer's ``{output.clock}``)."""
    local = (now or dt.datetime.now()).astimezone()
    return {"time": local.isoformat(timespec="seconds"), "weekday": local.strftime("%A"),
            "clock": local.strftime("%H:%M")}


async def set_volume(mixer: MixerSettings, percent: int, amixer: str = "amixer") -> dict[str, Any]:
    """``amixer -D DEVICE -- sset CONTROL N%``; the level amixer reports back is returned."""
    argv = [amixer, "-D", mixer.device, "--", "sset", mixer.control, f"{percent}%"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env=child_environ())
    except OSError as exc:
        raise ToolFailure(f"cannot run {amixer}: {exc.strerror or exc}") from None
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled by the timeout
            kill_group(proc.pid)
            await proc.wait()
    if proc.returncode != 0:
        raise ToolFailure(amixer_failure(mixer.device, mixer.control, proc.returncode, err))
    levels = [int(p) for p in _PERCENT.findall(out.decode(errors="replace"))]
    if not levels:
        raise ToolFailure(f"amixer -D {mixer.device} {mixer.control!r}: has no playback volume")
    return {"volume_percent": round(sum(levels) / len(levels))}


async def stop_conversation(hook: Callable[[], object] | None) -> dict[str, Any]:
    """Call the daemon's hook (a plain function or a coroutine function)."""
    if hook is None:
        raise ToolFailure("stop_conversation is not available on this device")
    result = hook()
    if inspect.isawaitable(result):
        await result
    return {}
