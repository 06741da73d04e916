"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support import espeak


@pytest.fixture
def speech() -> Callable[..., bytes]:
    """``speech(text, rate=16000, voice="en-us")``: real espeak-ng speech as PCM16 mono."""
    return espeak
