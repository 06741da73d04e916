"""The Voice Live protocol object without sockets: exact frames in, exact frames and events out,
time as an argument."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from edgevoice.config import Config, VoiceLiveConfig
from edgevoice.conversation.core import Core, CoreSettings, RunTool, State, actions_of
from edgevoice.conversation.echo import EchoGuard
from edgevoice.link.protocol import (
    CALL_IDS_KEPT,
    LinkUp,
    Outgoing,
    ServiceError,
    TurnAbandoned,
    VoiceLiveProtocol,
)
from edgevoice.listen.vad import UpstreamGate
from edgevoice.wire import events as ev

SESSION = {"id": "sess_1", "object": "realtime.session", "model": "gpt-realtime"}
CHUNK = bytes(640)  # 20 ms of 16 kHz PCM16, the session's input format
BYTES_PER_S = 32000


def make(**over: Any) -> VoiceLiveProtocol:
    cfg = VoiceLiveConfig.model_validate(over)
    session = Config().request_session()
    assert session.input_audio_sampling_rate == 16000 and session.input_audio_format == "pcm16"
    return VoiceLiveProtocol(cfg, session)


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def written(p: VoiceLiveProtocol) -> list[dict[str, Any]]:
    return [json.loads(o.text) for o in p.data_to_send()]


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def handshake(p: VoiceLiveProtocol, now: float = 0.0) -> list[Any]:
    """Open a connection and run the handshake; returns the events it delivered (the last
    one is the LinkUp)."""
    p.connection_opened()
    p.receive_text(frame("session.created", session=SESSION), now)
    assert types(written(p)) == ["session.update"]
    p.receive_text(frame("session.updated", session=SESSION), now)
    assert p.ready
    events = p.events_received()
    assert isinstance(events[-1], LinkUp)
    return events


def up(p: VoiceLiveProtocol, now: float = 0.0) -> list[dict[str, Any]]:
    """:func:`handshake`; returns what was written after ``session.updated`` (the replay
    and the outbox)."""
    handshake(p, now)
    return written(p)


def created(rid: str) -> str:
    return frame("response.created", response={"id": rid, "status": "in_progress"})


def done(rid: str, status: str = "completed") -> str:
    return frame("response.done", response={"id": rid, "status": status})


def delta(rid: str, item: str = "item_a", data: bytes = bytes(480)) -> str:
    return frame("response.audio.delta", response_id=rid, item_id=item, output_index=0,
                 content_index=0, delta=base64.b64encode(data).decode())


def call(call_id: str, rid: str = "resp_1", name: str = "lights") -> str:
    return frame("response.function_call_arguments.done", response_id=rid, item_id=f"it_{call_id}",
                 call_id=call_id, name=name, arguments='{"on": true}')


def error(message: str, event_id: str | None, kind: str = "invalid_request_error") -> str:
    return frame("error", error={"type": kind, "message": message, "event_id": event_id})


def delivered(p: VoiceLiveProtocol) -> list[Any]:
    return p.events_received()


# --------------------------------------------------------------------------- handshake


def test_handshake_order_session_first_then_replay_then_the_outbox() -> None:
    p = make()
    p.append_audio(CHUNK, 0.0)  # queued before there is any connection
    assert p.data_to_send() == []
    p.connection_opened()
    assert p.awaiting == "session.created" and p.data_to_send() == []
    p.receive_text(frame("session.created", session=SESSION), 1.1)
    out = p.data_to_send()
    assert [json.loads(o.text)["type"] for o in out] == ["session.update"]
    assert out[0].audio is False
    assert json.loads(out[0].text)["session"]["input_audio_sampling_rate"] == 16000
    assert p.awaiting == "session.updated"
    assert p.data_to_send() == []  # no audio before the session is configured
    p.receive_text(frame("session.updated", session=SESSION), 1.2)
    events = delivered(p)
    assert [type(e) for e in events] == [ev.SessionCreated, ev.SessionUpdated, LinkUp]
    assert events[-1] == LinkUp(False) and p.ready and p.awaiting is None
    out = p.data_to_send()
    assert out == [Outgoing(json.dumps({"type": "input_audio_buffer.append",
                                        "event_id": "evc_1",
                                        "audio": base64.b64encode(CHUNK).decode()},
                                       separators=(",", ":")), True)]
    assert p.stats["connects"] == 1


def test_a_refused_session_update_is_reported_and_the_session_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = make()
    p.connection_opened()
    p.receive_text(frame("session.created", session=SESSION), 0.0)
    update_id = written(p)[0]["event_id"]
    p.receive_text(error("voice not available in this region", update_id), 0.1)
    session_created, err, link_up = delivered(p)
    assert isinstance(session_created, ev.SessionCreated) and isinstance(err, ServiceError) and err.caused_by == "session.update"
    assert not err.benign and "voice not available" in err.message
    assert link_up == LinkUp(False) and p.ready
    assert "refused the session settings: voice not available" in caplog.text
    # An error that names another event does not end the handshake.
    q = make()
    q.connection_opened()
    q.receive_text(frame("session.created", session=SESSION), 0.0)
    q.receive_text(error("something else", "evc_999"), 0.1)
    assert q.awaiting == "session.updated" and not q.ready


def test_a_second_connection_says_reconnected_and_sends_the_session_again() -> None:
    p = make()
    assert handshake(p)[-1] == LinkUp(False)
    p.connection_closed(5.0)
    assert not p.ready and not p.connected and p.data_to_send() == []
    assert handshake(p, 6.0)[-1] == LinkUp(True)
    assert p.stats["connects"] == 2


# --------------------------------------------------------------------------- outbox


def test_outbox_keeps_order_and_gives_increasing_ids() -> None:
    p = make()
    up(p)
    ids = [p.send(ev.InputAudioBufferCommit(), 1.0), p.send(ev.ResponseCreate(), 1.0)]
    p.append_audio(CHUNK, 1.0)
    given = ev.ResponseCancel(event_id="mine")
    assert p.send(given, 1.0) == "mine"  # an id of the caller's own is kept
    out = written(p)
    assert types(out) == ["input_audio_buffer.commit", "response.create",
                          "input_audio_buffer.append", "response.cancel"]
    assert [f["event_id"] for f in out] == [*ids, "evc_4", "mine"]
    # evc_1 was the session.update: ids are unique across everything the link wrote.
    assert ids == ["evc_2", "evc_3"]
    assert p.data_to_send() == []  # each frame handed out once


def test_while_down_cancels_are_dropped_and_items_wait_for_the_replay() -> None:
    p = make()
    up(p)
    p.connection_closed(1.0)
    p.send(ev.ResponseCancel(), 1.1)
    p.send(ev.ConversationItemCreate.model_validate(
        {"item": {"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": "turn the lights on"}]}}), 1.2)
    out = up(p, 2.0)
    items = [f["item"] for f in out if f["type"] == "conversation.item.create"]
    assert types(out) == ["conversation.item.create"]  # once, from the replay; no cancel
    assert items[0]["content"] == [{"type": "input_text", "text": "turn the lights on"}]


# --------------------------------------------------------------------------- errors


def test_an_error_names_the_event_that_caused_it() -> None:
    p = make()
    up(p)
    commit_id = p.send(ev.InputAudioBufferCommit(), 1.0)
    written(p)
    p.receive_text(error("buffer too small", commit_id), 1.1)
    (err,) = delivered(p)
    assert isinstance(err, ServiceError) and err.caused_by == "input_audio_buffer.commit"
    assert err.event.error.event_id == commit_id and not err.benign
    p.receive_text(error("server trouble", None, "server_error"), 1.2)
    (err,) = delivered(p)
    assert err.caused_by is None and not err.benign


def test_a_benign_cancel_error_ends_the_response_the_link_counted() -> None:
    p = make()
    up(p)
    p.receive_text(created("resp_stray"), 1.0)  # its response.done never comes
    assert p.response_id == "resp_stray" and not p.quiet
    cancel_id = p.send(ev.ResponseCancel(), 2.0)
    written(p)
    p.receive_text(error("Cancellation failed: no active response", cancel_id), 2.1)
    events = delivered(p)
    assert [e.benign for e in events if isinstance(e, ServiceError)] == [True]
    assert events[-1].caused_by == "response.cancel"
    assert p.response_id is None and p.quiet
    # The same words about another event are not benign bookkeeping for a cancel.
    q = make()
    up(q)
    q.receive_text(created("resp_1"), 1.0)
    commit_id = q.send(ev.InputAudioBufferCommit(), 1.1)
    written(q)
    q.receive_text(error("no active response", commit_id), 1.2)
    assert q.response_id == "resp_1"


# --------------------------------------------------------------------------- turn audio


def test_unacked_turn_audio_is_sent_again_first_after_a_drop() -> None:
    p = make()
    up(p)
    chunks = [bytes([i]) * 640 for i in range(1, 6)]
    for chunk in chunks[:3]:
        p.append_audio(chunk, 1.0)
    assert [f["type"] for f in written(p)] == ["input_audio_buffer.append"] * 3
    p.connection_closed(1.5)
    for chunk in chunks[3:]:  # captured while the link is down
        p.append_audio(chunk, 1.6)
    out = up(p, 2.0)
    assert [base64.b64decode(f["audio"]) for f in out] == chunks  # whole, in order
    # Committed audio is the service's: not sent again after the next drop.
    p.receive_text(frame("input_audio_buffer.committed", item_id="item_u1"), 2.5)
    assert p.response_owed  # the service's VAD will answer the committed turn
    p.receive_text(created("resp_1"), 2.6)
    p.receive_text(done("resp_1"), 2.7)
    assert p.quiet
    p.connection_closed(3.0)
    (replayed,) = up(p, 3.5)  # the replay only: the user's audio as an item, no append
    assert replayed["type"] == "conversation.item.create"
    assert base64.b64decode(replayed["item"]["content"][0]["audio"]) == b"".join(chunks)


def test_a_turn_beyond_the_offline_bound_is_abandoned_as_a_whole() -> None:
    p = make(offline_buffer_s=1.0)
    for i in range(50):  # exactly 1.0 s: kept
        p.append_audio(CHUNK, i * 0.02)
    assert delivered(p) == []
    p.append_audio(CHUNK, 1.0)  # 1.02 s
    (abandoned,) = delivered(p)
    assert isinstance(abandoned, TurnAbandoned) and abandoned.t == 1.0
    assert abandoned.dropped_ms == pytest.approx(1020.0)
    assert "link down for more than 1 s of audio" in abandoned.reason
    assert p.stats["abandoned_turns"] == 1
    assert up(p, 2.0) == []  # none of the turn is sent


def test_connected_turn_audio_is_trimmed_and_a_later_drop_abandons_the_turn() -> None:
    p = make(offline_buffer_s=1.0)
    up(p)
    for i in range(60):  # 1.2 s written while connected: the oldest is forgotten, not lost
        p.append_audio(CHUNK, i * 0.02)
        written(p)
    assert delivered(p) == [] and not p.quiet
    p.connection_closed(2.0)  # what is kept no longer holds the turn from its start
    (abandoned,) = delivered(p)
    assert isinstance(abandoned, TurnAbandoned) and abandoned.t == 2.0
    assert abandoned.reason == "connection lost during a turn too long to resend"
    assert abandoned.dropped_ms == pytest.approx(1000.0)
    assert "input_audio_buffer.append" not in types(up(p, 3.0))


# --------------------------------------------------------------------------- replay


def converse(p: VoiceLiveProtocol, now: float = 1.0) -> None:
    """One turn with a function call whose output the caller sent."""
    p.receive_text(frame("input_audio_buffer.committed", item_id="item_u1"), now)
    p.receive_text(frame("conversation.item.input_audio_transcription.completed",
                         item_id="item_u1", content_index=0, transcript="lights on"), now)
    p.receive_text(created("resp_1"), now)
    p.receive_text(call("call_1"), now)
    p.receive_text(done("resp_1"), now)
    p.send(ev.ConversationItemCreate.function_call_output("call_1", '{"ok": true}'), now)
    p.send(ev.ResponseCreate(), now)
    p.receive_text(created("resp_2"), now)
    p.receive_text(frame("response.audio_transcript.done", response_id="resp_2",
                         item_id="item_a2", output_index=0, content_index=0,
                         transcript="The lights are on."), now)
    p.receive_text(done("resp_2"), now)
    written(p)
    delivered(p)


def test_the_replay_carries_the_conversation_and_asks_for_no_answer_when_none_is_owed() -> None:
    p = make()
    up(p)
    converse(p)
    assert p.quiet
    p.connection_closed(2.0)
    out = up(p, 3.0)
    assert types(out) == ["conversation.item.create"] * 4  # no response.create: none owed
    assert [f["item"] for f in out] == [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "lights on"}]},
        {"type": "function_call", "call_id": "call_1", "name": "lights",
         "arguments": '{"on": true}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
        {"type": "message", "role": "assistant",
         "content": [{"type": "text", "text": "The lights are on."}]},
    ]


def test_a_response_lost_with_its_connection_is_asked_for_once_after_the_replay() -> None:
    p = make()
    up(p)
    converse(p)
    p.receive_text(created("resp_3"), 4.0)  # mid-reply ...
    p.connection_closed(4.5)  # ... the connection drops
    assert p.response_id is None and p.response_owed
    out = up(p, 5.0)
    assert types(out) == ["conversation.item.create"] * 4 + ["response.create"]
    assert p.response_owed  # until the service begins it
    p.receive_text(created("resp_4"), 5.5)
    assert not p.response_owed and p.response_id == "resp_4"


def test_a_response_create_queued_while_down_is_not_asked_for_twice() -> None:
    p = make()
    up(p)
    p.connection_closed(1.0)
    p.send(ev.ResponseCreate(), 1.5)
    assert types(up(p, 2.0)) == ["response.create"]


def test_no_response_create_after_the_replay_while_calls_await_their_outputs() -> None:
    p = make()
    up(p)
    p.receive_text(created("resp_1"), 1.0)
    p.receive_text(call("call_9"), 1.1)
    p.connection_closed(1.2)  # no response.done: the caller runs the call on LinkUp
    out = up(p, 2.0)
    assert types(out) == ["conversation.item.create"]
    assert out[0]["item"]["type"] == "function_call"
    assert not p.response_owed  # the caller sends the output and then asks itself


# --------------------------------------------------------------------------- exactly once


def test_a_repeated_call_id_is_delivered_once_also_across_connections() -> None:
    p = make()
    up(p)
    p.receive_text(created("resp_1"), 1.0)
    p.receive_text(call("call_1"), 1.1)
    p.receive_text(call("call_1"), 1.2)  # repeated within the response
    p.receive_text(call("call_2"), 1.3)
    p.receive_text(done("resp_1"), 1.4)
    events = delivered(p)
    p.connection_closed(2.0)
    up(p, 3.0)
    p.receive_text(created("resp_2"), 3.1)
    p.receive_text(call("call_1", "resp_2"), 3.2)  # and by a later response
    calls = [e.call_id for e in events + delivered(p)
             if isinstance(e, ev.ResponseFunctionCallArgumentsDone)]
    assert calls == ["call_1", "call_2"]
    assert [e.call_id for e in p.context.entries if e.kind == "function_call"] == \
        ["call_1", "call_2"]


def test_the_call_id_record_is_bounded() -> None:
    p = make()
    for i in range(CALL_IDS_KEPT + 1):
        p.receive_text(call(f"call_{i}"), 0.0)
    assert len(delivered(p)) == CALL_IDS_KEPT + 1
    p.receive_text(call(f"call_{CALL_IDS_KEPT}"), 0.0)  # the newest is still known
    assert delivered(p) == []
    p.receive_text(call("call_0"), 0.0)  # the oldest was forgotten
    assert len(delivered(p)) == 1


def make_core() -> Core:
    return Core(CoreSettings(), upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700),
                echo=EchoGuard())


def through(p: VoiceLiveProtocol, core: Core, frames: list[str], t: float) -> list[Any]:
    """Frames through the protocol, what it delivers into the core: the daemon's path."""
    out: list[Any] = []
    for text in frames:
        p.receive_text(text, t)
        for event in p.events_received():
            out += core.on_event(event, t)
    return out


def test_a_call_the_service_repeats_runs_once_in_the_core() -> None:
    p, core = make(), make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    out = through(p, core, [created("resp_1"), call("c1"), call("c2"), call("c1"),
                            done("resp_1")], 1.0)
    assert sorted(r.call_id for r in actions_of(RunTool, out)) == ["c1", "c2"]
    core.on_tool_result("c1", '{"ok":true}', 1.1)
    core.on_tool_result("c2", '{"ok":true}', 1.2)
    out = through(p, core, [created("resp_2"), call("c1", "resp_2"), done("resp_2")], 1.3)
    assert not actions_of(RunTool, out)


# --------------------------------------------------------------------------- responses


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_a_late_done_of_a_replaced_response_reaches_no_one(status: str) -> None:
    p, core = make(), make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    through(p, core, [created("resp_1"), delta("resp_1")], 1.0)
    assert core.state is State.RESPONDING
    through(p, core, [frame("input_audio_buffer.speech_started", audio_start_ms=1,
                            item_id="u")], 2.0)
    assert through(p, core, [created("resp_2")], 2.5) != []
    assert through(p, core, [done("resp_1", status), delta("resp_1")], 2.6) == []
    assert core.state is State.RESPONDING and p.response_id == "resp_2"
    assert p.stats["stale"] == 2
    # The done of the response in progress gets through, once.
    p.receive_text(done("resp_2"), 3.0)
    assert [type(e) for e in p.events_received()] == [ev.ResponseDone]
    p.receive_text(done("resp_2"), 3.1)
    assert p.events_received() == [] and p.quiet


# --------------------------------------------------------------------------- closing


def test_recycle_only_when_quiet_and_after_session_max_s() -> None:
    p = make(session_max_s=100.0)
    p.set_wanted(True)
    up(p, 10.0)
    p.tick(109.9)
    assert p.close_reason is None  # not old enough
    p.receive_text(created("resp_1"), 105.0)
    p.tick(120.0)
    assert p.close_reason is None  # mid-reply
    p.receive_text(done("resp_1"), 121.0)
    p.hold_recycle = True  # mid-turn, for the caller
    p.tick(122.0)
    assert p.close_reason is None
    p.hold_recycle = False
    p.append_audio(CHUNK, 122.5)  # queued audio is in flight as well
    p.tick(122.6)
    assert p.close_reason is None
    written(p)
    p.receive_text(frame("input_audio_buffer.cleared"), 122.7)
    p.tick(123.0)
    assert p.close_reason == "recycling after 113 s, before the session limit"
    p.tick(124.0)
    assert p.close_reason == "recycling after 113 s, before the session limit"  # once
    p.append_audio(CHUNK, 124.5)  # the next turn waits for the next connection
    assert p.data_to_send() == []
    p.connection_closed(125.0)
    out = up(p, 126.0)
    assert types(out) == ["input_audio_buffer.append"] and p.close_reason is None


def test_idle_close_when_not_wanted_and_quiet() -> None:
    p = make()
    p.set_wanted(True)
    up(p)
    p.receive_text(created("resp_1"), 1.0)
    p.append_audio(CHUNK, 1.1)  # the tail of the finished turn: dropped on letting go
    p.set_wanted(False)
    assert p.close_reason is None  # the reply is still in progress
    assert written(p) == []  # no turn audio left to send
    p.tick(2.0)
    assert p.close_reason is None
    p.receive_text(done("resp_1"), 2.5)
    p.tick(3.0)
    assert p.close_reason == "idle"
    q = make()
    up(q)
    q.set_wanted(False)  # quiet at once: closed at once
    assert q.close_reason == "idle"
    r = make()
    r.set_wanted(False)  # no connection: nothing to close
    assert r.close_reason is None


# --------------------------------------------------------------------------- bad input


def test_unknown_and_malformed_frames_are_counted_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgevoice.voicelive")
    p = make()
    up(p)
    for junk in ["not json", "[1,2]", '{"no_type": 1}', '{"type": 42}',
                 '{"type":"input_audio_buffer.speech_started","audio_start_ms":"abc"}',
                 '{"type":"response.audio.delta","delta":5}', b"\xff\xfe"]:
        p.receive_text(junk, 1.0)
    p.receive_text('{"type":"brand.new.event","x":1}', 1.0)
    p.receive_text(frame("input_audio_buffer.speech_started", audio_start_ms=120,
                         item_id="it1"), 1.0)
    (started,) = delivered(p)
    assert isinstance(started, ev.InputAudioBufferSpeechStarted)
    assert started.audio_start_ms == 120
    assert p.stats["malformed"] == 7 and p.stats["unknown"] == 1
    assert "unknown event type 'brand.new.event' ignored" in caplog.text
    assert p.ready  # the session goes on
