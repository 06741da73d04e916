"""The conversation so far, kept by the link so that a new connection continues it.

A Voice Live session lives and dies with its WebSocket. After a reconnect the link replays
what the model needs to keep the thread: user turns (their transcripts, or their audio when
no transcript arrived), assistant turns (their transcripts, cut where a barge-in truncated
them), function calls and their outputs — as ``conversation.item.create`` request items.

Where a barge-in cut a reply, the stored transcript ends where the user stopped hearing it:
with word timestamps (``response.audio_timestamp.delta``, Azure voices) at the end of the last
word whose audio had finished playing; only without them at the word boundary nearest below
the played share of the audio (an estimate).

Bounded: at most ``max_items`` entries are kept (oldest dropped first, never separating a
function call from its output), and user audio is kept only until the item's transcript
arrives, at most ``max_audio_bytes`` in all; at most :data:`MAX_WORDS` word timestamps per
reply.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal

#: Word timestamps kept per reply (a reply of several minutes; later ones are dropped, and a
#: cut beyond them falls back to the estimate).
MAX_WORDS = 2000

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
    # Assistant replies: (audio offset ms, duration ms, text) of each spoken word, in order.
    words: list[tuple[float, float, str]] = field(default_factory=list)
    words_complete: bool = True  # no timestamp was dropped (MAX_WORDS)


def played_words(words: list[tuple[float, float, str]], audio_end_ms: float) -> int:
    """How many of ``words`` (in order) had finished playing at ``audio_end_ms``."""
    n = 0
    for offset, duration, _ in words:
        if offset + duration > audio_end_ms:
            break
        n += 1
    return n


def cut_at_words(text: str, words: list[str]) -> str | None:
    """``text`` up to the end of the last of ``words`` (the spoken words, in order, found in
    it one after the other, ignoring case), with the punctuation attached to that word; ""
    for no words. None when the words cannot be found in the text in order."""
    if not words:
        return ""
    pos = 0
    for word in words:
        w = word.strip()
        if not w:
            continue
        # At the start of a word of the text: "is" must not match inside "this".
        found = re.compile(r"(?<!\w)" + re.escape(w), re.IGNORECASE).search(text, pos)
        if found is None:
            return None
        pos = found.end()
    while pos < len(text) and not text[pos].isspace():
        pos += 1  # "warm." / "it's," — the word as written
    return text[:pos].rstrip()


def estimate_cut(text: str, audio_end_ms: float, audio_ms: float) -> str:
    """The played share of ``text``, ending on a word boundary: the estimate for a reply
    without word timestamps."""
    if audio_ms <= 0:
        return text  # nothing to measure the share by
    share = max(0.0, min(1.0, audio_end_ms / audio_ms))
    cut = int(len(text) * share)
    if cut >= len(text):
        return text
    # End on a word boundary so the model does not see half words.
    space = text.rfind(" ", 0, cut + 1)
    return text[: space if space > 0 else cut].rstrip()


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

    def add_assistant_word(self, item_id: str, offset_ms: float, duration_ms: float,
                           text: str) -> None:
        """A word timestamp of a reply's audio (``response.audio_timestamp.delta``)."""
        entry = self._find(item_id)
        if entry is None:
            entry = Entry("assistant", item_id=item_id, text="")
            self._append(entry)
        if len(entry.words) >= MAX_WORDS:
            entry.words_complete = False
            return
        entry.words.append((float(offset_ms), float(duration_ms), text))

    def set_assistant_text(self, item_id: str, text: str) -> None:
        """The reply's transcript. One that comes after a truncation is cut to what was
        heard: exactly with word timestamps, else by the estimate when nothing was kept at
        the truncation (the text it kept then stays)."""
        entry = self._find(item_id)
        if entry is None:
            entry = Entry("assistant", item_id=item_id)
            self._append(entry)
        end_ms = entry.extra.get("truncated_ms")
        if end_ms is None:
            entry.text = text
        elif entry.extra.get("cut_by") == "words":
            spoken = self._played_words(entry, end_ms)
            cut = cut_at_words(text, spoken) if spoken is not None else None
            if cut is not None:  # else (a text without those words) the words stay
                entry.text = cut
        elif not entry.text:
            entry.text = estimate_cut(text, end_ms, entry.audio_ms)

    def truncate_assistant(self, item_id: str, audio_end_ms: float) -> None:
        """Cut the stored transcript to what was heard of the reply (the service drops the
        unheard text). With word timestamps: up to the last word that had finished playing
        at ``audio_end_ms`` (those words themselves when the transcript is not there yet or
        does not hold them, e.g. "21" spoken as "twenty one"); without them, the played
        share of the text (an estimate). ``extra["cut_by"]`` says which ("words" or
        "estimate")."""
        entry = self._find(item_id)
        if entry is None or entry.kind != "assistant":
            return
        entry.extra["truncated_ms"] = audio_end_ms
        spoken = self._played_words(entry, audio_end_ms)
        if spoken is not None:
            entry.extra["cut_by"] = "words"
            cut = cut_at_words(entry.text, spoken) if entry.text else None
            entry.text = cut if cut is not None else " ".join(spoken)
        else:
            entry.extra["cut_by"] = "estimate"
            entry.text = estimate_cut(entry.text or "", audio_end_ms, entry.audio_ms)

    @staticmethod
    def _played_words(entry: Entry, audio_end_ms: float) -> list[str] | None:
        """The words that had finished playing at ``audio_end_ms``; None without usable
        timestamps (none, or the cut lies beyond the ones kept)."""
        if not entry.words:
            return None
        n = played_words(entry.words, audio_end_ms)
        if n == len(entry.words) and not entry.words_complete:
            return None
        return [w.strip() for _, _, w in entry.words[:n] if w.strip()]

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
