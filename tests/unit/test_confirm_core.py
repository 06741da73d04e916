"""The daemon-owned confirmation in the conversation core, with exact timings: real VADs on
espeak speech, events as typed models (see ``Core.ask_confirmation``)."""

from __future__ import annotations

from typing import Any

from test_core import (
    FRAME,
    audio_delta,
    feed,
    link_up,
    make_core,
    response_created,
    response_done,
    sentence,
    server,
    telemetry,
)

from edgevoice.conversation.core import (
    ConfirmationAnswer,
    Core,
    Play,
    RunTool,
    SendAudio,
    SendEvent,
    State,
    actions_of,
)
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.protocol import LinkDown
from edgevoice.wire import events as ev

PROMPT = "Unlock the front door? Say yes to confirm."
ECHO_S = 0.25  # EchoGuard's default delay + spread: answers count from the drain + this


def events_of(out: list[Any], kind: type) -> list[Any]:
    return [a.event for a in actions_of(SendEvent, out) if isinstance(a.event, kind)]


def asked(**over: Any) -> tuple[Core, list[Any]]:
    """A core whose model called ``unlock`` (c1) and that was asked to confirm it at 1.3."""
    core = make_core(**over)
    link_up(core, 0.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created("resp_1"), 1.0)
    core.on_event(server({"type": "response.function_call_arguments.done",
                          "response_id": "resp_1", "item_id": "it_c1", "call_id": "c1",
                          "name": "unlock", "arguments": "{}"}), 1.1)
    assert [r.call_id for r in actions_of(RunTool, core.on_event(response_done("resp_1"), 1.2))] \
        == ["c1"]
    return core, core.ask_confirmation("c1", PROMPT, 8.0, 1.3)


def prompt_played(core: Core, drained_at: float = 3.0) -> list[Any]:
    """The prompt's response plays and drains at ``drained_at``."""
    out = core.on_event(response_created("resp_p"), 1.4)
    out += core.on_event(audio_delta("resp_p", "item_p"), 1.5)
    out += core.on_event(response_done("resp_p"), 1.6)
    assert not telemetry(out, TelemetryName.CONFIRM_LISTENING)  # still playing
    if drained_at is not None:
        out += core.on_playback_drained(drained_at)
    return out


def answers(out: list[Any]) -> list[ConfirmationAnswer]:
    return actions_of(ConfirmationAnswer, out)


def test_the_prompt_is_the_fixed_text_spoken_by_the_service_not_the_model() -> None:
    core, out = asked()
    [create] = events_of(out, ev.ResponseCreate)
    assert create.response is not None
    message = create.response.pre_generated_assistant_message
    assert message is not None and message.content[0].text == PROMPT
    assert [e.fields["prompt"] for e in telemetry(out, TelemetryName.CONFIRM_ASKED)] == [PROMPT]
    played = prompt_played(core)
    assert actions_of(Play, played)  # the prompt is heard like any reply
    assert core.state is State.LISTENING
    # The service's input buffer is emptied before anything of the answer is sent.
    assert events_of(played, ev.InputAudioBufferClear)


def test_a_yes_after_the_prompt_answers_it_and_the_services_own_reply_is_cancelled() -> None:
    core, _ = asked()
    prompt_played(core, drained_at=3.0)
    speech = bytes(FRAME * 25) + sentence()  # 0.5 s pause, then the answer
    out = feed(core, speech, 3.0)
    sent = actions_of(SendAudio, out)
    assert sent and min(a.t for a in sent) >= 3.0 + ECHO_S
    assert not answers(out)
    out = core.on_event(server({"type": "input_audio_buffer.speech_started",
                                "audio_start_ms": 0, "item_id": "item_u1"}), 6.0)
    out += core.on_event(server({"type": "input_audio_buffer.committed",
                                 "item_id": "item_u1"}), 6.1)
    # The service replies to the committed answer by itself: cancelled, never played.
    out += core.on_event(response_created("resp_auto"), 6.2)
    assert [e.response_id for e in events_of(out, ev.ResponseCancel)] == ["resp_auto"]
    assert not actions_of(Play, core.on_event(audio_delta("resp_auto", "item_x"), 6.25))
    out = core.on_event(server({"type": "conversation.item.input_audio_transcription.completed",
                                "item_id": "item_u1", "content_index": 0,
                                "transcript": "Yes."}), 6.3)
    [answer] = answers(out)
    assert answer.call_id == "c1" and answer.transcript == "Yes."
    assert answer.began is not None and answer.began >= 3.0 + ECHO_S
    assert core.state is State.RESPONDING  # the microphone is closed until the tool's output
    assert not actions_of(SendAudio, feed(core, sentence(), 6.4))
    done = core.on_event(response_done("resp_auto", "cancelled"), 6.5)
    assert not telemetry(done, TelemetryName.REPLY_DONE)  # not a reply of the conversation
    result = core.on_tool_result("c1", '{"ok": true}', 7.0)
    assert [type(e.event) for e in actions_of(SendEvent, result)] == \
        [ev.ConversationItemCreate, ev.ResponseCreate]
    # The follow-up reply is the conversation's again.
    core.on_event(response_created("resp_2"), 7.1)
    assert actions_of(Play, core.on_event(audio_delta("resp_2", "item_2"), 7.2))


def test_speech_going_on_as_the_prompt_ends_never_answers_it() -> None:
    """The prompt's echo (or an answer begun over the prompt) is not sent: only speech after
    a pause that reaches past the echo's tail can answer. (With local barge-in, speech over
    the prompt that the echo guard takes for the user interrupts it: declined, below.)"""
    core, _ = asked(bargein_local_vad=False)
    prompt_played(core, drained_at=None)
    speech = sentence()  # 1 s silence, 0.94 s of continuous speech, 1 s silence
    drained = 1.9 + 1.0 + 0.5  # in the middle of the speech
    out: list[Any] = []

    def drain(t: float) -> None:
        if t >= drained and core.state is State.RESPONDING:
            out.extend(core.on_playback_drained(t))

    out += feed(core, speech, 1.9, on_frame=drain)
    assert core.state is State.LISTENING
    assert not actions_of(SendAudio, out), "speech begun before the prompt ended was sent"
    # Then a real answer after the pause: sent, from after the pause only.
    later = feed(core, sentence(), 1.9 + len(speech) / 32000)
    sent = actions_of(SendAudio, later)
    assert sent and min(a.t for a in sent) >= 1.9 + len(speech) / 32000


def test_silence_declines_after_the_window() -> None:
    core, _ = asked()
    prompt_played(core, drained_at=3.0)
    assert not answers(core.on_tick(10.9))
    [answer] = answers(core.on_tick(11.0))
    assert answer.transcript is None and "no answer within 8 s" in answer.why
    assert core.state is State.RESPONDING


def test_an_answer_whose_transcript_never_comes_declines() -> None:
    core, _ = asked(confirm_answer_s=4.0)
    prompt_played(core, drained_at=3.0)
    feed(core, bytes(FRAME * 25) + sentence(), 3.0)
    out = core.on_tick(9.0)
    [answer] = answers(out) or answers(core.on_tick(9.5))
    assert answer.transcript is None and "transcript" in answer.why


def test_a_transcript_of_another_item_does_not_answer() -> None:
    core, _ = asked()
    prompt_played(core, drained_at=3.0)
    feed(core, bytes(FRAME * 25) + sentence(), 3.0)
    core.on_event(server({"type": "input_audio_buffer.committed", "item_id": "item_u1"}), 6.0)
    late = core.on_event(server({
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_old", "content_index": 0, "transcript": "yes"}), 6.1)
    assert not answers(late)


def test_barge_in_over_the_prompt_declines() -> None:
    for barge in ("wake word", "local speech"):
        core, _ = asked()
        core.on_event(response_created("resp_p"), 1.4)
        core.on_event(audio_delta("resp_p", "item_p"), 1.5)
        if barge == "wake word":
            out = core.on_wake("hey_jarvis", 0.9, 1.8)
        else:
            out = feed(core, sentence(), 1.6)
        [answer] = answers(out)
        assert answer.transcript is None and f"interrupted ({barge})" in answer.why


def test_link_lost_or_down_declines() -> None:
    core, _ = asked()
    prompt_played(core, drained_at=3.0)
    [answer] = answers(core.on_event(LinkDown(reason="test", retry_in=1.0, t=4.0), 4.0))
    assert "connection" in answer.why
    # Asked while the link is down: declined at once (no local recogniser yet).
    [offline] = answers(core.ask_confirmation("c2", PROMPT, 8.0, 4.1))
    assert offline.call_id == "c2" and "unreachable" in offline.why


def test_prompts_are_asked_one_at_a_time_in_order() -> None:
    core, first = asked()
    second = core.ask_confirmation("c2", "And the boot?", 8.0, 1.35)
    assert not events_of(second, ev.ResponseCreate)  # waits for the first one
    prompt_played(core, drained_at=3.0)
    out = core.on_tick(11.0)  # the first one times out...
    assert [a.call_id for a in answers(out)] == ["c1"]
    [create] = events_of(out, ev.ResponseCreate)  # ...and the second one is asked
    assert create.response.pre_generated_assistant_message.content[0].text == "And the boot?"
    ended = core.forget_confirmation("c2", 11.5)
    assert [a.call_id for a in answers(ended)] == ["c2"]


def test_a_failed_prompt_declines() -> None:
    core, _ = asked()
    core.on_event(response_created("resp_p"), 1.4)
    [answer] = answers(core.on_event(response_done("resp_p", "failed"), 1.5))
    assert "not spoken" in answer.why


def test_local_end_of_utterance_commits_the_answer_without_asking_for_a_reply() -> None:
    core, _ = asked(local_end_of_utterance=True, auto_response=False)
    from edgevoice.listen.vad import LocalEndpointer
    core.endpointer = LocalEndpointer()
    prompt_played(core, drained_at=3.0)
    out = feed(core, bytes(FRAME * 25) + sentence(), 3.0)
    assert events_of(out, ev.InputAudioBufferCommit)
    assert not events_of(out, ev.ResponseCreate)


def test_with_replies_driven_by_the_daemon_an_answer_asks_for_no_reply_of_its_own() -> None:
    from edgevoice.conversation.core import RequestReply
    core, _ = asked(drive_replies=True, auto_response=False)
    prompt_played(core, drained_at=3.0)
    feed(core, bytes(FRAME * 25) + sentence(), 3.0)
    out = core.on_event(server({"type": "input_audio_buffer.committed",
                                "item_id": "item_u1"}), 6.0)
    assert not actions_of(RequestReply, out) and not events_of(out, ev.ResponseCancel)
    out = core.on_event(server({"type": "conversation.item.input_audio_transcription.completed",
                                "item_id": "item_u1", "content_index": 0,
                                "transcript": "yes"}), 6.1)
    assert [a.transcript for a in answers(out)] == ["yes"]
    # The reply after the tool's output is the daemon's one request.
    result = core.on_tool_result("c1", '{"ok": true}', 6.5)
    assert events_of(result, ev.ResponseCreate)
