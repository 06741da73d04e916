"""What the local recogniser says of an utterance (no PocketSphinx here: the daemon gets
these from the recogniser's process without loading the recogniser itself)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Command:
    """A recognised command."""

    tool: str
    arguments: dict[str, Any]
    text: str
    confidence: float
    decode_ms: float = 0.0


@dataclass(frozen=True)
class Rejection:
    """Nothing to run: ``reason`` is ``no-speech``, ``out-of-grammar`` (no phrase of the
    grammar, or one hassil does not match), ``low-confidence``, ``poor-fit``, or
    ``no-recogniser`` (none was built)."""

    reason: str
    text: str = ""
    confidence: float | None = None
    decode_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


Result = Command | Rejection
