"""The daemon's figures (:mod:`edgevoice.metrics`): the ungated count, kept in stretches of the
capture's frame counter, equals adding every frame as it comes (the daemon's way before,
:class:`PerFrame` here) whatever the order of frames, timeline entries, sends and reads
(property-based); and the latency figures and tool calls from their callbacks."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgevoice.audio.convert import bytes_per_second
from edgevoice.conversation.core import Core, CoreSettings, RunTool, SendAudio, State
from edgevoice.conversation.telemetry import Telemetry, TelemetryName
from edgevoice.listen.vad import UpstreamGate
from edgevoice.metrics import MAX_TURNS_KEPT, Metrics

FRAME_BYTES = 640  # 20 ms of 16 kHz PCM16
STEP_S = 0.02
FIELDS: dict[TelemetryName, dict[str, Any]] = {
    TelemetryName.WAKE: {"word": "hey_jarvis", "score": 0.9},
    TelemetryName.BARGE_IN: {"by": "local speech"},
    TelemetryName.TOOL_CALL: {"name": "set_light", "call_id": "c1"},
}
NAMES = [TelemetryName.WAKE, TelemetryName.FOLLOW_UP_SPEECH, TelemetryName.BARGE_IN,
         TelemetryName.TOOL_CALL, TelemetryName.REPLY_DONE, TelemetryName.IDLE,
         TelemetryName.SPEECH_END_SERVER]


def new_core() -> Core:
    return Core(CoreSettings(), upstream=UpstreamGate())


class PerFrame:
    """The reference: every frame added after its actions, as the daemon once did."""

    def __init__(self, core: Core, wire_bytes: Any) -> None:
        self.core = core
        self.wire_bytes = wire_bytes
        self.turns: list[list[int]] = []  # [upstream, ungated]
        self.open = False
        self.first: float | None = None
        self.frame_t: float | None = None

    def telemetry(self, name: TelemetryName) -> None:
        state = self.core.state
        if name in (TelemetryName.WAKE, TelemetryName.FOLLOW_UP_SPEECH):
            self.turns.append([0, 0])
        if name in (TelemetryName.WAKE, TelemetryName.FOLLOW_UP_SPEECH) or (
                name is TelemetryName.BARGE_IN and state is State.LISTENING):
            if not self.open:
                self.open, self.first = True, None
        elif name is TelemetryName.TOOL_CALL and state is not State.IDLE:
            self.open = True
        elif name is TelemetryName.IDLE or (name is TelemetryName.REPLY_DONE
                                            and state is not State.LISTENING):
            self.open = False

    def send(self, a: SendAudio, sent: int) -> None:
        if not self.turns:
            return
        self.turns[-1][0] += sent
        first = self.first if self.first is not None else self.frame_t
        if self.open and (first is None or a.t < first):
            self.turns[-1][1] += self.wire_bytes(len(a.pcm))

    def end_of_frame(self, t: float) -> None:
        if self.open and self.turns:
            self.turns[-1][1] += self.wire_bytes(FRAME_BYTES)
            if self.first is None:
                self.first = t


EVENT = st.one_of(
    st.tuples(st.just("entry"), st.sampled_from(NAMES), st.sampled_from(list(State))),
    # audio sent: from this many frames back, an offset into that frame, this many frames long
    st.tuples(st.just("send"), st.integers(0, 30), st.sampled_from([0, 0.005]),
              st.integers(1, 3)),
    st.tuples(st.just("read")),
)
STEPS = st.lists(st.one_of(st.tuples(st.just("frame"), st.lists(EVENT, max_size=4)),
                           st.tuples(st.just("between"), EVENT)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(STEPS, st.sampled_from([("pcm16", 16000), ("pcm16", 24000), ("g711_ulaw", 8000)]))
# A window opened before any turn has no first frame yet when the wake word comes.
@example([("frame", [("entry", TelemetryName.BARGE_IN, State.LISTENING)]),
          ("frame", [("entry", TelemetryName.WAKE, State.LISTENING), ("send", 1, 0, 1)])],
         ("pcm16", 16000))
def test_the_ungated_count_equals_counting_every_frame(
        steps: list[tuple[Any, ...]], fmt: tuple[str, int]) -> None:
    per_second = bytes_per_second(*fmt)

    def wire_bytes(n: int) -> int:
        return n * per_second // 32000

    core = new_core()
    frames = [0]
    metrics = Metrics(core, frames=lambda: frames[0], frame_bytes=FRAME_BYTES,
                      wire_bytes=wire_bytes, clock=lambda: 0.0)
    ref = PerFrame(core, wire_bytes)

    def figures() -> list[list[int]]:
        return [[t.upstream_bytes, t.ungated_bytes] for t in metrics.turns]

    def apply(event: tuple[Any, ...], frame_t: float | None) -> None:
        if event[0] == "entry":
            _, name, state = event
            core.state = state  # the state after the input that produced the entry
            ref.telemetry(name)
            metrics.on_telemetry(Telemetry(name, 0.0, FIELDS.get(name, {})), frame_t)
        elif event[0] == "send":
            _, back, offset, length = event
            a = SendAudio(bytes(length * FRAME_BYTES), (frames[0] - back) * STEP_S + offset)
            sent = wire_bytes(len(a.pcm))
            ref.send(a, sent)
            metrics.on_upstream(a, sent, frame_t)
        elif frame_t is None:  # between frames, the figures are those counted frame by frame
            assert figures() == ref.turns[-MAX_TURNS_KEPT:]
        else:
            metrics.turns  # noqa: B018 - a read settles the count (in a frame: one early)

    for step in steps:
        if step[0] == "frame":
            frames[0] += 1
            t = frames[0] * STEP_S
            ref.frame_t = t
            for event in step[1]:
                apply(event, t)
            ref.frame_t = None
            ref.end_of_frame(t)
            if metrics.needs_frame_time:
                metrics.frame_time(t)
        else:
            apply(step[1], None)
    assert figures() == ref.turns[-MAX_TURNS_KEPT:]


def test_latency_figures_and_tool_calls() -> None:
    core = new_core()
    now = [100.0]
    metrics = Metrics(core, frames=lambda: 0, frame_bytes=FRAME_BYTES, wire_bytes=lambda n: n,
                      clock=lambda: now[0])
    # Audio before any turn (an earcon, a reply without a wake word) makes no figure.
    assert metrics.on_first_audio("earcon_1", 100.0) is None
    core.turn = 1
    metrics.on_telemetry(Telemetry(TelemetryName.WAKE, 99.5, {"word": "hey_jarvis"}))
    now[0] = 100.25
    metrics.on_audio_written(100.25)
    metrics.on_audio_written(100.5)  # only the first write after the wake word counts
    now[0] = 102.0
    metrics.on_telemetry(Telemetry(TelemetryName.SPEECH_END_SERVER, 102.0))
    now[0] = 102.5
    metrics.on_reply_delta("item_1")
    now[0] = 102.6
    metrics.on_reply_delta("item_1")  # the item's first delta is what counts
    entry = metrics.on_first_audio("item_1", 102.55)
    assert entry == Telemetry(TelemetryName.FIRST_AUDIO_AT_SPEAKER, 102.55,
                              {"item": "item_1", "after_delta_ms": 50.0})
    metrics.on_tool_done(RunTool("c1", "set_light", "{}"), json.dumps({"ok": True}), 12.34)
    metrics.on_tool_done(RunTool("c2", "open", "{}"),
                         json.dumps({"ok": False, "error": "jammed"}), 3.0)
    (turn,) = metrics.turns
    assert turn.wake_word == "hey_jarvis" and turn.started == 99.5
    assert round(turn.wake_to_send_ms or 0, 3) == 250.0
    assert round(turn.first_delta_to_device_ms or 0, 3) == 50.0
    assert round(turn.first_audio_ms or 0, 3) == 550.0
    status = metrics.status()
    assert [(c["turn"], c["name"], c["ok"], c["ms"], c["error"]) for c in status["tool_calls"]] \
        == [(1, "set_light", True, 12.3, None), (1, "open", False, 3.0, "jammed")]
    assert status["turns"][0]["wake_to_send_ms"] == turn.wake_to_send_ms


def test_replies_that_never_play_leave_a_bounded_record() -> None:
    metrics = Metrics(new_core(), frames=lambda: 0, frame_bytes=FRAME_BYTES,
                      wire_bytes=lambda n: n)
    for n in range(3 * MAX_TURNS_KEPT):
        metrics.on_reply_delta(f"item_{n}")
    assert metrics.awaiting_first_audio == MAX_TURNS_KEPT
