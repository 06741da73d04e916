"""The conversation core: a sans-I/O state machine.

Inputs are method calls — a microphone frame, a wake detection, a server or link event, a
playback report, a tool result, a timer tick — each with the time as an argument. Outputs are
:class:`Action` objects the caller carries out (send, play, stop playback, duck, run a tool, …).
No sockets, threads or clocks in here: tests drive it with exact timings and the daemon's
latency figures come from the same code.

States::

    IDLE ──wake──► LISTENING ──response.created──► RESPONDING ──done & drained──► FOLLOW_UP
      ▲                ▲                              │ barge-in                     │ │
      │                └──────────────────────────────┘ (VAD, server, wake, stop)    │ │
      │                └───────────────────────── speech ────────────────────────────┘ │
      └──────────────────────────────── follow-up window over ─────────────────────────┘

Guarantees:
- In IDLE no audio leaves: :class:`SendAudio` is only emitted in LISTENING (and, at a
  barge-in or a follow-up, for the speech that started the new turn).
- While muted (:meth:`Core.set_muted`) no :class:`SendAudio` is emitted at all, and no wake
  word or button starts a turn; muting ends the conversation.
- A push-to-talk press (:meth:`Core.on_button`) is a turn start, a barge-in or the end of
  the follow-up window as the wake word is; in hold mode its release commits the turn once.
- Every chunk the upstream VAD gate selects from the end of the wake word on is sent once, in
  order; the link buffers it while connecting.
- A ``call_id`` delivered once produces one :class:`RunTool` (the link delivers each
  ``call_id`` once); outputs go back as ``function_call_output`` items followed by exactly
  one ``response.create`` per response.
- Responses are taken as the link delivers them: a ``response.done`` ends the reply in
  progress and audio is that reply's (the link owns the response lifecycle and drops events
  of any other response).
- Duck is emitted on wake, Unduck when the conversation ends (follow-up over, error) and from
  :meth:`Core.shutdown`; both are idempotent on the caller's side.
- Device faults are transitions too. A microphone lost while LISTENING never leaves the turn
  hanging: with speech heard and not yet committed, the audio sent so far is committed and a
  response requested (the user gets an answer to what was captured); without speech the
  conversation ends ("idle" says why); either way it ends if no reply starts within
  ``mic_lost_reply_s``. A speaker lost mid-reply cancels the reply, truncates the item to what
  was played (also with ``auto_truncate``: the service cannot know) and ends the conversation.
- Every reply's outcome is said. A ``response.done`` with status ``failed`` or ``incomplete``
  (an error, the content filter, ``max_output_tokens``) is never taken for a finished reply:
  its ``reply done`` entry carries the status and the service's reason, a ``cue`` entry and
  an :class:`Earcon` of its class follow (``failed`` / ``filtered``; after what of the reply
  was already queued to play), and, with a spoken line configured and the link up, one
  ``response.create`` with that ``pre_generated_assistant_message`` (never for the reply of a
  line itself). The turn then ends as a finished one does — the follow-up window, so the
  user can rephrase without the wake word — once the line (if any) has played. A
  transcription failure sounds ``not_understood`` unless a reply is already playing (the
  model hears the audio itself and may answer); a non-benign service ``error`` while the turn
  waits for its reply (caused by no client event, by ``response.create`` or by the commit)
  ends the turn the same way with the ``failed`` cue instead of waiting for
  ``service_timeout_s``. A ``warning`` is put on the timeline only.
- The token budget: while :attr:`Core.limit` is set, a wake word in IDLE is answered with a
  ``limit reached`` entry and the ``limit`` earcon; no Connect, no audio leaves.
- Replies the daemon drives: with ``drive_replies`` (``create_response = false``) and with
  a local end of utterance, a committed user turn yields one :class:`RequestReply` (the
  caller sends ``response.create``, with its per-turn context).
- Clean buffers: a turn that starts on a link that is up (a warm connection) first sends
  ``input_audio_buffer.clear`` (the tail of the last turn, sent after its commit, must not
  start this one); a manual turn (``local_end_of_utterance``) that ends uncommitted clears
  what it had sent.
- Offline (``offline`` ``"auto"`` or ``"always"``): a conversation that starts with
  ``offline = "always"``, or while :attr:`Core.service_unreachable`, or whose link is not up
  ``offline_after_s`` after its start (or whose turn the link abandons before that), is
  understood on the device. Until that is decided its audio goes both to the link and to the
  local recogniser (:class:`LocalAudio`); once offline, nothing more goes to the link and the
  turn audio it holds is dropped (:class:`DropTurnAudio`); a link that comes in time takes
  the turn whole and the local audio is forgotten. Each utterance yields exactly one
  :class:`Recognise` (at the local end of utterance, a release, a lost microphone, or
  ``offline_max_utterance_s``), and its result at most one :class:`RunTool` with
  ``source = "offline"``; a result for a turn that is over is dropped. Every offline turn
  ends with one :class:`SpeakLocal` (the reply, a fixed line or an earcon), with "Offline."
  first once per outage when the service is unreachable; a recognised command also goes to
  the conversation as two text items (kept by the link for the next connection). The
  service timeout does not apply; the conversation stays offline until it ends.
"""

from __future__ import annotations

import enum
import json
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgevoice.audio.convert import level_dbfs
from edgevoice.conversation.echo import EchoGuard
from edgevoice.conversation.outcome import cue_for, reply_reason, usage_fields
from edgevoice.conversation.telemetry import Telemetry, TelemetryName
from edgevoice.link.protocol import LinkDown, LinkUp, ServiceError, TurnAbandoned
from edgevoice.listen.vad import LocalEndpointer, UpstreamGate
from edgevoice.wire import events as ev

log = logging.getLogger("edgevoice.conversation")


class State(enum.StrEnum):
    IDLE = "idle"
    LISTENING = "listening"
    RESPONDING = "responding"
    FOLLOW_UP = "follow_up"


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SendAudio:
    pcm: bytes  # 16 kHz mono PCM16
    t: float  # stream time of its first sample


@dataclass(frozen=True)
class SendEvent:
    event: ev.ClientEvent


@dataclass(frozen=True)
class Play:
    item_id: str
    data: bytes  # wire bytes in the session's output format
    fmt: str


@dataclass(frozen=True)
class FinishItem:
    item_id: str  # no more audio will come for this item


@dataclass(frozen=True)
class StopPlayback:
    """Silence the speaker now and drop what is queued; the caller reports back through
    :meth:`Core.on_playback_stopped` with the milliseconds of ``item_id`` actually played."""

    item_id: str | None


@dataclass(frozen=True)
class PausePlayback:
    """Silence the speaker but keep the reply queued: the user may be barging in."""


@dataclass(frozen=True)
class ResumePlayback:
    """It was not a barge-in after all: play on from where the pause left off."""


@dataclass(frozen=True)
class Duck:
    pass


@dataclass(frozen=True)
class Unduck:
    pass


@dataclass(frozen=True)
class RunTool:
    call_id: str
    name: str
    arguments: str
    source: str = "model"  # "offline": a command the local recogniser heard


@dataclass(frozen=True)
class LocalAudio:
    """Audio of the current utterance for the local recogniser (16 kHz mono PCM16), in order;
    the utterance began at the last :class:`LocalReset`."""

    pcm: bytes
    t: float


@dataclass(frozen=True)
class LocalReset:
    """Forget the audio given for local recognition: a new utterance (or none) follows."""


@dataclass(frozen=True)
class Recognise:
    """The utterance is over: recognise the :class:`LocalAudio` since the last
    :class:`LocalReset` and report exactly once: ``purpose`` ``"command"`` through
    :meth:`Core.on_recognised` (with ``turn``), ``"answer"`` through
    :meth:`Core.on_recognised_answer` (with ``call_id``). With ``early_at`` the user has
    only paused (since that time): recognise the audio so far and keep it (more may follow);
    the core takes the result only if it is a command and the pause lasted."""

    purpose: str
    turn: int
    call_id: str | None = None
    early_at: float | None = None


@dataclass(frozen=True)
class DropTurnAudio:
    """The turn is understood on the device: the link drops the turn audio it holds."""


@dataclass(frozen=True)
class SpeakLocal:
    """Say ``text`` on the device (may be empty), then play the ``earcon`` cue (None: none),
    as one playback item ``item_id``; report :meth:`Core.on_playback_drained` when it has
    played (also when it could not be)."""

    item_id: str
    text: str
    earcon: str | None = None


@dataclass(frozen=True)
class Earcon:
    name: str


@dataclass(frozen=True)
class RequestReply:
    """Ask the service for the reply to the committed user turn: ``response.create``, with
    the per-turn context (``additional_instructions``) if the caller has a provider."""


@dataclass(frozen=True)
class Connect:
    wanted: bool


@dataclass(frozen=True)
class ConfirmationAnswer:
    """The user's answer to the confirmation prompt of ``call_id``: exactly one per
    :meth:`Core.ask_confirmation`. ``transcript`` is the service's transcription of the first
    user turn that began (at ``began``) after the prompt played; None when there is none,
    ``why`` says what happened instead."""

    call_id: str
    transcript: str | None
    began: float | None
    why: str = ""


@dataclass(frozen=True)
class StateChanged:
    old: State
    new: State
    t: float


#: The pause after a confirmation prompt (reaching past its echo) before speech can answer.
CONFIRM_PAUSE_MS = 100
WAKE_WORD_S = 1.5  # how far back a wake word's audio reaches
USER_EVIDENCE_MS = 120  # user speech needed within it while echo is possible
#: A service error caused by one of these (None: by no client event) while the turn waits
#: for its reply means the reply will not come.
TURN_ERROR_CAUSES = (None, "response.create", "input_audio_buffer.commit")
VOICED_HISTORY_S = 2.0

Action = (SendAudio | SendEvent | Play | FinishItem | StopPlayback | PausePlayback
          | ResumePlayback | Duck | Unduck | RunTool | Earcon | Connect | Telemetry
          | StateChanged | ConfirmationAnswer | RequestReply | LocalAudio | LocalReset
          | Recognise | DropTurnAudio | SpeakLocal)

#: Said once per outage before the first local answer (``offline = "auto"``).
OFFLINE_NOTICE = "Offline."
#: The local answers when a command did not run: declined by the user, or failed.
OFFLINE_DECLINED_LINE = "Okay, not done."
OFFLINE_FAILED_LINE = "Sorry, that did not work."


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CoreSettings:
    output_format: str = "pcm16"
    follow_up_s: float = 6.0  # 0 disables the follow-up window
    listen_timeout_s: float = 8.0  # no speech after the wake word for this long: back to IDLE
    bargein_min_speech_ms: int = 200
    # The speaker is paused after this much of the user's speech (0: never pause early) and
    # resumed if the speech does not last bargein_min_speech_ms: silence within ~2 frames,
    # without cancelling a reply for a cough.
    bargein_pause_ms: int = 40
    bargein_local_vad: bool = True
    bargein_server_vad: bool = True
    wake_bargein: str = "listen"  # the wake word during a reply: "listen", "stop" or "off"
    stop_words: frozenset[str] = frozenset()  # detections that only ever stop a reply
    auto_truncate: bool = False
    local_end_of_utterance: bool = False  # turn_detection "none": commit + response.create here
    earcon: bool = True
    idle_disconnect_s: float = 60.0  # keep the connection warm this long after a conversation
    frame_ms: int = 20
    # The microphone vanished mid-turn: end the turn if no reply has started this long after.
    mic_lost_reply_s: float = 10.0
    # While the link is up and the daemon waits on the service (the user's turn is over or
    # a reply has nothing left to play), this long without any server event ends the
    # conversation: a lost response.done or a stray speech_started never leaves the
    # microphone streaming or the conversation hanging. 0 disables it.
    service_timeout_s: float = 20.0
    # Wake detections may come this long after the frame that completed them (the wake word
    # runs off the loop): the history that judges them is kept that much longer.
    wake_late_s: float = 0.0
    # turn_detection.create_response = false: the service commits turns and the daemon asks
    # for each reply (RequestReply).
    drive_replies: bool = False
    # (cue, text): the line spoken (pre_generated_assistant_message) after that cue's earcon.
    cue_lines: tuple[tuple[str, str], ...] = ()
    # Confirmations: how long an answer's transcript may take after its speech began, and
    # whether the service answers a committed turn by itself (server VAD, create_response).
    confirm_answer_s: float = 8.0
    auto_response: bool = True

    # Push-to-talk: "press" starts a turn like the wake word; "hold" streams while held and
    # commits at the release. A press in the follow-up window ends the conversation with
    # ptt_end_follow_up (else it starts a new turn). The audio from ptt_preroll_s before the
    # press is sent too (as far as the upstream gate reaches back).
    ptt_mode: str = "press"
    ptt_end_follow_up: bool = True
    ptt_preroll_s: float = 0.3

    # Offline commands: "off"; "auto": a conversation that starts while the service is
    # unreachable, or whose link is not up offline_after_s after the wake word, is understood
    # on the device; "always": every one is. An utterance is cut at offline_max_utterance_s.
    offline: str = "off"
    offline_after_s: float = 3.0
    offline_max_utterance_s: float = 10.0
    # A pause of offline_look_ms in an offline utterance asks for an early recognition; a
    # complete command ends the utterance once the pause reached offline_pause_ms (the
    # decoding runs meanwhile). 0: only the endpointer's end.
    offline_look_ms: int = 80
    offline_pause_ms: int = 150


@dataclass
class _Confirmation:
    """One confirmation prompt: queued, then ``prompt`` (being spoken), then ``answer``
    (listening for the answer)."""

    call_id: str
    prompt: str
    window_s: float
    phase: str = "queued"
    response_id: str | None = None  # the prompt's response
    prompt_done: bool = False  # its response.done came
    open_at: float = 0.0  # answers may start from here on (the prompt and its echo are over)
    deadline: float = 0.0  # ... until here
    armed: bool = False  # a pause reaching past open_at was heard: the next speech is new
    quiet_ms: float = 0.0  # the current pause since the prompt played
    began: float | None = None  # the answer's speech began
    item_id: str | None = None  # the answer's user item at the service


class Core:
    """See the module docstring. Not thread-safe: one event loop drives it."""

    def __init__(
        self,
        settings: CoreSettings,
        *,
        upstream: UpstreamGate,
        echo: EchoGuard | None = None,
        endpointer: LocalEndpointer | None = None,
    ) -> None:
        self.s = settings
        self.state = State.IDLE
        self.upstream = upstream  # its VAD also decides barge-in: one VAD per frame
        self.echo = echo or EchoGuard()
        self.endpointer = endpointer
        self.turn = 0
        self._t_state = 0.0
        self._pending_chunks: list[SendAudio] = []  # gate's chunks not yet sent (RESPONDING)
        self._voiced_ms = 0.0
        self._speech_onset = 0.0  # the first frame of the user's speech counted in _voiced_ms
        self._paused = False
        self._end_after_reply = False
        self._response_id: str | None = None
        self._response_done = True
        self._playing_item: str | None = None
        self._drained = True
        self._calls: dict[str, ev.ResponseFunctionCallArgumentsDone] = {}
        self._awaiting_outputs: set[str] = set()
        self._first_delta_seen = False
        self._heard_speech = False
        self._turn_committed = False  # the current user turn's audio was committed
        self._mic_lost_at: float | None = None  # the microphone is missing since then
        self._truncate_always: str | None = None  # truncate this item even with auto_truncate
        self._idle_since: float | None = None
        self._progress_at = 0.0  # the last sign of life of the turn (see service_timeout_s)
        self._link_up = False
        self._reply_requested = False  # RequestReply went out for the current user turn
        self._line_pending = False  # the response in progress or asked for is a cue's line
        #: Why no conversation may start now (the token budget is spent); None: it may.
        self.limit: str | None = None
        self.muted = False  # the privacy mute (set_muted): no wake word, no audio leaves
        self._held = False  # push-to-talk held (hold mode) for the current turn
        # (t, is the user) of recent voiced frames: a wake word or follow-up speech while the
        # assistant's voice may still come back from the room needs the user's own voice.
        self._voiced: deque[tuple[float, bool]] = deque()
        # Confirmation prompts, the first one active (see ask_confirmation).
        self._confirms: deque[_Confirmation] = deque()
        self._cancel_auto = False  # the service's own reply to an answer is due: cancel it
        self._ignored: deque[str] = deque(maxlen=8)  # responses cancelled for that
        #: Set by the caller: the link is backing off or refused (the service is out of reach).
        self.service_unreachable = False
        self._offline = False  # this conversation is understood on the device
        self._offline_deadline: float | None = None  # the link may still come until then
        self._offline_eou = False  # the utterance ended while waiting for the link
        self._offline_commit = False  # ... and the online path would commit it then
        self._notice = False  # say OFFLINE_NOTICE before the next local answer
        self._said_offline = False  # said in this outage (until the next LinkUp)
        self._offline_seq = 0
        self._offline_calls: dict[str, tuple[str, str, str]] = {}  # call_id: heard, tool, args
        self._local_items: deque[str] = deque(maxlen=16)  # items played by the device
        self._last_voiced = 0.0  # the last voiced frame of the offline utterance
        self._early_at: float | None = None  # an early recognition asked at this pause
        # Its result, a command, held until the pause is long enough: (tool, args, text,
        # confidence).
        self._early_command: tuple[str, dict[str, Any], str, float | None] | None = None

    # ------------------------------------------------------------------ helpers

    def _go(self, new: State, t: float, out: list[Action]) -> None:
        if new is self.state:
            return
        out.append(StateChanged(self.state, new, t))
        log.info("state %s -> %s (turn %d)", self.state.value, new.value, self.turn)
        self.state = new
        self._t_state = t
        self._progress_at = t
        if new is State.LISTENING:
            self._turn_committed = False  # a new user turn
            self._reply_requested = False
            if self._local_turn():
                out.append(LocalReset())
                self._offline_eou = False
                self._last_voiced = 0.0
                self._early_at = None
                self._early_command = None
                if self.endpointer is not None:
                    self.endpointer.reset()

    def _conversation_starts(self, out: list[Action]) -> None:
        """A turn starts (wake word or button): from IDLE the chime, the ducking and the
        connection too."""
        if self.state is State.IDLE:
            if self.s.earcon:
                out.append(Earcon("wake"))
            out.append(Duck())
            if self.s.offline != "always":
                out.append(Connect(True))
        self._idle_since = None

    def _end_conversation(self, t: float, out: list[Action], why: str) -> None:
        self._decline_all(t, out, f"the conversation ended: {why}")
        if (self.state is State.LISTENING and self.s.local_end_of_utterance
                and not self._turn_committed):
            # An abandoned manual turn: what it sent must not start the next one.
            out.append(SendEvent(ev.InputAudioBufferClear()))
        self._held = False
        if self._local_turn():
            out.append(LocalReset())
        self._offline = False
        self._offline_deadline = None
        self._go(State.IDLE, t, out)
        out.append(Unduck())
        out.append(Telemetry(TelemetryName.IDLE, t, {"why": why}))
        self._idle_since = t
        self._pending_chunks.clear()
        self.upstream.reset()

    # ------------------------------------------------------------------ inputs

    def _user_ms(self, t: float, window_s: float) -> float:
        """Milliseconds of voiced microphone audio in ``[t - window_s, t]`` that the echo guard
        judged to be the user (``t`` may lie before the newest frame: a late detection)."""
        lo = t - window_s
        return self.s.frame_ms * sum(1 for (tv, user) in self._voiced
                                     if user and lo <= tv <= t)

    def _echo_possible(self, t: float, window_s: float) -> bool:
        return self.echo.played_within(t - window_s - self.echo.delay_s, t)

    def on_wake(
        self, name: str, score: float, t: float, word_end: float | None = None
    ) -> list[Action]:
        """A wake word (or stop word) detection at stream time ``t``; the word ended at or
        before ``word_end`` (default ``t``): the audio from there on is the user's request and
        is streamed at once. While the assistant's voice may be in the microphone (it played
        within the word's length), the detection counts only if the echo guard heard the
        user during the word.

        The detection may come after frames past ``t`` (up to ``wake_late_s``): it is judged
        on the frames up to ``t``, and the request is streamed from ``word_end`` all the
        same, the frames already seen included (as far as the upstream gate reaches back)."""
        out: list[Action] = []
        if self.muted:
            return out  # the daemon runs no wake word while muted; a late one is dropped
        if (self.state is not State.IDLE and self._echo_possible(t, WAKE_WORD_S)
                and self._user_ms(t, WAKE_WORD_S) < USER_EVIDENCE_MS):
            out.append(Telemetry(TelemetryName.WAKE_IGNORED_ECHO, t, {"word": name}))
            return out
        if self.state is State.IDLE or self.state is State.FOLLOW_UP:
            if name in self.s.stop_words:
                return out
            if self.state is State.IDLE and self.limit is not None:
                out.append(Telemetry(TelemetryName.LIMIT_REACHED, t,
                                     {"word": name, "reason": self.limit}))
                out.append(Earcon("limit"))
                return out
            self.turn += 1
            out.append(Telemetry(TelemetryName.WAKE, t, {"word": name, "score": round(score, 3)}))
            if self.state is State.IDLE:
                self._offline_start(t, out)
            self._conversation_starts(out)
            self._heard_speech = False
            self._go(State.LISTENING, t, out)
            self._clear_if_warm(out)
            opened = self.upstream.open(t if word_end is None else word_end)
            self._turn_audio([SendAudio(c.pcm, c.t) for c in opened.send], out)
        elif self.state is State.RESPONDING:
            if name in self.s.stop_words or self.s.wake_bargein == "stop":
                self._barge_in(t, out, "stop word", then=State.FOLLOW_UP)
            elif self.s.wake_bargein == "listen":
                self._barge_in(t, out, "wake word", then=State.LISTENING)
        return out

    def on_button(self, pressed: bool, t: float, source: str = "button") -> list[Action]:
        """A push-to-talk button or key went down (``pressed``) or up at ``t``.

        A press in IDLE starts a turn as the wake word does (earcon, duck, connect), streaming
        from ``ptt_preroll_s`` before the press; in the follow-up window it ends the
        conversation (``ptt_end_follow_up``) or starts a new turn; during a reply it is a
        barge-in (the reply is cancelled and truncated, a new turn listens). In ``"hold"``
        mode every frame is streamed while the button is held, and the release commits the
        turn and asks for the reply (unless the turn was committed already). The local
        end-of-utterance detection (turn detection ``none``) waits while the button is held;
        a server turn detection cannot be held back and may end the turn at a long pause
        (the release then commits nothing more). Ignored while muted."""
        out: list[Action] = []
        if self.muted:
            return out
        hold = self.s.ptt_mode == "hold"
        if not pressed:
            if not self._held:
                return out
            self._held = False
            self.upstream.held = False
            commit = self.state is State.LISTENING and not self._turn_committed
            out.append(Telemetry(TelemetryName.PUSH_TO_TALK_RELEASED, t,
                                 {"source": source, "committed": commit}))
            if commit and self._local_turn():
                self._utterance_over(t, out, commit=True)
            elif commit:
                self._turn_committed = True
                self._progress_at = t
                if self.endpointer is not None:
                    self.endpointer.reset()  # this utterance is over: no second commit
                out.append(SendEvent(ev.InputAudioBufferCommit()))
                out.append(SendEvent(ev.ResponseCreate()))
            return out
        since = t - self.s.ptt_preroll_s
        if self.state is State.IDLE or (self.state is State.FOLLOW_UP
                                        and not self.s.ptt_end_follow_up):
            self.turn += 1
            out.append(Telemetry(TelemetryName.PUSH_TO_TALK, t, {"source": source}))
            if self.state is State.IDLE:
                self._offline_start(t, out)
            self._conversation_starts(out)
            self._heard_speech = hold  # held: the user decides when the turn ends
            self._go(State.LISTENING, t, out)
            opened = self.upstream.open(since)
            self._turn_audio([SendAudio(c.pcm, c.t) for c in opened.send], out)
        elif self.state is State.FOLLOW_UP:
            self._end_conversation(t, out, "ended by the button")
            return out
        elif self.state is State.RESPONDING:
            self._pending_chunks = []  # the gate reopens from the press instead
            self._barge_in(t, out, "button", then=State.LISTENING)
            self._heard_speech = hold
            opened = self.upstream.open(since)
            self._turn_audio([SendAudio(c.pcm, c.t) for c in opened.send], out)
        elif self.state is State.LISTENING and not self._turn_committed:
            pass  # already listening: a press (or a hold) goes on with this turn
        else:
            return out  # the turn is committed and its reply has not begun
        if hold:
            self._held = True
            self.upstream.held = True
        return out

    def set_muted(self, muted: bool, t: float, source: str) -> list[Action]:
        """The privacy mute on or off (``source`` names who asked, for the timeline). Muting
        ends any conversation at once (a reply in progress is cancelled and stopped, then
        truncated to what was played); while muted, frames and wake detections are ignored
        and nothing is sent. An earcon says either way."""
        out: list[Action] = []
        if muted == self.muted:
            return out
        self.muted = muted
        out.append(Telemetry(TelemetryName.MUTED if muted else TelemetryName.UNMUTED, t,
                             {"source": source}))
        if muted and self.state is not State.IDLE:
            if self._response_id is not None:
                out.append(SendEvent(ev.ResponseCancel()))
            if self._playing_item is not None:
                out.append(StopPlayback(self._playing_item))
            self._response_id = None
            self._response_done = True
            self._playing_item = None
            self._paused = False
            self._drained = True
            self._end_after_reply = False
            self._end_conversation(t, out, "muted")
        self.upstream.reset()  # the next frames start a new stream
        self._voiced.clear()
        self._pending_chunks = []
        out.append(Earcon("mute" if muted else "unmute"))
        return out

    @property
    def playing_item(self) -> str | None:
        """The item the speaker is playing (or about to): a reply, or one said locally."""
        return self._playing_item

    @property
    def offline(self) -> bool:
        """The conversation in progress is understood on the device."""
        return self._offline

    @property
    def local_turn(self) -> bool:
        """The conversation is understood on the device, or may be (it waits to see whether
        the link comes in time)."""
        return self._local_turn()

    def activity(self) -> str:
        """What the conversation is doing, as the feedback states name it: ``muted``,
        ``idle``, ``listening`` (a turn or the follow-up window takes the user's speech),
        ``thinking`` (the user's turn is committed, or a reply has begun without audio yet,
        e.g. while tools run) or ``speaking``."""
        if self.muted:
            return "muted"
        if self.state is State.IDLE:
            return "idle"
        if self.state is State.LISTENING:
            return "thinking" if self._turn_committed else "listening"
        if self.state is State.FOLLOW_UP:
            return "listening"
        return "speaking" if self._playing_item is not None else "thinking"

    def on_frame(self, pcm: bytes, t: float) -> list[Action]:
        """One microphone frame (16 kHz mono PCM16) whose first sample is at ``t``."""
        out: list[Action] = []
        if self.muted:
            return out  # nothing is looked at, nothing leaves
        state = self.state
        decision = self.upstream.process(pcm, t)
        if state is State.IDLE:
            return out  # the gate keeps its short history for the wake word; nothing leaves
        chunks = [SendAudio(c.pcm, c.t) for c in decision.send]
        user = self.echo.is_user(level_dbfs(pcm), t) and decision.voiced
        if decision.voiced:
            self._voiced.append((t, user))
        while self._voiced and self._voiced[0][0] < t - VOICED_HISTORY_S - self.s.wake_late_s:
            self._voiced.popleft()
        if state is State.LISTENING and self._answering():
            self._answer_frame(pcm, t, decision.speech_started, decision.voiced, chunks, out)
        elif state is State.LISTENING:
            self._turn_audio(chunks, out)
            if decision.voiced:
                self._heard_speech = True
                self._progress_at = t
            if decision.speech_started:
                out.append(Telemetry(TelemetryName.SPEECH_START_LOCAL, t))
            # Held push-to-talk: the release ends the turn, not a pause.
            if self._local_turn():
                if self._offline and not self._held and not self._turn_committed:
                    self._early_check(t, decision.voiced, out)
                if not self._held and not self._turn_committed and not self._offline_eou:
                    end = self.endpointer.process(pcm, t) if self.endpointer else None
                    if ((end is not None and end.end_of_utterance)
                            or t - self._t_state >= self.s.offline_max_utterance_s):
                        self._utterance_over(t, out, commit=self.s.local_end_of_utterance)
            elif (self.endpointer is not None and self.s.local_end_of_utterance
                    and not self._held):
                end = self.endpointer.process(pcm, t)
                if end.end_of_utterance:
                    self._turn_committed = True
                    out.append(Telemetry(TelemetryName.END_OF_UTTERANCE_LOCAL, t))
                    out.append(SendEvent(ev.InputAudioBufferCommit()))
                    self._request_reply(t, out)
            if (not self._heard_speech and self.s.listen_timeout_s > 0
                    and t - self._t_state >= self.s.listen_timeout_s):
                self._end_conversation(t, out, "no speech after the wake word")
        elif state is State.FOLLOW_UP:
            if (decision.speech_started and self._echo_possible(t, 0.3)
                    and self._user_ms(t, 0.3) < self.s.frame_ms):
                out.append(Telemetry(TelemetryName.SPEECH_IGNORED_ECHO, t))
                self.upstream.reset()
            elif decision.speech_started:
                self.turn += 1
                out.append(Telemetry(TelemetryName.FOLLOW_UP_SPEECH, t))
                self._heard_speech = True
                self._go(State.LISTENING, t, out)
                self._clear_if_warm(out)
                self._turn_audio(chunks, out)
        elif state is State.RESPONDING:
            # Keep what the gate would send for the current speech segment: if it turns out
            # to be the user barging in, that audio (with its prefix padding) starts the turn.
            if decision.speech_started:
                self._pending_chunks = []
            self._pending_chunks.extend(chunks)
            if not decision.streaming:
                self._pending_chunks = []
            if user:
                if self._voiced_ms == 0:
                    self._speech_onset = t
                self._voiced_ms += self.s.frame_ms
            else:
                self._voiced_ms = max(0.0, self._voiced_ms - self.s.frame_ms / 2)
            if not self.s.bargein_local_vad or self._playing_item is None:
                pass
            elif self._voiced_ms >= self.s.bargein_min_speech_ms:
                self._barge_in(t, out, "local speech", then=State.LISTENING)
            elif (not self._paused and self.s.bargein_pause_ms
                    and self._voiced_ms >= self.s.bargein_pause_ms):
                self._paused = True
                out.append(PausePlayback())
                out.append(Telemetry(TelemetryName.SPEAKER_PAUSED, t,
                                     {"voiced_ms": self._voiced_ms}))
            elif self._paused and self._voiced_ms == 0:
                self._paused = False
                out.append(ResumePlayback())
                out.append(Telemetry(TelemetryName.SPEAKER_RESUMED, t))
        return out

    def on_playback_reference(self, level_db: float, t: float) -> None:
        """Audio of ``level_db`` was handed to the speaker at ``t`` (for the echo guard)."""
        self.echo.reference(level_db, t)

    def on_playback_drained(self, t: float) -> list[Action]:
        out: list[Action] = []
        self._drained = True
        self._progress_at = t
        head = self._confirms[0] if self._confirms else None
        if head is not None and head.phase == "prompt" and head.prompt_done:
            self._begin_answer(head, t, out)
        elif self.state is State.RESPONDING and self._response_done and not self._awaiting_outputs:
            self._to_follow_up(t, out)
        return out

    def on_playback_stopped(self, item_id: str | None, played_ms: float, t: float) -> list[Action]:
        """The caller stopped playback; ``played_ms`` of ``item_id`` reached the speaker."""
        out: list[Action] = []
        out.append(Telemetry(TelemetryName.PLAYBACK_STOPPED, t, {"item": item_id,
                                                     "played_ms": round(played_ms)}))
        # auto_truncate covers the service's own barge-in only; a lost speaker it cannot know.
        forced = item_id is not None and item_id == self._truncate_always
        self._truncate_always = None
        if item_id and item_id in self._local_items:
            pass  # said on the device: the service has no such item
        elif item_id and (forced or not self.s.auto_truncate):
            out.append(SendEvent(ev.ConversationItemTruncate(
                item_id=item_id, audio_end_ms=max(0, int(played_ms)))))
            out.append(Telemetry(TelemetryName.TRUNCATE, t,
                                 {"item": item_id, "audio_end_ms": int(played_ms)}))
        return out

    def on_tool_result(self, call_id: str, output: str, t: float,
                       reply: str | None = None) -> list[Action]:
        """The output of :class:`RunTool` ``call_id``. A model's call: the output goes back
        to the service and, once all are in, one ``response.create``. An offline command:
        ``reply`` (its ``offline_reply``, rendered) or a fixed line is said on the device,
        and the turn goes to the conversation as text items (kept for the next connection
        while the link is down)."""
        out: list[Action] = []
        if call_id in self._offline_calls:
            self._offline_result(call_id, output, reply, t, out)
            return out
        if call_id not in self._awaiting_outputs:
            return out
        self._awaiting_outputs.discard(call_id)
        self._progress_at = t
        out.append(SendEvent(ev.ConversationItemCreate.function_call_output(call_id, output)))
        out.append(Telemetry(TelemetryName.TOOL_OUTPUT, t, {"call_id": call_id}))
        if not self._awaiting_outputs:
            out.append(SendEvent(ev.ResponseCreate()))
            self._response_done = False
        return out

    def on_tick(self, t: float) -> list[Action]:
        out: list[Action] = []
        if (self._offline_deadline is not None and self.state is State.LISTENING
                and (t >= self._offline_deadline or self.service_unreachable)):
            self._go_offline(t, out, "the service is unreachable" if self.service_unreachable
                             else f"no connection {self.s.offline_after_s:g} s after the "
                                  f"wake word", notice=True)
        if self.state is State.FOLLOW_UP and t - self._t_state >= self.s.follow_up_s:
            self._end_conversation(t, out, "follow-up window over")
        if (self.state is State.IDLE and self._idle_since is not None
                and t - self._idle_since >= self.s.idle_disconnect_s):
            self._idle_since = None
            self._link_up = False
            out.append(Connect(False))
        if self._answering():
            head = self._confirms[0]
            if head.began is None and t >= head.deadline:
                self._answered(t, out, None, f"no answer within {head.window_s:g} s")
            elif head.began is not None and t - head.began >= self.s.confirm_answer_s:
                self._answered(t, out, None, "no transcript of the answer came")
        elif (self.state is State.LISTENING and not self._heard_speech
                and self.s.listen_timeout_s > 0 and t - self._t_state >= self.s.listen_timeout_s):
            self._end_conversation(t, out, "no speech after the wake word")
        if (self.state is State.LISTENING and self._mic_lost_at is not None
                and t - self._mic_lost_at >= self.s.mic_lost_reply_s):
            self._end_conversation(t, out, "no reply after the microphone was lost")
        waiting = ((self.state is State.LISTENING and self._heard_speech)
                   or (self.state is State.RESPONDING and self._drained
                       and not self._awaiting_outputs))
        if (waiting and self._link_up and not self._offline and self.s.service_timeout_s > 0
                and t - self._progress_at >= self.s.service_timeout_s):
            if self._response_id is not None:
                out.append(SendEvent(ev.ResponseCancel()))
            self._response_id = None
            self._response_done = True
            self._playing_item = None
            self._end_conversation(t, out, "no answer from the service")
        return out

    def on_microphone_lost(self, t: float) -> list[Action]:
        """The microphone stopped delivering at ``t`` (unplugged or hung); no frame follows
        until :meth:`on_microphone_back`, and the next one is not contiguous. In LISTENING the
        turn is closed at once: with speech heard, the audio sent so far is committed and a
        response requested (unless the service or the local endpointer already committed the
        turn); without speech the conversation ends. A paused reply (a possible barge-in
        that can no longer be confirmed) resumes. See ``mic_lost_reply_s``."""
        out: list[Action] = []
        self._mic_lost_at = t
        state = self.state
        self.upstream.reset()  # the next frame starts a new stream
        self._voiced.clear()
        self._voiced_ms = 0.0
        self._pending_chunks = []
        fields: dict[str, Any] = {"state": state.value}
        if self._answering():
            self._answered(t, out, None, "the microphone was lost")
            fields["then"] = "the confirmation was declined"
        elif state is State.LISTENING and self._heard_speech and self._local_turn():
            if not self._turn_committed and not self._offline_eou:
                self._utterance_over(t, out, commit=True)
                if self._offline_deadline is not None:  # no waiting for the link now
                    self._go_offline(t, out, "the microphone was lost", notice=True)
            fields["then"] = "what was captured is recognised on the device"
        elif state is State.LISTENING and self._heard_speech:
            if not self._turn_committed:
                self._turn_committed = True
                out.append(SendEvent(ev.InputAudioBufferCommit()))
                out.append(SendEvent(ev.ResponseCreate()))
                fields["then"] = "committed what was captured, reply requested"
            else:
                fields["then"] = "the turn was already committed, waiting for the reply"
        elif state is State.RESPONDING and self._paused:
            self._paused = False
            out.append(ResumePlayback())
            fields["then"] = "reply resumed"
        out.insert(0, Telemetry(TelemetryName.MICROPHONE_LOST, t, fields))
        if self.state is State.LISTENING and not self._heard_speech:
            self._end_conversation(t, out, "microphone lost before any speech")
        return out

    def on_microphone_back(self, t: float) -> list[Action]:
        """The microphone delivers again (frames from ``t`` on)."""
        self._mic_lost_at = None
        return [Telemetry(TelemetryName.MICROPHONE_BACK, t)]

    def on_speaker_lost(self, t: float) -> list[Action]:
        """The speaker failed at ``t``: what was queued is gone and nothing fed until
        :meth:`on_speaker_back` can be heard. A reply being played is cancelled, stopped
        (the caller reports the milliseconds actually played through
        :meth:`on_playback_stopped`, which then always truncates) and the conversation ends:
        the user cannot hear a follow-up either."""
        out: list[Action] = [Telemetry(TelemetryName.SPEAKER_LOST, t, {"state": self.state.value,
                                                           "item": self._playing_item})]
        if self.state is State.RESPONDING:
            if self._response_id is not None:  # cancel first, then truncate (after the stop)
                out.append(SendEvent(ev.ResponseCancel()))
            if self._playing_item is not None:
                self._truncate_always = self._playing_item
                out.append(StopPlayback(self._playing_item))
            self._playing_item = None
            self._paused = False
            self._drained = True
            self._end_after_reply = False
            self._end_conversation(t, out, "speaker lost")
        return out

    def on_speaker_back(self, t: float) -> list[Action]:
        """The speaker works again: the next reply plays."""
        return [Telemetry(TelemetryName.SPEAKER_BACK, t)]

    def on_event(self, event: Any, t: float) -> list[Action]:
        """A typed server event or a link event."""
        out: list[Action] = []
        if not isinstance(event, LinkDown | TurnAbandoned):
            self._progress_at = t
        if isinstance(event, LinkUp):
            self._link_up = True
            self._said_offline = False  # a later outage is said again
            if self._offline_deadline is not None:
                self._back_online(t, out)
            out.append(Telemetry(TelemetryName.SESSION_READY, t,
                                 {"reconnected": event.reconnected}))
            if event.reconnected and self._calls:
                # The response that announced these calls died with the old connection, so
                # its response.done never comes; the replayed context expects their outputs.
                self._run_calls(t, out)
        elif isinstance(event, LinkDown):
            self._link_up = False  # an outage is the link's to bound (offline_buffer_s)
            out.append(Telemetry(TelemetryName.LINK_DOWN, t, {"reason": event.reason}))
            self._decline_all(t, out, "the connection to the service was lost")
        elif isinstance(event, TurnAbandoned):
            out.append(Telemetry(TelemetryName.TURN_ABANDONED, t, {"reason": event.reason}))
            if self._offline_deadline is not None and self.state is State.LISTENING:
                self._go_offline(t, out, "the link gave up on the turn", notice=True)
            elif self._offline:
                pass  # the turn is understood on the device
            elif self.state is not State.IDLE:
                self._end_conversation(t, out, "turn abandoned")
        elif isinstance(event, ServiceError):
            if not event.benign:
                err = event.event.error
                ends = (self._awaiting_reply() and event.caused_by in TURN_ERROR_CAUSES)
                out.append(Telemetry(TelemetryName.SERVICE_ERROR, t, {
                    "message": event.message, "reason": err.code or err.type,
                    "ends_turn": ends}))
                if ends:
                    self._turn_failed(t, out, str(err.code or err.type or event.message))
        elif isinstance(event, ev.WarningEvent):
            w = event.warning
            out.append(Telemetry(TelemetryName.SERVICE_WARNING, t,
                                 {"reason": w.code or w.message, "message": w.message}))
        elif isinstance(event, ev.RateLimitsUpdated):
            out.append(Telemetry(TelemetryName.RATE_LIMITS, t, {
                "limits": [r.model_dump(exclude_none=True) for r in event.rate_limits]}))
        elif isinstance(event, ev.ConversationItemInputAudioTranscriptionFailed):
            err = event.error
            reason = str(err.code or err.type or err.message)
            out.append(Telemetry(TelemetryName.TRANSCRIPTION_FAILED, t, {
                "item": event.item_id, "reason": reason, "message": err.message}))
            if self.state is not State.RESPONDING:
                self._cue("not_understood", reason, t, out, speak=False)
        elif isinstance(event, ev.InputAudioBufferSpeechStarted):
            out.append(Telemetry(TelemetryName.SPEECH_START_SERVER, t,
                                 {"audio_start_ms": event.audio_start_ms}))
            self._answer_item(event.item_id)
            self._heard_speech = True
            if (self.state is State.RESPONDING and self._playing_item is not None
                    and self.s.bargein_server_vad):
                self._barge_in(t, out, "server speech", then=State.LISTENING)
            elif self.state is State.FOLLOW_UP:
                self.turn += 1
                self._go(State.LISTENING, t, out)
            elif self.state is State.LISTENING:
                self._turn_committed = False  # more speech: not committed yet
        elif isinstance(event, ev.InputAudioBufferSpeechStopped):
            out.append(Telemetry(TelemetryName.SPEECH_END_SERVER, t,
                                 {"audio_end_ms": event.audio_end_ms}))
            if self.state is State.LISTENING:
                self._turn_committed = True  # server VAD commits the turn (and responds)
        elif isinstance(event, ev.InputAudioBufferCommitted):
            if self.state is State.LISTENING:
                self._turn_committed = True
                if (self.s.drive_replies and not self.s.local_end_of_utterance
                        and not self._answering()):  # an answer's reply: the tool's output
                    self._request_reply(t, out)
            if self._answer_item(event.item_id) and self.s.auto_response:
                self._cancel_auto = True  # the service replies to a committed turn itself
        elif isinstance(event, ev.ConversationItemInputAudioTranscriptionCompleted):
            out.append(Telemetry(TelemetryName.USER_SAID, t, {"text": event.transcript}))
            if self._answering() and event.item_id == self._confirms[0].item_id:
                self._answered(t, out, event.transcript, "")
        elif isinstance(event, ev.ConversationItemInputAudioTranscriptionFailed):
            if self._answering() and event.item_id == self._confirms[0].item_id:
                self._answered(t, out, None, "the answer could not be transcribed")
        elif isinstance(event, ev.ResponseCreated):
            head = self._confirms[0] if self._confirms else None
            if self._cancel_auto or (head is not None and head.phase == "answer"):
                # The service's own reply to an answer (it replies to a committed turn at
                # once, before anything asked later): the tool's output decides the reply.
                self._cancel_auto = False
                self._ignored.append(event.response.id)
                out.append(SendEvent(ev.ResponseCancel(response_id=event.response.id)))
                log.info("the service's reply to a confirmation answer was cancelled")
                return out
            if head is not None and head.phase == "prompt" and head.response_id is None:
                head.response_id = event.response.id
            self._response_id = event.response.id
            self._response_done = False
            self._first_delta_seen = False
            if self.state in (State.LISTENING, State.FOLLOW_UP, State.RESPONDING):
                self._go(State.RESPONDING, t, out)
                self._voiced_ms = 0.0
                self._pending_chunks = []
        elif isinstance(event, ev.ResponseAudioDelta):
            if self.state is State.RESPONDING and event.response_id not in self._ignored:
                try:
                    data = event.audio_bytes()
                except ev.MalformedEvent as exc:
                    # Bad base64 is bad server input, not a daemon fault: skip this chunk
                    # (the reply plays on) instead of raising into the caller.
                    log.warning("Voice Live: audio chunk skipped: %s", exc)
                    return out
                if not self._first_delta_seen:
                    self._first_delta_seen = True
                    out.append(Telemetry(TelemetryName.FIRST_REPLY_AUDIO, t,
                                         {"item": event.item_id}))
                self._playing_item = event.item_id
                self._drained = False
                out.append(Play(event.item_id, data, self.s.output_format))
        elif isinstance(event, ev.ResponseAudioDone):
            if event.item_id == self._playing_item:
                out.append(FinishItem(event.item_id))
        elif isinstance(event, ev.ResponseAudioTranscriptDone):
            if event.response_id in self._ignored:
                return out
            out.append(Telemetry(TelemetryName.ASSISTANT_SAID, t, {"text": event.transcript}))
        elif isinstance(event, ev.ResponseFunctionCallArgumentsDone):
            if event.response_id not in self._ignored:
                self._calls[event.call_id] = event
        elif isinstance(event, ev.ResponseDone):
            self._on_response_done(event, t, out)
        return out

    def end_conversation(self, t: float) -> list[Action]:
        """End the conversation (the ``stop_conversation`` tool): at once when nothing is
        being said, else after the current reply has played — no follow-up window."""
        out: list[Action] = []
        if self.state is State.RESPONDING:
            self._end_after_reply = True
        elif self.state is not State.IDLE:
            self._end_conversation(t, out, "ended on request")
        return out

    def ask_confirmation(self, call_id: str, prompt: str, window_s: float,
                         t: float) -> list[Action]:
        """Ask the user to confirm the tool call ``call_id``: speak ``prompt`` (a
        ``response.create`` with it as ``pre_generated_assistant_message``), then take the
        first user turn whose speech starts after the prompt finished playing and its echo's
        tail passed (``echo_delay + echo_spread``), within ``window_s``. Audio from before
        that is never sent (the service's input buffer is cleared first), so the prompt's
        own echo cannot answer it, and the service's own reply to the answer is cancelled.

        Exactly one :class:`ConfirmationAnswer` comes for each call: with the answer's
        transcript, or None when there is none in time, the answer could not be
        transcribed, the question was interrupted (a barge-in), the link or the microphone
        was lost, or the conversation ended. Prompts are asked one at a time, in order."""
        out: list[Action] = []
        if self.state is State.IDLE or not (self._link_up or self._offline):
            why = ("the conversation is over" if self.state is State.IDLE
                   else "the service is unreachable")
            out.append(ConfirmationAnswer(call_id, None, None, why))
            out.append(Telemetry(TelemetryName.CONFIRM_ANSWER, t,
                                 {"call_id": call_id, "text": None, "why": why}))
            return out
        self._confirms.append(_Confirmation(call_id, prompt, window_s))
        if len(self._confirms) == 1:
            self._start_prompt(t, out)
        return out

    def forget_confirmation(self, call_id: str, t: float) -> list[Action]:
        """The asker gave up on ``call_id`` (cancelled or timed out): stop asking it."""
        out: list[Action] = []
        if self._confirms and self._confirms[0].call_id == call_id:
            self._answered(t, out, None, "the question was withdrawn")
        else:
            self._confirms = deque(c for c in self._confirms if c.call_id != call_id)
        return out

    def on_recognised(self, turn: int, tool: str | None, arguments: dict[str, Any],
                      text: str, t: float, *, confidence: float | None = None,
                      why: str = "", early_at: float | None = None) -> list[Action]:
        """The local recogniser's result for :class:`Recognise` ``"command"`` of ``turn``:
        a ``tool`` with its ``arguments`` (what ``text`` says), or None (``why``: not a
        command, too unsure, silence) — then the ``not_understood`` earcon plays and the
        follow-up window lets the user say it again. A command becomes exactly one
        :class:`RunTool` (``source = "offline"``, a call id of its own). A result for a turn
        that is over (a barge-in, the end of the conversation) is dropped. An early result
        (``early_at``: of a pause) ends the utterance only when it is a command and no speech
        came since the pause began; else it is dropped and the utterance goes on."""
        out: list[Action] = []
        if (turn != self.turn or not self._offline or self.state is not State.LISTENING
                or self._answering()):
            return out
        if early_at is not None:
            # An early result counts only if it is a command and the user is still quiet,
            # and only once the pause is long enough (held until then).
            if (tool is None or self._turn_committed or early_at != self._early_at):
                return out
            if (t - self._last_voiced) * 1000 < self.s.offline_pause_ms:
                self._early_command = (tool, arguments, text, confidence)
                return out
            self._end_early(t, out)
        elif not self._turn_committed:
            return out
        if tool is None:
            out.append(Telemetry(TelemetryName.OFFLINE_NOT_UNDERSTOOD, t, {
                "text": text, "reason": why or "not a command", "confidence": confidence}))
            self._go(State.RESPONDING, t, out)
            self._response_done = True
            self._speak_local(t, out, "", "not_understood")
            return out
        self._command(tool, arguments, text, confidence, t, out)
        return out

    def on_recognised_answer(self, call_id: str, text: str | None, t: float) -> list[Action]:
        """The local recogniser's words for :class:`Recognise` ``"answer"`` (None: nothing
        it could take for a yes or a no): the answer to the confirmation ``call_id``."""
        out: list[Action] = []
        if self._answering() and self._confirms[0].call_id == call_id:
            self._answered(t, out, text or None,
                           "" if text else "the answer was not understood on the device")
        return out

    def shutdown(self, t: float) -> list[Action]:
        """Stop everything: playback off, volumes back, connection closed."""
        out: list[Action] = [StopPlayback(self._playing_item), Unduck(), Connect(False)]
        self._decline_all(t, out, "the daemon is stopping")
        self._go(State.IDLE, t, out)
        return out

    # ------------------------------------------------------------------ internals

    def _on_response_done(self, event: ev.ResponseDone, t: float, out: list[Action]) -> None:
        if event.response.id in self._ignored or self._response_id is None:
            return  # cancelled for a confirmation, or given up on (service_timeout_s)
        self._response_done = True
        self._response_id = None
        response = event.response
        fields: dict[str, Any] = {"status": response.status}
        reason = reply_reason(response)
        if reason is not None:
            fields["reason"] = reason
        details = response.status_details
        if details is not None and details.error is not None and details.error.message:
            fields["message"] = details.error.message
        fields.update(usage_fields(response.usage))
        out.append(Telemetry(TelemetryName.REPLY_DONE, t, fields))
        was_line, self._line_pending = self._line_pending, False
        head = self._confirms[0] if self._confirms else None
        if head is not None and head.response_id == event.response.id:
            if response.status != "completed":
                self._answered(t, out, None, f"the question was not spoken "
                                             f"({response.status})")
            else:
                head.prompt_done = True
                if self._drained:
                    self._begin_answer(head, t, out)
        self._run_calls(t, out)
        cue = cue_for(response)
        if cue is not None and self.state is State.RESPONDING:
            # Not a finished reply: say so (after what of it was queued) before the turn ends.
            # No line while tool outputs are due: the reply that follows them will speak.
            self._cue(cue, reason or response.status, t, out,
                      speak=not was_line and not self._awaiting_outputs)
        if self.state is State.RESPONDING and self._response_done and not self._awaiting_outputs \
                and self._drained:
            self._to_follow_up(t, out)

    def _awaiting_reply(self) -> bool:
        """The turn waits for a reply the service has not begun: the user's turn was
        committed, or outputs (or a line) were sent and their response is yet to come."""
        if self._response_id is not None:
            return False
        if self.state is State.LISTENING:
            return self._turn_committed
        return (self.state is State.RESPONDING and not self._response_done
                and not self._awaiting_outputs)

    def _turn_failed(self, t: float, out: list[Action], reason: str) -> None:
        """The reply the turn waited for will not come (a service error): cue, then end the
        turn as a finished reply would."""
        self._response_done = True
        was_line, self._line_pending = self._line_pending, False
        if self.state is State.LISTENING:
            self._go(State.RESPONDING, t, out)  # the turn is over: no more user audio
            self._drained = True
        self._cue("failed", reason, t, out, speak=not was_line)
        if self.state is State.RESPONDING and self._response_done and self._drained:
            self._to_follow_up(t, out)

    def _cue(self, cue: str, reason: str, t: float, out: list[Action], *, speak: bool) -> None:
        """Tell the user: the cue's earcon, and its spoken line when one is configured and
        the link is up (the turn then waits for that line: ``_response_done`` is False)."""
        line = dict(self.s.cue_lines).get(cue) if speak and self._link_up else None
        then = "spoken line" if line else "earcon"
        out.append(Telemetry(TelemetryName.CUE, t, {"cue": cue, "reason": reason,
                                                    "then": then}))
        out.append(Earcon(cue))
        if line and self.state is State.RESPONDING:
            self._line_pending = True
            self._response_done = False
            out.append(Telemetry(TelemetryName.SPOKEN_LINE, t, {"cue": cue, "text": line}))
            out.append(SendEvent(ev.ResponseCreate(response=ev.ResponseCreateParams(
                pre_generated_assistant_message=ev.AssistantMessage.from_text(line)))))

    def _request_reply(self, t: float, out: list[Action]) -> None:
        if self._reply_requested:
            return
        self._reply_requested = True
        out.append(Telemetry(TelemetryName.REPLY_REQUESTED, t))
        out.append(RequestReply())

    def _clear_if_warm(self, out: list[Action]) -> None:
        """A new turn on a connection that is up: drop what the service's input buffer may
        still hold (frames sent after the last turn's commit)."""
        if self._link_up:
            out.append(SendEvent(ev.InputAudioBufferClear()))

    def _run_calls(self, t: float, out: list[Action]) -> None:
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            self._awaiting_outputs.add(call.call_id)
            out.append(RunTool(call.call_id, call.name, call.arguments))
            out.append(Telemetry(TelemetryName.TOOL_CALL, t,
                                 {"name": call.name, "call_id": call.call_id}))

    def _to_follow_up(self, t: float, out: list[Action]) -> None:
        self._playing_item = None
        self._paused = False
        if self._end_after_reply:
            self._end_after_reply = False
            self._end_conversation(t, out, "ended on request")
            return
        self.upstream.reset()
        self._pending_chunks = []
        if self.s.follow_up_s > 0:
            self._go(State.FOLLOW_UP, t, out)
        else:
            self._end_conversation(t, out, "reply done")

    def _barge_in(self, t: float, out: list[Action], why: str, *, then: State) -> None:
        fields: dict[str, Any] = {"by": why}
        if why == "local speech":  # how long the user had spoken (from its first frame)
            fields["speech_ms"] = round((t - self._speech_onset) * 1000)
        out.append(Telemetry(TelemetryName.BARGE_IN, t, fields))
        if self._confirms and self._confirms[0].phase == "prompt":
            # Only an answer after the whole question counts: talking over it says no.
            self._decline_all(t, out, f"the question was interrupted ({why})")
        if self._response_id is not None:  # cancel first, then truncate (after the stop)
            out.append(SendEvent(ev.ResponseCancel()))
        out.append(StopPlayback(self._playing_item))
        self._voiced_ms = 0.0
        self._paused = False
        self._playing_item = None
        self._drained = True
        if then is State.LISTENING:
            self.turn += 1
            self._heard_speech = True
            self._go(State.LISTENING, t, out)
            # The interrupting speech, from its padding on.
            self._turn_audio(self._pending_chunks, out)
        else:
            self._go(then, t, out)
            self.upstream.reset()
        self._pending_chunks = []


    # ------------------------------------------------------------------ confirmations

    def _answering(self) -> bool:
        return bool(self._confirms) and self._confirms[0].phase == "answer"

    def _start_prompt(self, t: float, out: list[Action]) -> None:
        head = self._confirms[0]
        head.phase = "prompt"
        self._progress_at = t
        if self._offline:  # said on the device; it has played when the speaker drained
            head.prompt_done = True
            out.append(Telemetry(TelemetryName.CONFIRM_ASKED, t,
                                 {"call_id": head.call_id, "prompt": head.prompt}))
            self._go(State.RESPONDING, t, out)
            self._speak_local(t, out, head.prompt, None)
            return
        params = ev.ResponseCreateParams(
            pre_generated_assistant_message=ev.AssistantMessage.from_text(head.prompt))
        out.append(SendEvent(ev.ResponseCreate(response=params)))
        out.append(Telemetry(TelemetryName.CONFIRM_ASKED, t,
                             {"call_id": head.call_id, "prompt": head.prompt}))

    def _begin_answer(self, head: _Confirmation, t: float, out: list[Action]) -> None:
        """The prompt finished playing at ``t``: listen for the answer."""
        head.phase = "answer"
        head.open_at = t + self.echo.delay_s + self.echo.spread_s
        head.deadline = t + head.window_s
        if not self._offline:
            out.append(SendEvent(ev.InputAudioBufferClear()))
        out.append(Telemetry(TelemetryName.CONFIRM_LISTENING, t,
                             {"call_id": head.call_id, "window_s": head.window_s}))
        self.turn += 1
        self._heard_speech = False
        self._pending_chunks = []
        self._playing_item = None
        self._paused = False
        self.upstream.reset()
        self._go(State.LISTENING, t, out)

    def _answer_frame(self, pcm: bytes, t: float, speech_started: bool, voiced: bool,
                      chunks: list[SendAudio], out: list[Action]) -> None:
        """One frame while listening for a confirmation answer (see ask_confirmation)."""
        head = self._confirms[0]
        if head.began is None:
            if t >= head.deadline:
                self._answered(t, out, None, f"no answer within {head.window_s:g} s")
                return
            if not head.armed:
                # Speech going on as the question ended (its echo, or an answer begun over
                # it) is not an answer: wait for a pause; nothing before it is ever sent.
                head.quiet_ms = 0.0 if voiced else head.quiet_ms + self.s.frame_ms
                if t >= head.open_at and head.quiet_ms >= CONFIRM_PAUSE_MS:
                    head.armed = True
                    self.upstream.reset()
                    if self.endpointer is not None:
                        self.endpointer.reset()
                return
            if self.endpointer is not None and self._local_eou():
                self.endpointer.process(pcm, t)
            if not speech_started:
                return
            if self._echo_possible(t, 0.3) and self._user_ms(t, 0.3) < self.s.frame_ms:
                out.append(Telemetry(TelemetryName.SPEECH_IGNORED_ECHO, t))
                self.upstream.reset()
                return
            head.began = t
            self._heard_speech = True
            self._progress_at = t
            out.append(Telemetry(TelemetryName.SPEECH_START_LOCAL, t))
            self._turn_audio(chunks, out)
            return
        self._turn_audio(chunks, out)
        if self.endpointer is not None and self._local_eou() \
                and not self._turn_committed and self.endpointer.process(pcm, t).end_of_utterance:
            self._turn_committed = True  # no response.create: the tool's output decides
            out.append(Telemetry(TelemetryName.END_OF_UTTERANCE_LOCAL, t))
            if self._offline:
                out.append(Recognise("answer", self.turn, head.call_id))
            else:
                out.append(SendEvent(ev.InputAudioBufferCommit()))
        if t - head.began >= self.s.confirm_answer_s:
            self._answered(t, out, None, "no transcript of the answer came")

    def _answer_item(self, item_id: str) -> bool:
        """Take ``item_id`` as the answer's user item if it is the first since the answer
        began (nothing was sent before: no older item can start now). True if it is it."""
        if not self._answering():
            return False
        head = self._confirms[0]
        if head.began is not None and head.item_id is None:
            head.item_id = item_id
        return head.item_id == item_id

    def _answered(self, t: float, out: list[Action], transcript: str | None, why: str) -> None:
        """The active confirmation is decided: report it; wait for the tool's output (which
        asks for the reply) with the microphone closed; ask the next question."""
        head = self._confirms.popleft()
        self._report(head, t, out, transcript, why)
        if head.phase == "answer" and self.state is State.LISTENING:
            self._go(State.RESPONDING, t, out)
            self._heard_speech = True
            self._drained = True
            self.upstream.reset()
        if self._confirms:
            self._start_prompt(t, out)

    def _decline_all(self, t: float, out: list[Action], why: str) -> None:
        while self._confirms:
            self._report(self._confirms.popleft(), t, out, None, why)

    def _report(self, head: _Confirmation, t: float, out: list[Action],
                transcript: str | None, why: str) -> None:
        out.append(ConfirmationAnswer(head.call_id, transcript, head.began, why))
        out.append(Telemetry(TelemetryName.CONFIRM_ANSWER, t,
                             {"call_id": head.call_id, "text": transcript, "why": why}))



    # ------------------------------------------------------------------ offline

    def _local_turn(self) -> bool:
        """The current utterance goes to the local recogniser: the conversation is
        offline, or waits to see whether the link comes in time."""
        return self._offline or self._offline_deadline is not None

    def _local_eou(self) -> bool:
        """The end of an utterance is decided here (turn detection none, or offline)."""
        return self.s.local_end_of_utterance or self._offline

    def _turn_audio(self, chunks: list[SendAudio], out: list[Action]) -> None:
        """The turn's audio: to the service, to the local recogniser, or both while it is
        not known yet which will answer."""
        if not self._offline:
            out.extend(chunks)
        if self._local_turn():
            out.extend(LocalAudio(c.pcm, c.t) for c in chunks)

    def _offline_start(self, t: float, out: list[Action]) -> None:
        """A conversation starts (from IDLE): decide who will understand it."""
        self._offline = False
        self._offline_deadline = None
        self._offline_eou = False
        mode = self.s.offline
        if mode == "always":
            self._go_offline(t, out, "conversation.offline = always", notice=False)
        elif mode == "auto" and self.service_unreachable:
            self._go_offline(t, out, "the service is unreachable", notice=True)
        elif mode == "auto" and not self._link_up:
            self._offline_deadline = t + self.s.offline_after_s

    def _go_offline(self, t: float, out: list[Action], why: str, *, notice: bool) -> None:
        """From now on this conversation is understood on the device; an utterance that
        ended while waiting for the link is recognised now."""
        self._offline = True
        self._offline_deadline = None
        self._notice = notice and not self._said_offline
        out.append(DropTurnAudio())
        out.append(Telemetry(TelemetryName.OFFLINE, t, {"why": why}))
        if self._offline_eou and self.state is State.LISTENING and not self._turn_committed:
            self._recognise(t, out)

    def _back_online(self, t: float, out: list[Action]) -> None:
        """The link came in time: the service takes the turn (it had all its audio)."""
        self._offline_deadline = None
        out.append(LocalReset())
        if (self._offline_eou and self._offline_commit and self.state is State.LISTENING
                and not self._turn_committed):
            self._turn_committed = True
            out.append(SendEvent(ev.InputAudioBufferCommit()))
            if self.s.local_end_of_utterance:
                self._request_reply(t, out)
            else:
                out.append(SendEvent(ev.ResponseCreate()))
        self._offline_eou = False

    def _utterance_over(self, t: float, out: list[Action], *, commit: bool) -> None:
        """The user's utterance ended (a pause, the release of a held button, the lost
        microphone, or its length bound): recognise it now when offline; while waiting for
        the link, remember it (``commit``: the online path commits it when the link
        comes)."""
        if self._offline:
            self._recognise(t, out)
        else:
            self._offline_eou = True
            self._offline_commit = commit
            out.append(Telemetry(TelemetryName.END_OF_UTTERANCE_LOCAL, t))

    def _early_check(self, t: float, voiced: bool, out: list[Action]) -> None:
        """Track the pauses of an offline utterance: at each one that reaches
        ``offline_look_ms`` ask once for an early recognition; a command it gave is taken
        when the pause reaches ``offline_pause_ms``; speech drops it."""
        pause_ms = (t - self._last_voiced) * 1000
        if voiced:
            self._last_voiced = t
            self._early_at = None
            self._early_command = None
        elif self._early_command is not None and pause_ms >= self.s.offline_pause_ms:
            tool, arguments, text, confidence = self._early_command
            self._end_early(t, out)
            self._command(tool, arguments, text, confidence, t, out)
        elif (self._heard_speech and self._early_at is None and self.s.offline_pause_ms > 0
                and self._last_voiced > 0
                and pause_ms >= min(self.s.offline_look_ms, self.s.offline_pause_ms)):
            self._early_at = t
            out.append(Recognise("command", self.turn, early_at=t))

    def _end_early(self, t: float, out: list[Action]) -> None:
        self._turn_committed = True
        self._offline_eou = False
        self._early_command = None
        out.append(Telemetry(TelemetryName.END_OF_UTTERANCE_LOCAL, t, {
            "early": True, "pause_ms": round((t - self._last_voiced) * 1000)}))

    def _command(self, tool: str, arguments: dict[str, Any], text: str,
                 confidence: float | None, t: float, out: list[Action]) -> None:
        """A recognised command: exactly one RunTool of its own call id."""
        self._offline_seq += 1
        call_id = f"offline_{self._offline_seq}"
        args = json.dumps(arguments, separators=(",", ":"), sort_keys=True)
        self._offline_calls[call_id] = (text, tool, args)
        self._awaiting_outputs.add(call_id)
        out.append(Telemetry(TelemetryName.OFFLINE_COMMAND, t, {
            "text": text, "tool": tool, "arguments": args, "confidence": confidence}))
        self._go(State.RESPONDING, t, out)
        self._response_done = True
        self._drained = True
        self._playing_item = None
        out.append(RunTool(call_id, tool, args, source="offline"))
        out.append(Telemetry(TelemetryName.TOOL_CALL, t, {
            "name": tool, "call_id": call_id, "arguments": args, "source": "offline"}))

    def _recognise(self, t: float, out: list[Action]) -> None:
        self._turn_committed = True
        self._progress_at = t
        if not self._offline_eou:
            out.append(Telemetry(TelemetryName.END_OF_UTTERANCE_LOCAL, t))
        self._offline_eou = False
        out.append(Recognise("command", self.turn))

    def _offline_result(self, call_id: str, output: str, reply: str | None, t: float,
                        out: list[Action]) -> None:
        heard, tool, args = self._offline_calls.pop(call_id)
        self._awaiting_outputs.discard(call_id)
        ok, error = _output_status(output)
        out.append(Telemetry(TelemetryName.TOOL_OUTPUT, t, {"call_id": call_id, "ok": ok}))
        if ok:
            line, earcon = (reply or "", None if reply else "done")
        elif error.startswith("not done"):
            line, earcon = OFFLINE_DECLINED_LINE, None
        else:
            line, earcon = OFFLINE_FAILED_LINE, "failed"
        # The model learns what happened while it was away (replayed on the next connection).
        out.append(SendEvent(ev.ConversationItemCreate(item=ev.UserMessage.from_text(heard))))
        said = f" and said: {line}" if line else ""
        out.append(SendEvent(ev.ConversationItemCreate(item=ev.SystemMessage.from_text(
            f"The device understood the user's last message on its own (the service was "
            f"not used) and ran {tool} with {args}; output: {output}{said}"))))
        if self.state is State.RESPONDING and self._offline and not self._awaiting_outputs:
            self._speak_local(t, out, line, earcon)

    def _speak_local(self, t: float, out: list[Action], text: str, earcon: str | None) -> None:
        """Say ``text`` (with the outage's notice first, once) and the earcon, on the device;
        the turn goes on when it has played (:meth:`on_playback_drained`)."""
        if self._notice:
            text = f"{OFFLINE_NOTICE} {text}".strip()
            self._notice = False
            self._said_offline = True
        self._offline_seq += 1
        item = f"local_{self._offline_seq}"
        self._local_items.append(item)
        self._playing_item = item
        self._drained = False
        out.append(Telemetry(TelemetryName.LOCAL_REPLY, t, {"text": text, "earcon": earcon}))
        out.append(SpeakLocal(item, text, earcon))


def _output_status(output: str) -> tuple[bool, str]:
    """(ok, error) of a tool output (``{"ok": ..., "error": ...}``; anything else: not ok)."""
    try:
        data = json.loads(output)
    except ValueError:
        return False, ""
    if not isinstance(data, dict):
        return False, ""
    return data.get("ok") is True, str(data.get("error") or "")


def actions_of(kind: type, actions: Iterable[Action]) -> list[Any]:
    """The actions of one kind (handy for callers and tests)."""
    return [a for a in actions if isinstance(a, kind)]
