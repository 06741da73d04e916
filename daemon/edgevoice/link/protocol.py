"""The Voice Live link's protocol side: a sans-I/O protocol object, what it delivers, the URL.

:class:`VoiceLiveProtocol` is the whole conversation-keeping logic of the link, in the style of
the websockets library's protocol objects: it is fed text frames (:meth:`receive_text`), the
opening and the end of each connection, client events and time, and it answers with frames to
write (:meth:`data_to_send`) and events for the caller (:meth:`events_received`). It never
reads a clock, never blocks and never touches a socket, so every edge case is a unit test with
exact frames and times. :mod:`edgevoice.link.client` is the asyncio driver around it.

Pure: no sockets, no asyncio, no clocks read here (time is an argument), so the conversation
core can import the link's events without loading a WebSocket library.
"""

from __future__ import annotations

import base64
import enum
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import NamedTuple, TypeVar
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from edgevoice.audio.convert import bytes_per_second
from edgevoice.config import VoiceLiveConfig, is_secret_query_name
from edgevoice.link.context import ConversationLog
from edgevoice.wire import events as ev
from edgevoice.wire.session import RequestSession

log = logging.getLogger("edgevoice.voicelive")

REALTIME_PATH = "/voice-live/realtime"


class LinkState(enum.Enum):
    IDLE = "idle"  # not wanted: no connection
    CONNECTING = "connecting"
    CONFIGURING = "configuring"  # socket open, session not ready yet
    READY = "ready"
    BACKOFF = "backoff"
    AUTH_FAILED = "auth_failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class LinkUp:
    """The session is ready (after session.updated and the context replay). ``reconnected``
    is False only for the first ready session of this link."""

    reconnected: bool


@dataclass(frozen=True)
class LinkDown:
    """The connection ended or could not be made; ``retry_in`` is None when not retrying."""

    reason: str
    retry_in: float | None
    t: float


@dataclass(frozen=True)
class TurnAbandoned:
    """The current user turn's audio could not be kept (link down too long): it was dropped
    as a whole. ``dropped_ms`` says how much audio that was."""

    reason: str
    dropped_ms: float
    t: float


@dataclass(frozen=True)
class ServiceError:
    """An ``error`` event, with the type of the client event that caused it (if known)."""

    event: ev.ErrorEvent
    caused_by: str | None
    benign: bool

    @property
    def message(self) -> str:
        return self.event.error.message


LinkEvent = LinkUp | LinkDown | TurnAbandoned | ServiceError
Inbound = ev.ServerEvent | LinkEvent

BENIGN_ERRORS = ("no active response",)
#: Error codes of the same race for a cancel naming its response (the response ended, or
#: another replaced it, before the cancel arrived): benign too, but another response may be
#: in progress, so the link's own count stays.
BENIGN_CODES = ("response_cancel_not_active",)


def is_benign(message: str, code: str | None) -> bool:
    """Whether a service error is the harmless race of a cancel that came too late."""
    return any(text in message.lower() for text in BENIGN_ERRORS) or code in BENIGN_CODES
#: Client events that carry the current user turn: written ones stay unacked (kept for a
#: resend) until the service commits or clears the input buffer.
TURN_AUDIO_EVENTS = ("input_audio_buffer.append", "input_audio_buffer.commit")
#: Queued client events dropped when a connection ends: items live in the context and are
#: replayed, cancels and truncates were about the dead connection's response, and the whole
#: session goes with the next connect's ``session.update``.
VOID_AFTER_DISCONNECT = frozenset({"conversation.item.create", "response.cancel",
                                   "conversation.item.truncate", "session.update"})
#: How many written event ids are kept to name the cause of an ``error``.
SENT_TYPES_KEPT = 512
#: How many function call ids are kept to deliver each once. The service repeats a call
#: within a session (at most an hour); the tools' own record covers restarts.
CALL_IDS_KEPT = 1024

_E = TypeVar("_E", bound=ev.ClientEvent)


def _b64_len(data: str) -> int:
    """Decoded length of base64 text without decoding it."""
    n = len(data)
    return max(0, n * 3 // 4 - data[-2:].count("=")) if n else 0


class Outgoing(NamedTuple):
    """One text frame to write, in order. ``audio`` marks an input audio append (the caller
    times its write for the latency figures)."""

    text: str
    audio: bool = False


class _Pending:
    """An outbox entry: the event and, for audio appends, the raw bytes."""

    __slots__ = ("event", "audio")

    def __init__(self, event: ev.ClientEvent, audio: bytes | None = None) -> None:
        self.event = event
        self.audio = audio


class VoiceLiveProtocol:
    """One logical Voice Live conversation over a sequence of connections, without I/O.

    Inputs: :meth:`connection_opened` and :meth:`connection_closed` around each connection,
    :meth:`receive_text` for every text frame read, :meth:`send` / :meth:`append_audio` for
    the caller's client events, :meth:`set_wanted` and :meth:`tick` (every half second or so)
    for the close decisions. Inputs that can deliver a timed event or whose outcome depends
    on time take ``now`` (the caller's clock, in seconds); nothing here reads a clock.
    Outputs, collected after any input: :meth:`data_to_send`
    (frames to write in order), :meth:`events_received` (server and link events for the
    caller, in order) and :attr:`close_reason` (the protocol wants this connection closed).

    Guarantees:

    - **Typed input, never raising.** A frame is parsed once into a typed event; a malformed
      one is logged, counted (``stats["malformed"]``) and skipped, an unknown type is counted
      (``stats["unknown"]``) and dropped; a bug in the bookkeeping is logged and the event
      delivered anyway. Nothing the network sends raises out of :meth:`receive_text`.
    - **Session first.** After :meth:`connection_opened` only ``session.update`` (after
      ``session.created``) leaves; after ``session.updated`` (or an ``error`` refusing the
      update: logged, the session goes on with what the service has) the conversation so far
      is replayed (:class:`~edgevoice.link.context.ConversationLog`), :class:`LinkUp` is
      delivered, and only then does the outbox flow — in the order it was filled.
    - **Ids.** Every client event gets an ``event_id`` (``evc_1``, ``evc_2``, …) when it is
      queued; the type of the last :data:`SENT_TYPES_KEPT` written ones is kept, so an
      ``error`` comes back as a :class:`ServiceError` naming its cause. A "no active response"
      answer to a cancel is benign, and ends the response the link counted as in progress.
    - **Turn audio, bounded.** Audio of the current user turn (appends and the commit) is kept
      after it was written until the service commits or clears the buffer, and goes out again,
      first, after a reconnect. Queued plus kept audio is bounded by ``offline_buffer_s`` of
      audio: while connected the oldest written audio is forgotten first (it is on the wire);
      beyond that, or when a drop finds the kept audio incomplete, the turn's audio is dropped
      as a whole and :class:`TurnAbandoned` delivered — a turn never goes out with a hole.
    - **Responses: one owner.** This object follows the service's responses: the response in
      progress (:attr:`response_id`, from its ``response.created`` to its ``response.done``)
      and whether one is owed (:attr:`response_owed`: asked for, or a committed turn, and not
      begun). A ``response.done`` or ``response.audio.delta`` of any other response (a late
      one of a response the service replaced, a repeat, a stray) is not delivered
      (``stats["stale"]``), so the caller can take the lifecycle it receives at face value.
      A response lost with its connection is owed, and gets one ``response.create`` after the
      replay — unless function calls await their outputs (the caller sends those and asks
      itself).
    - **Exactly once.** A function call's ``call_id`` is delivered once, however often the
      service repeats it (the last :data:`CALL_IDS_KEPT` ids); its output is replayed after
      a reconnect, never asked for again.
    - **Clears.** An ``input_audio_buffer.clear`` the caller sends ends the kept turn audio
      written before it when it is written (the ``cleared`` that answers it then forgets
      nothing of the audio written after it); a clear the service makes on its own forgets
      all kept audio. A ``response.create`` the service refuses (an ``error`` naming it), or a
      server ``error`` while a response is owed and none has begun, ends the debt: the link
      does not stay busy (or ask again after a reconnect) for a reply that will not come.
    - **Session check.** A ``session.updated`` that differs from what was asked in a field the
      daemon relies on (the audio formats, the input rate, the turn detection's type,
      ``create_response``, ``interrupt_response``, ``auto_truncate``) is logged once as a
      warning (once per field and value, across reconnects); the session goes on.
    - **Closing.** :attr:`close_reason` is set, once per connection, when the connection is
      quiet (no response in progress or owed, nothing queued or kept, not held by
      :attr:`hold_recycle`) and either older than ``session_max_s`` (a recycle before the
      service's session limit) or no longer wanted. From then on nothing more is handed out
      on that connection; what is queued waits for the next one.
    """

    def __init__(self, cfg: VoiceLiveConfig, session: RequestSession) -> None:
        self.cfg = cfg
        self.session = session
        self.context = ConversationLog(max_items=cfg.replay_max_items)
        self.hold_recycle = False  # the caller sets this while a turn is in progress
        self.stats = {"connects": 0, "failures": 0, "malformed": 0, "unknown": 0,
                      "abandoned_turns": 0, "recycles": 0, "stale": 0}
        #: The response in progress at the service (None: none).
        self.response_id: str | None = None
        #: A response was asked for (or is due after a committed turn) and has not begun.
        self.response_owed = False
        #: Why this connection should be closed (set once per connection; None: keep it).
        self.close_reason: str | None = None

        self._connected = False
        self._awaiting: str | None = None  # the handshake event waited for
        self._ready = False
        self._ever_ready = False
        self._connected_at: float | None = None
        self._wanted = False
        self._control: list[_Pending] = []  # session.update and the replay: ahead of all
        self._outbox: deque[_Pending] = deque()
        self._unacked: list[_Pending] = []  # turn audio written but not yet committed
        self._unacked_trimmed = False  # some of it was trimmed: a resend would have a hole
        self._turn_bytes = 0  # audio bytes in the outbox and unacked
        self._update_id: str | None = None
        self._sent_types: OrderedDict[str, str] = OrderedDict()
        self._calls_seen: OrderedDict[str, None] = OrderedDict()
        self._seq = 0
        self._events: list[Inbound] = []
        self._clears_written = 0  # our clears not yet answered by input_audio_buffer.cleared
        self._mismatches_logged: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        """Between :meth:`connection_opened` and :meth:`connection_closed`."""
        return self._connected

    @property
    def awaiting(self) -> str | None:
        """The handshake event the connection waits for (``session.created`` or
        ``session.updated``); None when not connected or ready."""
        return self._awaiting

    @property
    def ready(self) -> bool:
        """The session is configured and the replay queued: the outbox flows."""
        return self._ready

    @property
    def quiet(self) -> bool:
        """Nothing in flight: no response in progress or owed, nothing queued or kept for a
        resend, and the caller does not hold the connection."""
        return (
            self.response_id is None
            and not self.response_owed
            and not self._unacked
            and not self._outbox
            and not self.hold_recycle
        )

    # ------------------------------------------------------------------ outputs

    def data_to_send(self) -> list[Outgoing]:
        """The frames to write now, in order (each handed out once). Before the session is
        ready only the handshake's frames; nothing once :attr:`close_reason` is set. Turn
        audio handed out is kept for a resend until the service commits it."""
        if not self._connected or self.close_reason is not None:
            return []
        out = [self._written(p) for p in self._control]
        self._control.clear()
        if self._ready:
            while self._outbox:
                pending = self._outbox.popleft()
                out.append(self._written(pending))
                if pending.event.type in TURN_AUDIO_EVENTS:
                    self._unacked.append(pending)
                elif pending.event.type == "input_audio_buffer.clear":
                    # What was written before it is gone at the service with it.
                    self._forget_unacked()
                    self._clears_written += 1
        return out

    def events_received(self) -> list[Inbound]:
        """Server and link events for the caller since the last call, in order."""
        events, self._events = self._events, []
        return events

    # ------------------------------------------------------------------ connection

    def connection_opened(self) -> None:
        """A new connection is open: wait for ``session.created``."""
        self._connected = True
        self._ready = False
        self._awaiting = "session.created"
        self._update_id = None
        self._control.clear()
        self.close_reason = None
        self.stats["connects"] += 1

    def connection_closed(self, now: float) -> None:
        """The connection ended (any way). A response in progress is owed again; written
        but uncommitted turn audio goes back to the front of the outbox (or the turn is
        abandoned when some of it was forgotten); queued items, cancels, truncations and
        session updates are dropped (the replay and the next handshake carry them)."""
        self._connected = False
        self._ready = False
        self._awaiting = None
        self._control.clear()
        self._clears_written = 0
        if self.response_id is not None:
            # The response died with the connection: ask again once the context is back.
            self.response_owed = True
            self.response_id = None
        if self._unacked_trimmed and self._unacked:
            dropped_ms = 1000.0 * self._turn_bytes / self._bytes_per_second()
            self._drop_turn_audio()
            self._abandon("connection lost during a turn too long to resend", dropped_ms, now)
        self._outbox.extendleft(reversed(self._unacked))
        self._unacked = []
        self._outbox = deque(p for p in self._outbox if p.event.type not in VOID_AFTER_DISCONNECT)

    def set_wanted(self, wanted: bool) -> None:
        """Keep a connection (True) or let it go (False: closed when quiet)."""
        self._wanted = wanted
        if wanted:
            return
        # The caller lets go only between conversations (the core's idle disconnect, or
        # shutdown), so turn audio still held is the tail of a finished turn: frames the
        # VAD gate sent after the service's commit, before its response began (any
        # service latency above one frame). Nothing will ever commit it, and held it
        # would keep the link from being quiet: no idle close, no recycle (found by the
        # soak run). Drop it; nothing of a turn in progress is lost.
        self._drop_turn_audio()
        if self._connected and self.close_reason is None and self.quiet:
            self.close_reason = "idle"

    def tick(self, now: float) -> None:
        """The periodic check of a ready connection: recycle it before the session limit,
        or close it when it is not wanted — only when :attr:`quiet`."""
        if not self._ready or self.close_reason is not None:
            return
        age = now - (self._connected_at if self._connected_at is not None else now)
        if age >= self.cfg.session_max_s and self.quiet:
            self.close_reason = f"recycling after {age:.0f} s, before the session limit"
        elif not self._wanted and self.quiet:
            self.close_reason = "idle"

    # ------------------------------------------------------------------ sending

    def send(self, event: ev.ClientEvent, now: float) -> str:
        """Queue a client event; returns its ``event_id`` (given one if it has none). While
        the session is not ready, cancels are dropped (the response died with the
        connection), truncations are applied to the stored context, items are kept in the
        context for the replay instead of being queued twice, and session updates are merged
        into the session the next handshake sends."""
        event_id = event.event_id
        if event_id is None:
            event_id = event.event_id = self._next_id()
        audio: bytes | None = None
        if isinstance(event, ev.InputAudioBufferAppend):
            audio = base64.b64decode(event.audio)
        elif isinstance(event, ev.ConversationItemCreate):
            self._record_item(event)
            if not self._ready:
                return event_id  # in the context: the next replay sends it
        elif isinstance(event, ev.ConversationItemTruncate):
            self.context.truncate_assistant(event.item_id, event.audio_end_ms)
            if not self._ready:
                return event_id
        elif isinstance(event, ev.ResponseCancel) and not self._ready:
            log.debug("response.cancel dropped: link is down")
            return event_id
        elif isinstance(event, ev.ResponseCreate):
            self.response_owed = True
        elif isinstance(event, ev.SessionUpdate):
            self._merge_session(event.session)
            if not self._ready:
                return event_id  # sent whole on the next connect
        self._enqueue(_Pending(event, audio), now)
        log.debug("queued %s %s", event.type, event_id)
        return event_id

    def append_audio(self, pcm: bytes, now: float) -> None:
        """Queue one chunk of user audio (already in the session's input format). Raises
        ValueError only for a chunk above the service's 15 MiB per-append limit."""
        event = self._with_id(ev.InputAudioBufferAppend.from_pcm(pcm))
        self._enqueue(_Pending(event, pcm), now)

    def _next_id(self) -> str:
        self._seq += 1
        return f"evc_{self._seq}"

    def _with_id(self, event: _E) -> _E:
        """The event with the link's next ``event_id`` (how errors are matched to it)."""
        event.event_id = self._next_id()
        return event

    def _written(self, pending: _Pending) -> Outgoing:
        event = pending.event
        if event.event_id:
            self._sent_types[event.event_id] = event.type
            while len(self._sent_types) > SENT_TYPES_KEPT:
                self._sent_types.popitem(last=False)
        return Outgoing(event.to_json(), pending.audio is not None)

    def _enqueue(self, pending: _Pending, now: float) -> None:
        self._outbox.append(pending)
        if pending.audio is not None:
            self._turn_bytes += len(pending.audio)
            self._bound_turn_audio(now)

    # ------------------------------------------------------------------ turn audio

    def _bytes_per_second(self) -> int:
        """Input audio bytes per second: the unit of the offline bound and of dropped_ms."""
        return bytes_per_second(self.session.input_audio_format or "pcm16",
                                self.session.input_audio_sampling_rate or 24000)

    def _recount_turn_audio(self) -> None:
        """Recount the turn's audio bytes (outbox + unacked) after a bulk change; appends keep
        the running count themselves, so the hot path stays O(1)."""
        queued = sum(len(p.audio) for p in self._outbox if p.audio is not None)
        self._turn_bytes = queued + sum(len(p.audio) for p in self._unacked
                                        if p.audio is not None)

    def _bound_turn_audio(self, now: float) -> None:
        limit = self.cfg.offline_buffer_s * self._bytes_per_second()
        total = self._turn_bytes
        if total <= limit:
            return
        if self._ready:
            # Connected: what was sent is only kept for a resend after a drop; trimming the
            # oldest unacked chunks loses nothing now, but a later drop could not restore the
            # turn whole, so remember that.
            while self._unacked and total > limit:
                total -= len(self._unacked.pop(0).audio or b"")
                self._unacked_trimmed = True
            self._turn_bytes = total
            if total <= limit:
                return
        dropped_ms = 1000.0 * total / self._bytes_per_second()
        self._drop_turn_audio()
        self._abandon(f"link down for more than {self.cfg.offline_buffer_s:g} s of audio",
                      dropped_ms, now)

    def drop_turn_audio(self) -> None:
        """Forget the current turn's audio, queued or kept (the turn went elsewhere: it is
        understood on the device); nothing is abandoned or reported."""
        self._drop_turn_audio()

    def _drop_turn_audio(self) -> None:
        self._outbox = deque(p for p in self._outbox if p.event.type not in TURN_AUDIO_EVENTS)
        self._forget_unacked()

    def _forget_unacked(self) -> None:
        """The written turn audio needs no resend any more (committed, cleared or dropped)."""
        self._unacked = []
        self._unacked_trimmed = False
        self._recount_turn_audio()

    def _abandon(self, reason: str, dropped_ms: float, now: float) -> None:
        self.stats["abandoned_turns"] += 1
        log.warning("user turn abandoned: %s (%.0f ms of audio dropped)", reason, dropped_ms)
        self._events.append(TurnAbandoned(reason, dropped_ms, now))

    # ------------------------------------------------------------------ context

    def _record_item(self, event: ev.ConversationItemCreate) -> None:
        item = event.item
        if isinstance(item, ev.FunctionCallOutput):
            self.context.add_function_output(item.call_id, item.output)
            self.response_owed = False  # the caller sends response.create itself
        elif isinstance(item, ev.UserMessage):
            # Audio content is kept by its transcript (if any): the replay is text.
            texts = [c.transcript if isinstance(c, ev.InputAudioContent) else c.text
                     for c in item.content]
            self.context.add_user_text(" ".join(t for t in texts if t))
        elif isinstance(item, ev.SystemMessage):
            self.context.add_system_text(" ".join(c.text for c in item.content if c.text))

    def _merge_session(self, update: RequestSession) -> None:
        merged = self.session.model_copy(update={k: getattr(update, k)
                                                 for k in update.model_fields_set})
        merged.model_fields_set.update(update.model_fields_set)
        self.session = merged

    # ------------------------------------------------------------------ receiving

    def receive_text(self, frame: str | bytes, now: float) -> None:
        """One text frame from the server. Never raises for what the server sent."""
        try:
            event = ev.parse_server_event(frame)
        except ev.MalformedEvent as exc:
            self.stats["malformed"] += 1
            log.warning("Voice Live: malformed server event skipped: %s", exc)
            return
        try:
            deliver = self._observe(event)
        except Exception:  # a bug in bookkeeping must not kill the connection
            log.exception("Voice Live: error while handling %s", event.type)
            deliver = True
        if deliver:
            self._events.append(event if not isinstance(event, ev.ErrorEvent)
                                else self._service_error(event))
        self._handshake(event, now)

    def _handshake(self, event: ev.ServerEvent, now: float) -> None:
        """Moves the handshake on: session.created → session.update → session.updated (or a
        refusal of the update) → replay → ready."""
        if self._awaiting == "session.created" and isinstance(event, ev.SessionCreated):
            update = self._with_id(ev.SessionUpdate(session=self.session))
            self._update_id = update.event_id
            self._control.append(_Pending(update))
            self._awaiting = "session.updated"
        elif self._awaiting == "session.updated" and (
            isinstance(event, ev.SessionUpdated)
            or (isinstance(event, ev.ErrorEvent) and event.error.event_id == self._update_id)
        ):
            if isinstance(event, ev.ErrorEvent):
                # Refused settings are a config problem, not a network one: reconnecting would
                # not help. Say so loudly and go on with what the service has.
                log.error("Voice Live refused the session settings: %s (param %s)",
                          event.error.message, event.error.param)
            else:
                self._check_session(event.session)
            self._session_ready(now)

    def _check_session(self, got: ev.ResponseSession) -> None:
        """Warn (once per field and value) where the effective session differs from the one
        asked for in what the daemon relies on."""
        asked = self.session
        pairs: list[tuple[str, object, object]] = []
        for name in ("input_audio_format", "input_audio_sampling_rate", "output_audio_format"):
            want = getattr(asked, name)
            if want is not None and name in got.model_fields_set:
                pairs.append((name, want, getattr(got, name)))
        if "turn_detection" in asked.model_fields_set and "turn_detection" in got.model_fields_set:
            want_td, got_td = asked.turn_detection, got.turn_detection
            if want_td is None or got_td is None:
                pairs.append(("turn_detection", want_td and want_td.type,
                              got_td and got_td.type))
            else:
                pairs.append(("turn_detection.type", want_td.type, got_td.type))
                for name in ("create_response", "interrupt_response", "auto_truncate"):
                    have = getattr(got_td, name)
                    if have is not None:
                        pairs.append((f"turn_detection.{name}", getattr(want_td, name), have))
        for name, want, have in pairs:
            key = (name, repr(want), repr(have))
            if want != have and key not in self._mismatches_logged:
                self._mismatches_logged.add(key)
                log.warning("Voice Live: session.updated has %s = %r, asked for %r: the daemon "
                            "relies on it", name, have, want,
                            extra={"field": name, "asked": str(want), "got": str(have)})

    def _session_ready(self, now: float) -> None:
        for item in self.context.replay_items():
            self._control.append(_Pending(self._with_id(
                ev.ConversationItemCreate.model_validate({"item": item}))))
        if self.context.unanswered_calls():
            # The tools ran (or will run) once; their outputs come from the caller.
            self.response_owed = False
        if self.response_owed and not any(
            p.event.type == "response.create" for p in self._outbox
        ):
            self._outbox.append(_Pending(self._with_id(ev.ResponseCreate())))
        self._awaiting = None
        self._ready = True
        self._connected_at = now
        self._events.append(LinkUp(self._ever_ready))
        self._ever_ready = True

    def _service_error(self, event: ev.ErrorEvent) -> ServiceError:
        caused_by = self._sent_types.get(event.error.event_id or "")
        message = event.error.message
        benign = is_benign(message, event.error.code)
        if caused_by == "response.cancel" and any(
                text in message.lower() for text in BENIGN_ERRORS):
            # Nothing to cancel: whatever response the link still counted as in progress (a
            # response.done lost or never sent) is over, so the link can be quiet again.
            self.response_id = None
        elif (not benign and caused_by in (None, "response.create") and self.response_owed
              and self.response_id is None):
            # The reply asked for (or due) will not come: the link owes nothing any more.
            self.response_owed = False
        level = logging.DEBUG if benign else logging.WARNING
        log.log(level, "Voice Live error%s: %s (%s)",
                f" for {caused_by} {event.error.event_id}" if caused_by else "",
                message, event.error.type)
        return ServiceError(event, caused_by, benign)

    def _stale(self, event: ev.ServerEvent, response_id: str) -> bool:
        """True (and counted) for an event of a response that is not the one in progress."""
        if response_id == self.response_id:
            return False
        self.stats["stale"] += 1
        log.debug("Voice Live: %s of %s, which is not in progress, dropped",
                  event.type, response_id)
        return True

    def _observe(self, event: ev.ServerEvent) -> bool:
        """Bookkeeping on every server event. Returns False when the caller must not see it."""
        if isinstance(event, ev.UnknownServerEvent):
            self.stats["unknown"] += 1
            log.debug("Voice Live: unknown event type %r ignored", event.type)
            return False
        if isinstance(event, ev.InputAudioBufferCommitted):
            audio = b"".join(p.audio for p in self._unacked if p.audio)
            self._forget_unacked()
            self.context.add_user_audio(event.item_id, audio or None)
            self.response_owed = True
        elif isinstance(event, ev.InputAudioBufferCleared):
            if self._clears_written:
                self._clears_written -= 1  # ours: forgotten when it was written
            else:
                self._forget_unacked()
        elif isinstance(event, ev.ConversationItemInputAudioTranscriptionCompleted):
            self.context.set_user_transcript(event.item_id, event.transcript)
        elif isinstance(event, ev.ResponseCreated):
            self.response_id = event.response.id
            self.response_owed = False
        elif isinstance(event, ev.ResponseDone):
            if self._stale(event, event.response.id):
                return False
            self.response_id = None
            self.response_owed = False
        elif isinstance(event, ev.ResponseAudioDelta):
            per_second = bytes_per_second(self.session.output_audio_format or "pcm16")
            self.context.add_assistant_audio(event.item_id,
                                             1000.0 * _b64_len(event.delta) / per_second)
            return not self._stale(event, event.response_id)
        elif isinstance(event, ev.ResponseAudioTimestampDelta):
            if event.timestamp_type in (None, "word"):
                self.context.add_assistant_word(event.item_id, event.audio_offset_ms,
                                                event.audio_duration_ms, event.text)
            return not self._stale(event, event.response_id)
        elif isinstance(event, ev.ResponseAudioTranscriptDone):
            self.context.set_assistant_text(event.item_id, event.transcript)
        elif isinstance(event, ev.ResponseTextDone):
            self.context.set_assistant_text(event.item_id, event.text)
        elif isinstance(event, ev.ConversationItemTruncated):
            self.context.truncate_assistant(event.item_id, event.audio_end_ms)
        elif isinstance(event, ev.ResponseFunctionCallArgumentsDone):
            if event.call_id in self._calls_seen:
                log.info("Voice Live: function call %s repeated by the service; ignored",
                         event.call_id)
                return False
            self._calls_seen[event.call_id] = None
            while len(self._calls_seen) > CALL_IDS_KEPT:
                self._calls_seen.popitem(last=False)
            # "{}", not "": the replayed function_call item must carry valid JSON.
            self.context.add_function_call(event.call_id, event.name,
                                           event.arguments or "{}", event.item_id)
        elif isinstance(event, ev.ResponseOutputItemDone):
            item = event.item
            if isinstance(item, ev.ResponseFunctionCallItem) and item.call_id:
                self.context.add_function_call(item.call_id, item.name,
                                               item.arguments or "{}", item.id)
        return True


def build_url(cfg: VoiceLiveConfig, agent_token: str | None = None) -> str:
    """``wss://host/…/voice-live/realtime?api-version=…&model=…`` from the config.

    ``https``/``http`` endpoints become ``wss``/``ws``; the realtime path is appended to any
    path already there (as the official SDK does); agent sessions get agent parameters
    instead of ``model``; ``extra_query`` comes last and may override nothing secret."""
    parts = urlsplit(cfg.endpoint)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith(REALTIME_PATH):
        path += REALTIME_PATH
    query: dict[str, str] = {"api-version": cfg.api_version}
    if cfg.agent is not None:
        if cfg.agent.id:
            query["agent-id"] = cfg.agent.id
        else:
            query["agent-name"] = cfg.agent.name or ""
        query["agent-project-name"] = cfg.agent.project_name
        if cfg.agent.version:
            query["agent-version"] = cfg.agent.version
        if agent_token:
            query["agent-access-token"] = agent_token
    elif cfg.model:
        query["model"] = cfg.model
    query.update(cfg.extra_query)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def redact_url(url: str) -> str:
    """The URL with any credential-bearing query value masked, for logs: every parameter
    whose name :func:`~edgevoice.config.is_secret_query_name` calls a secret (also one that
    the config check would have refused), and any user info."""
    parts = urlsplit(url)
    kept = []
    for pair in parts.query.split("&"):
        key = pair.split("=", 1)[0]
        kept.append(f"{key}=***" if is_secret_query_name(unquote_plus(key)) else pair)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(query="&".join(kept), netloc=netloc))
