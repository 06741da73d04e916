"""The link's part in clean buffers and reply outcomes: our clears, a refused reply, and a
session.updated that is not what was asked for."""

from __future__ import annotations

import base64
import logging

import pytest
from test_link_protocol import created, error, frame, make, up, written

from edgevoice.link.protocol import ServiceError
from edgevoice.wire import events as ev

SESSION = {"id": "sess_1", "object": "realtime.session", "model": "gpt-realtime"}


def test_our_clear_forgets_only_the_audio_written_before_it() -> None:
    p = make()
    up(p)
    p.append_audio(b"\x01" * 640, 1.0)  # the tail of the last turn
    p.send(ev.InputAudioBufferClear(), 1.1)
    p.append_audio(b"\x02" * 640, 1.2)  # the new turn
    assert [f["type"] for f in written(p)] == ["input_audio_buffer.append",
                                               "input_audio_buffer.clear",
                                               "input_audio_buffer.append"]
    # The answer to our clear comes after the new turn's first audio was written: that audio
    # is still kept for a resend.
    p.receive_text(frame("input_audio_buffer.cleared"), 1.3)
    p.connection_closed(1.4)
    resent = [f for f in up(p, 2.0) if f["type"] == "input_audio_buffer.append"]
    assert [base64.b64decode(f["audio"]) for f in resent] == [b"\x02" * 640]


def test_a_clear_the_service_makes_itself_forgets_all_kept_audio() -> None:
    p = make()
    up(p)
    p.append_audio(b"\x01" * 640, 1.0)
    written(p)
    p.receive_text(frame("input_audio_buffer.cleared"), 1.1)
    p.connection_closed(1.2)
    assert [f["type"] for f in up(p, 2.0)] == []


def test_a_refused_response_create_ends_the_debt_so_the_link_can_be_quiet() -> None:
    p = make()
    up(p)
    event_id = p.send(ev.ResponseCreate(), 1.0)
    written(p)
    assert p.response_owed
    p.receive_text(error("Conversation has too many items", event_id, "server_error"), 1.1)
    [err] = p.events_received()
    assert isinstance(err, ServiceError) and err.caused_by == "response.create"
    assert not p.response_owed and p.quiet
    # A reply that does begin after all is followed as usual.
    p.receive_text(created("resp_1"), 1.2)
    assert p.response_id == "resp_1"


def test_an_error_about_something_else_keeps_the_reply_owed() -> None:
    p = make()
    up(p)
    p.send(ev.ResponseCreate(), 1.0)
    truncate = p.send(ev.ConversationItemTruncate(item_id="x", audio_end_ms=5), 1.0)
    written(p)
    p.receive_text(error("Item not found", truncate), 1.1)
    assert p.response_owed


def test_a_session_that_differs_in_what_the_daemon_relies_on_is_warned_about_once(
        caplog: pytest.LogCaptureFixture) -> None:
    p = make()
    differs = {**SESSION, "input_audio_format": "pcm16", "input_audio_sampling_rate": 24000,
               "output_audio_format": "pcm16",
               "turn_detection": {"type": "server_vad", "create_response": False,
                                  "interrupt_response": True, "auto_truncate": False}}
    with caplog.at_level(logging.WARNING, logger="edgevoice.voicelive"):
        for _ in range(2):  # the same on a reconnect: said once
            p.connection_opened()
            p.receive_text(frame("session.created", session=SESSION), 0.0)
            written(p)
            p.receive_text(frame("session.updated", session=differs), 0.0)
            assert p.ready
            p.connection_closed(0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert any("input_audio_sampling_rate = 24000, asked for 16000" in w for w in warnings)
    assert any("turn_detection.create_response = False, asked for True" in w for w in warnings)


def test_a_session_that_matches_or_leaves_fields_out_is_not_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    p = make()
    same = {**SESSION, "input_audio_format": "pcm16", "input_audio_sampling_rate": 16000,
            "output_audio_format": "pcm16",
            "turn_detection": {"type": "server_vad", "create_response": True}}
    with caplog.at_level(logging.WARNING, logger="edgevoice.voicelive"):
        p.connection_opened()
        p.receive_text(frame("session.created", session=SESSION), 0.0)
        written(p)
        p.receive_text(frame("session.updated", session=same), 0.0)
    assert p.ready
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
