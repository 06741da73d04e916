"""Spoken confirmation of ``confirm = true`` tools.

The model must not be able to confirm on the user's behalf, so nothing the model sends
counts: only what the user said does, as transcribed by the service from the microphone
(``conversation.item.input_audio_transcription.completed``) and handed to
:meth:`Confirmations.heard` by the daemon.

1. The first call of a tool with some arguments does not run: it opens a *pending
   confirmation* for exactly that tool and those validated arguments, and the model is told to
   ask the user.
2. Each user turn is classified as affirmative (``yes``, ``go ahead``, ``do it``…),
   negative (``no``, ``don't``, ``cancel``, ``wait``…; a turn with both is negative) or
   neither.
3. A later identical call within the tool's ``confirm_window_s`` of the first runs only if a
   user turn that *began after* the request was affirmative and none since was negative. A
   negative turn declines it; a call with no user answer yet is told to ask again (the
   ToolBox first waits briefly for a transcript, which can arrive after the model's call).
   Running or declining closes the pending confirmation, so each run needs its own "yes".

Bounded: at most ``max_pending`` open confirmations and ``max_turns`` remembered turns.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict, deque
from collections.abc import Iterable

DEFAULT_AFFIRMATIVE: tuple[str, ...] = (
    "yes", "yeah", "yep", "yup", "sure", "ok", "okay", "confirm", "confirmed", "do it",
    "go ahead", "please do", "affirmative", "correct", "proceed", "that's right",
)
DEFAULT_NEGATIVE: tuple[str, ...] = (
    "no", "nope", "not", "don't", "dont", "do not", "stop", "cancel", "wait", "abort",
    "never", "negative", "hold on", "nah",
)


class Verdict(enum.Enum):
    NEITHER = "neither"
    YES = "yes"
    NO = "no"


class Decision(enum.Enum):
    ASK = "ask"  # a new request: ask the user
    WAITING = "waiting"  # asked before, no answer yet (the transcript may still be coming)
    RUN = "run"  # confirmed: run now
    DECLINED = "declined"  # the user said no


def _words(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    return re.findall(r"[a-z0-9']+", text)


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return any(words[i:i + n] == phrase for i in range(len(words) - n + 1))


class Confirmations:
    """Pending confirmations and the user's recent turns (see the module docs). Time is
    passed in (any monotonic clock, the same for calls and turns)."""

    def __init__(
        self,
        affirmative: Iterable[str] = DEFAULT_AFFIRMATIVE,
        negative: Iterable[str] = DEFAULT_NEGATIVE,
        *,
        max_pending: int = 64,
        max_turns: int = 64,
    ) -> None:
        self._yes = [_words(p) for p in affirmative if _words(p)]
        self._no = [_words(p) for p in negative if _words(p)]
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._max_pending = max_pending
        self._turns: deque[tuple[float, Verdict, str]] = deque(maxlen=max_turns)
        #: The user turn that confirmed the last call decided RUN: (its start, its words),
        #: for the audit trail.
        self.confirmed_by: tuple[float, str] | None = None

    def classify(self, transcript: str) -> Verdict:
        words = _words(transcript)
        if any(_contains(words, p) for p in self._no):
            return Verdict.NO
        if any(_contains(words, p) for p in self._yes):
            return Verdict.YES
        return Verdict.NEITHER

    def heard(self, transcript: str, t: float) -> Verdict:
        """A user turn that began at ``t``."""
        verdict = self.classify(transcript)
        if verdict is not Verdict.NEITHER:
            self._turns.append((t, verdict, transcript))
        return verdict

    def decide(self, key: str, now: float, window_s: float) -> Decision:
        """What to do with a call of ``key`` (tool and canonical arguments) at ``now``."""
        asked = self._pending.get(key)
        if asked is None or now - asked > window_s:
            self._pending[key] = now
            self._pending.move_to_end(key)
            while len(self._pending) > self._max_pending:
                self._pending.popitem(last=False)
            return Decision.ASK
        turns = [(t, v, text) for t, v, text in self._turns if asked < t <= now]
        answers = [v for _t, v, _text in turns]
        if Verdict.NO in answers:
            del self._pending[key]
            return Decision.DECLINED
        if Verdict.YES in answers:
            del self._pending[key]
            self.confirmed_by = next((t, text) for t, v, text in turns if v is Verdict.YES)
            return Decision.RUN
        return Decision.WAITING
