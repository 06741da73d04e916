"""What became of a reply: its outcome class and its token usage, from ``response.done``.

Pure functions of the typed events; the core uses them and so can any reader of the wire.

Guarantees:
- :func:`reply_reason` returns the service's own words (``status_details.reason``, else its
  error's ``type``, else ``status_details.type``), never a paraphrase; None for a reply
  without ``status_details``.
- :func:`cue_for` maps only ``failed`` and ``incomplete`` to a cue: a completed reply and a
  cancelled one (the user interrupted, or the daemon cancelled it) never sound one.
- :func:`usage_fields` always returns every :data:`USAGE_FIELDS` key as an int (missing
  parts are 0), or nothing without a usage block.
"""

from __future__ import annotations

from edgevoice.wire import events as ev

#: The cue classes; each has its own earcon (and, optionally, a spoken line).
CUES = ("failed", "filtered", "not_understood", "limit")

#: The token counts of a ``reply done`` entry (the names the timeline and the status use).
USAGE_FIELDS = ("input_tokens", "output_tokens", "input_text_tokens", "input_audio_tokens",
                "output_text_tokens", "output_audio_tokens", "cached_tokens")

CONTENT_FILTER = "content_filter"


def reply_reason(response: ev.Response) -> str | None:
    """Why the reply ended as it did, as the service said it (see the module docstring)."""
    details = response.status_details
    if details is None:
        return None
    if details.reason:
        return details.reason
    if details.error is not None and details.error.type:
        return details.error.type
    return details.type or None


def cue_for(response: ev.Response) -> str | None:
    """``"filtered"`` for a reply the content filter stopped, ``"failed"`` for any other
    failed or incomplete one (an error, ``max_output_tokens``), None otherwise."""
    if response.status not in ("failed", "incomplete"):
        return None
    details = response.status_details
    words = {reply_reason(response)}
    if details is not None and details.error is not None:
        words |= {details.error.code, details.error.type}
    return "filtered" if CONTENT_FILTER in words else "failed"


def usage_fields(usage: ev.Usage | None) -> dict[str, int]:
    """The token counts of ``usage`` (see :data:`USAGE_FIELDS`); {} without one."""
    if usage is None:
        return {}
    inp = usage.input_token_details
    out = usage.output_token_details

    def n(value: int | None) -> int:
        return value if isinstance(value, int) and value > 0 else 0

    return {
        "input_tokens": n(usage.input_tokens),
        "output_tokens": n(usage.output_tokens),
        "input_text_tokens": n(inp.text_tokens) if inp else 0,
        "input_audio_tokens": n(inp.audio_tokens) if inp else 0,
        "output_text_tokens": n(out.text_tokens) if out else 0,
        "output_audio_tokens": n(out.audio_tokens) if out else 0,
        "cached_tokens": n(inp.cached_tokens) if inp else 0,
    }
