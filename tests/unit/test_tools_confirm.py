"""Spoken confirmation: what counts as yes or no, and which turns answer which request."""

from __future__ import annotations

import pytest

from edgevoice.tools.confirm import Confirmations, Decision, Verdict


@pytest.mark.parametrize(
    ("said", "verdict"),
    [
        ("Yes.", Verdict.YES),
        ("yeah go ahead", Verdict.YES),
        ("Do it!", Verdict.YES),
        ("OK, confirm", Verdict.YES),
        ("That's right", Verdict.YES),
        ("That\u2019s right", Verdict.YES),  # typographic apostrophe from the transcriber
        ("No.", Verdict.NO),
        ("Don't do it", Verdict.NO),  # "do it" inside a no is a no
        ("do not", Verdict.NO),
        ("yes... no wait", Verdict.NO),  # both: no wins
        ("I'm not sure", Verdict.NO),
        ("cancel that", Verdict.NO),
        ("what's the weather", Verdict.NEITHER),
        ("I know the answer", Verdict.NEITHER),  # "no" is a word, not a substring
        ("yesterday", Verdict.NEITHER),
        ("", Verdict.NEITHER),
    ],
)
def test_classify(said: str, verdict: Verdict) -> None:
    assert Confirmations().classify(said) is verdict


def test_custom_phrases() -> None:
    c = Confirmations(affirmative=["ja", "mach das"], negative=["nein"])
    assert c.classify("Ja, mach das") is Verdict.YES
    assert c.classify("nein") is Verdict.NO
    assert c.classify("yes") is Verdict.NEITHER


def test_a_request_is_answered_only_by_a_later_turn_within_the_window() -> None:
    c = Confirmations()
    assert c.decide("k", 10.0, 30) is Decision.ASK
    c.heard("yes", 9.0)  # began before the request
    c.heard("the weather", 11.0)
    assert c.decide("k", 12.0, 30) is Decision.WAITING  # asked, not answered
    c.heard("yes", 13.0)
    assert c.decide("other", 14.0, 30) is Decision.ASK  # a yes answers what was asked...
    assert c.decide("k", 14.0, 30) is Decision.RUN  # ...including what was asked before it
    assert c.decide("k", 15.0, 30) is Decision.ASK  # used up: a new request
    c.heard("no", 16.0)
    assert c.decide("k", 17.0, 30) is Decision.DECLINED
    assert c.decide("k", 18.0, 30) is Decision.ASK
    c.heard("yes", 50.0)
    assert c.decide("k", 50.5, 30) is Decision.ASK  # the request of 18.0 had expired


def test_bounded() -> None:
    c = Confirmations(max_pending=3, max_turns=2)
    for i in range(10):
        c.decide(f"k{i}", float(i), 100)
        c.heard("yes", i + 0.5)
    assert len(c._pending) == 3 and len(c._turns) == 2
    # The oldest requests were dropped: they ask again instead of running.
    assert c.decide("k0", 20.0, 100) is Decision.ASK
    assert c.decide("k9", 20.0, 100) is Decision.RUN
