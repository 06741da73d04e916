"""Which spoken answers confirm a ``confirm = true`` tool, and the question the daemon asks."""

from __future__ import annotations

import pytest

from edgevoice.config.tools import ToolSpec
from edgevoice.tools.confirm import YesRule, prompt_text


@pytest.mark.parametrize(
    ("said", "confirms"),
    [
        ("Yes.", True),
        ("yeah, go ahead", True),
        ("Do it!", True),
        ("OK, confirm", True),
        ("That\u2019s right", True),  # typographic apostrophe from the transcriber
        ("yes please", True),
        ("Sure, thanks.", True),
        ("please", False),  # a filler alone is no answer
        ("Okay, and what's the weather tomorrow?", False),  # the whole utterance must be yes
        ("yes but not the front door", False),
        ("No.", False),
        ("Don't do it", False),
        ("yes... no wait", False),
        ("yes yes yes yes yes", False),  # more than four words
        ("I know", False),
        ("yesterday", False),
        ("", False),
    ],
)
def test_only_a_short_whole_yes_confirms(said: str, confirms: bool) -> None:
    assert YesRule().accepts(said) is confirms


def test_the_list_and_the_length_are_configurable() -> None:
    rule = YesRule(["ja", "mach das"], max_words=2)
    assert rule.accepts("Ja, mach das") is False  # three words
    assert rule.accepts("mach das") is True and rule.accepts("yes") is False
    with pytest.raises(ValueError):
        YesRule(["..."])


def test_the_question_is_the_template_with_the_validated_arguments() -> None:
    assert prompt_text("open_window", "Open the {side} window to {percent} percent?",
                       {"side": "left", "percent": 40.0}) == \
        "Open the left window to 40 percent?"
    assert prompt_text("unlock_front_door", None, {}) == \
        "Should I unlock front door? Please say yes or no."
    assert prompt_text("set_fan", None, {"on": True}) == \
        "Should I set fan with on yes? Please say yes or no."


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"confirm_prompt": "Open it?"}, "confirm_prompt is only for confirm = true"),
        ({"confirm": True, "confirm_prompt": "Open the {door}?"},
         "confirm_prompt: placeholder {door} is not a declared parameter"),
        ({"confirm": True, "confirm_prompt": "Open the {side!r}?"}, "plain {name}"),
        ({"confirm": True, "confirm_window_s": 120}, "less than or equal to 60"),
    ],
)
def test_bad_confirmation_settings_are_refused(fields: dict, error: str) -> None:
    base = {"name": "open_window", "command": {"argv": ["true", "{side}"]},
            "parameters": {"type": "object", "required": ["side"],
                           "properties": {"side": {"type": "string", "enum": ["left"]}}}}
    with pytest.raises(ValueError, match=error.replace("{", r"\{").replace("(", r"\(")):
        ToolSpec.model_validate(base | fields)
