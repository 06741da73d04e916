"""The device's own voice (espeak-ng, a real child process): 24 kHz speech out, text only on
its standard input, bounded, and a clear error when it cannot speak."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgevoice.offline.speech import RATE, LocalVoice, SpeechError


async def test_a_phrase_becomes_24khz_speech_and_is_kept() -> None:
    voice = LocalVoice("en-us")
    pcm = await voice.render("Offline. The kitchen light is on.")
    samples = np.frombuffer(pcm, "<i2")
    assert 1.0 < len(samples) / RATE < 5.0
    assert np.abs(samples).max() > 3000  # speech, not silence
    assert await voice.render("Offline.  The kitchen light is on. ") is pcm  # kept
    # An argument value is said as words.
    assert await voice.render("rear_left") == await voice.render("rear left")


async def test_a_text_that_looks_like_an_option_is_only_said() -> None:
    # On the command line this would be an option; on standard input it is words.
    pcm = await LocalVoice("en-us").render("--help -w /tmp/x.wav")
    assert len(pcm) > RATE  # said (about a second), no file written, no usage text
    assert await LocalVoice().render("   ") == b""


async def test_a_missing_program_is_a_clear_error_and_an_unknown_voice_the_default() -> None:
    with pytest.raises(SpeechError, match="not installed"):
        await LocalVoice(program="no-such-espeak").render("hello")
    assert len(await LocalVoice("no-such-voice").render("hello")) > RATE // 2


async def test_espeak_gets_none_of_the_daemons_secrets(tmp_path, monkeypatch) -> None:
    seen = tmp_path / "environ"
    wrapper = tmp_path / "espeak-ng"
    wrapper.write_text(f"#!/bin/sh\nenv > {seen}\nexec {shutil.which('espeak-ng')} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("EDGEVOICE_TEST_SECRET", "s3cr3t")
    assert len(await LocalVoice(program=str(wrapper)).render("hello")) > RATE // 2
    environ = seen.read_text()
    assert "s3cr3t" not in environ and "PATH=" in environ
