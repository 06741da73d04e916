"""Shared fixtures: speech clips made with espeak-ng, and link/simulator helpers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from edgevoice.audio.convert import read_wav, resample

FIXTURES = Path(__file__).parent / "fixtures"


def espeak_pcm(text: str, rate: int, tmp_path: Path, voice: str = "en-us") -> bytes:
    """Speech for ``text`` as PCM16 mono at ``rate`` (real espeak-ng output)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it)")
    wav = tmp_path / f"speech-{abs(hash((text, voice)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                   capture_output=True)
    pcm, native = read_wav(wav)
    return resample(pcm, native, rate)


@pytest.fixture
def speech(tmp_path: Path) -> Callable[..., bytes]:
    def make(text: str, rate: int = 16000, voice: str = "en-us") -> bytes:
        return espeak_pcm(text, rate, tmp_path, voice)

    return make
