"""Offline conversations in the conversation core, with exact timings: the real VAD gate and
endpointer on recorded speech (see ``Core.on_recognised`` and ``conversation.offline``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from test_core import FRAME, feed, link_up, sentence, telemetry

from edgevoice.conversation.core import (
    OFFLINE_DECLINED_LINE,
    OFFLINE_FAILED_LINE,
    OFFLINE_NOTICE,
    ConfirmationAnswer,
    Connect,
    Core,
    CoreSettings,
    DropTurnAudio,
    LocalAudio,
    LocalReset,
    Recognise,
    RunTool,
    SendAudio,
    SendEvent,
    SpeakLocal,
    State,
    actions_of,
)
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.protocol import LinkDown, LinkUp, TurnAbandoned
from edgevoice.listen.vad import LocalEndpointer, UpstreamGate
from edgevoice.wire import events as ev

ARGS = {"state": "on"}


def offline_core(mode: str = "auto", **over: Any) -> Core:
    settings = CoreSettings(offline=mode, **over)
    return Core(settings, upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700),
                echo=EchoGuard(), endpointer=LocalEndpointer(silence_ms=800))


def spoken(core: Core, t0: float) -> list[Any]:
    """The recorded sentence (1 s of silence each side) from ``t0``."""
    return feed(core, sentence(), t0)


def finals(out: list[Any]) -> list[Recognise]:
    """The recognitions asked at the end of an utterance (not the early ones at a pause)."""
    return [r for r in actions_of(Recognise, out) if r.early_at is None]


def earlies(out: list[Any]) -> list[Recognise]:
    return [r for r in actions_of(Recognise, out) if r.early_at is not None]


def first_look(core: Core, after_s: float = 0.0) -> tuple[Recognise, list[tuple[float, bytes]]]:
    """Wake with the service unreachable, then the sentence frame by frame until the first
    early look after ``after_s``: the look and the frames not fed yet."""
    core.service_unreachable = True
    core.on_wake("hey_jarvis", 0.9, 0.0)
    pcm = sentence()
    frames = [(i / 32000, pcm[i:i + FRAME]) for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    for k, (t, frame) in enumerate(frames):
        looks = earlies(core.on_frame(frame, t))
        if looks and t > after_s:
            return looks[0], frames[k + 1:]
    raise AssertionError("no early look")


def heard_command(core: Core, t0: float = 0.0) -> tuple[list[Any], RunTool]:
    """Wake at t0 with the service unreachable, say the sentence, recognise set_light."""
    core.service_unreachable = True
    out = core.on_wake("hey_jarvis", 0.9, t0)
    out += spoken(core, t0)
    [rec] = finals(out)
    assert rec.purpose == "command" and rec.turn == core.turn
    out += core.on_recognised(rec.turn, "set_light", ARGS, "turn on the light", t0 + 5,
                              confidence=0.9)
    [run] = actions_of(RunTool, out)
    return out, run


def test_unreachable_service_the_utterance_is_recognised_on_the_device_not_sent() -> None:
    core = offline_core()
    core.service_unreachable = True
    out = core.on_wake("hey_jarvis", 0.9, 0.0)
    assert actions_of(DropTurnAudio, out)
    assert [e.fields["why"] for e in telemetry(out, TelemetryName.OFFLINE)] == \
        ["the service is unreachable"]
    assert actions_of(Connect, out) == [Connect(True)]  # the link keeps trying meanwhile
    frames = spoken(core, 0.0)
    assert not actions_of(SendAudio, frames)  # nothing for the service
    local = actions_of(LocalAudio, frames)
    assert local and sum(len(a.pcm) for a in local) >= 32000  # the speech, padded
    [rec] = finals(frames)
    assert (rec.purpose, rec.turn) == ("command", 1)
    assert core.state is State.LISTENING and core.activity() == "thinking"
    # Exactly once: more silence asks nothing more.
    assert not finals(feed(core, bytes(FRAME * 50), 3.5))


def test_a_command_runs_once_through_the_tools_and_is_answered_on_the_device() -> None:
    core = offline_core()
    out, run = heard_command(core)
    assert (run.name, run.source, run.call_id) == ("set_light", "offline", "offline_1")
    assert run.arguments == '{"state":"on"}'
    [call] = telemetry(out, TelemetryName.TOOL_CALL)
    assert call.fields["source"] == "offline" and call.fields["arguments"] == '{"state":"on"}'
    [heard] = telemetry(out, TelemetryName.OFFLINE_COMMAND)
    assert heard.fields["tool"] == "set_light" and heard.fields["text"] == "turn on the light"
    assert core.activity() == "thinking"
    done = core.on_tool_result(run.call_id, '{"ok": true}', 6.0, reply="Kitchen light on.")
    [speak] = actions_of(SpeakLocal, done)
    # "Offline" is said once, before the first local answer of the outage.
    assert speak.text == f"{OFFLINE_NOTICE} Kitchen light on." and speak.earcon is None
    # The model is told later: the user's words and what the device did, as text items.
    items = [a.event.item for a in actions_of(SendEvent, done)
             if isinstance(a.event, ev.ConversationItemCreate)]
    assert [type(i) for i in items] == [ev.UserMessage, ev.SystemMessage]
    assert items[0].content[0].text == "turn on the light"
    assert "set_light" in items[1].content[0].text and '{"state":"on"}' in items[1].content[0].text
    assert core.playing_item == speak.item_id and core.activity() == "speaking"
    assert core.on_tool_result(run.call_id, '{"ok": true}', 6.1) == []  # once
    core.on_playback_drained(7.0)
    assert core.state is State.FOLLOW_UP
    # A follow-up turn is offline too, and "offline" is not said again.
    out = spoken(core, 7.0)
    assert not actions_of(SendAudio, out) and actions_of(LocalReset, out)
    [rec] = finals(out)
    out = core.on_recognised(rec.turn, "set_light", {"state": "off"}, "turn off the light", 11.0)
    [run2] = actions_of(RunTool, out)
    assert run2.call_id != run.call_id
    [speak2] = actions_of(SpeakLocal, core.on_tool_result(run2.call_id, '{"ok": true}', 11.1))
    assert speak2.text == "" and speak2.earcon == "done"  # no offline_reply: the earcon


def test_the_notice_is_said_again_in_the_next_outage_only() -> None:
    core = offline_core()
    _, run = heard_command(core)
    [speak] = actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok": true}', 6.0))
    assert speak.text == OFFLINE_NOTICE and speak.earcon == "done"
    core.on_playback_drained(7.0)
    core.end_conversation(7.5)
    _, run = heard_command(core, 20.0)  # the same outage
    assert actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok":true}', 26.0))[0] \
        .text == ""
    core.on_playback_drained(27.0)
    core.end_conversation(27.5)
    link_up(core, 30.0)  # the service is back, then gone again
    core.on_event(LinkDown("gone", 1.0, 31.0), 31.0)
    _, run = heard_command(core, 40.0)
    assert actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok":true}', 46.0))[0] \
        .text == OFFLINE_NOTICE


def test_nothing_understood_plays_the_earcon_and_leaves_the_follow_up_window() -> None:
    core = offline_core()
    core.service_unreachable = True
    core.on_wake("hey_jarvis", 0.9, 0.0)
    [rec] = finals(spoken(core, 0.0))
    out = core.on_recognised(rec.turn, None, {}, "what song is this", 4.0, why="low-confidence")
    assert not actions_of(RunTool, out)
    [entry] = telemetry(out, TelemetryName.OFFLINE_NOT_UNDERSTOOD)
    assert entry.fields["reason"] == "low-confidence"
    [speak] = actions_of(SpeakLocal, out)
    assert speak.earcon == "not_understood" and speak.text == OFFLINE_NOTICE
    core.on_playback_drained(5.0)
    assert core.state is State.FOLLOW_UP


def test_a_result_for_a_turn_that_is_over_is_dropped() -> None:
    core = offline_core()
    core.service_unreachable = True
    core.on_wake("hey_jarvis", 0.9, 0.0)
    [rec] = finals(spoken(core, 0.0))
    core.end_conversation(4.0)
    assert core.on_recognised(rec.turn, "set_light", ARGS, "turn on the light", 4.5) == []


def test_always_never_connects_and_never_says_offline() -> None:
    core = offline_core("always")
    out = core.on_wake("hey_jarvis", 0.9, 0.0)
    assert not actions_of(Connect, out)
    assert [e.fields["why"] for e in telemetry(out, TelemetryName.OFFLINE)] == \
        ["conversation.offline = always"]
    [rec] = finals(spoken(core, 0.0))
    [run] = actions_of(RunTool, core.on_recognised(rec.turn, "set_light", ARGS, "x", 4.0))
    [speak] = actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok":true}', 4.1,
                                                          reply="Done."))
    assert speak.text == "Done."


def test_a_link_that_comes_in_time_takes_the_turn_whole() -> None:
    core = offline_core(offline_after_s=3.0)
    out = core.on_wake("hey_jarvis", 0.9, 0.0)  # the link is not up (not known unreachable)
    assert not actions_of(DropTurnAudio, out)
    early = feed(core, sentence()[: 32000 * 2], 0.0)  # speech, the link still connecting
    assert actions_of(SendAudio, early) and actions_of(LocalAudio, early)
    up = core.on_event(LinkUp(reconnected=False), 2.0)
    assert actions_of(LocalReset, up)
    rest = feed(core, sentence()[32000 * 2:], 2.0)
    assert actions_of(SendAudio, rest) and not actions_of(LocalAudio, rest)
    assert not finals(rest)
    assert not telemetry(core.on_tick(10.0), TelemetryName.OFFLINE)


def test_no_link_by_the_deadline_the_ended_utterance_is_recognised_then() -> None:
    core = offline_core(offline_after_s=3.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = spoken(core, 0.0)  # the sentence and its pause end before the deadline (3 s)
    assert actions_of(SendAudio, out)  # the link may still come: it gets the audio too
    assert telemetry(out, TelemetryName.END_OF_UTTERANCE_LOCAL)
    assert not finals(out)
    assert not finals(core.on_tick(2.95))
    tick = core.on_tick(3.0)
    assert actions_of(DropTurnAudio, tick)
    [rec] = finals(tick)
    assert rec.purpose == "command"


def test_a_refused_connection_goes_offline_at_the_next_tick() -> None:
    core = offline_core(offline_after_s=10.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    assert not telemetry(core.on_tick(0.5), TelemetryName.OFFLINE)
    core.service_unreachable = True  # the connection attempt failed: backing off
    tick = core.on_tick(0.6)
    assert actions_of(DropTurnAudio, tick)
    assert not actions_of(SendAudio, feed(core, sentence(), 0.6))


def test_turn_abandoned_by_the_link_while_waiting_goes_offline_and_keeps_listening() -> None:
    core = offline_core(offline_after_s=10.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = core.on_event(TurnAbandoned("link down for more than 30 s", 30000.0, 1.0), 1.0)
    assert actions_of(DropTurnAudio, out) and core.state is State.LISTENING


def test_failed_and_declined_commands_say_so() -> None:
    core = offline_core()
    _, run = heard_command(core)
    [speak] = actions_of(SpeakLocal, core.on_tool_result(
        run.call_id, '{"ok": false, "error": "exited with status 1"}', 6.0, reply="x"))
    assert speak.text.endswith(OFFLINE_FAILED_LINE) and speak.earcon == "failed"
    core.on_playback_drained(7.0)
    [rec] = finals(spoken(core, 7.0))
    [run] = actions_of(RunTool, core.on_recognised(rec.turn, "set_light", ARGS, "x", 11.0))
    [speak] = actions_of(SpeakLocal, core.on_tool_result(
        run.call_id, '{"ok": false, "error": "not done: declined by the user"}', 11.1))
    assert speak.text == OFFLINE_DECLINED_LINE and speak.earcon is None


def test_a_local_confirmation_is_asked_and_answered_on_the_device() -> None:
    core = offline_core()
    _, run = heard_command(core)
    out = core.ask_confirmation(run.call_id, "Open the garage?", 8.0, 6.0)
    assert not actions_of(ConfirmationAnswer, out)  # not declined: asked locally
    [speak] = actions_of(SpeakLocal, out)
    assert speak.text == f"{OFFLINE_NOTICE} Open the garage?"
    assert not [a for a in actions_of(SendEvent, out) if isinstance(a.event, ev.ResponseCreate)]
    out = core.on_playback_drained(7.0)
    assert core.state is State.LISTENING
    assert not actions_of(SendEvent, out)  # no input buffer at the service to clear
    out = feed(core, bytes(FRAME * 25) + sentence(), 7.0)
    assert not actions_of(SendAudio, out) and actions_of(LocalAudio, out)
    [rec] = finals(out)
    assert (rec.purpose, rec.call_id) == ("answer", run.call_id)
    assert core.on_recognised_answer("other", "yes", 11.0) == []
    [answer] = actions_of(ConfirmationAnswer, core.on_recognised_answer(run.call_id, "yes",
                                                                         11.0))
    assert answer.transcript == "yes" and answer.began is not None and answer.began >= 7.25
    assert core.state is State.RESPONDING
    [speak] = actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok":true}', 11.5,
                                                          reply="Garage opening."))
    assert speak.text == "Garage opening."


def test_an_answer_not_understood_declines() -> None:
    core = offline_core()
    _, run = heard_command(core)
    core.ask_confirmation(run.call_id, "Open the garage?", 8.0, 6.0)
    core.on_playback_drained(7.0)
    [rec] = finals(feed(core, bytes(FRAME * 25) + sentence(), 7.0))
    [answer] = actions_of(ConfirmationAnswer, core.on_recognised_answer(rec.call_id or "", None,
                                                                         11.0))
    assert answer.transcript is None and "not understood" in answer.why


def test_stopping_a_local_answer_truncates_nothing_at_the_service() -> None:
    core = offline_core()
    _, run = heard_command(core)
    [speak] = actions_of(SpeakLocal, core.on_tool_result(run.call_id, '{"ok":true}', 6.0))
    out = core.on_wake("hey_jarvis", 0.9, 6.2)  # a barge-in by the wake word
    out += core.on_playback_stopped(speak.item_id, 300.0, 6.3)
    assert not [a for a in actions_of(SendEvent, out)
                if isinstance(a.event, ev.ConversationItemTruncate | ev.ResponseCancel)]
    assert core.state is State.LISTENING and actions_of(LocalReset, out)


def test_off_keeps_the_link_path_whatever_the_link_does() -> None:
    core = offline_core("off")
    core.service_unreachable = True
    out = core.on_wake("hey_jarvis", 0.9, 0.0) + spoken(core, 0.0)
    assert actions_of(SendAudio, out)
    assert not actions_of(LocalAudio, out) and not finals(out)
    assert not telemetry(out + core.on_tick(10.0), TelemetryName.OFFLINE)


def test_a_pause_after_a_complete_command_ends_the_utterance_early() -> None:
    core = offline_core(offline_pause_ms=150)
    early, rest = first_look(core)
    assert early.early_at is not None
    t = early.early_at
    assert core.activity() == "listening"  # only a look: the utterance may go on
    # A result that is no command is dropped; the utterance goes on.
    assert core.on_recognised(early.turn, None, {}, "turn on", t + 0.1, early_at=t) == []
    assert core.activity() == "listening"
    # A command, with the user still quiet: the utterance ends now and the tool runs.
    done = core.on_recognised(early.turn, "set_light", ARGS, "turn on the light", t + 0.1,
                              early_at=t)
    [end] = telemetry(done, TelemetryName.END_OF_UTTERANCE_LOCAL)
    assert end.fields["early"] is True and end.fields["pause_ms"] >= 150
    assert [r.call_id for r in actions_of(RunTool, done)] == ["offline_1"]
    # The endpointer's own end later asks nothing more.
    later = [a for tf, frame in rest for a in core.on_frame(frame, tf)]
    assert not actions_of(Recognise, later) and not actions_of(RunTool, later)


def test_an_early_result_after_the_user_spoke_again_is_dropped() -> None:
    core = offline_core(offline_pause_ms=150)
    early, _ = first_look(core)
    # The user goes on speaking before the result comes.
    feed(core, sentence()[32000:32000 + 32000 // 2], 5.0)
    assert core.on_recognised(early.turn, "set_light", ARGS, "x", 5.6,
                              early_at=early.early_at) == []
    assert core.activity() == "listening"


def test_an_early_command_is_held_until_the_pause_is_long_enough() -> None:
    core = offline_core(offline_look_ms=80, offline_pause_ms=150)
    loud = np.flatnonzero(np.abs(np.frombuffer(sentence(), "<i2")) > 1000)
    early, rest = first_look(core, after_s=(int(loud[-1]) + 1) / 16000)  # the sentence's end
    assert early.early_at is not None
    # The decoding was quick: the command waits for the pause to reach 150 ms.
    assert core.on_recognised(early.turn, "set_light", ARGS, "x", early.early_at + 0.02,
                              early_at=early.early_at) == []
    ran = [(t, actions_of(RunTool, core.on_frame(frame, t))) for t, frame in rest]
    [(at, [run])] = [(t, r) for t, r in ran if r]
    assert run.source == "offline" and at - early.early_at >= 0.06
