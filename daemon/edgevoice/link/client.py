"""The Voice Live link: one logical conversation over a sequence of WebSocket connections.

What it guarantees to the caller (the conversation core):

- **Typed input.** Every frame is parsed once, here, into a typed server event. Unknown event
  types are logged at debug level and dropped; malformed frames are logged and skipped; nothing
  the network sends raises into the caller. Link-level happenings arrive in the same queue as
  :class:`LinkUp`, :class:`LinkDown`, :class:`TurnAbandoned` and :class:`ServiceError`.
- **Non-blocking output.** :meth:`send` and :meth:`append_audio` never block and never raise on
  network trouble: events go to an ordered outbox that a writer task drains while the session is
  ready. Every client event gets an ``event_id``; an ``error`` event that names it comes back
  as a :class:`ServiceError` with the type of the event that caused it. A "no active response"
  answer to a cancel is flagged benign.
- **Session first.** After the socket opens the link waits for ``session.created``, sends
  ``session.update`` from the configured session, waits for ``session.updated``, replays the
  conversation so far (see :mod:`edgevoice.link.context`), and only then streams audio.
- **Reconnects by itself** with jittered exponential backoff (reset after a stable minute),
  honouring ``Retry-After`` on HTTP 429, and a long back-off with one clear log line on HTTP
  401/403. Keepalive pings detect a dead peer. The connection is recycled before the service's
  session limit, only at a quiet moment (never mid-reply, never mid-turn).
- **Nothing lost silently.** Audio of the current user turn — what was sent but not yet
  committed by the service, and what was captured while the link was down — is kept and sent
  again after the reconnect, up to ``offline_buffer_s`` seconds of audio. When a turn would
  exceed that bound the link drops the turn's audio as a whole and says so with
  :class:`TurnAbandoned`; it never sends a turn with a hole in it. An unanswered user turn or
  set of tool outputs gets a fresh ``response.create`` after the replay.
- **Exactly-once function calls.** A ``call_id`` is delivered to the caller once, however often
  the service repeats it; outputs are replayed after a reconnect, not recomputed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from edgevoice import __version__
from edgevoice.audio.convert import bytes_per_second
from edgevoice.config import VoiceLiveConfig, is_loopback_host
from edgevoice.link.auth import Auth, AuthError
from edgevoice.link.backoff import Backoff
from edgevoice.link.context import ConversationLog
from edgevoice.link.protocol import (
    Inbound,
    LinkDown,
    LinkState,
    LinkUp,
    ServiceError,
    TurnAbandoned,
    build_url,
    redact_url,
)
from edgevoice.wire import events as ev
from edgevoice.wire.session import RequestSession

log = logging.getLogger("edgevoice.voicelive")

_E = TypeVar("_E", bound=ev.ClientEvent)

BENIGN_ERRORS = ("no active response",)
#: Client events that carry the current user turn: written ones stay unacked (kept for a
#: resend) until the service commits or clears the input buffer.
TURN_AUDIO_EVENTS = ("input_audio_buffer.append", "input_audio_buffer.commit")
#: Queued client events dropped when a connection ends: items live in the context and are
#: replayed, cancels and truncates were about the dead connection's response, and the whole
#: session goes with the next connect's ``session.update``.
VOID_AFTER_DISCONNECT = frozenset({"conversation.item.create", "response.cancel",
                                   "conversation.item.truncate", "session.update"})


def _b64_len(data: str) -> int:
    """Decoded length of base64 text without decoding it."""
    n = len(data)
    return max(0, n * 3 // 4 - data[-2:].count("=")) if n else 0


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class _Pending:
    """An outbox entry: the event and, for audio appends, the raw bytes."""

    __slots__ = ("event", "audio")

    def __init__(self, event: ev.ClientEvent, audio: bytes | None = None) -> None:
        self.event = event
        self.audio = audio


class VoiceLiveLink:
    """See the module docstring for the guarantees. Use from one event loop only."""

    def __init__(
        self,
        cfg: VoiceLiveConfig,
        session: RequestSession,
        auth: Auth,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        connect_fn: Callable[..., Any] = connect,
    ) -> None:
        self.cfg = cfg
        self.session = session
        self.auth = auth
        self.clock = clock
        self.backoff = backoff or Backoff(cfg.backoff_s, cfg.backoff_jitter, cfg.stable_after_s)
        self._connect_fn = connect_fn
        self.events: asyncio.Queue[Inbound] = asyncio.Queue()
        self.state = LinkState.IDLE
        self.status_text = "Voice Live: idle"
        self.context = ConversationLog(max_items=cfg.replay_max_items)
        self.hold_recycle = False  # the caller sets this while a turn is in progress
        #: Called with the clock time right after each audio append was written to the socket
        #: (latency figures: wake-to-send). Must not raise or block.
        self.on_audio_written: Callable[[float], None] | None = None

        self.stats = {"connects": 0, "failures": 0, "malformed": 0, "unknown": 0,
                      "abandoned_turns": 0, "recycles": 0}
        self.last_error: str | None = None
        self.last_reason: str | None = None  # short form of last_error, for the status
        self.retry_at: float | None = None

        self._ws: ClientConnection | None = None
        self._outbox: deque[_Pending] = deque()
        self._outbox_ready = asyncio.Event()
        self._unacked: list[_Pending] = []  # turn audio written but not yet committed
        self._unacked_trimmed = False  # some of it was trimmed: a resend would have a hole
        self._turn_bytes = 0  # audio bytes in the outbox and unacked
        self._update_id: str | None = None
        self._sent_types: OrderedDict[str, str] = OrderedDict()
        self._seq = 0
        self._wanted = asyncio.Event()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected_at: float | None = None
        self._ever_ready = False
        self._response_active: str | None = None
        self._awaiting_response = False
        self._seen_calls: set[str] = set()
        self._failure_streak = 0
        self._auth_logged = False
        self._recycle_requested = False
        self._session_waiters: dict[str, asyncio.Future[ev.ServerEvent]] = {}
        self._replaying = False  # the context replay of this connection has been taken

    # ------------------------------------------------------------------ lifecycle

    def start(self, wanted: bool = True) -> None:
        """Start the background task; with ``wanted`` it connects right away."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="voicelive")
        self.set_wanted(wanted)

    async def close(self) -> None:
        """Close the socket and stop reconnecting. Idempotent; returns within a few seconds."""
        self._stop.set()
        self._wanted.set()  # wake the loop so it sees the stop
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(1000, "client closing"), 3.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._set_state(LinkState.CLOSED, "Voice Live: closed")

    def set_wanted(self, wanted: bool) -> None:
        """Keep a connection (True) or let it go (False: closed at the next quiet moment)."""
        if wanted:
            self._wanted.set()
        else:
            self._wanted.clear()
            # The caller lets go only between conversations (the core's idle disconnect, or
            # shutdown), so turn audio still held is the tail of a finished turn: frames the
            # VAD gate sent after the service's commit, before its response began (any
            # service latency above one frame). Nothing will ever commit it, and held it
            # would keep the link from being quiet: no idle close, no recycle (found by the
            # soak run). Drop it; nothing of a turn in progress is lost.
            self._drop_turn_audio()
            if self._ws is not None and self._quiet():
                self._close_soon("idle")

    @property
    def ready(self) -> bool:
        return self.state is LinkState.READY

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the session is ready. Raises TimeoutError."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    # ------------------------------------------------------------------ sending

    def _next_id(self) -> str:
        self._seq += 1
        return f"evc_{self._seq}"

    def send(self, event: ev.ClientEvent) -> str:
        """Queue a client event; returns its ``event_id``. Never blocks, never raises on the
        network. While the link is down, cancels are dropped (the response died with the
        connection), truncations are applied to the stored context, and items are kept in the
        context for the replay instead of being queued twice."""
        if event.event_id is None:
            self._with_id(event)
        kind = event.type
        audio: bytes | None = None
        if isinstance(event, ev.InputAudioBufferAppend):
            audio = base64.b64decode(event.audio)
        elif isinstance(event, ev.ConversationItemCreate):
            self._record_item(event)
            if not self.ready and not self._replaying:
                return event.event_id  # in the context: the next replay sends it
        elif isinstance(event, ev.ConversationItemTruncate):
            self.context.truncate_assistant(event.item_id, event.audio_end_ms)
            if not self.ready and not self._replaying:
                return event.event_id
        elif isinstance(event, ev.ResponseCancel) and not self.ready:
            log.debug("response.cancel dropped: link is down")
            return event.event_id
        elif isinstance(event, ev.ResponseCreate):
            self._awaiting_response = True
        elif isinstance(event, ev.SessionUpdate):
            self._merge_session(event.session)
            if not self.ready:
                return event.event_id  # sent whole on the next connect
        self._enqueue(_Pending(event, audio))
        log.debug("queued %s %s", kind, event.event_id)
        return event.event_id

    def append_audio(self, pcm: bytes) -> None:
        """Queue one chunk of user audio (already in the session's input format). Raises
        ValueError only for a chunk above the service's 15 MiB per-append limit."""
        self._enqueue(_Pending(self._with_id(ev.InputAudioBufferAppend.from_pcm(pcm)), pcm))

    def _enqueue(self, pending: _Pending) -> None:
        self._outbox.append(pending)
        self._outbox_ready.set()
        if pending.audio is not None:
            self._turn_bytes += len(pending.audio)
            self._bound_turn_audio()

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

    def _bound_turn_audio(self) -> None:
        limit = self.cfg.offline_buffer_s * self._bytes_per_second()
        total = self._turn_bytes
        if total <= limit:
            return
        if self.ready:
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
                      dropped_ms)

    def _drop_turn_audio(self) -> None:
        self._outbox = deque(p for p in self._outbox if p.event.type not in TURN_AUDIO_EVENTS)
        self._forget_unacked()

    def _forget_unacked(self) -> None:
        """The written turn audio needs no resend any more (committed, cleared or dropped)."""
        self._unacked = []
        self._unacked_trimmed = False
        self._recount_turn_audio()

    def _abandon(self, reason: str, dropped_ms: float) -> None:
        self.stats["abandoned_turns"] += 1
        log.warning("user turn abandoned: %s (%.0f ms of audio dropped)", reason, dropped_ms)
        self.events.put_nowait(TurnAbandoned(reason, dropped_ms, self.clock()))

    def _record_item(self, event: ev.ConversationItemCreate) -> None:
        item = event.item
        if isinstance(item, ev.FunctionCallOutput):
            self.context.add_function_output(item.call_id, item.output)
            self._awaiting_response = False  # the caller sends response.create itself
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

    # ------------------------------------------------------------------ state

    def _set_state(self, state: LinkState, text: str) -> None:
        if state is not self.state or text != self.status_text:
            log.debug("link state %s: %s", state.value, text)
        self.state = state
        self.status_text = text
        if state is LinkState.READY:
            self._ready.set()
        else:
            self._ready.clear()

    def _quiet(self) -> bool:
        return (
            self._response_active is None
            and not self._awaiting_response
            and not self._unacked
            and not self._outbox
            and not self.hold_recycle
        )

    def _close_soon(self, why: str) -> None:
        ws = self._ws
        if ws is not None:
            self._recycle_requested = True
            log.info("closing the Voice Live connection (%s)", why)
            asyncio.get_running_loop().create_task(ws.close(1000, why))

    # ------------------------------------------------------------------ main loop

    async def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wanted.is_set():
                self._set_state(LinkState.IDLE, "Voice Live: idle")
                await self._wanted.wait()
                continue
            delay = await self._connect_once()
            if self._stop.is_set():
                break
            if delay is None:
                continue  # recycle or idle close: reconnect only when wanted
            self.retry_at = self.clock() + delay
            if self.state is not LinkState.AUTH_FAILED:
                self._set_state(LinkState.BACKOFF, f"reconnecting in {delay:.0f} s"
                                f" ({self.last_reason or 'disconnected'})")
            self.events.put_nowait(LinkDown(self.last_error or "disconnected", delay, self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            self.retry_at = None

    def _fail(self, message: str, reason: str, *, level: int = logging.WARNING) -> None:
        """Log a connection failure once per streak (then at debug) — no log flood.
        ``reason`` is the short form for the status (no URL)."""
        self.stats["failures"] += 1
        self._failure_streak += 1
        self.last_error = message
        self.last_reason = reason
        log.log(level if self._failure_streak == 1 else logging.DEBUG, "%s", message)

    async def _connect_once(self) -> float | None:
        """One connection attempt and, if it succeeds, its whole life. Returns the delay
        before the next attempt, or None to go on at once (recycle / not wanted)."""
        self._set_state(LinkState.CONNECTING, "Voice Live: connecting")
        try:
            headers = await self.auth.headers()
            agent_token = None
            if self.cfg.agent is not None:
                agent_token = (await self.auth.token(self.cfg.agent.access_token_scope)).reveal()
        except AuthError as exc:
            return self._auth_failed(str(exc))
        url = build_url(self.cfg, agent_token)
        host = urlsplit(url).hostname or ""
        try:
            ws = await self._connect_fn(
                url,
                additional_headers={**headers, "x-ms-client-request-id": str(uuid.uuid4())},
                user_agent_header=f"edgevoice/{__version__} websockets/{websockets.__version__}",
                open_timeout=self.cfg.connect_timeout_s,
                ping_interval=self.cfg.ping_interval_s,
                ping_timeout=self.cfg.ping_timeout_s,
                close_timeout=3.0,
                max_size=self.cfg.max_message_mib * 1024 * 1024,
                proxy=None if is_loopback_host(host) else True,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                return self._auth_failed(
                    f"Voice Live: authentication failed (HTTP {status}) at {redact_url(url)}: "
                    "check the API key, or the Entra role assignment (Cognitive Services User)",
                    f"authentication failed, HTTP {status}")
            delay = self.backoff.next_delay()
            if status == 429:
                retry = _retry_after(exc.response.headers)
                delay = max(delay, retry or 0.0)
                self._fail(f"Voice Live: throttled (HTTP 429), retrying in {delay:.1f} s",
                           "throttled, HTTP 429")
            else:
                self._fail(f"Voice Live: HTTP {status} on connect to {redact_url(url)}",
                           f"HTTP {status} on connect")
            return delay
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            what = "connection refused" if isinstance(exc, ConnectionRefusedError) \
                else "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._fail(f"Voice Live: cannot connect to {redact_url(url)}: "
                       f"{type(exc).__name__}: {exc}", f"cannot connect: {what}")
            return self.backoff.next_delay()
        return await self._serve(ws)

    def _auth_failed(self, message: str, reason: str = "authentication failed") -> float:
        self.stats["failures"] += 1
        self.last_error = message
        self.last_reason = reason
        if not self._auth_logged:
            log.error("%s", message)
            self._auth_logged = True
        else:
            log.debug("%s", message)
        self._set_state(LinkState.AUTH_FAILED, "Voice Live: authentication failed")
        return self.cfg.auth_failure_backoff_s

    async def _serve(self, ws: ClientConnection) -> float | None:
        self._ws = ws
        self._recycle_requested = False
        self.stats["connects"] += 1
        self._set_state(LinkState.CONFIGURING, "Voice Live: configuring the session")
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._reader(ws), name="voicelive-reader")
        writer: asyncio.Task[None] | None = None
        watcher: asyncio.Task[None] | None = None
        try:
            replayed = await self._configure(ws, reader)
            if replayed is None:
                return self.backoff.next_delay()
            now = self.clock()
            self._connected_at = now
            self.backoff.connected(now)
            self._failure_streak = 0
            self._auth_logged = False
            self.last_error = None
            self.last_reason = None
            reconnected = self._ever_ready
            self._ever_ready = True
            self._set_state(LinkState.READY, "Voice Live: connected")
            self.events.put_nowait(LinkUp(reconnected))
            writer = loop.create_task(self._writer(ws), name="voicelive-writer")
            watcher = loop.create_task(self._watch(ws), name="voicelive-watch")
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, watcher, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3.0)
            self._ws = None
            self._on_disconnect()
        code, reason = ws.close_code, ws.close_reason
        if self._stop.is_set():
            return None
        if self._recycle_requested:
            self.stats["recycles"] += 1
            return None
        sent = ws.protocol.close_sent
        if ws.protocol.close_rcvd is None and sent is not None and sent.code != 1000:
            # This side gave up on the peer (no pong within ping_timeout_s, a frame over
            # max_size): the close code it is left with, 1006, would hide why.
            self._fail(f"Voice Live: connection failed: {sent.reason} (code {sent.code})",
                       f"connection lost ({sent.reason})")
            return self.backoff.next_delay()
        self._fail(f"Voice Live: connection closed (code {code}{': ' + reason if reason else ''})",
                   f"connection lost (code {code})")
        return self.backoff.next_delay()

    def _on_disconnect(self) -> None:
        self.backoff.disconnected(self.clock())
        self._ready.clear()
        if self._response_active is not None:
            # The response died with the connection: ask again once the context is back.
            self._awaiting_response = True
            self._response_active = None
        # Written-but-uncommitted turn audio goes back to the front of the outbox.
        if self._unacked_trimmed and self._unacked:
            dropped_ms = 1000.0 * self._turn_bytes / self._bytes_per_second()
            self._drop_turn_audio()
            self._abandon("connection lost during a turn too long to resend", dropped_ms)
        self._outbox.extendleft(reversed(self._unacked))
        self._unacked = []
        self._outbox = deque(p for p in self._outbox if p.event.type not in VOID_AFTER_DISCONNECT)

    async def _configure(self, ws: ClientConnection, reader: asyncio.Task[None]) -> int | None:
        """session.created → session.update → session.updated → replay. Returns the number
        of replayed items, or None when the server failed to configure in time."""
        loop = asyncio.get_running_loop()
        created: asyncio.Future[ev.ServerEvent] = loop.create_future()
        updated: asyncio.Future[ev.ServerEvent] = loop.create_future()
        self._session_waiters = {"session.created": created, "session.updated": updated}
        try:
            if not await self._await_server(created, reader, "session.created"):
                return None
            update = self._with_id(ev.SessionUpdate(session=self.session))
            self._update_id = update.event_id
            await self._write(ws, update)
            if not await self._await_server(updated, reader, "session.updated"):
                return None
            answer = updated.result()
            if isinstance(answer, ev.ErrorEvent):
                # Refused settings are a config problem, not a network one: reconnecting would
                # not help. Say so loudly and go on with what the service has.
                log.error("Voice Live refused the session settings: %s (param %s)",
                          answer.error.message, answer.error.param)
            # From the snapshot on, new items are queued (sent after the replay), not left to
            # a replay that has already been taken.
            self._replaying = True
            items = self.context.replay_items()
            for item in items:
                await self._write(ws, self._with_id(
                    ev.ConversationItemCreate.model_validate({"item": item})))
            if self.context.unanswered_calls():
                # The tools ran (or will run) once; their outputs come from the caller.
                self._awaiting_response = False
            if self._awaiting_response and not any(
                p.event.type == "response.create" for p in self._outbox
            ):
                self._outbox.append(_Pending(self._with_id(ev.ResponseCreate())))
            return len(items)
        except (ConnectionClosed, OSError) as exc:
            self._fail(f"Voice Live: connection lost while configuring: {exc}",
                       "connection lost while configuring")
            return None
        finally:
            self._session_waiters = {}
            self._replaying = False

    async def _await_server(
        self, waiter: asyncio.Future[ev.ServerEvent], reader: asyncio.Task[None], name: str
    ) -> bool:
        """Wait for one handshake event; False (with the reason logged) on timeout or close."""
        timeout = self.cfg.connect_timeout_s
        done, _ = await asyncio.wait({waiter, reader}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            return True
        why = f"connection closed before {name}" if reader in done \
            else f"no {name} from the server in {timeout:g} s"
        self._fail(f"Voice Live: {why}", why)
        return False

    def _with_id(self, event: _E) -> _E:
        """The event with the link's next ``event_id`` (how errors are matched to it)."""
        event.event_id = self._next_id()
        return event

    async def _write(self, ws: ClientConnection, event: ev.ClientEvent) -> None:
        if event.event_id:
            self._sent_types[event.event_id] = event.type
            while len(self._sent_types) > 512:
                self._sent_types.popitem(last=False)
        await ws.send(event.to_json())

    async def _writer(self, ws: ClientConnection) -> None:
        """Drains the outbox in order while the connection lives."""
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            pending = self._outbox[0]
            try:
                await self._write(ws, pending.event)
            except ConnectionClosed:
                return  # the entry stays at the head of the outbox for the next connection
            self._outbox.popleft()
            if pending.event.type in TURN_AUDIO_EVENTS:
                self._unacked.append(pending)
                if pending.audio is not None and self.on_audio_written is not None:
                    self.on_audio_written(self.clock())

    async def _watch(self, ws: ClientConnection) -> None:
        """Recycles the connection before the service's session limit, at a quiet moment;
        closes it when it is no longer wanted."""
        while True:
            await asyncio.sleep(0.5)
            age = self.clock() - (self._connected_at or self.clock())
            if age >= self.cfg.session_max_s and self._quiet():
                self._close_soon(f"recycling after {age:.0f} s, before the session limit")
                return
            if not self._wanted.is_set() and self._quiet():
                self._close_soon("idle")
                return

    # ------------------------------------------------------------------ receiving

    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                try:
                    event = ev.parse_server_event(frame)
                except ev.MalformedEvent as exc:
                    self.stats["malformed"] += 1
                    log.warning("Voice Live: malformed server event skipped: %s", exc)
                    continue
                try:
                    deliver = self._observe(event)
                except Exception:  # a bug in bookkeeping must not kill the connection
                    log.exception("Voice Live: error while handling %s", event.type)
                    deliver = True
                if deliver:
                    self.events.put_nowait(event if not isinstance(event, ev.ErrorEvent)
                                           else self._service_error(event))
        except ConnectionClosed:
            pass

    def _service_error(self, event: ev.ErrorEvent) -> ServiceError:
        caused_by = self._sent_types.get(event.error.event_id or "")
        message = event.error.message
        benign = any(text in message.lower() for text in BENIGN_ERRORS)
        if benign and caused_by == "response.cancel":
            # Nothing to cancel: whatever response the link still counted as active (a
            # response.done lost or never sent) is over, so the link can be quiet again.
            self._response_active = None
        level = logging.DEBUG if benign else logging.WARNING
        log.log(level, "Voice Live error%s: %s (%s)",
                f" for {caused_by} {event.error.event_id}" if caused_by else "",
                message, event.error.type)
        return ServiceError(event, caused_by, benign)

    def _observe(self, event: ev.ServerEvent) -> bool:
        """Bookkeeping on every server event. Returns False when the caller must not see it."""
        kind = event.type
        waiter = self._session_waiters.get(kind)
        if isinstance(event, ev.ErrorEvent) and event.error.event_id == self._update_id:
            waiter = self._session_waiters.get("session.updated")  # the update was refused
        if waiter is not None and not waiter.done():
            waiter.set_result(event)
        if isinstance(event, ev.UnknownServerEvent):
            self.stats["unknown"] += 1
            log.debug("Voice Live: unknown event type %r ignored", kind)
            return False
        if kind == "input_audio_buffer.committed":
            audio = b"".join(p.audio for p in self._unacked if p.audio)
            self._forget_unacked()
            self.context.add_user_audio(event.item_id, audio or None)
            self._awaiting_response = True
        elif kind == "input_audio_buffer.cleared":
            self._forget_unacked()
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.context.set_user_transcript(event.item_id, event.transcript)
        elif kind == "response.created":
            self._response_active = event.response.id
            self._awaiting_response = False
        elif kind == "response.done":
            self._response_active = None
            self._awaiting_response = False
        elif kind == "response.audio.delta":
            per_second = bytes_per_second(self.session.output_audio_format or "pcm16")
            self.context.add_assistant_audio(event.item_id,
                                             1000.0 * _b64_len(event.delta) / per_second)
        elif kind == "response.audio_transcript.done":
            self.context.set_assistant_text(event.item_id, event.transcript)
        elif kind == "response.text.done":
            self.context.set_assistant_text(event.item_id, event.text)
        elif kind == "conversation.item.truncated":
            self.context.truncate_assistant(event.item_id, event.audio_end_ms)
        elif kind == "response.function_call_arguments.done":
            if event.call_id in self._seen_calls:
                log.info("Voice Live: function call %s repeated by the service; ignored",
                         event.call_id)
                return False
            self._seen_calls.add(event.call_id)
            # "{}", not "": the replayed function_call item must carry valid JSON.
            self.context.add_function_call(event.call_id, event.name,
                                           event.arguments or "{}", event.item_id)
        elif kind == "response.output_item.done":
            item = event.item
            if isinstance(item, ev.ResponseFunctionCallItem) and item.call_id:
                self.context.add_function_call(item.call_id, item.name,
                                               item.arguments or "{}", item.id)
        return True

