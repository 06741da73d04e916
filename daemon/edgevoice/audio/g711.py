"""G.711 μ-law and A-law codecs in numpy (``audioop`` is gone in Python 3.13).

Decoding is a 256-entry table lookup; encoding is a 65536-entry table lookup indexed by
the 16-bit sample, so both are exact, allocation-light and run in O(n). The tables follow
ITU-T G.711 (the same segment encoding sox and audioop use).
"""

from __future__ import annotations

import numpy as np

_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def _ulaw_encode_scalar(sample: int) -> int:
    # Round the 16-bit sample to 14 bits (as sox does) and clip, then the classic segment search.
    value = min((sample + 2) >> 2, 8191)
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + 0x21
    seg = _segment(value, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw_decode_scalar(byte: int) -> int:
    byte = ~byte & 0xFF
    t = (((byte & 0x0F) << 3) + 0x84) << ((byte & 0x70) >> 4)
    return (0x84 - t) if byte & 0x80 else (t - 0x84)


def _alaw_encode_scalar(sample: int) -> int:
    # Round the 16-bit sample to 13 bits (as sox does) and clip.
    value = min((sample + 4) >> 3, 4095)
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    seg = _segment(value, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (value >> 1) & 0x0F if seg < 2 else (value >> seg) & 0x0F
    return aval ^ mask


def _alaw_decode_scalar(byte: int) -> int:
    byte ^= 0x55
    t = (byte & 0x0F) << 4
    seg = (byte & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if byte & 0x80 else -t


_SAMPLES = np.arange(-32768, 32768, dtype=np.int32)
_ULAW_ENC = np.array([_ulaw_encode_scalar(int(s)) for s in _SAMPLES], dtype=np.uint8)
_ALAW_ENC = np.array([_alaw_encode_scalar(int(s)) for s in _SAMPLES], dtype=np.uint8)
_ULAW_DEC = np.array([_ulaw_decode_scalar(b) for b in range(256)], dtype=np.int16)
_ALAW_DEC = np.array([_alaw_decode_scalar(b) for b in range(256)], dtype=np.int16)


def _as_index(pcm: bytes | np.ndarray) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) \
        else np.asarray(pcm, dtype=np.int16)
    return samples.astype(np.int32) + 32768


def ulaw_encode(pcm: bytes | np.ndarray) -> bytes:
    """PCM16 little-endian (bytes or int16 array) → μ-law bytes, one per sample."""
    return _ULAW_ENC[_as_index(pcm)].tobytes()


def alaw_encode(pcm: bytes | np.ndarray) -> bytes:
    """PCM16 little-endian (bytes or int16 array) → A-law bytes, one per sample."""
    return _ALAW_ENC[_as_index(pcm)].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    """A-law bytes → int16 samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
