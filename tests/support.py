"""Helpers shared by the test modules (tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from edgevoice.audio.convert import read_wav, resample
from edgevoice.audio.virtual import VirtualAlsa


@cache
def espeak(text: str, rate: int = 16000, voice: str = "en-us") -> bytes:
    """Real espeak-ng speech for ``text`` as PCM16 mono at ``rate`` (cached per process)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       capture_output=True)
        pcm, native = read_wav(wav)
    return resample(pcm, native, rate)


def use_alsa(va: VirtualAlsa, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ALSA (and so PortAudio) at the virtual devices for this test."""
    for key, value in va.env().items():
        monkeypatch.setenv(key, value)


async def until(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``cond`` every 5 ms until it is truthy and return its value; AssertionError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)
    return value


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """:func:`until` for code without an event loop (blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.01)
    return value
