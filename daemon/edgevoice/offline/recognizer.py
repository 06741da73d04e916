"""The local recogniser: one utterance (16 kHz mono PCM16) in, a tool and its arguments out,
or nothing.

Two PocketSphinx searches hear the same audio:

- the *grammar* search, constrained to the phrases of every declared sentence
  (:mod:`edgevoice.offline.grammar`): it finds the command, but forces any speech into
  some phrase;
- the *free* search, an n-gram model of the command phrases (sampled from the templates)
  plus the 1000 most frequent English words (``data/offline-words.txt``): it can say
  "anything else", so speech outside the grammar comes out as other words.

``confidence`` is how far the two agree: 1 − the phone error rate of the free search's words
against the grammar's phrase, both spelled out in the dictionary's phones (1.0: words that
sound the same). A command is heard the same way by both, or as similar-sounding words
("set the all you ten" for "set the volume to ten"); speech outside the grammar rarely is.
(Phones rather than whole words: at the same threshold, on the bench corpus a few more
commands run and half the non-commands do in road noise; on a held-out corpus about the
same as words.)

``fit`` is how well the audio sounds like the grammar's phrase at all: the grammar search's
path score (PocketSphinx's, relative to the best-scoring state of every frame) in natural log
units per frame of the phrase's words (silence left out, so that the pause the endpointer
leaves around the speech does not count). Speech outside the grammar forced into a phrase
fits it worse; it catches what the free search cannot say ("close the trunk" heard as "close
the garage" by both searches: the free search knows no "trunk").

Guarantees:

- a result is a :class:`Command` only when the grammar search reached the end of a phrase,
  hassil matches the phrase to a tool (its declared slot values and fixed arguments), the
  confidence is at least the threshold and the fit at least :data:`MIN_FIT`; anything else
  is a :class:`Rejection` saying why;
- nothing is downloaded: the acoustic model and dictionary are those the ``pocketsphinx``
  wheel ships; the free search's model is built in memory at start (a temporary file only
  while PocketSphinx reads it);
- :meth:`OfflineRecognizer.recognize` and :meth:`AnswerRecognizer.recognize` start the
  front end afresh: the result depends on that utterance's audio alone;
- audio may be fed while it is recorded (:meth:`OfflineRecognizer.feed`): the free search
  (the costly one) decodes it as it comes, so that at the end of speech only its last
  frames and final pass remain, with the grammar search and the match. The grammar search
  decodes the whole utterance at its end (a fraction of the free search's cost), normalised
  with the utterance's own cepstral mean: its phrase and its fit do not depend on how the
  audio was fed. The free search fed so should start with the cepstral mean of the
  utterance's first second (:meth:`OfflineRecognizer.cepstral_mean`;
  :class:`edgevoice.offline.worker.Listening` does): PocketSphinx's running estimate starts
  from a fixed prior and moves only after seconds: with both searches fed so, they
  misheard the end of most commands (0.71 of the bench's car commands ran instead of
  0.88). Even so the free search mishears a few more than when it decodes the whole
  utterance at its end, so where it disagrees with the grammar's phrase (a confidence
  below the threshold, a fit within its bound) it hears the whole utterance again that
  way, and that decides. One utterance at a time (the caller serialises; the decoders are
  not thread-safe).

:class:`AnswerRecognizer` hears the answer to a confirmation question the same way: a grammar
of the configured affirmatives (optionally followed by "please", "thanks", "thank you") and
common refusals, checked by a free search of those phrases plus the common words. It returns
the words only when both searches hear words that sound exactly the same (it decides nothing
itself: the caller's :class:`~edgevoice.tools.confirm.YesRule` does), else None.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

from edgevoice.config.sentences import dictionary_path, vocabulary, words
from edgevoice.config.tools import ToolSpec
from edgevoice.offline.grammar import Grammar, compile_grammar, sample_phrases
from edgevoice.offline.results import Command, Rejection, Result

SAMPLE_RATE = 16000
DEFAULT_THRESHOLD = 0.62
#: The least ``fit`` a command may have (natural log per frame of the phrase's words). With
#: :data:`DEFAULT_THRESHOLD`, chosen on the bench corpus (``tests/bench/offline.py``).
MIN_FIT = -0.0078
PHRASES_PER_TEMPLATE = 200
# An answer may run a guarded tool: both searches must hear words that sound the same.
ANSWER_THRESHOLD = 1.0
_SEARCH = "edgevoice"
#: The free search keeps more paths than PocketSphinx's defaults (1e-48, 7e-29, 1e-48): it
#: hears commands more often as the grammar does (on the bench corpus 0.875 of the commands
#: run instead of 0.84, with no more false runs), for ~13 % more of its CPU. The answer
#: recogniser keeps the defaults its figures were measured with, and the American
#: dictionary (with :func:`_non_rhotic`'s variants, "i am hungry" in road noise came out as
#: a yes).
FREE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}


def _config(dictionary: Path, **extra: Any) -> dict[str, Any]:
    model = pocketsphinx.get_model_path()
    return {"hmm": f"{model}/en-us/en-us", "dict": str(dictionary), "lm": None,
            "loglevel": "FATAL", **extra}


_JSGF_WORD = re.compile(r"<[^>]*>|([a-z'][a-z'.\-]*)")


def _dictionary(jsgf: str, phrases: Sequence[str], directory: Path,
                non_rhotic: bool = False) -> Path:
    """The shipped dictionary cut to the words both searches can say (the grammar's, the
    phrases' and the common words): each decoder holds ~20 MB less than with all 130,000
    words, and nothing else changes (a search never says a word it was not given).
    ``non_rhotic``: each word also gets its :func:`_non_rhotic` pronunciations."""
    body = jsgf.split(";", 2)[-1]  # past the header ("#JSGF V1.0;", "grammar …;")
    wanted = {m[1] for m in _JSGF_WORD.finditer(body) if m[1] and m[1] != "public"}
    wanted.update(w for p in phrases for w in p.split())
    wanted.update(common_words())
    source = dictionary_path()
    assert source is not None  # pocketsphinx is imported: its model is there
    pronunciations: dict[str, list[tuple[str, ...]]] = {}
    with source.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            head, *phones = line.split()
            word = head.split("(", 1)[0]
            if word in wanted and phones:
                pronunciations.setdefault(word, []).append(tuple(phones))
    lines: list[str] = []
    for word, prons in pronunciations.items():
        if non_rhotic:
            prons += [v for v in dict.fromkeys(map(_non_rhotic, prons)) if v not in prons]
        lines += [f"{word}{f'({i})' if i > 1 else ''} {' '.join(p)}\n"
                  for i, p in enumerate(prons, 1)]
    path = directory / "words.dict"
    path.write_text("".join(lines), encoding="utf-8")
    return path


_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW",
                     "OY", "UH", "UW"})


def _non_rhotic(phones: tuple[str, ...]) -> tuple[str, ...]:
    """``phones`` as a speaker without r-coloured vowels says them (England, Wales, Australia,
    New Zealand, South Africa): the dictionary is American, and its ``ER`` ("temperature",
    "passenger", "garage") is a plain vowel there, closest to ``AH``. Words of one vowel
    ("turn", "her") keep theirs: such a short word with a plain vowel fits almost any
    syllable, and the free search heard "find a parking spot" as "turn on kitchen on".

    On the bench corpus (``tests/bench/offline.py``) 0.92 of the commands run instead of
    0.89, with no more false runs (the British voices are heard alike by both searches);
    held out 0.90 instead of 0.875; decoding costs ~2 % more. (Dropping the consonant ``R``
    after a vowel too, "door" as ``D AO``, ran no more commands and made "close the trunk" a
    garage door.)"""
    if sum(p in _VOWELS for p in phones) < 2:
        return phones
    return tuple("AH" if p == "ER" else p for p in phones)


def common_words() -> list[str]:
    """The free search's "anything else": ``data/offline-words.txt``."""
    text = (resources.files("edgevoice") / "data" / "offline-words.txt").read_text("utf-8")
    return [w for w in text.split("\n") if w and not w.startswith("#")]


def _free_model(phrases: Sequence[str], directory: Path) -> Path:
    """An ARPA model of ``phrases`` plus the common words (each once)."""
    vocab = vocabulary()
    extra = [w for w in common_words() if w in vocab]
    words_file = directory / "words.txt"
    words_file.write_text("\n".join(extra) + "\n", encoding="utf-8")
    model = ArpaBoLM(text="\n".join(phrases) + "\n", word_file=str(words_file),
                     word_file_count=1, add_start=True)
    model.compute()
    path = directory / "free.arpa"
    model.write_file(str(path))
    return path


def agreement(reference: str, hypothesis: str) -> float:
    """1 − word error rate of ``hypothesis`` against ``reference`` (at least 0)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return 0.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return max(0.0, 1.0 - row[-1] / len(ref))


class _Searches:
    """The grammar search (``jsgf``) and the free search (``phrases`` plus the common words,
    with ``free_beams``, else PocketSphinx's) over the same audio, one utterance at a time;
    ``non_rhotic``: with the dictionary's :func:`_non_rhotic` variants."""

    def __init__(self, jsgf: str, phrases: Sequence[str],
                 free_beams: dict[str, float] | None = None, non_rhotic: bool = False) -> None:
        with tempfile.TemporaryDirectory(prefix="edgevoice-offline-") as tmp:
            words = _dictionary(jsgf, phrases, Path(tmp), non_rhotic)
            self._grammar = pocketsphinx.Decoder(**_config(words))
            self._grammar.add_jsgf_string(_SEARCH, jsgf)
            self._grammar.activate_search(_SEARCH)
            self._free = pocketsphinx.Decoder(**_config(
                words, lm=str(_free_model(phrases, Path(tmp))), **(free_beams or {})))
        self.active = False
        # Of the utterance (kept after its end until the next starts): the grammar search
        # and a second hearing decode it as a whole.
        self._audio = bytearray()
        self.streamed = False  # the free search heard the utterance as it came
        self.fit = -math.inf  # of the last utterance ended
        self._phones: dict[str, list[str]] = {}

    def pronounce(self, text: str) -> list[str]:
        """The phones of ``text``'s words (each word's first pronunciation in the dictionary;
        an unknown word stands for itself)."""
        out: list[str] = []
        for word in text.split():
            if word not in self._phones:
                self._phones[word] = (self._grammar.lookup_word(word) or word).split()
            out += self._phones[word]
        return out

    def confidence(self, text: str, heard: str) -> float:
        """How far the free search's words sound like the grammar's phrase: 1 − the phone
        error rate of their pronunciations (a word misheard as a similar one costs a phone
        or two, not the whole word)."""
        return agreement(" ".join(self.pronounce(text)), " ".join(self.pronounce(heard)))

    def start(self, fresh: bool = False, cmn: str | None = None) -> None:
        """Begin an utterance; ``fresh``: with the front end reset (its running estimates
        from earlier utterances forgotten), so that the result depends on this utterance's
        audio alone; ``cmn``: the free search normalises it with that cepstral mean (from
        :meth:`cepstral_mean`)."""
        if self.active:  # abandoned: its free search ends, nothing else is decoded
            self._free.end_utt()
        if fresh:
            self._free.reinit_feat()
        self._free.start_utt()
        if cmn is not None:
            self._free.set_cmn(cmn)
        self._audio = bytearray()
        self.streamed = False
        self.active = True

    def hear_whole(self) -> str:
        """The free search's words for the last utterance ended, decoded as a whole (with its
        own cepstral mean)."""
        self._free.reinit_feat()
        self._free.start_utt()
        self._free.process_raw(bytes(self._audio), False, True)
        self._free.end_utt()
        free = self._free.hyp()
        return free.hypstr if free is not None else ""

    def cepstral_mean(self, pcm: bytes) -> str:
        """The cepstral mean of ``pcm`` (as :meth:`start` takes it): its features only, from
        the grammar decoder (idle until the end of the utterance)."""
        self._grammar.reinit_feat()
        self._grammar.start_utt()
        self._grammar.process_raw(pcm[:len(pcm) & ~1], True, True)
        mean: str = self._grammar.get_cmn(False)
        self._grammar.end_utt()
        return mean

    def feed(self, pcm: bytes, full_utt: bool = False) -> None:
        """More of the utterance: the free search decodes it now (``full_utt``: all of it,
        normalised with its own mean), the grammar search keeps it for the end."""
        if not self.active:
            self.start()
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._free.process_raw(pcm, False, full_utt)
        self._audio += pcm
        self.streamed = not full_utt

    def end(self) -> tuple[str, str]:
        """End the utterance: the grammar's phrase ("" when it reached none) and the words
        of the free search. The grammar search decodes the whole utterance now, normalised
        with its own cepstral mean: its phrase and its fit are what they are for the
        utterance as a whole, however it was fed (the fit's bound was chosen so)."""
        self._free.end_utt()
        self.active = False
        self._grammar.reinit_feat()
        self._grammar.start_utt()
        self._grammar.process_raw(bytes(self._audio), False, True)
        self._grammar.end_utt()
        hyp = self._grammar.hyp()
        free = self._free.hyp()
        self.fit = _fit(hyp.score if hyp is not None else 0.0, self._grammar.seg() or ())
        return (hyp.hypstr if hyp is not None else "", free.hypstr if free is not None else "")


def _fit(score: float, segments: Any) -> float:
    """The grammar path's score in natural log units per frame of its words (see the module
    docs); -inf when there is no path or no word."""
    frames = sum(s.end_frame - s.start_frame + 1 for s in segments
                 if not (s.word.startswith(("<", "[", "+"))))
    if score <= 0.0 or frames <= 0:
        return -math.inf
    return math.log(score) / frames


class OfflineRecognizer:
    """Recognises the declared sentences of ``tools`` (see the module docs).

    ValueError when no tool declares sentences."""

    def __init__(self, tools: Sequence[ToolSpec], threshold: float = DEFAULT_THRESHOLD,
                 min_fit: float = MIN_FIT) -> None:
        grammar = compile_grammar(tools)
        if grammar is None:
            raise ValueError("no tool declares sentences: nothing to recognise offline")
        self.grammar: Grammar = grammar
        self.threshold = threshold
        self.min_fit = min_fit
        self._searches = _Searches(grammar.jsgf, [
            p for p, _, _ in sample_phrases(tools, PHRASES_PER_TEMPLATE)], FREE_BEAMS,
            non_rhotic=True)

    def start(self, fresh: bool = False, cmn: str | None = None) -> None:
        """Begin an utterance (ends any unfinished one); ``fresh``: with the front end reset,
        ``cmn``: with that cepstral mean (see :meth:`_Searches.start`)."""
        self._searches.start(fresh, cmn)

    def cepstral_mean(self, pcm: bytes) -> str:
        """The cepstral mean of ``pcm``, for :meth:`start` (see
        :meth:`_Searches.cepstral_mean`)."""
        return self._searches.cepstral_mean(pcm)

    def feed(self, pcm: bytes) -> None:
        """More audio of the current utterance (PCM16 mono at 16 kHz, any length)."""
        self._searches.feed(pcm)

    def finish(self) -> Result:
        """End the utterance and say what it was."""
        started = time.perf_counter()
        if not self._searches.active:
            return Rejection("no-speech")
        streamed = self._searches.streamed
        text, heard = self._searches.end()
        match = self.grammar.match(text) if text else None
        confidence = round(self._searches.confidence(text, heard), 3) if text else 0.0
        details: dict[str, Any] = {"heard": heard}
        fit = self._searches.fit
        if (match is not None and streamed and confidence < self.threshold
                and fit >= self.min_fit):
            # The free search heard the audio as it came, normalised with the mean of its
            # first second only: where it disagrees, it hears the whole utterance again.
            details["heard_streamed"] = heard
            heard = details["heard"] = self._searches.hear_whole()
            confidence = round(self._searches.confidence(text, heard), 3)
        ms = (time.perf_counter() - started) * 1000
        if not text and not heard:
            return Rejection("no-speech", "", None, ms, details)
        if match is None:
            return Rejection("out-of-grammar", text, confidence, ms, details)
        details["fit"] = round(fit, 5)
        if confidence < self.threshold or fit < self.min_fit:
            return Rejection("low-confidence" if confidence < self.threshold else "poor-fit",
                             text, confidence, ms,
                             {**details, "tool": match.tool, "arguments": match.arguments})
        return Command(match.tool, match.arguments, text, confidence, ms)

    def recognize(self, pcm: bytes) -> Result:
        """One whole utterance, decoded as a whole (the cepstral mean of the utterance itself
        rather than a running estimate: more accurate than :meth:`feed` for a short
        utterance, at the cost of decoding all of it after its end). The front end starts
        afresh, so the result does not depend on the utterances recognised before."""
        self._searches.start(fresh=True)
        self._searches.feed(pcm, full_utt=True)
        return self.finish()


#: Common refusals the answer grammar knows besides the affirmatives, so that a "no" is heard
#: as a no rather than forced into the nearest yes.
NO_PHRASES: tuple[str, ...] = (
    "no", "nope", "nah", "no thanks", "no thank you", "no way", "don't", "do not", "don't do it",
    "do not do it", "cancel", "stop", "never mind", "not now", "wait", "hold on",
)
#: What may follow an affirmative ("yes please").
_AFTER_YES: tuple[str, ...] = ("please", "thanks", "thank you")
#: Affirmatives never heard locally, however configured: on espeak-ng speech this recogniser
#: took refusals and other speech for them ("don't" and "don't do it" for "do it" or "go
#: ahead", "i am not sure" for "sure", "stop" for "ok", "who is there" for "please do"). A
#: confirmation on the device needs a plain yes ("yes", "yeah", "yep", "correct", …).
CONFUSABLE_YES: frozenset[str] = frozenset({"do it", "go ahead", "please do", "sure", "ok",
                                            "okay"})


class AnswerRecognizer:
    """The answer to a confirmation question, heard locally: :meth:`recognize` returns the
    words when they are one of the affirmative phrases ``yes`` (optionally followed by
    "please", "thanks" or "thank you") or a common refusal (:data:`NO_PHRASES`), else None
    (silence, other speech, or the two searches' agreement, as for
    :class:`OfflineRecognizer`, below ``threshold``: by default they must hear words that
    sound the same). The caller decides with its own rule
    (:meth:`edgevoice.tools.confirm.YesRule.accepts`): the text is the plain words.

    Phrases with a word the recogniser's dictionary does not know, and the affirmatives of
    :data:`CONFUSABLE_YES`, are left out of the grammar (never heard, no error); when no
    affirmative is left, "yes" alone is. Not thread-safe: one utterance at a time."""

    def __init__(self, yes: Sequence[str], threshold: float = ANSWER_THRESHOLD) -> None:
        vocab = vocabulary()

        def known(phrases: Sequence[str]) -> list[str]:
            out = (" ".join(words(p)) for p in phrases)
            return list(dict.fromkeys(p for p in out if p and all(w in vocab for w in p.split())))

        self.yes = known([y for y in yes if " ".join(words(y)) not in CONFUSABLE_YES])
        if not self.yes:
            self.yes = ["yes"]
        self.no = [p for p in known(NO_PHRASES) if p not in self.yes]
        self.threshold = threshold
        after = known(_AFTER_YES)
        jsgf = "\n".join([
            "#JSGF V1.0;", "grammar answer;",
            "public <answer> = <yes> [ <after> ] | <no>;",
            f"<yes> = {' | '.join(self.yes)};",
            f"<after> = {' | '.join(after)};",
            f"<no> = {' | '.join(self.no)};",
        ]) + "\n"
        phrases = self.yes + [f"{y} {a}" for y in self.yes for a in after] + self.no
        self._searches = _Searches(jsgf, phrases)

    def recognize(self, pcm: bytes) -> str | None:
        """One whole utterance (PCM16 mono at 16 kHz): the answer's words or None."""
        self._searches.start(fresh=True)
        self._searches.feed(pcm, full_utt=True)
        text, heard = self._searches.end()
        if not text or self._searches.confidence(text, heard) < self.threshold:
            return None
        return text
