"""Sample-format helpers shared by the pipeline, the Voice Live link and the simulator.

Internally edgevoice moves audio as PCM16 little-endian mono ``bytes``. Voice Live names its
wire formats (``pcm16`` = 24 kHz, ``pcm16_16000hz``, ``pcm16_8000hz``, ``g711_ulaw`` and
``g711_alaw`` at 8 kHz); :func:`wire_rate`, :func:`encode` and :func:`decode` map between the
two, and :func:`bytes_per_second` turns a byte count of wire audio into time.
:class:`Resampler` wraps soxr's streaming resampler so chunk borders never click.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from edgevoice.audio import g711

#: Output formats of Voice Live 2025-10-01 and their sample rates.
OUTPUT_FORMAT_RATES: dict[str, int] = {
    "pcm16": 24000,
    "pcm16_24000hz": 24000,
    "pcm16_16000hz": 16000,
    "pcm16_8000hz": 8000,
    "g711_ulaw": 8000,
    "g711_alaw": 8000,
}


def wire_rate(fmt: str, pcm16_rate: int = 24000) -> int:
    """Sample rate of a wire format; ``pcm16`` on the input side takes ``pcm16_rate``."""
    if fmt == "pcm16":
        return pcm16_rate
    try:
        return OUTPUT_FORMAT_RATES[fmt]
    except KeyError:
        raise ValueError(f"unknown audio format {fmt!r}") from None


def bytes_per_second(fmt: str, pcm16_rate: int = 24000) -> int:
    """Wire bytes per second of audio in ``fmt`` (``pcm16`` on the input side takes
    ``pcm16_rate``): G.711 carries one byte per sample, PCM16 two. Raises ValueError for an
    unknown format, as :func:`wire_rate`."""
    return wire_rate(fmt, pcm16_rate) * (1 if fmt.startswith("g711") else 2)


def encode(pcm: bytes, fmt: str) -> bytes:
    """PCM16 LE mono → wire bytes of ``fmt`` (no resampling)."""
    if fmt == "g711_ulaw":
        return g711.ulaw_encode(pcm)
    if fmt == "g711_alaw":
        return g711.alaw_encode(pcm)
    if fmt.startswith("pcm16"):
        return pcm
    raise ValueError(f"unknown audio format {fmt!r}")


def decode(data: bytes, fmt: str) -> bytes:
    """Wire bytes of ``fmt`` → PCM16 LE mono (no resampling). Odd trailing bytes of PCM16 are
    dropped rather than raising: a malformed delta must not stop playback."""
    if fmt == "g711_ulaw":
        return g711.ulaw_decode(data).astype("<i2").tobytes()
    if fmt == "g711_alaw":
        return g711.alaw_decode(data).astype("<i2").tobytes()
    if fmt.startswith("pcm16"):
        return data[: len(data) - (len(data) % 2)]
    raise ValueError(f"unknown audio format {fmt!r}")


def _to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) * np.float32(1 / 32768)


def _to_pcm16(samples: np.ndarray) -> bytes:
    # Round and clip ourselves: soxr's own int16 output adds TPDF dither, which makes the
    # output random in the last bit (two runs over the same input differ).
    scaled = np.clip(np.rint(samples * np.float32(32768)), -32768, 32767)
    return scaled.astype("<i2").tobytes()


class Resampler:
    """Streaming PCM16 resampler (soxr). ``process`` may be called with chunks of any size;
    the filter state carries across chunks, so there are no clicks at chunk borders.
    Same-rate streams pass through untouched. Deterministic: soxr runs in float32 and the
    result is rounded (no dither), so the same input gives the same bytes.
    Not thread-safe: one stream per owner."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32",
                                     quality=quality)
        )

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        samples = _to_float(np.frombuffer(pcm, dtype="<i2"))
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels)
        return _to_pcm16(self._stream.resample_chunk(samples, last=last))

    def flush(self) -> bytes:
        """Drain the filter's tail at the end of a stream."""
        return self.process(b"", last=True)


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """One-shot resampling of a whole PCM16 mono buffer (deterministic, as Resampler)."""
    if in_rate == out_rate:
        return pcm
    samples = _to_float(np.frombuffer(pcm, dtype="<i2"))
    return _to_pcm16(soxr.resample(samples, in_rate, out_rate))


def read_wav(path: str | Path | BinaryIO) -> tuple[bytes, int]:
    """Read a PCM16 WAV (a file, or a binary stream) as mono PCM16 bytes and its rate
    (stereo is averaged down). A header whose length is a placeholder (a WAV written to a
    pipe) reads what is there.

    Raises ValueError naming the file for anything that is not 16-bit PCM (also for a file
    that is no WAV at all); OSError when it cannot be read."""
    try:
        with wave.open(path if not isinstance(path, str | Path) else str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError(f"{path}: expected 16-bit PCM WAV, got "
                                 f"{8 * w.getsampwidth()}-bit")
            rate, channels = w.getframerate(), w.getnchannels()
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc or 'truncated'})") from None
    if channels > 1:
        data = downmix(data, channels)
    return data, rate


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    """Write PCM16 mono bytes as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def downmix(pcm: bytes, channels: int) -> bytes:
    """Interleaved PCM16 with ``channels`` channels → mono by averaging."""
    if channels == 1:
        return pcm
    frames = np.frombuffer(pcm, dtype="<i2")[: len(pcm) // 2 // channels * channels]
    mono = frames.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return np.round(mono).astype("<i2").tobytes()


SILENCE_DB = -100.0


def level_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16 audio in dBFS (``SILENCE_DB``, -100, for digital silence)."""
    if len(pcm) < 2:
        return SILENCE_DB
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else SILENCE_DB
