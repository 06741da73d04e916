"""Offline sentences in [[tools]]: each mistake is one line naming the tool and the key; the
compiled grammar and the match back to a tool and its arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevoice.config import ConfigError, load_config, parse_config
from edgevoice.config.sentences import MAX_GRAMMAR_WORDS, spoken_number
from edgevoice.daemon import offline_reply
from edgevoice.offline.grammar import compile_grammar

ROOT = Path(__file__).resolve().parents[2]

LIGHT = """
[[tools]]
name = "set_light"
parameters = { type = "object", properties = { room = { type = "string", enum = ["kitchen", "living_room"] }, state = { type = "string", enum = ["ON", "OFF"] }, level = { type = "integer", minimum = 1, maximum = 10, default = 10 } }, required = ["room", "state"] }
command = { argv = ["/bin/true", "{room}", "{state}"] }
"""
SLOTS = ('slots = { state = { on = "ON", off = "OFF" }, room = { kitchen = "kitchen", '
         '"living room" = "living_room" } }\n')


def config(sentences: str, slots: str = SLOTS, extra: str = "") -> str:
    return f"{LIGHT}sentences = {sentences}\n{slots}{extra}"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "edgevoice.toml")
    return info.value.errors


def test_a_valid_tool_compiles_and_matches_back() -> None:
    cfg = parse_config(config('["turn {state} [the] {room} light[s]", '
                              '{ text = "lights out in [the] {room}", arguments = '
                              '{ state = "OFF" } }]'), "edgevoice.toml")
    grammar = compile_grammar(cfg.tools)
    assert grammar is not None
    assert "( lights | light )" in grammar.jsgf  # a glued optional spelled out as words
    m = grammar.match("turn on the living room lights")
    assert m is not None and (m.tool, m.arguments) == ("set_light",
                                                        {"state": "ON", "room": "living_room"})
    m = grammar.match("lights out in kitchen")
    assert m is not None and m.arguments == {"state": "OFF", "room": "kitchen"}
    assert grammar.match("turn on the kitchen") is None
    assert grammar.match("") is None


def test_no_sentences_no_grammar() -> None:
    assert compile_grammar(parse_config(LIGHT, "x").tools) is None


@pytest.mark.parametrize(
    ("sentences", "slots", "expected"),
    [
        ('["turn {state} [the {room} light"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: template 'turn {state} [the "
         "{room} light' does not parse: column 14 (line 6, column 28 of the file): Unable "
         "to find end of optional ']'"),
        ('["turn {state} the {place} light"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: {place}: no slot list "
         "'place' in slots"),
        ('["turn {state} the {room:colour} light"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: {room:colour}: 'colour' is "
         "not a parameter of the tool"),
        ('["turn {state} the {room:level} light"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: {room:level}: the value "
         "'kitchen' (said 'kitchen') is not a valid level: 'kitchen' is not of type 'integer'"),
        ('["turn {state} the {room} light"]',
         'slots = { state = ["on", "off"], room = ["kitchen"] }\n',
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: {state}: the value 'on' "
         "(said 'on') is not a valid state: 'on' is not one of ['ON', 'OFF']"),
        ('["turn {state} the {room} light"]', 'slots = { state = [], room = ["kitchen"] }\n',
         "edgevoice.toml: tools[0]: tool set_light: slots.state: the slot list is empty"),
        ('["turn [{state}] the {room} light"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: the required parameter(s) "
         "state are not filled on every path"),
        ('["turn {state} the {room} lamppp"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: lamppp not in the "
         "recogniser's dictionary"),
        ('[{ text = "dim the {room} light", arguments = { state = "DIM" } }]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: arguments.state: 'DIM' is "
         "not valid: 'DIM' is not one of ['ON', 'OFF']"),
        ('["turn {state} the {room} light <please>"]', SLOTS,
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: <please>: expansion rules "
         "are not supported"),
        ('["turn {state} the {room} light to {level}"]',
         SLOTS[:-2] + ", level = { from = 1, to = 20 } }\n",
         "edgevoice.toml: tools[0]: tool set_light: sentences[0]: {level}: the value 11 (said "
         "'eleven') is not a valid level: 11 is greater than the maximum of 10"),
    ],
)
def test_bad_sentences_are_one_line_naming_tool_and_key(sentences: str, slots: str,
                                                       expected: str) -> None:
    errors = errors_of(config(sentences, slots))
    assert any(e.startswith(expected) for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_several_problems_each_get_a_line() -> None:
    errors = errors_of(config('["turn {state} the {nothing} light", "turn (on the {room}"]'))
    assert len([e for e in errors if "tool set_light: sentences[" in e]) == 2, errors


def test_a_template_that_can_be_silent_is_refused() -> None:
    errors = errors_of('[[tools]]\nname = "t"\nbuiltin = "get_time"\n'
                       'sentences = ["what time is it", "[please]"]\n')
    assert errors == ["edgevoice.toml: tools[0]: tool t: sentences[1]: the template can be said "
                      "with no words at all (every part is optional): silence would run the "
                      "tool"]


def test_a_grammar_too_large_is_refused_with_the_limit() -> None:
    # 1,400 templates of 17 word positions each (a slot counts its values' words).
    slots = 'slots = { state = { on = "ON", off = "OFF" }, room = { kitchen = "kitchen" }, ' \
            'level = { from = 1, to = 10 } }\n'
    many = ", ".join(f'"turn {{state}} the {{room}} light {w} {{level}}"' for w in
                     ["one", "two", "three", "four"] * 350)
    errors = errors_of(f"{LIGHT}sentences = [{many}]\n{slots}")
    assert errors == [f"edgevoice.toml: (top level): the offline grammar of all tools' sentences has 23800 "
                      f"word positions, more than the recogniser's limit of "
                      f"{MAX_GRAMMAR_WORDS}: use fewer templates or shorter slot lists"]


def test_an_offline_reply_names_parameters() -> None:
    errors = errors_of(config('["turn {state} the {room} light"]',
                              extra='offline_reply = "{colour} done"\n'))
    assert any("placeholder {colour} is not a declared parameter" in e for e in errors), errors


def test_numbers_are_spoken_as_words() -> None:
    assert spoken_number(21) == "twenty one"
    assert spoken_number(100) == "one hundred"


@pytest.mark.parametrize("example", ["car.toml", "raspberry-pi.toml"])
def test_the_examples_declare_offline_sentences(example: str) -> None:
    cfg = load_config(ROOT / "config" / "examples" / example)
    grammar = compile_grammar(cfg.tools)
    assert grammar is not None and len(grammar.tools) >= 5


def test_the_readme_example_is_valid() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Offline commands"):]
    example = section[section.index("```toml") + 7:section.index("```\n", 1)]
    (tool,) = parse_config(LIGHT + example, "README.md").tools
    grammar = compile_grammar([tool])
    assert grammar is not None and grammar.match("lights out in the living room") is not None


def test_offline_always_needs_sentences_and_the_voice_is_a_name() -> None:
    [error] = errors_of('[conversation]\noffline = "always"\n')
    assert "conversation.offline" in error and "sentences" in error
    parse_config(f'[conversation]\noffline = "always"\n{config(SENTENCE)}', "edgevoice.toml")
    [error] = errors_of('[conversation]\noffline_voice = "--path=/tmp"\n')
    assert "offline_voice" in error
    [error] = errors_of('[conversation]\noffline = "sometimes"\n')
    assert "conversation.offline" in error


SENTENCE = '["turn {state} [the] {room} light[s]"]'


def test_the_offline_reply_is_rendered_with_defaults_only_for_a_success() -> None:
    cfg = parse_config(config(SENTENCE, extra='offline_reply = "{room} light {state}, '
                                              'level {level}."\n'), "edgevoice.toml")
    spec = cfg.tools[0]
    args = '{"room": "kitchen", "state": "ON"}'
    assert offline_reply(spec, args, '{"ok": true}') == "kitchen light ON, level 10."
    assert offline_reply(spec, args, '{"ok": false, "error": "x"}') is None
    assert offline_reply(spec, "not json", '{"ok": true}') is None
    assert offline_reply(spec, '{"room": "kitchen"}', '{"ok": true}') is None  # no state
    bare = parse_config(config(SENTENCE), "edgevoice.toml").tools[0]
    assert offline_reply(bare, args, '{"ok": true}') is None


def test_a_template_that_does_not_parse_is_placed_in_the_file() -> None:
    text = config('[\n  "turn {state} the {room} light",\n  "switch (the {room} light {state}",\n]')
    [error] = errors_of(text)
    # The unclosed group opens at column 8 of the template; the file has it on line 8.
    assert "column 8 (line 8, column 11 of the file)" in error, error
    assert text.splitlines()[7][10] == "("


def test_an_offline_reply_may_say_fields_of_the_output() -> None:
    cfg = parse_config(config(SENTENCE, extra='offline_reply = "{room} is {output.stdout}."\n'),
                       "edgevoice.toml")
    spec = cfg.tools[0]
    args = '{"room": "kitchen", "state": "ON"}'
    assert offline_reply(spec, args, '{"ok": true, "stdout": "bright"}') == "kitchen is bright."
    assert offline_reply(spec, args, '{"ok": true}') is None  # no such field: the earcon
    for bad in ("{output.}", "{output.a.b}", "{colour}"):
        [error] = errors_of(config(SENTENCE, extra=f'offline_reply = "{bad}"\n'))
        assert "offline_reply" in error, error
