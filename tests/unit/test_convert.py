"""Resampling quality/streaming and G.711 against sox's own codec."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgevoice.audio import g711
from edgevoice.audio.convert import (
    Resampler,
    bytes_per_second,
    decode,
    encode,
    resample,
    wire_rate,
)
from support import need_tool


def tone(rate: int, seconds: float = 1.0, freq: float = 1000.0, amp: float = 16000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def snr_db(pcm: bytes, rate: int, freq: float = 1000.0) -> float:
    """SNR of a tone: least-squares fit of the tone, residual = noise + distortion.
    The first and last 50 ms (filter edges) are left out."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    edge = rate // 20
    x = x[edge:-edge]
    n = np.arange(x.size)
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate),
                      np.ones_like(n, dtype=np.float64)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit**2) / np.sum((x - fit) ** 2)))


def stream(pcm: bytes, in_rate: int, out_rate: int, chunk_ms: int = 20) -> bytes:
    rs = Resampler(in_rate, out_rate)
    step = in_rate * chunk_ms // 1000 * 2
    out = [rs.process(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    return b"".join(out) + rs.flush()


@pytest.mark.parametrize("chain", [(16000, 24000, 48000, 16000), (48000, 24000, 16000, 48000),
                                   (24000, 16000, 24000), (16000, 48000, 16000)])
def test_tone_keeps_60db_through_chains(chain):
    pcm = tone(chain[0])
    assert snr_db(pcm, chain[0]) > 80  # the int16 source itself
    for a, b in zip(chain, chain[1:], strict=False):
        pcm = stream(pcm, a, b)
        assert abs(len(pcm) // 2 - b) <= 2  # still 1 s of audio
        assert snr_db(pcm, b) >= 60, (a, b)


@pytest.mark.parametrize("rates", [(24000, 16000), (16000, 48000), (8000, 24000)])
@pytest.mark.parametrize("chunk_ms", [7, 20, 100])
def test_streaming_equals_one_shot_without_clicks(rates, chunk_ms):
    a, b = rates
    pcm = tone(a, 0.5)
    chunked = np.frombuffer(stream(pcm, a, b, chunk_ms), dtype="<i2").astype(int)
    whole = np.frombuffer(resample(pcm, a, b), dtype="<i2").astype(int)
    assert abs(chunked.size - whole.size) <= 2
    n = min(chunked.size, whole.size)
    edge = b // 50
    # Same signal to within a couple of LSB away from the stream edges...
    assert np.max(np.abs(chunked[edge : n - edge] - whole[edge : n - edge])) <= 2
    # ...and no click: the sample-to-sample step never exceeds the tone's own maximum.
    max_step = 16000 * 2 * np.pi * 1000 / b * 1.05
    assert np.max(np.abs(np.diff(chunked[edge:-edge]))) <= max_step


def test_resampler_is_deterministic():
    pcm = tone(8000, 0.3)
    assert stream(pcm, 8000, 24000) == stream(pcm, 8000, 24000)


def test_same_rate_is_passthrough():
    pcm = tone(24000, 0.1)
    assert Resampler(24000, 24000).process(pcm) == pcm
    assert resample(pcm, 16000, 16000) == pcm


ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def run_sox(data: bytes, in_args: list[str], out_args: list[str]) -> bytes:
    sox = need_tool("sox", "apt-get install sox (or run scripts/setup)")
    cmd = [sox, "-D", "-t", "raw", "-r", "8000", "-c", "1", *in_args, "-",
           "-t", "raw", *out_args, "-"]
    return subprocess.run(cmd, input=data, capture_output=True, check=True, timeout=30).stdout


@pytest.mark.parametrize("law,enc", [("ulaw", "u-law"), ("alaw", "a-law")])
def test_g711_encode_matches_sox_for_every_sample(law, enc):
    ours = getattr(g711, f"{law}_encode")(ALL_SAMPLES)
    theirs = run_sox(ALL_SAMPLES, ["-e", "signed-integer", "-b", "16"], ["-e", enc, "-b", "8"])
    assert ours == theirs


@pytest.mark.parametrize("law,enc", [("ulaw", "u-law"), ("alaw", "a-law")])
def test_g711_decode_matches_sox_for_every_code(law, enc):
    ours = getattr(g711, f"{law}_decode")(ALL_CODES).astype("<i2").tobytes()
    theirs = run_sox(ALL_CODES, ["-e", enc, "-b", "8"], ["-e", "signed-integer", "-b", "16"])
    assert ours == theirs


@pytest.mark.parametrize("fmt", ["g711_ulaw", "g711_alaw"])
def test_wire_round_trip(fmt):
    pcm = tone(8000, 0.2)
    back = np.frombuffer(decode(encode(pcm, fmt), fmt), dtype="<i2").astype(int)
    orig = np.frombuffer(pcm, dtype="<i2").astype(int)
    assert snr_db(decode(encode(pcm, fmt), fmt), 8000) > 30  # G.711 is ~38 dB on a tone
    assert np.max(np.abs(back - orig)) <= 1024


@pytest.mark.parametrize("fmt,pcm16_rate,expected", [
    ("pcm16", 24000, 48000), ("pcm16", 16000, 32000), ("pcm16_16000hz", 24000, 32000),
    ("pcm16_8000hz", 24000, 16000), ("g711_ulaw", 24000, 8000), ("g711_alaw", 16000, 8000),
])
def test_bytes_per_second_of_wire_formats(fmt: str, pcm16_rate: int, expected: int) -> None:
    assert bytes_per_second(fmt, pcm16_rate) == expected
    # One second of PCM16 at the format's rate encodes to exactly that many wire bytes.
    assert len(encode(bytes(2 * wire_rate(fmt, pcm16_rate)), fmt)) == expected


def test_bytes_per_second_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        bytes_per_second("mp3")
