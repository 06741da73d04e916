"""The offline grammar: every declared sentence of every tool compiled into one JSGF grammar
for PocketSphinx, and the same sentences as hassil intents to map a recognised phrase back to
a tool and its arguments.

Guarantees: the grammar accepts exactly the phrases the templates expand to (words as
:func:`edgevoice.config.sentences.words` spells them); :func:`match` returns a tool and
arguments only for a phrase one of the templates matches, with each slot's declared value
(not the spoken words) and the template's fixed arguments. The config has checked the
templates already (:mod:`edgevoice.config.sentences`), so compiling never fails on a valid
config.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hassil.expression import (
    Alternative,
    Expression,
    ListReference,
    Permutation,
    TextChunk,
)
from hassil.expression import (
    Sequence as HassilSequence,
)
from hassil.intents import Intent, IntentData, Intents, TextSlotList, TextSlotValue
from hassil.recognize import recognize

from edgevoice.config.sentences import (
    blocks,
    clusters,
    parse_template,
    slot_values,
    spellings,
    template_words,
    words,
)
from edgevoice.config.tools import ToolSpec


@dataclass(frozen=True)
class Match:
    """A recognised command: the tool and the arguments the phrase gives it."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)


class _Jsgf:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def expr(self, e: Expression, lists: dict[str, str]) -> str | None:
        """JSGF of one hassil expression; None when it says nothing."""
        if isinstance(e, TextChunk):
            ws = words(e.text)
            return " ".join(ws) if ws else None
        if isinstance(e, ListReference):
            return f"<{lists[e.list_name]}>"
        if isinstance(e, Permutation):
            orders = [self.expr(HassilSequence(items=list(p)), lists)
                      for p in itertools.permutations(e.items)]
            said = list(dict.fromkeys(o for o in orders if o))
            return f"( {' | '.join(said)} )" if said else None
        if isinstance(e, Alternative):
            parts = [self.expr(i, lists) for i in e.items]
            said = list(dict.fromkeys(p for p in parts if p))
            if not said:
                return None
            body = " | ".join(said)
            return f"[ {body} ]" if e.is_optional or len(said) < len(parts) else f"( {body} )"
        if isinstance(e, HassilSequence):
            parts = [p for p in (self._cluster(c, lists) for c in clusters(e.items)) if p]
            return f"( {' '.join(parts)} )" if parts else None
        return None

    def _cluster(self, pieces: list[Expression], lists: dict[str, str]) -> str | None:
        """A run of pieces with no space between them: one piece is compiled as it is;
        glued pieces (``light[s]``) are spelled out (``( light | lights )``)."""
        if len(pieces) == 1:
            return self.expr(pieces[0], lists)
        said = spellings(pieces)
        spoken = [x for x in said if x]
        if not spoken:
            return None
        return f"[ {' | '.join(spoken)} ]" if "" in said else f"( {' | '.join(spoken)} )"


@dataclass
class Grammar:
    """The compiled grammar of a set of tools (only those with sentences take part)."""

    jsgf: str
    intents: Intents
    tools: list[str]
    vocabulary: set[str]

    def match(self, text: str) -> Match | None:
        """The tool and arguments of a recognised phrase; None when no template matches."""
        if not text.strip():
            return None
        result = recognize(text, self.intents)
        if result is None or result.intent.name not in self.tools:
            return None
        fixed = dict(result.intent_data.slots) if result.intent_data else {}
        arguments = dict(fixed)
        for name, entity in result.entities.items():
            if name not in fixed:
                arguments[name] = entity.value
        return Match(result.intent.name, arguments)


def compile_grammar(tools: Sequence[ToolSpec]) -> Grammar | None:
    """The grammar of every tool's sentences; None when no tool declares any."""
    jsgf = _Jsgf()
    public: list[str] = []
    intents: dict[str, Intent] = {}
    vocab: set[str] = set()
    for ti, tool in enumerate(t for t in tools if t.sentences):
        lists = {name: f"t{ti}_l{li}" for li, name in enumerate(tool.slots)}
        hassil_lists: dict[str, TextSlotList] = {}
        for name, spec in tool.slots.items():
            values = slot_values(spec)
            spoken = list(dict.fromkeys(" ".join(words(s)) for s, _ in values))
            jsgf.rules[lists[name]] = " | ".join(spoken)
            vocab.update(w for s in spoken for w in s.split())
            hassil_lists[name] = TextSlotList(name=name, values=[
                TextSlotValue(text_in=TextChunk(" ".join(words(s))), value_out=v)
                for s, v in values])
        alternatives: list[str] = []
        data: list[IntentData] = []
        for block in blocks(tool.sentences):
            sentence = parse_template(block.text)
            said = jsgf.expr(sentence.expression, lists)
            if said:
                alternatives.append(said)
            data.append(IntentData(sentence_texts=[block.text], slots=dict(block.arguments),
                                   slot_lists=hassil_lists))
            vocab.update(template_words(sentence.expression))
        rule = f"t{ti}"
        jsgf.rules[rule] = " | ".join(alternatives)
        public.append(f"<{rule}>")
        intents[tool.name] = Intent(name=tool.name, data=data)
    if not public:
        return None
    lines = ["#JSGF V1.0;", "grammar edgevoice;", f"public <command> = {' | '.join(public)};"]
    lines += [f"<{name}> = {body};" for name, body in jsgf.rules.items()]
    return Grammar(jsgf="\n".join(lines) + "\n", intents=Intents(language="en", intents=intents),
                   tools=list(intents), vocabulary=vocab)


def sample(expr: Expression, lists: dict[str, list[tuple[str, Any]]], rng: random.Random,
           args: dict[str, Any]) -> str:
    """One random path through a template: its text (spaces kept), filling ``args`` with the
    values of the slots it passes."""
    if isinstance(expr, TextChunk):
        return expr.text
    if isinstance(expr, ListReference):
        spoken, value = rng.choice(lists[expr.list_name])
        args[expr.slot_name] = value
        return spoken
    if isinstance(expr, Permutation):
        items = list(expr.items)
        rng.shuffle(items)
        return " ".join(sample(i, lists, rng, args) for i in items)
    if isinstance(expr, Alternative):
        return sample(rng.choice(expr.items), lists, rng, args) if expr.items else ""
    if isinstance(expr, HassilSequence):
        return "".join(sample(i, lists, rng, args) for i in expr.items)
    return ""


def sample_phrases(tools: Sequence[ToolSpec], per_template: int,
                   seed: int = 1) -> list[tuple[str, str, dict[str, Any]]]:
    """(phrase, tool, arguments) for ``per_template`` random paths of every template (seeded;
    repeats possible), the arguments being the template's fixed ones and the slots passed."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict[str, Any]]] = []
    for tool in tools:
        lists = {name: slot_values(spec) for name, spec in tool.slots.items()}
        for block in blocks(tool.sentences):
            expr = parse_template(block.text).expression
            for _ in range(per_template):
                args: dict[str, Any] = {}
                text = " ".join(words(sample(expr, lists, rng, args)))
                out.append((text, tool.name, {**block.arguments, **args}))
    return out
