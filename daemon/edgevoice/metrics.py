"""The daemon's figures: per-turn latencies and upstream byte counts, and the tool calls.

:class:`Metrics` is fed by the conversation's typed telemetry (:mod:`edgevoice.conversation
.telemetry`) and by the few callbacks only the parts can give — audio written to the socket,
a reply's first delta, its first audio at the speaker, the upstream audio sent, a tool's
result — and keeps the last turns' :class:`TurnFigures` for the status output and the
benchmark. The figures come from the same timeline the log and the demo show.

Guarantees:
- Bounded: the last :data:`MAX_TURNS_KEPT` turns and tool calls, and at most
  :data:`MAX_TURNS_KEPT` reply items waiting for their first audio at the speaker.
- Nothing here runs per microphone frame. The ungated count (:class:`TurnFigures`) counts
  frames through the capture's own frame counter when its window opens or closes; the only
  per-frame cost is the caller's check of :attr:`Metrics.needs_frame_time` (a bool, true once
  per window until its first frame came).
- The counts are exact (``tests/integration/test_upstream_counts.py``), provided the caller
  passes ``frame_t`` — the stream time of the microphone frame being handled, or None outside
  a frame — with every entry and every upstream send, and calls :meth:`Metrics.frame_time`
  after a frame's actions while :attr:`Metrics.needs_frame_time`.
- Tokens: every ``reply done`` with a usage block adds its counts to its turn (the turn in
  progress) and to the totals since start; replies are counted by status; the last
  ``rate_limits.updated`` is kept as it came. All bounded (one dict each).
- Not thread-safe: the daemon's event loop calls everything here.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgevoice.conversation.core import Core, RunTool, SendAudio, State
from edgevoice.conversation.outcome import USAGE_FIELDS
from edgevoice.conversation.telemetry import Telemetry, TelemetryName

MAX_TURNS_KEPT = 20

# Entries that start a turn: a new TurnFigures, and its ungated window opens.
_TURN_STARTS = frozenset({TelemetryName.WAKE, TelemetryName.FOLLOW_UP_SPEECH,
                          TelemetryName.PUSH_TO_TALK})


@dataclass
class TurnFigures:
    """Latency figures of one turn (ms) and its upstream audio (bytes), for status output and
    the benchmark.

    ``upstream_bytes``: audio bytes of this turn handed to the link, in the session's input
    format — exactly what the service receives for the turn when the link stays up (a resend
    after a reconnect is not counted again). ``ungated_bytes``: what streaming every captured
    frame would have sent instead, in the same format: all audio from the turn's first streamed
    sample (the end of the wake word; for follow-up speech or a barge-in after the reply was
    done, the start of its prefix padding) until the ``response.done`` of its reply (the last
    one, when tools were called; or the service error that ends the turn instead). A
    barge-in before that belongs to the turn it interrupts, as its other figures do. So
    ``upstream_bytes / ungated_bytes`` is the local VAD gate's saving on the same audio."""

    turn: int
    started: float
    wake_to_send_ms: float | None = None  # wake word or push-to-talk press → first audio sent
    first_delta_to_device_ms: float | None = None
    first_audio_ms: float | None = None  # end of the user's speech → reply at the speaker
    wake_word: str | None = None
    button: str | None = None  # the push-to-talk trigger that started the turn
    bargein: str | None = None
    tools: list[str] = field(default_factory=list)
    upstream_bytes: int = 0
    ungated_bytes: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # USAGE_FIELDS, summed over replies
    outcome: str | None = None  # the last reply's status when it was not "completed"


class _UngatedWindow:
    """The ungated count of the current turn (:attr:`TurnFigures.ungated_bytes`): open from
    the turn's first streamed audio to its reply's ``response.done``.

    A frame counts when the window is open once the frame's actions are carried out, for the
    turn that is the last one then — as if each frame were added as it came. Instead, the
    frames are counted in stretches with the capture's frame counter (every frame has the same
    length): a change made while a frame is handled takes effect from that frame on, one made
    between frames from the next frame on. Audio sent from before the window's first frame
    (the catch-up at a turn's start) was captured before the count began: it is added as sent.
    """

    def __init__(self, turns: deque[TurnFigures], frames: Callable[[], int],
                 frame_wire_bytes: int) -> None:
        self._turns = turns
        self._frames = frames  # frames delivered so far, the one being handled included
        self._frame_wire_bytes = frame_wire_bytes
        self.is_open = False
        self._counted_to = 0  # frames up to this count are in the last turn's figure
        # The stream time of the first frame counted since the window opened (None: not
        # come yet); audio sent from before it is the catch-up.
        self.first_t: float | None = None
        self.needs_frame_time = False

    def _boundary(self, frame_t: float | None) -> int:
        delivered = self._frames()
        return delivered - 1 if frame_t is not None else delivered

    def settle(self, frame_t: float | None) -> None:
        """Add the frames counted since the last settle to the last turn. May subtract one:
        a read between two changes of the same frame counted that frame early."""
        boundary = self._boundary(frame_t)
        if self.is_open and self._turns:
            self._turns[-1].ungated_bytes += (boundary - self._counted_to) \
                * self._frame_wire_bytes
        self._counted_to = boundary

    def open(self, frame_t: float | None, *, fresh: bool) -> None:
        """Open (``fresh``: a new turn's window, whose first frame is yet to come); an open
        window stays as it is."""
        if self.is_open:
            return
        self.settle(frame_t)  # skips the frames while it was closed
        self.is_open = True
        if fresh:
            self.first_t = None
        self.needs_frame_time = self.first_t is None

    def close(self, frame_t: float | None) -> None:
        self.settle(frame_t)
        self.is_open = False
        self.needs_frame_time = False

    def frame_time(self, t: float) -> None:
        if self._turns:  # nothing is counted before the first turn
            self.first_t = t
            self.needs_frame_time = False

    def is_catch_up(self, a: SendAudio, frame_t: float | None) -> bool:
        first = self.first_t if self.first_t is not None else frame_t
        return self.is_open and (first is None or a.t < first)


class Metrics:
    """See the module docstring.

    ``core``: its ``state`` (after the input that produced an entry) and ``turn`` are read
    as entries come. ``frames()``: the frames the microphone delivered so far, the one being
    handled included; each is ``frame_bytes`` of 16 kHz PCM16. ``wire_bytes(n)``: the bytes
    ``n`` bytes of 16 kHz PCM16 become in the session's input format.
    """

    def __init__(
        self,
        core: Core,
        *,
        frames: Callable[[], int],
        frame_bytes: int,
        wire_bytes: Callable[[int], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.clock = clock
        self._wire_bytes = wire_bytes
        self._turns: deque[TurnFigures] = deque(maxlen=MAX_TURNS_KEPT)
        self._ungated = _UngatedWindow(self._turns, frames, wire_bytes(frame_bytes))
        self.tool_calls: deque[dict[str, Any]] = deque(maxlen=MAX_TURNS_KEPT)
        self._wake_at: float | None = None
        self._speech_end_at: float | None = None
        # A reply item's first delta (clock time), until its first audio is at the speaker.
        self._delta_at: OrderedDict[str, float] = OrderedDict()
        #: Called with (name, ms) as a turn's latency figure is taken: ``wake_to_send_ms``,
        #: ``first_audio_ms`` (the Prometheus histograms).
        self.on_figure: Callable[[str, float], None] | None = None
        self.tokens: dict[str, int] = dict.fromkeys(USAGE_FIELDS, 0)  # since start
        self.replies: dict[str, int] = {}  # by status
        self.rate_limits: dict[str, Any] | None = None  # {"at": epoch, "limits": [...]}

    @property
    def turns(self) -> deque[TurnFigures]:
        """The last turns' figures, oldest first; an open ungated count is brought up to the
        frames delivered so far (read while a frame is handled, that frame counts already)."""
        self._ungated.settle(None)
        return self._turns

    @property
    def needs_frame_time(self) -> bool:
        """True while the ungated window waits for its first frame: then call
        :meth:`frame_time` after the frame's actions."""
        return self._ungated.needs_frame_time

    @property
    def awaiting_first_audio(self) -> int:
        """Reply items whose first delta came and whose audio has not reached the speaker."""
        return len(self._delta_at)

    # ------------------------------------------------------------------ the timeline

    def on_telemetry(self, entry: Telemetry, frame_t: float | None = None) -> None:
        """A timeline entry, as the daemon carries out the core's actions."""
        name, turns = entry.name, self._turns
        if name in (TelemetryName.SPEECH_END_SERVER, TelemetryName.END_OF_UTTERANCE_LOCAL):
            self._speech_end_at = self.clock()
        elif name in _TURN_STARTS:
            self._ungated.settle(frame_t)  # what was counted belongs to the turn before
            turns.append(TurnFigures(turn=self.core.turn, started=entry.t,
                                     wake_word=entry.fields.get("word"),
                                     button=entry.fields.get("source")))
            # wake_to_send_ms: from the wake word's arrival at the loop, or from the button
            # press itself (stamped where the trigger saw it, on the same clock).
            self._wake_at = (self.clock() if name is TelemetryName.WAKE
                             else entry.t if name is TelemetryName.PUSH_TO_TALK else None)
        elif name is TelemetryName.BARGE_IN and turns:
            turns[-1].bargein = str(entry.fields.get("by"))
        elif name is TelemetryName.TOOL_CALL and turns:
            turns[-1].tools.append(str(entry.fields.get("name")))
        elif name is TelemetryName.REPLY_DONE:
            self._reply_done(entry.fields)
        elif name is TelemetryName.RATE_LIMITS:
            self.rate_limits = {"at": time.time(), "limits": list(entry.fields.get("limits", []))}
        self._window(name, frame_t, entry.fields)

    def _reply_done(self, fields: dict[str, Any]) -> None:
        status = str(fields.get("status"))
        if len(self.replies) < 16 or status in self.replies:  # bounded against odd statuses
            self.replies[status] = self.replies.get(status, 0) + 1
        turn = self._turns[-1] if self._turns else None
        if turn is not None and status not in ("completed", "cancelled", "canceled"):
            turn.outcome = status + (f" ({fields['reason']})" if fields.get("reason") else "")
        if not any(k in fields for k in USAGE_FIELDS):
            return
        for key in USAGE_FIELDS:
            n = int(fields.get(key, 0))
            self.tokens[key] += n
            if turn is not None:
                turn.tokens[key] = turn.tokens.get(key, 0) + n

    def _window(self, name: TelemetryName, frame_t: float | None,
                fields: dict[str, Any]) -> None:
        """Opens and closes the ungated count on the core's timeline."""
        state = self.core.state
        if name in _TURN_STARTS or (name is TelemetryName.BARGE_IN
                                    and state is State.LISTENING):
            self._ungated.open(frame_t, fresh=True)  # if open, every frame is counted already
        elif name is TelemetryName.TOOL_CALL and state is not State.IDLE:
            # Comes right after the "reply done" of the response that called it: the turn
            # goes on until the reply that follows the tool outputs is done.
            self._ungated.open(frame_t, fresh=False)
        elif name is TelemetryName.IDLE or (name is TelemetryName.REPLY_DONE
                                            and state is not State.LISTENING) or (
                name is TelemetryName.SERVICE_ERROR and fields.get("ends_turn")):
            # (A service error that ends the turn stands for the response.done that will
            # not come.)
            # A "reply done" in LISTENING is the cancelled reply of a barge-in: the turn goes on.
            self._ungated.close(frame_t)

    def frame_time(self, t: float) -> None:
        """The frame at stream time ``t`` was handled while :attr:`needs_frame_time`."""
        self._ungated.frame_time(t)

    # ------------------------------------------------------------------ the parts

    def on_upstream(self, a: SendAudio, sent: int, frame_t: float | None = None) -> None:
        """``a`` went to the link as ``sent`` wire bytes."""
        if not self._turns:
            return
        turn = self._turns[-1]
        turn.upstream_bytes += sent
        if self._ungated.is_catch_up(a, frame_t):
            turn.ungated_bytes += self._wire_bytes(len(a.pcm))

    def on_audio_written(self, t: float) -> None:
        """The link wrote audio to the socket at ``t``: the first time after a wake word is
        the turn's wake-to-send figure."""
        if self._wake_at is not None and self._turns:
            self._turns[-1].wake_to_send_ms = ms = (t - self._wake_at) * 1000
            self._wake_at = None
            if self.on_figure is not None:
                self.on_figure("wake_to_send_ms", ms)

    def on_reply_delta(self, item_id: str) -> None:
        """A reply audio delta of ``item_id`` came from the service (now)."""
        self._delta_at.setdefault(item_id, self.clock())
        # Bounded: deltas of items that never play (a cancelled reply's, or bad server
        # input) would otherwise stay here forever.
        while len(self._delta_at) > MAX_TURNS_KEPT:
            self._delta_at.popitem(last=False)

    def on_first_audio(self, item_id: str, t: float) -> Telemetry | None:
        """``item_id``'s first audio reached the speaker at ``t``. Returns the timeline entry
        to publish, or None for audio that came without a delta (an earcon) or before any turn."""
        got = self._delta_at.pop(item_id, None)
        if got is None or not self._turns:
            return None
        turn = self._turns[-1]
        turn.first_delta_to_device_ms = (t - got) * 1000
        if self._speech_end_at is not None and turn.first_audio_ms is None:
            turn.first_audio_ms = (t - self._speech_end_at) * 1000
            if self.on_figure is not None:
                self.on_figure("first_audio_ms", turn.first_audio_ms)
        return Telemetry(TelemetryName.FIRST_AUDIO_AT_SPEAKER, t, {
            "item": item_id, "after_delta_ms": round((t - got) * 1000, 1)})

    def on_tool_done(self, action: RunTool, output: str, ms: float,
                     audit: dict[str, Any] | None = None) -> None:
        """``action`` returned ``output`` (the tools' JSON result) after ``ms``; ``audit``:
        the ToolBox's record of the call (arguments, outcome, confirmation), if any."""
        try:
            result = json.loads(output)
            ok = bool(result.get("ok")) if isinstance(result, dict) else True
            error = result.get("error") if isinstance(result, dict) else None
        except ValueError:
            ok, error = True, None
        entry = {"turn": self.core.turn, "name": action.name, "call_id": action.call_id,
                 "ok": ok, "ms": round(ms, 1), "at": time.time(), "error": error}
        if audit is not None:
            for key in ("arguments", "outcome", "confirmed_by", "confirmed_at"):
                if audit.get(key) is not None:
                    entry[key] = audit[key]
        self.tool_calls.append(entry)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The ``turns`` and ``tool_calls`` of the status snapshot
        (:mod:`edgevoice.service.status`)."""
        wall = time.time() - self.clock()  # monotonic → epoch
        return {
            "turns": [{"turn": t.turn, "started": t.started + wall, "wake_word": t.wake_word,
                       "button": t.button, "wake_to_send_ms": t.wake_to_send_ms,
                       "first_audio_ms": t.first_audio_ms,
                       "first_delta_to_device_ms": t.first_delta_to_device_ms,
                       "bargein": t.bargein is not None, "tools": list(t.tools),
                       "upstream_bytes": t.upstream_bytes, "ungated_bytes": t.ungated_bytes,
                       "tokens": dict(t.tokens), "outcome": t.outcome}
                      for t in self.turns],
            "tool_calls": list(self.tool_calls),
            "usage": {"tokens": dict(self.tokens), "replies": dict(self.replies)},
            "rate_limits": self.rate_limits,
        }
