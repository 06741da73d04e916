"""Offline sentences: what a tool may be called with when the service is out of reach.

A tool declares ``sentences`` in hassil's template syntax (the Home Assistant intent
language: ``(a|b)`` alternatives, ``[optional]`` words, ``(a;b)`` permutations and
``{list}`` or ``{list:parameter}`` slots) and the ``slots`` those templates use. A slot list
is a list of spoken words (each is also the value), a table of spoken words → value
(``{ "rear left" = "rear_left" }``) or a whole-number range (``{ from = 0, to = 100,
step = 10 }``, spoken as English number words). An entry of ``sentences`` may also be a table
``{ text = "...", arguments = { position = 100 } }`` whose fixed arguments go with that
template.

Everything is checked when the config is loaded (so ``edgevoice check-config`` says it, one
line each, naming the tool and the key):

- a template parses (the column where hassil can tell), uses only declared slot lists and no
  ``<rules>``, wildcards or inline ranges, and cannot be said with no words at all;
- every slot fills a declared parameter and every slot value and fixed argument is valid under
  that parameter's schema; whatever path a template takes, each required parameter without a
  default is filled (by a slot that no path can skip, or a fixed argument);
- a slot list is not empty, its spoken words are words (letters, digits, apostrophes);
- every word is in the recogniser's pronunciation dictionary (the en-US dictionary shipped by
  the ``pocketsphinx`` package; a word it does not know can never be recognised);
- the grammar of all tools together stays within :data:`MAX_GRAMMAR_WORDS` word positions
  (each word of each template and each word of each slot value counts once per use), which
  keeps recognition well under a second on a Raspberry Pi.

This module is pure: it parses and checks; :mod:`edgevoice.offline` compiles and recognises.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from hassil.expression import (
    Alternative,
    Expression,
    Group,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    TextChunk,
)
from hassil.expression import (
    Sequence as HassilSequence,
)
from hassil.parse_expression import parse_sentence
from hassil.parser import ParseError
from jsonschema.validators import validator_for
from pydantic import Field

from edgevoice.wire.session import Strict

MAX_GRAMMAR_WORDS = 20000
MAX_PERMUTATION_ITEMS = 4  # (a;b;c;d) is 24 orders already
MAX_RANGE_VALUES = 1000

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """The words of ``text`` as the recogniser spells them: lower case, split at anything that
    is not a letter, a digit or an apostrophe (``"Twenty-One"`` → ``["twenty", "one"]``)."""
    return _WORD.findall(text.lower())


class SentenceBlock(Strict):
    """One template with fixed arguments (``{ text = "...", arguments = {...} }``)."""

    text: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


Sentences = list[Annotated[str, Field(min_length=1)] | SentenceBlock]
SlotSpec = list[str] | dict[str, Any]


@functools.cache
def _number_words() -> Any:
    from unicode_rbnf import RbnfEngine

    return RbnfEngine.for_language("en")


def spoken_number(n: int) -> str:
    """``21`` → ``"twenty one"`` (English words, as the recogniser hears them)."""
    return " ".join(words(_number_words().format_number(n).text))


def _is_range(spec: Mapping[str, Any]) -> bool:
    return {"from", "to"} <= set(spec) <= {"from", "to", "step"}


def slot_values(spec: SlotSpec) -> list[tuple[str, Any]]:
    """(spoken text, value) of a slot list; ValueError for a malformed one."""
    if isinstance(spec, list):
        return [(str(v), v) for v in spec]
    if _is_range(spec):
        lo, hi, step = spec["from"], spec["to"], spec.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, step)):
            raise ValueError("a range's from, to and step must be whole numbers")
        if step <= 0 or hi < lo:
            raise ValueError(f"a range needs from <= to and step > 0, got from = {lo}, "
                             f"to = {hi}, step = {step}")
        if (hi - lo) // step + 1 > MAX_RANGE_VALUES:
            raise ValueError(f"a range may have at most {MAX_RANGE_VALUES} values")
        return [(spoken_number(n) if n >= 0 else f"minus {spoken_number(-n)}", n)
                for n in range(lo, hi + 1, step)]
    return list(spec.items())


@functools.cache
def dictionary_path() -> Path | None:
    """The en-US pronunciation dictionary of the installed ``pocketsphinx`` package (found
    without importing it); None when the package is missing."""
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model/en-us/cmudict-en-us.dict"
    return path if path.is_file() else None


@functools.cache
def vocabulary() -> frozenset[str]:
    """The words of the recogniser's dictionary (empty when it is not installed)."""
    path = dictionary_path()
    if path is None:
        return frozenset()
    with path.open(encoding="utf-8", errors="replace") as f:
        return frozenset(line.split(" ", 1)[0] for line in f
                         if line and "(" not in line.split(" ", 1)[0])


MAX_GLUED = 256  # spellings of one glued word ("light[s]" has 2); more is not a word


def strings(e: Expression) -> list[str]:
    """Every text ``e`` can say, spaces kept (for words glued to a group)."""
    if isinstance(e, TextChunk):
        return [e.text]
    if isinstance(e, ListReference):
        return []  # a slot glued to text: the config check keeps slots space-separated
    if isinstance(e, Permutation):
        return [" ".join(o) for p in itertools.permutations(e.items)
                for o in itertools.product(*(strings(i) for i in p))][:MAX_GLUED]
    if isinstance(e, Alternative):
        out = [x for i in e.items for x in strings(i)]
        return out + [""] if e.is_optional else out
    if isinstance(e, HassilSequence):
        out = [""]
        for i in e.items:
            out = [a + b for a in out for b in strings(i)][:MAX_GLUED]
        return out
    return []


def clusters(items: Sequence[Expression]) -> list[list[Expression]]:
    """Split a sequence's items into runs that are glued together (no space between):
    a text chunk is split at its spaces, so each run is at most one word of text plus the
    groups glued to it."""
    runs: list[list[Expression]] = []
    glued = False  # does the next item continue the current run?
    for item in items:
        if isinstance(item, TextChunk):
            text = item.text
            if not text:
                continue
            tokens = text.split()
            if not tokens:
                glued = False
                continue
            for k, token in enumerate(tokens):
                starts_glued = k == 0 and glued and not text[0].isspace()
                if starts_glued and runs:
                    runs[-1].append(TextChunk(token))
                else:
                    runs.append([TextChunk(token)])
            glued = not text[-1].isspace()
        else:
            if glued and runs and not isinstance(item, ListReference):
                runs[-1].append(item)
            else:
                runs.append([item])
            glued = not isinstance(item, ListReference)
    return runs


def spellings(pieces: Sequence[Expression]) -> list[str]:
    """The words a glued run of pieces can say (normalised, ``""`` when all may be left out)."""
    spelled = [""]
    for piece in pieces:
        spelled = [a + b for a in spelled for b in strings(piece)][:MAX_GLUED]
    return list(dict.fromkeys(" ".join(words(x)) for x in spelled))


def template_words(expr: Expression) -> set[str]:
    """Every word of a template's own text (slots aside), glued words spelled out."""
    out: set[str] = set()
    if isinstance(expr, Group):
        runs = clusters(expr.items) if not isinstance(expr, Alternative | Permutation) else \
            [[i] for i in expr.items]
        for run in runs:
            if len(run) == 1 and isinstance(run[0], Group):
                out |= template_words(run[0])
            elif len(run) == 1 and isinstance(run[0], TextChunk):
                out.update(words(run[0].text))
            elif len(run) > 1:
                out.update(w for x in spellings(run) for w in x.split())
    elif isinstance(expr, TextChunk):
        out.update(words(expr.text))
    return out


# --------------------------------------------------------------------------- parsing


def _unbalanced(text: str) -> int | None:
    """The index of the first bracket of ``text`` that is never closed, or of a closing one
    that closes nothing (or the wrong kind); None when they balance."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[tuple[str, int]] = []
    for i, ch in enumerate(text):
        if ch in "([{":
            stack.append((ch, i))
        elif ch in pairs:
            if not stack or stack[-1][0] != pairs[ch]:
                return i
            stack.pop()
    return stack[0][1] if stack else None


def parse_template(text: str) -> Sentence:
    """hassil's parse of ``text``; ValueError naming the column when hassil gives one."""
    try:
        return parse_sentence(text, keep_text=True)
    except ParseError as exc:
        msg = str(exc)
        # hassil gives an index into the part it was parsing ("... from index 3 in: (a|b"):
        # turn it into a column of the whole template.
        m = re.search(r"index (\d+) in: (.*)$", msg, re.S)
        where = ""
        unbalanced = _unbalanced(text)
        if unbalanced is not None:  # more precise than hassil's index (its outer group)
            where = f"column {unbalanced + 1}: "
        elif m:
            start = text.find(m[2])
            where = f"column {max(start, 0) + int(m[1]) + 1}: "
        raise ValueError(f"template {text!r} does not parse: {where}{msg}") from None
    except Exception as exc:  # hassil raises plain errors for some malformed input
        raise ValueError(f"template {text!r} does not parse: {exc}") from None


def walk(expr: Expression) -> Iterator[Expression]:
    yield expr
    if isinstance(expr, Group):
        for item in expr.items:
            yield from walk(item)


def always_slots(expr: Expression) -> set[str]:
    """The slot names every path through ``expr`` fills."""
    if isinstance(expr, ListReference):
        return {expr.slot_name}
    if isinstance(expr, Alternative):
        if expr.is_optional:
            return set()
        sets = [always_slots(i) for i in expr.items]
        return set.intersection(*sets) if sets else set()
    if isinstance(expr, Group):  # Sequence and Permutation: every item is on every path
        return set().union(*(always_slots(i) for i in expr.items))
    return set()


def can_be_silent(expr: Expression) -> bool:
    """True when some path through ``expr`` says no word at all."""
    if isinstance(expr, TextChunk):
        return not words(expr.text)
    if isinstance(expr, ListReference):
        return False
    if isinstance(expr, Alternative):
        return expr.is_optional or any(can_be_silent(i) for i in expr.items)
    if isinstance(expr, Group):
        return all(can_be_silent(i) for i in expr.items)
    return True


def grammar_words(expr: Expression, lists: Mapping[str, list[tuple[str, Any]]]) -> int:
    """Word positions of ``expr`` in the compiled grammar (see :data:`MAX_GRAMMAR_WORDS`)."""
    if isinstance(expr, TextChunk):
        return len(words(expr.text))
    if isinstance(expr, ListReference):
        return sum(len(words(s)) for s, _ in lists.get(expr.list_name, []))
    if isinstance(expr, Permutation):
        orders = len(list(itertools.permutations(expr.items)))
        return orders * sum(grammar_words(i, lists) for i in expr.items)
    if isinstance(expr, Group):
        return sum(grammar_words(i, lists) for i in expr.items)
    return 0


def blocks(sentences: Sentences) -> list[SentenceBlock]:
    return [s if isinstance(s, SentenceBlock) else SentenceBlock(text=s) for s in sentences]


def check_sentences(tool: str, parameters: Mapping[str, Any], sentences: Sentences,
                    slots: Mapping[str, SlotSpec]) -> tuple[list[str], int]:
    """Problems of one tool's sentences and slots (one line each, naming the tool and the key)
    and the word positions they add to the grammar."""
    problems: list[str] = []
    props = parameters.get("properties") or {}
    required = set(parameters.get("required") or [])
    defaults = {n for n, s in props.items() if isinstance(s, dict) and "default" in s}
    cls = validator_for(parameters)
    # Only with sentences: the dictionary is some megabytes, kept for the process (cached).
    vocab = vocabulary() if sentences or slots else frozenset()

    def invalid(name: str, value: Any) -> str | None:
        sub = props.get(name)
        if not isinstance(sub, dict):
            return None
        errors = list(cls(sub).iter_errors(value))
        return errors[0].message if errors else None

    lists: dict[str, list[tuple[str, Any]]] = {}
    for name, spec in slots.items():
        where = f"tool {tool}: slots.{name}"
        try:
            values = slot_values(spec)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not values:
            problems.append(f"{where}: the slot list is empty")
            continue
        for spoken, _ in values:
            ws = words(spoken)
            if not ws or " ".join(ws) != " ".join(spoken.lower().replace("-", " ").split()):
                problems.append(f"{where}: {spoken!r} must be words (letters, digits, "
                                f"apostrophes, spaces or hyphens)")
            elif vocab and (unknown := [w for w in ws if w not in vocab]):
                problems.append(f"{where}: {spoken!r}: {', '.join(unknown)} not in the "
                                f"recogniser's dictionary: say it with other words")
        lists[name] = values
    if not problems and not sentences and slots:
        problems.append(f"tool {tool}: slots are declared but there are no sentences")

    size = 0
    used: set[str] = set()
    if sentences and not vocab:
        problems.append(f"tool {tool}: sentences need the pocketsphinx package (its "
                        f"dictionary): pip install pocketsphinx")
    for i, block in enumerate(blocks(sentences)):
        where = f"tool {tool}: sentences[{i}]"
        try:
            sentence = parse_template(block.text)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        before = len(problems)
        for expr in walk(sentence.expression):
            if isinstance(expr, RuleReference):
                problems.append(f"{where}: <{expr.rule_name}>: expansion rules are not "
                                f"supported, write the words out")
            elif isinstance(expr, Permutation) and len(expr.items) > MAX_PERMUTATION_ITEMS:
                problems.append(f"{where}: a permutation may have at most "
                                f"{MAX_PERMUTATION_ITEMS} items")
            elif isinstance(expr, ListReference):
                ref = expr.list_name + ("" if expr.slot_name == expr.list_name
                                        else f":{expr.slot_name}")
                if expr.is_inline_range or expr.is_capture:
                    problems.append(f"{where}: {{{ref}}}: declare the list in slots "
                                    f"(inline ranges and captures are not supported)")
                elif expr.list_name not in slots:
                    problems.append(f"{where}: {{{ref}}}: no slot list {expr.list_name!r} "
                                    f"in slots")
                elif expr.slot_name not in props:
                    problems.append(f"{where}: {{{ref}}}: {expr.slot_name!r} is not a "
                                    f"parameter of the tool")
                elif expr.slot_name in block.arguments:
                    problems.append(f"{where}: {{{ref}}}: {expr.slot_name} is also a fixed "
                                    f"argument")
                else:
                    used.add(expr.list_name)
                    for spoken, value in lists.get(expr.list_name, []):
                        why = invalid(expr.slot_name, value)
                        if why:
                            problems.append(f"{where}: {{{ref}}}: the value {value!r} (said "
                                            f"{spoken!r}) is not a valid {expr.slot_name}: "
                                            f"{why}")
                            break
        unknown = sorted(w for w in template_words(sentence.expression) if w not in vocab)
        if vocab and unknown:
            problems.append(f"{where}: {', '.join(unknown)} not in the recogniser's "
                            f"dictionary: say it with other words")
        for name, value in block.arguments.items():
            if name not in props:
                problems.append(f"{where}: arguments.{name} is not a parameter of the tool")
            elif why := invalid(name, value):
                problems.append(f"{where}: arguments.{name}: {value!r} is not valid: {why}")
        if len(problems) == before and can_be_silent(sentence.expression):
            problems.append(f"{where}: the template can be said with no words at all (every "
                            f"part is optional): silence would run the tool")
        if len(problems) == before:
            missing = required - always_slots(sentence.expression) - set(block.arguments) \
                - defaults
            if missing:
                problems.append(f"{where}: the required parameter(s) {', '.join(sorted(missing))}"
                                f" are not filled on every path: add a slot that cannot be "
                                f"skipped or a fixed argument")
        size += grammar_words(sentence.expression, lists)
    for name in slots:
        if name in lists and name not in used and not problems:
            problems.append(f"tool {tool}: slots.{name} is not used by any sentence")
    return problems, size


def check_grammar_size(total: int) -> str | None:
    if total > MAX_GRAMMAR_WORDS:
        return (f"the offline grammar of all tools' sentences has {total} word positions, "
                f"more than the recogniser's limit of {MAX_GRAMMAR_WORDS}: use fewer "
                f"templates or shorter slot lists")
    return None


def sentence_tools(tools: Sequence[Any]) -> list[Any]:
    """The tools that declare sentences."""
    return [t for t in tools if t.sentences]
