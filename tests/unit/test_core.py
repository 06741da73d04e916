"""The conversation core with exact timings: real VADs on espeak speech, events as typed models."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np

from edgevoice.audio.convert import level_dbfs, read_wav
from edgevoice.conversation.core import (
    Connect,
    Core,
    CoreSettings,
    Duck,
    Earcon,
    PausePlayback,
    Play,
    ResumePlayback,
    RunTool,
    SendAudio,
    SendEvent,
    State,
    StopPlayback,
    Telemetry,
    Unduck,
    actions_of,
)
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.link.protocol import LinkDown, LinkUp
from edgevoice.listen.vad import UpstreamGate
from edgevoice.wire import events as ev

WAKE = Path(__file__).resolve().parents[1] / "fixtures" / "wake"
FRAME = 640  # 20 ms at 16 kHz


def sentence() -> bytes:
    pcm, rate = read_wav(WAKE / "sentence_00.wav")
    assert rate == 16000
    second = bytes(2 * rate)  # the clips hold the speech only: 1 s of silence each side
    return second + pcm + second


def scaled(pcm: bytes, gain_db: float) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.float32) * 10 ** (gain_db / 20)
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def make_core(**over: Any) -> Core:
    settings = CoreSettings(**over)
    return Core(settings, upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700),
                echo=EchoGuard())


def feed(core: Core, pcm: bytes, t0: float, on_frame: Any = None) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        t = t0 + i / 32000
        if on_frame is not None:
            on_frame(t)
        out += core.on_frame(pcm[i : i + FRAME], t)
    return out


def server(data: dict[str, Any]) -> ev.ServerEvent:
    return ev.parse_server_event(__import__("json").dumps(data))


def response_created(rid: str = "resp_1") -> ev.ServerEvent:
    return server({"type": "response.created", "response": {"id": rid, "status": "in_progress"}})


def audio_delta(rid: str = "resp_1", item: str = "item_a", ms: int = 100) -> ev.ServerEvent:
    data = base64.b64encode(bytes(48 * ms)).decode()
    return server({"type": "response.audio.delta", "response_id": rid, "item_id": item,
                   "output_index": 0, "content_index": 0, "delta": data})


def response_done(rid: str = "resp_1", status: str = "completed") -> ev.ServerEvent:
    return server({"type": "response.done", "response": {"id": rid, "status": status}})


def test_idle_sends_nothing_then_wake_streams_the_speech_in_order() -> None:
    core = make_core()
    speech = sentence()
    assert not actions_of(SendAudio, feed(core, speech, 0.0))  # privacy: IDLE sends nothing
    woke = core.on_wake("hey_jarvis", 0.98, 10.0)
    assert [type(a) for a in woke if isinstance(a, Earcon | Duck | Connect)] == \
        [Earcon, Duck, Connect]
    assert core.state is State.LISTENING
    sent = actions_of(SendAudio, feed(core, bytes(FRAME * 10) + speech, 10.0))
    assert sent, "speech after the wake word was not streamed"
    times = [a.t for a in sent]
    assert times == sorted(times) and len(set(times)) == len(times)  # in order, never twice
    joined = b"".join(a.pcm for a in sent)
    # The voiced part of the sentence is inside what was sent, contiguous.
    core_part = speech[len(speech) // 3 : len(speech) // 3 + 3200]
    assert core_part in joined


def test_reply_follow_up_and_idle_with_warm_connection() -> None:
    core = make_core(follow_up_s=5.0, idle_disconnect_s=30.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    feed(core, sentence(), 0.0)
    core.on_event(response_created(), 3.0)
    assert core.state is State.RESPONDING
    plays = actions_of(Play, core.on_event(audio_delta(), 3.1))
    assert plays and plays[0].item_id == "item_a" and len(plays[0].data) == 4800
    core.on_event(response_done(), 3.2)
    assert core.state is State.RESPONDING  # still playing
    core.on_playback_drained(4.0)
    assert core.state is State.FOLLOW_UP
    assert core.on_tick(8.9) == []
    ended = core.on_tick(9.0)
    assert core.state is State.IDLE and actions_of(Unduck, ended)
    assert not actions_of(Connect, core.on_tick(38.9))
    assert actions_of(Connect, core.on_tick(39.0)) == [Connect(False)]


def test_follow_up_speech_continues_without_wake_word() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created(), 1.0)
    core.on_event(response_done(), 1.1)
    core.on_playback_drained(1.2)
    assert core.state is State.FOLLOW_UP
    out = feed(core, bytes(FRAME * 5) + sentence(), 1.5)
    assert core.state is State.LISTENING and actions_of(SendAudio, out)


def test_tool_calls_run_once_and_answer_once() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created(), 1.0)
    for call_id, name in (("c1", "open_window"), ("c2", "set_fan"), ("c1", "open_window")):
        core.on_event(server({"type": "response.function_call_arguments.done",
                              "response_id": "resp_1", "item_id": f"it_{call_id}",
                              "call_id": call_id, "name": name, "arguments": "{}"}), 1.1)
    runs = actions_of(RunTool, core.on_event(response_done(), 1.2))
    assert sorted(r.call_id for r in runs) == ["c1", "c2"]
    assert core.state is State.RESPONDING  # waiting for outputs
    first = core.on_tool_result("c1", '{"ok":true}', 1.3)
    assert [type(a.event) for a in actions_of(SendEvent, first)] == [ev.ConversationItemCreate]
    second = core.on_tool_result("c2", '{"ok":true}', 1.4)
    assert [type(a.event) for a in actions_of(SendEvent, second)] == \
        [ev.ConversationItemCreate, ev.ResponseCreate]
    assert core.on_tool_result("c2", "again", 1.5) == []  # exactly once
    # A call_id the service repeats in a later response: the link delivers it once
    # (test_link_protocol.py, through the link into a core).


def responding_core(**over: Any) -> Core:
    core = make_core(**over)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created(), 1.0)
    core.on_event(audio_delta(), 1.0)
    return core


def test_server_speech_barge_in_stops_cancels_and_truncates_played_ms() -> None:
    core = responding_core()
    out = core.on_event(server({"type": "input_audio_buffer.speech_started",
                                "audio_start_ms": 5000, "item_id": "u2"}), 2.0)
    assert actions_of(StopPlayback, out) == [StopPlayback("item_a")]
    assert [type(a.event) for a in actions_of(SendEvent, out)] == [ev.ResponseCancel]
    assert core.state is State.LISTENING
    truncate = actions_of(SendEvent, core.on_playback_stopped("item_a", 1234.6, 2.01))
    assert truncate[0].event.item_id == "item_a" and truncate[0].event.audio_end_ms == 1234


def test_auto_truncate_sends_no_truncate() -> None:
    core = responding_core(auto_truncate=True)
    core.on_event(server({"type": "input_audio_buffer.speech_started",
                          "audio_start_ms": 1, "item_id": "u"}), 2.0)
    assert not actions_of(SendEvent, core.on_playback_stopped("item_a", 500, 2.01))


def test_local_speech_barges_in_but_echo_does_not() -> None:
    speech = sentence()
    reference_db = level_dbfs(speech)

    # Echo only: the assistant's own speech comes back 6 dB down, 60 ms (3 frames) late; the
    # guard starts from a coupling guess 6 dB too low and must learn the real one.
    echo_core = responding_core()
    echo_core.echo = EchoGuard(coupling_db=-12.0)
    delay = 3 * FRAME
    mic = bytes(delay) + scaled(speech, -6.0)
    played = speech + bytes(delay)
    out: list[Any] = []
    for i in range(0, len(played) - FRAME + 1, FRAME):
        t = 2.0 + i / 32000
        echo_core.on_playback_reference(level_dbfs(played[i : i + FRAME]), t)
        out += echo_core.on_frame(mic[i : i + FRAME], t)
    assert echo_core.state is State.RESPONDING and not actions_of(StopPlayback, out)

    # The user speaks clearly above the quiet playback: barge-in after >= 200 ms of speech.
    user_core = responding_core()
    out = feed(user_core, bytes(FRAME * 10) + speech, 2.0,
               on_frame=lambda t: user_core.on_playback_reference(reference_db - 30, t))
    stops = actions_of(StopPlayback, out)
    assert stops and user_core.state is State.LISTENING
    sent = actions_of(SendAudio, out)
    assert sent, "the interrupting speech must start the new turn"


def test_stop_word_silences_without_starting_a_turn() -> None:
    core = responding_core(stop_words=frozenset({"stop"}))
    out = core.on_wake("stop", 0.9, 2.0)
    assert actions_of(StopPlayback, out) and core.state is State.FOLLOW_UP


def test_wake_word_on_own_echo_is_ignored() -> None:
    core = responding_core()
    # The assistant played loud audio while the word was spoken; the microphone heard only
    # that audio, 16 dB down: the guard attributes it to the echo.
    speech = sentence()[16000 * 2 : 16000 * 2 + 70 * FRAME]  # past the leading silence
    for i in range(0, len(speech), FRAME):
        t = 1.1 + i / 32000
        core.on_playback_reference(level_dbfs(speech[i : i + FRAME]), t - 0.05)
        stops = actions_of(StopPlayback, core.on_frame(scaled(speech[i : i + FRAME], -16.0), t))
        assert not stops, "echo must not barge in"
    out = core.on_wake("hey_jarvis", 0.9, 2.5)
    assert core.state is State.RESPONDING and not actions_of(StopPlayback, out)


def test_no_speech_after_wake_returns_to_idle() -> None:
    core = make_core(listen_timeout_s=4.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    assert core.on_tick(3.9) == []
    out = core.on_tick(4.0)
    assert core.state is State.IDLE and actions_of(Unduck, out)


def test_calls_announced_before_a_drop_run_once_after_the_reconnect() -> None:

    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created(), 1.0)
    core.on_event(server({"type": "response.function_call_arguments.done",
                          "response_id": "resp_1", "item_id": "it", "call_id": "c9",
                          "name": "lights", "arguments": "{}"}), 1.1)
    core.on_event(LinkDown("closed", 0.2, 1.2), 1.2)  # no response.done: the socket died
    runs = actions_of(RunTool, core.on_event(LinkUp(True), 1.5))
    assert [r.call_id for r in runs] == ["c9"]
    assert not actions_of(RunTool, core.on_event(LinkUp(True), 2.0))


def test_audio_after_the_wake_word_streams_at_once_and_nothing_before() -> None:
    core = make_core()
    speech = sentence()[: 50 * FRAME]
    assert feed(core, speech, 0.0) == []  # idle: nothing leaves
    out = core.on_wake("hey_jarvis", 0.9, 1.0, word_end=0.8)
    sent = actions_of(SendAudio, out)
    assert b"".join(a.pcm for a in sent) == speech[int(0.8 * 32000):]
    assert sent[0].t == 0.8 and core.state is State.LISTENING
    more = actions_of(SendAudio, core.on_frame(speech[:FRAME], 1.0))
    assert [a.t for a in more] == [1.0]  # the next frame follows, no VAD onset needed


def test_a_late_wake_word_still_streams_the_request_from_the_word_end() -> None:
    # The wake word runs in a worker thread: its detection reaches the core after later
    # frames (here 1.8 s of them). The request is streamed from the word's end all the same,
    # the frames already seen included, then each new frame: nothing lost, nothing twice.
    speech = sentence()[: 140 * FRAME]  # 2.8 s
    late = Core(CoreSettings(wake_late_s=2.0), echo=EchoGuard(),
                upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700, lookback_ms=2500))
    assert feed(late, speech, 0.0) == []
    sent = actions_of(SendAudio, late.on_wake("hey_jarvis", 0.9, 1.0, word_end=0.9))
    assert sent[0].t == 0.9 and b"".join(a.pcm for a in sent) == speech[int(0.9 * 32000):]
    more = actions_of(SendAudio, late.on_frame(speech[:FRAME], 2.8))
    assert [a.t for a in more] == [2.8]
    # Without the look-back the gate holds only its padding: the request's start is lost.
    short = make_core()
    feed(short, speech, 0.0)
    sent = actions_of(SendAudio, short.on_wake("hey_jarvis", 0.9, 1.0, word_end=0.9))
    assert b"".join(a.pcm for a in sent) != speech[int(0.9 * 32000):]


def test_a_late_wake_word_during_a_reply_is_judged_on_the_user_voice_before_it() -> None:
    # The user says the wake word over a quiet reply (2.0-2.6 s); the detection (at 2.7)
    # comes when the core is at 4.8. The echo guard's evidence that it was the user lies
    # 2 s back: kept for wake_late_s, the word barges in; not kept, it counts as echo.
    speech = sentence()
    voiced = speech[16000 * 2 : 16000 * 2 + 30 * FRAME]  # 0.6 s past the leading silence
    reference_db = level_dbfs(voiced) - 30

    def run(wake_late_s: float) -> tuple[Core, list[Any]]:
        core = responding_core(bargein_local_vad=False, wake_late_s=wake_late_s)
        mic = bytes(FRAME * 45) + voiced + bytes(FRAME * 110)  # 0.9 s, word, 2.2 s
        feed(core, mic, 1.1, on_frame=lambda t: core.on_playback_reference(reference_db, t))
        assert core.state is State.RESPONDING
        return core, core.on_wake("hey_jarvis", 0.9, 2.7, word_end=2.6)

    core, out = run(2.0)
    assert actions_of(StopPlayback, out) and core.state is State.LISTENING
    core, out = run(0.0)
    assert telemetry(out, TelemetryName.WAKE_IGNORED_ECHO) and core.state is State.RESPONDING


def test_end_conversation_waits_for_the_reply_then_goes_idle_without_follow_up() -> None:
    core = responding_core(follow_up_s=6.0)
    assert core.end_conversation(1.5) == [] and core.state is State.RESPONDING
    core.on_event(response_done(), 2.0)
    out = core.on_playback_drained(2.5)
    assert core.state is State.IDLE and actions_of(Unduck, out)
    listening = make_core()
    listening.on_wake("hey_jarvis", 0.9, 0.0)
    assert actions_of(Unduck, listening.end_conversation(0.5)) and listening.state is State.IDLE


# -- device faults -----------------------------------------------------------------------------


def telemetry(out: list[Any], name: TelemetryName) -> list[Telemetry]:
    return [a for a in actions_of(Telemetry, out) if a.name == name]


def sent_types(out: list[Any]) -> list[type]:
    return [type(a.event) for a in actions_of(SendEvent, out)]


def mid_request_core(**over: Any) -> Core:
    """Woken at 0.0 and half-way through a spoken request (local VAD heard speech)."""
    core = make_core(**over)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    speech = sentence()
    feed(core, speech[: len(speech) // 2], 0.0)
    assert core.state is State.LISTENING
    return core


def test_microphone_lost_mid_request_commits_what_was_sent_and_asks_for_the_reply() -> None:
    core = mid_request_core(mic_lost_reply_s=10.0)
    out = core.on_microphone_lost(2.0)
    assert sent_types(out) == [ev.InputAudioBufferCommit, ev.ResponseCreate]
    assert telemetry(out, TelemetryName.MICROPHONE_LOST)[0].fields["state"] == "listening"
    assert core.state is State.LISTENING and not actions_of(Unduck, out)
    # The reply comes: the turn goes on as usual, though the microphone is still gone.
    core.on_event(response_created(), 2.5)
    assert core.state is State.RESPONDING
    assert actions_of(Play, core.on_event(audio_delta(), 2.6))


def test_microphone_lost_after_the_server_committed_the_turn_sends_nothing_more() -> None:
    core = mid_request_core()
    core.on_event(server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500,
                          "item_id": "u1"}), 1.9)
    out = core.on_microphone_lost(2.0)
    assert sent_types(out) == []  # the server's VAD committed it and answers by itself
    assert core.state is State.LISTENING


def test_microphone_lost_in_speech_after_a_committed_segment_commits_the_new_one() -> None:
    core = mid_request_core()
    core.on_event(server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500,
                          "item_id": "u1"}), 1.9)
    core.on_event(server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 1700,
                          "item_id": "u2"}), 2.1)
    out = core.on_microphone_lost(2.5)
    assert sent_types(out) == [ev.InputAudioBufferCommit, ev.ResponseCreate]


def test_microphone_lost_and_no_reply_ends_the_turn_instead_of_hanging() -> None:
    core = mid_request_core(mic_lost_reply_s=10.0)
    core.on_microphone_lost(2.0)
    assert core.on_tick(11.9) == [] and core.state is State.LISTENING
    out = core.on_tick(12.0)
    assert core.state is State.IDLE and actions_of(Unduck, out)
    assert telemetry(out, TelemetryName.IDLE)[0].fields["why"] == "no reply after the microphone was lost"


def test_microphone_back_lifts_the_reply_deadline() -> None:
    core = mid_request_core(mic_lost_reply_s=10.0)
    core.on_microphone_lost(2.0)
    assert telemetry(core.on_microphone_back(3.0), TelemetryName.MICROPHONE_BACK)
    assert core.on_tick(12.0) == [] and core.state is State.LISTENING


def test_microphone_lost_before_any_speech_ends_the_conversation_and_says_why() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    feed(core, bytes(FRAME * 10), 0.0)  # silence only
    out = core.on_microphone_lost(0.5)
    assert sent_types(out) == []
    assert core.state is State.IDLE and actions_of(Unduck, out)
    assert telemetry(out, TelemetryName.IDLE)[0].fields["why"] == "microphone lost before any speech"
    assert telemetry(out, TelemetryName.MICROPHONE_LOST)


def test_microphone_lost_while_a_reply_is_paused_for_a_possible_barge_in_resumes_it() -> None:
    core = responding_core()
    speech = sentence()
    start = onset_frame(speech)
    out: list[Any] = []
    for i in range(start, start + 20 * FRAME, FRAME):
        t = 2.0 + (i - start) / 32000
        core.on_playback_reference(-90.0, t)
        out = core.on_frame(speech[i : i + FRAME], t)
        if actions_of(PausePlayback, out):
            break
    assert actions_of(PausePlayback, out) and core.state is State.RESPONDING
    lost = core.on_microphone_lost(2.5)
    assert actions_of(ResumePlayback, lost) and not actions_of(StopPlayback, lost)
    assert core.state is State.RESPONDING


def test_speaker_lost_mid_reply_cancels_truncates_to_what_played_and_ends() -> None:
    core = responding_core(auto_truncate=True)
    out = core.on_speaker_lost(2.0)
    assert sent_types(out) == [ev.ResponseCancel]
    assert actions_of(StopPlayback, out) == [StopPlayback("item_a")]
    assert core.state is State.IDLE and actions_of(Unduck, out)
    assert telemetry(out, TelemetryName.IDLE)[0].fields["why"] == "speaker lost"
    # The service cannot know what the user heard: truncate even with auto_truncate on.
    truncate = actions_of(SendEvent, core.on_playback_stopped("item_a", 812.7, 2.01))
    assert [(a.event.item_id, a.event.audio_end_ms) for a in truncate] == [("item_a", 812)]
    # Once only: a later stop under auto_truncate is the service's to truncate.
    assert not actions_of(SendEvent, core.on_playback_stopped("item_a", 900, 2.5))
    # The rest of the cancelled reply is not played.
    assert not actions_of(Play, core.on_event(audio_delta(), 2.1))


def test_speaker_lost_while_listening_is_only_noted() -> None:
    core = mid_request_core()
    out = core.on_speaker_lost(2.0)
    assert [type(a) for a in out] == [Telemetry] and core.state is State.LISTENING
    assert telemetry(core.on_speaker_back(3.0), TelemetryName.SPEAKER_BACK)


def onset_frame(pcm: bytes, threshold: int = 1000) -> int:
    """Byte offset of the frame holding the first sample louder than ``threshold``."""
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    return int(np.argmax(x > threshold)) * 2 // FRAME * FRAME


def link_up(core: Core, t: float) -> None:
    core.on_event(LinkUp(reconnected=False), t)


def test_a_stray_speech_started_never_leaves_the_microphone_streaming() -> None:
    core = make_core(service_timeout_s=20.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    link_up(core, 0.1)
    core.on_event(server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100,
                          "item_id": "u1"}), 0.5)
    feed(core, bytes(FRAME * 50), 0.5)  # the user says nothing; the service says nothing more
    assert core.on_tick(20.4) == [] and core.state is State.LISTENING
    out = core.on_tick(20.5)
    assert core.state is State.IDLE and actions_of(Unduck, out)
    assert telemetry(out, TelemetryName.IDLE)[0].fields["why"] == "no answer from the service"
    assert sent_types(out) == []  # no response to cancel


def test_a_response_that_never_finishes_is_cancelled_and_the_conversation_ends() -> None:
    core = make_core(service_timeout_s=20.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    link_up(core, 0.1)
    core.on_event(response_created(), 1.0)
    core.on_event(audio_delta(), 1.1)
    core.on_playback_drained(3.0)  # all it sent has played; no response.done ever comes
    assert core.state is State.RESPONDING
    assert core.on_tick(22.9) == []
    out = core.on_tick(23.0)
    assert sent_types(out) == [ev.ResponseCancel] and core.state is State.IDLE
    # A late done of that response changes nothing.
    assert not telemetry(core.on_event(response_done(), 24.0), TelemetryName.REPLY_DONE)


def test_the_service_timeout_waits_while_the_link_is_down_and_while_audio_plays() -> None:
    core = make_core(service_timeout_s=20.0)
    core.on_wake("hey_jarvis", 0.9, 0.0)
    feed(core, sentence(), 0.0)
    core.on_event(LinkDown("connection lost", 0.25, 3.0), 3.0)  # the link's to bound
    assert core.on_tick(60.0) == [] and core.state is State.LISTENING
    link_up(core, 61.0)
    core.on_event(response_created(), 61.5)
    core.on_event(audio_delta(ms=30000), 61.6)  # a long reply is playing: not a stall
    assert core.on_tick(90.0) == [] and core.state is State.RESPONDING
    core.on_event(response_done(), 90.5)
    core.on_playback_drained(91.6)
    assert core.state is State.FOLLOW_UP


def test_a_local_barge_in_says_how_long_the_user_had_spoken() -> None:
    """speech_ms: from the first voiced frame of the interrupting speech to the frame that
    decided (the Prometheus barge-in latency starts at that onset)."""
    speech = sentence()
    x = np.abs(np.frombuffer(speech, "<i2").astype(np.int32))
    core = responding_core()
    level = level_dbfs(speech) - 30
    out = feed(core, bytes(FRAME * 10) + speech, 2.0,
               on_frame=lambda t: core.on_playback_reference(level, t))
    barge = [a for a in actions_of(Telemetry, out) if a.name is TelemetryName.BARGE_IN][0]
    assert barge.fields["by"] == "local speech"
    onset = 2.0 + (FRAME * 10 + 2 * int(np.argmax(x > 1000))) / 32000  # first loud sample
    speech_ms = barge.fields["speech_ms"]
    assert 200 <= speech_ms <= 400  # min_speech_ms of voice, a little more with dips
    assert abs((barge.t - speech_ms / 1000) - onset) < 0.1
    server_core = responding_core()
    out = server_core.on_event(server({"type": "input_audio_buffer.speech_started",
                                       "audio_start_ms": 1, "item_id": "u"}), 2.0)
    barge = [a for a in actions_of(Telemetry, out) if a.name is TelemetryName.BARGE_IN][0]
    assert barge.fields == {"by": "server speech"}


def test_reply_done_carries_the_usage_with_missing_parts_zero() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    core.on_event(response_created(), 1.0)
    out = core.on_event(server({"type": "response.done", "response": {
        "id": "resp_1", "status": "completed",
        "usage": {"total_tokens": 60, "input_tokens": 40, "output_tokens": 20,
                  "input_token_details": {"audio_tokens": 30, "cached_tokens": 8},
                  "output_token_details": {"text_tokens": 5, "audio_tokens": 15}}}}), 2.0)
    done = [a for a in actions_of(Telemetry, out) if a.name is TelemetryName.REPLY_DONE][0]
    assert done.fields == {"status": "completed", "input_tokens": 40, "output_tokens": 20,
                           "input_text_tokens": 0, "input_audio_tokens": 30,
                           "output_text_tokens": 5, "output_audio_tokens": 15,
                           "cached_tokens": 8}
    core.on_event(response_created("resp_2"), 3.0)
    out = core.on_event(response_done("resp_2"), 3.1)
    done = [a for a in actions_of(Telemetry, out) if a.name is TelemetryName.REPLY_DONE][0]
    assert done.fields == {"status": "completed"}  # no usage: no token fields
