"""The conversation so far, kept by the link so that a new connection continues it.

A Voice Live session lives and dies with its WebSocket. After a reconnect the link replays
what the model needs to keep the thread: user turns (their transcripts, or their audio when
no transcript arrived), assistant turns (their transcripts, cut where a barge-in truncated
them), function calls and their outputs — as ``conversation.item.create`` request items.

Bounded: at most ``max_items`` entries are kept (oldest dropped first, never separating a
function call from its output), and user audio is kept only until the item's transcript
arrives, at most ``max_audio_bytes`` in all.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["user", "assistant", "function_call", "function_call_output", "system"]


@dataclass
class Entry:
    kind: Kind
    item_id: str | None = None
    text: str | None = None  # transcript or text
    audio: bytes | None = None  # user audio in the session's input format, until transcribed
    audio_ms: float = 0.0  # assistant audio received for this item
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ConversationLog:
    """Ordered, bounded record of the conversation, in the order the service saw it."""

    def __init__(self, max_items: int = 60, max_audio_bytes: int = 2_000_000) -> None:
        self.max_items = max_items
        self.max_audio_bytes = max_audio_bytes
        self.entries: list[Entry] = []

    # ------------------------------------------------------------------ recording

    def _find(self, item_id: str | None) -> Entry | None:
        if item_id is None:
            return None
        for entry in reversed(self.entries):
            if entry.item_id == item_id:
                return entry
        return None

    def add_user_audio(self, item_id: str, audio: bytes | None) -> Entry:
        entry = self._find(item_id)
        if entry is None:
            entry = Entry("user", item_id=item_id)
            self._append(entry)
        if audio and entry.text is None:
            entry.audio = audio
            self._bound_audio()
        return entry

    def set_user_transcript(self, item_id: str, transcript: str) -> None:
        entry = self._find(item_id)
        if entry is None:
            entry = self.add_user_audio(item_id, None)
        entry.text = transcript
        entry.audio = None  # the transcript replaces the audio

    def add_user_text(self, text: str) -> None:
        self._append(Entry("user", text=text))

    def add_system_text(self, text: str) -> None:
        self._append(Entry("system", text=text))

    def add_assistant_audio(self, item_id: str, ms: float) -> None:
        entry = self._find(item_id)
        if entry is None:
            entry = Entry("assistant", item_id=item_id, text="")
            self._append(entry)
        entry.audio_ms += ms

    def set_assistant_text(self, item_id: str, text: str) -> None:
        entry = self._find(item_id)
        if entry is None:
            entry = Entry("assistant", item_id=item_id)
            self._append(entry)
        if "truncated_ms" not in entry.extra:
            entry.text = text

    def truncate_assistant(self, item_id: str, audio_end_ms: float) -> None:
        """Cut the stored transcript to the share of the audio that was heard (the service
        drops the unheard text; this is the best local estimate of what it kept)."""
        entry = self._find(item_id)
        if entry is None or entry.kind != "assistant":
            return
        entry.extra["truncated_ms"] = audio_end_ms
        if entry.text and entry.audio_ms > 0:
            share = max(0.0, min(1.0, audio_end_ms / entry.audio_ms))
            cut = int(len(entry.text) * share)
            # End on a word boundary so the model does not see half words.
            space = entry.text.rfind(" ", 0, cut + 1)
            entry.text = entry.text[: space if space > 0 else cut].rstrip()

    def add_function_call(
        self, call_id: str, name: str, arguments: str, item_id: str | None
    ) -> None:
        """Record a call once per ``call_id``. ``arguments`` is replayed verbatim, so it must
        be JSON text ("{}" for none, never "")."""
        if any(e.kind == "function_call" and e.call_id == call_id for e in self.entries):
            return
        self._append(Entry("function_call", item_id=item_id, call_id=call_id, name=name,
                           arguments=arguments))

    def add_function_output(self, call_id: str, output: str) -> None:
        if any(e.kind == "function_call_output" and e.call_id == call_id for e in self.entries):
            return
        self._append(Entry("function_call_output", call_id=call_id, output=output))

    # ------------------------------------------------------------------ bounds

    def _append(self, entry: Entry) -> None:
        self.entries.append(entry)
        while len(self.entries) > self.max_items:
            self.entries.pop(0)
            # Never start the replay with an output whose call was dropped.
            while self.entries and self.entries[0].kind == "function_call_output":
                self.entries.pop(0)

    def _bound_audio(self) -> None:
        total = sum(len(e.audio) for e in self.entries if e.audio)
        for entry in self.entries:
            if total <= self.max_audio_bytes:
                break
            if entry.audio:
                total -= len(entry.audio)
                entry.audio = None
                if entry.text is None:
                    entry.text = "(inaudible)"

    # ------------------------------------------------------------------ replay

    def replay_items(self) -> list[dict[str, Any]]:
        """Request items (wire dicts) that recreate the conversation on a new session."""
        items: list[dict[str, Any]] = []
        for e in self.entries:
            if e.kind == "user":
                if e.text is not None:
                    content = [{"type": "input_text", "text": e.text}]
                elif e.audio:
                    content = [{"type": "input_audio",
                                "audio": base64.b64encode(e.audio).decode("ascii")}]
                else:
                    continue
                items.append({"type": "message", "role": "user", "content": content})
            elif e.kind == "system" and e.text:
                items.append({"type": "message", "role": "system",
                              "content": [{"type": "input_text", "text": e.text}]})
            elif e.kind == "assistant":
                if not e.text:
                    continue
                items.append({"type": "message", "role": "assistant",
                              "content": [{"type": "text", "text": e.text}]})
            elif e.kind == "function_call":
                items.append({"type": "function_call", "call_id": e.call_id, "name": e.name,
                              "arguments": e.arguments})
            elif e.kind == "function_call_output":
                items.append({"type": "function_call_output", "call_id": e.call_id,
                              "output": e.output})
        return items

    def unanswered_calls(self) -> list[str]:
        """call_ids that were requested but have no output yet."""
        outputs = {e.call_id for e in self.entries if e.kind == "function_call_output"}
        return [e.call_id for e in self.entries
                if e.kind == "function_call" and e.call_id and e.call_id not in outputs]
