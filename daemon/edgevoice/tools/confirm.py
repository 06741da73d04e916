"""Spoken confirmation of ``confirm = true`` tools, owned by the daemon.

The model can never confirm on the user's behalf, nor choose what the user is asked:

1. A call of a ``confirm = true`` tool with valid arguments does not run. The daemon speaks a
   fixed prompt built here (:func:`prompt_text`) from the tool's declared ``confirm_prompt``
   template and the validated arguments — through ``response.create`` with
   ``pre_generated_assistant_message``, so the service speaks exactly that text.
2. Only the next user turn whose speech *starts after the prompt finished playing* (plus the
   echo's tail), within the tool's ``confirm_window_s``, is taken as the answer; audio from
   before that is never sent, so the prompt's own echo cannot answer it (the conversation
   core owns this timing, see :meth:`edgevoice.conversation.core.Core.ask_confirmation`).
3. The answer runs the tool only if its whole transcript is an affirmative (:class:`YesRule`:
   phrases of a configurable list, a few words at most). Anything else — "no", "okay, and
   what's the weather?", silence, a timeout, a transcript that never comes, a lost link —
   declines it, and the model is told "declined by the user".

Each run needs its own answer: nothing is remembered between calls.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgevoice.config.tools import DEFAULT_YES

#: Words that may stand beside an affirmative without changing it ("yes please").
FILLERS: tuple[str, ...] = ("please", "thanks", "thank you")
DEFAULT_MAX_WORDS = 4
DECLINED = "declined by the user"


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (apostrophes kept, other punctuation dropped)."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'"))


class YesRule:
    """Whether an answer confirms: the whole utterance is made of affirmative phrases (at
    least one) and fillers, and has at most ``max_words`` words. Raises ValueError for an
    empty list or a phrase without words."""

    def __init__(self, yes: Iterable[str] = DEFAULT_YES,
                 max_words: int = DEFAULT_MAX_WORDS) -> None:
        self._yes = {tuple(words(p)) for p in yes}
        if not self._yes or () in self._yes:
            raise ValueError("the list of affirmative answers must hold phrases with words")
        self._fillers = {tuple(words(p)) for p in FILLERS}
        self.max_words = max_words

    def accepts(self, transcript: str) -> bool:
        said = tuple(words(transcript))
        if not said or len(said) > self.max_words:
            return False
        # covered[i]: said[:i] splits into phrases; with_yes[i]: one of them an affirmative.
        covered = [True] + [False] * len(said)
        with_yes = [False] * (len(said) + 1)
        for end in range(1, len(said) + 1):
            for start in range(end):
                if not covered[start]:
                    continue
                piece = said[start:end]
                if piece in self._yes:
                    covered[end] = with_yes[end] = True
                elif piece in self._fillers:
                    covered[end] = True
                    with_yes[end] = with_yes[end] or with_yes[start]
        return covered[-1] and with_yes[-1]


def prompt_text(name: str, template: str | None, args: Mapping[str, Any]) -> str:
    """The fixed question spoken before ``name`` runs with the validated ``args``: the tool's
    template with the arguments filled in, or a question built from the tool's name."""
    if template is None:
        action = name.replace("_", " ")
        shown = ", ".join(f"{k.replace('_', ' ')} {_spoken(v)}" for k, v in args.items())
        return f"Should I {action}{f' with {shown}' if shown else ''}? Please say yes or no."
    return template.format_map({k: _spoken(v) for k, v in args.items()})


def _spoken(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Answer:
    """The user's answer to one prompt: ``transcript`` (None: no usable answer, ``why`` says
    what happened instead) and ``began``, when the answer's speech started (the daemon's
    clock)."""

    transcript: str | None
    began: float | None = None
    why: str = ""


#: ``async (call_id, prompt, window_s) -> Answer``: asks the user (the daemon's). Never raises
#: except CancelledError; bounded in time by its owner.
Asker = Callable[[str, str, float], Awaitable[Answer]]
