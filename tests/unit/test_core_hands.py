"""Push-to-talk and the privacy mute in the sans-I/O core, with exact timings (real VAD on
espeak speech), and the feedback state it reports."""

from __future__ import annotations

from typing import Any

from test_core import (
    audio_delta,
    feed,
    response_created,
    response_done,
    sentence,
)

from edgevoice.conversation.core import (
    Connect,
    Core,
    CoreSettings,
    Duck,
    Earcon,
    SendAudio,
    SendEvent,
    State,
    StopPlayback,
    Telemetry,
    actions_of,
)
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.telemetry import TelemetryName
from edgevoice.feedback import feedback_state
from edgevoice.listen.vad import UpstreamGate
from edgevoice.wire import events as ev


def make_core(**over: Any) -> Core:
    return Core(CoreSettings(**over), upstream=UpstreamGate(prefix_padding_ms=300, tail_ms=700),
                echo=EchoGuard())


def names(actions: list[Any]) -> list[str]:
    return [a.name for a in actions_of(Telemetry, actions)]


def sent_events(actions: list[Any]) -> list[str]:
    return [a.event.type for a in actions_of(SendEvent, actions)]


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def test_a_press_starts_a_turn_like_the_wake_word_with_its_preroll() -> None:
    core = make_core(ptt_preroll_s=0.3)
    # 2 s heard while idle: nothing leaves.
    assert not actions_of(SendAudio, feed(core, silence(2.0), 0.0))
    out = core.on_button(True, 2.0, "hat")
    assert core.state is State.LISTENING and core.activity() == "listening"
    assert [type(a) for a in out if isinstance(a, Earcon | Duck | Connect)] == \
        [Earcon, Duck, Connect]
    assert names(out)[0] == TelemetryName.PUSH_TO_TALK
    pre = actions_of(SendAudio, out)
    # The pre-roll: the 300 ms before the press, sent at once, nothing older.
    assert pre and abs(pre[0].t - 1.7) < 0.021 and sum(len(a.pcm) for a in pre) == 300 * 32
    # Press mode: the gate streams the following speech without waiting for the VAD.
    more = actions_of(SendAudio, feed(core, sentence(), 2.0))
    assert more and more[0].t == 2.0
    # A release means nothing in press mode.
    assert core.on_button(False, 4.0, "hat") == []


def test_hold_streams_every_frame_while_held_and_commits_once_at_the_release() -> None:
    core = make_core(ptt_mode="hold", ptt_preroll_s=0.0, listen_timeout_s=1.0)
    core.on_button(True, 0.0, "wheel")
    # 3 s of silence while held: no VAD tail ends the stream, no listen timeout ends the turn.
    sent = actions_of(SendAudio, feed(core, silence(3.0), 0.0))
    assert len(sent) == 3.0 * 1000 / 20
    for t in (1.5, 2.5):
        core.on_tick(t)
    assert core.state is State.LISTENING
    out = core.on_button(False, 3.0, "wheel")
    assert sent_events(out) == ["input_audio_buffer.commit", "response.create"]
    assert names(out) == [TelemetryName.PUSH_TO_TALK_RELEASED]
    assert core.activity() == "thinking"
    # After the release the tail runs out (700 ms) and the stream stops.
    tail = actions_of(SendAudio, feed(core, silence(2.0), 3.0))
    assert 0 < len(tail) <= 700 / 20 + 1
    # A second release commits nothing more.
    assert core.on_button(False, 5.0, "wheel") == []


def test_release_after_the_server_committed_sends_no_second_commit() -> None:
    core = make_core(ptt_mode="hold")
    core.on_button(True, 0.0, "b")
    feed(core, sentence(), 0.0)
    core.on_event(ev.parse_server_event(
        '{"type":"input_audio_buffer.speech_stopped","audio_end_ms":2000,"item_id":"i1"}'), 3.0)
    out = core.on_button(False, 3.1, "b")
    assert sent_events(out) == []
    assert actions_of(Telemetry, out)[0].fields["committed"] is False


def test_a_press_during_the_reply_barges_in_and_listens() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    feed(core, sentence(), 0.0)
    core.on_event(response_created(), 3.0)
    core.on_event(audio_delta(), 3.1)
    assert core.activity() == "speaking"
    out = core.on_button(True, 3.5, "hat")
    assert sent_events(out)[0] == "response.cancel"
    assert actions_of(StopPlayback, out) == [StopPlayback("item_a")]
    barge = [a for a in actions_of(Telemetry, out) if a.name == TelemetryName.BARGE_IN]
    assert barge and barge[0].fields["by"] == "button"
    assert core.state is State.LISTENING and core.turn == 2


def test_a_press_in_the_follow_up_window_ends_the_conversation_when_configured() -> None:
    for end, state in ((True, State.IDLE), (False, State.LISTENING)):
        core = make_core(follow_up_s=5.0, ptt_end_follow_up=end)
        core.on_wake("hey_jarvis", 0.9, 0.0)
        feed(core, sentence(), 0.0)
        core.on_event(response_created(), 3.0)
        core.on_event(response_done(), 3.2)
        core.on_playback_drained(3.3)
        assert core.state is State.FOLLOW_UP
        out = core.on_button(True, 4.0, "hat")
        assert core.state is state
        if end:
            assert actions_of(Telemetry, out)[-1].fields == {"why": "ended by the button"}


def test_muted_nothing_is_sent_and_nothing_starts_a_turn() -> None:
    core = make_core()
    core.on_wake("hey_jarvis", 0.9, 0.0)
    feed(core, silence(0.2), 0.0)
    core.on_event(response_created(), 0.5)
    core.on_event(audio_delta(), 0.6)
    out = core.set_muted(True, 1.0, "switch")
    assert names(out)[0] == TelemetryName.MUTED
    assert sent_events(out) == ["response.cancel"]
    assert actions_of(StopPlayback, out) == [StopPlayback("item_a")]
    assert actions_of(Earcon, out) == [Earcon("mute")]
    assert core.state is State.IDLE and core.activity() == "muted"
    assert core.on_wake("hey_jarvis", 0.9, 1.1) == []
    assert core.on_button(True, 1.2, "hat") == []
    assert not feed(core, sentence(), 1.2)  # not even telemetry: frames are not looked at
    assert core.set_muted(True, 5.0, "again") == []  # idempotent
    out = core.set_muted(False, 5.0, "command")
    assert names(out) == [TelemetryName.UNMUTED] and actions_of(Earcon, out) == [Earcon("unmute")]
    assert core.activity() == "idle"
    core.on_button(True, 6.0, "hat")
    assert core.state is State.LISTENING


def test_feedback_state_priorities() -> None:
    assert feedback_state("muted", offline=True, error=True) == "muted"
    assert feedback_state("speaking", offline=True, error=True) == "error"
    assert feedback_state("listening", offline=True, error=False) == "offline"
    assert feedback_state("thinking", offline=False, error=False) == "thinking"
