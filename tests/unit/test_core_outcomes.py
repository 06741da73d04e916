"""Reply outcomes, usage, the token budget, replies the daemon drives and clean buffers: the
conversation core with exact timings (typed events as the service sends them)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_core import (
    FRAME,
    audio_delta,
    feed,
    link_up,
    make_core,
    response_created,
    sent_types,
    sentence,
    server,
    telemetry,
)

from edgevoice.conversation.budget import TokenBudget
from edgevoice.conversation.core import (
    Connect,
    Core,
    Earcon,
    FinishItem,
    RequestReply,
    SendAudio,
    SendEvent,
    State,
    actions_of,
)
from edgevoice.conversation.outcome import USAGE_FIELDS, cue_for, usage_fields
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.protocol import ServiceError
from edgevoice.wire import events as ev

USAGE = {"total_tokens": 420, "input_tokens": 330, "output_tokens": 90,
         "input_token_details": {"cached_tokens": 256, "text_tokens": 290, "audio_tokens": 40},
         "output_token_details": {"text_tokens": 20, "audio_tokens": 70}}


def done(status: str, details: dict[str, Any] | None = None, usage: Any = None,
         rid: str = "resp_1") -> ev.ServerEvent:
    return server({"type": "response.done", "response": {
        "id": rid, "status": status, "status_details": details, "usage": usage}})


def replying(**over: Any) -> Core:
    """Woken, link up, a reply playing (resp_1, item_a)."""
    core = make_core(**over)
    link_up(core, 0.0)
    core.on_wake("hey_jarvis", 0.9, 0.1)
    core.on_event(response_created(), 1.0)
    core.on_event(audio_delta(), 1.1)
    return core


def test_a_completed_reply_carries_its_tokens_and_no_reason_and_no_cue() -> None:
    core = replying()
    out = core.on_event(done("completed", usage=USAGE), 2.0)
    entry = telemetry(out, TelemetryName.REPLY_DONE)[0]
    assert entry.fields == {"status": "completed", "input_tokens": 330, "output_tokens": 90,
                            "input_text_tokens": 290, "input_audio_tokens": 40,
                            "output_text_tokens": 20, "output_audio_tokens": 70,
                            "cached_tokens": 256}
    assert not actions_of(Earcon, out) and not telemetry(out, TelemetryName.CUE)


def test_a_filtered_reply_is_not_a_finished_one_it_sounds_the_filtered_cue_after_its_audio(
) -> None:
    core = replying(follow_up_s=5.0)
    core.on_event(server({"type": "response.audio.done", "response_id": "resp_1",
                          "item_id": "item_a", "output_index": 0, "content_index": 0}), 1.5)
    out = core.on_event(done("incomplete", {"type": "incomplete", "reason": "content_filter"},
                             USAGE), 2.0)
    entry = telemetry(out, TelemetryName.REPLY_DONE)[0]
    assert entry.fields["status"] == "incomplete" and entry.fields["reason"] == "content_filter"
    cue = telemetry(out, TelemetryName.CUE)[0]
    assert cue.fields == {"cue": "filtered", "reason": "content_filter", "then": "earcon"}
    assert actions_of(Earcon, out) == [Earcon("filtered")]
    # The cut reply plays to its end first (the earcon is queued behind it), then the turn
    # ends as a finished one does: the follow-up window, to rephrase without the wake word.
    assert core.state is State.RESPONDING
    core.on_playback_drained(2.5)
    assert core.state is State.FOLLOW_UP


@pytest.mark.parametrize(("details", "reason", "cue"), [
    ({"type": "incomplete", "reason": "max_output_tokens"}, "max_output_tokens", "failed"),
    ({"type": "failed", "error": {"type": "server_error", "code": "boom", "message": "m"}},
     "server_error", "failed"),
    ({"type": "failed", "error": {"code": "content_filter"}}, "failed", "filtered"),
    ({"type": "failed"}, "failed", "failed"),
])
def test_failed_and_incomplete_replies_keep_the_service_reason_and_pick_their_cue(
        details: dict[str, Any], reason: str, cue: str) -> None:
    core = replying()
    core.on_playback_drained(1.5)
    out = core.on_event(done(details["type"], details), 2.0)
    assert telemetry(out, TelemetryName.REPLY_DONE)[0].fields["reason"] == reason
    assert actions_of(Earcon, out) == [Earcon(cue)]
    assert core.state is State.FOLLOW_UP


def test_cancelled_replies_never_cue_and_say_why_they_were_cancelled() -> None:
    core = replying()
    out = core.on_event(done("cancelled", {"type": "cancelled", "reason": "turn_detected"}), 2)
    assert telemetry(out, TelemetryName.REPLY_DONE)[0].fields == {
        "status": "cancelled", "reason": "turn_detected"}
    assert not actions_of(Earcon, out)
    assert cue_for(ev.Response(id="r", status="completed")) is None


def test_usage_fields_fill_missing_parts_with_zero() -> None:
    assert usage_fields(None) == {}
    fields = usage_fields(ev.Usage(input_tokens=5))
    assert set(fields) == set(USAGE_FIELDS) and fields["input_tokens"] == 5
    assert sum(fields.values()) == 5


def test_a_spoken_line_follows_the_cue_and_the_turn_waits_for_it_once() -> None:
    core = replying(cue_lines=(("failed", "Sorry, that went wrong."),))
    core.on_playback_drained(1.5)
    out = core.on_event(done("failed", {"type": "failed", "error": {"type": "server_error"}}),
                        2.0)
    assert telemetry(out, TelemetryName.CUE)[0].fields["then"] == "spoken line"
    [line] = [a.event for a in actions_of(SendEvent, out)]
    assert isinstance(line, ev.ResponseCreate) and line.response is not None
    message = line.response.pre_generated_assistant_message
    assert message is not None and message.content[0].text == "Sorry, that went wrong."
    assert core.state is State.RESPONDING  # the line is part of the turn
    core.on_event(response_created("resp_2"), 2.1)
    core.on_event(audio_delta("resp_2", "item_b"), 2.2)
    # The line's own reply failing too: the earcon, but never another line (no loop).
    out = core.on_event(done("failed", {"type": "failed"}, rid="resp_2"), 2.3)
    assert actions_of(Earcon, out) == [Earcon("failed")] and not actions_of(SendEvent, out)
    core.on_playback_drained(3.0)
    assert core.state is State.FOLLOW_UP


def test_no_spoken_line_while_the_link_is_down() -> None:
    core = make_core(cue_lines=(("failed", "Sorry."),))
    core.on_wake("hey_jarvis", 0.9, 0.1)
    core.on_event(response_created(), 1.0)
    core.on_playback_drained(1.5)
    out = core.on_event(done("failed", {"type": "failed"}), 2.0)
    assert actions_of(Earcon, out) and not actions_of(SendEvent, out)


def test_a_transcription_failure_sounds_not_understood_unless_a_reply_is_playing() -> None:
    failed = server({"type": "conversation.item.input_audio_transcription.failed",
                     "item_id": "u1", "content_index": 0,
                     "error": {"type": "transcription_error", "code": "audio_unclear",
                               "message": "could not transcribe"}})
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = core.on_event(failed, 1.0)
    assert telemetry(out, TelemetryName.TRANSCRIPTION_FAILED)[0].fields == {
        "item": "u1", "reason": "audio_unclear", "message": "could not transcribe"}
    assert actions_of(Earcon, out) == [Earcon("not_understood")]
    playing = replying()
    out = playing.on_event(failed, 2.0)
    assert telemetry(out, TelemetryName.TRANSCRIPTION_FAILED) and not actions_of(Earcon, out)


def test_a_warning_and_rate_limits_go_on_the_timeline_only() -> None:
    core = replying()
    out = core.on_event(server({"type": "warning", "warning": {
        "message": "Voice fell back", "code": "voice_fallback"}}), 1.2)
    assert telemetry(out, TelemetryName.SERVICE_WARNING)[0].fields == {
        "reason": "voice_fallback", "message": "Voice fell back"}
    out += core.on_event(server({"type": "rate_limits.updated", "rate_limits": [
        {"name": "tokens", "limit": 120000, "remaining": 118000, "reset_seconds": 1.2}]}), 1.3)
    assert telemetry(out, TelemetryName.RATE_LIMITS)[0].fields["limits"][0]["remaining"] == 118000
    assert not actions_of(Earcon, out) and core.state is State.RESPONDING


def error(message: str, caused_by: str | None, code: str = "server_error") -> ServiceError:
    event = ev.parse_server_event(json.dumps({"type": "error", "error": {
        "type": "server_error", "code": code, "message": message}}))
    assert isinstance(event, ev.ErrorEvent)
    return ServiceError(event, caused_by, benign=False)


def test_a_service_error_instead_of_the_reply_ends_the_turn_with_the_failed_cue() -> None:
    core = make_core(follow_up_s=5.0)
    link_up(core, 0.0)
    core.on_wake("hey_jarvis", 0.9, 0.1)
    core.on_event(server({"type": "input_audio_buffer.committed", "item_id": "u1"}), 2.0)
    # An error about something else leaves the turn waiting.
    out = core.on_event(error("bad truncate", "conversation.item.truncate"), 2.1)
    assert telemetry(out, TelemetryName.SERVICE_ERROR)[0].fields["ends_turn"] is False
    assert core.state is State.LISTENING and not actions_of(Earcon, out)
    out = core.on_event(error("The server had an error", None, "overloaded"), 2.2)
    assert telemetry(out, TelemetryName.SERVICE_ERROR)[0].fields == {
        "message": "The server had an error", "reason": "overloaded", "ends_turn": True}
    assert telemetry(out, TelemetryName.CUE)[0].fields["reason"] == "overloaded"
    assert actions_of(Earcon, out) == [Earcon("failed")]
    assert core.state is State.FOLLOW_UP  # not hanging until service_timeout_s


def test_a_spent_budget_answers_the_wake_with_a_cue_and_opens_nothing() -> None:
    core = make_core()
    core.limit = "tokens_per_hour 10 reached (12 in the last hour)"
    out = core.on_wake("hey_jarvis", 0.9, 1.0)
    assert actions_of(Earcon, out) == [Earcon("limit")]
    assert telemetry(out, TelemetryName.LIMIT_REACHED)[0].fields["reason"].startswith(
        "tokens_per_hour 10")
    assert not actions_of(Connect, out) and not actions_of(SendAudio, out)
    assert core.state is State.IDLE and core.turn == 0
    assert not actions_of(SendAudio, feed(core, sentence(), 1.0))
    core.limit = None
    assert actions_of(Connect, core.on_wake("hey_jarvis", 0.9, 9.0))


def test_budget_windows_to_the_minute_and_survive_a_dump_and_load() -> None:
    budget = TokenBudget(per_hour=1000, per_day=1500)
    t0 = 1_700_000_000.0
    budget.add(600, t0)
    budget.add(300, t0 + 1800)
    assert budget.reached(t0 + 1800) is None
    budget.add(200, t0 + 1900)
    assert budget.reached(t0 + 1900) == "tokens_per_hour 1000 reached (1100 in the last hour)"
    assert budget.reached(t0 + 3700) is None  # the first 600 left the hour
    again = TokenBudget(per_hour=1000, per_day=1500)
    assert again.load(json.loads(json.dumps(budget.dump())), t0 + 3700) == []
    assert again.used(86400, t0 + 3700) == 1100
    again.add(500, t0 + 3800)
    assert again.reached(t0 + 3800).startswith("tokens_per_day 1500 reached")
    assert again.load({"minutes": {"x": 1, "5": -1}}, t0) == ["bad minute 'x'",
                                                                "bad count at minute 5"]
    assert TokenBudget().load("junk", t0) == ["no 'minutes' table"]
    assert again.used(86400, t0 + 86400 + 3900) == 0  # a day later all is gone


def committed(item: str = "u1") -> ev.ServerEvent:
    return server({"type": "input_audio_buffer.committed", "item_id": item})


def test_create_response_false_the_core_asks_for_each_reply_once() -> None:
    core = make_core(drive_replies=True)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = core.on_event(committed(), 2.0)
    assert actions_of(RequestReply, out) == [RequestReply()]
    assert telemetry(out, TelemetryName.REPLY_REQUESTED)
    assert not actions_of(RequestReply, core.on_event(committed("u1b"), 2.1))
    plain = make_core()
    plain.on_wake("hey_jarvis", 0.9, 0.0)
    assert not actions_of(RequestReply, plain.on_event(committed(), 2.0))


def test_a_local_end_of_utterance_commits_and_asks_for_the_reply() -> None:
    from edgevoice.listen.vad import LocalEndpointer, UpstreamGate
    core = Core(make_core(local_end_of_utterance=True).s,
                upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700),
                endpointer=LocalEndpointer(silence_ms=700))
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = feed(core, sentence() + bytes(FRAME * 50), 0.0)
    assert sent_types(out) == [ev.InputAudioBufferCommit]
    assert actions_of(RequestReply, out) == [RequestReply()]


def test_a_warm_connection_clears_the_input_buffer_before_the_next_turn() -> None:
    core = make_core(follow_up_s=0.0)
    cold = core.on_wake("hey_jarvis", 0.9, 0.0)
    assert ev.InputAudioBufferClear not in sent_types(cold)  # nothing there to clear
    link_up(core, 0.2)
    core.on_event(response_created(), 2.0)
    core.on_event(server({"type": "response.done", "response": {"id": "resp_1",
                                                                "status": "completed"}}), 2.1)
    core.on_playback_drained(2.2)
    assert core.state is State.IDLE
    feed(core, bytes(FRAME * 10), 3.0)
    warm = core.on_wake("hey_jarvis", 0.9, 4.0)
    kinds = [type(a.event) if isinstance(a, SendEvent) else type(a) for a in warm
             if isinstance(a, SendEvent | SendAudio)]
    assert kinds[0] is ev.InputAudioBufferClear  # before any audio of the new turn


def test_an_abandoned_manual_turn_clears_what_it_sent() -> None:
    core = make_core(local_end_of_utterance=True, listen_timeout_s=3.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = feed(core, bytes(FRAME * 200), 0.0)  # nothing said: the turn is given up
    assert core.state is State.IDLE
    assert sent_types(out) == [ev.InputAudioBufferClear]
    server_vad = make_core(listen_timeout_s=3.0)
    server_vad.on_wake("hey_jarvis", 0.9, 0.0)
    assert sent_types(feed(server_vad, bytes(FRAME * 200), 0.0)) == []


def test_finish_item_still_comes_for_a_cut_reply() -> None:
    core = replying()
    out = core.on_event(server({"type": "response.audio.done", "response_id": "resp_1",
                                "item_id": "item_a", "output_index": 0, "content_index": 0}),
                        1.5)
    assert actions_of(FinishItem, out) == [FinishItem("item_a")]
