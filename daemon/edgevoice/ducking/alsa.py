"""The ``alsa`` backend: lower one ALSA mixer control by ``duck_db`` and restore it.

It drives ``amixer`` (alsa-utils) rather than pyalsaaudio: pyalsaaudio 0.11 returns garbage
instead of an error for dB queries on controls without a dB scale, and a subprocess can be
killed when a driver hangs, where a thread cannot.

- Lowering is in dB when the control has a dB scale (``[-12.00dB]`` in amixer's output);
  otherwise the raw value above the minimum is scaled by ``10 ** (-duck_db / 20)`` (the
  amplitude ratio, exact for controls whose raw scale is linear) and a debug line says so.
- Restoring writes back the raw per-channel values read before ducking, so the control ends
  exactly where it was — unless the user changed it while ducked (it no longer reads what
  we set): then their setting is kept.
- Mute switches are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import subprocess
from dataclasses import dataclass

from edgevoice.ducking.base import DEFAULT_TIMEOUT, BaseDucker
from edgevoice.util import child_environ

log = logging.getLogger("edgevoice.ducking")

# "  Front Left: Playback 52 [60%] [-29.25dB] [on]" or "  Mono: Playback 87 [100%] [on]"
_CHANNEL = re.compile(
    r"^[ \t]+(?P<name>[^:\n]+): Playback (?P<raw>-?\d+) \[\d+%\]"
    r"(?: \[(?P<db>-?[\d.]+)dB\])?", re.MULTILINE)
_LIMITS = re.compile(r"^[ \t]+Limits: Playback (?P<lo>-?\d+) - (?P<hi>-?\d+)", re.MULTILINE)


@dataclass(frozen=True)
class MixerState:
    """One control as amixer reports it: raw value and dB (None: no dB scale) per channel."""

    raw: tuple[int, ...]
    db: tuple[float | None, ...]
    lo: int
    hi: int


def parse_sget(text: str, control: str) -> MixerState:
    """Parse ``amixer sget CONTROL`` output; ValueError if it has no playback volume."""
    channels = list(_CHANNEL.finditer(text))
    limits = _LIMITS.search(text)
    if not channels or limits is None:
        raise ValueError(f"mixer control {control!r} has no playback volume")
    return MixerState(
        raw=tuple(int(m["raw"]) for m in channels),
        db=tuple(float(m["db"]) if m["db"] is not None else None for m in channels),
        lo=int(limits["lo"]),
        hi=int(limits["hi"]),
    )


class AlsaDucker(BaseDucker):
    """Duck one ALSA mixer control (see module docs)."""

    backend = "alsa"

    def __init__(
        self,
        *,
        control: str = "Master",
        device: str = "default",
        duck_db: float = 15.0,
        amixer: str = "amixer",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``device``: the ALSA control device given to ``amixer -D`` (``default``,
        ``hw:0``, ``hw:Headphones``…); ``control``: a simple mixer control, ``Name`` or
        ``Name,index`` (``Master``, ``PCM``, ``Speaker,0``)."""
        super().__init__(timeout=timeout)
        if duck_db < 0:
            raise ValueError(f"ducking (alsa): duck_db must be >= 0, got {duck_db}")
        self.control = control
        self.device = device
        self.duck_db = float(duck_db)
        self.amixer = amixer
        # (original raw, raw read back after lowering); kept until restored.
        self._saved: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    def _argv(self, *args: str) -> list[str]:
        # "--" so that negative values ("-12.00dB") are not read as options.
        return [self.amixer, "-D", self.device, "--", *args]

    async def _amixer(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=child_environ())
        try:
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:  # cancelled by the timeout: do not leave it running
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(amixer_failure(self.device, self.control, proc.returncode, err))
        return out.decode(errors="replace")

    async def _read(self) -> MixerState:
        return parse_sget(await self._amixer("sget", self.control), self.control)

    def _target(self, state: MixerState) -> str:
        if all(db is not None for db in state.db):
            return ",".join(f"{db - self.duck_db:.2f}dB" for db in state.db if db is not None)
        log.debug("ducking (alsa): %s has no dB scale; scaling its raw value", self.control)
        ratio = 10.0 ** (-self.duck_db / 20.0)
        return ",".join(str(state.lo + math.floor((raw - state.lo) * ratio))
                        for raw in state.raw)

    async def _duck(self) -> None:
        if self._saved is not None:
            return  # an earlier restore failed: the remembered original stays the original
        before = await self._read()
        await self._amixer("sset", self.control, self._target(before))
        after = await self._read()
        self._saved = (before.raw, after.raw)

    async def _unduck(self) -> None:
        if self._saved is None:
            return
        original, lowered = self._saved
        now = await self._read()
        if now.raw == lowered:
            await self._amixer("sset", self.control, ",".join(map(str, original)))
        else:
            log.info("ducking (alsa): %s changed while ducked (%s, not our %s); keeping it",
                     self.control, now.raw, lowered)
        self._saved = None

    def _restore_blocking(self, timeout: float) -> None:
        if self._saved is None:
            return
        original, lowered = self._saved

        def amixer(*args: str) -> str:
            done = subprocess.run(self._argv(*args), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False,
                                  env=child_environ())
            if done.returncode != 0:
                raise RuntimeError(amixer_failure(self.device, self.control, done.returncode,
                                                  done.stderr))
            return done.stdout.decode(errors="replace")

        if parse_sget(amixer("sget", self.control), self.control).raw == lowered:
            amixer("sset", self.control, ",".join(map(str, original)))
        self._saved = None


def amixer_failure(device: str, control: str, code: int | None, err: bytes) -> str:
    """``amixer -D DEVICE 'CONTROL': REASON``: amixer's last stderr line, else its exit
    status (also the ``set_volume`` built-in's failure message)."""
    lines = err.decode(errors="replace").strip().splitlines()
    reason = lines[-1] if lines else f"exit status {code}"
    return f"amixer -D {device} {control!r}: {reason}"
